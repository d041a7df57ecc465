#include "nbd/connection.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/log.h"
#include "nbd/export.h"
#include "reactor/reactor_set.h"

namespace tern::nbd {

using namespace proto;

namespace {

// Large enough for the longest option (kMaxOptionLen) and many pipelined request headers; WRITE
// payloads bigger than what is already buffered are received straight into the request's buffers.
constexpr size_t kRecvBufferSize = 128 * 1024;
static_assert(kRecvBufferSize > kOptionHeaderLen + kMaxOptionLen);
// recv_into takes at most this many iovec entries per call.
constexpr int kRecvIovMax = 16;

}  // namespace

ExportCounters ConnCounters::snapshot() const {
  auto v = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  ExportCounters c;
  c.reads = v(reads);
  c.writes = v(writes);
  c.flushes = v(flushes);
  c.trims = v(trims);
  c.write_zeroes = v(write_zeroes);
  c.read_bytes = v(read_bytes);
  c.write_bytes = v(write_bytes);
  c.errors = v(errors);
  return c;
}

Connection::Connection(Server& server, int fd, uint64_t id, std::string peer)
    : server_(server),
      reactor_(*Reactor::current()),
      id_(id),
      peer_(std::move(peer)),
      buffers_(*server.slice(reactor_.id()).buffers) {
  net::TcpConn::Callbacks cb;
  cb.on_data = [this](const uint8_t* p, size_t n) { return on_data(p, n); };
  cb.on_error = [this](Errc e) {
    if (e != Errc::kConnReset) TLOG_DEBUG("nbd", "connection {} ({}): socket error {}", id_, peer_, errc_name(e));
    close_now("the client closed the connection");
  };
  conn_ = std::make_unique<net::TcpConn>(fd, kRecvBufferSize, std::move(cb));
  // A client may pipeline more requests than we take at once: pause reading rather than fail.
  conn_->set_backpressure(true);
  const uint32_t n = server.options().max_inflight;
  reqs_.reserve(n);
  free_.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    auto r = std::make_unique<Req>();
    r->conn = this;
    r->item.req = r.get();
    r->item.done = &Connection::on_reply_sent;
    r->io.done = &Connection::on_io_done;
    r->io.done_arg = r.get();
    free_.push_back(r.get());
    reqs_.push_back(std::move(r));
  }
  buf_waiter_.wake = [this] { on_buffers(); };
  greeting_item_.done = [](net::SendItem*, Errc) {};
  hs_item_.conn = this;
  hs_item_.done = &Connection::on_handshake_sent;
  drain_timer_.set_callback([this] { close_now("in-flight requests did not finish within the drain timeout"); });
  handshake_timer_.set_callback([this] {
    TLOG_INFO("nbd", "connection {} ({}): no export chosen within {} ms; closing", id_, peer_,
              server_.options().handshake_timeout_ms);
    close_now("handshake timeout");
  });
  reset_io_.done = &Connection::on_reset_done;
  reset_io_.done_arg = this;
}

Connection::~Connection() { buffers_.cancel(&buf_waiter_); }

void Connection::start() {
  build_greeting(greeting_);
  greeting_item_.iov[0] = {greeting_, sizeof(greeting_)};
  greeting_item_.iovcnt = 1;
  conn_->send(&greeting_item_);
  conn_->start();
  if (server_.options().handshake_timeout_ms) handshake_timer_.arm(server_.options().handshake_timeout_ms * 1'000'000ull);
}

// ---------------------------------------------------------------------------------------------------
// Receiving

size_t Connection::on_data(const uint8_t* p, size_t n) {
  if (closing_) return n;
  if (discard_left_) {
    // The payload of a WRITE that was refused: read and dropped.
    const size_t k = std::min<size_t>(n, discard_left_);
    discard_left_ -= uint32_t(k);
    return k;
  }
  switch (phase_) {
    case Phase::kFlags: return on_client_flags(p, n);
    case Phase::kOptions: return on_option(p, n);
    case Phase::kTransmission: return on_request(p, n);
    case Phase::kDraining: return n;  // nothing new is taken once the connection drains
  }
  return n;
}

size_t Connection::on_client_flags(const uint8_t* p, size_t n) {
  if (n < 4) return 0;
  auto f = parse_client_flags(load_be32(p));
  if (!f.ok()) {
    TLOG_INFO("nbd", "connection {} ({}): {}; closing", id_, peer_, f.status().message());
    close_now("unusable client flags");
    return n;
  }
  client_flags_ = *f;
  phase_ = Phase::kOptions;
  return 4;
}

