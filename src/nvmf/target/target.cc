#include "nvmf/target/target.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "nvmf/target/controller.h"
#include "nvmf/target/tcp_qpair.h"

namespace tern::nvmf {

using namespace tern::nvme;

const char* ana_state_name(AnaState s) {
  switch (s) {
    case AnaState::kOptimized: return "optimized";
    case AnaState::kNonOptimized: return "non_optimized";
    case AnaState::kInaccessible: return "inaccessible";
    case AnaState::kPersistentLoss: return "persistent_loss";
    case AnaState::kChange: return "change";
  }
  return "?";
}

Result<AnaState> parse_ana_state(std::string_view s) {
  for (AnaState a : {AnaState::kOptimized, AnaState::kNonOptimized, AnaState::kInaccessible, AnaState::kPersistentLoss,
                     AnaState::kChange}) {
    if (s == ana_state_name(a)) return a;
  }
  if (s == "non-optimized") return AnaState::kNonOptimized;
  if (s == "persistent-loss") return AnaState::kPersistentLoss;
  return Status::Errorf(Errc::kInval,
                        "unknown ANA state '{}' (optimized, non_optimized, inaccessible, persistent_loss, change)", s);
}

Target::Target(ReactorSet& reactors, BdevRegistry& devices, TargetOptions opts)
    : reactors_(reactors),
      devices_(devices),
      opts_(std::move(opts)),
      qpair_teardowns_("nvmf queue pair teardown", reactors.size()) {
  slices_.resize(reactors_.size());
  for (auto& s : slices_) {
    s.small = std::make_unique<net::BufferPool>(8192, opts_.small_buffers_per_reactor);
    s.large = std::make_unique<net::BufferPool>(opts_.max_io_size, opts_.large_buffers_per_reactor);
  }
  if (opts_.io_reactors.empty()) {
    for (unsigned i = 0; i < reactors_.size(); ++i) opts_.io_reactors.push_back(i);
  }
  SubsystemConfig d;
  d.nqn = kDiscoveryNqn;
  d.serial = "tern-discovery";
  d.model = "tern discovery controller";
  d.allow_any_host = true;
  d.ana_reporting = false;
  d.max_namespaces = 0;
  discovery_ = std::make_unique<Subsystem>(d, true);
}

Target::~Target() {
  if (!controllers_.empty() || !listeners_.empty()) {
    TLOG_WARN("nvmf", "target destroyed with {} controller(s) and {} listener(s) left; call shutdown() first",
              controllers_.size(), listeners_.size());
  }
}

Status Target::check_nqn(std::string_view nqn) const { return validate_nqn(nqn); }

void Target::set_vendor_handler(uint8_t opcode, VendorHandler h) {
  if (h) vendor_handlers_[opcode] = std::move(h);
  else vendor_handlers_.erase(opcode);
}

const VendorHandler* Target::vendor_handler(uint8_t opcode) const {
  auto it = vendor_handlers_.find(opcode);
  return it == vendor_handlers_.end() ? nullptr : &it->second;
}

Status validate_nqn(std::string_view nqn) {
  if (nqn.size() < 11 || nqn.size() > 223) {
    return Status::Errorf(Errc::kInval, "NQN '{}' must be 11 to 223 characters long", nqn);
  }
  if (nqn.substr(0, 4) != "nqn.") {
    return Status::Errorf(Errc::kInval, "NQN '{}' must start with 'nqn.' (e.g. nqn.2019-05.io.openebs:vol1)", nqn);
  }
  for (char c : nqn) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Status::Errorf(Errc::kInval, "NQN '{}' contains whitespace or control characters", nqn);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------
// Listeners and connections

Result<uint16_t> Target::listen(const std::string& host, uint16_t port) {
  for (auto& [addr, l] : listeners_) {
    if (addr.host == host && port != 0 && addr.port == port) return port;
  }
  auto l = net::TcpListener::Listen(host, port, [this, host](int fd, const sockaddr_storage&) {
    on_accept(ListenAddr{host, 0}, fd);  // the port is read back from the socket
  });
  if (!l.ok()) return l.status();
  uint16_t actual = (*l)->port();
  ListenAddr a{host, actual};
  listeners_.emplace(a, std::move(*l));
  TLOG_INFO("nvmf", "listening on {}", a.to_string());
  bump_discovery_genctr();
  return actual;
}

std::vector<ListenAddr> Target::listeners() const {
  std::vector<ListenAddr> out;
  for (auto& [a, l] : listeners_) out.push_back(a);
  return out;
}

void Target::on_accept(const ListenAddr& local_in, int fd) {
  if (shutting_down_) {
    ::close(fd);
    return;
  }
  // Which of our listeners took it: the local address of the socket says.
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ListenAddr local = local_in;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    local.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  unsigned reactor = opts_.io_reactors[next_reactor_++ % opts_.io_reactors.size()];
  reactors_.post(reactor, [this, fd, local] {
    adopt(std::make_unique<net::TcpConn>(fd, TcpQpair::kRecvBufferSize), local);
  });
}

void Target::adopt(std::unique_ptr<net::Stream> stream, const ListenAddr& local) {
  const unsigned reactor = Reactor::current()->id();
  auto* qp = new TcpQpair(*this, std::move(stream), local, ++qpair_ids_);
  slices_[reactor].qpairs.push_back(qp);
  qp->start();
}

Task<TargetStats> Target::stats() {
  TargetStats t;
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    TargetStats* out = &t;
    co_await reactors_.submit_to(r, [this, r, out] {
      for (TcpQpair* qp : slices_[r].qpairs) {
        const TcpQpairStats& q = qp->stats();
        ++out->qpairs;
        out->commands += q.commands;
        for (size_t i = 0; i < TcpReq::kStateCount; ++i) {
          out->in_state[i] += q.in_state[i];
          out->entered[i] += q.entered[i];
        }
      }
    });
  }
  co_return t;
}

Task<Status> Target::stop_listening(std::string host, uint16_t port) {
  auto it = listeners_.find(ListenAddr{host, port});
  if (it == listeners_.end()) co_return Status::Errorf(Errc::kNoEnt, "not listening on {}:{}", host, port);
  net::TcpListener* l = it->second.get();
  bool done = false;
  l->close([&done] { done = true; });
  while (!done) co_await Reactor::sleep_for(1'000'000);
  listeners_.erase(it);
  // The address is gone for everyone: so are the connections it accepted (a port taken down, as in
  // SPDK); hosts see the path fail and use another one.
  const ListenAddr addr{host, port};
  co_await close_connections(&addr, "the target stopped listening on this address");
  bump_discovery_genctr();
  co_return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------
// Subsystems

Result<Subsystem*> Target::create_subsystem(SubsystemConfig cfg) {
  TERN_RETURN_IF_ERROR(check_nqn(cfg.nqn));
  if (cfg.nqn == kDiscoveryNqn) return Status(Errc::kInval, "the discovery NQN is reserved");
  if (subsystems_.count(cfg.nqn)) return Status::Errorf(Errc::kExist, "subsystem '{}' already exists", cfg.nqn);
  if (cfg.cntlid_min == 0 || cfg.cntlid_min > cfg.cntlid_max || cfg.cntlid_max > 0xFFEF) {
    return Status::Errorf(Errc::kInval, "controller id range {}..{} is invalid (1 <= min <= max <= 65519)",
                          cfg.cntlid_min, cfg.cntlid_max);
  }
  if (cfg.serial.empty()) {
    // Stable per NQN, 20 characters at most.
    uint64_t h = 1469598103934665603ull;
    for (char c : cfg.nqn) h = (h ^ uint8_t(c)) * 1099511628211ull;
    cfg.serial = fmt::format("TRN{:016x}", h).substr(0, 20);
  }
  if (cfg.serial.size() > 20) return Status::Errorf(Errc::kInval, "serial number '{}' is longer than 20 characters", cfg.serial);
  if (cfg.model.size() > 40) return Status::Errorf(Errc::kInval, "model number '{}' is longer than 40 characters", cfg.model);
  auto s = std::make_unique<Subsystem>(std::move(cfg));
  Subsystem* raw = s.get();
  subsystems_.emplace(raw->nqn(), std::move(s));
  bump_discovery_genctr();
  TLOG_INFO("nvmf", "created subsystem '{}'", raw->nqn());
  return raw;
}

Subsystem* Target::find_subsystem(std::string_view nqn) {
  if (nqn == kDiscoveryNqn) return discovery_.get();
  auto it = subsystems_.find(nqn);
  return it == subsystems_.end() ? nullptr : it->second.get();
}

Task<Status> Target::delete_subsystem(std::string nqn) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) co_return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  for (Controller* c : s->controllers()) c->close_all("subsystem deleted");
  for (int i = 0; i < 30000 && !s->controllers().empty(); ++i) co_await Reactor::sleep_for(1'000'000);
  if (!s->controllers().empty()) {
    co_return Status::Errorf(Errc::kTimedOut, "subsystem '{}': controllers did not go away in 30 s", nqn);
  }
  std::vector<uint32_t> ids;
  for (auto& [id, ns] : s->namespaces()) ids.push_back(id);
  for (uint32_t id : ids) {
    std::unique_ptr<BdevDesc> d = s->remove_namespace(id);
    d.reset();
  }
  subsystems_.erase(std::string(nqn));
  bump_discovery_genctr();
  TLOG_INFO("nvmf", "deleted subsystem '{}'", nqn);
  co_return Status::Ok();
}

