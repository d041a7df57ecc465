#include "engine/nexus_manager.h"

#include <algorithm>

#include "common/log.h"
#include "nvmf/target/controller.h"

namespace tern::engine {

Result<nvmf::PassthruReply> TargetReservations::command(const std::string& device, const std::array<uint8_t, 16>& hostid,
                                                        const nvme::Sqe& sqe, const std::vector<uint8_t>& data,
                                                        uint32_t in_len) {
  TERN_ASSIGN_OR_RETURN(nvmf::AdminResult r, target_.local_reservation_command(device, hostid, sqe, data, in_len));
  nvmf::PassthruReply out;
  out.status = r.status;
  out.data = std::move(r.data);
  if (out.data.size() > in_len) out.data.resize(in_len);
  return out;
}

void TargetReservations::watch(const std::string& device, const std::array<uint8_t, 16>& hostid,
                               std::function<void()> fenced) {
  target_.watch_local_reservation(device, hostid, std::move(fenced));
}

NexusManager::NexusManager(BdevRegistry& registry, nvmf::Target& target, Shares& shares, nvmf::ListenAddr listener,
                           nexus::RecordStore* store, nexus::LocalSnapshots* snapshots, std::string host_nqn,
                           uint64_t persist_timeout_ns)
    : registry_(registry),
      target_(target),
      shares_(shares),
      listener_(std::move(listener)),
      store_(store),
      snapshots_(snapshots),
      host_nqn_(std::move(host_nqn)),
      persist_timeout_ns_(persist_timeout_ns) {}

bool NexusManager::is_nexus(const std::string& device) const {
  auto u = Uuid::Parse(device);
  return u.ok() && nexuses_.count(*u);
}

Result<NexusManager::Entry*> NexusManager::find(const Uuid& uuid) {
  auto it = nexuses_.find(uuid);
  if (it == nexuses_.end()) return Status::Errorf(Errc::kNoEnt, "no nexus {} on this node", uuid.ToString());
  return &it->second;
}

Task<NexusDesc> NexusManager::describe(Entry& e) {
  NexusDesc d;
  d.info = co_await e.nx->info();
  d.resv_key = e.args.resv_key;
  d.resv_type = e.args.resv_type;
  d.preempt = e.args.preempt;
  if (const ShareInfo* s = shares_.find(e.nx->name())) d.share = *s;
  if (e.published) {
    d.cntlid_min = e.published->cntlid_min;
    d.cntlid_max = e.published->cntlid_max;
    d.ana_state = e.published->ana_state.empty() ? "optimized" : e.published->ana_state;
  }
  d.required_child_size = e.nx->layout().required_child_bytes();
  co_return d;
}

Task<Result<NexusDesc>> NexusManager::create(CreateNexusArgs args) {
  auto g = co_await mu_.lock();
  if (args.uuid.is_nil()) co_return Status(Errc::kInval, "uuid: the volume's UUID is required");
  if (auto it = nexuses_.find(args.uuid); it != nexuses_.end()) {
    // The same create again is the existing nexus; a different one names the difference.
    const CreateNexusArgs& have = it->second.args;
    auto differ = [&](const char* field, const std::string& h, const std::string& w) {
      return Status::Errorf(Errc::kExist, "nexus {} already exists with {} {} (asked for {})", args.uuid.ToString(),
                            field, h, w);
    };
    if (have.size != args.size) co_return differ("size", std::to_string(have.size), std::to_string(args.size));
    if (have.persistence_key != args.persistence_key) {
      co_return differ("persistence_key", "'" + have.persistence_key + "'", "'" + args.persistence_key + "'");
    }
    if (have.resv_key != args.resv_key) {
      co_return differ("resv_key", fmt::format("{:#x}", have.resv_key), fmt::format("{:#x}", args.resv_key));
    }
    if (have.resv_type != args.resv_type) {
      co_return differ("resv_type", std::to_string(int(have.resv_type)), std::to_string(int(args.resv_type)));
    }
    if (have.cntlid_min != args.cntlid_min || have.cntlid_max != args.cntlid_max) {
      co_return differ("controller IDs", fmt::format("{}..{}", have.cntlid_min, have.cntlid_max),
                       fmt::format("{}..{}", args.cntlid_min, args.cntlid_max));
    }
    if (have.children != args.children) {
      co_return differ("children", fmt::format("[{}]", fmt::join(have.children, ", ")),
                       fmt::format("[{}]", fmt::join(args.children, ", ")));
    }
    co_return co_await describe(it->second);
  }
  nexus::NexusOptions o;
  o.uuid = args.uuid;
  o.size_bytes = args.size;
  o.children = args.children;
  o.persistence_key = args.persistence_key;
  o.resv_key = args.resv_key;
  o.resv_type = args.resv_type;
  o.preempt = args.preempt;
  o.preempt_key = args.preempt_key;
  o.host_nqn = host_nqn_;
  o.persist_timeout_ns = persist_timeout_ns_;
  o.local_resv = &local_resv_;
  o.local_snap = snapshots_;
  o.auto_rebuild = args.auto_rebuild;
  o.rebuild = args.rebuild;
  o.al_extents = args.al_extents;
  o.region_bytes = args.region_bytes;
  o.adopt_labels_of = args.adopt_labels_of;
  auto nx = co_await nexus::Nexus::Create(registry_, o, store_);
  if (!nx.ok()) co_return nx.status();
  Entry& e = nexuses_[args.uuid];
  e.nx = *nx;
  e.args = std::move(args);
  co_return co_await describe(e);
}

Task<Status> NexusManager::destroy_locked(Uuid uuid) {
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  const std::string dev = e->nx->name();
  TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(dev));
  co_await e->nx->close_children();
  Status st = co_await registry_.destroy(dev, true);
  if (!st.ok()) co_return st;
  nexuses_.erase(uuid);
  TLOG_INFO("engine", "nexus {} destroyed", uuid.ToString());
  co_return Status::Ok();
}