size_t Connection::on_option(const uint8_t* p, size_t n) {
  // One option at a time: the client must wait for our final reply before sending the next one.
  if (hs_busy_) return 0;
  const OptionHeader h = parse_option_header(p, n);
  switch (h.kind) {
    case OptionHeader::Kind::kNeedMore: return 0;
    case OptionHeader::Kind::kBadMagic:
      TLOG_RL_WARN("nbd", 1000, "connection {} ({}): option without the IHAVEOPT magic; closing", id_, peer_);
      close_now("bad option magic");
      return n;
    case OptionHeader::Kind::kTooLong:
      TLOG_RL_WARN("nbd", 1000, "connection {} ({}): option {} carries {} bytes (at most {} accepted); closing", id_,
                   peer_, h.option, h.length, kMaxOptionLen);
      close_now("option too long");
      return n;
    case OptionHeader::Kind::kOk: break;
  }
  const size_t total = kOptionHeaderLen + h.length;
  if (n < total) return 0;
  const uint8_t* data = p + kOptionHeaderLen;
  TLOG_DEBUG("nbd", "connection {} ({}): option {} ({} bytes)", id_, peer_, option_name(h.option), h.length);
  OptionPlan plan = plan_option(h.option, data, h.length);
  if (plan.need == OptionPlan::Need::kNothing) {
    hs_out_.clear();
    const OptionOutcome o = answer_option(h.option, data, h.length, client_flags_, OptionLookup{}, hs_out_);
    finish_option(o);
    return total;
  }
  // The export table lives on the primary reactor: ask there, answer when back.
  hs_busy_ = true;
  scope_.spawn(run_option(this, h.option, std::vector<uint8_t>(data, data + h.length), std::move(plan)));
  return total;
}

Task<void> Connection::run_option(Connection* self, uint32_t opt, std::vector<uint8_t> data, OptionPlan plan) {
  Server* srv = &self->server_;
  Server::Lookup res = co_await srv->reactors().submit_to(0, [srv, pp = &plan, opt, self]() {
    return srv->lookup(*pp, opt, self);
  });
  // Attached on the primary: from now on the connection must detach there before it goes (teardown
  // awaits this task, then detaches).
  if (res.attached) self->export_ = res.attached;
  if (self->closing_) co_return;
  if (res.attached) {
    auto ch = ChannelRef::Get(*res.desc);
    if (!ch.ok()) {
      TLOG_WARN("nbd", "connection {} ({}): export '{}': {}; closing", self->id_, self->peer_, plan.name,
                ch.status().ToString());
      self->close_now("no channel to the device");
      co_return;
    }
    self->ch_ = std::move(*ch);
    self->geo_ = res.geometry;
    self->write_cache_ = res.write_cache;
    self->can_flush_ = res.can_flush;
    self->can_unmap_ = res.can_unmap;
    self->can_write_zeroes_ = res.can_write_zeroes;
  }
  self->hs_out_.clear();
  const OptionOutcome o = answer_option(opt, data.data(), data.size(), self->client_flags_, res.answer, self->hs_out_);
  if (o.next == OptionOutcome::Next::kTransmission) {
    TLOG_INFO("nbd", "connection {} ({}): serving export '{}' ({} bytes{})", self->id_, self->peer_, plan.name,
              self->geo_.size, self->geo_.read_only ? ", read-only" : "");
  }
  self->finish_option(o);
}

void Connection::finish_option(const OptionOutcome& o) {
  switch (o.next) {
    case OptionOutcome::Next::kOptions:
      send_handshake();
      return;
    case OptionOutcome::Next::kTransmission:
      phase_ = Phase::kTransmission;
      handshake_timer_.cancel();
      send_handshake();
      // Requests may follow the reply at once; their replies queue behind it on the socket.
      hs_busy_ = false;
      conn_->resume();
      return;
    case OptionOutcome::Next::kCloseAfterReply:
      close_after_reply_ = true;
      send_handshake();
      return;
    case OptionOutcome::Next::kClose:
      TLOG_INFO("nbd", "connection {} ({}): {}; closing", id_, peer_, o.log);
      close_now(o.log);
      return;
  }
}

void Connection::send_handshake() {
  hs_busy_ = true;
  hs_item_.iov[0] = {hs_out_.data(), hs_out_.size()};
  hs_item_.iovcnt = 1;
  conn_->send(&hs_item_);
}

void Connection::on_handshake_sent(net::SendItem* item, Errc e) {
  Connection* c = static_cast<ConnSendItem*>(item)->conn;
  if (e != Errc::kOk || c->closing_) return;  // the connection is going; its close path cleans up
  if (c->close_after_reply_) {
    c->close_now("the client ended the negotiation (NBD_OPT_ABORT)");
    return;
  }
  if (c->phase_ != Phase::kOptions) return;
  c->hs_busy_ = false;
  c->conn_->resume();
}

