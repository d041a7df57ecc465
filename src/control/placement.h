// Placement: which pools a volume's replicas go to. A pure function of the cluster's state, so its rules
// are unit-tested (tests/unit/control/placement_test.cc) and explained in docs/design/control-plane.md.
//
// Rules, in order:
//   1. Filters. A pool is a candidate when its spec is created, its node is online and not cordoned or
//      draining, the engine reports it online, it carries every required pool label and its node every
//      required node label, its node is not already used by the volume (never two replicas of a volume on
//      one node), and for every spread key its node's value differs from those the volume already uses
//      (a node without the key cannot be told apart, so it is refused when the key is required).
//   2. Space. Thick: capacity - used - reserved >= size (reserved: thick replicas being created).
//      Thin: committed + size <= capacity x thin_commitment (default 2.5: 250 %) and some space left.
//   3. Order. Fewest replicas on the node first (spreads load), then most free space, then the name.
//   Replicas are chosen one at a time, each choice adding its node (and spread values) to the exclusions.
//
// A request that cannot be met fails with kNoSpc and the reason every pool was passed over.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "control/specs.h"

namespace tern::control {

struct PoolCandidate {
  std::string pool;
  std::string node;
  Labels pool_labels;
  Labels node_labels;
  std::string unusable;  // why the pool cannot take anything (empty: usable)
  uint64_t capacity = 0;
  uint64_t used = 0;
  uint64_t committed = 0;  // sizes of everything in the pool, pending creations included
  uint64_t reserved = 0;   // thick replicas being created, not yet in `used`
  uint32_t node_replicas = 0;
};

struct PlacementRequest {
  uint32_t count = 1;
  uint64_t size = 0;
  bool thin = false;
  Topology topology;
  std::set<std::string> used_nodes;                       // nodes the volume already has replicas on
  std::map<std::string, std::set<std::string>> used_domains;  // spread key -> values already used
  double thin_commitment = 2.5;
};

// The chosen pools (indexes into `pools`), `count` of them, or kNoSpc naming every reason.
Result<std::vector<size_t>> place(const std::vector<PoolCandidate>& pools, const PlacementRequest& req);

}  // namespace tern::control
