// The engine's domain types: what its managers take and return. The gRPC services (api/) translate
// them to and from the API's protobuf messages, so the managers, the metrics page and any in-process
// peer (the nexus later) share one vocabulary that does not change with the wire format.
//
// Plain values: safe to copy to and from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bdev/stats.h"
#include "common/uuid.h"

namespace tern::engine {

// How an object is exported. kUnknown stands for a protocol number the API carried that this engine
// does not know (a newer client): operations refuse it with the message naming the field, as they did
// when they saw the raw value.
enum class ShareProtocol { kNone, kNvmf, kNbd, kUnknown };

// One share: which protocol, the id it is exported under, the URI a client connects to.
struct ShareInfo {
  ShareProtocol protocol = ShareProtocol::kNone;
  std::string id;   // NQN suffix / NBD export name
  std::string uri;
  std::vector<std::string> hosts;  // host NQNs allowed to connect (NVMe/TCP); empty: any
};

// --- pools ---

enum class PoolMode { kCreate, kCreateOrImport, kImport };

struct CreatePoolArgs {
  std::string name;           // required, except for import (where it is what the pool must be named)
  std::string disk;           // a device URI, or the name of a device that exists
  std::optional<Uuid> uuid;   // create: the pool's UUID (default: a new one)
  uint64_t cluster_size = 0;  // create: bytes (0: the pool's default)
};

struct PoolInfo {
  std::string name;
  Uuid uuid;
  std::string disk;  // as the pool was asked for (URI or device name)
  bool online = true;  // false: degraded, changes refused (state_reason says why)
  std::string state_reason;
  uint64_t capacity = 0;
  uint64_t used = 0;
  uint64_t committed = 0;
  uint64_t cluster_size = 0;
  uint32_t objects = 0;  // replicas, snapshots and clones
  std::string repair_note;
};

// --- a pool's objects: replicas, snapshots, clones ---

enum class ObjectKind { kReplica, kSnapshot, kClone };
inline const char* kind_name(ObjectKind k) {
  switch (k) {
    case ObjectKind::kSnapshot:
      return "snapshot";
    case ObjectKind::kClone:
      return "clone";
    default:
      return "replica";
  }
}

// One object of a pool (the API calls every kind a Replica).
struct ReplicaInfo {
  std::string name;
  Uuid uuid;
  std::string pool;
  Uuid pool_uuid;
  uint64_t size = 0;
  bool thin = false;
  ObjectKind kind = ObjectKind::kReplica;
  Uuid source;  // snapshot: the object it was taken of; clone: its snapshot; nil otherwise
  std::optional<ShareInfo> share;
  uint64_t allocated = 0;
  uint64_t referenced = 0;
  uint64_t exclusive = 0;
  bool discarded = false;
  std::string device;  // the device's name (the UUID) while exposed, else ""
};

// Which object a request means: by UUID, or by name (plus the pool when names repeat across pools).
struct ReplicaRef {
  std::optional<Uuid> uuid;
  std::string name;
  std::string pool;
};

struct CreateReplicaArgs {
  std::string pool;
  std::string name;
  std::optional<Uuid> uuid;
  uint64_t size = 0;  // bytes, a multiple of 4096
  bool thin = false;
  ShareProtocol share = ShareProtocol::kNone;
  std::vector<std::string> allowed_hosts;
};

struct CreateSnapshotArgs {
  ReplicaRef source;  // a replica or clone
  std::string name;
  std::optional<Uuid> uuid;
};

struct CreateCloneArgs {
  ReplicaRef snapshot;
  std::string name;
  std::optional<Uuid> uuid;
  ShareProtocol share = ShareProtocol::kNone;
  std::vector<std::string> allowed_hosts;
};

// Which objects a listing returns. Empty strings match anything; UUIDs are matched as listed (text),
// so a filter that is no UUID simply matches nothing.
struct ObjectFilter {
  std::string pool;
  std::string name;
  std::string uuid;
  std::string source_uuid;  // snapshots of this object / clones of this snapshot
  bool replicas = true;
  bool snapshots = true;
  bool clones = true;
};

// --- devices, statistics, the node ---

struct DeviceInfo {
  std::string name;
  Uuid uuid;
  std::string uri;  // what it was created from ("" for a pool's objects)
  std::string product;
  uint32_t block_size = 0;
  uint64_t num_blocks = 0;
  uint64_t size = 0;
  std::string claimed_by;
  uint32_t open_count = 0;
  std::optional<ShareInfo> share;
  std::string pool;  // the pool whose object it is, if any
};

struct DeviceStats {
  std::string name;
  Uuid uuid;
  BdevStats stats;  // merged over every reactor
};

struct ReactorLoad {
  uint32_t id = 0;
  uint32_t core = 0;
  uint64_t busy_ns = 0;
  uint64_t idle_ns = 0;
  uint64_t polls = 0;
  uint64_t sleeps = 0;        // times the reactor slept in the kernel (each one a wake-up to pay)
  uint64_t submit_calls = 0;  // io_uring_enter calls that submitted
  uint64_t sqes = 0;          // submission entries handed to the kernel
  uint64_t completions = 0;   // completions dispatched
};

struct NodeInfo {
  std::string node_name;
  std::string version;
  std::string build;
  Uuid instance;  // new at every start
  std::vector<uint32_t> cores;
  std::chrono::nanoseconds uptime{0};
  std::string grpc_endpoint;
  std::string nvmf_endpoint;  // host:port hosts connect to
  std::string nbd_endpoint;   // host:port or unix:<path>; "" when NBD is off
  uint64_t startup_ms = 0;
};

// --- test hooks ---

struct PatternArgs {
  std::string device;
  uint64_t offset = 0;  // bytes, block aligned
  uint64_t length = 0;  // bytes, block aligned, at most 1 GiB
  uint64_t generation = 0;
};

struct PatternCheck {
  bool ok = true;
  std::string mismatch;  // the first bad sector, described
  uint64_t bytes_checked = 0;
};

}  // namespace tern::engine
