#include "nvmf/target/tcp_qpair.h"

#include <cstring>

#include "common/check.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "nvmf/target/target.h"
#include "reactor/reactor_set.h"

namespace tern::nvmf {

using namespace tern::nvme;
using namespace tern::nvme::tcp;

namespace {

constexpr size_t kSmallBuffer = 8192;
const uint8_t kZeros[128] = {};


// Device result to NVMe status.
CmdStatus status_from_errc(Errc e, IoType t) {
  switch (e) {
    case Errc::kOk: return CmdStatus::Ok();
    case Errc::kRange: return CmdStatus::Generic(sc::kLbaOutOfRange);
    case Errc::kNoSpc: return CmdStatus::Generic(sc::kCapacityExceeded);
    case Errc::kMediaError:
      return t == IoType::kRead ? CmdStatus::Media(sc::kUnrecoveredReadError) : CmdStatus::Media(sc::kWriteFault);
    case Errc::kNoDev:
    case Errc::kBusy: return CmdStatus::Generic(sc::kNamespaceNotReady, false);
    // The device behind this path stopped serving (a nexus shut itself down, fenced off or unable to
    // record a retire): a multipath host retries on another path.
    case Errc::kShutdown: return CmdStatus::Path(sc::kAnaInaccessible);
    case Errc::kAccess: return CmdStatus::Generic(sc::kReservationConflict);
    case Errc::kPerm: return CmdStatus::Generic(sc::kNamespaceWriteProtected);
    case Errc::kTimedOut:
    case Errc::kCanceled: return CmdStatus::Generic(sc::kAbortRequested, false);
    case Errc::kNotSup: return CmdStatus::Generic(sc::kInvalidOpcode);
    case Errc::kInval: return CmdStatus::Generic(sc::kInvalidField);
    default: return CmdStatus::Generic(sc::kInternalError, false);
  }
}

bool is_h2c_opcode(const Sqe& s) {
  if (s.opc == opc::kFabrics) return (reinterpret_cast<const FabricsCmd&>(s).fctype & 3) == 1;
  return opc_writes_data(s.opc);
}
bool is_c2h_opcode(const Sqe& s) {
  if (s.opc == opc::kFabrics) return (reinterpret_cast<const FabricsCmd&>(s).fctype & 3) == 2;
  return opc_reads_data(s.opc);
}

}  // namespace

TcpQpair::TcpQpair(Target& target, std::unique_ptr<net::Stream> stream, ListenAddr local, uint64_t id)
    : target_(target), id_(id), local_(std::move(local)), reactor_(*Reactor::current()), conn_(std::move(stream)) {
  net::Stream::Callbacks cb;
  cb.on_data = [this](const uint8_t* p, size_t n) { return on_data(p, n); };
  cb.on_error = [this](Errc e) {
    if (e != Errc::kConnReset) TLOG_DEBUG("nvmf", "qpair {}: connection error {}", id_, errc_name(e));
    close("connection closed");
  };
  conn_->set_callbacks(std::move(cb));
  const TargetOptions& o = target_.options();
  // A full queue of commands, plus as many whose completions are still being sent (their identifiers
  // are already free for the host to reuse), plus a Connect on a full queue.
  size_t n = 2 * size_t(std::max(o.max_queue_depth, o.max_admin_queue_depth)) + 1;
  reqs_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto r = std::make_unique<TcpReq>();
    r->qp = this;
    r->idx = uint16_t(i);
    for (ReqSendItem* it : {&r->c2h_item, &r->resp_item, &r->r2t_item}) {
      it->req = r.get();
      it->done = &TcpQpair::on_sent;
    }
    r->io.done = &TcpQpair::on_io_done;
    r->io.done_arg = r.get();
    free_reqs_.push_back(r.get());
    reqs_.push_back(std::move(r));
  }
  stats_.in_state[size_t(TcpReq::State::kFree)] = uint32_t(n);
  buf_waiter_.wake = [this] { on_buffers_available(); };
  term_item_.done = [](net::SendItem*, Errc) {};
  icresp_item_.done = [](net::SendItem*, Errc) {};
}

TcpQpair::~TcpQpair() {
  if (waiting_on_) waiting_on_->cancel(&buf_waiter_);
}

// ---------------------------------------------------------------------------------------------------
// Request states

bool TcpReq::legal(State from, State to) {
  using S = State;
  auto bit = [](S s) { return 1u << unsigned(s); };
  uint32_t allowed = 0;
  switch (from) {
    case S::kFree: allowed = bit(S::kNew); break;
    case S::kNew:
    case S::kNeedBuffer:
      allowed = bit(S::kNeedBuffer) | bit(S::kAwaitData) | bit(S::kExecuting) | bit(S::kAwaitAdmin) | bit(S::kSending) |
                bit(S::kFree);
      break;
    case S::kAwaitData: allowed = bit(S::kExecuting) | bit(S::kAwaitAdmin) | bit(S::kSending) | bit(S::kFree); break;
    case S::kExecuting: allowed = bit(S::kExecuting) | bit(S::kSending) | bit(S::kFree); break;
    case S::kAwaitAdmin: allowed = bit(S::kParkedAer) | bit(S::kSending) | bit(S::kFree); break;
    case S::kParkedAer: allowed = bit(S::kSending) | bit(S::kFree); break;
    case S::kSending: allowed = bit(S::kFree); break;
  }
  // A request never waits for a buffer twice in a row, and never goes back to its first step.
  if (from == S::kNeedBuffer) allowed &= ~bit(S::kNeedBuffer);
  return allowed & bit(to);
}

const char* TcpReq::state_name(State s) {
  switch (s) {
    case State::kFree: return "free";
    case State::kNew: return "new";
    case State::kNeedBuffer: return "need_buffer";
    case State::kAwaitData: return "await_data";
    case State::kExecuting: return "executing";
    case State::kAwaitAdmin: return "await_admin";
    case State::kParkedAer: return "parked_aer";
    case State::kSending: return "sending";
  }
  return "?";
}

const char* TcpReq::step_name(Step s) {
  switch (s) {
    case Step::kSingle: return "single";
    case Step::kCompareRead: return "compare_read";
    case Step::kDsmRange: return "dsm_range";
  }
  return "?";
}

void TcpQpair::set_state(TcpReq* r, TcpReq::State to) {
  TERN_CHECK(TcpReq::legal(r->state, to), "qpair {}: request {} (cid {}) may not go from {} to {}", id_, r->idx, r->cid,
             TcpReq::state_name(r->state), TcpReq::state_name(to));
  --stats_.in_state[size_t(r->state)];
  ++stats_.in_state[size_t(to)];
  ++stats_.entered[size_t(to)];
  r->state = to;
}