// ---------------------------------------------------------------------------------------------------
// Requests

size_t Connection::on_request(const uint8_t* p, size_t n) {
  if (n < kRequestLen) return 0;
  Request h;
  if (!parse_request(p, &h)) {
    TLOG_RL_WARN("nbd", 1000, "connection {} ({}): request with bad magic {:#010x}; closing", id_, peer_, load_be32(p));
    close_now("bad request magic");
    return n;
  }
  const Verdict v = check_request(h, geo_);
  if (v.action == Verdict::Action::kClose) {
    TLOG_RL_WARN("nbd", 1000, "connection {} ({}): {} ({} bytes at offset {}, at most {} accepted); closing", id_,
                 peer_, v.why, h.length, h.offset, geo_.max_payload);
    close_now(v.why);
    return n;
  }
  if (v.action == Verdict::Action::kDisc) {
    TLOG_DEBUG("nbd", "connection {} ({}): NBD_CMD_DISC", id_, peer_);
    begin_drain("the client disconnected (NBD_CMD_DISC)");
    return kRequestLen;
  }
  if (free_.empty()) {
    parse_blocked_ = true;  // resumed when a reply has gone out
    return 0;
  }
  const bool write = v.action == Verdict::Action::kExecute && h.type == kCmdWrite;
  int iovcnt = 0;
  if (write) {
    // Buffers before the header is consumed: without them the payload has nowhere to go, so the header
    // stays in the receive buffer until some come back.
    Req* next = free_.back();
    if (!buffers_.acquire(h.length, &next->lease, next->iov, &iovcnt)) {
      parse_blocked_ = true;
      buffers_.wait(&buf_waiter_);
      return 0;
    }
  }
  Req* r = alloc_req(h);
  if (v.action == Verdict::Action::kReply) {
    r->error = v.error;
    discard_left_ = v.payload;
    reply(r);
    return kRequestLen;
  }
  switch (h.type) {
    case kCmdRead:
      start_read(r);
      break;
    case kCmdWrite:
      r->iovcnt = iovcnt;
      r->state = Req::State::kRecvPayload;
      recv_payload(r);
      break;
    case kCmdFlush:
      if (can_flush_) submit(r, IoType::kFlush, 0, 0, nullptr, 0);
      else reply(r);  // a device without a flush has nothing volatile to flush
      break;
    case kCmdTrim:
      if (can_unmap_) submit(r, IoType::kUnmap, h.offset, h.length, nullptr, 0);
      else reply(r);  // a hint the device cannot take (SEND_TRIM was not advertised)
      break;
    case kCmdWriteZeroes:
      start_write_zeroes(r);
      break;
    default:
      r->error = kEInval;  // check_request answers unknown commands itself; kept for safety
      reply(r);
      break;
  }
  return kRequestLen;
}

Req* Connection::alloc_req(const Request& h) {
  // A request in use is work of the connection: teardown waits for it to be free again.
  TERN_CHECK(scope_.enter(), "nbd connection {}: a request arrived after teardown began", id_);
  Req* r = free_.back();
  free_.pop_back();
  ++active_;
  r->hdr = h;
  r->error = 0;
  r->iovcnt = 0;
  r->recv_next = 0;
  r->step = 0;
  r->zero_by_write = false;
  r->zeroed = 0;
  r->next_wait = nullptr;
  r->state = Req::State::kDevice;  // placeholder until the request's first step sets it
  return r;
}

void Connection::start_read(Req* r) {
  int cnt = 0;
  if (!buffers_.acquire(r->hdr.length, &r->lease, r->iov, &cnt)) {
    r->state = Req::State::kWaitBuffer;
    if (wait_tail_) wait_tail_->next_wait = r; else wait_head_ = r;
    wait_tail_ = r;
    buffers_.wait(&buf_waiter_);
    return;
  }
  r->iovcnt = cnt;
  submit(r, IoType::kRead, r->hdr.offset, r->hdr.length, r->iov, cnt);
}

void Connection::on_buffers() {
  if (closing_) return;
  while (Req* r = wait_head_) {
    int cnt = 0;
    if (!buffers_.acquire(r->hdr.length, &r->lease, r->iov, &cnt)) {
      buffers_.wait(&buf_waiter_);
      return;
    }
    wait_head_ = r->next_wait;
    if (!wait_head_) wait_tail_ = nullptr;
    r->next_wait = nullptr;
    r->iovcnt = cnt;
    submit(r, IoType::kRead, r->hdr.offset, r->hdr.length, r->iov, cnt);
  }
  if (parse_blocked_) {
    parse_blocked_ = false;
    conn_->resume();
  }
}

