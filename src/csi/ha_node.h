// tern-ha-node's watcher: keeps the kernel's NVMe/TCP paths to tern volumes on this host pointed at the
// volumes' current targets, so that a switch-over (the agent republishing a volume on another node after
// its target's node died) reaches the application as a pause, not an I/O error and not a remount.
//
// Each pass looks at the host (sysfs: the controllers of every subsystem named with tern's NQN prefix)
// and at the agent (the volume's target), and acts on the difference:
//   1. the agent is asked where the volume's target is now — when the subsystem has had no live path for
//      `dead_after_ms`, when some path is down, and every `recheck_ms` anyway; a target published for
//      this host (its NQN allowed) at an address the host has no path to gets one (`nvme connect` to the
//      same subsystem NQN: the kernel's native multipath adds it to the same namespace head, and the I/O
//      it held resumes on it). A target still on the dead node, or being republished, is waited for;
//   2. a subsystem with a live path to the current target and paths to other addresses that are not
//      live: those are removed (`nvme disconnect -d`, after reading the controller again: its number
//      may have been reused), so the kernel stops retrying a dead node.
// A failed connect is retried after `retry_ms`; messages are logged once per change, not per pass.
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
  int recheck_ms = 10000;    // a healthy subsystem's target is looked up this often
  int retry_ms = 5000;       // after a failed connect
  NvmeTunables nvme;         // for new paths when the old ones' values cannot be read
  int connect_timeout_s = 15;
};

class PathWatcher {
 public:
  PathWatcher(WatcherOptions o, const Agent& agent) : o_(std::move(o)), agent_(agent) {}
  // One look and what follows from it. Returns what was done, one line per action (also logged).
  std::vector<std::string> pass();

 private:
  WatcherOptions o_;
  const Agent& agent_;
  struct Seen {
    std::chrono::steady_clock::time_point down_since{}, checked{}, retry_after{};
    bool down = false;
    std::string said;  // the last message logged (no repeats)
  };
  void say(Seen& s, bool warn, const std::string& msg);
  std::map<std::string, Seen> seen_;  // by subsystem NQN
};

}  // namespace tern::csi