Result<uint32_t> Target::add_namespace(const std::string& nqn, const std::string& bdev, uint32_t nsid,
                                       uint32_t anagrpid) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  // A device that grows (a nexus or replica resized) is a namespace change for the hosts. Events reach
  // only open descriptors, and this one lives in the subsystem's namespace: `s` is alive when it runs.
  Bdev* dev = devices_.find(bdev);
  auto desc = devices_.open(bdev, true, [this, s, dev](BdevEvent ev) {
    if (ev != BdevEvent::kResized) return;
    for (auto& [id, ns] : s->namespaces()) {
      if (ns.desc && &ns.desc->bdev() == dev) {
        s->publish();  // the I/O path's range checks take the new size
        namespace_changed(*s, id);
        TLOG_INFO("nvmf", "subsystem '{}': namespace {} grew to {} blocks", s->nqn(), id, dev->num_blocks());
      }
    }
  });
  if (!desc.ok()) return desc.status().WithContext(fmt::format("namespace for '{}'", nqn));
  TERN_ASSIGN_OR_RETURN(uint32_t id, s->add_namespace(std::move(*desc), nsid, anagrpid));
  namespace_changed(*s, id);
  TLOG_INFO("nvmf", "subsystem '{}': namespace {} is device '{}'", nqn, id, bdev);
  return id;
}

