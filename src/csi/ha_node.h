// tern-ha-node's watcher: keeps the kernel's NVMe/TCP paths to tern volumes on this host pointed at the
// volumes' current targets, so that a switch-over (the agent republishing a volume on another node after
// its target's node died) reaches the application as a pause, not an I/O error and not a remount.
//
// Each pass looks at the host (sysfs: the controllers of every subsystem named with tern's NQN prefix)
// and at the agent (the volume's target), and acts on the difference:
//   1. a subsystem without a live path for `dead_after_ms`: the agent is asked where the volume's target
//      is now; a published target at an address the host has no path to gets one (`nvme connect` to the
//      same subsystem NQN: the kernel's native multipath adds it to the same namespace head, and the I/O
//      it held resumes on it). A target still on the dead node, or being republished, is waited for;
//   2. a subsystem with a live path to the current target and paths to other addresses that are not
//      live: those are removed (`nvme disconnect -d`), so the kernel stops retrying a dead node.
// The watcher keeps no state that matters beyond a pass (when a path was first seen down), so a restart
// at any point resumes: the next pass finds what is left to do. The agent's side of the switch-over
// (fencing the old nexus by a new reservation key and controller-ID range) is the agent's; its stages
// are in the volume's description there.
//
// Threads: the caller's (tern-ha-node's main loop); nothing shared.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "csi/agent.h"
#include "csi/params.h"

namespace tern::csi {

struct WatcherOptions {
  std::string host_nqn;
  std::string nqn_prefix = "nqn.2026-11.io.tern:";  // the engines' (kNqnPrefix): "<prefix><volume uuid>"
  std::string sys_root = "/sys";
  int dead_after_ms = 1000;  // a subsystem with no live path this long is looked into
  NvmeTunables nvme;         // for new paths when the old ones' values cannot be read
  int tool_timeout_s = 60;
};

class PathWatcher {
 public:
  PathWatcher(WatcherOptions o, const Agent& agent) : o_(std::move(o)), agent_(agent) {}
  // One look and what follows from it. Returns what was done, one line per action (also logged).
  std::vector<std::string> pass();

 private:
  WatcherOptions o_;
  const Agent& agent_;
  std::map<std::string, std::chrono::steady_clock::time_point> down_since_;  // by subsystem NQN
  std::map<std::string, std::string> said_;  // by NQN: the last waiting message logged (no repeats)
};

}  // namespace tern::csi
