// The metadata log's records, typed: one struct per record kind, and the codec between them and the bytes
// the log (and each entry of the checkpoint body) holds. Layouts: docs/design/pool-format.md, "Records".
//
// Decoding checks a record's shape only — every field present, no bytes left over, known flags, the
// syntax of a created object's properties — and names the kind, the field and its byte offset in what
// it refuses. Whether a record fits the state (the object exists, the cluster is free) is for
// PoolState::Apply, which decodes a record and then applies it by kind.
//
// Pure data: no I/O, no threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"
#include "pool/state.h"

namespace tern::pool {
namespace records {

// Type 1: a whole object (replica, snapshot or clone) with its map and properties. Also every entry of
// the checkpoint body.
struct CreateObject {
  static constexpr uint8_t kType = 1;
  static constexpr std::string_view kName = "create object";
  ReplicaMeta object;
  bool operator==(const CreateObject&) const = default;
};

// Type 2: destroys an object (a snapshot with two or more children is only marked discarded).
struct Destroy {
  static constexpr uint8_t kType = 2;
  static constexpr std::string_view kName = "destroy";
  Uuid uuid;
  bool operator==(const Destroy&) const = default;
};

// Type 3: virtual cluster `vc` of the object gets physical cluster `pc` (a first write).
struct MapCluster {
  static constexpr uint8_t kType = 3;
  static constexpr std::string_view kName = "map cluster";
  Uuid uuid;
  uint32_t vc = 0;
  uint32_t pc = 0;
  bool operator==(const MapCluster&) const = default;
};

// Type 4: virtual cluster `vc` reads zeros from now on; a cluster it owned is freed.
struct UnmapCluster {
  static constexpr uint8_t kType = 4;
  static constexpr std::string_view kName = "unmap cluster";
  Uuid uuid;
  uint32_t vc = 0;
  bool operator==(const UnmapCluster&) const = default;
};

// Type 5: snapshot `snapshot` of replica `replica` takes the replica's clusters.
struct Snapshot {
  static constexpr uint8_t kType = 5;
  static constexpr std::string_view kName = "snapshot";
  Uuid replica;
  Uuid snapshot;
  uint64_t created_ns = 0;  // wall-clock
  std::string name;
  bool operator==(const Snapshot&) const = default;
};

// Type 6: a thin clone of a snapshot.
struct Clone {
  static constexpr uint8_t kType = 6;
  static constexpr std::string_view kName = "clone";
  Uuid snapshot;
  Uuid clone;
  uint64_t created_ns = 0;  // wall-clock
  std::string name;
  bool operator==(const Clone&) const = default;
};

// Type 7: a new size; `new_clusters` are a thick replica's grown part (empty otherwise).
struct Resize {
  static constexpr uint8_t kType = 7;
  static constexpr std::string_view kName = "resize";
  Uuid uuid;
  uint64_t size = 0;
  std::vector<uint32_t> new_clusters;
  bool operator==(const Resize&) const = default;
};

// Type 8: sets property `key` of an object; an empty value removes it. The key and value are checked
// when the record is applied (after the object is found), not when it is decoded.
struct SetProperty {
  static constexpr uint8_t kType = 8;
  static constexpr std::string_view kName = "set property";
  Uuid uuid;
  std::string key;
  std::string value;
  bool operator==(const SetProperty&) const = default;
};

}  // namespace records

using MetaRecord = std::variant<records::CreateObject, records::Destroy, records::MapCluster, records::UnmapCluster,
                                records::Snapshot, records::Clone, records::Resize, records::SetProperty>;

// The record's bytes (its type byte first).
std::vector<uint8_t> EncodeRecord(const MetaRecord& record);
// A create-object record straight from an object, without copying it into a MetaRecord first (what
// checkpoints write for every object).
std::vector<uint8_t> EncodeObjectRecord(const ReplicaMeta& object);

// The record in `bytes`. Errors are kCorruption, naming the kind, the field and its byte offset: an empty
// record, an unknown type, a record that ends inside a field, trailing bytes, unknown flags. A created
// object's property with a bad key or value is refused with PoolState::ValidateProperty's error (kInval).
Result<MetaRecord> DecodeRecord(std::span<const uint8_t> bytes);

// The kind's name ("map cluster") and type byte.
std::string_view RecordName(const MetaRecord& record);
uint8_t RecordType(const MetaRecord& record);

}  // namespace tern::pool