Task<Status> Target::remove_namespace(std::string nqn, uint32_t nsid) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) co_return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  if (!s->ns(nsid)) co_return Status::Errorf(Errc::kNoEnt, "subsystem '{}' has no namespace {}", nqn, nsid);
  std::unique_ptr<BdevDesc> desc = s->remove_namespace(nsid);
  // Every queue pair drops its channel before the descriptor closes.
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    co_await reactors_.submit_to(r, [this, r, s, nsid] {
      for (TcpQpair* qp : slices_[r].qpairs) qp->drop_namespace(s, nsid);
    });
  }
  desc.reset();
  namespace_changed(*s, nsid);
  TLOG_INFO("nvmf", "subsystem '{}': removed namespace {}", nqn, nsid);
  co_return Status::Ok();
}

Result<uint64_t> Target::rescan_namespace(const std::string& nqn, uint32_t nsid) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  Subsystem::Namespace* ns = s->ns(nsid);
  if (!ns) return Status::Errorf(Errc::kNoEnt, "subsystem '{}' has no namespace {}", nqn, nsid);
  Bdev& b = ns->desc->bdev();
  const uint64_t before = b.num_blocks();
  TERN_ASSIGN_OR_RETURN(uint64_t bytes, b.rescan());
  if (b.num_blocks() != before) {
    s->publish();  // the I/O path's range checks take the new size
    namespace_changed(*s, nsid);
    TLOG_INFO("nvmf", "subsystem '{}': namespace {} grew from {} to {} blocks", nqn, nsid, before, b.num_blocks());
  }
  return bytes;
}

Status Target::add_host(const std::string& nqn, const std::string& hostnqn) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  TERN_RETURN_IF_ERROR(check_nqn(hostnqn));
  s->add_host(hostnqn);
  bump_discovery_genctr();
  return Status::Ok();
}

Status Target::remove_host(const std::string& nqn, const std::string& hostnqn) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  if (!s->remove_host(hostnqn)) return Status::Errorf(Errc::kNoEnt, "host '{}' is not allowed on '{}'", hostnqn, nqn);
  // Connected controllers of that host go.
  for (Controller* c : s->controllers())
    if (c->hostnqn() == hostnqn && !s->config().allow_any_host) c->close_all("host removed from the subsystem");
  bump_discovery_genctr();
  return Status::Ok();
}

Status Target::set_allow_any_host(const std::string& nqn, bool allow) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  s->set_allow_any_host(allow);
  bump_discovery_genctr();
  return Status::Ok();
}

Status Target::add_subsystem_listener(const std::string& nqn, const ListenAddr& a) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  if (!listeners_.count(a)) {
    return Status::Errorf(Errc::kNoEnt, "the target does not listen on {} (start a listener first)", a.to_string());
  }
  s->add_listener(a);
  bump_discovery_genctr();
  return Status::Ok();
}