void TcpQpair::start() { conn_->start(); }

// ---------------------------------------------------------------------------------------------------
// Receiving PDUs

size_t TcpQpair::on_data(const uint8_t* p, size_t n) {
  if (closing_ || terminating_) return n;  // draining: nothing more is processed
  if (n < sizeof(CommonHeader)) return 0;
  const auto* ch = reinterpret_cast<const CommonHeader*>(p);
  if (!ic_done_) {
    if (ch->type != PduType::kICReq) {
      fatal(Fes::kPduSequenceError, 0, p, std::min<size_t>(n, sizeof(ICReq)));
      return n;
    }
    return handle_icreq(p, n);
  }
  switch (ch->type) {
    case PduType::kCapsuleCmd:
    case PduType::kH2CData:
    case PduType::kH2CTermReq:
      break;
    case PduType::kICReq:
      fatal(Fes::kPduSequenceError, 0, p, std::min<size_t>(n, 8));
      return n;
    default:
      fatal(Fes::kInvalidHeaderField, 0, p, std::min<size_t>(n, 8));
      return n;
  }
  if (ch->hlen != expected_hlen(ch->type)) {
    fatal(Fes::kInvalidHeaderField, 2, p, std::min<size_t>(n, 8));
    return n;
  }
  const bool want_hd = hdgst_ && may_have_hdgst(ch->type);
  if (may_have_hdgst(ch->type) && bool(ch->flags & kFlagHdgst) != want_hd) {
    fatal(Fes::kInvalidHeaderField, 1, p, std::min<size_t>(n, 8));
    return n;
  }
  const size_t hdr_total = ch->hlen + (want_hd ? kDigestLen : 0);
  const uint32_t plen = ch->plen;
  const TargetOptions& o = target_.options();
  size_t max_plen;
  switch (ch->type) {
    case PduType::kCapsuleCmd:
      max_plen = hdr_total + 128 + std::max(o.in_capsule_data_size, 8192u) + kDigestLen;
      break;
    case PduType::kH2CData:
      max_plen = hdr_total + 128 + o.max_h2c_data + kDigestLen;
      break;
    default:
      max_plen = sizeof(TermReq) + kMaxTermReqData;
      break;
  }
  if (plen < hdr_total) {
    fatal(Fes::kInvalidHeaderField, 4, p, std::min<size_t>(n, 8));
    return n;
  }
  if (plen > max_plen) {
    fatal(Fes::kDataTransferLimitExceeded, 4, p, std::min<size_t>(n, 8));
    return n;
  }
  if (n < hdr_total) return 0;
  if (want_hd) {
    uint32_t want = crc32c(p, ch->hlen);
    uint32_t got;
    std::memcpy(&got, p + ch->hlen, 4);
    if (le32toh(got) != want) {
      fatal(Fes::kHeaderDigestError, 0, p, std::min<size_t>(hdr_total, kMaxTermReqData));
      return n;
    }
  }
  switch (ch->type) {
    case PduType::kCapsuleCmd: return handle_capsule(p, n, hdr_total);
    case PduType::kH2CData: return handle_h2c_data(p, n, hdr_total);
    default: {
      if (n < plen) return 0;
      const auto* t = reinterpret_cast<const TermReq*>(p);
      TLOG_INFO("nvmf", "qpair {} ({}): host terminated the connection (fes {:#x}, fei {})", id_, peer(),
                uint16_t(t->fes), uint32_t(t->fei));
      close("host sent H2CTermReq");
      return n;
    }
  }
}

size_t TcpQpair::handle_icreq(const uint8_t* p, size_t n) {
  const auto* req = reinterpret_cast<const ICReq*>(p);
  if (req->ch.hlen != sizeof(ICReq) || req->ch.plen != sizeof(ICReq)) {
    fatal(Fes::kInvalidHeaderField, req->ch.hlen != sizeof(ICReq) ? 2 : 4, p, std::min<size_t>(n, 8));
    return n;
  }
  if (n < sizeof(ICReq)) return 0;
  if (req->pfv != 0) {
    fatal(Fes::kUnsupportedParameter, offsetof(ICReq, pfv), p, kMaxTermReqData);
    return n;
  }
  if (req->hpda > 31) {
    fatal(Fes::kInvalidHeaderField, offsetof(ICReq, hpda), p, kMaxTermReqData);
    return n;
  }
  hpda_align_ = (uint32_t(req->hpda) + 1) * 4;
  hdgst_ = req->dgst & 1;
  ddgst_ = req->dgst & 2;
  // MAXR2T bounds outstanding R2Ts per command; we send exactly one R2T per command (covering all of
  // its data, which the host splits into H2CData PDUs of at most MAXH2CDATA), so any value is met.
  auto* resp = reinterpret_cast<ICResp*>(icresp_);
  std::memset(icresp_, 0, sizeof(icresp_));
  set_header(icresp_, PduType::kICResp, 0, sizeof(ICResp), 0, sizeof(ICResp));
  resp->pfv = 0;
  resp->cpda = 0;
  resp->dgst = uint8_t((hdgst_ ? 1 : 0) | (ddgst_ ? 2 : 0));
  resp->maxh2cdata = target_.options().max_h2c_data;
  icresp_item_.iov[0] = {icresp_, sizeof(ICResp)};
  icresp_item_.iovcnt = 1;
  conn_->send(&icresp_item_);
  ic_done_ = true;
  return sizeof(ICReq);
}

