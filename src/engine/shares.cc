#include "engine/shares.h"

#include <algorithm>
#include <set>

#include "common/log.h"
#include "nbd/server.h"

namespace tern::engine {

const char* Shares::ProtocolName(ShareProtocol p) {
  switch (p) {
    case ShareProtocol::kNvmf:
      return "nvmf";
    case ShareProtocol::kNbd:
      return "nbd";
    default:
      return "none";
  }
}

Status Shares::ValidateHosts(const std::vector<std::string>& hosts) {
  std::set<std::string_view> seen;
  for (auto& h : hosts) {
    if (Status s = nvmf::validate_nqn(h); !s.ok()) {
      return Status::Errorf(Errc::kInval, "allowed_hosts: {}", s.message());
    }
    if (!seen.insert(h).second) return Status::Errorf(Errc::kInval, "allowed_hosts: '{}' is listed twice", h);
  }
  return Status::Ok();
}

const ShareInfo* Shares::find(const std::string& device) const {
  auto it = shares_.find(device);
  return it == shares_.end() ? nullptr : &it->second;
}

Task<Result<ShareInfo>> Shares::share(std::string device, std::string id, ShareProtocol protocol,
                                      std::vector<std::string> hosts, ShareOptions opts) {
  const bool read_only = opts.read_only;
  if (protocol != ShareProtocol::kNvmf && protocol != ShareProtocol::kNbd) {
    co_return Status(Errc::kInval, "protocol: choose nvmf or nbd");
  }
  TERN_CO_RETURN_IF_ERROR(ValidateHosts(hosts));
  if (auto it = shares_.find(device); it != shares_.end()) {
    if (it->second.protocol != protocol) {
      co_return Status::Errorf(Errc::kBusy, "'{}' is already shared over {}; unshare it first", device,
                               ProtocolName(it->second.protocol));
    }
    if (it->second.hosts != hosts) TERN_CO_RETURN_IF_ERROR(set_hosts(device, hosts));
    co_return it->second;
  }
  ShareInfo info;
  info.protocol = protocol;
  info.id = id;
  info.hosts = hosts;
  if (protocol == ShareProtocol::kNbd) {
    if (!nbd_) co_return Status(Errc::kNotSup, "the NBD server is off (start the engine with --nbd-port or --nbd-socket)");
    if (!hosts.empty()) co_return Status(Errc::kInval, "allowed_hosts: NBD has no host identities; leave it empty");
    TERN_CO_RETURN_IF_ERROR(nbd_->add_export(id, device, read_only));
    info.uri = ep_.nbd_port ? fmt::format("nbd://{}:{}/{}", ep_.nbd_host, ep_.nbd_port, id)
                            : fmt::format("nbd+unix:///{}?socket={}", id, nbd_->unix_path());
    TLOG_INFO("engine", "shared '{}' over NBD as export '{}' ({})", device, id, info.uri);
    shares_[device] = info;
    co_return info;
  }
  nvmf::SubsystemConfig cfg;
  cfg.nqn = kNqnPrefix + id;
  cfg.model = opts.model;
  cfg.cntlid_min = opts.cntlid_min;
  cfg.cntlid_max = opts.cntlid_max;
  cfg.allow_any_host = hosts.empty();
  cfg.hosts = hosts;
  cfg.listeners = {ep_.nvmf};
  auto sub = target_.create_subsystem(cfg);
  if (!sub.ok()) co_return sub.status();
  if (opts.ana) {
    // Before any connection is served (nothing awaited since the subsystem appeared).
    Status st = target_.set_ana_state(cfg.nqn, ep_.nvmf, 1, *opts.ana);
    if (!st.ok()) {
      (void)co_await target_.delete_subsystem(cfg.nqn);
      co_return st;
    }
  }
  auto ns = target_.add_namespace(cfg.nqn, device, 1);
  if (!ns.ok()) {
    Status undo = co_await target_.delete_subsystem(cfg.nqn);
    if (!undo.ok()) TLOG_WARN("engine", "sharing '{}' failed and so did removing its subsystem: {}", device, undo.message());
    co_return ns.status();
  }
  info.uri = fmt::format("nvmf://{}:{}/{}", ep_.advertise, ep_.nvmf.port, cfg.nqn);
  TLOG_INFO("engine", "shared '{}' over NVMe/TCP as {} ({})", device, cfg.nqn,
         hosts.empty() ? std::string("any host") : fmt::format("hosts: {}", fmt::join(hosts, ", ")));
  shares_[device] = info;
  co_return info;
}

Status Shares::set_hosts(const std::string& device, std::vector<std::string> hosts) {
  TERN_RETURN_IF_ERROR(ValidateHosts(hosts));
  auto it = shares_.find(device);
  if (it == shares_.end()) return Status::Errorf(Errc::kNoEnt, "'{}' is not shared", device);
  ShareInfo& info = it->second;
  if (info.protocol != ShareProtocol::kNvmf) {
    return Status::Errorf(Errc::kInval, "allowed_hosts: '{}' is shared over {}, which has no host identities", device,
                          ProtocolName(info.protocol));
  }
  std::string nqn = kNqnPrefix + info.id;
  // Add the new ones before removing the old ones, and open to any host last / close first, so a host on
  // both lists is never refused in between.
  for (auto& h : hosts) {
    if (std::find(info.hosts.begin(), info.hosts.end(), h) == info.hosts.end()) {
      TERN_RETURN_IF_ERROR(target_.add_host(nqn, h));
    }
  }
  if (!hosts.empty()) TERN_RETURN_IF_ERROR(target_.set_allow_any_host(nqn, false));
  for (auto& h : info.hosts) {
    if (std::find(hosts.begin(), hosts.end(), h) == hosts.end()) TERN_RETURN_IF_ERROR(target_.remove_host(nqn, h));
  }
  if (hosts.empty()) TERN_RETURN_IF_ERROR(target_.set_allow_any_host(nqn, true));
  info.hosts = std::move(hosts);
  TLOG_INFO("engine", "'{}': allowed hosts now {}", device,
         info.hosts.empty() ? std::string("any") : fmt::format("{}", fmt::join(info.hosts, ", ")));
  return Status::Ok();
}

Task<Status> Shares::unshare(std::string device) {
  auto it = shares_.find(device);
  if (it == shares_.end()) co_return Status::Ok();
  ShareInfo info = it->second;
  if (info.protocol == ShareProtocol::kNvmf) {
    std::string nqn = kNqnPrefix + info.id;
    Status s = co_await target_.delete_subsystem(nqn);
    if (!s.ok() && s.code() != Errc::kNoEnt) co_return s;
  } else if (info.protocol == ShareProtocol::kNbd && nbd_) {
    Status s = co_await nbd_->remove_export(info.id);
    if (!s.ok() && s.code() != Errc::kNoEnt) co_return s;
  }
  shares_.erase(device);
  TLOG_INFO("engine", "unshared '{}'", device);
  co_return Status::Ok();
}

Task<void> Shares::unshare_all() {
  std::vector<std::string> devices;
  for (auto& [d, _] : shares_) devices.push_back(d);
  for (auto& d : devices) {
    Status s = co_await unshare(d);
    if (!s.ok()) TLOG_WARN("engine", "unsharing '{}': {}", d, s.message());
  }
}

}  // namespace tern::engine
