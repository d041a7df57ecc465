#include "nvmf/host/host_qpair.h"

#include <cstring>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "reactor/reactor.h"
#include "reactor/timer.h"

namespace tern::nvmf {

using namespace tern::nvme;
using namespace tern::nvme::tcp;

namespace {
constexpr size_t kRecvBuffer = 64 * 1024;
const uint8_t kZeros[128] = {};
}  // namespace

std::string describe_status(CmdStatus s) {
  const char* name = "";
  if (s.sct == Sct::kGeneric) {
    switch (s.sc) {
      case sc::kSuccess: name = "success"; break;
      case sc::kInvalidOpcode: name = "invalid opcode"; break;
      case sc::kInvalidField: name = "invalid field in command"; break;
      case sc::kCidConflict: name = "command id conflict"; break;
      case sc::kInternalError: name = "internal error"; break;
      case sc::kAbortRequested: name = "command abort requested"; break;
      case sc::kInvalidNamespace: name = "invalid namespace or format"; break;
      case sc::kCommandSequenceError: name = "command sequence error"; break;
      case sc::kDataSglLengthInvalid: name = "data SGL length invalid"; break;
      case sc::kLbaOutOfRange: name = "LBA out of range"; break;
      case sc::kCapacityExceeded: name = "capacity exceeded"; break;
      case sc::kNamespaceNotReady: name = "namespace not ready"; break;
      case sc::kReservationConflict: name = "reservation conflict"; break;
      case sc::kHostIdInconsistentFormat: name = "host identifier inconsistent format"; break;
      default: break;
    }
  } else if (s.sct == Sct::kCommandSpecific) {
    switch (s.sc) {
      case sc::kConnectIncompatibleFormat: name = "connect: incompatible format"; break;
      case sc::kConnectControllerBusy: name = "connect: controller busy"; break;
      case sc::kConnectInvalidParameters: name = "connect: invalid parameters"; break;
      case sc::kConnectInvalidHost: name = "connect: host not allowed"; break;
      case sc::kInvalidLogPage: name = "invalid log page"; break;
      default: break;
    }
  } else if (s.sct == Sct::kMedia) {
    switch (s.sc) {
      case sc::kWriteFault: name = "write fault"; break;
      case sc::kUnrecoveredReadError: name = "unrecovered read error"; break;
      case sc::kCompareFailure: name = "compare failure"; break;
      default: break;
    }
  } else if (s.sct == Sct::kPath) {
    switch (s.sc) {
      case sc::kAnaInaccessible: name = "ANA inaccessible"; break;
      case sc::kAnaPersistentLoss: name = "ANA persistent loss"; break;
      case sc::kAnaTransition: name = "ANA transition"; break;
      default: break;
    }
  }
  return fmt::format("sct {} sc {:#04x}{}{}", int(s.sct), s.sc, *name ? " (" : "", *name ? std::string(name) + ")" : "");
}

Errc errc_from_status(CmdStatus s) {
  if (s.ok()) return Errc::kOk;
  if (s.sct == Sct::kGeneric) {
    switch (s.sc) {
      case sc::kLbaOutOfRange: return Errc::kRange;
      case sc::kCapacityExceeded: return Errc::kNoSpc;
      case sc::kNamespaceNotReady: return Errc::kBusy;
      case sc::kInvalidField:
      case sc::kInvalidOpcode: return Errc::kInval;
      case sc::kAbortRequested:
      case sc::kAbortSqDeleted: return Errc::kCanceled;
      case sc::kNamespaceWriteProtected: return Errc::kPerm;
      case sc::kReservationConflict: return Errc::kAccess;
      default: return Errc::kIo;
    }
  }
  if (s.sct == Sct::kMedia) return Errc::kMediaError;
  if (s.sct == Sct::kPath) return Errc::kNoDevOrAddr;  // this path cannot serve it; another may
  return Errc::kIo;
}

// ---------------------------------------------------------------------------------------------------
// Connection set-up

HostQpair::HostQpair(int fd, const HostParams& p, uint16_t qid, uint16_t qsize)
    : params_(p), qid_(qid), qsize_(qsize), reactor_(Reactor::current()) {
  net::TcpConn::Callbacks cb;
  cb.on_data = [this](const uint8_t* d, size_t n) { return on_data(d, n); };
  cb.on_error = [this](Errc e) { fail(e); };
  conn_ = std::make_unique<net::TcpConn>(fd, kRecvBuffer, std::move(cb));
  cmds_.reserve(qsize);
  for (uint16_t i = 0; i < qsize; ++i) {
    auto c = std::make_unique<HostCmd>();
    c->qp = this;
    c->cid = i;
    c->send_item.done = [](net::SendItem*, Errc) {};
    c->h2c.cmd = c.get();
    c->h2c.item.done = [](net::SendItem*, Errc) {};
    free_.push_back(c.get());
    cmds_.push_back(std::move(c));
  }
  icreq_item_.done = [](net::SendItem*, Errc) {};
}

HostQpair::~HostQpair() {
  // Commands never completed (a queue pair dropped without close()) must not leave the reactor spinning.
  if (qid_ != 0) reactor_->await_end(outstanding_);
}

Task<Result<std::unique_ptr<HostQpair>>> HostQpair::Connect(const HostParams& p, uint16_t qid, uint16_t qsize,
                                                            uint16_t cntlid) {
  auto fd = co_await net::tcp_connect(p.host, p.port, p.connect_timeout_ns);
  if (!fd.ok()) co_return fd.status();
  std::unique_ptr<HostQpair> qp(new HostQpair(*fd, p, qid, qsize));
  qp->conn_->start();

  // ICReq / ICResp.
  std::memset(qp->icreq_, 0, sizeof(qp->icreq_));
  set_header(qp->icreq_, PduType::kICReq, 0, sizeof(ICReq), 0, sizeof(ICReq));
  auto* ic = reinterpret_cast<ICReq*>(qp->icreq_);
  ic->pfv = 0;
  ic->hpda = 0;
  ic->dgst = uint8_t((p.hdgst ? 1 : 0) | (p.ddgst ? 2 : 0));
  ic->maxr2t = 0;
  qp->icreq_item_.iov[0] = {qp->icreq_, sizeof(ICReq)};
  qp->icreq_item_.iovcnt = 1;
  qp->conn_->send(&qp->icreq_item_);
  {
    struct IcAwait {
      HostQpair* qp;
      bool await_ready() const { return qp->ic_done_ || qp->failed_; }
      void await_suspend(std::coroutine_handle<> h) { qp->ic_waiter_ = h; }
      void await_resume() { qp->ic_waiter_ = {}; }
    };
    HostQpair* raw = qp.get();
    Timer t([raw] {
      raw->ic_error_ = Errc::kTimedOut;
      raw->fail(Errc::kTimedOut);
    });
    t.arm(p.connect_timeout_ns);
    co_await IcAwait{raw};
    t.cancel();
  }
  if (qp->failed_ || !qp->ic_done_) {
    Errc e = qp->ic_error_ != Errc::kOk ? qp->ic_error_ : Errc::kConnReset;
    bool closed = false;
    qp->close(e, [&closed] { closed = true; });
    while (!closed) co_await Reactor::sleep_for(100'000);
    co_return Status(e, fmt::format("{}:{}: NVMe/TCP connection initialization failed ({})", p.host, p.port,
                                    e == Errc::kTimedOut ? "no ICResp in time" : errc_describe(e)));
  }

  // Fabrics Connect.
  ConnectData data;
  std::memset(&data, 0, sizeof(data));
  std::memcpy(data.hostid, p.hostid.data(), 16);
  data.cntlid = cntlid;
  set_cstr(data.subnqn, sizeof(data.subnqn), p.subnqn.c_str());
  set_cstr(data.hostnqn, sizeof(data.hostnqn), p.hostnqn.c_str());
  ConnectCmd cc;
  std::memset(&cc, 0, sizeof(cc));
  cc.opc = opc::kFabrics;
  cc.fctype = fctype::kConnect;
  cc.recfmt = 0;
  cc.qid = qid;
  cc.sqsize = uint16_t(qsize - 1);
  cc.cattr = 0x4;  // SQ flow control disabled: we do not track SQHD
  cc.kato = qid == 0 ? p.kato_ms : 0;
  Sqe sqe;
  std::memcpy(&sqe, &cc, sizeof(sqe));
  std::vector<uint8_t> payload(sizeof(data));
  std::memcpy(payload.data(), &data, sizeof(data));
  Reply r = co_await qp->command(sqe, std::move(payload), 0, p.admin_timeout_ns);
  auto close_it = [&]() -> Task<void> {
    bool closed = false;
    qp->close(Errc::kShutdown, [&closed] { closed = true; });
    while (!closed) co_await Reactor::sleep_for(100'000);
  };
  if (r.transport != Errc::kOk) {
    co_await close_it();
    co_return Status(r.transport, fmt::format("{}:{}: Connect to '{}' failed: {}", p.host, p.port, p.subnqn,
                                              errc_describe(r.transport)));
  }
  if (!r.status().ok()) {
    CmdStatus s = r.status();
    std::string why = describe_status(s);
    Errc e = Errc::kIo;
    if (s.sct == Sct::kCommandSpecific && s.sc == sc::kConnectInvalidHost) {
      e = Errc::kAccess;
      why = fmt::format("host '{}' is not allowed on '{}'", p.hostnqn, p.subnqn);
    } else if (s.sct == Sct::kCommandSpecific && s.sc == sc::kConnectInvalidParameters) {
      e = Errc::kInval;
      uint32_t ipo = uint32_t(r.cqe.dw0) & 0xffff;
      bool in_data = (uint32_t(r.cqe.dw0) >> 16) & 1;
      if (in_data && ipo == offsetof(ConnectData, subnqn)) {
        e = Errc::kNoEnt;
        why = fmt::format("the target has no subsystem '{}' on this port", p.subnqn);
      } else {
        why += fmt::format(" (field at {} offset {})", in_data ? "data" : "command", ipo);
      }
    }
    co_await close_it();
    co_return Status(e, fmt::format("{}:{}: Connect {} queue {}: {}", p.host, p.port, qid ? "I/O" : "admin", qid, why));
  }
  qp->cntlid_ = uint16_t(uint32_t(r.cqe.dw0) & 0xffff);
  co_return qp;
}

// ---------------------------------------------------------------------------------------------------
// Commands

HostCmd* HostQpair::get() {
  if (free_.empty() || failed_) return nullptr;
  HostCmd* c = free_.back();
  free_.pop_back();
  return c;
}

void HostQpair::put(HostCmd* c) { free_.push_back(c); }

int HostQpair::slice_iov(HostCmd* c, uint32_t off, uint32_t len, iovec* out, int max) {
  int n = 0;
  uint64_t pos = 0;
  for (int i = 0; i < c->iovcnt && len > 0; ++i) {
    uint64_t l = c->iov[i].iov_len;
    if (pos + l <= off) {
      pos += l;
      continue;
    }
    uint64_t start = off > pos ? off - pos : 0;
    uint64_t take = std::min<uint64_t>(l - start, len);
    if (n == max) return -1;
    out[n++] = {static_cast<char*>(c->iov[i].iov_base) + start, size_t(take)};
    len -= uint32_t(take);
    off += uint32_t(take);
    pos += l;
  }
  return len == 0 ? n : -1;
}

void HostQpair::submit(HostCmd* c) {
  c->busy = true;
  c->received = 0;
  c->transport_error = Errc::kOk;
  std::memset(&c->cqe, 0, sizeof(c->cqe));
  ++outstanding_;
  if (qid_ != 0) reactor_->await_begin();  // the answer is due within a round trip: spin for it, not sleep
  Sqe& s = c->sqe;
  s.cid = c->cid;
  s.flags = 0x40;  // SGL
  const size_t hd = hdgst_ ? kDigestLen : 0;
  const bool icd = c->write && c->data_len > 0 && c->data_len <= max_icd_ && c->iovcnt <= 36;
  std::memset(&s.sgl1, 0, sizeof(s.sgl1));
  if (c->data_len) {
    s.sgl1.length = c->data_len;
    s.sgl1.type = icd ? kSglDataBlockOffset : kSglTransportDataBlock;
  }
  net::SendItem& it = c->send_item;
  it.iovcnt = 0;
  uint32_t pdo = 0, pad = 0, dd = 0;
  if (icd) {
    pdo = align_up(uint32_t(sizeof(CapsuleCmd) + hd), cpda_align_);
    pad = pdo - uint32_t(sizeof(CapsuleCmd) + hd);
    dd = ddgst_ ? kDigestLen : 0;
  }
  const uint32_t plen = uint32_t(sizeof(CapsuleCmd) + hd) + pad + (icd ? c->data_len : 0) + dd;
  uint8_t flags = uint8_t((hdgst_ ? kFlagHdgst : 0) | (icd && ddgst_ ? kFlagDdgst : 0));
  set_header(c->capsule, PduType::kCapsuleCmd, flags, sizeof(CapsuleCmd), uint8_t(pdo), plen);
  std::memcpy(c->capsule + sizeof(CommonHeader), &s, sizeof(Sqe));
  if (hdgst_) {
    uint32_t d = htole32(crc32c(c->capsule, sizeof(CapsuleCmd)));
    std::memcpy(c->capsule + sizeof(CapsuleCmd), &d, 4);
  }
  it.iov[it.iovcnt++] = {c->capsule, sizeof(CapsuleCmd) + hd};
  if (icd) {
    if (pad) it.iov[it.iovcnt++] = {const_cast<uint8_t*>(kZeros), pad};
    uint32_t crc = 0;
    for (int i = 0; i < c->iovcnt; ++i) {
      it.iov[it.iovcnt++] = c->iov[i];
      if (dd) crc = crc32c(c->iov[i].iov_base, c->iov[i].iov_len, crc);
    }
    if (dd) {
      uint32_t d = htole32(crc);
      std::memcpy(c->ddgst, &d, 4);
      it.iov[it.iovcnt++] = {c->ddgst, 4};
    }
  }
  conn_->send(&it);
}

namespace {
struct CmdAwaiter {
  HostCmd* c;
  std::coroutine_handle<> h;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> hh) {
    h = hh;
    c->done = [](HostCmd*, void* arg) { static_cast<CmdAwaiter*>(arg)->h.resume(); };
    c->arg = this;
    c->qp->submit(c);
  }
  void await_resume() const noexcept {}
};
}  // namespace

Task<HostQpair::Reply> HostQpair::command(Sqe sqe, std::vector<uint8_t> data_out, uint32_t data_in_len,
                                          uint64_t timeout_ns) {
  Reply rep;
  HostCmd* c = get();
  if (!c) {
    rep.transport = failed_ ? Errc::kConnReset : Errc::kBusy;
    co_return rep;
  }
  std::vector<uint8_t> in(data_in_len);
  iovec iov{};
  c->sqe = sqe;
  if (!data_out.empty()) {
    iov = {data_out.data(), data_out.size()};
    c->write = true;
    c->data_len = uint32_t(data_out.size());
  } else if (data_in_len) {
    iov = {in.data(), in.size()};
    c->write = false;
    c->data_len = data_in_len;
  } else {
    c->write = false;
    c->data_len = 0;
  }
  c->iov = &iov;
  c->iovcnt = c->data_len ? 1 : 0;
  c->deadline_ns = Reactor::current()->now() + timeout_ns;  // the reactor clock, as expired() is asked
  HostQpair* self = this;
  bool timed_out = false;
  Timer t([self, &timed_out] {
    timed_out = true;
    self->fail(Errc::kTimedOut);  // an admin command that hangs means the association is broken
  });
  t.arm(timeout_ns);
  co_await CmdAwaiter{c, {}};
  t.cancel();
  rep.transport = c->transport_error;
  rep.cqe = c->cqe;
  put(c);
  if (rep.transport == Errc::kOk && data_in_len) rep.data = std::move(in);
  co_return rep;
}

void HostQpair::complete(HostCmd* c) {
  c->busy = false;
  --outstanding_;
  if (qid_ != 0) reactor_->await_end();
  c->done(c, c->arg);
}

std::vector<HostCmd*> HostQpair::expired(uint64_t now) const {
  std::vector<HostCmd*> out;
  for (auto& c : cmds_)
    if (c->busy && c->deadline_ns && now >= c->deadline_ns) out.push_back(c.get());
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Receiving

size_t HostQpair::on_data(const uint8_t* p, size_t n) {
  if (failed_ || closing_) return n;
  if (n < sizeof(CommonHeader)) return 0;
  const auto* ch = reinterpret_cast<const CommonHeader*>(p);
  if (!ic_done_) {
    if (ch->type != PduType::kICResp || ch->hlen != sizeof(ICResp) || ch->plen != sizeof(ICResp)) {
      if (ch->type == PduType::kC2HTermReq) TLOG_WARN("nvmf", "{}:{}: target refused the connection (TermReq)", params_.host, params_.port);
      fail(Errc::kProto);
      return n;
    }
    if (n < sizeof(ICResp)) return 0;
    const auto* r = reinterpret_cast<const ICResp*>(p);
    const uint8_t want = uint8_t((params_.hdgst ? 1 : 0) | (params_.ddgst ? 2 : 0));
    if (r->pfv != 0 || r->cpda > 31 || (r->dgst & ~want) || uint32_t(r->maxh2cdata) < kMinMaxH2CData ||
        (uint32_t(r->maxh2cdata) & 3)) {
      TLOG_WARN("nvmf", "{}:{}: invalid ICResp (pfv {}, cpda {}, dgst {:#x}, maxh2cdata {})", params_.host,
                params_.port, uint16_t(r->pfv), r->cpda, r->dgst, uint32_t(r->maxh2cdata));
      fail(Errc::kProto);
      return n;
    }
    hdgst_ = r->dgst & 1;
    ddgst_ = r->dgst & 2;
    cpda_align_ = (uint32_t(r->cpda) + 1) * 4;
    maxh2cdata_ = r->maxh2cdata;
    ic_done_ = true;
    if (ic_waiter_) ic_waiter_.resume();
    return sizeof(ICResp);
  }
  const bool want_hd = hdgst_ && may_have_hdgst(ch->type);
  const size_t hdr_total = ch->hlen + (want_hd ? kDigestLen : 0);
  if (ch->type == PduType::kC2HTermReq) {
    if (n < ch->plen) return 0;
    const auto* t = reinterpret_cast<const TermReq*>(p);
    TLOG_WARN("nvmf", "{}:{}: target terminated the connection (fes {:#x}, fei {})", params_.host, params_.port,
              uint16_t(t->fes), uint32_t(t->fei));
    fail(Errc::kProto);
    return n;
  }
  if (ch->hlen != expected_hlen(ch->type) || bool(ch->flags & kFlagHdgst) != want_hd || ch->plen < hdr_total ||
      (ch->type != PduType::kCapsuleResp && ch->type != PduType::kC2HData && ch->type != PduType::kR2T)) {
    TLOG_WARN("nvmf", "{}:{}: malformed PDU from the target (type {:#x}, hlen {}, plen {})", params_.host,
              params_.port, uint8_t(ch->type), ch->hlen, uint32_t(ch->plen));
    fail(Errc::kProto);
    return n;
  }
  if (n < hdr_total) return 0;
  if (want_hd) {
    uint32_t got;
    std::memcpy(&got, p + ch->hlen, 4);
    if (le32toh(got) != crc32c(p, ch->hlen)) {
      TLOG_WARN("nvmf", "{}:{}: header digest error from the target", params_.host, params_.port);
      fail(Errc::kProto);
      return n;
    }
  }
  switch (ch->type) {
    case PduType::kCapsuleResp: {
      if (ch->plen != hdr_total) {
        fail(Errc::kProto);
        return n;
      }
      Cqe cqe;
      std::memcpy(&cqe, p + sizeof(CommonHeader), sizeof(cqe));
      handle_resp(cqe);
      return hdr_total;
    }
    case PduType::kR2T:
      handle_r2t(p);
      return hdr_total;
    default:
      return handle_c2h(p, n, hdr_total);
  }
}

void HostQpair::handle_resp(const Cqe& cqe) {
  uint16_t cid = cqe.cid;
  if (cid >= cmds_.size() || !cmds_[cid]->busy) {
    TLOG_RL_WARN("nvmf", 1000, "{}:{}: response for unknown command {}", params_.host, params_.port, cid);
    fail(Errc::kProto);
    return;
  }
  HostCmd* c = cmds_[cid].get();
  c->cqe = cqe;
  complete(c);
}

size_t HostQpair::handle_c2h(const uint8_t* p, size_t n, size_t hdr_total) {
  const auto* h = reinterpret_cast<const DataHeader*>(p);
  const uint16_t cid = h->cccid;
  const uint32_t datao = h->datao, datal = h->datal;
  const size_t dd = ddgst_ ? kDigestLen : 0;
  if (cid >= cmds_.size() || !cmds_[cid]->busy || cmds_[cid]->write) {
    fail(Errc::kProto);
    return n;
  }
  HostCmd* c = cmds_[cid].get();
  if (h->ch.pdo < hdr_total || size_t(h->ch.pdo) + datal + dd != h->ch.plen || datao != c->received ||
      uint64_t(datao) + datal > c->data_len || (ddgst_ && !(h->ch.flags & kFlagDdgst))) {
    TLOG_WARN("nvmf", "{}:{}: C2HData out of order or out of range (offset {}, length {}, expected offset {})",
              params_.host, params_.port, datao, datal, c->received);
    fail(Errc::kProto);
    return n;
  }
  if (n < h->ch.pdo) return 0;
  const bool success = (h->ch.flags & kFlagSuccess) && (h->ch.flags & kFlagLastPdu);
  int cnt = slice_iov(c, datao, datal, c->slice, 15);
  if (cnt < 0) {
    fail(Errc::kProto);
    return n;
  }
  if (dd) c->slice[cnt++] = {c->ddgst_rx, dd};
  conn_->recv_into(c->slice, cnt, datal + dd, [this, c, datao, datal, success](Errc e) {
    if (e != Errc::kOk || !c->busy) return;
    if (ddgst_) {
      uint32_t crc = 0;
      iovec sl[16];
      int k = slice_iov(c, datao, datal, sl, 16);
      for (int i = 0; i < k; ++i) crc = crc32c(sl[i].iov_base, sl[i].iov_len, crc);
      uint32_t got;
      std::memcpy(&got, c->ddgst_rx, 4);
      if (le32toh(got) != crc) {
        TLOG_WARN("nvmf", "{}:{}: data digest error on command {}", params_.host, params_.port, c->cid);
        c->transport_error = Errc::kCorruption;
      }
    }
    c->received += datal;
    if (success && c->received == c->data_len) {
      std::memset(&c->cqe, 0, sizeof(c->cqe));
      c->cqe.cid = c->cid;
      complete(c);
    }
  });
  return h->ch.pdo;
}

void HostQpair::handle_r2t(const uint8_t* p) {
  const auto* r = reinterpret_cast<const R2T*>(p);
  const uint16_t cid = r->cccid;
  if (cid >= cmds_.size() || !cmds_[cid]->busy || !cmds_[cid]->write) {
    fail(Errc::kProto);
    return;
  }
  HostCmd* c = cmds_[cid].get();
  const uint32_t off = r->r2to, len = r->r2tl;
  if (len == 0 || uint64_t(off) + len > c->data_len || len > maxh2cdata_) {
    TLOG_WARN("nvmf", "{}:{}: R2T out of range (offset {}, length {}, data {})", params_.host, params_.port, off, len,
              c->data_len);
    fail(Errc::kProto);
    return;
  }
  const size_t hd = hdgst_ ? kDigestLen : 0, dd = ddgst_ ? kDigestLen : 0;
  HostCmd::H2C& x = c->h2c;
  const uint32_t pdo = align_up(uint32_t(sizeof(DataHeader) + hd), cpda_align_);
  const uint32_t pad = pdo - uint32_t(sizeof(DataHeader) + hd);
  std::memset(x.hdr, 0, sizeof(DataHeader));
  set_header(x.hdr, PduType::kH2CData, uint8_t(kFlagLastPdu | (hdgst_ ? kFlagHdgst : 0) | (ddgst_ ? kFlagDdgst : 0)),
             sizeof(DataHeader), uint8_t(pdo), pdo + len + uint32_t(dd));
  auto* dh = reinterpret_cast<DataHeader*>(x.hdr);
  dh->cccid = cid;
  dh->ttag = r->ttag;
  dh->datao = off;
  dh->datal = len;
  if (hdgst_) {
    uint32_t d = htole32(crc32c(x.hdr, sizeof(DataHeader)));
    std::memcpy(x.hdr + sizeof(DataHeader), &d, 4);
  }
  net::SendItem& it = x.item;
  it.iovcnt = 0;
  it.iov[it.iovcnt++] = {x.hdr, sizeof(DataHeader) + hd};
  if (pad) it.iov[it.iovcnt++] = {const_cast<uint8_t*>(kZeros), pad};
  int cnt = slice_iov(c, off, len, it.iov + it.iovcnt, net::SendItem::kMaxIov - it.iovcnt - 1);
  if (cnt < 0) {
    fail(Errc::kProto);
    return;
  }
  uint32_t crc = 0;
  for (int i = 0; i < cnt; ++i) {
    if (dd) crc = crc32c(it.iov[it.iovcnt + i].iov_base, it.iov[it.iovcnt + i].iov_len, crc);
  }
  it.iovcnt += cnt;
  if (dd) {
    uint32_t d = htole32(crc);
    std::memcpy(x.ddgst, &d, 4);
    it.iov[it.iovcnt++] = {x.ddgst, 4};
  }
  conn_->send(&it);
}

// ---------------------------------------------------------------------------------------------------
// Failure and teardown

void HostQpair::fail_all(Errc e) {
  for (auto& c : cmds_) {
    if (!c->busy) continue;
    c->transport_error = e;
    complete(c.get());
  }
}

void HostQpair::fail(Errc e) {
  if (failed_) return;
  failed_ = true;
  if (ic_error_ == Errc::kOk) ic_error_ = e;
  if (ic_waiter_) {
    auto h = ic_waiter_;
    ic_waiter_ = {};
    h.resume();
  }
  fail_all(e);
  if (on_failure_) {
    auto cb = std::move(on_failure_);
    cb(e);
  }
}

void HostQpair::close(Errc why, SmallFunction<void()> done) {
  closing_ = true;
  if (!failed_) {
    failed_ = true;
    fail_all(why);
  }
  conn_->close(std::move(done));
}

}  // namespace tern::nvmf
