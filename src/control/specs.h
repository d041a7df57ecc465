// The control plane's records in etcd: what the cluster should look like (specs), one JSON document per
// object, every document versioned ("v": 1) so that a later agent can read an older one.
//
// Keys, under the cluster's prefix P (default "/tern/v1"):
//
//   P/leader                 the leading agent (leadership.h)
//   P/nodes/<node>           NodeSpec: an engine that registered once (endpoints, labels, cordons)
//   P/pools/<pool>           PoolSpec: a pool declared on a node (pool names are unique in the cluster)
//   P/replicas/<uuid>        ReplicaSpec: a replica the control plane made (for a volume)
//   P/volumes/<uuid>         VolumeSpec: a volume, its replicas and its target (nexus)
//   P/snapshots/<uuid>       SnapshotSpec: a volume's snapshot (one pool snapshot per replica)
//   P/records/<uuid>         the volume's nexus record, written by the nexus (nexus/record.h)
//
// Multi-step operations are recorded in the specs before their first step: a volume is written in state
// `creating` with the replicas it is about to make (each in `creating`) before any engine is asked, and
// `deleting` before anything is destroyed; a target in `publishing` before its nexus is created. An agent
// that takes over finds these states and completes or undoes them (docs/design/control-plane.md), so no
// engine object exists that no spec names.
//
// Parsing is strict (it reads what etcd returns, which anyone with access can write): every error names
// the field. Fuzzed (tests/fuzz/parsers_fuzz.cc).
//
// Threads: plain values; any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::control {

inline constexpr int kSpecVersion = 1;

// Where a spec is in its life: made (`created`), or between the record and the engines' work.
enum class SpecState { kCreating, kCreated, kDeleting };
std::string_view spec_state_name(SpecState s);

using Labels = std::map<std::string, std::string>;

struct NodeSpec {
  std::string id;             // the engine's node name
  std::string grpc_endpoint;  // its API (host:port)
  std::string nvmf_endpoint;  // where hosts connect (host:port)
  Labels labels;              // topology: zone, rack, ... (from the engine's registration)
  std::vector<std::string> cordons;  // cordon labels; any: nothing new is placed here
  bool draining = false;             // nexuses are being moved away (a drain is also a cordon)
  bool evacuating = false;           // ... and its replicas too (evacuate.h)

  std::string ToJson() const;
  static Result<NodeSpec> FromJson(std::string_view text);
  bool cordoned() const { return !cordons.empty() || draining; }
};

struct PoolSpec {
  std::string name;
  std::string node;
  std::string disk;  // the device URI on that node
  Labels labels;
  SpecState state = SpecState::kCreating;

  std::string ToJson() const;
  static Result<PoolSpec> FromJson(std::string_view text);
};

struct ReplicaSpec {
  std::string uuid;
  std::string volume;  // the volume it belongs to
  std::string pool;
  std::string node;
  uint64_t size = 0;
  bool thin = false;
  SpecState state = SpecState::kCreating;
  // A restored volume's replica: a clone of this pool snapshot (a replica snapshot of a SnapshotSpec),
  // made on the snapshot's pool. Empty: a new replica.
  std::string clone_of;

  std::string ToJson() const;
  static Result<ReplicaSpec> FromJson(std::string_view text);
};

// Where a volume's replicas may go.
struct Topology {
  Labels node_labels;  // a replica's node must carry all of these
  Labels pool_labels;  // ... and its pool these
  // Node label keys whose values must differ between the volume's replicas (failure domains, e.g.
  // "zone"); the node itself always differs.
  std::vector<std::string> spread;
};

// The volume's target: a nexus on one node, published over a protocol.
struct TargetSpec {
  enum class State { kPublishing, kPublished, kUnpublishing };
  std::string node;
  std::string protocol = "nvmf";  // nvmf | nbd
  std::vector<std::string> allowed_hosts;
  uint64_t generation = 0;  // the publish's number: the nexus's reservation key (fences older nexuses)
  std::string uri;          // where hosts connect, once published
  State state = State::kPublishing;
};
std::string_view target_state_name(TargetSpec::State s);

struct VolumeSpec {
  std::string uuid;
  uint64_t size = 0;
  uint32_t replicas = 1;  // how many the volume should have
  bool thin = false;
  Topology topology;
  Labels labels;  // the user's
  SpecState state = SpecState::kCreating;
  std::vector<std::string> replica_ids;  // the replicas made (or being made) for it
  std::optional<TargetSpec> target;
  uint64_t generation = 0;  // of the last publish (TargetSpec.generation); never reused
  // Restored from a snapshot: its UUID, and the volumes whose nexus labels the clones may carry (the
  // snapshot's volume and what that one was restored from), passed to the nexus to adopt.
  std::string source_snapshot;
  std::vector<std::string> adopt_labels_of;
  // Properties (PUT /v1/volumes/{uuid}/properties): at most this many snapshots (0: no limit); its
  // rebuilds copy at most this many bytes/s (0: no limit).
  uint32_t max_snapshots = 0;
  uint64_t rebuild_rate = 0;

  std::string ToJson() const;
  static Result<VolumeSpec> FromJson(std::string_view text);
};

// A snapshot of a volume: one pool snapshot of each of its current replicas, all taken at one point of
// the write stream (through the nexus when the volume is published; else no writes happen meanwhile).
struct SnapshotSpec {
  struct Part {
    std::string uuid;     // the pool snapshot's UUID
    std::string replica;  // the replica it was taken of
    std::string pool;
    std::string node;
  };
  std::string uuid;
  std::string volume;  // the volume it was taken of (which may since be gone)
  std::string name;    // each pool snapshot's name
  uint64_t size = 0;   // the volume's size then
  uint64_t created_unix_s = 0;
  SpecState state = SpecState::kCreating;
  std::vector<Part> parts;  // creating: those being taken; created: those taken
  std::vector<std::string> adopt_labels_of;  // the volume and what it was restored from

  std::string ToJson() const;
  static Result<SnapshotSpec> FromJson(std::string_view text);
};

// The keys.
struct Keys {
  std::string prefix = "/tern/v1";
  std::string leader() const { return prefix + "/leader"; }
  std::string nodes() const { return prefix + "/nodes/"; }
  std::string node(std::string_view id) const { return nodes() + std::string(id); }
  std::string pools() const { return prefix + "/pools/"; }
  std::string pool(std::string_view name) const { return pools() + std::string(name); }
  std::string replicas() const { return prefix + "/replicas/"; }
  std::string replica(std::string_view uuid) const { return replicas() + std::string(uuid); }
  std::string volumes() const { return prefix + "/volumes/"; }
  std::string volume(std::string_view uuid) const { return volumes() + std::string(uuid); }
  std::string snapshots() const { return prefix + "/snapshots/"; }
  std::string snapshot(std::string_view uuid) const { return snapshots() + std::string(uuid); }
  std::string record(std::string_view uuid) const { return prefix + "/records/" + std::string(uuid); }
};

// Names the control plane accepts for nodes and pools: [A-Za-z0-9._-], 1..63 characters.
Status check_name(std::string_view what, std::string_view name);

}  // namespace tern::control
