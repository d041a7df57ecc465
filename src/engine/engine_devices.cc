// Engine operations on devices, the NVMe/TCP target, statistics, the node and the test hooks.
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/log.h"
#include "engine/engine.h"
#include "metrics/exposition.h"
#include "common/verify_pattern.h"
#include "pool/device_io.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.0.0"
#endif
#ifndef TERN_GIT_REV
#define TERN_GIT_REV "unknown"
#endif
#ifndef TERN_BUILD_TYPE
#define TERN_BUILD_TYPE "unknown"
#endif

namespace tern::engine {

// ---------------------------------------------------------------------------------------------------
// Devices

std::vector<v1::Bdev> Engine::list_bdevs(const std::string& name_filter) const {
  std::vector<v1::Bdev> out;
  // Which pool each replica device belongs to, and which devices hold pools.
  std::map<std::string, std::string> pool_of;
  for (auto& [pname, e] : pools_) {
    for (const auto& m : e->pool->ListReplicas()) pool_of[m.uuid.ToString()] = pname;
  }
  for (Bdev* b : registry_.list()) {
    const BdevProps& p = b->props();
    if (!name_filter.empty() && p.name != name_filter && p.uuid.ToString() != name_filter) continue;
    v1::Bdev m;
    m.set_name(p.name);
    m.set_uuid(p.uuid.ToString());
    m.set_uri(registry_.created_from(*b));
    m.set_product(p.product);
    m.set_block_size(p.block_size);
    m.set_num_blocks(b->num_blocks());
    m.set_size(b->num_blocks() * p.block_size);
    m.set_claimed_by(b->claimed_by());
    m.set_open_count(uint32_t(b->open_count()));
    if (const ShareInfo* s = shares_ ? shares_->find(p.name) : nullptr) {
      m.mutable_share()->set_protocol(s->protocol);
      m.mutable_share()->set_uri(s->uri);
      for (auto& h : s->hosts) m.mutable_share()->add_allowed_hosts(h);
    }
    if (auto it = pool_of.find(p.name); it != pool_of.end()) m.set_pool(it->second);
    out.push_back(std::move(m));
  }
  return out;
}

Task<Result<v1::Bdev>> Engine::create_bdev(std::string uri) {
  if (uri.empty()) co_return Status(Errc::kInval, "uri: required (e.g. malloc:///m0?size_mb=64)");
  for (Bdev* b : registry_.list()) {
    if (registry_.created_from(*b) == uri) co_return list_bdevs(b->name()).at(0);
  }
  auto b = co_await registry_.create(uri);
  if (!b.ok()) co_return b.status();
  TLOG_INFO("engine", "device '{}' created from {}", (*b)->name(), uri);
  co_return list_bdevs((*b)->name()).at(0);
}

Task<Status> Engine::destroy_bdev(std::string name, bool force) {
  if (name.empty()) co_return Status(Errc::kInval, "name: required");
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  for (auto& [pname, e] : pools_) {
    if (e->bdev == name) {
      co_return Status::Errorf(Errc::kBusy, "pool '{}' lives on '{}'; export or destroy the pool instead", pname, name);
    }
    for (const auto& m : e->pool->ListReplicas()) {
      if (m.uuid.ToString() == name) {
        co_return Status::Errorf(Errc::kInval, "'{}' is {} '{}' of pool '{}'; destroy it with ternctl {} destroy", name,
                                 m.snapshot ? "snapshot" : "replica", m.name, pname, m.snapshot ? "snapshot" : "replica");
      }
    }
  }
  TERN_CO_RETURN_IF_ERROR(co_await shares_->unshare(name));
  Status s = co_await registry_.destroy(name, force);
  if (s.ok()) TLOG_INFO("engine", "device '{}' destroyed", name);
  co_return s;
}

Task<Result<v1::Bdev>> Engine::share_bdev(std::string name, v1::ShareProtocol protocol, std::vector<std::string> hosts) {
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  for (auto& [pname, e] : pools_) {
    for (const auto& m : e->pool->ListReplicas()) {
      if (m.uuid.ToString() != name) continue;
      // A pool object: shared the replica way, so the share is remembered in the pool.
      v1::ReplicaRef ref;
      ref.set_uuid(name);
      auto r = co_await share_replica(ref, protocol, hosts);
      if (!r.ok()) co_return r.status();
      co_return list_bdevs(name).at(0);
    }
  }
  auto r = co_await shares_->share(name, name, protocol, hosts, false);
  if (!r.ok()) co_return r.status();
  co_return list_bdevs(name).at(0);
}

Task<Result<v1::Bdev>> Engine::unshare_bdev(std::string name) {
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  for (auto& [pname, e] : pools_) {
    for (const auto& m : e->pool->ListReplicas()) {
      if (m.uuid.ToString() != name) continue;
      v1::ReplicaRef ref;
      ref.set_uuid(name);
      auto r = co_await unshare_replica(ref);
      if (!r.ok()) co_return r.status();
      co_return list_bdevs(name).at(0);
    }
  }
  TERN_CO_RETURN_IF_ERROR(co_await shares_->unshare(name));
  co_return list_bdevs(name).at(0);
}

// ---------------------------------------------------------------------------------------------------
// NVMe/TCP

std::vector<v1::Subsystem> Engine::list_subsystems(const std::string& nqn_filter) const {
  std::vector<v1::Subsystem> out;
  for (const auto& s : target_->list_subsystems()) {
    if (!nqn_filter.empty() && s.nqn != nqn_filter) continue;
    v1::Subsystem m;
    m.set_nqn(s.nqn);
    m.set_serial(s.serial);
    m.set_model(s.model);
    m.set_allow_any_host(s.allow_any_host);
    m.set_discovery(s.nqn == nvme::kDiscoveryNqn);
    for (auto& h : s.hosts) m.add_allowed_hosts(h);
    for (auto& l : s.listeners) m.add_listeners(l.to_string());
    for (auto& n : s.namespaces) {
      auto* ns = m.add_namespaces();
      ns->set_nsid(n.nsid);
      ns->set_device(n.bdev);
      ns->set_uuid(n.uuid);
      ns->set_ana_group(n.anagrpid);
      ns->set_size(n.size_bytes);
      ns->set_block_size(n.block_size);
    }
    for (auto& c : s.controllers) {
      auto* cm = m.add_controllers();
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
      auto* a = m.add_ana();
      a->set_listener(l.to_string());
      a->set_group(g);
      std::string name = nvmf::ana_state_name(st);
      std::replace(name.begin(), name.end(), '_', '-');  // the API spells states as SetAnaState takes them
      a->set_state(name);
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<std::string> Engine::list_listeners() const {
  std::vector<std::string> out;
  for (auto& l : target_->listeners()) out.push_back(l.to_string());
  return out;
}

Status Engine::set_ana_state(const v1::SetAnaStateRequest& req) {
  if (req.nqn().empty()) return Status(Errc::kInval, "nqn: required");
  nvmf::ListenAddr l{opts_.nvmf_address, opts_.nvmf_port};
  if (!req.listener().empty()) {
    size_t colon = req.listener().rfind(':');
    if (colon == std::string::npos) return Status::Errorf(Errc::kInval, "listener: '{}' is not host:port", req.listener());
    l.host = req.listener().substr(0, colon);
    if (l.host.size() > 1 && l.host.front() == '[') l.host = l.host.substr(1, l.host.size() - 2);
    try {
      int port = std::stoi(req.listener().substr(colon + 1));
      if (port <= 0 || port > 65535) throw std::out_of_range("port");
      l.port = uint16_t(port);
    } catch (const std::exception&) {
      return Status::Errorf(Errc::kInval, "listener: '{}' has no valid port", req.listener());
    }
  }
  auto st = nvmf::parse_ana_state(req.state());
  if (!st.ok()) return Status::Errorf(Errc::kInval, "state: {}", st.status().message());
  return target_->set_ana_state(req.nqn(), l, req.group() ? req.group() : 1, *st);
}

// ---------------------------------------------------------------------------------------------------
// Statistics

namespace {

void summarize(const LatencyHistogram& h, v1::LatencySummary* out) {
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

Task<Result<std::vector<v1::IoStats>>> Engine::io_stats(std::string name_filter, bool replicas_only) {
  std::vector<v1::IoStats> out;
  std::set<std::string> objects;
  for (auto& [pname, e] : pools_) {
    for (const auto& m : e->pool->ListReplicas()) objects.insert(m.uuid.ToString());
  }
  bool found = false;
  // Names first (devices can go while we await their stats; look each one up again).
  std::vector<std::string> names;
  for (Bdev* b : registry_.list()) {
    if (!name_filter.empty() && b->name() != name_filter && b->props().uuid.ToString() != name_filter) continue;
    found = true;
    if (replicas_only && !objects.count(b->name())) continue;
    names.push_back(b->name());
  }
  if (!name_filter.empty() && !found) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name_filter);
  for (auto& n : names) {
    Bdev* b = registry_.find(n);
    if (!b) continue;
    BdevStats st = co_await b->stats(reactors_);
    v1::IoStats m;
    m.set_name(n);
    m.set_uuid(b->props().uuid.ToString());
    m.set_num_read_ops(st.of(IoType::kRead).ops);
    m.set_bytes_read(st.of(IoType::kRead).bytes);
    m.set_num_write_ops(st.of(IoType::kWrite).ops);
    m.set_bytes_written(st.of(IoType::kWrite).bytes);
    m.set_num_unmap_ops(st.of(IoType::kUnmap).ops);
    m.set_bytes_unmapped(st.of(IoType::kUnmap).bytes);
    m.set_num_write_zeroes_ops(st.of(IoType::kWriteZeroes).ops);
    m.set_num_flush_ops(st.of(IoType::kFlush).ops);
    m.set_read_errors(st.of(IoType::kRead).errors);
    m.set_write_errors(st.of(IoType::kWrite).errors);
    m.set_other_errors(st.of(IoType::kFlush).errors + st.of(IoType::kUnmap).errors +
                       st.of(IoType::kWriteZeroes).errors + st.of(IoType::kReset).errors);
    m.set_inflight(st.inflight);
    summarize(st.read_latency, m.mutable_read_latency());
    summarize(st.write_latency, m.mutable_write_latency());
    summarize(st.other_latency, m.mutable_other_latency());
    out.push_back(std::move(m));
  }
  co_return out;
}

Task<Status> Engine::reset_io_stats(std::string name_filter) {
  std::vector<std::string> names;
  for (Bdev* b : registry_.list()) {
    if (name_filter.empty() || b->name() == name_filter || b->props().uuid.ToString() == name_filter) {
      names.push_back(b->name());
    }
  }
  if (!name_filter.empty() && names.empty()) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name_filter);
  for (auto& n : names) {
    if (Bdev* b = registry_.find(n)) co_await b->reset_stats(reactors_);
  }
  co_return Status::Ok();
}

Task<std::vector<v1::ReactorStats>> Engine::reactor_stats() {
  std::vector<v1::ReactorStats> out;
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    ReactorSet* set = &reactors_;
    ReactorCounters c = co_await reactors_.submit_to(r, [set, r] { return set->reactor(r).counters(); });
    uint64_t now = now_ns();
    v1::ReactorStats m;
    m.set_id(r);
    m.set_core(uint32_t(reactors_.reactor(r).cpu()));
    uint64_t total = now > c.started_ns ? now - c.started_ns : 0;
    m.set_idle_ns(std::min(c.idle_ns, total));
    m.set_busy_ns(total - std::min(c.idle_ns, total));
    m.set_polls(c.loops);
    out.push_back(std::move(m));
  }
  co_return out;
}

// ---------------------------------------------------------------------------------------------------
// Node

v1::NodeInfo Engine::node_info() const {
  v1::NodeInfo n;
  n.set_node_name(opts_.node_name);
  n.set_version(TERN_VERSION);
  n.set_build(fmt::format("{} {} gcc {}", TERN_GIT_REV, TERN_BUILD_TYPE, __VERSION__));
  n.set_api_version("v1");
  n.set_instance_uuid(instance_.ToString());
  for (unsigned r = 0; r < reactors_.size(); ++r) n.add_cores(uint32_t(reactors_.reactor(r).cpu()));
  n.set_uptime_ms(uint64_t(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count()));
  n.set_grpc_endpoint(opts_.grpc_endpoint);
  n.set_nvmf_endpoint(fmt::format("{}:{}", opts_.advertise_address, opts_.nvmf_port));
  if (opts_.nbd_port) {
    n.set_nbd_endpoint(fmt::format("{}:{}", nbd_client_host(), opts_.nbd_port));
  } else if (!opts_.nbd_socket.empty()) {
    n.set_nbd_endpoint("unix:" + opts_.nbd_socket);
  }
  n.set_startup_ms(startup_ms_);
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Test hooks

Status Engine::set_error_rules(const v1::SetErrorRulesRequest& req) {
  auto* e = dynamic_cast<ErrorBdev*>(registry_.find(req.device()));
  if (!e) return Status::Errorf(Errc::kNoEnt, "device: no error:// device '{}'", req.device());
  std::vector<ErrorRule> rules;
  for (auto& r : req.rules()) {
    auto p = ErrorRule::Parse(r);
    if (!p.ok()) return Status::Errorf(Errc::kInval, "rules: {}", p.status().message());
    rules.push_back(*p);
  }
  e->set_rules(rules);
  TLOG_INFO("engine", "error rules of '{}': {} rule(s)", req.device(), rules.size());
  return Status::Ok();
}

Status Engine::set_delay(const v1::SetDelayRequest& req) {
  auto* d = dynamic_cast<DelayBdev*>(registry_.find(req.device()));
  if (!d) return Status::Errorf(Errc::kNoEnt, "device: no delay:// device '{}'", req.device());
  d->set_config({req.read_us() * 1000, req.write_us() * 1000, req.other_us() * 1000, req.jitter_us() * 1000});
  return Status::Ok();
}

namespace {

constexpr uint64_t kPatternChunk = 1 << 20;
constexpr uint64_t kPatternMax = 1ull << 30;

Status check_pattern_range(const Bdev& b, const v1::PatternRequest& req) {
  uint64_t bs = b.props().block_size;
  uint64_t size = b.num_blocks() * bs;
  if (req.length() == 0 || req.length() > kPatternMax) return Status(Errc::kInval, "length: 1 byte .. 1 GiB");
  if (req.offset() % 512 || req.length() % 512 || req.offset() % bs || req.length() % bs) {
    return Status::Errorf(Errc::kInval, "offset and length: multiples of the block size ({})", bs);
  }
  if (req.offset() + req.length() > size) {
    return Status::Errorf(Errc::kInval, "offset + length: past the end of '{}' ({} bytes)", b.name(), size);
  }
  return Status::Ok();
}

}  // namespace

Task<Status> Engine::write_pattern(v1::PatternRequest req) {
  auto desc = registry_.open(req.device(), /*writable=*/true);
  if (!desc.ok()) co_return Status::Errorf(desc.code(), "device: {}", desc.status().message());
  TERN_CO_RETURN_IF_ERROR(check_pattern_range((*desc)->bdev(), req));
  AlignedBuffer buf(kPatternChunk);
  for (uint64_t off = req.offset(); off < req.offset() + req.length(); off += kPatternChunk) {
    uint64_t len = std::min(kPatternChunk, req.offset() + req.length() - off);
    ioperf::fill_pattern(buf.data(), len, off, req.generation());
    Errc e = co_await pool::device_io(**desc, IoType::kWrite, off, buf.data(), len);
    if (e != Errc::kOk) co_return Status::Errorf(e, "writing at byte {}: {}", off, errc_describe(e));
  }
  Errc e = co_await pool::device_flush(**desc);
  if (e != Errc::kOk) co_return Status::Errorf(e, "flush: {}", errc_describe(e));
  co_return Status::Ok();
}

Task<Result<v1::VerifyPatternReply>> Engine::verify_pattern(v1::PatternRequest req) {
  auto desc = registry_.open(req.device(), /*writable=*/false);
  if (!desc.ok()) co_return Status::Errorf(desc.code(), "device: {}", desc.status().message());
  TERN_CO_RETURN_IF_ERROR(check_pattern_range((*desc)->bdev(), req));
  AlignedBuffer buf(kPatternChunk), scratch(kPatternChunk);
  v1::VerifyPatternReply reply;
  reply.set_ok(true);
  for (uint64_t off = req.offset(); off < req.offset() + req.length(); off += kPatternChunk) {
    uint64_t len = std::min(kPatternChunk, req.offset() + req.length() - off);
    Errc e = co_await pool::device_io(**desc, IoType::kRead, off, buf.data(), len);
    if (e != Errc::kOk) co_return Status::Errorf(e, "reading at byte {}: {}", off, errc_describe(e));
    ioperf::Mismatch mm;
    if (!ioperf::check_pattern(buf.data(), len, off, req.generation(), scratch.data(), &mm)) {
      reply.set_ok(false);
      reply.set_mismatch(mm.describe((*desc)->bdev().props().block_size));
      reply.set_bytes_checked(off - req.offset());
      co_return reply;
    }
  }
  reply.set_bytes_checked(req.length());
  co_return reply;
}

}  // namespace tern::engine