size_t TcpQpair::handle_capsule(const uint8_t* p, size_t n, size_t hdr_total) {
  const auto* ch = reinterpret_cast<const CommonHeader*>(p);
  const uint32_t plen = ch->plen;
  size_t icd_off = 0, icd_len = 0;
  const bool dd = ddgst_;
  if (ch->pdo) {
    if (ch->pdo < hdr_total || ch->pdo > plen) {
      fatal(Fes::kInvalidHeaderField, 3, p, std::min<size_t>(n, hdr_total));
      return n;
    }
    if (dd && !(ch->flags & kFlagDdgst)) {
      fatal(Fes::kInvalidHeaderField, 1, p, std::min<size_t>(n, hdr_total));
      return n;
    }
    size_t tail = dd ? kDigestLen : 0;
    if (plen < size_t(ch->pdo) + tail) {
      fatal(Fes::kInvalidHeaderField, 4, p, std::min<size_t>(n, hdr_total));
      return n;
    }
    icd_off = ch->pdo;
    icd_len = plen - ch->pdo - tail;
  } else if (plen != hdr_total) {
    fatal(Fes::kInvalidHeaderField, 4, p, std::min<size_t>(n, hdr_total));
    return n;
  }
  if (n < plen) return 0;  // capsules are small: wait for all of it

  Sqe sqe;
  std::memcpy(&sqe, p + sizeof(CommonHeader), sizeof(Sqe));
  bool bad_digest = false;
  if (icd_len && dd) {
    uint32_t got;
    std::memcpy(&got, p + icd_off + icd_len, 4);
    bad_digest = le32toh(got) != crc32c(p + icd_off, icd_len);
  }
  // In-capsule data must be copied out before the receive buffer moves on; without a buffer, leave the
  // capsule where it is and come back when one is free.
  uint8_t* icd_buf = nullptr;
  net::BufferPool* icd_pool = nullptr;
  if (icd_len) {
    if (icd_len > target_.options().max_io_size) {
      fatal(Fes::kDataTransferLimitExceeded, 4, p, std::min<size_t>(n, hdr_total));
      return n;
    }
    ReactorSlice& sl = target_.slice(reactor_.id());
    icd_pool = icd_len <= kSmallBuffer ? sl.small.get() : sl.large.get();
    icd_buf = icd_pool->get();
    if (!icd_buf) {
      parse_waits_for_buffer_ = true;
      waiting_on_ = icd_pool;
      icd_pool->wait(&buf_waiter_);
      return 0;
    }
    std::memcpy(icd_buf, p + icd_off, icd_len);
  }
  TcpReq* r = alloc_req(sqe.cid);
  if (!r) {
    if (icd_buf) icd_pool->put(icd_buf);
    fatal(Fes::kPduSequenceError, 0, p, std::min<size_t>(n, hdr_total));
    return n;
  }
  r->sqe = sqe;
  r->buf = icd_buf;
  r->pool = icd_pool;
  r->icd = icd_len > 0;
  if (!sqflow_disabled_ && qsize_) sqhd_ = uint16_t((sqhd_ + 1) % qsize_);

  // Work out the data transfer from SGL1.
  const bool h2c = is_h2c_opcode(sqe), c2h = is_c2h_opcode(sqe);
  r->h2c = h2c && uint32_t(sqe.sgl1.length) > 0;
  if (r->status.ok() && (h2c || c2h) && uint32_t(sqe.sgl1.length) > 0) {
    const SglDesc& sgl = sqe.sgl1;
    r->data_len = sgl.length;
    if (sgl.type == kSglDataBlockOffset) {
      if (!h2c || sgl.addr != 0) r->status = CmdStatus::Generic(sc::kSglOffsetInvalid);
      else if (icd_len != r->data_len) r->status = CmdStatus::Generic(sc::kDataSglLengthInvalid);
    } else if (sgl.type == kSglTransportDataBlock) {
      if (icd_len) r->status = CmdStatus::Generic(sc::kSglDescriptorTypeInvalid);
    } else {
      r->status = CmdStatus::Generic(sc::kSglDescriptorTypeInvalid);
    }
    if (r->status.ok() && r->data_len > target_.options().max_io_size) r->status = CmdStatus::Generic(sc::kInvalidField);
  } else if (icd_len && r->status.ok()) {
    r->status = CmdStatus::Generic(sc::kInvalidField);  // data in the capsule of a command that takes none
  }
  if (bad_digest && r->status.ok()) r->status = CmdStatus::Generic(sc::kTransientTransportError, false);
  start_request(r);
  return plen;
}

size_t TcpQpair::handle_h2c_data(const uint8_t* p, size_t n, size_t hdr_total) {
  const auto* h = reinterpret_cast<const DataHeader*>(p);
  const uint32_t plen = h->ch.plen, datal = h->datal, datao = h->datao;
  const uint16_t ttag = h->ttag, cccid = h->cccid;
  const size_t dd = ddgst_ ? kDigestLen : 0;
  const size_t hdr_copy = std::min<size_t>(n, hdr_total);
  if (ddgst_ && !(h->ch.flags & kFlagDdgst)) {
    fatal(Fes::kInvalidHeaderField, 1, p, hdr_copy);
    return n;
  }
  if (h->ch.pdo < hdr_total || size_t(h->ch.pdo) + datal + dd != plen) {
    fatal(Fes::kInvalidHeaderField, h->ch.pdo < hdr_total ? 3 : 4, p, hdr_copy);
    return n;
  }
  if (ttag >= reqs_.size() || reqs_[ttag]->state != TcpReq::State::kAwaitData) {
    fatal(Fes::kInvalidHeaderField, offsetof(DataHeader, ttag), p, hdr_copy);
    return n;
  }
  TcpReq* r = reqs_[ttag].get();
  if (r->cid != cccid) {
    fatal(Fes::kInvalidHeaderField, offsetof(DataHeader, cccid), p, hdr_copy);
    return n;
  }
  if (datal == 0) {
    fatal(Fes::kInvalidHeaderField, offsetof(DataHeader, datal), p, hdr_copy);
    return n;
  }
  if (datal > target_.options().max_h2c_data) {
    fatal(Fes::kDataTransferLimitExceeded, offsetof(DataHeader, datal), p, hdr_copy);
    return n;
  }
  if (datao != r->h2c_received || uint64_t(datao) + datal > r->data_len) {
    fatal(Fes::kDataTransferOutOfRange, offsetof(DataHeader, datao), p, hdr_copy);
    return n;
  }
  if (n < h->ch.pdo) return 0;
  const bool last = h->ch.flags & kFlagLastPdu;
  iovec iov[2] = {{r->buf + datao, datal}, {r->ddgst_rx, dd}};
  conn_->recv_into(iov, dd ? 2 : 1, datal + dd, [this, r, datal, last](Errc e) { on_h2c_received(r, datal, last, e); });
  return h->ch.pdo;
}

void TcpQpair::on_h2c_received(TcpReq* r, uint32_t datal, bool last, Errc e) {
  if (e != Errc::kOk) return;  // the connection is failing; teardown releases the request
  const uint32_t datao = r->h2c_received;
  if (ddgst_) {
    uint32_t got;
    std::memcpy(&got, r->ddgst_rx, 4);
    if (le32toh(got) != crc32c(r->buf + datao, datal) && r->status.ok()) {
      r->status = CmdStatus::Generic(sc::kTransientTransportError, false);
    }
  }
  r->h2c_received += datal;
  if (r->h2c_received < r->data_len) {
    if (last) {
      uint8_t hdr[8] = {};
      fatal(Fes::kPduSequenceError, 0, hdr, 0);
    }
    return;
  }
  data_ready(r);
}

