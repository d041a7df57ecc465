#include "store/etcd_record_store.h"

namespace tern::store {

Task<Status> EtcdRecordStore::put(std::string key, std::string value) {
  auto rev = co_await client_->put(key, value);
  if (!rev.ok()) co_return rev.status();
  co_return Status();
}

Task<Result<std::string>> EtcdRecordStore::get(std::string key) {
  auto kv = co_await client_->get(key);
  if (!kv.ok()) co_return kv.status();
  co_return std::move(kv->value);
}

Task<Result<RecordStore::Versioned>> EtcdRecordStore::get_versioned(std::string key) {
  auto kv = co_await client_->get(key);
  if (!kv.ok()) {
    if (kv.code() == Errc::kNoEnt) co_return Versioned{};
    co_return kv.status();
  }
  co_return Versioned{std::move(kv->value), kv->mod_revision};
}

Task<Result<int64_t>> EtcdRecordStore::put_if(std::string key, std::string value, int64_t expected) {
  Txn t;
  t.compare.push_back(Compare{key, Compare::Target::kModRevision, Compare::Op::kEqual, {}, expected});
  t.success.push_back(TxnOp::Put(key, std::move(value)));
  auto r = co_await client_->txn(t);
  if (!r.ok()) co_return r.status();
  if (!r->succeeded) co_return Status::Errorf(Errc::kStale, "'{}' changed since version {}: another writer", key, expected);
  co_return r->revision;
}

}  // namespace tern::store
