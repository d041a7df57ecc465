#include "csi/node.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "common/log.h"
#include "csi/controller.h"
#include "csi/host.h"
#include "csi/ids.h"

namespace tern::csi {

namespace fs = std::filesystem;
using grpc::StatusCode;

namespace {

grpc::Status invalid(std::string msg) { return grpc::Status(StatusCode::INVALID_ARGUMENT, std::move(msg)); }
grpc::Status internal(const Status& s) { return grpc::Status(StatusCode::INTERNAL, std::string(s.message())); }
grpc::Status aborted(const std::string& id) {
  return grpc::Status(StatusCode::ABORTED, fmt::format("an operation on volume {} is already in progress", id));
}
grpc::Status errno_status(const std::string& what) {
  int e = errno;
  return grpc::Status(StatusCode::INTERNAL, fmt::format("{}: {}", what, strerror(e)));
}

// The device a mount entry stands on, as major:minor.
bool same_device(const MountEntry& m, const struct stat& dev) {
  return m.major == major(dev.st_rdev) && m.minor == minor(dev.st_rdev);
}

// Every mount of the device (file systems and bind mounts of the node itself).
std::vector<MountEntry> mounts_of(const std::vector<MountEntry>& all, const std::string& dev_path) {
  std::vector<MountEntry> out;
  struct stat st;
  if (::stat(dev_path.c_str(), &st) != 0) return out;
  const std::string node_root = "/" + fs::path(dev_path).filename().string();
  for (const auto& m : all) {
    // A file system on it, or its device node bind-mounted (raw block: the table names devtmpfs).
    if (same_device(m, st) || m.source == dev_path || (m.fs_type == "devtmpfs" && m.root == node_root)) out.push_back(m);
  }
  return out;
}

std::string join_flags(const google::protobuf::RepeatedPtrField<std::string>& flags, bool ro) {
  std::string out;
  for (const auto& f : flags) out += (out.empty() ? "" : ",") + f;
  if (ro) out += std::string(out.empty() ? "" : ",") + "ro";
  return out;
}

bool reader_only(const pb::VolumeCapability& c) {
  return c.access_mode().mode() == pb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY ||
         c.access_mode().mode() == pb::VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY;
}

}  // namespace

std::optional<std::string> NodeService::device_of(const std::string& volume_id) const {
  auto name = namespace_by_nguid(volume_id, o_.sys_root);
  if (!name) return std::nullopt;
  return "/dev/" + *name;
}

grpc::Status NodeService::attach(const std::string& volume_id, const std::string& uri, const NvmeTunables& t,
                                 std::string* dev) {
  auto addr = parse_nvmf_uri(uri);
  if (!addr.ok()) return invalid("publish_context.uri: " + std::string(addr.status().message()));
  // The publish context is the volume's target when it was attached; a switch-over since (the attacher
  // does not publish again) has moved it. The agent knows where it is now, and whether this host may
  // connect there: that address is taken when it serves the same subsystem.
  if (agent_) {
    rest::RestReply r;
    if (agent_->call("GET", "/v1/volumes/" + volume_id, nullptr, &r).ok() && r.status == 200 && r.body.contains("target") &&
        r.body["target"].is_object()) {
      const auto& tg = r.body["target"];
      auto now = parse_nvmf_uri(tg.value("uri", ""));
      std::vector<std::string> hosts = tg.value("allowed_hosts", std::vector<std::string>{});
      bool ours = hosts.empty() || std::find(hosts.begin(), hosts.end(), o_.host_nqn) != hosts.end();
      if (tg.value("state", "") == "published" && now.ok() && now->nqn == addr->nqn && ours &&
          (now->host != addr->host || now->port != addr->port)) {
        TLOG_INFO("csi", "volume {}: its target moved to {}:{} since it was published here ({}:{})", volume_id, now->host,
                  now->port, addr->host, addr->port);
        addr = std::move(now);
      }
    }
  }
  bool live = false;
  for (const auto& c : nvme_controllers(o_.sys_root)) {
    if (c.subsysnqn == addr->nqn && c.transport == "tcp" && address_matches(c.address, addr->host, addr->port) &&
        c.state.rfind("deleting", 0) != 0) {
      live = true;
    }
  }
  if (!live) {
    // A path to this address: a new one, or another beside the paths to the volume's earlier targets
    // (the kernel's multipath then uses whichever is live).
    Status s = run_ok({"nvme", "connect", "--transport=tcp", "--traddr=" + addr->host, "--trsvcid=" + addr->port,
                       "--nqn=" + addr->nqn, "--hostnqn=" + o_.host_nqn, fmt::format("--ctrl-loss-tmo={}", t.ctrl_loss_tmo),
                       fmt::format("--keep-alive-tmo={}", t.keep_alive_tmo),
                       fmt::format("--reconnect-delay={}", t.reconnect_delay)},
                      o_.attach_timeout_s);
    if (!s.ok()) {
      // Connected meanwhile (by a call that timed out on the CO's side)? Then the namespace shows.
      if (!device_of(volume_id)) {
        return grpc::Status(StatusCode::UNAVAILABLE,
                            fmt::format("connecting to {}:{}: {}", addr->host, addr->port, s.message()));
      }
    } else {
      TLOG_INFO("csi", "volume {}: connected to {}:{}", volume_id, addr->host, addr->port);
    }
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o_.attach_timeout_s);
  while (true) {
    if (auto d = device_of(volume_id)) {
      // udev makes the node; the kernel's devtmpfs has it at once.
      if (::access(d->c_str(), F_OK) == 0) {
        *dev = *d;
        return grpc::Status::OK;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return grpc::Status(StatusCode::DEADLINE_EXCEEDED,
                          fmt::format("volume {}: connected to {}, but no namespace with NGUID {} appeared within {} s",
                                      volume_id, uri, volume_id, o_.attach_timeout_s));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext*, const pb::NodeStageVolumeRequest* req,
                                          pb::NodeStageVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->staging_target_path().empty()) return invalid("staging_target_path is required");
  if (!req->has_volume_capability()) return invalid("volume_capability is required");
  if (std::string why = unsupported(req->volume_capability()); !why.empty()) return invalid("volume_capability: " + why);
  auto uri = req->publish_context().find("uri");
  if (uri == req->publish_context().end() || uri->second.empty()) {
    return invalid("publish_context.uri is required (ControllerPublishVolume's answer)");
  }
  auto tun = nvme_tunables({req->volume_context().begin(), req->volume_context().end()});
  if (!tun.ok()) return invalid("volume_context: " + std::string(tun.status().message()));
  auto guard = busy_.try_take(id);
  if (!guard) return aborted(id);

  std::string dev;
  if (auto s = attach(id, uri->second, *tun, &dev); !s.ok()) return s;
  if (req->volume_capability().has_block()) return grpc::Status::OK;  // Publish binds the device itself

  const std::string& staging = req->staging_target_path();
  struct stat dst;
  if (::stat(dev.c_str(), &dst) != 0) return errno_status(dev);
  if (auto m = mount_at(read_mounts(), staging)) {
    if (same_device(*m, dst)) return grpc::Status::OK;
    return grpc::Status(StatusCode::ALREADY_EXISTS,
                        fmt::format("{} has another file system mounted ({} from {})", staging, m->fs_type, m->source));
  }
  std::string want = req->volume_capability().mount().fs_type();
  if (want.empty()) {
    auto it = req->volume_context().find("fsType");
    want = it != req->volume_context().end() ? it->second : "ext4";
  }
  auto have = probe_signature(dev);
  if (!have.ok()) return internal(have.status());
  if (have->type.empty() && !have->pttype.empty()) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION,
                        fmt::format("volume {} holds a {} partition table; it is left as it is (not formatted)", id,
                                    have->pttype));
  }
  if (have->type.empty()) {
    // A new volume: only a device without any signature (file system, partition table, LVM, ...) is
    // formatted, and without forcing, so mkfs's own checks stay on.
    std::vector<std::string> mkfs = want == "xfs" ? std::vector<std::string>{"mkfs.xfs", "-q", dev}
                                                  : std::vector<std::string>{"mkfs.ext4", "-q", "-m0", dev};
    if (Status s = run_ok(mkfs, o_.tool_timeout_s); !s.ok()) return internal(s);
    TLOG_INFO("csi", "volume {}: made {} on {}", id, want, dev);
  } else if (have->type != want) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION,
                        fmt::format("volume {} holds {} ({}), not {}; it is left as it is", id, have->type,
                                    have->type == "ext4" || have->type == "xfs" ? "a file system" : "a signature", want));
  }
  std::error_code ec;
  fs::create_directories(staging, ec);
  if (ec) return grpc::Status(StatusCode::INTERNAL, fmt::format("{}: {}", staging, ec.message()));
  std::string opts = join_flags(req->volume_capability().mount().mount_flags(), reader_only(req->volume_capability()));
  std::vector<std::string> mount = {"mount", "-t", want};
  if (!opts.empty()) {
    mount.push_back("-o");
    mount.push_back(opts);
  }
  mount.push_back(dev);
  mount.push_back(staging);
  if (Status s = run_ok(mount, o_.tool_timeout_s); !s.ok()) return internal(s);
  TLOG_INFO("csi", "volume {}: {} mounted at {}", id, dev, staging);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext*, const pb::NodeUnstageVolumeRequest* req,
                                            pb::NodeUnstageVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->staging_target_path().empty()) return invalid("staging_target_path is required");
  auto guard = busy_.try_take(id);
  if (!guard) return aborted(id);
  const std::string& staging = req->staging_target_path();
  auto mounts = read_mounts();
  if (mount_at(mounts, staging)) {
    if (::umount2(staging.c_str(), 0) != 0) return errno_status("unmounting " + staging);
    TLOG_INFO("csi", "volume {}: unmounted {}", id, staging);
    mounts = read_mounts();
  }
  auto dev = device_of(id);
  if (!dev) return grpc::Status::OK;  // disconnected already
  auto left = mounts_of(mounts, *dev);
  if (!left.empty()) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION,
                        fmt::format("volume {} ({}) is still mounted at {}; unpublish it first", id, *dev, left.front().target));
  }
  auto nqn = subsystem_of(fs::path(*dev).filename(), o_.sys_root);
  if (!nqn) return grpc::Status(StatusCode::INTERNAL, fmt::format("volume {}: no subsystem found for {}", id, *dev));
  if (Status s = run_ok({"nvme", "disconnect", "--nqn=" + *nqn}, o_.attach_timeout_s); !s.ok()) {
    if (device_of(id)) return internal(s);
  }
  TLOG_INFO("csi", "volume {}: disconnected from {}", id, *nqn);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*, const pb::NodePublishVolumeRequest* req,
                                            pb::NodePublishVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->target_path().empty()) return invalid("target_path is required");
  if (req->staging_target_path().empty()) return invalid("staging_target_path is required (the volume is staged first)");
  if (!req->has_volume_capability()) return invalid("volume_capability is required");
  if (std::string why = unsupported(req->volume_capability()); !why.empty()) return invalid("volume_capability: " + why);
  auto guard = busy_.try_take(id);
  if (!guard) return aborted(id);
  const std::string& target = req->target_path();
  const bool ro = req->readonly() || reader_only(req->volume_capability());
  const bool block = req->volume_capability().has_block();
  auto mounts = read_mounts();

  std::string source;
  if (block) {
    auto dev = device_of(id);
    if (!dev) return grpc::Status(StatusCode::FAILED_PRECONDITION, fmt::format("volume {} is not staged on this node", id));
    source = *dev;
  } else {
    auto staged = mount_at(mounts, req->staging_target_path());
    if (!staged) {
      return grpc::Status(StatusCode::FAILED_PRECONDITION,
                          fmt::format("volume {} is not staged at {}", id, req->staging_target_path()));
    }
    source = req->staging_target_path();
  }
  if (auto m = mount_at(mounts, target)) {
    struct stat src;
    bool same = false;
    if (block) {
      // A bind-mounted device node: the mount table names devtmpfs; the node itself is the device.
      struct stat tgt;
      same = ::stat(source.c_str(), &src) == 0 && ::stat(target.c_str(), &tgt) == 0 && S_ISBLK(tgt.st_mode) &&
             tgt.st_rdev == src.st_rdev;
    } else if (auto staged = mount_at(mounts, source)) {
      same = m->major == staged->major && m->minor == staged->minor;
    }
    bool is_ro = ("," + m->options + ",").find(",ro,") != std::string::npos;
    if (same && is_ro == ro) return grpc::Status::OK;
    return grpc::Status(StatusCode::ALREADY_EXISTS,
                        fmt::format("{} is mounted already, {}", target,
                                    same ? (is_ro ? "read-only" : "read-write") : "with something else"));
  }
  std::error_code ec;
  if (block) {
    fs::create_directories(fs::path(target).parent_path(), ec);
    int fd = ::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0640);
    if (fd < 0) return errno_status(target);
    ::close(fd);
  } else {
    fs::create_directories(target, ec);
    if (ec) return grpc::Status(StatusCode::INTERNAL, fmt::format("{}: {}", target, ec.message()));
  }
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return errno_status(fmt::format("bind-mounting {} at {}", source, target));
  }
  if (ro && ::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    auto s = errno_status("making " + target + " read-only");
    ::umount2(target.c_str(), MNT_DETACH);
    return s;
  }
  TLOG_INFO("csi", "volume {}: {} at {}{}", id, block ? "device" : "file system", target, ro ? " (read-only)" : "");
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*, const pb::NodeUnpublishVolumeRequest* req,
                                              pb::NodeUnpublishVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->target_path().empty()) return invalid("target_path is required");
  auto guard = busy_.try_take(id);
  if (!guard) return aborted(id);
  const std::string& target = req->target_path();
  while (mount_at(read_mounts(), target)) {
    if (::umount2(target.c_str(), 0) != 0) return errno_status("unmounting " + target);
  }
  std::error_code ec;
  fs::remove(target, ec);  // the directory or file Publish made; gone already is fine
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return grpc::Status(StatusCode::INTERNAL, fmt::format("removing {}: {}", target, ec.message()));
  }
  return grpc::Status::OK;
}