void Connection::recv_payload(Req* r) {
  const int first = r->recv_next;
  const int cnt = std::min(kRecvIovMax, r->iovcnt - first);
  size_t bytes = 0;
  for (int i = 0; i < cnt; ++i) bytes += r->iov[first + i].iov_len;
  r->recv_next = first + cnt;
  conn_->recv_into(&r->iov[first], cnt, bytes, [this, r](Errc e) { on_payload(r, e); });
}

void Connection::on_payload(Req* r, Errc e) {
  if (e != Errc::kOk) {
    free_req(r);  // the connection failed under the payload; it is closing
    return;
  }
  if (r->recv_next < r->iovcnt) {
    recv_payload(r);
    return;
  }
  submit(r, IoType::kWrite, r->hdr.offset, r->hdr.length, r->iov, r->iovcnt);
}

void Connection::start_write_zeroes(Req* r) {
  // NO_HOLE asks for the range to stay allocated. A device's write-zeroes may deallocate (a thin replica
  // releases whole clusters, a file may punch holes), so NO_HOLE writes real zeros; so does a device
  // without write-zeroes.
  r->zero_by_write = (r->hdr.flags & kCmdFlagNoHole) || !can_write_zeroes_;
  if (!r->zero_by_write) {
    submit(r, IoType::kWriteZeroes, r->hdr.offset, r->hdr.length, nullptr, 0);
    return;
  }
  submit_zero_chunk(r);
}

void Connection::submit_zero_chunk(Req* r) {
  constexpr uint64_t kZero = Server::kZeroBufferBytes;
  const uint64_t step = std::min<uint64_t>(r->hdr.length - r->zeroed, kZero * BufferSet::kMaxChunks);
  int cnt = 0;
  for (uint64_t done = 0; done < step; done += kZero) {
    r->iov[cnt++] = {const_cast<uint8_t*>(server_.zeroes()), size_t(std::min(kZero, step - done))};
  }
  r->iovcnt = 0;  // the zero buffer is shared: nothing of it belongs to the request's lease
  submit(r, IoType::kWrite, r->hdr.offset + r->zeroed, step, r->iov, cnt);
}

void Connection::submit(Req* r, IoType t, uint64_t offset_bytes, uint64_t len_bytes, iovec* iov, int iovcnt) {
  r->state = Req::State::kDevice;
  BdevIo& io = r->io;
  io.type = t;
  io.offset_blocks = offset_bytes / geo_.block_size;
  io.num_blocks = len_bytes / geo_.block_size;
  io.iovs = iov;
  io.iovcnt = iovcnt;
  // FUA: this request's blocks are durable before the reply (a device without a volatile cache
  // ignores it). Zeros written by writes carry it too.
  io.fua = (t == IoType::kWrite || t == IoType::kWriteZeroes) && (r->hdr.flags & kCmdFlagFua);
  ++dev_inflight_;
  ch_.submit(&io);
}

void Connection::on_io_done(BdevIo* io, void* arg) {
  auto* r = static_cast<Req*>(arg);
  Connection* c = r->conn;
  --c->dev_inflight_;
  if (io->status != Errc::kOk) {
    r->error = error_from_errc(io->status);
    c->reply(r);
    return;
  }
  c->io_step(r);
}

// The next step of a request, or its reply.
void Connection::io_step(Req* r) {
  const Request& h = r->hdr;
  if (r->step == 0 && !closing_) {
    if (r->zero_by_write) {
      r->zeroed += r->io.num_blocks * geo_.block_size;
      if (r->zeroed < h.length) {
        submit_zero_chunk(r);
        return;
      }
    }
    // FUA on a trim: an unmap has no FUA of its own (the device layer's FUA covers writes and
    // write-zeroes), so a flush follows it. A device without a volatile cache is durable already.
    if (h.type == kCmdTrim && (h.flags & kCmdFlagFua) && write_cache_ && can_flush_) {
      r->step = 1;
      submit(r, IoType::kFlush, 0, 0, nullptr, 0);
      return;
    }
  }
  reply(r);
}

