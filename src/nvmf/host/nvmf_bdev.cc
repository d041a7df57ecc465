#include "nvmf/host/nvmf_bdev.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bdev/backends.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "nvmf/host/admin_client.h"
#include "nvmf/host/host_qpair.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"
#include "nvmf/vendor.h"

namespace tern::nvmf {

using namespace tern::nvme;

std::string default_host_nqn() {
  char h[256] = {};
  gethostname(h, sizeof(h) - 1);
  return std::string("nqn.2026-11.io.tern:node-name:") + h;
}

std::array<uint8_t, 16> host_id_for(const std::string& hostnqn) {
  std::array<uint8_t, 16> id{};
  uint32_t a = crc32c(hostnqn.data(), hostnqn.size(), 1), b = crc32c(hostnqn.data(), hostnqn.size(), 2);
  uint32_t c = crc32c(hostnqn.data(), hostnqn.size(), 3), d = crc32c(hostnqn.data(), hostnqn.size(), 4);
  std::memcpy(id.data(), &a, 4);
  std::memcpy(id.data() + 4, &b, 4);
  std::memcpy(id.data() + 8, &c, 4);
  std::memcpy(id.data() + 12, &d, 4);
  id[6] = uint8_t((id[6] & 0x0f) | 0x40);
  id[8] = uint8_t((id[8] & 0x3f) | 0x80);
  return id;
}

namespace {

struct Options {
  HostParams host;
  uint32_t nsid = 1;
  uint32_t io_queues = 0;
  uint32_t qd = 128;
  uint64_t timeout_ns = 30'000'000'000ull;
  uint64_t ctrl_loss_ns = 60'000'000'000ull;
  uint64_t reconnect_delay_ns = 1'000'000'000ull;
  Uuid uuid;
  bool uuid_given = false;
};

constexpr uint64_t kAbortGraceNs = 1'000'000'000ull;
constexpr uint32_t kFuaBit = 1u << 30;  // Write / Write Zeroes CDW12: Force Unit Access
constexpr uint64_t kTimeoutScanNs = 100'000'000ull;

// log2 of the namespace's block size: its current LBA format's LBADS.
uint32_t lba_shift(const IdentifyNamespace& ns) { return ns.lbaf[ns.flbas & 0xf].lbads; }

class NvmfBdev;

// Per-I/O state in BdevIo::driver_ctx.
struct IoCtx {
  HostCmd* cmd;
  BdevIo* next;  // pending list while the queue is full
};

// One reactor's I/O queue. Touched only by that reactor.
struct IoQueue {
  std::unique_ptr<HostQpair> qp;
  BdevIo* pending_head = nullptr;
  BdevIo* pending_tail = nullptr;
  Timer scan;
  std::vector<uint16_t> aborting;  // command ids with an Abort sent
};

class NvmfChannel final : public ChannelCtx {
 public:
  NvmfChannel(NvmfBdev* b, unsigned reactor) : bdev(b), reactor(reactor) {}
  NvmfBdev* bdev;
  unsigned reactor;
};

class NvmfBdev final : public Bdev {
 public:
  NvmfBdev(BdevProps p, Options o, BdevRegistry& reg, std::unique_ptr<HostQpair> admin, IdentifyController id)
      : Bdev(std::move(p)), opts_(std::move(o)), registry_(reg), set_(reg.reactors()), admin_(std::move(admin)),
        id_ctrl_(id), queues_(set_.size()) {
    keep_alive_.set_callback([this] { send_keep_alive(); });
  }

  ~NvmfBdev() override = default;

  bool supports(IoType t) const override {
    switch (t) {
      case IoType::kRead:
      case IoType::kWrite:
      case IoType::kReset: return true;
      case IoType::kFlush: return id_ctrl_.vwc & 1;
      case IoType::kUnmap: return uint16_t(id_ctrl_.oncs) & 0x04;
      case IoType::kWriteZeroes: return uint16_t(id_ctrl_.oncs) & 0x08;
    }
    return false;
  }

  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override {
    if (r.id() >= io_queue_count_) {
      return Status::Errorf(Errc::kNotSup, "device '{}' has I/O queues on reactors 0..{} only (io_queues={})", name(),
                            io_queue_count_ - 1, io_queue_count_);
    }
    return std::unique_ptr<ChannelCtx>(new NvmfChannel(this, r.id()));
  }

