// StateFile: what an engine must remember across restarts that its pools cannot tell it — which pools
// it has (created or imported through the API), so they are imported again at start. Everything else
// (replicas, snapshots, shares, allowed hosts) lives in the pools themselves.
//
// The file is JSON, replaced atomically (write a temporary, fsync, rename, fsync the directory): a crash
// leaves the old list or the new one. Threads: used on the primary reactor only (small, rare writes).
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "engine/options.h"

namespace tern::engine {

class StateFile {
 public:
  // `dir` is created if missing; "" keeps nothing (tests, ephemeral engines).
  explicit StateFile(std::string dir) : dir_(std::move(dir)) {}
  // The pools recorded; an absent file is an empty list; a damaged one is an error naming the file.
  Result<std::vector<PoolSpec>> load() const;
  Status save(const std::vector<PoolSpec>& pools) const;
  std::string path() const;

 private:
  std::string dir_;
};

}  // namespace tern::engine
