#include "engine/api/convert.h"

#include <algorithm>
#include <cmath>

#include "metrics/exposition.h"
#include "nvmf/spec.h"

namespace tern::engine::api {

namespace {

Result<std::optional<Uuid>> optional_uuid(const char* field, const std::string& s) {
  if (s.empty()) return std::optional<Uuid>();
  auto u = Uuid::Parse(s);
  if (!u.ok()) return Status::Errorf(Errc::kInval, "{}: '{}' is not a UUID", field, s);
  return std::optional<Uuid>(*u);
}

v1::ShareProtocol to_wire(ShareProtocol p) {
  switch (p) {
    case ShareProtocol::kNvmf:
      return v1::SHARE_PROTOCOL_NVMF;
    case ShareProtocol::kNbd:
      return v1::SHARE_PROTOCOL_NBD;
    default:
      return v1::SHARE_PROTOCOL_NONE;
  }
}

void to_message(const ShareInfo& s, v1::Share* out) {
  out->set_protocol(to_wire(s.protocol));
  out->set_uri(s.uri);
  for (auto& h : s.hosts) out->add_allowed_hosts(h);
}

void to_message(const LatencyHistogram& h, v1::LatencySummary* out) {
  out->set_count(h.count());
  out->set_sum_ns(h.sum());
  out->set_min_ns(h.min());
  out->set_max_ns(h.max());
  out->set_p50_ns(h.percentile(0.5));
  out->set_p90_ns(h.percentile(0.9));
  out->set_p99_ns(h.percentile(0.99));
  out->set_p999_ns(h.percentile(0.999));
  // The Prometheus page's buckets, in nanoseconds (+Inf as 0).
  for (const auto& b : metrics::latency_buckets(h)) {
    auto* out_b = out->add_buckets();
    out_b->set_le_ns(std::isinf(b.le) ? 0 : uint64_t(std::llround(b.le * 1e9)));
    out_b->set_count(b.count);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Requests

ShareProtocol to_domain(v1::ShareProtocol p) {
  switch (p) {
    case v1::SHARE_PROTOCOL_NONE:
      return ShareProtocol::kNone;
    case v1::SHARE_PROTOCOL_NVMF:
      return ShareProtocol::kNvmf;
    case v1::SHARE_PROTOCOL_NBD:
      return ShareProtocol::kNbd;
    default:
      return ShareProtocol::kUnknown;
  }
}

std::vector<std::string> to_domain(const google::protobuf::RepeatedPtrField<std::string>& strings) {
  return std::vector<std::string>(strings.begin(), strings.end());
}

Result<CreatePoolArgs> to_domain(const v1::CreatePoolRequest& r) {
  CreatePoolArgs a;
  a.name = r.name();
  a.disk = r.disk();
  a.cluster_size = r.cluster_size();
  TERN_ASSIGN_OR_RETURN(a.uuid, optional_uuid("uuid", r.uuid()));
  return a;
}

CreatePoolArgs to_domain(const v1::ImportPoolRequest& r) {
  CreatePoolArgs a;
  a.name = r.name();
  a.disk = r.disk();
  return a;
}

Result<ReplicaRef> to_domain(const v1::ReplicaRef& r) {
  ReplicaRef ref;
  ref.name = r.name();
  ref.pool = r.pool();
  TERN_ASSIGN_OR_RETURN(ref.uuid, optional_uuid("uuid", r.uuid()));
  return ref;
}

Result<CreateReplicaArgs> to_domain(const v1::CreateReplicaRequest& r) {
  CreateReplicaArgs a;
  a.pool = r.pool();
  a.name = r.name();
  a.size = r.size();
  a.thin = r.thin();
  a.share = to_domain(r.share());
  a.allowed_hosts = to_domain(r.allowed_hosts());
  TERN_ASSIGN_OR_RETURN(a.uuid, optional_uuid("uuid", r.uuid()));
  return a;
}

Result<CreateSnapshotArgs> to_domain(const v1::CreateSnapshotRequest& r) {
  CreateSnapshotArgs a;
  a.name = r.name();
  TERN_ASSIGN_OR_RETURN(a.uuid, optional_uuid("uuid", r.uuid()));
  TERN_ASSIGN_OR_RETURN(a.source, to_domain(r.replica()));
  return a;
}

Result<CreateCloneArgs> to_domain(const v1::CreateCloneRequest& r) {
  CreateCloneArgs a;
  a.name = r.name();
  a.share = to_domain(r.share());
  a.allowed_hosts = to_domain(r.allowed_hosts());
  TERN_ASSIGN_OR_RETURN(a.uuid, optional_uuid("uuid", r.uuid()));
  TERN_ASSIGN_OR_RETURN(a.snapshot, to_domain(r.snapshot()));
  return a;
}

ObjectFilter to_domain(const v1::ListReplicasRequest& r) {
  ObjectFilter f;
  f.pool = r.pool();
  f.name = r.name();
  f.uuid = r.uuid();
  f.snapshots = r.include_snapshots();
  return f;
}

ObjectFilter to_domain(const v1::ListSnapshotsRequest& r, ObjectKind kind) {
  ObjectFilter f;
  f.pool = r.pool();
  f.uuid = r.uuid();
  f.source_uuid = r.source_uuid();
  f.replicas = false;
  f.snapshots = kind == ObjectKind::kSnapshot;
  f.clones = kind == ObjectKind::kClone;
  return f;
}

DelayConfig to_domain(const v1::SetDelayRequest& r) {
  return DelayConfig{r.read_us() * 1000, r.write_us() * 1000, r.other_us() * 1000, r.jitter_us() * 1000};
}

PatternArgs to_domain(const v1::PatternRequest& r) {
  return PatternArgs{.device = r.device(), .offset = r.offset(), .length = r.length(), .generation = r.generation()};
}

// ---------------------------------------------------------------------------------------------------
// Replies

void to_message(const PoolInfo& p, v1::Pool* out) {
  out->set_name(p.name);
  out->set_uuid(p.uuid.ToString());
  out->set_disk(p.disk);
  out->set_state(p.online ? v1::POOL_STATE_ONLINE : v1::POOL_STATE_DEGRADED);
  out->set_state_reason(p.state_reason);
  out->set_capacity(p.capacity);
  out->set_used(p.used);
  out->set_committed(p.committed);
  out->set_cluster_size(p.cluster_size);
  out->set_replica_count(p.objects);
  out->set_repair_note(p.repair_note);
}

void to_message(const ReplicaInfo& r, v1::Replica* out) {
  out->set_name(r.name);
  out->set_uuid(r.uuid.ToString());
  out->set_pool(r.pool);
  out->set_pool_uuid(r.pool_uuid.ToString());
  out->set_size(r.size);
  out->set_thin(r.thin);
  switch (r.kind) {
    case ObjectKind::kReplica:
      out->set_kind(v1::REPLICA_KIND_REPLICA);
      break;
    case ObjectKind::kSnapshot:
      out->set_kind(v1::REPLICA_KIND_SNAPSHOT);
      break;
    case ObjectKind::kClone:
      out->set_kind(v1::REPLICA_KIND_CLONE);
      break;
  }
  if (!r.source.is_nil()) out->set_parent_uuid(r.source.ToString());
  if (r.share) to_message(*r.share, out->mutable_share());
  out->set_allocated(r.allocated);
  out->set_referenced(r.referenced);
  out->set_exclusive(r.exclusive);
  out->set_discarded(r.discarded);
  out->set_device(r.device);
}

void to_message(const DeviceInfo& d, v1::Bdev* out) {
  out->set_name(d.name);
  out->set_uuid(d.uuid.ToString());
  out->set_uri(d.uri);
  out->set_product(d.product);
  out->set_block_size(d.block_size);
  out->set_num_blocks(d.num_blocks);
  out->set_size(d.size);
  out->set_claimed_by(d.claimed_by);
  out->set_open_count(d.open_count);
  if (d.share) to_message(*d.share, out->mutable_share());
  out->set_pool(d.pool);
}

void to_message(const DeviceStats& d, v1::IoStats* out) {
  const BdevStats& st = d.stats;
  out->set_name(d.name);
  out->set_uuid(d.uuid.ToString());
  out->set_num_read_ops(st.of(IoType::kRead).ops);
  out->set_bytes_read(st.of(IoType::kRead).bytes);
  out->set_num_write_ops(st.of(IoType::kWrite).ops);
  out->set_bytes_written(st.of(IoType::kWrite).bytes);
  out->set_num_unmap_ops(st.of(IoType::kUnmap).ops);
  out->set_bytes_unmapped(st.of(IoType::kUnmap).bytes);
  out->set_num_write_zeroes_ops(st.of(IoType::kWriteZeroes).ops);
  out->set_num_flush_ops(st.of(IoType::kFlush).ops);
  out->set_read_errors(st.of(IoType::kRead).errors);
  out->set_write_errors(st.of(IoType::kWrite).errors);
  out->set_other_errors(st.of(IoType::kFlush).errors + st.of(IoType::kUnmap).errors +
                        st.of(IoType::kWriteZeroes).errors + st.of(IoType::kReset).errors);
  out->set_inflight(st.inflight);
  to_message(st.read_latency, out->mutable_read_latency());
  to_message(st.write_latency, out->mutable_write_latency());
  to_message(st.other_latency, out->mutable_other_latency());
}

void to_message(const ReactorLoad& l, v1::ReactorStats* out) {
  out->set_id(l.id);
  out->set_core(l.core);
  out->set_busy_ns(l.busy_ns);
  out->set_idle_ns(l.idle_ns);
  out->set_polls(l.polls);
}

void to_message(const nvmf::SubsystemInfo& s, v1::Subsystem* out) {
  out->set_nqn(s.nqn);
  out->set_serial(s.serial);
  out->set_model(s.model);
  out->set_allow_any_host(s.allow_any_host);
  out->set_discovery(s.nqn == nvme::kDiscoveryNqn);
  for (auto& h : s.hosts) out->add_allowed_hosts(h);
  for (auto& l : s.listeners) out->add_listeners(l.to_string());
  for (auto& n : s.namespaces) {
    auto* ns = out->add_namespaces();
    ns->set_nsid(n.nsid);
    ns->set_device(n.bdev);
    ns->set_uuid(n.uuid);
    ns->set_ana_group(n.anagrpid);
    ns->set_size(n.size_bytes);
    ns->set_block_size(n.block_size);
  }
  for (auto& c : s.controllers) {
    auto* cm = out->add_controllers();
    cm->set_cntlid(c.cntlid);
    cm->set_host_nqn(c.hostnqn);
    cm->set_host_id(c.hostid);
    cm->set_io_queues(c.io_queues);
    cm->set_keep_alive_ms(c.kato_ms);
    cm->set_listener(c.listener.to_string());
    cm->set_io_commands(c.io_commands);
    cm->set_read_bytes(c.read_bytes);
    cm->set_write_bytes(c.write_bytes);
  }
  for (auto& [l, g, st] : s.ana) {
    auto* a = out->add_ana();
    a->set_listener(l.to_string());
    a->set_group(g);
    std::string name = nvmf::ana_state_name(st);
    std::replace(name.begin(), name.end(), '_', '-');  // the API spells states as SetAnaState takes them
    a->set_state(name);
  }
}

void to_message(const NodeInfo& n, v1::NodeInfo* out) {
  out->set_node_name(n.node_name);
  out->set_version(n.version);
  out->set_build(n.build);
  out->set_api_version("v1");
  out->set_instance_uuid(n.instance.ToString());
  for (uint32_t c : n.cores) out->add_cores(c);
  out->set_uptime_ms(uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(n.uptime).count()));
  out->set_grpc_endpoint(n.grpc_endpoint);
  out->set_nvmf_endpoint(n.nvmf_endpoint);
  out->set_nbd_endpoint(n.nbd_endpoint);
  out->set_startup_ms(n.startup_ms);
}

void to_message(const PatternCheck& c, v1::VerifyPatternReply* out) {
  out->set_ok(c.ok);
  out->set_mismatch(c.mismatch);
  out->set_bytes_checked(c.bytes_checked);
}

// --- nexuses ---

Result<Uuid> required_uuid(const char* field, const std::string& s) {
  if (s.empty()) return Status::Errorf(Errc::kInval, "{}: required", field);
  auto u = Uuid::Parse(s);
  if (!u.ok()) return Status::Errorf(Errc::kInval, "{}: '{}' is not a UUID", field, s);
  return *u;
}

Result<CreateNexusArgs> to_domain(const v1::CreateNexusRequest& r) {
  CreateNexusArgs a;
  TERN_ASSIGN_OR_RETURN(a.uuid, required_uuid("uuid", r.uuid()));
  if (r.size() == 0) return Status(Errc::kInval, "size: required (bytes)");
  a.size = r.size();
  a.children.assign(r.children().begin(), r.children().end());
  if (a.children.empty()) return Status(Errc::kInval, "children: at least one child URI is required");
  a.persistence_key = r.persistence_key();
  a.resv_key = r.resv_key();
  switch (r.resv_type()) {
    case v1::RESERVATION_TYPE_DEFAULT:
    case v1::RESERVATION_TYPE_WRITE_EXCLUSIVE: a.resv_type = nvme::ResvType::kWriteExclusive; break;
    case v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS: a.resv_type = nvme::ResvType::kExclusiveAccess; break;
    case v1::RESERVATION_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY:
      a.resv_type = nvme::ResvType::kWriteExclusiveRegsOnly;
      break;
    case v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY:
      a.resv_type = nvme::ResvType::kExclusiveAccessRegsOnly;
      break;
    default: return Status::Errorf(Errc::kInval, "resv_type: unknown reservation type {}", int(r.resv_type()));
  }
  switch (r.preempt_policy()) {
    case v1::PREEMPT_POLICY_HOLDER: a.preempt = nexus::NexusOptions::Preempt::kHolder; break;
    case v1::PREEMPT_POLICY_KEY: a.preempt = nexus::NexusOptions::Preempt::kKey; break;
    case v1::PREEMPT_POLICY_NONE: a.preempt = nexus::NexusOptions::Preempt::kNone; break;
    default: return Status::Errorf(Errc::kInval, "preempt_policy: unknown policy {}", int(r.preempt_policy()));
  }
  a.preempt_key = r.preempt_key();
  if (a.preempt == nexus::NexusOptions::Preempt::kKey && a.preempt_key == 0) {
    return Status(Errc::kInval, "preempt_key: required with the preempt policy 'key'");
  }
  if (a.resv_key == 0 && (r.resv_type() != v1::RESERVATION_TYPE_DEFAULT || a.preempt_key != 0)) {
    return Status(Errc::kInval, "resv_key: required when a reservation type or preempt key is given");
  }
  if (r.cntlid_min() > 0xFFEF || r.cntlid_max() > 0xFFEF ||
      (r.cntlid_min() && r.cntlid_max() && r.cntlid_min() > r.cntlid_max())) {
    return Status::Errorf(Errc::kInval, "cntlid range {}..{} is invalid (1 <= min <= max <= 65519)", r.cntlid_min(),
                          r.cntlid_max());
  }
  a.cntlid_min = uint16_t(r.cntlid_min());
  a.cntlid_max = uint16_t(r.cntlid_max());
  a.auto_rebuild = !r.no_auto_rebuild();
  if (r.has_rebuild()) a.rebuild = to_domain(r.rebuild());
  if (r.al_extents()) a.al_extents = r.al_extents();
  if (r.region_bytes()) a.region_bytes = r.region_bytes();
  for (const std::string& s : r.adopt_labels_of()) {
    TERN_ASSIGN_OR_RETURN(Uuid u, required_uuid("adopt_labels_of", s));
    a.adopt_labels_of.push_back(u);
  }
  return a;
}

nexus::RebuildOptions to_domain(const v1::RebuildSettings& r) {
  nexus::RebuildOptions o;
  if (r.segment_bytes()) o.segment_bytes = r.segment_bytes();
  if (r.concurrency()) o.concurrency = r.concurrency();
  o.rate_bytes_per_s = r.rate_bytes_per_s();
  if (r.checkpoint_bytes()) o.checkpoint_bytes = r.checkpoint_bytes();
  o.verify = r.verify();
  return o;
}

void to_message(const Uuid& nexus, const nexus::RebuildStats& s, v1::Rebuild* out) {
  out->set_nexus_uuid(nexus.ToString());
  out->set_child_uuid(s.child.ToString());
  out->set_uri(s.uri);
  out->set_source(s.source);
  out->set_kind(nexus::rebuild_kind_name(s.kind));
  switch (s.state) {
    case nexus::RebuildState::kRunning: out->set_state(v1::REBUILD_STATE_RUNNING); break;
    case nexus::RebuildState::kPaused: out->set_state(v1::REBUILD_STATE_PAUSED); break;
    case nexus::RebuildState::kStopped: out->set_state(v1::REBUILD_STATE_STOPPED); break;
    case nexus::RebuildState::kCompleted: out->set_state(v1::REBUILD_STATE_COMPLETED); break;
    case nexus::RebuildState::kFailed: out->set_state(v1::REBUILD_STATE_FAILED); break;
  }
  out->set_reason(s.reason);
  out->set_error(s.error);
  out->set_total_bytes(s.total_bytes);
  out->set_done_bytes(s.done_bytes);
  out->set_copied_bytes(s.copied_bytes);
  out->set_skipped_bytes(s.skipped_bytes);
  out->set_resumed_bytes(s.resumed_bytes);
  out->set_dirty_bytes(s.dirty_bytes);
  out->set_verified_bytes(s.verified_bytes);
  out->set_verify(s.verify);
  out->set_source_errors(s.source_errors);
  out->set_rate_limit(s.rate_limit);
  out->set_bytes_per_s(s.bytes_per_s);
  out->set_eta_ms(s.eta_ns / 1'000'000);
  out->set_started_unix_ns(s.started_wall_ns);
  out->set_ended_unix_ns(s.ended_wall_ns);
  out->set_elapsed_ms(s.elapsed_ns / 1'000'000);
  out->set_segment_bytes(s.segment_bytes);
  out->set_concurrency(s.concurrency);
}

Result<PublishNexusArgs> to_domain(const v1::PublishNexusRequest& r) {
  PublishNexusArgs a;
  a.protocol = to_domain(r.protocol());
  if (a.protocol == ShareProtocol::kNone) a.protocol = ShareProtocol::kNvmf;
  a.allowed_hosts.assign(r.allowed_hosts().begin(), r.allowed_hosts().end());
  if (r.cntlid_min() > 0xFFEF || r.cntlid_max() > 0xFFEF) {
    return Status::Errorf(Errc::kInval, "cntlid range {}..{} is invalid (1 <= min <= max <= 65519)", r.cntlid_min(),
                          r.cntlid_max());
  }
  a.cntlid_min = uint16_t(r.cntlid_min());  // 0: the create's range, else the whole range
  a.cntlid_max = uint16_t(r.cntlid_max());
  a.ana_state = r.ana_state();
  return a;
}

nexus::FaultReason to_domain(v1::ChildReason r) {
  switch (r) {
    case v1::CHILD_REASON_CANNOT_OPEN: return nexus::FaultReason::kCannotOpen;
    case v1::CHILD_REASON_IO_ERROR: return nexus::FaultReason::kIoError;
    case v1::CHILD_REASON_TIMED_OUT: return nexus::FaultReason::kTimedOut;
    case v1::CHILD_REASON_NO_SPACE: return nexus::FaultReason::kNoSpace;
    case v1::CHILD_REASON_REBUILD_FAILED: return nexus::FaultReason::kRebuildFailed;
    default: return nexus::FaultReason::kOffline;
  }
}

namespace {

v1::NexusState to_wire(nexus::NexusStatus s) {
  switch (s) {
    case nexus::NexusStatus::kOnline: return v1::NEXUS_STATE_ONLINE;
    case nexus::NexusStatus::kDegraded: return v1::NEXUS_STATE_DEGRADED;
    case nexus::NexusStatus::kFaulted: return v1::NEXUS_STATE_FAULTED;
    case nexus::NexusStatus::kShuttingDown: return v1::NEXUS_STATE_SHUTTING_DOWN;
    case nexus::NexusStatus::kShutdown: return v1::NEXUS_STATE_SHUTDOWN;
  }
  return v1::NEXUS_STATE_UNKNOWN;
}

v1::ChildState to_wire(nexus::ChildState s) {
  switch (s) {
    case nexus::ChildState::kOnline: return v1::CHILD_STATE_ONLINE;
    case nexus::ChildState::kFaulted: return v1::CHILD_STATE_FAULTED;
    case nexus::ChildState::kClosed: return v1::CHILD_STATE_CLOSED;
  }
  return v1::CHILD_STATE_UNKNOWN;
}

v1::ChildReason to_wire(nexus::FaultReason r) {
  switch (r) {
    case nexus::FaultReason::kNone: return v1::CHILD_REASON_NONE;
    case nexus::FaultReason::kCannotOpen: return v1::CHILD_REASON_CANNOT_OPEN;
    case nexus::FaultReason::kIoError: return v1::CHILD_REASON_IO_ERROR;
    case nexus::FaultReason::kTimedOut: return v1::CHILD_REASON_TIMED_OUT;
    case nexus::FaultReason::kNoSpace: return v1::CHILD_REASON_NO_SPACE;
    case nexus::FaultReason::kRebuildFailed: return v1::CHILD_REASON_REBUILD_FAILED;
    case nexus::FaultReason::kOffline: return v1::CHILD_REASON_OFFLINE;
  }
  return v1::CHILD_REASON_NONE;
}

}  // namespace

void to_message(const NexusDesc& n, v1::Nexus* out) {
  out->set_uuid(n.info.uuid.ToString());
  out->set_size(n.info.size_bytes);
  out->set_block_size(n.info.block_size);
  out->set_state(to_wire(n.info.status));
  out->set_persistence_key(n.info.persistence_key);
  out->set_generation(n.info.generation);
  v1::ActivityLog* al = out->mutable_activity_log();
  al->set_hot_extents(n.info.log.hot_extents);
  al->set_capacity(n.info.log.capacity);
  al->set_transactions(n.info.log.transactions);
  al->set_evictions(n.info.log.evictions);
  al->set_reconciled_bytes(n.info.log.reconciled_bytes);
  for (const nexus::ChildInfo& c : n.info.children) {
    v1::Child* m = out->add_children();
    m->set_uri(c.uri);
    m->set_uuid(c.uuid.ToString());
    m->set_device(c.device);
    m->set_state(to_wire(c.state));
    m->set_reason(to_wire(c.reason));
    m->set_synced(c.sync == nexus::SyncState::kSynced);
    m->set_local(c.local);
    m->set_generation(c.generation);
    if (c.rebuild) to_message(n.info.uuid, *c.rebuild, m->mutable_rebuild());
    m->set_tracked(c.tracked);
    m->set_dirty_bytes(c.dirty_bytes);
    m->set_tracked_since_generation(c.tracked_since_gen);
    v1::ChildIoStats* io = m->mutable_io();
    io->set_reads(c.io.reads);
    io->set_writes(c.io.writes);
    io->set_other(c.io.other);
    io->set_errors(c.io.errors);
    io->set_read_bytes(c.io.read_bytes);
    io->set_write_bytes(c.io.write_bytes);
  }
  if (n.share) to_message(*n.share, out->mutable_share());
  out->set_cntlid_min(n.cntlid_min);
  out->set_cntlid_max(n.cntlid_max);
  out->set_ana_state(n.share ? n.ana_state : "");
  out->set_required_child_size(n.required_child_size);
  out->set_resv_key(n.resv_key);
  switch (n.resv_type) {
    case nvme::ResvType::kExclusiveAccess: out->set_resv_type(v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS); break;
    case nvme::ResvType::kWriteExclusiveRegsOnly:
      out->set_resv_type(v1::RESERVATION_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
      break;
    case nvme::ResvType::kExclusiveAccessRegsOnly:
      out->set_resv_type(v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY);
      break;
    default: out->set_resv_type(v1::RESERVATION_TYPE_WRITE_EXCLUSIVE); break;
  }
  switch (n.preempt) {
    case nexus::NexusOptions::Preempt::kKey: out->set_preempt_policy(v1::PREEMPT_POLICY_KEY); break;
    case nexus::NexusOptions::Preempt::kNone: out->set_preempt_policy(v1::PREEMPT_POLICY_NONE); break;
    default: out->set_preempt_policy(v1::PREEMPT_POLICY_HOLDER); break;
  }
}

}  // namespace tern::engine::api