void NodeService::health(const std::string& id, pb::VolumeCondition* c) const {
  // The host's own view first: a volume without a live path is abnormal whatever the agent says.
  auto dev = device_of(id);
  std::optional<std::string> nqn = dev ? subsystem_of(fs::path(*dev).filename(), o_.sys_root) : std::nullopt;
  int live = 0, paths = 0;
  if (nqn) {
    for (const auto& ctl : nvme_controllers(o_.sys_root)) {
      if (ctl.subsysnqn != *nqn) continue;
      paths++;
      live += ctl.state == "live";
    }
  }
  std::string local = dev ? fmt::format("{} path(s), {} live", paths, live) : "not connected on this node";
  std::string remote;
  bool remote_bad = false;
  if (agent_) {
    rest::RestReply r;
    if (agent_->call("GET", "/v1/volumes/" + id, nullptr, &r).ok() && r.status == 200) {
      std::string st = r.body.value("status", "");
      remote = "; volume " + st;
      remote_bad = st != "online";
    }
  }
  c->set_abnormal(!dev || live == 0 || remote_bad);
  c->set_message(local + remote);
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext*, const pb::NodeGetVolumeStatsRequest* req,
                                             pb::NodeGetVolumeStatsResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->volume_path().empty()) return invalid("volume_path is required");
  struct stat st;
  if (::stat(req->volume_path().c_str(), &st) != 0) {
    return grpc::Status(StatusCode::NOT_FOUND, fmt::format("{}: {}", req->volume_path(), strerror(errno)));
  }
  if (S_ISBLK(st.st_mode)) {
    auto bytes = block_size_bytes(req->volume_path());
    if (!bytes.ok()) return internal(bytes.status());
    auto* u = resp->add_usage();
    u->set_unit(pb::VolumeUsage::BYTES);
    u->set_total(int64_t(*bytes));
  } else {
    if (!mount_at(read_mounts(), req->volume_path())) {
      return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} is not mounted at {}", id, req->volume_path()));
    }
    struct statvfs v;
    if (::statvfs(req->volume_path().c_str(), &v) != 0) return errno_status(req->volume_path());
    auto* b = resp->add_usage();
    b->set_unit(pb::VolumeUsage::BYTES);
    b->set_total(int64_t(v.f_blocks * v.f_frsize));
    b->set_available(int64_t(v.f_bavail * v.f_frsize));
    b->set_used(int64_t((v.f_blocks - v.f_bfree) * v.f_frsize));
    auto* i = resp->add_usage();
    i->set_unit(pb::VolumeUsage::INODES);
    i->set_total(int64_t(v.f_files));
    i->set_available(int64_t(v.f_favail));
    i->set_used(int64_t(v.f_files - v.f_ffree));
  }
  health(id, resp->mutable_volume_condition());
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeExpandVolume(grpc::ServerContext*, const pb::NodeExpandVolumeRequest* req,
                                           pb::NodeExpandVolumeResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->volume_path().empty()) return invalid("volume_path is required");
  struct stat st;
  if (::stat(req->volume_path().c_str(), &st) != 0) {
    return grpc::Status(StatusCode::NOT_FOUND, fmt::format("{}: {}", req->volume_path(), strerror(errno)));
  }
  auto guard = busy_.try_take(id);
  if (!guard) return aborted(id);
  auto dev = device_of(id);
  if (!dev) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} is not attached to this node", id));
  // The namespace's new size: the target announces it (an asynchronous event); a rescan asks anyway.
  const int64_t want = req->has_capacity_range() ? req->capacity_range().required_bytes() : 0;
  auto nqn = subsystem_of(fs::path(*dev).filename(), o_.sys_root);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o_.attach_timeout_s);
  bool rescanned = false;
  while (true) {
    auto bytes = block_size_bytes(*dev);
    if (!bytes.ok()) return internal(bytes.status());
    if (want <= 0 || int64_t(*bytes) >= want) break;
    if (!rescanned && nqn) {
      for (const auto& c : nvme_controllers(o_.sys_root)) {
        if (c.subsysnqn == *nqn && c.state == "live") (void)run_ok({"nvme", "ns-rescan", "/dev/" + c.name}, 60);
      }
      rescanned = true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return grpc::Status(StatusCode::UNAVAILABLE, fmt::format("volume {}: {} is {} bytes, not yet the {} asked for", id,
                                                               *dev, *bytes, want));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const bool block = S_ISBLK(st.st_mode) || (req->has_volume_capability() && req->volume_capability().has_block());
  if (!block) {
    auto m = mount_at(read_mounts(), req->volume_path());
    if (!m) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} is not mounted at {}", id, req->volume_path()));
    Status s = m->fs_type == "xfs" ? run_ok({"xfs_growfs", req->volume_path()}, o_.tool_timeout_s)
               : m->fs_type == "ext4" ? run_ok({"resize2fs", *dev}, o_.tool_timeout_s)
                                      : Status::Errorf(Errc::kNotSup, "cannot grow a {} file system", m->fs_type);
    if (!s.ok()) return internal(s);
    TLOG_INFO("csi", "volume {}: {} file system at {} grown", id, m->fs_type, req->volume_path());
  }
  auto bytes = block_size_bytes(*dev);
  if (!bytes.ok()) return internal(bytes.status());
  resp->set_capacity_bytes(int64_t(*bytes));
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*, const pb::NodeGetCapabilitiesRequest*,
                                              pb::NodeGetCapabilitiesResponse* resp) {
  using T = pb::NodeServiceCapability::RPC;
  for (auto t : {T::STAGE_UNSTAGE_VOLUME, T::GET_VOLUME_STATS, T::EXPAND_VOLUME, T::VOLUME_CONDITION,
                 T::SINGLE_NODE_MULTI_WRITER}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const pb::NodeGetInfoRequest*, pb::NodeGetInfoResponse* resp) {
  resp->set_node_id(format_node_id({o_.node_name, o_.host_nqn}));
  (*resp->mutable_accessible_topology()->mutable_segments())[kTopologyKey] = o_.node_name;
  return grpc::Status::OK;
}

}  // namespace tern::csi