Status Target::remove_subsystem_listener(const std::string& nqn, const ListenAddr& a) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  if (!s->remove_listener(a)) return Status::Errorf(Errc::kNoEnt, "subsystem '{}' does not listen on {}", nqn, a.to_string());
  // Hosts that came in through that address lose this path (their controllers close).
  for (Controller* c : s->controllers())
    if (c->listener() == a) c->close_all("the subsystem was removed from this listener");
  bump_discovery_genctr();
  return Status::Ok();
}

Status Target::set_ana_state(const std::string& nqn, const ListenAddr& l, uint32_t anagrpid, AnaState st) {
  Subsystem* s = find_subsystem(nqn);
  if (!s || s == discovery_.get()) return Status::Errorf(Errc::kNoEnt, "no subsystem '{}'", nqn);
  if (!s->config().ana_reporting) return Status::Errorf(Errc::kInval, "subsystem '{}' does not report ANA", nqn);
  if (anagrpid == 0) return Status(Errc::kInval, "ANA group 0 is invalid");
  s->set_ana_state(l, anagrpid, st);
  ana_changed(*s);
  TLOG_INFO("nvmf", "subsystem '{}': ANA group {} on {} is now {}", nqn, anagrpid, l.to_string(), ana_state_name(st));
  return Status::Ok();
}

