#include "control/registry.h"

#include "common/log.h"

namespace tern::control {

bool Registry::on_register(const Registration& r, const NodeSpec* known, NodeSpec* spec, uint64_t now_ns) {
  NodeLiveness& l = nodes_[r.node];
  bool came_online = !l.online;
  bool restarted = !l.instance.empty() && l.instance != r.instance;
  if (restarted) ++l.restarts;
  l.instance = r.instance;
  l.version = r.version;
  l.last_seen_ns = now_ns;
  if (came_online) {
    l.online = true;
    l.online_since_ns = now_ns;
    l.offline_reason.clear();
    TLOG_INFO("control", "node {} is online ({}, engine {})", r.node, r.grpc_endpoint, r.instance);
  } else if (restarted) {
    TLOG_INFO("control", "node {}'s engine restarted (instance {})", r.node, r.instance);
  }
  endpoints_[r.node] = r.grpc_endpoint;
  if ((came_online || restarted) && on_online_) on_online_(r.node);

  NodeSpec s = known ? *known : NodeSpec{};
  s.id = r.node;
  bool changed = !known || known->grpc_endpoint != r.grpc_endpoint || known->nvmf_endpoint != r.nvmf_endpoint ||
                 known->labels != r.labels;
  s.grpc_endpoint = r.grpc_endpoint;
  s.nvmf_endpoint = r.nvmf_endpoint;
  s.labels = r.labels;
  *spec = std::move(s);
  return changed;
}

void Registry::on_deregister(const std::string& node, const std::string& instance, uint64_t now_ns) {
  auto it = nodes_.find(node);
  if (it == nodes_.end() || it->second.instance != instance || !it->second.online) return;
  it->second.online = false;
  it->second.offline_reason = "the engine stopped (deregistered)";
  it->second.last_seen_ns = now_ns;
  TLOG_INFO("control", "node {} is offline: its engine stopped", node);
}

std::vector<std::string> Registry::overdue(uint64_t now_ns) const {
  std::vector<std::string> out;
  for (const auto& [n, l] : nodes_) {
    if (l.online && now_ns > l.last_seen_ns + deadline_ns_) out.push_back(n);
  }
  return out;
}

void Registry::set_offline(const std::string& node, const std::string& why) {
  auto it = nodes_.find(node);
  if (it == nodes_.end() || !it->second.online) return;
  it->second.online = false;
  it->second.offline_reason = why;
  TLOG_WARN("control", "node {} is offline: {}", node, why);
}

void Registry::touch(const std::string& node, uint64_t now_ns) {
  auto it = nodes_.find(node);
  if (it != nodes_.end()) it->second.last_seen_ns = now_ns;
}

const NodeLiveness* Registry::get(const std::string& node) const {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? nullptr : &it->second;
}

std::string Registry::endpoint(const std::string& node) const {
  auto it = endpoints_.find(node);
  return it == endpoints_.end() ? std::string() : it->second;
}

}  // namespace tern::control
