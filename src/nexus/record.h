// The nexus's record in the store (etcd): which children hold the volume's current data.
//
//   {"clean_shutdown": false, "generation": 3, "children": [{"uuid": "<replica uuid>", "healthy": true}, ...]}
//
// Written by the nexus before it acknowledges any host I/O that depended on a child being retired, and on
// create, add/remove child, rebuild completion and clean shutdown, under the key given at create. A control
// plane reads it to decide which replicas a new nexus may use: only the healthy ones (and, after an unclean
// shutdown, any of them may be the newest — the rebuild design's generations say which).
//
// Pure data and codec: no I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"
#include "reactor/task.h"
#include "store/record_store.h"

namespace tern::nexus {

struct NexusRecord {
  struct Child {
    Uuid uuid;
    bool healthy = false;
    // A rebuild's checkpoint token (0: none): the child's checkpoint counts while this matches it
    // (docs/design/rebuild.md, "Checkpoints"). Written only when non-zero.
    uint64_t rebuild_token = 0;
    friend bool operator==(const Child&, const Child&) = default;
  };
  bool clean_shutdown = false;
  // The volume's data generation (docs/design/rebuild.md): healthy children's labels carry it. 0 in a
  // record written before generations existed.
  uint64_t generation = 0;
  std::vector<Child> children;
  // Which nexus wrote it (a random token per nexus instance; 0 in records written before): a nexus
  // whose compare-and-set fails tells its own earlier write (a retry after a timeout) from a newer
  // nexus's. Written only when non-zero.
  uint64_t writer = 0;

  std::string ToJson() const;
  // kInval naming what is wrong (not JSON, a missing field, a bad UUID). Unknown fields are ignored, so a
  // newer writer's additions do not break an older reader.
  static Result<NexusRecord> FromJson(std::string_view json);
  // The same record whoever wrote it (the writer is not compared).
  friend bool operator==(const NexusRecord& a, const NexusRecord& b) {
    return a.clean_shutdown == b.clean_shutdown && a.generation == b.generation && a.children == b.children;
  }
};

// Where records are kept: etcd in production (store::EtcdRecordStore), anything with these semantics in
// tests. The nexus retries a failing put until its timeout. Called on the primary reactor.
using RecordStore = store::RecordStore;

}  // namespace tern::nexus
