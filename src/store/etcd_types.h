// The values the etcd client (etcd_client.h) takes and returns: key-values, ranges, transactions, leases
// and watch events, as plain data. Keys and values are arbitrary bytes (std::string), revisions int64.
//
// Pure data; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tern::store {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // the store's revision when the key was created
  int64_t mod_revision = 0;     // ...when it was last modified
  int64_t version = 0;          // modifications since creation (1 after the first put)
  int64_t lease = 0;            // the lease it is attached to, 0 for none
  friend bool operator==(const KeyValue&, const KeyValue&) = default;
};

struct RangeResult {
  std::vector<KeyValue> kvs;  // in key order
  int64_t count = 0;          // keys in the range (more than kvs.size() when a limit cut it)
  bool more = false;          // a limit left keys out
  int64_t revision = 0;       // the store's revision the read saw
};

// A condition of a transaction: `target` of `key` compared with a value or a number. A key that does not
// exist has version, create and mod revision 0 (so VersionEquals(key, 0) means "absent").
struct Compare {
  enum class Target { kValue, kVersion, kCreateRevision, kModRevision, kLease };
  enum class Op { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kVersion;
  Op op = Op::kEqual;
  std::string value;   // kValue
  int64_t number = 0;  // the others

  static Compare ValueEquals(std::string key, std::string value) {
    return Compare{std::move(key), Target::kValue, Op::kEqual, std::move(value), 0};
  }
  static Compare VersionEquals(std::string key, int64_t version) {
    return Compare{std::move(key), Target::kVersion, Op::kEqual, {}, version};
  }
  static Compare ModRevisionEquals(std::string key, int64_t rev) {
    return Compare{std::move(key), Target::kModRevision, Op::kEqual, {}, rev};
  }
  static Compare CreateRevisionEquals(std::string key, int64_t rev) {
    return Compare{std::move(key), Target::kCreateRevision, Op::kEqual, {}, rev};
  }
  static Compare Number(std::string key, Target target, Op op, int64_t n) {
    return Compare{std::move(key), target, op, {}, n};
  }
};

// One operation of a transaction's then or else branch.
struct TxnOp {
  enum class Kind { kPut, kDelete, kRange };
  Kind kind = Kind::kRange;
  std::string key;
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
  bool prefix = false;  // kDelete, kRange: every key starting with `key`

  static TxnOp Put(std::string key, std::string value, int64_t lease = 0) {
    return TxnOp{Kind::kPut, std::move(key), std::move(value), lease, false};
  }
  static TxnOp Delete(std::string key, bool prefix = false) {
    return TxnOp{Kind::kDelete, std::move(key), {}, 0, prefix};
  }
  static TxnOp Get(std::string key, bool prefix = false) { return TxnOp{Kind::kRange, std::move(key), {}, 0, prefix}; }
};

struct Txn {
  std::vector<Compare> compare;  // all must hold for `success` to run; else `failure` runs
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct TxnOpResult {
  TxnOp::Kind kind = TxnOp::Kind::kRange;
  RangeResult range;    // kRange
  int64_t deleted = 0;  // kDelete
};

struct TxnResult {
  bool succeeded = false;  // the compares held (the success branch ran)
  int64_t revision = 0;    // the store's revision after the transaction
  std::vector<TxnOpResult> responses;  // one per operation of the branch that ran
};

struct Lease {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // as granted
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for a delete: the key and the revision of the delete (mod_revision)
};

}  // namespace tern::store