void Connection::reply(Req* r) {
  const Request& h = r->hdr;
  const bool ok = r->error == 0;
  switch (h.type) {
    case kCmdRead:
      ConnCounters::add(counters_.reads, 1);
      if (ok) ConnCounters::add(counters_.read_bytes, h.length);
      break;
    case kCmdWrite:
      ConnCounters::add(counters_.writes, 1);
      if (ok) ConnCounters::add(counters_.write_bytes, h.length);
      break;
    case kCmdFlush: ConnCounters::add(counters_.flushes, 1); break;
    case kCmdTrim: ConnCounters::add(counters_.trims, 1); break;
    case kCmdWriteZeroes: ConnCounters::add(counters_.write_zeroes, 1); break;
    default: break;
  }
  if (!ok) {
    ConnCounters::add(counters_.errors, 1);
    TLOG_DEBUG("nbd", "connection {} ({}): {} of {} bytes at {} fails with error {}", id_, peer_,
               command_name(h.type), h.length, h.offset, r->error);
  }
  build_simple_reply(r->reply, r->error, h.cookie);
  r->state = Req::State::kSending;
  net::SendItem& it = r->item;
  it.iov[0] = {r->reply, sizeof(r->reply)};
  it.iovcnt = 1;
  if (ok && h.type == kCmdRead) {
    for (int i = 0; i < r->iovcnt; ++i) it.iov[it.iovcnt++] = r->iov[i];
  }
  conn_->send(&it);  // may complete at once (on_reply_sent) when the socket has failed
}

void Connection::on_reply_sent(net::SendItem* item, Errc) {
  Req* r = static_cast<ReqSendItem*>(item)->req;
  r->conn->free_req(r);
}

void Connection::free_req(Req* r) {
  r->state = Req::State::kFree;
  r->iovcnt = 0;
  --active_;
  free_.push_back(r);
  // Last: giving buffers back may wake waiters (this connection among them) synchronously.
  buffers_.release(&r->lease);
  if (parse_blocked_ && !closing_) {
    parse_blocked_ = false;
    conn_->resume();
  }
  check_drained();
  scope_.leave();
}

void Connection::abort_device_io() {
  if (dev_inflight_ == 0 || resetting_ || !ch_) return;
  // The requests it aborts keep the connection's scope open; the reset joins them.
  if (!scope_.extend()) return;
  resetting_ = true;
  ++dev_inflight_;
  reset_io_.type = IoType::kReset;
  reset_io_.offset_blocks = 0;
  reset_io_.num_blocks = 0;
  reset_io_.iovs = nullptr;
  reset_io_.iovcnt = 0;
  ch_.submit(&reset_io_);
}

void Connection::on_reset_done(BdevIo* io, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (io->status != Errc::kOk) {
    TLOG_WARN("nbd", "connection {} ({}): resetting the device failed: {}", c->id_, c->peer_, errc_name(io->status));
  }
  c->resetting_ = false;
  --c->dev_inflight_;
  c->scope_.leave();
}

// ---------------------------------------------------------------------------------------------------
// Closing

void Connection::shutdown(const char* why) { begin_drain(why); }

void Connection::begin_drain(const char* why) {
  if (closing_ || phase_ == Phase::kDraining) return;
  if (phase_ != Phase::kTransmission) {
    close_now(why);
    return;
  }
  phase_ = Phase::kDraining;
  drain_why_ = why;
  TLOG_DEBUG("nbd", "connection {} ({}): draining {} request(s): {}", id_, peer_, active_, why);
  drain_timer_.arm(server_.options().drain_timeout_ms * 1'000'000ull);
  check_drained();
}

void Connection::check_drained() {
  if (phase_ == Phase::kDraining && !closing_ && active_ == 0) close_now(drain_why_);
}

void Connection::close_now(const char* why) {
  if (closing_) return;
  closing_ = true;
  drain_timer_.cancel();
  handshake_timer_.cancel();
  TLOG_DEBUG("nbd", "connection {} ({}): closing: {}", id_, peer_, why);
  buffers_.cancel(&buf_waiter_);
  // READs still waiting for a buffer never reached the device.
  while (Req* r = wait_head_) {
    wait_head_ = r->next_wait;
    r->next_wait = nullptr;
    free_req(r);
  }
  wait_tail_ = nullptr;
  conn_->close([this] {
    conn_closed_ = true;
    server_.slice(reactor_.id()).teardowns.spawn(finish(this));
  });
}

// The socket is closed: wait for the requests and look-ups still running, then leave the export and go.
Task<void> Connection::finish(Connection* self) {
  co_await self->scope_.close();
  self->ch_.reset();
  if (self->export_) {
    Server* s = &self->server_;
    Export* e = self->export_;
    self->server_.reactors().post(0, [s, e, self] { s->detach(e, self); });  // detach posts connection_closed back
    co_return;
  }
  self->server_.connection_closed(self);
}

}  // namespace tern::nbd
