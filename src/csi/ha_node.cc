#include "csi/ha_node.h"

#include <algorithm>
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

void PathWatcher::say(Seen& s, bool warn, const std::string& msg) {
  if (s.said == msg) return;
  s.said = msg;
  if (warn) {
    TLOG_WARN("csi", "{}", msg);
  } else {
    TLOG_INFO("csi", "{}", msg);
  }
}

std::vector<std::string> PathWatcher::pass() {
  using namespace std::chrono;
  std::vector<std::string> done;
  std::map<std::string, std::vector<NvmeController>> by_nqn;
  for (auto& c : nvme_controllers(o_.sys_root)) {
    if (c.transport == "tcp" && c.subsysnqn.rfind(o_.nqn_prefix, 0) == 0) by_nqn[c.subsysnqn].push_back(std::move(c));
  }
  for (auto it = seen_.begin(); it != seen_.end();) it = by_nqn.count(it->first) ? std::next(it) : seen_.erase(it);
  const auto now = steady_clock::now();
  auto gone = [](const NvmeController& c) { return c.state.rfind("deleting", 0) == 0; };
  for (const auto& [nqn, ctrls] : by_nqn) {
    const std::string uuid = nqn.substr(o_.nqn_prefix.size());
    Seen& seen = seen_[nqn];
    bool live = false, dead_paths = false;
    for (const auto& c : ctrls) {
      live |= c.state == "live";
      dead_paths |= c.state != "live" && !gone(c);
    }
    if (live) {
      seen.down = false;
    } else if (!seen.down) {
      seen.down = true;
      seen.down_since = now;
    }
    const bool dead_long = seen.down && now - seen.down_since >= milliseconds(o_.dead_after_ms);
    const bool recheck = now - seen.checked >= milliseconds(o_.recheck_ms);
    if (!dead_long && !(live && dead_paths) && !recheck) continue;
    if (now < seen.retry_after) continue;
    seen.checked = now;

    // Where is the volume served now, and for whom?
    rest::RestReply r;
    if (!agent_.call("GET", "/v1/volumes/" + uuid, nullptr, &r).ok() || r.status != 200) {
      if (!live) {
        say(seen, true, fmt::format("volume {}: no live path; {}", uuid,
                                    r.status == 404 ? "the agent does not know the volume" : "the agent cannot be asked"));
      }
      continue;
    }
    const nlohmann::json tgt = r.body.contains("target") ? r.body["target"] : nlohmann::json();
    const std::string target_node = json_str(tgt, "node");
    auto addr = parse_nvmf_uri(json_str(tgt, "uri"));
    std::vector<std::string> hosts =
        tgt.is_object() ? tgt.value("allowed_hosts", std::vector<std::string>{}) : std::vector<std::string>{};
    if (!hosts.empty() && std::find(hosts.begin(), hosts.end(), o_.host_nqn) == hosts.end()) {
      // Published for another host now (this node's pod moved): not this host's to follow.
      say(seen, false, fmt::format("volume {}: published for another host; its paths here are left to the node plugin", uuid));
      continue;
    }
    if (json_str(tgt, "state") != "published" || !addr.ok() || addr->nqn != nqn) {
      if (!live) {
        say(seen, false, fmt::format("volume {}: no live path; waiting for the agent to republish it (target {}{})", uuid,
                                     json_str(tgt, "state").empty() ? "none" : json_str(tgt, "state"),
                                     target_node.empty() ? "" : " on " + target_node));
      }
      continue;
    }
    const NvmeController* to_target = nullptr;
    for (const auto& c : ctrls) {
      if (!gone(c) && address_matches(c.address, addr->host, addr->port)) to_target = &c;
    }
    if (!to_target) {
      // No path to where the volume is served: one is made, beside the others. It takes the old paths'
      // settings (what the node plugin connected with).
      NvmeTunables tun = o_.nvme;
      if (!ctrls.empty()) {
        tun.ctrl_loss_tmo = read_seconds(o_.sys_root, ctrls[0].name, "ctrl_loss_tmo").value_or(tun.ctrl_loss_tmo);
        tun.reconnect_delay = read_seconds(o_.sys_root, ctrls[0].name, "reconnect_delay").value_or(tun.reconnect_delay);
      }
      Status s = run_ok({"nvme", "connect", "--transport=tcp", "--traddr=" + addr->host, "--trsvcid=" + addr->port,
                         "--nqn=" + nqn, "--hostnqn=" + o_.host_nqn, fmt::format("--ctrl-loss-tmo={}", tun.ctrl_loss_tmo),
                         fmt::format("--keep-alive-tmo={}", tun.keep_alive_tmo),
                         fmt::format("--reconnect-delay={}", tun.reconnect_delay)},
                        o_.connect_timeout_s);
      if (!s.ok()) {
        seen.retry_after = steady_clock::now() + milliseconds(o_.retry_ms);
        say(seen, true, fmt::format("volume {}: connecting to its target on {} ({}:{}): {}", uuid, target_node, addr->host,
                                    addr->port, s.message()));
        continue;
      }
      done.push_back(fmt::format("volume {}: new path to its target on {} ({}:{})", uuid, target_node, addr->host, addr->port));
      seen.said.clear();
      TLOG_INFO("csi", "{}", done.back());
      continue;  // the dead paths go once the new one is seen live (a later pass)
    }
    if (to_target->state != "live") {
      if (!live) {
        say(seen, false, fmt::format("volume {}: its path to the target on {} ({}:{}) is {}; the kernel reconnects", uuid,
                                     target_node, addr->host, addr->port, to_target->state));
      }
      continue;
    }
    // A live path to the current target: paths elsewhere that are down lead to a node that no longer
    // serves the volume; the kernel would keep retrying them until ctrl-loss-tmo.
    for (const auto& c : ctrls) {
      if (c.state == "live" || gone(c) || &c == to_target) continue;
      auto again = read_controller(c.name, o_.sys_root);
      if (!again || again->subsysnqn != c.subsysnqn || again->address != c.address || again->state == "live" || gone(*again)) {
        continue;  // changed since the pass began (gone, reused, or back): the next pass decides
      }
      Status s = run_ok({"nvme", "disconnect", "--device=" + c.name}, o_.connect_timeout_s);
      if (!s.ok()) {
        say(seen, true, fmt::format("volume {}: removing its dead path {} ({}): {}", uuid, c.name, c.address, s.message()));
        continue;
      }
      done.push_back(fmt::format("volume {}: removed its dead path {} ({})", uuid, c.name, c.address));
      TLOG_INFO("csi", "{}", done.back());
    }
  }
  return done;
}

}  // namespace tern::csi