std::vector<SubsystemInfo> Target::list_subsystems() const {
  std::vector<SubsystemInfo> out;
  for (auto& [nqn, s] : subsystems_) {
    SubsystemInfo i;
    const SubsystemConfig& c = s->config();
    i.nqn = nqn;
    i.serial = c.serial;
    i.model = c.model;
    i.allow_any_host = c.allow_any_host;
    i.hosts = c.hosts;
    i.listeners = c.listeners;
    for (auto& [id, ns] : s->namespaces()) {
      const BdevProps& p = ns.desc->bdev().props();
      i.namespaces.push_back({id, p.name, p.uuid.ToString(), ns.anagrpid, p.size_bytes(), p.block_size});
    }
    for (Controller* ctl : const_cast<Subsystem&>(*s).controllers()) {
      char hid[33];
      for (int k = 0; k < 16; ++k) snprintf(hid + 2 * k, 3, "%02x", ctl->hostid()[size_t(k)]);
      ControllerIoTotals io = ctl->io_totals();
      i.controllers.push_back({ctl->cntlid(), ctl->hostnqn(), hid, ctl->io_queues(), ctl->kato_ms(), ctl->listener(),
                               io.commands, io.read_bytes, io.write_bytes});
    }
    for (const ListenAddr& l : c.listeners)
      for (uint32_t g : s->ana_groups()) i.ana.emplace_back(l, g, s->ana_state(l, g));
    out.push_back(std::move(i));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Controllers

void Target::register_controller(Controller* c) { controllers_.push_back(c); }
void Target::unregister_controller(Controller* c) {
  controllers_.erase(std::remove(controllers_.begin(), controllers_.end(), c), controllers_.end());
}

void Target::bump_discovery_genctr() {
  ++discovery_genctr_;
  for (Controller* c : discovery_->controllers()) c->discovery_changed();
}

void Target::namespace_changed(Subsystem& s, uint32_t nsid) {
  for (Controller* c : s.controllers()) c->namespace_changed(nsid);
}

void Target::ana_changed(Subsystem& s) {
  for (Controller* c : s.controllers()) c->ana_changed();
}

ConnectResult Target::connect(const ConnectCmd& cmd, const ConnectData& data, const ListenAddr& local,
                              const QpairRef& ref) {
  ConnectResult res;
  auto invalid = [&](bool in_data, uint32_t offset) {
    res.status = CmdStatus::Specific(sc::kConnectInvalidParameters);
    res.dw0 = (uint32_t(in_data ? 1 : 0) << 16) | offset;  // IATTR (byte 2), IPO (bytes 1:0)
    return res;
  };
  if (cmd.recfmt != 0) {
    res.status = CmdStatus::Specific(sc::kConnectIncompatibleFormat);
    return res;
  }
  const std::string subnqn = get_field(data.subnqn, sizeof(data.subnqn));
  const std::string hostnqn = get_field(data.hostnqn, sizeof(data.hostnqn));
  Subsystem* s = find_subsystem(subnqn);
  if (!s || !s->listens_on(local)) {
    TLOG_INFO("nvmf", "connect from {} to unknown subsystem '{}' on {}", hostnqn, subnqn, local.to_string());
    return invalid(true, offsetof(ConnectData, subnqn));
  }
  if (!s->host_allowed(hostnqn)) {
    TLOG_WARN("nvmf", "host '{}' is not allowed to connect to '{}'", hostnqn, subnqn);
    res.status = CmdStatus::Specific(sc::kConnectInvalidHost);
    return res;
  }
  const uint32_t qsize = uint32_t(cmd.sqsize) + 1;
  const uint16_t qid = cmd.qid;
  const uint32_t max_depth = qid == 0 ? opts_.max_admin_queue_depth : opts_.max_queue_depth;
  if (cmd.sqsize == 0 || qsize > max_depth) return invalid(false, offsetof(ConnectCmd, sqsize));
  std::array<uint8_t, 16> hostid;
  std::memcpy(hostid.data(), data.hostid, 16);
  if (qid == 0) {
    if (data.cntlid != 0xFFFF) return invalid(true, offsetof(ConnectData, cntlid));  // dynamic model only
    uint32_t kato = cmd.kato;
    if (kato > opts_.max_keep_alive_ms) kato = opts_.max_keep_alive_ms;
    if (s->is_discovery() && kato == 0) kato = 0;
    auto id = s->allocate_cntlid();
    if (!id.ok()) {
      res.status = CmdStatus::Specific(sc::kConnectControllerBusy);
      return res;
    }
    auto* c = new Controller(*this, *s, *id, hostnqn, hostid, kato, local, ref);
    res.ctrl = c;
    res.subsys = s;
    res.cntlid = *id;
    res.dw0 = *id;
    return res;
  }
  Controller* c = nullptr;
  for (Controller* x : s->controllers())
    if (x->cntlid() == data.cntlid) c = x;
  if (!c) return invalid(true, offsetof(ConnectData, cntlid));
  uint32_t ipo = 0;
  uint8_t iattr = 0;
  res.status = c->attach_io_qpair(ref, qid, hostnqn, hostid, &ipo, &iattr);
  if (!res.status.ok()) {
    if (res.status.sct == Sct::kCommandSpecific && res.status.sc == sc::kConnectInvalidParameters) {
      res.dw0 = (uint32_t(iattr) << 16) | ipo;
    }
    return res;
  }
  res.ctrl = c;
  res.subsys = s;
  res.cntlid = c->cntlid();
  res.dw0 = c->cntlid();
  return res;
}

Task<void> Target::close_connections(const ListenAddr* accepted_on, const char* why) {
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    co_await reactors_.submit_to(r, [this, r, accepted_on, why] {
      std::vector<TcpQpair*> qs = slices_[r].qpairs;  // close() may remove from the list
      for (TcpQpair* qp : qs)
        if (!accepted_on || qp->local() == *accepted_on) qp->close(why);
    });
  }
}

Task<void> Target::shutdown() {
  shutting_down_ = true;
  std::vector<ListenAddr> ls = listeners();
  for (auto& l : ls) {
    if (Status st = co_await stop_listening(l.host, l.port); !st.ok()) TLOG_WARN("nvmf", "shutdown: {}", st.ToString());
  }
  std::vector<Controller*> cs = controllers_;
  for (Controller* c : cs) c->close_all("target shutting down");
  // Connections that never got as far as a controller.
  co_await close_connections(nullptr, "target shutting down");
  for (int i = 0; i < 30000; ++i) {
    size_t left = controllers_.size();
    for (unsigned r = 0; r < reactors_.size(); ++r) {
      left += co_await reactors_.submit_to(r, [this, r] { return slices_[r].qpairs.size(); });
    }
    if (left == 0) break;
    if (i == 1000) {
      // Still there after a second: requests a device holds (hung, or held by fault injection) keep
      // their queue pairs open. Resetting those devices' channels aborts them.
      for (unsigned r = 0; r < reactors_.size(); ++r) {
        co_await reactors_.submit_to(r, [this, r] {
          for (TcpQpair* qp : slices_[r].qpairs) qp->abort_device_io();
        });
      }
    }
    co_await Reactor::sleep_for(1'000'000);
  }
  std::vector<std::string> names;
  for (auto& [n, s] : subsystems_) names.push_back(n);
  for (auto& n : names) {
    if (Status st = co_await delete_subsystem(n); !st.ok()) TLOG_WARN("nvmf", "shutdown: {}", st.ToString());
  }
  co_await qpair_teardowns_.close(reactors_);
  co_await controller_teardowns_.close();
}

}  // namespace tern::nvmf
