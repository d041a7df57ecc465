// `ternctl pool ...`: offline pool tools that work on a device directly (the engine is not running):
// `create` writes a new pool, `check` verifies one (fsck-like) without writing anything, and
// `add-replica`, `snapshot`, `clone` and `remove` change its objects (import, change, clean export).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace tern::ctl {

struct PoolArgs {
  std::string device;  // a device URI: uring:///dev/nvme0n1, uring:///var/lib/tern/disk.img, ...
  std::string name;
  uint64_t cluster_mb = 4;
  std::string output = "normal";  // normal | json
  std::string size;               // add-replica: bytes or 1g etc.
  bool thin = false;
  std::string of;                 // snapshot: the replica; clone: the snapshot (names or UUIDs)
};

// Adds the `pool` command group; `run` is set to the chosen command.
void add_pool_commands(CLI::App& app, PoolArgs& args, int (**run)(const PoolArgs&));

}  // namespace tern::ctl