void TcpQpair::fatal(Fes fes, uint32_t fei, const uint8_t* hdr, size_t hdr_len) {
  if (terminating_ || closing_) return;
  terminating_ = true;
  TLOG_RL_WARN("nvmf", 1000, "qpair {} ({}): protocol error (fes {:#x}, field offset {}); terminating the connection",
               id_, peer(), uint16_t(fes), fei);
  hdr_len = std::min(hdr_len, kMaxTermReqData);
  std::memset(term_pdu_, 0, sizeof(term_pdu_));
  auto* t = reinterpret_cast<TermReq*>(term_pdu_);
  set_header(term_pdu_, PduType::kC2HTermReq, 0, sizeof(TermReq), hdr_len ? sizeof(TermReq) : 0,
             uint32_t(sizeof(TermReq) + hdr_len));
  t->fes = uint16_t(fes);
  // FEI is the offending field's offset for Invalid PDU Header Field and Unsupported Parameter, and
  // reserved (zero) for every other status (NVMe/TCP 1.0, C2HTermReq).
  t->fei = (fes == Fes::kInvalidHeaderField || fes == Fes::kUnsupportedParameter) ? fei : 0;
  if (hdr_len) std::memcpy(term_pdu_ + sizeof(TermReq), hdr, hdr_len);
  term_item_.iov[0] = {term_pdu_, sizeof(TermReq) + hdr_len};
  term_item_.iovcnt = 1;
  term_item_.next = nullptr;
  conn_->send(&term_item_);
  // Close once it is out: a TermReq ends the connection. (The item completes in send order, so closing
  // from the next loop turn is after it was handed to the kernel.)
  reactor_.set().post(reactor_.id(), [this] { close("protocol error"); });
}

// ---------------------------------------------------------------------------------------------------
// Requests

TcpReq* TcpQpair::alloc_req(uint16_t cid) {
  if (free_reqs_.empty()) return nullptr;
  // A request in use is work of the queue pair: teardown waits for it to be free again.
  TERN_CHECK(scope_.enter(), "qpair {}: a command arrived after teardown began", id_);
  TcpReq* r = free_reqs_.back();
  free_reqs_.pop_back();
  set_state(r, TcpReq::State::kNew);
  r->step = TcpReq::Step::kSingle;
  r->cid = cid;
  r->data_len = 0;
  r->h2c = false;
  r->icd = false;
  r->buf = nullptr;
  r->pool = nullptr;
  r->h2c_received = 0;
  r->status = CmdStatus::Ok();
  r->dw0 = r->dw1 = 0;
  r->ch = nullptr;
  r->range_next = 0;
  r->aux = nullptr;
  r->aux_pool = nullptr;
  r->sends = 0;
  r->next_wait = nullptr;
  r->admin_out.clear();
  if (cids_.test(cid)) {
    r->status = CmdStatus::Generic(sc::kCidConflict);
    r->cid_held = false;
  } else {
    cids_.set(cid);
    r->cid_held = true;
  }
  return r;
}

bool TcpQpair::get_buffer(TcpReq* r, uint32_t len) {
  if (r->buf) return true;
  ReactorSlice& sl = target_.slice(reactor_.id());
  net::BufferPool* pool = len <= kSmallBuffer ? sl.small.get() : sl.large.get();
  uint8_t* b = pool->get();
  if (!b) return false;
  r->buf = b;
  r->pool = pool;
  return true;
}

void TcpQpair::wait_for_buffer(TcpReq* r, uint32_t len) {
  set_state(r, TcpReq::State::kNeedBuffer);
  r->next_wait = nullptr;
  if (buf_wait_tail_) buf_wait_tail_->next_wait = r; else buf_wait_head_ = r;
  buf_wait_tail_ = r;
  ReactorSlice& sl = target_.slice(reactor_.id());
  waiting_on_ = len <= kSmallBuffer ? sl.small.get() : sl.large.get();
  waiting_on_->wait(&buf_waiter_);
}

void TcpQpair::on_buffers_available() {
  waiting_on_ = nullptr;
  if (closing_) return;
  if (parse_waits_for_buffer_) {
    parse_waits_for_buffer_ = false;
    conn_->resume();
  }
  // Retry waiting requests in order; stop at the first that still cannot get one.
  while (TcpReq* r = buf_wait_head_) {
    buf_wait_head_ = r->next_wait;
    if (!buf_wait_head_) buf_wait_tail_ = nullptr;
    r->next_wait = nullptr;
    uint32_t len = std::max<uint32_t>(r->data_len, 1);
    if (!get_buffer(r, len)) {
      // Put it back at the front and wait again.
      r->next_wait = buf_wait_head_;
      buf_wait_head_ = r;
      if (!buf_wait_tail_) buf_wait_tail_ = r;
      ReactorSlice& sl = target_.slice(reactor_.id());
      waiting_on_ = len <= kSmallBuffer ? sl.small.get() : sl.large.get();
      waiting_on_->wait(&buf_waiter_);
      return;
    }
    if (r->h2c && !r->icd) {
      send_r2t(r);
    } else {
      execute(r);
    }
  }
}

void TcpQpair::start_request(TcpReq* r) {
  ++stats_.commands;
  if (!r->status.ok()) {
    complete(r);
    return;
  }
  if (r->h2c && !r->icd && r->data_len > 0) {
    request_data(r);
    return;
  }
  execute(r);
}

void TcpQpair::request_data(TcpReq* r) {
  if (!get_buffer(r, r->data_len)) {
    wait_for_buffer(r, r->data_len);
    return;
  }
  send_r2t(r);
}

void TcpQpair::send_r2t(TcpReq* r) {
  set_state(r, TcpReq::State::kAwaitData);
  const size_t hd = hdgst_ ? kDigestLen : 0;
  std::memset(r->r2t_hdr, 0, sizeof(R2T));
  set_header(r->r2t_hdr, PduType::kR2T, hdgst_ ? kFlagHdgst : 0, sizeof(R2T), 0, uint32_t(sizeof(R2T) + hd));
  auto* t = reinterpret_cast<R2T*>(r->r2t_hdr);
  t->cccid = r->cid;
  t->ttag = r->idx;
  t->r2to = 0;
  t->r2tl = r->data_len;
  finish_header(r->r2t_hdr, sizeof(R2T));
  r->r2t_item.iov[0] = {r->r2t_hdr, sizeof(R2T) + hd};
  r->r2t_item.iovcnt = 1;
  conn_->send(&r->r2t_item);
}