  void submit(ChannelCtx* ctx, BdevIo* io) override {
    auto* ch = static_cast<NvmfChannel*>(ctx);
    IoQueue& q = queues_[ch->reactor];
    if (io->type == IoType::kReset) {
      bdev_io_complete_deferred(io, Errc::kOk);  // the layer waits for what was in flight
      return;
    }
    if (!q.qp || q.qp->failed()) {
      bdev_io_complete_deferred(io, Errc::kAgain);  // reconnecting: fail fast, never hang
      return;
    }
    if (q.pending_head || !start(q, io)) enqueue(q, io);
  }

  Task<void> shutdown() override {
    removing_ = true;
    keep_alive_.cancel();
    reconnect_timer_.cancel();
    // A reconnect in progress owns the queues until it notices removing_ (within one back-off slice or
    // one connect attempt); closing them under it would race with its own teardown and bring-up.
    co_await reconnect_.close();
    for (unsigned r = 0; r < queues_.size(); ++r) {
      co_await set_.submit_to(r, [this, r]() -> Task<void> { co_await close_queue(queues_[r]); });
    }
    if (admin_) {
      bool closed = false;
      admin_->close(Errc::kShutdown, [&closed] { closed = true; });
      while (!closed) co_await Reactor::sleep_for(100'000);
      admin_.reset();
    }
    // Aborts and keep-alives in flight were failed by the close; wait until their tasks have ended so
    // none resumes into a destroyed device (or is left suspended when the reactors stop).
    co_await background_.close();
  }

  // Primary reactor: starts a task that references this device; shutdown waits for it to end.
  void spawn_background(Task<void> t) { background_.spawn(std::move(t)); }

  // After creation: I/O queues on each reactor, keep-alive.
  Task<Status> start_queues(uint32_t count) {
    io_queue_count_ = count;
    for (unsigned r = 0; r < count; ++r) {
      Status st = co_await set_.submit_to(r, [this, r]() -> Task<Status> { co_return co_await connect_queue(r); });
      if (!st.ok()) co_return st;
    }
    if (opts_.host.kato_ms) keep_alive_.arm(uint64_t(opts_.host.kato_ms) * 500'000);
    admin_->set_on_failure([this](Errc e) { controller_failed("admin queue", e); });
    co_return Status::Ok();
  }

 private:
  // ---- I/O path (the queue's reactor) ----
  bool start(IoQueue& q, BdevIo* io) {
    HostCmd* c = q.qp->get();
    if (!c) return false;
    auto* x = io->ctx<IoCtx>();
    x->cmd = c;
    Sqe& s = c->sqe;
    std::memset(&s, 0, sizeof(s));
    s.nsid = opts_.nsid;
    const uint64_t lba = io->offset_blocks;
    c->iov = nullptr;
    c->iovcnt = 0;
    c->data_len = 0;
    c->write = false;
    switch (io->type) {
      case IoType::kRead:
      case IoType::kWrite:
        s.opc = io->type == IoType::kRead ? opc::kRead : opc::kWrite;
        s.cdw10 = uint32_t(lba);
        s.cdw11 = uint32_t(lba >> 32);
        s.cdw12 = uint32_t(io->num_blocks - 1);
        if (io->type == IoType::kWrite && io->fua) s.cdw12 = uint32_t(s.cdw12) | kFuaBit;
        c->iov = io->iovs;
        c->iovcnt = io->iovcnt;
        c->data_len = uint32_t(io->num_blocks * props_.block_size);
        c->write = io->type == IoType::kWrite;
        break;
      case IoType::kFlush:
        s.opc = opc::kFlush;
        break;
      case IoType::kWriteZeroes:
        s.opc = opc::kWriteZeroes;
        s.cdw10 = uint32_t(lba);
        s.cdw11 = uint32_t(lba >> 32);
        s.cdw12 = uint32_t(io->num_blocks - 1) | (io->fua ? kFuaBit : 0);
        break;
      case IoType::kUnmap: {
        s.opc = opc::kDatasetManagement;
        s.cdw10 = 0;       // one range
        s.cdw11 = 0x4;     // deallocate
        auto* r = reinterpret_cast<DsmRange*>(dsm_buf(c));
        std::memset(r, 0, sizeof(*r));
        r->nlb = uint32_t(io->num_blocks);
        r->slba = lba;
        c->dsm_iov = {r, sizeof(DsmRange)};
        c->iov = &c->dsm_iov;
        c->iovcnt = 1;
        c->data_len = sizeof(DsmRange);
        c->write = true;
        break;
      }
      case IoType::kReset:
        break;
    }
    c->done = &NvmfBdev::on_cmd_done;
    c->arg = io;
    // The loop turn's time (no clock read per request): a deadline of seconds needs no better.
    c->deadline_ns = Reactor::current()->now() + opts_.timeout_ns;
    q.qp->submit(c);
    // Deadlines are checked only while commands are out: an idle queue has no timer (hundreds of idle
    // devices would otherwise wake their reactor thousands of times a second for nothing).
    if (!q.scan.armed()) q.scan.arm(kTimeoutScanNs);
    return true;
  }

  static uint8_t* dsm_buf(HostCmd* c) { return c->dsm; }

  void enqueue(IoQueue& q, BdevIo* io) {
    auto* x = io->ctx<IoCtx>();
    x->next = nullptr;
    if (q.pending_tail) q.pending_tail->ctx<IoCtx>()->next = io; else q.pending_head = io;
    q.pending_tail = io;
  }

  void drain_pending(IoQueue& q) {
    while (BdevIo* io = q.pending_head) {
      if (!q.qp || q.qp->failed()) {
        q.pending_head = io->ctx<IoCtx>()->next;
        if (!q.pending_head) q.pending_tail = nullptr;
        bdev_io_complete(io, Errc::kAgain);
        continue;
      }
      if (!start(q, io)) return;
      q.pending_head = io->ctx<IoCtx>()->next;
      if (!q.pending_head) q.pending_tail = nullptr;
    }
  }

  static void on_cmd_done(HostCmd* c, void* arg) {
    auto* io = static_cast<BdevIo*>(arg);
    auto* self = static_cast<NvmfBdev*>(&io->ch->bdev());
    Errc e;
    if (c->transport_error != Errc::kOk) {
      e = c->transport_error == Errc::kProto ? Errc::kIo : c->transport_error;
    } else {
      CmdStatus st = c->status();
      e = errc_from_status(st);
      if (e != Errc::kOk) {
        TLOG_RL_WARN("nvmf", 1000, "device '{}': command {:#x} failed: {}", self->name(), c->sqe.opc, describe_status(st));
      }
    }
    IoQueue& q = self->queues_[Reactor::current()->id()];
    if (!q.aborting.empty()) {
      auto it = std::find(q.aborting.begin(), q.aborting.end(), c->cid);
      if (it != q.aborting.end()) q.aborting.erase(it);
    }
    q.qp->put(c);
    bdev_io_complete(io, e);
    if (q.pending_head) self->drain_pending(q);
  }

  // ---- queues, timeouts, resets ----
  Task<Status> connect_queue(unsigned r) {
    auto qp = co_await HostQpair::Connect(opts_.host, uint16_t(r + 1), uint16_t(opts_.qd), admin_cntlid_);
    if (!qp.ok()) co_return qp.status();
    IoQueue& q = queues_[r];
    q.qp = std::move(*qp);
    q.qp->set_max_icd(icd_limit_);
    q.qp->set_on_failure([this, r](Errc e) {
      IoQueue& qq = queues_[r];
      drain_pending(qq);
      set_.post(0, [this, r, e] { controller_failed(fmt::format("I/O queue {}", r + 1).c_str(), e); });
    });
    q.scan.set_callback([this, r] { scan_timeouts(r); });
    co_return Status::Ok();
  }

  Task<void> close_queue(IoQueue& q) {
    q.scan.cancel();
    if (!q.qp) co_return;
    bool closed = false;
    q.qp->close(Errc::kConnReset, [&closed] { closed = true; });
    while (!closed) co_await Reactor::sleep_for(100'000);
    drain_pending(q);
    q.qp.reset();
  }

  // Armed by the first command out on an idle queue; re-armed while any remain out.
  void scan_timeouts(unsigned r) {
    IoQueue& q = queues_[r];
    if (!q.qp || q.qp->failed()) return;
    if (q.qp->outstanding() > 0) q.scan.arm(kTimeoutScanNs);
    const uint64_t now = Reactor::current()->now();  // the reactor's clock: deadlines were set on it
    // A command past its deadline first gets an Abort; if it is still there a grace period later, the
    // controller is reset (fresh connections: no late data can land in buffers we already gave back).
    for (HostCmd* c : q.qp->expired(now)) {
      if (std::find(q.aborting.begin(), q.aborting.end(), c->cid) == q.aborting.end()) {
        q.aborting.push_back(c->cid);
        c->deadline_ns = now + kAbortGraceNs;
        TLOG_WARN("nvmf", "device '{}': command {} on queue {} timed out after {} ms; aborting it", name(), c->cid, r + 1,
                  opts_.timeout_ns / 1'000'000);
        uint16_t sqid = uint16_t(r + 1), cid = c->cid;
        set_.post(0, [this, sqid, cid] { send_abort(sqid, cid); });
      } else {
        TLOG_WARN("nvmf", "device '{}': command {} on queue {} still outstanding after its abort; resetting", name(),
                  c->cid, r + 1);
        q.aborting.clear();
        q.qp->fail(Errc::kTimedOut);
        return;
      }
    }
  }

 public:
  // One admin command for this device's namespace (primary reactor).
  Task<Result<PassthruReply>> admin_command(Sqe s, std::vector<uint8_t> data_out, uint32_t data_in_len) {
    if (!admin_ || resetting_ || removing_) co_return Status::Errorf(Errc::kAgain, "device '{}' is reconnecting", name());
    s.nsid = opts_.nsid;
    auto rep = co_await admin_->command(s, std::move(data_out), data_in_len, opts_.host.admin_timeout_ns);
    if (rep.transport != Errc::kOk) {
      co_return Status::Errorf(rep.transport, "device '{}': admin command {:#x}: {}", name(), s.opc,
                               errc_describe(rep.transport));
    }
    PassthruReply out;
    out.status = rep.status();
    out.dw0 = rep.cqe.dw0;
    out.data = std::move(rep.data);
    co_return out;
  }

  // Asked of the target with tern's vendor command (nvmf/vendor.h); kNotSup from a target that does not
  // know it (another vendor's, or a device there that cannot tell).
  Task<Result<BlockStatus>> block_status(uint64_t offset_blocks, uint64_t max_blocks) override {
    Sqe s;
    std::memset(&s, 0, sizeof(s));
    s.opc = vendor::kBlockStatus;
    s.cdw10 = uint32_t(offset_blocks);
    s.cdw11 = uint32_t(offset_blocks >> 32);
    const uint64_t asked = std::min<uint64_t>(max_blocks, 0xffffffffu);
    s.cdw12 = uint32_t(asked);
    auto rep = co_await admin_command(s, {}, sizeof(vendor::BlockStatusWire));
    if (!rep.ok()) co_return rep.status();
    if (!rep->status.ok()) {
      if (rep->status.sct == Sct::kGeneric &&
          (rep->status.sc == sc::kInvalidOpcode || rep->status.sc == sc::kInvalidField)) {
        co_return Status::Errorf(Errc::kNotSup, "device '{}': the target does not report block status", name());
      }
      co_return Status::Errorf(Errc::kIo, "device '{}': block status: {}", name(), describe_status(rep->status));
    }
    auto r = vendor::decode_block_status(rep->data.data(), rep->data.size(), asked);
    if (!r.ok()) co_return r.status().WithContext(fmt::format("device '{}'", name()));
    co_return BlockStatus{r->allocated, r->blocks};
  }

 private:
  // The namespace grew on the target (a replica resized): Identify Namespace, and take the larger size.
  Task<Result<uint64_t>> rescan_async() override {
    Sqe s;
    std::memset(&s, 0, sizeof(s));
    s.opc = opc::kIdentify;
    s.cdw10 = cns::kNamespace;
    auto rep = co_await admin_command(s, {}, 4096);
    if (!rep.ok()) co_return rep.status();
    if (!rep->status.ok()) {
      co_return Status::Errorf(Errc::kIo, "device '{}': Identify Namespace: {}", name(), describe_status(rep->status));
    }
    IdentifyNamespace id;
    std::memset(&id, 0, sizeof(id));
    std::memcpy(&id, rep->data.data(), std::min(rep->data.size(), sizeof(id)));
    if ((1u << lba_shift(id)) != props_.block_size) {
      co_return Status::Errorf(Errc::kInval, "device '{}': namespace {} changed its block size", name(), opts_.nsid);
    }
    grow_to(uint64_t(id.nsze));
    co_return num_blocks() * props_.block_size;
  }

  void send_abort(uint16_t sqid, uint16_t cid) {
    if (!admin_ || resetting_ || removing_) return;
    spawn_background([](NvmfBdev* self, uint16_t sqid, uint16_t cid) -> Task<void> {
      Sqe s;
      std::memset(&s, 0, sizeof(s));
      s.opc = opc::kAbort;
      s.cdw10 = uint32_t(sqid) | (uint32_t(cid) << 16);
      auto rep = co_await self->admin_->command(s, {}, 0, self->opts_.host.admin_timeout_ns);
      if (rep.ok()) {
        TLOG_INFO("nvmf", "device '{}': abort of command {} on queue {}: {}", self->name(), cid, sqid,
                  (uint32_t(rep.cqe.dw0) & 1) ? "not aborted" : "aborted");
      }
    }(this, sqid, cid));
  }

  void send_keep_alive() {
    if (!admin_ || removing_ || resetting_) return;
    spawn_background([](NvmfBdev* self) -> Task<void> {
      Sqe s;
      std::memset(&s, 0, sizeof(s));
      s.opc = opc::kKeepAlive;
      auto rep = co_await self->admin_->command(s, {}, 0, self->opts_.host.admin_timeout_ns);
      if (!rep.ok() && !self->removing_) self->controller_failed("keep-alive", rep.transport != Errc::kOk ? rep.transport : Errc::kIo);
      else if (!self->removing_) self->keep_alive_.arm(uint64_t(self->opts_.host.kato_ms) * 500'000);
    }(this));
  }

  // Primary reactor: a queue or the admin queue failed. Tear everything down and reconnect.
  void controller_failed(const char* what, Errc e) {
    if (removing_ || resetting_) return;
    resetting_ = true;
    if (lost_since_ns_ == 0) lost_since_ns_ = Reactor::current()->now();
    TLOG_WARN("nvmf", "device '{}': {} failed ({}); resetting the controller", name(), what, errc_name(e));
    keep_alive_.cancel();
    raise_event(BdevEvent::kReconnecting);
    reconnect_.spawn(reconnect_loop());
  }

  Task<void> reconnect_loop() {
    for (unsigned r = 0; r < io_queue_count_; ++r) {
      co_await set_.submit_to(r, [this, r]() -> Task<void> { co_await close_queue(queues_[r]); });
    }
    if (admin_) {
      bool closed = false;
      admin_->close(Errc::kConnReset, [&closed] { closed = true; });
      while (!closed) co_await Reactor::sleep_for(100'000);
      admin_.reset();
    }
    uint64_t delay = opts_.reconnect_delay_ns;
    while (!removing_) {
      if (Reactor::current()->now() - lost_since_ns_ >= opts_.ctrl_loss_ns) {
        TLOG_ERROR("nvmf", "device '{}': no controller for {} s (ctrl_loss_tmo); removing the device", name(),
                   opts_.ctrl_loss_ns / 1'000'000'000ull);
        std::string n = name();
        BdevRegistry* reg = &registry_;
        // The removal waits for this device's shutdown, which waits for this loop: it runs in the
        // registry's scope, not ours.
        reg->tasks().spawn([](BdevRegistry* reg2, std::string nm) -> Task<void> {
          Status st = co_await reg2->destroy(nm, true);
          if (!st.ok()) TLOG_WARN("nvmf", "removing '{}': {}", nm, st);
        }(reg, n));
        co_return;
      }
      // Back off in slices so that a device being removed stops waiting promptly.
      constexpr uint64_t kSlice = 10'000'000;
      for (uint64_t slept = 0; slept < delay && !removing_; slept += kSlice) {
        co_await Reactor::sleep_for(std::min(kSlice, delay - slept));
      }
      if (removing_) co_return;
      Status st = co_await reconnect_once();
      if (st.ok()) {
        TLOG_INFO("nvmf", "device '{}': controller reconnected (cntlid {})", name(), admin_cntlid_);
        resetting_ = false;
        lost_since_ns_ = 0;
        raise_event(BdevEvent::kReconnected);
        co_return;
      }
      TLOG_WARN("nvmf", "device '{}': reconnect failed: {}", name(), st);
      delay = std::min<uint64_t>(delay * 2, 10'000'000'000ull);
    }
  }

  Task<Status> reconnect_once();

 public:
  Options opts_;
  BdevRegistry& registry_;
  ReactorSet& set_;
  std::unique_ptr<HostQpair> admin_;
  IdentifyController id_ctrl_;
  std::vector<IoQueue> queues_;
  uint32_t io_queue_count_ = 0;
  uint16_t admin_cntlid_ = 0;
  uint32_t icd_limit_ = 0;
  Timer keep_alive_;
  Timer reconnect_timer_;
  bool removing_ = false;
  bool resetting_ = false;
  TaskScope reconnect_{"nvmf reconnect"};        // the reconnect loop, while it runs
  TaskScope background_{"nvmf admin commands"};  // keep-alives and aborts in flight
  uint64_t lost_since_ns_ = 0;
};

// Admin-queue bring-up shared by creation and reconnection: connect, enable, identify.
struct AdminUp {
  std::unique_ptr<HostQpair> admin;
  IdentifyController ctrl;
  IdentifyNamespace ns;
  std::array<uint8_t, 16> ns_uuid{};  // from the Identification Descriptor list, when NGUID is zero
};

Task<Result<AdminUp>> bring_up_admin(const Options& o) {
  auto admin = co_await AdminClient::Open(o.host);
  if (!admin.ok()) co_return admin.status();
  AdminClient& a = **admin;
  auto idc = co_await a.identify_controller();
  if (!idc.ok()) {
    co_await a.close();
    co_return idc.status();
  }
  auto idn = co_await a.identify_namespace(o.nsid);
  if (!idn.ok() || uint64_t(idn->nsze) == 0) {
    co_await a.close();
    if (!idn.ok()) co_return idn.status();
    co_return Status::Errorf(Errc::kNoEnt, "{}:{}: '{}' has no active namespace {}", o.host.host, o.host.port,
                             o.host.subnqn, o.nsid);
  }
  AdminUp up;
  up.ctrl = *idc;
  up.ns = *idn;
  // A namespace may report its identity only in the Identification Descriptor list (NVMe Base 2.0,
  // Identify CNS 03h): Linux's nvmet leaves NGUID and EUI64 zero and reports the UUID there. A target
  // that does not support CNS 03h (NVMe < 1.3) fails the command; the device then has no stable UUID.
  if (std::all_of(std::begin(idn->nguid), std::end(idn->nguid), [](uint8_t b) { return b == 0; })) {
    auto descs = co_await a.namespace_descriptors(o.nsid);
    if (descs.ok()) {
      for (const NsDescriptor& d : *descs) {
        if (d.type == 3 && d.value.size() == 16) {
          std::copy(d.value.begin(), d.value.end(), up.ns_uuid.begin());
          break;
        }
      }
    }
  }
  up.admin = a.release();
  co_return up;
}

Task<Status> NvmfBdev::reconnect_once() {
  auto up = co_await bring_up_admin(opts_);
  if (!up.ok()) co_return up.status();
  const uint32_t lbads = lba_shift(up->ns);
  // A namespace may have grown while we were away (a replica resized); a smaller one or another block
  // size is another device.
  if (uint64_t(up->ns.nsze) < num_blocks() || (1u << lbads) != props_.block_size) {
    co_return Status::Errorf(Errc::kInval, "namespace {} changed geometry; refusing to resume I/O on it", opts_.nsid);
  }
  grow_to(uint64_t(up->ns.nsze));
  admin_ = std::move(up->admin);
  admin_cntlid_ = admin_->cntlid();
  Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kSetFeatures;
  s.cdw10 = fid::kNumberOfQueues;
  s.cdw11 = (io_queue_count_ - 1) | ((io_queue_count_ - 1) << 16);
  auto nq = co_await admin_->command(s, {}, 0, opts_.host.admin_timeout_ns);
  if (!nq.ok()) co_return Status(Errc::kIo, "Set Features (number of queues) failed");
  for (unsigned r = 0; r < io_queue_count_; ++r) {
    Status st = co_await set_.submit_to(r, [this, r]() -> Task<Status> { co_return co_await connect_queue(r); });
    if (!st.ok()) co_return st;
  }
  admin_->set_on_failure([this](Errc e) { controller_failed("admin queue", e); });
  if (opts_.host.kato_ms) keep_alive_.arm(uint64_t(opts_.host.kato_ms) * 500'000);
  co_return Status::Ok();
}

Result<Options> parse_options(const Uri& uri, unsigned reactors) {
  TERN_ASSIGN_OR_RETURN(UriQuery q, UriQuery::Make(uri, {"nsid", "hostnqn", "hostid", "io_queues", "qd", "hdgst",
                                                         "ddgst", "timeout_ms", "kato_ms", "ctrl_loss_tmo_s",
                                                         "reconnect_delay_ms", "uuid"}));
  Options o;
  if (uri.host.empty()) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': the target address is missing (nvmf://host:port/nqn)", uri.text);
  }
  o.host.host = uri.host;
  o.host.port = uri.port.value_or(8420);
  if (uri.path.size() < 2) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': the subsystem NQN is missing (nvmf://host:port/nqn)", uri.text);
  }
  o.host.subnqn = uri.path.substr(1);
  TERN_ASSIGN_OR_RETURN(auto nsid, q.u64("nsid", 1, 0xFFFFFFFE));
  o.nsid = uint32_t(nsid.value_or(1));
  o.host.hostnqn = q.str("hostnqn").value_or(default_host_nqn());
  if (auto h = q.str("hostid")) {
    TERN_ASSIGN_OR_RETURN(Uuid u, Uuid::Parse(*h));
    o.host.hostid = u.bytes();
  } else {
    o.host.hostid = host_id_for(o.host.hostnqn);
  }
  TERN_ASSIGN_OR_RETURN(auto ioq, q.u64("io_queues", 1, 1024));
  o.io_queues = uint32_t(std::min<uint64_t>(ioq.value_or(reactors), reactors));
  TERN_ASSIGN_OR_RETURN(auto qd, q.u64("qd", 2, 1024));
  o.qd = uint32_t(qd.value_or(128));
  TERN_ASSIGN_OR_RETURN(auto hd, q.boolean("hdgst"));
  TERN_ASSIGN_OR_RETURN(auto dd, q.boolean("ddgst"));
  o.host.hdgst = hd.value_or(false);
  o.host.ddgst = dd.value_or(false);
  TERN_ASSIGN_OR_RETURN(auto tmo, q.u64("timeout_ms", 1, 3'600'000));
  if (tmo) o.timeout_ns = *tmo * 1'000'000;
  TERN_ASSIGN_OR_RETURN(auto kato, q.u64("kato_ms", 0, 3'600'000));
  o.host.kato_ms = uint32_t(kato.value_or(10'000));
  TERN_ASSIGN_OR_RETURN(auto loss, q.u64("ctrl_loss_tmo_s", 0, 86'400));
  if (loss) o.ctrl_loss_ns = *loss * 1'000'000'000ull;
  TERN_ASSIGN_OR_RETURN(auto rd, q.u64("reconnect_delay_ms", 10, 3'600'000));
  if (rd) o.reconnect_delay_ns = *rd * 1'000'000;
  if (auto u = q.str("uuid")) {
    TERN_ASSIGN_OR_RETURN(o.uuid, Uuid::Parse(*u));
    o.uuid_given = true;
  }
  return o;
}

Task<Result<std::unique_ptr<Bdev>>> make_nvmf_bdev(const Uri& uri, BdevRegistry& reg) {
  auto opts = parse_options(uri, reg.reactors().size());
  if (!opts.ok()) co_return opts.status();
  const std::string name = fmt::format("{}/{}n{}", uri.authority().empty() ? uri.host : uri.authority(), opts->host.subnqn, opts->nsid);
  if (Status st = reg.check_new_name(name); !st.ok()) co_return st;
  auto up = co_await bring_up_admin(*opts);
  if (!up.ok()) co_return up.status();
  BdevProps p;
  p.name = name;
  p.product = "nvmf";
  const IdentifyNamespace& ns = up->ns;
  const uint32_t lbads = lba_shift(ns);
  if (lbads < 9 || lbads > 12) {
    co_return Status::Errorf(Errc::kNotSup, "namespace {} has {}-byte blocks; only 512 and 4096 are supported",
                             opts->nsid, 1u << lbads);
  }
  p.block_size = 1u << lbads;
  p.num_blocks = ns.nsze;
  const uint32_t mdts = up->ctrl.mdts;
  const uint64_t max_bytes = mdts ? (uint64_t(4096) << mdts) : (uint64_t(1) << 20);
  p.max_io_blocks = uint32_t(std::min<uint64_t>(max_bytes, 1u << 20) / p.block_size);
  p.write_cache = up->ctrl.vwc & 1;
  p.unmap_reads_zeroes = (ns.dlfeat & 0x7) == 1;
  if (opts->uuid_given) {
    p.uuid = opts->uuid;
  } else {
    std::array<uint8_t, 16> g;
    std::memcpy(g.data(), ns.nguid, 16);
    p.uuid = Uuid(g);
    if (p.uuid.is_nil()) p.uuid = Uuid(up->ns_uuid);
    if (p.uuid.is_nil()) p.uuid = Uuid::Generate();
  }
  auto dev = std::make_unique<NvmfBdev>(std::move(p), *opts, reg, std::move(up->admin), up->ctrl);
  dev->admin_cntlid_ = dev->admin_->cntlid();
  dev->icd_limit_ = uint32_t(up->ctrl.ioccsz) > 4 ? uint32_t(up->ctrl.ioccsz) * 16 - 64 : 0;
  Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kSetFeatures;
  s.cdw10 = fid::kNumberOfQueues;
  s.cdw11 = (opts->io_queues - 1) | ((opts->io_queues - 1) << 16);
  auto nq = co_await dev->admin_->command(s, {}, 0, opts->host.admin_timeout_ns);
  uint32_t granted = opts->io_queues;
  if (nq.ok()) granted = std::min<uint32_t>(granted, (uint32_t(nq.cqe.dw0) & 0xffff) + 1);
  Status st = co_await dev->start_queues(granted);
  if (!st.ok()) {
    co_await dev->shutdown();
    co_return st;
  }
  TLOG_INFO("nvmf", "connected to {}:{} '{}' namespace {} (controller {}, {} I/O queue(s))", opts->host.host,
            opts->host.port, opts->host.subnqn, opts->nsid, dev->admin_cntlid_, granted);
  co_return std::unique_ptr<Bdev>(std::move(dev));
}

}  // namespace

Task<Result<PassthruReply>> io_passthru(Bdev& dev, nvme::Sqe sqe, std::vector<uint8_t> data_out, uint32_t data_in_len) {
  auto* nv = dynamic_cast<NvmfBdev*>(&dev);
  if (!nv) co_return Status::Errorf(Errc::kNotSup, "device '{}' is not an NVMe/TCP (nvmf://) device", dev.name());
  const unsigned r = Reactor::current()->id();
  if (r >= nv->queues_.size() || r >= nv->io_queue_count_) {
    co_return Status::Errorf(Errc::kNotSup, "device '{}' has no I/O queue on reactor {}", dev.name(), r);
  }
  IoQueue& q = nv->queues_[r];
  if (!q.qp || q.qp->failed()) co_return Status::Errorf(Errc::kAgain, "device '{}' is reconnecting", dev.name());
  sqe.nsid = nv->opts_.nsid;
  auto rep = co_await q.qp->command(sqe, std::move(data_out), data_in_len, nv->opts_.timeout_ns);
  if (rep.transport != Errc::kOk) {
    co_return Status::Errorf(rep.transport, "device '{}': command {:#x}: {}", dev.name(), sqe.opc, errc_describe(rep.transport));
  }
  PassthruReply out;
  out.status = rep.status();
  out.dw0 = rep.cqe.dw0;
  out.data = std::move(rep.data);
  co_return out;
}

Task<Result<PassthruReply>> admin_passthru(Bdev& dev, nvme::Sqe sqe, std::vector<uint8_t> data_out,
                                           uint32_t data_in_len) {
  auto* nv = dynamic_cast<NvmfBdev*>(&dev);
  if (!nv) co_return Status::Errorf(Errc::kNotSup, "device '{}' is not an NVMe/TCP (nvmf://) device", dev.name());
  co_return co_await nv->admin_command(sqe, std::move(data_out), data_in_len);
}

void register_nvmf_backend(BdevRegistry& registry) {
  registry.register_scheme("nvmf", make_nvmf_bdev);
  registry.register_scheme("nvmf+tcp", make_nvmf_bdev);
}

}  // namespace tern::nvmf
