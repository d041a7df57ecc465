#include "control/placement.h"

#include <algorithm>

#include "common/units.h"

namespace tern::control {

namespace {

// Why `p` cannot take one more replica of the request (empty: it can).
std::string refuse(const PoolCandidate& p, const PlacementRequest& req, const std::set<std::string>& nodes,
                   const std::map<std::string, std::set<std::string>>& domains) {
  if (!p.unusable.empty()) return p.unusable;
  for (const auto& [k, v] : req.topology.pool_labels) {
    auto it = p.pool_labels.find(k);
    if (it == p.pool_labels.end() || it->second != v) return fmt::format("pool label {}={} missing", k, v);
  }
  for (const auto& [k, v] : req.topology.node_labels) {
    auto it = p.node_labels.find(k);
    if (it == p.node_labels.end() || it->second != v) return fmt::format("node label {}={} missing", k, v);
  }
  if (nodes.count(p.node)) return fmt::format("node {} already holds a replica of the volume", p.node);
  for (const std::string& key : req.topology.spread) {
    auto it = p.node_labels.find(key);
    if (it == p.node_labels.end()) return fmt::format("node {} has no '{}' label to spread by", p.node, key);
    auto d = domains.find(key);
    if (d != domains.end() && d->second.count(it->second)) {
      return fmt::format("{}={} already holds a replica of the volume", key, it->second);
    }
  }
  if (req.thin) {
    auto limit = uint64_t(double(p.capacity) * req.thin_commitment);
    if (p.committed + req.size > limit) {
      return fmt::format("thin commitment: {} committed + {} > {} ({}% of {})", format_size(p.committed),
                         format_size(req.size), format_size(limit), int(req.thin_commitment * 100),
                         format_size(p.capacity));
    }
    if (p.used >= p.capacity) return "full";
  } else {
    uint64_t taken = p.used + p.reserved;
    uint64_t free = p.capacity > taken ? p.capacity - taken : 0;
    if (free < req.size) return fmt::format("{} free, {} needed", format_size(free), format_size(req.size));
  }
  return {};
}

}  // namespace

Result<std::vector<size_t>> place(const std::vector<PoolCandidate>& pools, const PlacementRequest& req) {
  std::set<std::string> nodes = req.used_nodes;
  auto domains = req.used_domains;
  std::vector<size_t> chosen;
  std::map<std::string, uint32_t> extra;  // replicas this request put on each node
  for (uint32_t i = 0; i < req.count; ++i) {
    std::vector<size_t> ok;
    for (size_t j = 0; j < pools.size(); ++j) {
      if (refuse(pools[j], req, nodes, domains).empty()) ok.push_back(j);
    }
    if (ok.empty()) {
      std::string why;
      for (const PoolCandidate& p : pools) {
        why += fmt::format("{}pool {} on {}: {}", why.empty() ? "" : "; ", p.pool, p.node, refuse(p, req, nodes, domains));
      }
      if (pools.empty()) why = "no pool is declared";
      return Status::Errorf(Errc::kNoSpc, "{} of {} replica(s) placed, no pool for the next ({})", chosen.size(),
                            req.count, why);
    }
    auto key = [&](size_t j) {
      const PoolCandidate& p = pools[j];
      uint64_t taken = p.used + p.reserved;
      uint64_t free = p.capacity > taken ? p.capacity - taken : 0;
      return std::make_tuple(p.node_replicas + extra[p.node], ~free, p.pool);
    };
    size_t best = *std::min_element(ok.begin(), ok.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
    chosen.push_back(best);
    const PoolCandidate& p = pools[best];
    nodes.insert(p.node);
    ++extra[p.node];
    for (const std::string& k : req.topology.spread) domains[k].insert(p.node_labels.at(k));
  }
  return chosen;
}

}  // namespace tern::control
