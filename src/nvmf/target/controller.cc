#include "nvmf/target/controller.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "nvmf/target/target.h"
#include "nvmf/target/tcp_qpair.h"
#include "nvmf/vendor.h"
#include "reactor/reactor_set.h"

namespace tern::nvmf {

using namespace tern::nvme;

namespace {

constexpr uint32_t kVersion = 0x00010400;  // NVMe 1.4
constexpr uint8_t kAerLimit = 4;
constexpr size_t kMaxPendingEvents = 16;

template <typename T>
std::vector<uint8_t> bytes_of(const T& v) {
  std::vector<uint8_t> out(sizeof(T));
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

AdminResult ok_result(uint32_t dw0 = 0) {
  AdminResult r;
  r.dw0 = dw0;
  return r;
}

AdminResult error_result(CmdStatus s) {
  AdminResult r;
  r.status = s;
  return r;
}

uint32_t log2u(uint32_t v) {
  uint32_t l = 0;
  while ((1u << (l + 1)) <= v) ++l;
  return l;
}

}  // namespace

Controller::Controller(Target& target, Subsystem& subsys, uint16_t cntlid, std::string hostnqn,
                       std::array<uint8_t, 16> hostid, uint32_t kato_ms, const ListenAddr& listener, QpairRef admin)
    : target_(target),
      subsys_(subsys),
      cntlid_(cntlid),
      hostnqn_(std::move(hostnqn)),
      hostid_(hostid),
      kato_ms_(kato_ms),
      listener_(listener),
      admin_(admin),
      io_queues_(target.options().max_io_queues),
      io_counters_(target.reactors().size()) {
  kato_timer_.set_callback([this] { keep_alive_expired(); });
  if (kato_ms_) kato_timer_.arm(uint64_t(kato_ms_) * 1'000'000);
  subsys_.controllers().push_back(this);
  target_.register_controller(this);
}

ControllerIoTotals Controller::io_totals() const {
  ControllerIoTotals t;
  for (const ControllerIoCounters& c : io_counters_) {
    t.commands += c.commands.load(std::memory_order_relaxed);
    t.read_bytes += c.read_bytes.load(std::memory_order_relaxed);
    t.write_bytes += c.write_bytes.load(std::memory_order_relaxed);
  }
  return t;
}

Controller::~Controller() {
  kato_timer_.cancel();
  auto& v = subsys_.controllers();
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
  subsys_.release_cntlid(cntlid_);
  target_.unregister_controller(this);
}

// ---------------------------------------------------------------------------------------------------
// Keep-alive and teardown

void Controller::keep_alive() {
  if (kato_ms_ && !closing_) kato_timer_.arm(uint64_t(kato_ms_) * 1'000'000);
}

void Controller::keep_alive_expired() {
  TLOG_WARN("nvmf", "controller {} of '{}' (host {}): keep-alive timeout of {} ms expired; tearing it down", cntlid_,
            subsys_.nqn(), hostnqn_, kato_ms_);
  close_all("keep-alive timeout");
}

void Controller::close_all(const char* why) {
  if (closing_) return;
  closing_ = true;
  kato_timer_.cancel();
  ReactorSet& set = target_.reactors();
  std::vector<QpairRef> all = io_qpairs_;
  if (!admin_detached_) all.push_back(admin_);
  for (const QpairRef& q : all) {
    TcpQpair* qp = q.qp;
    set.post(q.reactor, [qp, why] { qp->close(why); });
  }
}

void Controller::close_io_queues(const char* why) {
  ReactorSet& set = target_.reactors();
  for (const QpairRef& q : io_qpairs_) {
    TcpQpair* qp = q.qp;
    set.post(q.reactor, [qp, why] { qp->close(why); });
  }
}

nvme::CmdStatus Controller::attach_io_qpair(QpairRef ref, uint16_t qid, const std::string& hostnqn,
                                         const std::array<uint8_t, 16>& hostid, uint32_t* ipo, uint8_t* iattr) {
  if (closing_ || admin_detached_) return CmdStatus::Specific(sc::kConnectInvalidParameters);
  if (hostnqn != hostnqn_ || hostid != hostid_) {
    // The I/O queue must come from the host that owns the controller.
    *iattr = 1;
    *ipo = hostnqn != hostnqn_ ? offsetof(ConnectData, hostnqn) : offsetof(ConnectData, hostid);
    return CmdStatus::Specific(sc::kConnectInvalidParameters);
  }
  if (!enabled()) return CmdStatus::Generic(sc::kCommandSequenceError);
  if (qid > io_queues_) {
    *iattr = 0;
    *ipo = offsetof(ConnectCmd, qid);
    return CmdStatus::Specific(sc::kConnectInvalidParameters);
  }
  for (auto& q : io_qpairs_) {
    if (q.qid == qid) {
      *iattr = 0;
      *ipo = offsetof(ConnectCmd, qid);
      return CmdStatus::Specific(sc::kConnectInvalidParameters);
    }
  }
  ref.qid = qid;
  io_qpairs_.push_back(ref);
  return CmdStatus::Ok();
}

void Controller::detach(TcpQpair* qp) {
  ReactorSet& set = target_.reactors();
  unsigned reactor = 0;
  bool found = false;
  if (!admin_detached_ && admin_.qp == qp) {
    admin_detached_ = true;
    reactor = admin_.reactor;
    found = true;
    // Without its admin queue the association is over.
    aer_cids_.clear();
    close_all("admin queue closed");
  }
  for (size_t i = 0; i < io_qpairs_.size(); ++i) {
    if (io_qpairs_[i].qp == qp) {
      reactor = io_qpairs_[i].reactor;
      io_qpairs_.erase(io_qpairs_.begin() + long(i));
      found = true;
      break;
    }
  }
  if (reset_pending_ && io_qpairs_.empty()) {
    reset_pending_ = false;
    csts_ &= ~kCstsRdy;
  }
  if (found) set.post(reactor, [qp] { qp->controller_detached(); });
  if (admin_detached_ && io_qpairs_.empty() && !destroying_) {
    // The association is over; work it started (a shutdown flush) may still be running: the controller
    // goes once that has ended.
    destroying_ = true;
    target_.controller_teardowns().spawn([](Controller* c) -> Task<void> {
      co_await c->scope_.close();
      TLOG_INFO("nvmf", "controller {} of '{}' (host {}) is gone", c->cntlid_, c->subsys_.nqn(), c->hostnqn_);
      delete c;
    }(this));
  }
}

// ---------------------------------------------------------------------------------------------------
// Events

void Controller::raise_event(uint32_t dw0, uint8_t log_id) {
  if (masked_logs_.count(log_id)) return;  // already reported; the host has not read the log yet
  masked_logs_.insert(log_id);
  if (!aer_cids_.empty() && !admin_detached_) {
    uint16_t cid = aer_cids_.front();
    aer_cids_.pop_front();
    AdminResult r;
    r.dw0 = dw0;
    TcpQpair* qp = admin_.qp;
    target_.reactors().post(admin_.reactor, [qp, cid, r = std::move(r)]() mutable { qp->complete_admin(cid, std::move(r)); });
    return;
  }
  if (pending_events_.size() < kMaxPendingEvents) pending_events_.push_back(dw0);
}

void Controller::namespace_changed(uint32_t nsid) {
  if (changed_ns_.size() >= 1024) changed_ns_overflow_ = true;
  else changed_ns_.insert(nsid);
  if (aec_ & kAecNsAttrNotices) raise_event(aer_dw0(kAerTypeNotice, kAerInfoNsAttrChanged, lid::kChangedNamespaces), lid::kChangedNamespaces);
}

void Controller::ana_changed() {
  if (aec_ & kAecAnaChangeNotices) raise_event(aer_dw0(kAerTypeNotice, kAerInfoAnaChange, lid::kAna), lid::kAna);
}

void Controller::discovery_changed() {
  if (aec_ & kAecDiscoveryLogChange) {
    raise_event(aer_dw0(kAerTypeNotice, kAerInfoDiscoveryChange, lid::kDiscovery), lid::kDiscovery);
  }
}

void Controller::reservation_notice(uint8_t type, uint32_t nsid) {
  ReservationNotificationLog e{};
  e.log_page_count = ++resv_log_count_;
  e.type = type;
  e.nsid = nsid;
  if (resv_log_.size() >= 64) resv_log_.pop_front();
  resv_log_.push_back(e);
  raise_event(aer_dw0(kAerTypeIoCommandSpecific, kAerInfoReservationLogAvailable, lid::kReservationNotification),
              lid::kReservationNotification);
}

// ---------------------------------------------------------------------------------------------------
// Command dispatch

Task<AdminResult> Controller::execute(AdminCommand cmd) {
  const Sqe& s = cmd.sqe;
  if (s.opc == opc::kFabrics) {
    const auto& p = reinterpret_cast<const PropertyCmd&>(s);
    if (p.fctype == fctype::kPropertyGet) co_return property_get(p);
    if (p.fctype == fctype::kPropertySet) co_return property_set(p);
    co_return error_result(CmdStatus::Generic(sc::kInvalidOpcode));
  }
  if (!enabled() && s.opc != opc::kKeepAlive) {
    co_return error_result(CmdStatus::Generic(sc::kCommandSequenceError));
  }
  const bool disc = subsys_.is_discovery();
  switch (s.opc) {
    case opc::kIdentify: co_return co_await identify(s);
    case opc::kGetLogPage: co_return co_await get_log_page(s, cmd.xfer_len);
    case opc::kGetFeatures: co_return get_features(s);
    case opc::kSetFeatures: co_return set_features(s, cmd.data);
    case opc::kAsyncEventRequest: co_return async_event_request(s);
    case opc::kKeepAlive:
      keep_alive();
      co_return ok_result();
    case opc::kAbort:
      if (disc) break;
      // Commands are never held back long enough to be worth aborting: report "not aborted".
      co_return ok_result(1);
    default:
      if (s.opc >= 0xC0 && !disc) co_return co_await vendor_command(std::move(cmd));
      break;
  }
  co_return error_result(CmdStatus::Generic(sc::kInvalidOpcode));
}

Task<AdminResult> Controller::vendor_command(AdminCommand cmd) {
  const bool builtin = cmd.sqe.opc == vendor::kBlockStatus;
  const VendorHandler* found = builtin ? nullptr : target_.vendor_handler(cmd.sqe.opc);
  if (!builtin && !found) co_return error_result(CmdStatus::Generic(sc::kInvalidOpcode));
  Subsystem::Namespace* ns = subsys_.ns(cmd.sqe.nsid);
  if (!ns || !ns->desc) co_return error_result(CmdStatus::Generic(sc::kInvalidNamespace));
  switch (subsys_.ana_state(listener_, ns->anagrpid)) {
    case AnaState::kOptimized:
    case AnaState::kNonOptimized: break;
    case AnaState::kInaccessible: co_return error_result(CmdStatus::Path(sc::kAnaInaccessible));
    case AnaState::kPersistentLoss: co_return error_result(CmdStatus::Path(sc::kAnaPersistentLoss));
    case AnaState::kChange: co_return error_result(CmdStatus::Path(sc::kAnaTransition));
  }
  if (builtin) {
    // Block status: a read of the namespace's allocation, answered from its device.
    if (!reservation_allows(ns->resv, hostid_, true, false)) {
      co_return error_result(CmdStatus::Generic(sc::kReservationConflict));
    }
    const uint64_t lba = uint64_t(cmd.sqe.cdw10) | (uint64_t(cmd.sqe.cdw11) << 32);
    const uint64_t max = cmd.sqe.cdw12;
    if (max == 0 || cmd.xfer_len < sizeof(vendor::BlockStatusWire)) {
      co_return error_result(CmdStatus::Generic(sc::kInvalidField));
    }
    Bdev& dev = ns->desc->bdev();
    if (lba >= dev.num_blocks()) co_return error_result(CmdStatus::Generic(sc::kLbaOutOfRange));
    auto st = co_await dev.block_status(lba, max);
    if (!st.ok()) {
      co_return error_result(st.code() == Errc::kNotSup ? CmdStatus::Generic(sc::kInvalidField)
                                                        : vendor::status_for(st.code()));
    }
    AdminResult r;
    r.data = vendor::encode(vendor::BlockStatusReply{st->allocated, st->blocks});
    co_return r;
  }
  // Vendor commands change what the namespace holds (a snapshot of it, at least): a write, for the
  // reservation rules, so a fenced host cannot use them.
  if (!reservation_allows(ns->resv, hostid_, false, true)) {
    co_return error_result(CmdStatus::Generic(sc::kReservationConflict));
  }
  VendorCommand vc;
  vc.sqe = cmd.sqe;
  vc.subnqn = subsys_.nqn();
  vc.nsid = cmd.sqe.nsid;
  vc.bdev = ns->desc->bdev().name();
  vc.hostnqn = hostnqn_;
  vc.hostid = hostid_;
  vc.data = std::move(cmd.data);
  const VendorHandler handler = *found;  // the frame keeps it, even if it is replaced meanwhile
  co_return co_await handler(std::move(vc));
}

// ---------------------------------------------------------------------------------------------------
// Properties

AdminResult Controller::property_get(const PropertyCmd& c) {
  const bool size8 = (c.attrib & 7) == 1;
  const uint32_t ofst = c.ofst;
  AdminResult r;
  switch (ofst) {
    case prop::kCap: {
      if (!size8) return error_result(CmdStatus::Generic(sc::kInvalidField));
      const TargetOptions& o = target_.options();
      uint32_t depth = subsys_.is_discovery() ? o.max_admin_queue_depth : o.max_queue_depth;
      uint64_t cap = uint64_t(depth - 1) & 0xffff;
      cap |= uint64_t(1) << 16;        // CQR: queues must be contiguous
      cap |= uint64_t(30) << 24;       // TO: 15 s to become ready, in 500 ms units
      cap |= uint64_t(1) << 37;        // CSS: NVM command set
      r.dw0 = uint32_t(cap);
      r.dw1 = uint32_t(cap >> 32);
      return r;
    }
    case prop::kVs:
      if (size8) return error_result(CmdStatus::Generic(sc::kInvalidField));
      r.dw0 = kVersion;
      return r;
    case prop::kCc:
      if (size8) return error_result(CmdStatus::Generic(sc::kInvalidField));
      r.dw0 = cc_;
      return r;
    case prop::kCsts:
      if (size8) return error_result(CmdStatus::Generic(sc::kInvalidField));
      r.dw0 = csts_;
      return r;
    default:
      return error_result(CmdStatus::Generic(sc::kInvalidField));
  }
}

AdminResult Controller::property_set(const PropertyCmd& c) {
  const bool size8 = (c.attrib & 7) == 1;
  if (c.ofst != prop::kCc || size8) return error_result(CmdStatus::Generic(sc::kInvalidField));
  const uint32_t v = uint32_t(uint64_t(c.value));
  const uint32_t old = cc_;
  cc_ = v;
  if ((v & kCcEn) && !(old & kCcEn)) {
    reset_pending_ = false;  // enabled again before the reset finished (the host did not wait for RDY)
    const uint32_t iosqes = (v >> 16) & 0xf, iocqes = (v >> 20) & 0xf;
    if (!subsys_.is_discovery() && (iosqes != 6 || iocqes != 4)) {
      csts_ |= kCstsCfs;
      TLOG_WARN("nvmf", "controller {}: host enabled it with IOSQES {} / IOCQES {} (need 6 / 4)", cntlid_, iosqes,
                iocqes);
    } else {
      csts_ |= kCstsRdy;
    }
  } else if (!(v & kCcEn) && (old & kCcEn)) {
    // Controller reset: I/O queues go, outstanding events are dropped, features return to defaults.
    // CSTS.RDY clears when the reset is complete, that is once the last I/O queue is gone (detach()):
    // a host that waits for it may then reconnect its queues with the same ids.
    csts_ &= ~kCstsCfs;
    if (io_qpairs_.empty()) csts_ &= ~kCstsRdy;
    else reset_pending_ = true;
    close_io_queues("controller reset");
    for (uint16_t cid : aer_cids_) {
      AdminResult a;
      a.status = CmdStatus::Generic(sc::kAbortSqDeleted, false);
      TcpQpair* qp = admin_.qp;
      target_.reactors().post(admin_.reactor, [qp, cid, a = std::move(a)]() mutable { qp->complete_admin(cid, std::move(a)); });
    }
    aer_cids_.clear();
    pending_events_.clear();
    masked_logs_.clear();
    io_queues_set_ = false;
    io_queues_ = target_.options().max_io_queues;
    aec_ = 0;
    vwc_enabled_.store(true, std::memory_order_relaxed);
  }
  const uint32_t shn = (v >> kCcShnShift) & 3;
  if (shn && !((old >> kCcShnShift) & 3)) {
    csts_ = (csts_ & ~(3u << kCstsShstShift)) | (1u << kCstsShstShift);  // shutdown in progress
    scope_.spawn(shutdown_flush());
  }
  return ok_result();
}

Task<void> Controller::shutdown_flush() {
  // Make written data durable before reporting the shutdown complete. Namespaces may come and go while
  // a flush is out: look each one up again after every wait.
  std::vector<uint32_t> nsids;
  for (auto& [nsid, ns] : subsys_.namespaces()) nsids.push_back(nsid);
  for (uint32_t nsid : nsids) {
    Subsystem::Namespace* ns = subsys_.ns(nsid);
    if (!ns || !ns->desc->bdev().props().write_cache) continue;
    auto ch = ChannelRef::Get(*ns->desc);
    if (!ch.ok()) continue;
    Errc e = co_await ch->flush();
    if (e != Errc::kOk) TLOG_WARN("nvmf", "controller {}: flush of namespace {} at shutdown failed: {}", cntlid_, nsid, errc_name(e));
  }
  csts_ = (csts_ & ~(3u << kCstsShstShift)) | (2u << kCstsShstShift);
}

// ---------------------------------------------------------------------------------------------------
// Identify

void Controller::fill_identify_controller(IdentifyController& id) {
  const TargetOptions& o = target_.options();
  const bool disc = subsys_.is_discovery();
  const SubsystemConfig& cfg = subsys_.config();
  std::memset(&id, 0, sizeof(id));
  set_ascii(id.sn, sizeof(id.sn), cfg.serial.c_str());
  set_ascii(id.mn, sizeof(id.mn), cfg.model.c_str());
  set_ascii(id.fr, sizeof(id.fr), o.firmware.c_str());
  id.rab = 6;
  id.cmic = disc ? 0 : uint8_t(0x01 | 0x02 | (cfg.ana_reporting ? 0x08 : 0));
  id.mdts = uint8_t(log2u(o.max_io_size / 4096));
  id.cntlid = cntlid_;
  id.ver = kVersion;
  id.oaes = disc ? kAecDiscoveryLogChange : (kAecNsAttrNotices | (cfg.ana_reporting ? kAecAnaChangeNotices : 0));
  id.ctratt = 1;  // 128-bit host identifiers
  id.cntrltype = disc ? 2 : 1;
  id.acl = 3;
  id.aerl = kAerLimit - 1;
  id.frmw = 0x03;  // one slot, read-only
  id.lpa = 0x04;   // extended Get Log Page (offsets, 32-bit NUMD)
  id.elpe = 0;
  id.wctemp = 343;
  id.cctemp = 373;
  id.kas = 10;  // keep-alive granularity: 1 s
  if (!disc) {
    if (cfg.ana_reporting) {
      id.anatt = 10;
      id.anacap = 0x1F | 0x40;
      id.anagrpmax = cfg.max_namespaces;
      id.nanagrpid = cfg.max_namespaces;
    }
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd = uint16_t(o.max_queue_depth);
    id.nn = cfg.max_namespaces;
    id.oncs = 0x01 | 0x04 | 0x08 | 0x20;  // compare, dataset management, write zeroes, reservations
    bool vwc = false;
    for (auto& [nsid, ns] : subsys_.namespaces()) vwc |= ns.desc->bdev().props().write_cache;
    id.vwc = vwc ? uint8_t(0x01 | (0x2 << 1)) : uint8_t(0x2 << 1);  // present?; broadcast flush unsupported
    id.sgls = (1u << 0) | (1u << 20);  // SGLs, and in-capsule data at an offset
    id.ioccsz = (64 + o.in_capsule_data_size) / 16;
    id.iorcsz = 1;
    id.msdbd = 1;
    id.mnan = cfg.max_namespaces;
  } else {
    id.sgls = (1u << 0) | (1u << 20);
    id.ioccsz = 4;
    id.iorcsz = 1;
    id.msdbd = 1;
    id.maxcmd = uint16_t(o.max_admin_queue_depth);
  }
  set_cstr(id.subnqn, sizeof(id.subnqn), subsys_.nqn().c_str());
}

Task<AdminResult> Controller::identify(const Sqe& s) {
  const uint8_t cns = uint8_t(uint32_t(s.cdw10) & 0xff);
  const uint32_t nsid = s.nsid;
  const bool disc = subsys_.is_discovery();
  const uint32_t max_ns = subsys_.config().max_namespaces;
  AdminResult r;
  r.data.assign(4096, 0);
  if (cns == cns::kController) {
    IdentifyController id;
    fill_identify_controller(id);
    std::memcpy(r.data.data(), &id, sizeof(id));
    co_return r;
  }
  if (disc) co_return error_result(CmdStatus::Generic(sc::kInvalidField));
  switch (cns) {
    case cns::kNamespace: {
      if (nsid == 0 || (nsid > max_ns)) co_return error_result(CmdStatus::Generic(sc::kInvalidNamespace));
      Subsystem::Namespace* ns = subsys_.ns(nsid);
      if (!ns) co_return r;  // inactive: all zeros
      const BdevProps& p = ns->desc->bdev().props();
      auto* id = reinterpret_cast<IdentifyNamespace*>(r.data.data());
      id->nsze = p.num_blocks;
      id->ncap = p.num_blocks;
      id->nuse = p.num_blocks;
      id->nsfeat = 0;
      id->nlbaf = 0;
      id->flbas = 0;
      id->nmic = 0x01;  // may be shared by several controllers (multipath)
      id->rescap = 0x7E;
      id->dlfeat = uint8_t((p.unmap_reads_zeroes ? 0x1 : 0x0) | 0x08);
      id->anagrpid = subsys_.config().ana_reporting ? ns->anagrpid : 0;
      std::memcpy(id->nguid, p.uuid.bytes().data(), 16);
      id->lbaf[0].lbads = uint8_t(log2u(p.block_size));
      set_u128(id->nvmcap, p.size_bytes());
      if (p.optimal_io_blocks) id->noiob = uint16_t(std::min<uint32_t>(p.optimal_io_blocks, 0xffff));
      co_return r;
    }
    case cns::kActiveNamespaceList: {
      if (nsid >= 0xFFFFFFFE) co_return error_result(CmdStatus::Generic(sc::kInvalidNamespace));
      size_t n = 0;
      for (auto& [id, ns] : subsys_.namespaces()) {
        if (id <= nsid) continue;
        if (n == 1024) break;
        le32 v;
        v = id;
        std::memcpy(r.data.data() + n * 4, &v, 4);
        ++n;
      }
      co_return r;
    }
    case cns::kNamespaceIdDescriptors: {
      Subsystem::Namespace* ns = subsys_.ns(nsid);
      if (!ns) co_return error_result(CmdStatus::Generic(sc::kInvalidNamespace));
      const auto& u = ns->desc->bdev().props().uuid.bytes();
      size_t off = 0;
      auto put = [&](uint8_t type, const uint8_t* v, uint8_t len) {
        NsIdDescHeader h{type, len, {0, 0}};
        std::memcpy(r.data.data() + off, &h, sizeof(h));
        std::memcpy(r.data.data() + off + sizeof(h), v, len);
        off += sizeof(h) + len;
      };
      put(kNidtNguid, u.data(), 16);
      put(kNidtUuid, u.data(), 16);
      uint8_t csi = 0;
      put(kNidtCsi, &csi, 1);
      co_return r;
    }
    default:
      co_return error_result(CmdStatus::Generic(sc::kInvalidField));
  }
}

// ---------------------------------------------------------------------------------------------------
// Log pages

std::vector<uint8_t> Controller::discovery_log() {
  std::vector<DiscoveryLogEntry> entries;
  auto add = [&](const std::string& nqn, const ListenAddr& l, uint8_t subtype, uint16_t portid) {
    DiscoveryLogEntry e;
    std::memset(&e, 0, sizeof(e));
    e.trtype = kTrtypeTcp;
    e.adrfam = l.host.find(':') != std::string::npos ? kAdrfamIpv6 : kAdrfamIpv4;
    e.subtype = subtype;
    // Secure channel "not specified" plus "SQ flow control disable supported", as Linux's target says:
    // nvme-cli names only those combinations ("not required" | sqflow prints as "unrecognized").
    e.treq = kTreqNotSpecified | kTreqSqFlowDisable;
    e.portid = portid;
    e.cntlid = 0xFFFF;
    e.asqsz = uint16_t(target_.options().max_admin_queue_depth);
    set_cstr(e.trsvcid, sizeof(e.trsvcid), std::to_string(l.port).c_str());
    set_cstr(e.subnqn, sizeof(e.subnqn), nqn.c_str());
    set_cstr(e.traddr, sizeof(e.traddr), l.host.c_str());
    entries.push_back(e);
  };
  std::vector<ListenAddr> ports = target_.listeners();
  auto portid = [&](const ListenAddr& l) {
    for (size_t i = 0; i < ports.size(); ++i)
      if (ports[i] == l) return uint16_t(i + 1);
    return uint16_t(0);
  };
  // The discovery subsystem itself, at the port this host came in on.
  add(kDiscoveryNqn, listener_, kSubtypeCurrentDiscovery, portid(listener_));
  for (const SubsystemInfo& info : target_.list_subsystems()) {
    Subsystem* s = target_.find_subsystem(info.nqn);
    if (!s || !s->host_allowed(hostnqn_)) continue;
    for (const ListenAddr& l : info.listeners) add(info.nqn, l, kSubtypeNvme, portid(l));
  }
  DiscoveryLogHeader h;
  std::memset(&h, 0, sizeof(h));
  h.genctr = target_.discovery_genctr();
  h.numrec = entries.size();
  h.recfmt = 0;
  std::vector<uint8_t> out(sizeof(h) + entries.size() * sizeof(DiscoveryLogEntry));
  std::memcpy(out.data(), &h, sizeof(h));
  if (!entries.empty()) std::memcpy(out.data() + sizeof(h), entries.data(), entries.size() * sizeof(DiscoveryLogEntry));
  return out;
}

std::vector<uint8_t> Controller::ana_log(bool groups_only) {
  std::vector<uint8_t> out(sizeof(AnaLogHeader));
  std::set<uint32_t> groups = subsys_.ana_groups();
  AnaLogHeader h;
  std::memset(&h, 0, sizeof(h));
  h.chgcnt = subsys_.ana_change_count();
  h.ngrps = uint16_t(groups.size());
  std::memcpy(out.data(), &h, sizeof(h));
  for (uint32_t g : groups) {
    std::vector<uint32_t> nsids;
    if (!groups_only) {
      for (auto& [id, ns] : subsys_.namespaces())
        if (ns.anagrpid == g) nsids.push_back(id);
    }
    AnaGroupDesc d;
    std::memset(&d, 0, sizeof(d));
    d.anagrpid = g;
    d.nnsids = uint32_t(nsids.size());
    d.chgcnt = subsys_.ana_change_count();
    d.state = uint8_t(subsys_.ana_state(listener_, g));
    size_t at = out.size();
    out.resize(at + sizeof(d) + nsids.size() * 4);
    std::memcpy(out.data() + at, &d, sizeof(d));
    for (size_t i = 0; i < nsids.size(); ++i) {
      le32 v;
      v = nsids[i];
      std::memcpy(out.data() + at + sizeof(d) + i * 4, &v, 4);
    }
  }
  return out;
}

Task<std::vector<uint8_t>> Controller::smart_log() {
  SmartLog s;
  std::memset(&s, 0, sizeof(s));
  s.composite_temperature = 273 + 30;
  s.avail_spare = 100;
  s.avail_spare_threshold = 10;
  uint64_t rd_bytes = 0, wr_bytes = 0, rd_ops = 0, wr_ops = 0, errors = 0;
  for (auto& [nsid, ns] : subsys_.namespaces()) {
    BdevStats st = co_await ns.desc->bdev().stats(target_.reactors());
    rd_bytes += st.of(IoType::kRead).bytes;
    wr_bytes += st.of(IoType::kWrite).bytes;
    rd_ops += st.of(IoType::kRead).ops;
    wr_ops += st.of(IoType::kWrite).ops;
    errors += st.of(IoType::kRead).errors + st.of(IoType::kWrite).errors;
  }
  // Data units are thousands of 512-byte units, rounded up.
  set_u128(s.data_units_read, (rd_bytes / 512 + 999) / 1000);
  set_u128(s.data_units_written, (wr_bytes / 512 + 999) / 1000);
  set_u128(s.host_read_commands, rd_ops);
  set_u128(s.host_write_commands, wr_ops);
  set_u128(s.power_cycles, 1);
  set_u128(s.media_errors, errors);
  co_return bytes_of(s);
}

Task<AdminResult> Controller::get_log_page(const Sqe& s, uint32_t xfer_len) {
  const uint32_t cdw10 = s.cdw10, cdw11 = s.cdw11;
  const uint8_t lidv = uint8_t(cdw10 & 0xff);
  const uint8_t lsp = uint8_t((cdw10 >> 8) & 0x7f);
  const bool rae = cdw10 & (1u << 15);
  const uint64_t numd = ((uint64_t(cdw11 & 0xffff) << 16) | (cdw10 >> 16)) + 1;
  const uint64_t len = numd * 4;
  // NUMD may ask for up to 16 GiB; the command's buffer (its SGL, at most MDTS) bounds what is sent.
  if (len > xfer_len) co_return error_result(CmdStatus::Generic(sc::kDataSglLengthInvalid));
  const uint64_t lpo = uint64_t(uint32_t(s.cdw12)) | (uint64_t(uint32_t(s.cdw13)) << 32);
  if (lpo & 3) co_return error_result(CmdStatus::Generic(sc::kInvalidField));
  const bool disc = subsys_.is_discovery();
  std::vector<uint8_t> full;
  switch (lidv) {
    case lid::kError:
      full.assign(sizeof(ErrorLogEntry), 0);
      break;
    case lid::kDiscovery:
      if (!disc) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      full = discovery_log();
      if (!rae) masked_logs_.erase(lid::kDiscovery);
      break;
    case lid::kSmart:
      if (disc) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      full = co_await smart_log();
      break;
    case lid::kFirmwareSlot: {
      if (disc) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      full.assign(512, 0);
      full[0] = 1;  // slot 1 active
      set_ascii(reinterpret_cast<char*>(full.data() + 8), 8, target_.options().firmware.c_str());
      break;
    }
    case lid::kChangedNamespaces: {
      if (disc) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      full.assign(4096, 0);
      size_t i = 0;
      if (changed_ns_overflow_) {
        le32 v;
        v = 0xFFFFFFFF;
        std::memcpy(full.data(), &v, 4);
      } else {
        for (uint32_t id : changed_ns_) {
          le32 v;
          v = id;
          std::memcpy(full.data() + 4 * i++, &v, 4);
        }
      }
      if (!rae) {
        changed_ns_.clear();
        changed_ns_overflow_ = false;
        masked_logs_.erase(lid::kChangedNamespaces);
      }
      break;
    }
    case lid::kAna:
      if (disc || !subsys_.config().ana_reporting) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      full = ana_log(lsp & 1);
      if (!rae) masked_logs_.erase(lid::kAna);
      break;
    case lid::kReservationNotification: {
      if (disc) co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
      ReservationNotificationLog e{};
      if (!resv_log_.empty()) {
        e = resv_log_.front();
        resv_log_.pop_front();
        e.num_avail = uint8_t(std::min<size_t>(resv_log_.size(), 255));
      }
      full = bytes_of(e);
      if (!rae && resv_log_.empty()) masked_logs_.erase(lid::kReservationNotification);
      break;
    }
    default:
      co_return error_result(CmdStatus::Specific(sc::kInvalidLogPage));
  }
  // The ANA log's length varies with the groups and namespaces in it; hosts size their reads from
  // NANAGRPID and MNAN (nvme-cli 2.3 reads that much in 4 KiB pieces, at growing offsets). Up to that
  // maximum the page counts as zero-padded, as in Linux nvmet and SPDK; beyond it is an error.
  uint64_t page_len = full.size();
  if (lidv == lid::kAna) {
    const uint64_t n = subsys_.config().max_namespaces;
    page_len = std::max<uint64_t>(page_len, sizeof(AnaLogHeader) + n * sizeof(AnaGroupDesc) + n * 4);
  }
  if (lpo > page_len) co_return error_result(CmdStatus::Generic(sc::kInvalidField));
  if (lpo > full.size()) full.resize(size_t(lpo), 0);
  AdminResult r;
  r.data.assign(size_t(len), 0);
  size_t avail = std::min<uint64_t>(len, full.size() - lpo);
  std::memcpy(r.data.data(), full.data() + lpo, avail);
  co_return r;
}

// ---------------------------------------------------------------------------------------------------
// Features

AdminResult Controller::get_features(const Sqe& s) {
  const uint8_t f = uint8_t(uint32_t(s.cdw10) & 0xff);
  const uint8_t sel = uint8_t((uint32_t(s.cdw10) >> 8) & 7);
  const bool disc = subsys_.is_discovery();
  if (sel == 3) {
    // Capabilities: changeable, not saveable.
    switch (f) {
      case fid::kNumberOfQueues:
      case fid::kAsyncEventConfig:
      case fid::kKeepAliveTimer:
      case fid::kVolatileWriteCache:
        return ok_result(0x4);
      default:
        return ok_result(0);
    }
  }
  switch (f) {
    case fid::kKeepAliveTimer: return ok_result(kato_ms_);
    case fid::kAsyncEventConfig: return ok_result(aec_);
    default: break;
  }
  if (disc) return error_result(CmdStatus::Generic(sc::kInvalidField));
  switch (f) {
    case fid::kArbitration:
    case fid::kPowerManagement:
    case fid::kErrorRecovery:
    case fid::kInterruptCoalescing:
    case fid::kWriteAtomicity:
      return ok_result(0);
    case fid::kTemperatureThreshold: return ok_result(373);
    case fid::kVolatileWriteCache: return ok_result(write_cache_enabled() ? 1 : 0);
    case fid::kNumberOfQueues: return ok_result((io_queues_ - 1) | ((io_queues_ - 1) << 16));
    case fid::kHostIdentifier: {
      if (!(uint32_t(s.cdw11) & 1)) return error_result(CmdStatus::Generic(sc::kInvalidField));  // 64-bit ids: no
      AdminResult r;
      r.data.assign(hostid_.begin(), hostid_.end());
      return r;
    }
    case fid::kReservationNotificationMask:
    case fid::kReservationPersistence:
      return ok_result(0);
    default:
      return error_result(CmdStatus::Generic(sc::kInvalidField));
  }
}

AdminResult Controller::set_features(const Sqe& s, const std::vector<uint8_t>&) {
  const uint32_t cdw10 = s.cdw10, cdw11 = s.cdw11;
  const uint8_t f = uint8_t(cdw10 & 0xff);
  if (cdw10 & (1u << 31)) return error_result(CmdStatus::Specific(sc::kFeatureNotSaveable));
  const bool disc = subsys_.is_discovery();
  switch (f) {
    case fid::kKeepAliveTimer:
      if (cdw11 > target_.options().max_keep_alive_ms) return error_result(CmdStatus::Generic(sc::kKeepAliveInvalid));
      kato_ms_ = cdw11;
      if (kato_ms_) kato_timer_.arm(uint64_t(kato_ms_) * 1'000'000);
      else kato_timer_.cancel();
      return ok_result();
    case fid::kAsyncEventConfig:
      aec_ = cdw11;
      return ok_result();
    default:
      break;
  }
  if (disc) return error_result(CmdStatus::Generic(sc::kInvalidField));
  switch (f) {
    case fid::kNumberOfQueues: {
      if (!io_qpairs_.empty()) return error_result(CmdStatus::Generic(sc::kCommandSequenceError));
      uint32_t nsqr = cdw11 & 0xffff, ncqr = cdw11 >> 16;
      if (nsqr == 0xffff || ncqr == 0xffff) return error_result(CmdStatus::Generic(sc::kInvalidField));
      io_queues_ = std::min<uint32_t>(std::max(nsqr, ncqr) + 1, target_.options().max_io_queues);
      io_queues_set_ = true;
      return ok_result((io_queues_ - 1) | ((io_queues_ - 1) << 16));
    }
    case fid::kVolatileWriteCache:
      vwc_enabled_.store(cdw11 & 1, std::memory_order_relaxed);
      return ok_result();
    case fid::kArbitration:
    case fid::kPowerManagement:
    case fid::kTemperatureThreshold:
    case fid::kErrorRecovery:
    case fid::kInterruptCoalescing:
    case fid::kWriteAtomicity:
    case fid::kReservationNotificationMask:
      return ok_result();
    case fid::kReservationPersistence:
      if (cdw11 & 1) return error_result(CmdStatus::Generic(sc::kInvalidField));  // no persistence through power loss
      return ok_result();
    case fid::kHostIdentifier:
      return error_result(CmdStatus::Generic(sc::kCommandSequenceError));  // fixed by Connect
    default:
      return error_result(CmdStatus::Generic(sc::kInvalidField));
  }
}

AdminResult Controller::async_event_request(const Sqe& s) {
  if (!pending_events_.empty()) {
    uint32_t dw0 = pending_events_.front();
    pending_events_.pop_front();
    return ok_result(dw0);
  }
  if (aer_cids_.size() >= kAerLimit) return error_result(CmdStatus::Specific(sc::kAsyncEventLimitExceeded));
  aer_cids_.push_back(s.cid);
  AdminResult r;
  r.deferred = true;
  return r;
}

}  // namespace tern::nvmf