void TcpQpair::data_ready(TcpReq* r) {
  if (!r->status.ok()) {
    complete(r);
    return;
  }
  execute(r);
}

void TcpQpair::execute(TcpReq* r) {
  if (r->sqe.opc == opc::kFabrics) {
    execute_fabrics(r);
    return;
  }
  if (!ctrl_) {
    r->status = CmdStatus::Generic(sc::kCommandSequenceError);
    complete(r);
    return;
  }
  if (qid_ == 0) execute_admin(r);
  else execute_io(r);
}

void TcpQpair::execute_fabrics(TcpReq* r) {
  const auto& f = reinterpret_cast<const FabricsCmd&>(r->sqe);
  switch (f.fctype) {
    case fctype::kConnect:
      execute_connect(r);
      return;
    case fctype::kPropertyGet:
    case fctype::kPropertySet:
      if (!ctrl_) {
        r->status = CmdStatus::Generic(sc::kCommandSequenceError);
        complete(r);
        return;
      }
      if (qid_ != 0) {
        r->status = CmdStatus::Specific(sc::kInvalidQueueType);
        complete(r);
        return;
      }
      execute_admin(r);
      return;
    case fctype::kDisconnect:
      // Disconnect deletes the I/O queue it arrives on; the admin queue is ended by closing the
      // connection, so there it is an Invalid Queue Type (NVMe Base 2.0, Disconnect command).
      if (!ctrl_ || qid_ == 0) {
        r->status = !ctrl_ ? CmdStatus::Generic(sc::kCommandSequenceError) : CmdStatus::Specific(sc::kInvalidQueueType);
        complete(r);
        return;
      }
      // Answer, then close once the answer is out.
      complete(r);
      reactor_.set().post(reactor_.id(), [this] { close("host disconnected the queue"); });
      return;
    default:
      r->status = CmdStatus::Generic(sc::kInvalidOpcode);
      complete(r);
      return;
  }
}

template <auto Work, auto Done>
void TcpQpair::on_primary(TcpReq* r) {
  set_state(r, TcpReq::State::kAwaitAdmin);
  const bool started = scope_.spawn([](TcpQpair* self, TcpReq* req) -> Task<void> {
    auto res = co_await self->target_.reactors().submit_to(0, [self, req] { return Work(self, req); });
    Done(self, req, std::move(res));
  }(this, r));
  if (!started) {
    // Teardown has begun (the request counts in the scope, so this cannot happen while the scope
    // waits for it; kept so that a future caller cannot strand a request).
    r->status = CmdStatus::Generic(sc::kAbortSqDeleted, false);
    complete(r);
  }
}

void TcpQpair::execute_connect(TcpReq* r) {
  if (ctrl_ || connecting_) {
    r->status = CmdStatus::Generic(sc::kCommandSequenceError);
    complete(r);
    return;
  }
  if (r->data_len < sizeof(ConnectData) || !r->buf) {
    r->status = CmdStatus::Generic(sc::kDataSglLengthInvalid);
    complete(r);
    return;
  }
  connecting_ = true;
  on_primary<&TcpQpair::connect_work, &TcpQpair::connect_done>(r);
}

// Primary reactor.
ConnectResult TcpQpair::connect_work(TcpQpair* self, TcpReq* r) {
  ConnectCmd cmd;
  std::memcpy(&cmd, &r->sqe, sizeof(cmd));
  ConnectData data;
  std::memcpy(&data, r->buf, sizeof(data));
  QpairRef ref{self, self->reactor_.id(), uint16_t(cmd.qid)};
  return self->target_.connect(cmd, data, self->local_, ref);
}

void TcpQpair::connect_done(TcpQpair* self, TcpReq* r, ConnectResult res) {
  self->connecting_ = false;
  r->status = res.status;
  r->dw0 = res.dw0;
  if (res.status.ok()) {
    ConnectCmd cmd;
    std::memcpy(&cmd, &r->sqe, sizeof(cmd));
    ConnectData data;
    std::memcpy(&data, r->buf, sizeof(data));
    // Set even when the queue pair is closing meanwhile: the controller counts it, and teardown must
    // detach from it.
    self->ctrl_ = res.ctrl;
    if (cmd.qid != 0) self->io_ctr_ = &res.ctrl->io_counters(self->reactor_.id());
    self->subsys_ = res.subsys;
    self->qid_ = cmd.qid;
    self->qsize_ = uint16_t(uint32_t(cmd.sqsize) + 1);
    self->sqflow_disabled_ = cmd.cattr & 0x4;
    self->cntlid_ = res.cntlid;
    std::memcpy(self->hostid_.data(), data.hostid, 16);
    TLOG_INFO("nvmf", "qpair {} ({}): {} queue {} connected to '{}' (controller {}, host {})", self->id_,
              self->peer(), self->qid_ == 0 ? "admin" : "I/O", self->qid_, self->subsys_->nqn(), res.cntlid,
              get_field(data.hostnqn, sizeof(data.hostnqn)));
  }
  self->complete(r);
}

void TcpQpair::execute_admin(TcpReq* r) { on_primary<&TcpQpair::admin_work, &TcpQpair::admin_done>(r); }

// Primary reactor.
Task<AdminResult> TcpQpair::admin_work(TcpQpair* self, TcpReq* r) {
  AdminCommand cmd;
  cmd.sqe = r->sqe;
  cmd.xfer_len = r->data_len;
  if (r->h2c && r->buf && r->data_len) cmd.data.assign(r->buf, r->buf + r->data_len);
  return self->ctrl_->execute(std::move(cmd));
}

void TcpQpair::admin_done(TcpQpair* self, TcpReq* r, AdminResult res) {
  if (res.deferred) {
    // An AER: the controller completes it later through complete_admin (or teardown releases it).
    self->set_state(r, TcpReq::State::kParkedAer);
    if (self->closing_) self->request_done(r);
    return;
  }
  r->status = res.status;
  r->dw0 = res.dw0;
  r->dw1 = res.dw1;
  r->admin_out = std::move(res.data);
  self->complete(r);
}

