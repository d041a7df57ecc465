// Registry: which engines exist and which are alive.
//
// Engines register and heartbeat (proto/tern/control/v1/registration.proto) with every agent. A node is
// online from its first registration until either it deregisters (a clean stop: offline at once) or
// no heartbeat came for `deadline_ms` and a direct probe of its API (GetNodeInfo, 1 s) fails too — a
// late heartbeat alone does not take a node offline. A new instance id means the engine restarted: the
// agent's reconcilers look at such nodes again (pools to import). The leader records each node's spec
// (endpoints, labels; cordons set through the API) in etcd the first time it registers and whenever its
// endpoints or labels change; standbys only keep the liveness in memory, so that the one that takes over
// knows who is alive at once.
//
// Threads: the agent's primary reactor. Registrations arrive on gRPC threads, which hand them over with
// run_sync.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "control/specs.h"

namespace tern::control {

struct NodeLiveness {
  bool online = false;
  std::string instance;        // the engine's instance id at its last registration
  std::string version;
  uint64_t last_seen_ns = 0;   // the last registration (reactor clock)
  uint64_t online_since_ns = 0;
  uint64_t restarts = 0;       // instance changes seen by this agent
  std::string offline_reason;  // when offline
};

struct Registration {
  std::string node;
  std::string grpc_endpoint;
  std::string nvmf_endpoint;
  std::string instance;
  std::string version;
  Labels labels;
};

class Registry {
 public:
  explicit Registry(uint64_t deadline_ms) : deadline_ns_(deadline_ms * 1'000'000) {}

  // A registration or heartbeat. Returns true when the node's recorded spec (endpoints, labels) needs
  // writing, with `spec` set to what should be recorded (from `known`, the current spec, if any).
  bool on_register(const Registration& r, const NodeSpec* known, NodeSpec* spec, uint64_t now_ns);
  // A clean stop: offline now (only if `instance` is the one registered).
  void on_deregister(const std::string& node, const std::string& instance, uint64_t now_ns);
  // Nodes whose heartbeat is overdue (the caller probes them, then calls set_offline or touch).
  std::vector<std::string> overdue(uint64_t now_ns) const;
  void set_offline(const std::string& node, const std::string& why);
  void touch(const std::string& node, uint64_t now_ns);

  const NodeLiveness* get(const std::string& node) const;
  bool online(const std::string& node) const {
    const NodeLiveness* l = get(node);
    return l && l->online;
  }
  const std::map<std::string, NodeLiveness>& all() const { return nodes_; }
  // How long the node has been silent (since its last registration); unknown nodes: forever.
  uint64_t silent_ns(const std::string& node, uint64_t now_ns) const {
    const NodeLiveness* l = get(node);
    return l ? now_ns - std::min(now_ns, l->last_seen_ns) : UINT64_MAX;
  }
  // Where to reach a node's API: from its last registration (the spec's is the fallback).
  std::string endpoint(const std::string& node) const;

  // Called when a node comes online or its engine restarted (instance changed): node name.
  void on_online(std::function<void(const std::string&)> cb) { on_online_ = std::move(cb); }
  uint64_t deadline_ns() const { return deadline_ns_; }

 private:
  uint64_t deadline_ns_;
  std::map<std::string, NodeLiveness> nodes_;
  std::map<std::string, std::string> endpoints_;
  std::function<void(const std::string&)> on_online_;
};

}  // namespace tern::control