Task<Status> NexusManager::destroy(Uuid uuid) {
  auto g = co_await mu_.lock();
  co_return co_await destroy_locked(uuid);
}

Task<Result<NexusDesc>> NexusManager::shutdown(Uuid uuid) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  Status st = co_await e->nx->shutdown_nexus();
  if (!st.ok()) co_return st;
  co_return co_await describe(*e);
}

Task<std::vector<NexusDesc>> NexusManager::list(std::optional<Uuid> uuid) {
  auto g = co_await mu_.lock();
  std::vector<NexusDesc> out;
  for (auto& [id, e] : nexuses_) {
    if (uuid && id != *uuid) continue;
    out.push_back(co_await describe(e));
  }
  co_return out;
}

Task<Result<NexusDesc>> NexusManager::add_child(Uuid uuid, std::string uri) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  TERN_CO_RETURN_IF_ERROR(co_await e->nx->add_child(std::move(uri)));
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::remove_child(Uuid uuid, Uuid child) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  TERN_CO_RETURN_IF_ERROR(co_await e->nx->remove_child(child));
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::fault_child(Uuid uuid, Uuid child, nexus::FaultReason reason) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  TERN_CO_RETURN_IF_ERROR(co_await e->nx->fault_child(child, reason));
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::online_child(Uuid uuid, Uuid child) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  TERN_CO_RETURN_IF_ERROR(co_await e->nx->online_child(child));
  co_return co_await describe(*e);
}

Task<Result<nexus::RebuildStats>> NexusManager::rebuild(Uuid uuid, Uuid child, RebuildCommand cmd) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  nexus::Nexus& nx = *e->nx;
  using Op = RebuildCommand::Op;
  if (cmd.op == Op::kStart) {
    TERN_CO_RETURN_IF_ERROR(co_await nx.start_rebuild(child, cmd.opts));
    co_return nx.rebuild_job(child)->stats();
  }
  nexus::RebuildJob* job = nx.rebuild_job(child);
  if (!job || job->finished()) {
    if (cmd.op == Op::kStop && job) co_return job->stats();  // stopped or ended already
    co_return Status::Errorf(Errc::kNoEnt, "no rebuild of child {} of nexus {} is running or paused", child.ToString(),
                             uuid.ToString());
  }
  switch (cmd.op) {
    case Op::kPause: job->pause(); break;
    case Op::kResume: job->resume(); break;
    case Op::kStop: job->stop("stopped by request"); break;
    case Op::kSetRate: job->set_rate(cmd.rate_bytes_per_s); break;
    case Op::kStart: break;
  }
  co_return job->stats();
}

Task<Result<RebuildList>> NexusManager::rebuilds(Uuid uuid) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  RebuildList l;
  auto info = co_await e->nx->info();
  for (const auto& c : info.children) {
    if (c.rebuild && !c.rebuild->finished()) l.current.push_back(*c.rebuild);
  }
  const auto& h = e->nx->rebuild_history();
  l.history.assign(h.begin(), h.end());
  l.totals = e->nx->rebuild_totals();
  co_return l;
}