// Primary reactor.
AdminResult TcpQpair::reservation_work(TcpQpair* self, TcpReq* r) {
  std::vector<uint8_t> data;
  if (r->h2c && r->buf && r->data_len) data.assign(r->buf, r->buf + r->data_len);
  return self->target_.reservation_command(self->subsys_, self->ctrl_, r->sqe, std::move(data), r->data_len);
}

void TcpQpair::complete_admin(uint16_t cid, AdminResult res) {
  for (auto& up : reqs_) {
    TcpReq* r = up.get();
    if (r->state == TcpReq::State::kParkedAer && r->cid == cid) {
      r->status = res.status;
      r->dw0 = res.dw0;
      r->dw1 = res.dw1;
      if (closing_) {
        request_done(r);
        return;
      }
      complete(r);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// I/O commands

bool TcpQpair::refresh_view() {
  uint64_t v = subsys_->view_version();
  if (v != view_version_ || !view_) {
    view_ = subsys_->view();
    view_version_ = view_->version;
  }
  return true;
}

NsChannel* TcpQpair::channel_for(const NamespaceView& ns) {
  for (auto& c : channels_) {
    if (c->nsid == ns.nsid && !c->dropped) return c.get();
  }
  auto ch = ChannelRef::Get(*ns.desc);
  if (!ch.ok()) return nullptr;
  auto c = std::make_unique<NsChannel>();
  c->qp = this;
  c->nsid = ns.nsid;
  c->ch = std::move(*ch);
  channels_.push_back(std::move(c));
  return channels_.back().get();
}

void TcpQpair::release_channel(NsChannel* c) {
  for (size_t i = 0; i < channels_.size(); ++i) {
    if (channels_[i].get() == c) {
      channels_.erase(channels_.begin() + long(i));
      return;
    }
  }
}

void TcpQpair::abort_device_io() {
  for (auto& up : channels_) {
    NsChannel* c = up.get();
    if (c->inflight == 0 || c->resetting) continue;
    // The requests in flight on it keep the queue pair's scope open, even while it closes: the reset
    // joins them, and teardown waits for it too.
    if (!scope_.extend()) continue;
    c->resetting = true;
    ++c->inflight;
    c->reset_io.type = IoType::kReset;
    c->reset_io.offset_blocks = c->reset_io.num_blocks = 0;
    c->reset_io.iovs = nullptr;
    c->reset_io.iovcnt = 0;
    c->reset_io.status = Errc::kOk;
    c->reset_io.done = &TcpQpair::on_reset_done;
    c->reset_io.done_arg = c;
    c->ch.submit(&c->reset_io);
  }
}

void TcpQpair::on_reset_done(BdevIo* io, void* arg) {
  auto* c = static_cast<NsChannel*>(arg);
  TcpQpair* self = c->qp;
  if (io->status != Errc::kOk) {
    TLOG_WARN("nvmf", "qpair {}: reset of namespace {}'s device failed: {}", self->id_, c->nsid, errc_name(io->status));
  }
  c->resetting = false;
  --c->inflight;
  if (c->dropped && c->inflight == 0) self->release_channel(c);
  self->scope_.leave();
}

void TcpQpair::drop_namespace(Subsystem* s, uint32_t nsid) {
  if (s != subsys_) return;
  for (size_t i = 0; i < channels_.size(); ++i) {
    NsChannel* c = channels_[i].get();
    if (c->nsid != nsid || c->dropped) continue;
    // Requests still on the device complete on this channel (and their requests still read it):
    // then the last of them releases it (finish_io).
    if (c->inflight) c->dropped = true;
    else channels_.erase(channels_.begin() + long(i));
    return;
  }
}

// Completes a request that used a namespace channel; releases the channel if its namespace went while
// the request was on the device and it was the last one there (before complete(), which may tear the
// queue pair down).
void TcpQpair::finish_io(TcpReq* r) {
  NsChannel* c = r->ch;
  r->ch = nullptr;
  if (c && c->dropped && c->inflight == 0) release_channel(c);
  complete(r);
}

CmdStatus TcpQpair::check_access(const NamespaceView& ns, uint8_t o) const {
  switch (view_->ana_state(local_, ns.anagrpid)) {
    case AnaState::kOptimized:
    case AnaState::kNonOptimized: break;
    case AnaState::kInaccessible: return CmdStatus::Path(sc::kAnaInaccessible);
    case AnaState::kPersistentLoss: return CmdStatus::Path(sc::kAnaPersistentLoss);
    case AnaState::kChange: return CmdStatus::Path(sc::kAnaTransition);
  }
  const Reservation& rv = ns.resv;
  if (!rv.held()) return CmdStatus::Ok();
  if (o == opc::kReservationRegister || o == opc::kReservationAcquire || o == opc::kReservationRelease ||
      o == opc::kReservationReport) {
    return CmdStatus::Ok();
  }
  const bool is_read = o == opc::kRead || o == opc::kCompare;
  const bool is_write = !is_read && o != opc::kFlush;  // writes, write zeroes, dataset management
  const bool allowed = reservation_allows(rv, hostid_, is_read, is_write);
  return allowed ? CmdStatus::Ok() : CmdStatus::Generic(sc::kReservationConflict);
}

void TcpQpair::execute_io(TcpReq* r) {
  refresh_view();
  if (io_ctr_) ControllerIoCounters::add(io_ctr_->commands, 1);
  const Sqe& s = r->sqe;
  const uint32_t nsid = s.nsid;
  const NamespaceView* ns = view_->find(nsid);
  if (!ns) {
    r->status = CmdStatus::Generic(sc::kInvalidNamespace);
    complete(r);
    return;
  }
  r->status = check_access(*ns, s.opc);
  if (!r->status.ok()) {
    complete(r);
    return;
  }
  const uint8_t o = s.opc;
  if (o == opc::kReservationRegister || o == opc::kReservationAcquire || o == opc::kReservationRelease ||
      o == opc::kReservationReport) {
    on_primary<&TcpQpair::reservation_work, &TcpQpair::admin_done>(r);
    return;
  }
  r->ch = channel_for(*ns);
  if (!r->ch) {
    r->status = CmdStatus::Generic(sc::kNamespaceNotReady, false);
    complete(r);
    return;
  }
  r->block_size = ns->block_size;
  r->nsid = nsid;
  const uint64_t slba = uint64_t(uint32_t(s.cdw10)) | (uint64_t(uint32_t(s.cdw11)) << 32);
  const uint64_t nlb = (uint32_t(s.cdw12) & 0xffff) + 1;
  auto in_range = [&](uint64_t lba, uint64_t n) { return lba < ns->num_blocks && n <= ns->num_blocks - lba; };
  switch (o) {
    case opc::kRead:
    case opc::kWrite:
    case opc::kCompare: {
      if (nlb * ns->block_size != r->data_len) {
        r->status = CmdStatus::Generic(sc::kDataSglLengthInvalid);
        break;
      }
      if (!in_range(slba, nlb)) {
        r->status = CmdStatus::Generic(sc::kLbaOutOfRange);
        break;
      }
      if (o == opc::kRead) {
        if (!get_buffer(r, r->data_len)) {
          wait_for_buffer(r, r->data_len);
          return;
        }
        submit_io(r, IoType::kRead, slba, nlb);
        return;
      }
      if (o == opc::kCompare) {
        ReactorSlice& sl = target_.slice(reactor_.id());
        r->aux_pool = r->data_len <= kSmallBuffer ? sl.small.get() : sl.large.get();
        r->aux = r->aux_pool->get();
        if (!r->aux) {
          r->aux_pool = nullptr;
          r->status = CmdStatus::Generic(sc::kInternalError, false);  // retryable: the pool is exhausted
          break;
        }
        r->step = TcpReq::Step::kCompareRead;
        submit_io(r, IoType::kRead, slba, nlb);
        return;
      }
      submit_io(r, IoType::kWrite, slba, nlb);
      return;
    }
    case opc::kFlush:
      submit_io(r, IoType::kFlush, 0, 0);
      return;
    case opc::kWriteZeroes:
      if (!in_range(slba, nlb)) {
        r->status = CmdStatus::Generic(sc::kLbaOutOfRange);
        break;
      }
      submit_io(r, IoType::kWriteZeroes, slba, nlb);
      return;
    case opc::kDatasetManagement: {
      const uint32_t nr = (uint32_t(s.cdw10) & 0xff) + 1;
      if (r->data_len < nr * sizeof(DsmRange) || !r->buf) {
        r->status = CmdStatus::Generic(sc::kDataSglLengthInvalid);
        break;
      }
      if (!(uint32_t(s.cdw11) & 0x4)) break;  // only deallocate does anything
      r->step = TcpReq::Step::kDsmRange;
      r->range_next = 0;
      io_step(r);
      return;
    }
    default:
      r->status = CmdStatus::Generic(sc::kInvalidOpcode);
      break;
  }
  complete(r);
}

void TcpQpair::submit_io(TcpReq* r, IoType t, uint64_t lba, uint64_t nblocks) {
  set_state(r, TcpReq::State::kExecuting);
  BdevIo& io = r->io;
  io.type = t;
  io.offset_blocks = lba;
  io.num_blocks = nblocks;
  io.fua = false;
  if (t == IoType::kRead || t == IoType::kWrite) {
    // Compare reads into the side buffer and compares with the host's data afterwards.
    io.set_buffer(r->step == TcpReq::Step::kCompareRead ? r->aux : r->buf, size_t(nblocks) * r->block_size);
  }
  if (t == IoType::kWrite || t == IoType::kWriteZeroes) {
    // FUA, or the host turned the volatile write cache off: durable before we answer — this request's
    // blocks only, not a flush of the whole device.
    io.fua = (uint32_t(r->sqe.cdw12) & (1u << 30)) || !ctrl_->write_cache_enabled();
  }
  ++r->ch->inflight;
  r->ch->ch.submit(&io);
}

void TcpQpair::on_io_done(BdevIo* io, void* arg) {
  auto* r = static_cast<TcpReq*>(arg);
  TcpQpair* self = r->qp;
  --r->ch->inflight;
  if (io->status != Errc::kOk) {
    r->status = status_from_errc(io->status, io->type);
    self->finish_io(r);
    return;
  }
  self->io_step(r);
}

// The next step of a multi-step command, or its completion (TcpReq::Step).
void TcpQpair::io_step(TcpReq* r) {
  const Sqe& s = r->sqe;
  // A namespace removed while the command was on the device takes no further steps.
  const bool gone = r->ch->dropped;
  switch (r->step) {
    case TcpReq::Step::kSingle:
      if (s.opc == opc::kRead) {
        stats_.bytes_read += r->data_len;
        if (io_ctr_) ControllerIoCounters::add(io_ctr_->read_bytes, r->data_len);
      } else if (s.opc == opc::kWrite) {
        stats_.bytes_written += r->data_len;
        if (io_ctr_) ControllerIoCounters::add(io_ctr_->write_bytes, r->data_len);
      }
      break;
    case TcpReq::Step::kCompareRead:
      if (std::memcmp(r->aux, r->buf, r->data_len) != 0) r->status = CmdStatus::Media(sc::kCompareFailure);
      break;
    case TcpReq::Step::kDsmRange: {
      const uint32_t nr = (uint32_t(s.cdw10) & 0xff) + 1;
      const auto* ranges = reinterpret_cast<const DsmRange*>(r->buf);
      while (r->range_next < nr) {
        const DsmRange& rg = ranges[r->range_next++];
        uint64_t slba = rg.slba, n = uint32_t(rg.nlb);
        if (n == 0) continue;
        if (gone) {
          r->status = CmdStatus::Generic(sc::kInvalidNamespace);
          break;
        }
        if (slba >= r->ch->ch.props().num_blocks || n > r->ch->ch.props().num_blocks - slba) {
          r->status = CmdStatus::Generic(sc::kLbaOutOfRange);
          break;
        }
        submit_io(r, IoType::kUnmap, slba, n);
        return;
      }
      break;
    }
  }
  finish_io(r);
}

// ---------------------------------------------------------------------------------------------------
// Sending

void TcpQpair::finish_header(uint8_t* hdr, size_t hlen) {
  if (!hdgst_) return;
  uint32_t d = htole32(crc32c(hdr, hlen));
  std::memcpy(hdr + hlen, &d, 4);
}

void TcpQpair::complete(TcpReq* r) {
  if (closing_ && conn_closed_) {
    request_done(r);
    return;
  }
  set_state(r, TcpReq::State::kSending);
  // Held at one while the PDUs are queued: a connection that is closing completes a send inside send(),
  // and the request must not be released before its last PDU is even queued.
  r->sends = 1;
  // The host may reuse the command identifier as soon as it holds the completion (the response
  // capsule, or C2HData with SUCCESS), and its next command can reach us before our own send
  // completion does: the identifier is free from here on; the request's slot stays busy until its
  // PDUs are sent.
  release_cid(r);
  const bool ok = r->status.ok();
  if (ok && is_c2h_opcode(r->sqe) && r->sqe.opc == opc::kRead && r->buf) {
    // The SUCCESS flag replaces the response capsule; it may only be used when the host disabled SQ
    // flow control (otherwise every completion must carry the SQ head).
    const bool success = target_.options().c2h_success && sqflow_disabled_;
    send_c2h(r, r->buf, r->data_len, success);
    if (!success) send_response(r);
  } else {
    if (ok && !r->admin_out.empty()) {
      uint32_t len = std::min<uint32_t>(uint32_t(r->admin_out.size()), r->data_len);
      if (len) send_c2h(r, r->admin_out.data(), len, false);
    }
    send_response(r);
  }
  if (--r->sends == 0) request_done(r);  // every PDU already went (or failed) inside send()
}

void TcpQpair::send_c2h(TcpReq* r, const uint8_t* data, uint32_t len, bool success_flag) {
  const size_t hd = hdgst_ ? kDigestLen : 0, dd = ddgst_ ? kDigestLen : 0;
  const uint32_t pdo = align_up(uint32_t(sizeof(DataHeader) + hd), hpda_align_);
  const uint32_t pad = pdo - uint32_t(sizeof(DataHeader) + hd);
  uint8_t flags = kFlagLastPdu | (success_flag ? kFlagSuccess : 0) | (hdgst_ ? kFlagHdgst : 0) | (ddgst_ ? kFlagDdgst : 0);
  std::memset(r->c2h_hdr, 0, sizeof(DataHeader));
  set_header(r->c2h_hdr, PduType::kC2HData, flags, sizeof(DataHeader), uint8_t(pdo), uint32_t(pdo + len + dd));
  auto* h = reinterpret_cast<DataHeader*>(r->c2h_hdr);
  h->cccid = r->cid;
  h->datao = 0;
  h->datal = len;
  finish_header(r->c2h_hdr, sizeof(DataHeader));
  net::SendItem& it = r->c2h_item;
  it.iovcnt = 0;
  it.iov[it.iovcnt++] = {r->c2h_hdr, sizeof(DataHeader) + hd};
  if (pad) it.iov[it.iovcnt++] = {const_cast<uint8_t*>(kZeros), pad};
  it.iov[it.iovcnt++] = {const_cast<uint8_t*>(data), len};
  if (dd) {
    uint32_t d = htole32(crc32c(data, len));
    std::memcpy(r->ddgst_tx, &d, 4);
    it.iov[it.iovcnt++] = {r->ddgst_tx, dd};
  }
  ++r->sends;
  conn_->send(&r->c2h_item);
}

void TcpQpair::send_response(TcpReq* r) {
  const size_t hd = hdgst_ ? kDigestLen : 0;
  std::memset(r->resp_hdr, 0, sizeof(CapsuleResp));
  set_header(r->resp_hdr, PduType::kCapsuleResp, hdgst_ ? kFlagHdgst : 0, sizeof(CapsuleResp), 0,
             uint32_t(sizeof(CapsuleResp) + hd));
  auto* c = reinterpret_cast<CapsuleResp*>(r->resp_hdr);
  c->cqe.dw0 = r->dw0;
  c->cqe.dw1 = r->dw1;
  c->cqe.sqhd = sqflow_disabled_ ? uint16_t(0xFFFF) : sqhd_;
  c->cqe.sqid = qid_;
  c->cqe.cid = r->cid;
  c->cqe.status = r->status.encode();
  finish_header(r->resp_hdr, sizeof(CapsuleResp));
  r->resp_item.iov[0] = {r->resp_hdr, sizeof(CapsuleResp) + hd};
  r->resp_item.iovcnt = 1;
  ++r->sends;
  conn_->send(&r->resp_item);
}

void TcpQpair::on_sent(net::SendItem* item, Errc) {
  TcpReq* r = static_cast<ReqSendItem*>(item)->req;
  if (item == &r->r2t_item) return;  // the request now waits for H2CData
  if (--r->sends == 0) r->qp->request_done(r);
}

void TcpQpair::release_cid(TcpReq* r) {
  if (r->cid_held) {
    cids_.reset(r->cid);
    r->cid_held = false;
  }
}

void TcpQpair::request_done(TcpReq* r) {
  if (r->buf) {
    r->pool->put(r->buf);
    r->buf = nullptr;
  }
  if (r->aux) {
    r->aux_pool->put(r->aux);
    r->aux = nullptr;
  }
  release_cid(r);
  set_state(r, TcpReq::State::kFree);
  r->admin_out.clear();
  free_reqs_.push_back(r);
  scope_.leave();
}

// ---------------------------------------------------------------------------------------------------
// Teardown

void TcpQpair::close(const char* why) {
  if (closing_) return;
  closing_ = true;
  TLOG_DEBUG("nvmf", "qpair {} ({}): closing: {}", id_, peer(), why);
  if (waiting_on_) {
    waiting_on_->cancel(&buf_waiter_);
    waiting_on_ = nullptr;
  }
  // Requests that wait for something that will not come now are released: a buffer, host data, or an
  // event the controller will never report to a closed queue.
  while (TcpReq* r = buf_wait_head_) {
    buf_wait_head_ = r->next_wait;
    request_done(r);
  }
  buf_wait_tail_ = nullptr;
  for (auto& up : reqs_) {
    if (up->state == TcpReq::State::kAwaitData || up->state == TcpReq::State::kParkedAer) request_done(up.get());
  }
  // Once the stream is closed (every send it held completed), the rest of the teardown waits for the
  // requests still on a device or on the primary reactor.
  conn_->close([this] {
    conn_closed_ = true;
    target_.teardowns(reactor_.id()).spawn(finish_close(this));
  });
}

Task<void> TcpQpair::finish_close(TcpQpair* self) {
  co_await self->scope_.close();
  self->channels_.clear();
  if (Controller* c = self->ctrl_) {
    // The controller forgets us on the primary and answers with controller_detached().
    self->target_.reactors().post(0, [c, self] { c->detach(self); });
    co_return;
  }
  self->controller_detached();
}

void TcpQpair::controller_detached() {
  ReactorSlice& sl = target_.slice(reactor_.id());
  auto& v = sl.qpairs;
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
  TcpQpair* self = this;
  // Deleted from the loop, outside any of our own call frames.
  target_.reactors().post(reactor_.id(), [self] { delete self; });
}

}  // namespace tern::nvmf
