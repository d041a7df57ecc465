#include "csi/ha_node.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "common/log.h"
#include "csi/host.h"

namespace tern::csi {

namespace {

// A fabrics controller's setting in sysfs (seconds), when this kernel shows it.
std::optional<uint32_t> read_seconds(const std::string& sys_root, const std::string& ctrl, const char* attr) {
  std::ifstream f(std::filesystem::path(sys_root) / "class/nvme" / ctrl / attr);
  long v = -1;
  if (!(f >> v) || v < 0) return std::nullopt;
  return uint32_t(v);
}

std::string json_str(const nlohmann::json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
}

}  // namespace

std::vector<std::string> PathWatcher::pass() {
  std::vector<std::string> done;
  std::map<std::string, std::vector<NvmeController>> by_nqn;
  for (auto& c : nvme_controllers(o_.sys_root)) {
    if (c.transport == "tcp" && c.subsysnqn.rfind(o_.nqn_prefix, 0) == 0) by_nqn[c.subsysnqn].push_back(std::move(c));
  }
  for (auto it = down_since_.begin(); it != down_since_.end();) {
    it = by_nqn.count(it->first) ? std::next(it) : down_since_.erase(it);
  }
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [nqn, ctrls] : by_nqn) {
    const std::string uuid = nqn.substr(o_.nqn_prefix.size());
    bool live = false;
    for (const auto& c : ctrls) live |= c.state == "live";
    bool dead_paths = false;
    for (const auto& c : ctrls) dead_paths |= c.state != "live" && c.state != "deleting";
    if (live) {
      down_since_.erase(nqn);
      said_.erase(nqn);
      if (!dead_paths) continue;
    } else {
      auto [d, fresh] = down_since_.emplace(nqn, now);
      if (fresh || now - d->second < std::chrono::milliseconds(o_.dead_after_ms)) continue;
    }
    // Where is the volume served now?
    rest::RestReply r;
    if (!agent_.call("GET", "/v1/volumes/" + uuid, nullptr, &r).ok() || r.status != 200) {
      std::string why = r.status == 404 ? "the agent does not know the volume" : "the agent cannot be asked";
      if (said_[nqn] != why) TLOG_WARN("csi", "volume {}: no live path; {}", uuid, why);
      said_[nqn] = why;
      continue;
    }
    const nlohmann::json tgt = r.body.contains("target") ? r.body["target"] : nlohmann::json();
    const std::string target_node = json_str(tgt, "node");
    auto addr = parse_nvmf_uri(json_str(tgt, "uri"));
    if (json_str(tgt, "state") != "published" || !addr.ok()) {
      std::string why = fmt::format("waiting for the agent to republish it (target {}{})",
                                    json_str(tgt, "state").empty() ? "none" : json_str(tgt, "state"),
                                    target_node.empty() ? "" : " on " + target_node);
      if (!live && said_[nqn] != why) TLOG_INFO("csi", "volume {}: no live path; {}", uuid, why);
      said_[nqn] = why;
      continue;
    }
    const NvmeController* to_target = nullptr;
    for (const auto& c : ctrls) {
      if (address_matches(c.address, addr->host, addr->port)) to_target = &c;
    }
    if (!live) {
      if (to_target) {
        std::string why = fmt::format("its path to the target on {} ({}:{}) is {}; the kernel reconnects", target_node,
                                      addr->host, addr->port, to_target->state);
        if (said_[nqn] != why) TLOG_INFO("csi", "volume {}: {}", uuid, why);
        said_[nqn] = why;
        continue;
      }
      // The new path takes the old ones' settings (what the node plugin connected with).
      NvmeTunables tun = o_.nvme;
      if (!ctrls.empty()) {
        tun.ctrl_loss_tmo = read_seconds(o_.sys_root, ctrls[0].name, "ctrl_loss_tmo").value_or(tun.ctrl_loss_tmo);
        tun.reconnect_delay = read_seconds(o_.sys_root, ctrls[0].name, "reconnect_delay").value_or(tun.reconnect_delay);
      }
      Status s = run_ok({"nvme", "connect", "--transport=tcp", "--traddr=" + addr->host, "--trsvcid=" + addr->port,
                         "--nqn=" + nqn, "--hostnqn=" + o_.host_nqn, fmt::format("--ctrl-loss-tmo={}", tun.ctrl_loss_tmo),
                         fmt::format("--keep-alive-tmo={}", tun.keep_alive_tmo),
                         fmt::format("--reconnect-delay={}", tun.reconnect_delay)},
                        o_.tool_timeout_s);
      if (!s.ok()) {
        TLOG_WARN("csi", "volume {}: connecting to its target on {} ({}:{}): {}", uuid, target_node, addr->host, addr->port,
                  s.message());
        continue;
      }
      done.push_back(fmt::format("volume {}: new path to its target on {} ({}:{})", uuid, target_node, addr->host, addr->port));
      TLOG_INFO("csi", "{}", done.back());
      said_.erase(nqn);
      continue;
    }
    // A live path to the current target: paths elsewhere that are down lead to a node that no longer
    // serves the volume; the kernel would keep retrying them until ctrl-loss-tmo.
    if (!to_target || to_target->state != "live") continue;
    for (const auto& c : ctrls) {
      if (c.state == "live" || c.state == "deleting" || &c == to_target) continue;
      Status s = run_ok({"nvme", "disconnect", "--device=" + c.name}, o_.tool_timeout_s);
      if (!s.ok()) {
        TLOG_WARN("csi", "volume {}: removing its dead path {} ({}): {}", uuid, c.name, c.address, s.message());
        continue;
      }
      done.push_back(fmt::format("volume {}: removed its dead path {} ({})", uuid, c.name, c.address));
      TLOG_INFO("csi", "{}", done.back());
    }
  }
  return done;
}

}  // namespace tern::csi