Task<Result<NexusDesc>> NexusManager::publish(Uuid uuid, PublishNexusArgs args) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  if (args.protocol != ShareProtocol::kNvmf && args.protocol != ShareProtocol::kNbd) {
    co_return Status(Errc::kInval, "protocol: choose nvmf or nbd");
  }
  if (args.cntlid_min == 0) args.cntlid_min = e->args.cntlid_min ? e->args.cntlid_min : 1;
  if (args.cntlid_max == 0) args.cntlid_max = e->args.cntlid_max ? e->args.cntlid_max : 0xFFEF;
  if (args.cntlid_min == 0 || args.cntlid_min > args.cntlid_max || args.cntlid_max > 0xFFEF) {
    co_return Status::Errorf(Errc::kInval, "cntlid range {}..{} is invalid (1 <= min <= max <= 65519)", args.cntlid_min,
                             args.cntlid_max);
  }
  std::optional<nvme::AnaState> ana;
  if (!args.ana_state.empty()) {
    auto s = nvmf::parse_ana_state(args.ana_state);
    if (!s.ok()) co_return s.status().WithContext("ana_state");
    ana = *s;
  }
  const std::string dev = e->nx->name();
  if (e->published && e->published->protocol == args.protocol &&
      (e->published->cntlid_min != args.cntlid_min || e->published->cntlid_max != args.cntlid_max)) {
    co_return Status::Errorf(Errc::kExist, "nexus {} is published with controller IDs {}..{} (asked for {}..{}); unpublish first",
                             uuid.ToString(), e->published->cntlid_min, e->published->cntlid_max, args.cntlid_min,
                             args.cntlid_max);
  }
  ShareOptions so;
  so.cntlid_min = args.cntlid_min;
  so.cntlid_max = args.cntlid_max;
  so.model = "tern volume";
  so.ana = ana;
  const std::string id = uuid.ToString();  // named: no temporaries inside a co_await (GCC 12)
  auto r = co_await shares_.share(dev, id, args.protocol, args.allowed_hosts, so);
  if (!r.ok()) co_return r.status();
  if (args.protocol == ShareProtocol::kNvmf && ana) {
    Status st = target_.set_ana_state(kNqnPrefix + uuid.ToString(), listener_, 1, *ana);
    if (!st.ok()) co_return st;
  }
  e->published = args;
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::resize(Uuid uuid, uint64_t bytes) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  if (bytes == 0) co_return Status(Errc::kInval, "size: required (bytes)");
  TERN_CO_RETURN_IF_ERROR(co_await e->nx->resize(bytes));
  e->args.size = bytes;  // a create repeated with the new size is this nexus
  // (A published namespace tells its hosts by itself: the target hears the nexus's kResized event.)
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::unpublish(Uuid uuid) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(e->nx->name()));
  e->published.reset();
  co_return co_await describe(*e);
}

Task<Result<NexusDesc>> NexusManager::set_ana_state(Uuid uuid, std::string state) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  if (!e->published || e->published->protocol != ShareProtocol::kNvmf) {
    co_return Status::Errorf(Errc::kInval, "nexus {} is not published over NVMe/TCP", uuid.ToString());
  }
  auto s = nvmf::parse_ana_state(state);
  if (!s.ok()) co_return s.status().WithContext("ana_state");
  TERN_CO_RETURN_IF_ERROR(target_.set_ana_state(kNqnPrefix + uuid.ToString(), listener_, 1, *s));
  e->published->ana_state = state;
  co_return co_await describe(*e);
}

Task<Result<nexus::SnapshotResult>> NexusManager::snapshot(Uuid uuid, nexus::SnapshotArgs args) {
  auto g = co_await mu_.lock();
  TERN_CO_ASSIGN_OR_RETURN(Entry * e, find(uuid));
  co_return co_await e->nx->snapshot(std::move(args));
}

Task<void> NexusManager::shutdown_all() {
  auto g = co_await mu_.lock();
  std::vector<Uuid> ids;
  for (auto& [id, e] : nexuses_) ids.push_back(id);
  for (const Uuid& id : ids) {
    Entry& e = nexuses_[id];
    Status st = co_await shares_.unshare(e.nx->name());
    if (!st.ok()) TLOG_WARN("engine", "nexus {}: unpublishing at shutdown: {}", id.ToString(), st);
    st = co_await e.nx->shutdown_nexus();
    if (!st.ok()) TLOG_WARN("engine", "nexus {}: shutting down: {}", id.ToString(), st);
    st = co_await destroy_locked(id);
    if (!st.ok()) TLOG_WARN("engine", "nexus {}: destroying at shutdown: {}", id.ToString(), st);
  }
}

}  // namespace tern::engine
