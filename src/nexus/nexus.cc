#include "nexus/nexus.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/uri.h"
#include "common/endian.h"
#include "nexus/channel.h"
#include "nexus/nexus_internal.h"
#include "nvmf/host/host_qpair.h"
#include "nvmf/host/nvmf_bdev.h"
#include "nvmf/vendor.h"
#include "reactor/reactor_set.h"

namespace tern::nexus {

// ---------------------------------------------------------------------------------------------------
// Names

const char* child_state_name(ChildState s) {
  switch (s) {
    case ChildState::kOnline: return "online";
    case ChildState::kFaulted: return "faulted";
    case ChildState::kClosed: return "closed";
  }
  return "?";
}

const char* fault_reason_name(FaultReason r) {
  switch (r) {
    case FaultReason::kNone: return "none";
    case FaultReason::kCannotOpen: return "cannot_open";
    case FaultReason::kIoError: return "io_error";
    case FaultReason::kTimedOut: return "timed_out";
    case FaultReason::kNoSpace: return "no_space";
    case FaultReason::kRebuildFailed: return "rebuild_failed";
    case FaultReason::kOffline: return "offline";
  }
  return "?";
}

const char* sync_state_name(SyncState s) { return s == SyncState::kSynced ? "synced" : "out_of_sync"; }

const char* nexus_status_name(NexusStatus s) {
  switch (s) {
    case NexusStatus::kOnline: return "online";
    case NexusStatus::kDegraded: return "degraded";
    case NexusStatus::kFaulted: return "faulted";
    case NexusStatus::kShuttingDown: return "shutting_down";
    case NexusStatus::kShutdown: return "shutdown";
  }
  return "?";
}

const char* snapshot_outcome_name(SnapshotOutcome o) {
  switch (o) {
    case SnapshotOutcome::kTaken: return "taken";
    case SnapshotOutcome::kExisted: return "existed";
    case SnapshotOutcome::kSkipped: return "skipped";
    case SnapshotOutcome::kFailed: return "failed";
    case SnapshotOutcome::kRolledBack: return "rolled_back";
  }
  return "?";
}

Result<FaultReason> parse_fault_reason(std::string_view s) {
  for (FaultReason r : {FaultReason::kCannotOpen, FaultReason::kIoError, FaultReason::kTimedOut,
                        FaultReason::kNoSpace, FaultReason::kRebuildFailed, FaultReason::kOffline}) {
    if (s == fault_reason_name(r)) return r;
  }
  return Status::Errorf(Errc::kInval,
                        "unknown fault reason '{}' (cannot_open, io_error, timed_out, no_space, rebuild_failed, offline)", s);
}

// ---------------------------------------------------------------------------------------------------
// Children


namespace {

std::atomic<uint64_t> g_incarnations{0};

struct ParsedChild {
  Uri uri;
  Uuid uuid;
  bool local = false;
  std::string name;  // local: the device's name
};

Result<ParsedChild> parse_child_uri(const std::string& text) {
  auto u = Uri::Parse(text);
  if (!u.ok()) return u.status().WithContext("child");
  ParsedChild p;
  p.uri = *u;
  const std::string* id = u->param("uuid");
  if (!id) return Status::Errorf(Errc::kInval, "child '{}': the child's UUID is required (?uuid=...)", text);
  auto uuid = Uuid::Parse(*id);
  if (!uuid.ok()) return Status::Errorf(Errc::kInval, "child '{}': uuid: {}", text, uuid.status().message());
  p.uuid = *uuid;
  if (u->scheme == "bdev") {
    if (!u->host.empty() || u->path.size() < 2) {
      return Status::Errorf(Errc::kInval, "child '{}': a local child is bdev:///<device name>?uuid=<uuid>", text);
    }
    auto q = UriQuery::Make(*u, {"uuid"});
    if (!q.ok()) return q.status().WithContext("child");
    p.local = true;
    p.name = u->path.substr(1);
  } else if (u->scheme != "nvmf" && u->scheme != "nvmf+tcp") {
    return Status::Errorf(Errc::kInval, "child '{}': unsupported scheme '{}' (bdev:/// for a local device, nvmf:// for a remote one)",
                          text, u->scheme);
  }
  return p;
}

}  // namespace

FaultReason Nexus::reason_for(Errc e) {
  switch (e) {
    case Errc::kNoSpc: return FaultReason::kNoSpace;
    case Errc::kTimedOut: return FaultReason::kTimedOut;
    default: return FaultReason::kIoError;
  }
}

// ---------------------------------------------------------------------------------------------------
// Create

Nexus::Nexus(BdevProps props, NexusOptions opts, Layout layout, BdevRegistry& reg, RecordStore* store)
    : Bdev(std::move(props)),
      opts_(std::move(opts)),
      layout_(layout),
      registry_(reg),
      store_(store),
      counters_(reg.reactors().size()),
      channels_(reg.reactors().size(), nullptr) {
  dlog_ = std::make_unique<DirtyLog>(*this, opts_.al_extents, uint32_t(std::countr_zero(opts_.region_bytes)));
  auto v = std::make_shared<ChildView>();
  view_ = v;
}

Nexus::~Nexus() = default;

Task<Result<Nexus*>> Nexus::Create(BdevRegistry& registry, NexusOptions opts, RecordStore* store) {
  const std::string name = opts.uuid.ToString();
  if (opts.uuid.is_nil()) co_return Status(Errc::kInval, "uuid: the volume's UUID is required");
  if (opts.size_bytes == 0) co_return Status(Errc::kInval, "size: required (bytes)");
  if (opts.children.empty()) co_return Status(Errc::kInval, "children: at least one child is required");
  if (opts.children.size() > kMaxChildren) {
    co_return Status::Errorf(Errc::kInval, "children: at most {} children, got {}", kMaxChildren, opts.children.size());
  }
  if (Status st = opts.rebuild.Validate(512); !st.ok()) co_return st;
  if (opts.al_extents < 1 || opts.al_extents > kAlMaxExtents) {
    co_return Status::Errorf(Errc::kInval, "activity log: {} extents; it must be 1 to {}", opts.al_extents, kAlMaxExtents);
  }
  if (opts.region_bytes < (64u << 10) || opts.region_bytes > (1u << 20) || (opts.region_bytes & (opts.region_bytes - 1))) {
    co_return Status::Errorf(Errc::kInval, "dirty-region size: {} bytes; it must be a power of two from 64 KiB to 1 MiB",
                             opts.region_bytes);
  }
  if (!opts.persistence_key.empty() && !store) {
    co_return Status(Errc::kInval, "persistence_key: this engine has no record store (start it with --etcd)");
  }
  std::vector<Uuid> seen;
  for (const auto& c : opts.children) {
    TERN_CO_ASSIGN_OR_RETURN(ParsedChild p, parse_child_uri(c));
    if (std::find(seen.begin(), seen.end(), p.uuid) != seen.end()) {
      co_return Status::Errorf(Errc::kInval, "children: child {} is listed twice", p.uuid.ToString());
    }
    seen.push_back(p.uuid);
  }
  if (Status st = registry.check_new_name(name); !st.ok()) co_return st;

  BdevProps props;
  props.name = name;
  props.uuid = opts.uuid;
  props.product = "nexus";
  props.block_size = 512;  // settled by the first child below
  props.num_blocks = 0;
  // The device exists (unregistered) so that children can be opened on its behalf.
  std::unique_ptr<Nexus> nx(new Nexus(props, opts, Layout{}, registry, store));
  Status failed;
  for (size_t i = 0; i < opts.children.size() && failed.ok(); ++i) {
    auto c = co_await nx->open_child(opts.children[i], true);
    if (!c.ok()) {
      failed = c.status();
      break;
    }
    (*c)->slot = uint32_t(i);
    nx->children_.push_back(std::move(*c));
  }
  auto undo = [&]() -> Task<void> {
    for (auto& c : nx->children_) co_await nx->release_child(*c);
    nx->children_.clear();
  };
  if (!failed.ok()) {
    co_await undo();
    co_return failed;
  }
  // Geometry: one block size; every child holds the volume and the metadata region.
  const uint32_t bs = nx->children_[0]->desc->bdev().props().block_size;
  auto layout = Layout::For(opts.size_bytes, bs);
  if (!layout.ok()) failed = layout.status().WithContext("size");
  for (auto& c : nx->children_) {
    if (!failed.ok()) break;
    const BdevProps& cp = c->desc->bdev().props();
    if (cp.block_size != bs) {
      failed = Status::Errorf(Errc::kInval, "children: {} has {}-byte blocks and {} has {}-byte blocks; a nexus needs one block size",
                              nx->children_[0]->uri, bs, c->uri, cp.block_size);
    } else if (c->desc->bdev().num_blocks() * bs < layout->required_child_bytes()) {
      failed = Status::Errorf(Errc::kNoSpc,
                              "child {} holds {} bytes; a volume of {} bytes needs {} bytes on every child (the volume, then "
                              "{} bytes of nexus metadata from byte {})",
                              c->uri, c->desc->bdev().num_blocks() * bs, opts.size_bytes, layout->required_child_bytes(),
                              layout->meta_bytes, layout->meta_offset);
    }
  }
  if (failed.ok()) {
    nx->layout_ = *layout;
    nx->props_.block_size = bs;
    nx->props_.num_blocks = layout->volume_blocks();
    uint32_t max_io = 0, align = 1;
    bool cache = false, zeroes = true;
    for (auto& c : nx->children_) {
      const BdevProps& cp = c->desc->bdev().props();
      if (cp.max_io_blocks) max_io = max_io ? std::min(max_io, cp.max_io_blocks) : cp.max_io_blocks;
      align = std::max(align, cp.buf_align);
      cache |= cp.write_cache;
      zeroes &= cp.unmap_reads_zeroes;
    }
    nx->props_.max_io_blocks = max_io;
    nx->props_.buf_align = align;
    nx->props_.write_cache = cache;
    nx->props_.unmap_reads_zeroes = zeroes;
  }
  // Generations (docs/design/rebuild.md): the new nexus starts one past both what the record says and
  // what any child's label says; a child behind the newest label (or without a label, when others have
  // one) holds older data and joins out of sync.
  if (failed.ok()) failed = co_await nx->settle_generations();
  // The activity log and the dirty bitmaps: after an unclean stop the log's extents are reconciled
  // between the children here, before any host I/O (docs/design/rebuild.md).
  if (failed.ok()) failed = co_await nx->dlog_->open();
  if (failed.ok()) co_await nx->load_rebuild_history();
  // The record first, then the labels: a crash between them leaves the labels behind the record, which
  // makes them look stale (a rebuild), never current when they are not.
  if (failed.ok()) failed = co_await nx->persist(/*takeover=*/true);
  for (auto& c : nx->children_) {
    if (!failed.ok()) break;
    failed = co_await nx->write_label(*c, c->sync == SyncState::kSynced);
  }
  if (!failed.ok()) {
    co_await undo();
    co_return failed;
  }
  co_await nx->publish();
  Nexus* raw = nx.get();
  auto added = registry.add(std::move(nx), "nexus");
  if (!added.ok()) {
    // The name was free when we began; someone took it meanwhile. The device is destroyed with its children.
    co_return added.status();
  }
  TLOG_INFO("nexus", "nexus {} created: {} bytes, {} children{}", name, opts.size_bytes, opts.children.size(),
            opts.persistence_key.empty() ? "" : fmt::format(", record at '{}'", opts.persistence_key));
  raw->auto_rebuilds();  // stale children
  co_return raw;
}

Task<Result<std::unique_ptr<Nexus::Child>>> Nexus::open_child(const std::string& uri, bool creating) {
  TERN_CO_ASSIGN_OR_RETURN(ParsedChild p, parse_child_uri(uri));
  auto c = std::make_unique<Child>();
  c->uri = uri;
  c->uuid = p.uuid;
  c->local = p.local;
  c->incarnation = ++g_incarnations;
  Bdev* b = nullptr;
  if (p.local) {
    b = registry_.find(p.name);
    if (!b) co_return Status::Errorf(Errc::kNoDev, "child {}: no device '{}' on this node", uri, p.name);
  } else {
    // A remote child: our initiator's device for it, made for this nexus (as this node's host).
    std::string dev_uri = uri;
    if (!opts_.host_nqn.empty() && !p.uri.param("hostnqn")) dev_uri += "&hostnqn=" + opts_.host_nqn;
    Bdev* existing = registry_.find(p.uuid.ToString());
    if (existing && existing->props().uuid == p.uuid && !creating) {
      b = existing;
    } else {
      auto made = co_await registry_.create(dev_uri);
      if (!made.ok()) co_return made.status().WithContext(fmt::format("child {}", uri));
      b = *made;
      c->created = true;
    }
  }
  if (b->props().uuid != p.uuid) {
    Status st = Status::Errorf(Errc::kInval, "child {}: the device's UUID is {}, not {}", uri,
                               b->props().uuid.ToString(), p.uuid.ToString());
    if (c->created) (void)co_await registry_.destroy(b->name(), true);
    co_return st;
  }
  c->device = b->name();
  Nexus* self = this;
  const Uuid id = p.uuid;
  auto desc = registry_.open(c->device, true, [self, id](BdevEvent ev) {
    if (ev != BdevEvent::kRemove) return;
    // The child's device is being destroyed under us: it is faulted (and its descriptor closed) now.
    self->tasks_.spawn([](Nexus* nx, Uuid u) -> Task<void> {
      Status st = co_await nx->retire(u, FaultReason::kCannotOpen);
      if (!st.ok()) TLOG_WARN("nexus", "nexus {}: child {} was removed: {}", nx->name(), u.ToString(), st);
      auto g = co_await nx->ops_mu_.lock();
      if (Child* ch = nx->find_child(u)) {
        if (ch->desc) {
          ch->state = ChildState::kFaulted;
          if (ch->reason == FaultReason::kNone) ch->reason = FaultReason::kCannotOpen;
          co_await nx->publish();
          co_await nx->release_child(*ch);
        }
      }
    }(self, id));
  });
  if (!desc.ok()) {
    if (c->created) (void)co_await registry_.destroy(b->name(), true);
    co_return desc.status().WithContext(fmt::format("child {}", uri));
  }
  c->desc = std::move(*desc);
  if (p.local) {
    // One nexus per local replica: a second one is refused here, not left to overwrite the first. The
    // node's NVMe/TCP target may expose the replica too (to a nexus elsewhere): those writers are
    // governed by the namespace's reservations, which this nexus takes part in (fence()).
    Status st = c->desc->claim(fmt::format("nexus {}", opts_.uuid.ToString()), /*exclusive_writer=*/false);
    if (!st.ok()) {
      c->desc.reset();
      co_return st.WithContext(fmt::format("child {}", uri));
    }
  }
  c->flushable = b->props().write_cache && b->supports(IoType::kFlush);
  if (opts_.resv_key && (!p.local || opts_.local_resv)) {
    Status st = co_await fence(*c);
    if (!st.ok()) {
      co_await release_child(*c);
      co_return st.WithContext(fmt::format("child {}", uri));
    }
  }
  co_return c;
}

// Reservations (NVMe Base 2.0, 8.19): register our key (replacing an older key of ours), then acquire the
// reservation, or preempt its holder. Reservation commands are I/O commands: they go on this reactor's
// I/O queue of the child's device.
std::array<uint8_t, 16> Nexus::host_id() const {
  return nvmf::host_id_for(opts_.host_nqn.empty() ? nvmf::default_host_nqn() : opts_.host_nqn);
}

Task<Result<nvmf::PassthruReply>> Nexus::resv_command(Child& c, nvme::Sqe sqe, std::vector<uint8_t> data,
                                                      uint32_t in_len) {
  if (c.local) co_return opts_.local_resv->command(c.device, host_id(), sqe, data, in_len);
  co_return co_await nvmf::io_passthru(c.desc->bdev(), sqe, std::move(data), in_len);
}

Task<Status> Nexus::fence(Child& c) {
  using namespace nvme;
  auto keys = [](uint64_t a, uint64_t b) {
    std::vector<uint8_t> d(16);
    store_le<uint64_t>(d.data(), a);
    store_le<uint64_t>(d.data() + 8, b);
    return d;
  };
  Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kReservationRegister;
  s.cdw10 = 0;  // register
  std::vector<uint8_t> d = keys(0, opts_.resv_key);
  auto reg = co_await resv_command(c, s, std::move(d), 0);
  if (!reg.ok() && c.local && reg.status().code() == Errc::kNoEnt) co_return Status::Ok();  // not shared
  if (!reg.ok()) co_return reg.status().WithContext("reservation register");
  if (reg->status.sc == sc::kReservationConflict) {
    // Registered already with another key (an earlier nexus of ours on this node): replace it.
    s.cdw10 = 2 | (1u << 3);  // replace, ignoring the current key
    d = keys(0, opts_.resv_key);
    reg = co_await resv_command(c, s, std::move(d), 0);
    if (!reg.ok()) co_return reg.status().WithContext("reservation register (replace)");
  }
  if (!reg->status.ok()) {
    co_return Status::Errorf(Errc::kAccess, "reservation register: {}", nvmf::describe_status(reg->status));
  }
  // Who holds it now?
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kReservationReport;
  const uint32_t len = 4096;
  s.cdw10 = len / 4 - 1;
  s.cdw11 = 1;  // extended data structure (128-bit host identifiers)
  auto rep = co_await resv_command(c, s, {}, len);
  if (!rep.ok()) co_return rep.status().WithContext("reservation report");
  if (!rep->status.ok() || rep->data.size() < sizeof(ResvStatusExtHeader)) {
    co_return Status::Errorf(Errc::kIo, "reservation report: {}", nvmf::describe_status(rep->status));
  }
  ResvStatusExtHeader h;
  std::memcpy(&h, rep->data.data(), sizeof(h));
  const std::array<uint8_t, 16> me = host_id();
  bool held = h.rtype != 0, ours = false;
  uint64_t holder_key = 0;
  for (uint16_t i = 0; i < uint16_t(h.regctl); ++i) {
    const size_t off = sizeof(h) + size_t(i) * sizeof(ResvRegisteredControllerExt);
    if (off + sizeof(ResvRegisteredControllerExt) > rep->data.size()) break;
    ResvRegisteredControllerExt e;
    std::memcpy(&e, rep->data.data() + off, sizeof(e));
    if (e.rcsts & 1) {
      holder_key = e.rkey;
      // Ours: our key *and* our host (another node's nexus given the same key is not us).
      ours = holder_key == opts_.resv_key && std::memcmp(e.hostid, me.data(), 16) == 0;
    }
  }
  if (held && ours && ResvType(h.rtype) == opts_.resv_type) {
    watch_local(c);
    co_return Status::Ok();
  }
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kReservationAcquire;
  // Held by us with another type (a nexus re-created with a new type): preempting our own key changes it.
  const bool preempting = held && (!ours || ResvType(h.rtype) != opts_.resv_type);
  if (preempting && !ours && opts_.preempt == NexusOptions::Preempt::kNone) {
    co_return Status::Errorf(Errc::kAccess, "another host (key {:#x}) holds the reservation and the preempt policy is none",
                             holder_key);
  }
  if (preempting && !ours && opts_.preempt == NexusOptions::Preempt::kKey && holder_key != opts_.preempt_key) {
    co_return Status::Errorf(Errc::kAccess, "another host holds the reservation with key {:#x}, not the preempt key {:#x}",
                             holder_key, opts_.preempt_key);
  }
  s.cdw10 = (preempting ? 1u : 0u) | (uint32_t(opts_.resv_type) << 8);
  d = keys(opts_.resv_key, preempting ? holder_key : 0);
  auto acq = co_await resv_command(c, s, std::move(d), 0);
  if (!acq.ok()) co_return acq.status().WithContext("reservation acquire");
  if (!acq->status.ok()) {
    co_return Status::Errorf(Errc::kAccess, "reservation {}: {}", preempting ? "preempt" : "acquire",
                             nvmf::describe_status(acq->status));
  }
  if (preempting && !ours) {
    TLOG_WARN("nexus", "nexus {}: child {}: took the reservation from key {:#x} (an older nexus of this volume is "
              "fenced off)", name(), c.uri, holder_key);
  }
  watch_local(c);
  co_return Status::Ok();
}

void Nexus::watch_local(Child& c) {
  if (!c.local || !opts_.local_resv) return;
  opts_.local_resv->watch(c.device, host_id(), [this, who = c.uri] { fenced_off_by(who); });
  c.watched = true;
}

void Nexus::fenced_off(uint32_t slot) {
  if (fenced_.exchange(true)) return;  // one shutdown, however many requests were refused
  registry_.reactors().post(0, [this, slot] {
    std::string who = "a child";
    for (auto& c : children_)
      if (c->slot == slot) who = c->uri;
    fence_shutdown(std::move(who));
  });
}

void Nexus::fenced_off_by(std::string who) {
  // Primary reactor (the target's reservation change): nothing new reaches the children from here on.
  if (fenced_.exchange(true)) return;
  shutdown_.store(true, std::memory_order_release);
  fence_shutdown(std::move(who));
}

void Nexus::fence_shutdown(std::string who) {
  tasks_.spawn([](Nexus* nx, std::string w) -> Task<void> {
    TLOG_ERROR("nexus", "nexus {}: {}: another host took the reservation: a newer nexus holds the volume", nx->name(), w);
    co_await nx->self_shutdown("fenced off by a newer nexus (reservation taken)");
  }(this, std::move(who)));
}

Task<Result<Nexus::LabelRead>> Nexus::read_label(Child& c, const Layout& layout) {
  auto ch = ChannelRef::Get(*c.desc);
  if (!ch.ok()) co_return ch.status();
  const uint32_t bs = layout.block_size;
  AlignedBuffer buf(2 * Layout::kLabelSize, 4096);
  Errc e = co_await ch->read(buf.data(), layout.label_a / bs, 2 * Layout::kLabelSize / bs);
  if (e != Errc::kOk) co_return Status::Errorf(e, "child {}: reading its labels failed: {}", c.uri, errc_describe(e));
  auto a = ChildLabel::Decode(buf.data(), fmt::format("child {} label A", c.uri));
  auto b = ChildLabel::Decode(buf.data() + Layout::kLabelSize, fmt::format("child {} label B", c.uri));
  const auto& adopt = opts_.adopt_labels_of;
  bool adopted = false;
  for (auto* l : {&a, &b}) {
    if (l->ok() && (*l)->nexus != opts_.uuid && std::find(adopt.begin(), adopt.end(), (*l)->nexus) != adopt.end()) {
      *l = Status(Errc::kNoEnt, "a label of a volume this one was restored from");  // adopted: read as none
      adopted = true;
    }
    if (l->ok() && (*l)->nexus != opts_.uuid) {
      co_return Status::Errorf(Errc::kExist,
                               "child {} holds a label of volume {}: it belongs to another nexus; destroy and recreate the "
                               "replica to reuse it",
                               c.uri, (*l)->nexus.ToString());
    }
  }
  LabelRead r;
  r.adopted = adopted;
  if (a.ok()) {
    r.newest = *a;
    r.newest_in_a = true;
  }
  if (b.ok() && (!r.newest || b->sequence > r.newest->sequence)) {
    r.newest = *b;
    r.newest_in_a = false;
  }
  co_return r;
}

Task<Status> Nexus::write_label(Child& c, bool in_sync, const Layout* at_layout) {
  const Layout& layout = at_layout ? *at_layout : layout_;
  TERN_CO_ASSIGN_OR_RETURN(LabelRead old, co_await read_label(c, layout));
  auto ch = ChannelRef::Get(*c.desc);
  if (!ch.ok()) co_return ch.status();
  const uint32_t bs = layout.block_size;
  const uint64_t nb = Layout::kLabelSize / bs;
  AlignedBuffer buf(Layout::kLabelSize, 4096);
  ChildLabel l;
  l.sequence = (old.newest ? old.newest->sequence : 0) + 1;
  l.nexus = opts_.uuid;
  l.child = c.uuid;
  l.volume_bytes = layout.volume_bytes;
  l.block_size = bs;
  l.meta_offset = layout.meta_offset;
  l.meta_bytes = layout.meta_bytes;
  l.in_sync = in_sync;
  // In sync: the volume's generation. Out of sync: the data is still what it was.
  l.generation = in_sync ? generation_ : (old.newest ? old.newest->generation : 0);
  l.written_ns = wall_clock_ns();
  l.Encode(buf.data());
  // The slot not holding the newest copy: a torn write leaves the other one intact.
  const bool to_a = !(old.newest && old.newest_in_a);
  const uint64_t at = (to_a ? layout.label_a : layout.label_b) / bs;
  Errc e = co_await ch->write(buf.data(), at, nb, /*fua=*/true);
  if (e == Errc::kOk && old.adopted) {
    // The other slot may still hold the adopted nexus's label: ours there too, so that the child reads
    // as this nexus's alone (also to a later create that no longer lists the adopted one).
    e = co_await ch->write(buf.data(), (to_a ? layout.label_b : layout.label_a) / bs, nb, /*fua=*/true);
  }
  if (e != Errc::kOk) co_return Status::Errorf(e, "child {}: writing its label failed: {}", c.uri, errc_describe(e));
  c.label_seq = l.sequence;
  c.newest_in_a = to_a;
  c.data_gen = l.generation;
  co_return Status::Ok();
}

Task<Status> Nexus::settle_generations() {
  uint64_t recorded = 0;
  bool have_record = false;
  if (store_ && !opts_.persistence_key.empty()) {
    std::string key = opts_.persistence_key;
    auto got = co_await store_->get_versioned(std::move(key));
    if (got.ok() && got->version != 0) {
      record_rev_ = got->version;
      auto rec = NexusRecord::FromJson(got->value);
      if (!rec.ok()) co_return rec.status().WithContext(fmt::format("the record at '{}'", opts_.persistence_key));
      recorded = rec->generation;
      have_record = true;
      for (const auto& rc : rec->children) {
        if (Child* c = find_child(rc.uuid)) c->rebuild_token = rc.rebuild_token;  // kept for out-of-sync ones below
      }
    } else if (!got.ok()) {
      co_return got.status().WithContext(fmt::format("reading the record at '{}'", opts_.persistence_key));
    }
  }
  uint64_t newest = 0;
  std::string newest_uri;
  for (auto& c : children_) {
    TERN_CO_ASSIGN_OR_RETURN(LabelRead lr, co_await read_label(*c, layout_));
    if (!lr.newest) continue;
    c->labelled = true;
    c->data_gen = lr.newest->generation;
    if (c->data_gen > newest) {
      newest = c->data_gen;
      newest_uri = c->uri;
    }
  }
  if (have_record && recorded > 0 && newest > recorded) {
    co_return Status::Errorf(Errc::kInval,
                             "child {} holds generation {} of the volume but its record at '{}' says {}: the record is "
                             "older than the data (restored or rolled back?); fix the record before creating the nexus",
                             newest_uri, newest, opts_.persistence_key, recorded);
  }
  generation_ = std::max(recorded, newest) + 1;
  for (auto& c : children_) {
    if (c->labelled && c->data_gen == newest && newest > 0) c->rebuild_token = 0;  // current: nothing to resume
    if (newest > 0 && (!c->labelled || c->data_gen < newest)) {
      c->sync = SyncState::kOutOfSync;
      TLOG_WARN("nexus", "nexus {}: child {} holds generation {}, the newest is {}: it joins out of sync", name(), c->uri,
                c->labelled ? c->data_gen : 0, newest);
    }
  }
  co_return Status::Ok();
}

Task<Status> Nexus::new_generation(const char* why) {
  ++generation_;
  Status st = co_await persist();
  if (!st.ok()) co_return st;
  for (auto& c : children_) {
    if (c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc) continue;
    Status ls = co_await write_label(*c, true);
    if (!ls.ok()) {
      TLOG_WARN("nexus", "nexus {}: generation {} ({}): child {}'s label: {}; it will look stale", name(), generation_, why,
                c->uri, ls);
    }
  }
  TLOG_INFO("nexus", "nexus {}: generation {} ({})", name(), generation_, why);
  co_return Status::Ok();
}

Task<void> Nexus::release_child(Child& c) {
  while (c.pins > 0) co_await Reactor::sleep_for(1'000'000);  // a rebuild's request on it ends first
  if (c.watched) {
    opts_.local_resv->watch(c.device, host_id(), {});
    c.watched = false;
  }
  c.desc.reset();
  if (c.created) {
    Status st = co_await registry_.destroy(c.device, true);
    if (!st.ok() && st.code() != Errc::kNoDev) TLOG_WARN("nexus", "nexus {}: closing child device '{}': {}", name(), c.device, st);
    c.created = false;
  }
}

// ---------------------------------------------------------------------------------------------------
// The children view

std::shared_ptr<const ChildView> Nexus::view() const {
  std::lock_guard lk(view_mu_);
  return view_;
}

Task<void> Nexus::publish() {
  auto v = std::make_shared<ChildView>();
  v->version = view_version_.load() + 1;
  for (auto& c : children_) {
    ChildView::Slot& s = v->slots[c->slot];
    s.present = true;
    s.desc = c->desc.get();
    s.incarnation = c->incarnation;
    const bool online = c->state == ChildState::kOnline && c->desc;
    s.write = online;
    s.synced = online && c->sync == SyncState::kSynced;
    s.read = s.synced;
    s.local = c->local;
    s.flush = c->flushable;
  }
  v->bitmaps = dlog_->bitmaps();
  {
    std::lock_guard lk(view_mu_);
    view_ = v;
  }
  view_version_.store(v->version, std::memory_order_release);
  // Every channel takes it before we go on: after this, no new request reaches a child the view dropped.
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->refresh();
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Record

NexusRecord Nexus::record() const {
  NexusRecord r;
  r.writer = writer_;
  r.clean_shutdown = shutting_down_ && !failing_held_ && !shut_done_;
  r.generation = generation_;
  for (auto& c : children_) {
    r.children.push_back({c->uuid, c->state == ChildState::kOnline && c->sync == SyncState::kSynced, c->rebuild_token});
  }
  return r;
}

Task<Status> Nexus::persist(bool takeover) {
  if (!store_ || opts_.persistence_key.empty()) co_return Status::Ok();
  while (writer_ == 0) {
    const auto b = Uuid::Generate().bytes();
    std::memcpy(&writer_, b.data(), sizeof(writer_));
  }
  Reactor* r = Reactor::current();
  const uint64_t deadline = r->now() + opts_.persist_timeout_ns;
  for (;;) {
    std::string key = opts_.persistence_key;
    std::string value = record().ToJson();
    auto put = co_await store_->put_if(std::move(key), std::move(value), record_rev_);
    if (put.ok()) {
      record_rev_ = *put;
      ++record_writes_;
      co_return Status::Ok();
    }
    Status st = put.status();
    if (st.code() == Errc::kStale) {
      // Someone else's put came between. Ours, whose answer was lost (a timeout), is retried against the
      // version it made; a newer nexus's means this one is superseded.
      std::string k = opts_.persistence_key;
      auto now = co_await store_->get_versioned(std::move(k));
      if (now.ok()) {
        auto rec = NexusRecord::FromJson(now->value);
        const bool mine = now->version != 0 && rec.ok() && rec->writer == writer_;
        if (mine || takeover) {
          if (!mine) {
            TLOG_WARN("nexus", "nexus {}: the record at '{}' was written by an older nexus meanwhile; this one takes over",
                      name(), opts_.persistence_key);
          }
          record_rev_ = now->version;
          continue;
        }
        TLOG_ERROR("nexus", "nexus {}: the record at '{}' was written by another nexus: a newer one holds the volume", name(),
                   opts_.persistence_key);
        if (!fenced_.exchange(true)) {
          shutdown_.store(true, std::memory_order_release);  // nothing new reaches the children
          tasks_.spawn([](Nexus* nx) -> Task<void> {
            co_await nx->self_shutdown("superseded: a newer nexus wrote the volume's record");
          }(this));
        }
        co_return Status::Errorf(Errc::kStale, "nexus {}: superseded: another nexus wrote the record at '{}'", name(),
                                 opts_.persistence_key);
      }
      st = now.status();
    }
    if (r->now() >= deadline) {
      co_return Status::Errorf(st.code(), "nexus {}: the record at '{}' could not be written for {} s: {}", name(),
                               opts_.persistence_key, opts_.persist_timeout_ns / 1'000'000'000ull, st.message());
    }
    TLOG_RL_WARN("nexus", 1000, "nexus {}: writing its record failed ({}); retrying", name(), st);
    co_await Reactor::sleep_for(opts_.persist_retry_ns);
  }
}

// ---------------------------------------------------------------------------------------------------
// Retire

Nexus::Child* Nexus::find_child(const Uuid& u) {
  for (auto& c : children_)
    if (c->uuid == u) return c.get();
  return nullptr;
}

size_t Nexus::healthy_children() const {
  size_t n = 0;
  for (auto& c : children_) n += c->state == ChildState::kOnline && c->sync == SyncState::kSynced && c->desc;
  return n;
}

void Nexus::freeze() {
  if (freezes_++ == 0) frozen_.store(true, std::memory_order_release);
}

void Nexus::unfreeze() {
  if (freezes_ == 0 || --freezes_ > 0) return;
  frozen_.store(false, std::memory_order_release);
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    set.post(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->release_held();
    });
  }
}

Task<Status> Nexus::retire(Uuid id, FaultReason reason) {
  auto g = co_await ops_mu_.lock();
  // First: an earlier retire that could not be recorded shut the nexus down, and a request waiting for
  // this one must not complete as if its child's retirement had been recorded.
  if (failing_held_) co_return Status(Errc::kShutdown, "the nexus is shut down");
  // Fenced off (a newer nexus holds the volume): its failures are not the children's; nothing is retired
  // or recorded any more.
  if (fenced_.load()) co_return Status(Errc::kShutdown, "the nexus is fenced off by a newer one");
  Child* c = find_child(id);
  if (!c || c->state != ChildState::kOnline || !c->desc) co_return Status::Ok();  // already out (and recorded)
  const bool synced = c->sync == SyncState::kSynced;
  if (synced && healthy_children() == 1) {
    // The last one with current data stays: its failure fails host I/O, and the record keeps saying it
    // is the one to rebuild from.
    co_return Status::Errorf(Errc::kIo, "child {} is the last healthy child of nexus {}; it is not retired", c->uri, name());
  }
  TLOG_WARN("nexus", "nexus {}: retiring child {} ({})", name(), c->uri, fault_reason_name(reason));
  // A rebuilding child's checkpoint stops counting once it misses a write: its token leaves the record
  // before anything it missed is acknowledged (held meanwhile, as for an in-sync child).
  const bool tokened = c->rebuild_token != 0;
  // A child whose label may say "in sync" although the nexus never counted it so (its rebuild's last
  // step failed, possibly after the label landed) is retired like an in-sync one: the new generation
  // makes that label stale, so no later nexus takes the child as current.
  const bool bump = synced || c->label_may_claim_sync;
  const bool hold = bump || tokened;
  if (hold) freeze();
  c->state = ChildState::kFaulted;
  c->reason = reason;
  c->rebuild_token = 0;
  c->label_may_claim_sync = false;
  // An in-sync child's dirty-region log: from the view below on, every write marks what it misses.
  bool tracked = false;
  if (synced) tracked = co_await dlog_->track(id, c->data_gen);  // (no co_await inside && : GCC 12)
  co_await publish();
  Status st;
  if (bump) {
    st = co_await new_generation("a child was retired");  // (not `c ? co_await x : y`: GCC 12)
  } else if (tokened) {
    st = co_await persist();
  }
  // Its slot on disk before anything it missed is acknowledged (a crash before: no slot, full rebuild).
  if (st.ok() && tracked) {
    Status ts = co_await dlog_->write_slot_table();
    if (!ts.ok()) TLOG_WARN("nexus", "nexus {}: child {}'s dirty-region slot: {}; it will need a full rebuild", name(), c->uri, ts);
  }
  if (!st.ok()) {
    TLOG_ERROR("nexus", "nexus {}: {}; shutting down rather than acknowledge what it could not record", name(), st);
    // Still under the lock: a retire waiting for it must find the nexus shut down, not the child "already
    // out" (the lock hands over at once when released).
    co_await self_shutdown("the record could not be written");
    co_return st;
  }
  if (hold) unfreeze();
  co_await release_child(*c);
  co_return Status::Ok();
}

void Nexus::request_retire(unsigned reactor, BdevIo* parent, uint32_t failed_slots, Errc first_error) {
  ReactorSet& set = registry_.reactors();
  set.post(0, [this, reactor, parent, failed_slots, first_error] {
    const bool started = tasks_.spawn([](Nexus* nx, unsigned r, BdevIo* p, uint32_t slots, Errc err) -> Task<void> {
      Status result;
      for (uint32_t s = 0; s < kMaxChildren && result.ok(); ++s) {
        if (!(slots & (1u << s))) continue;
        Uuid id;
        for (auto& c : nx->children_)
          if (c->slot == s) id = c->uuid;
        if (id.is_nil()) continue;  // removed meanwhile: its removal was recorded
        result = co_await nx->retire(id, reason_for(err));
        // What it missed, in its dirty-region log before the request completes.
        const uint32_t bs = nx->props().block_size;
        if (result.ok()) nx->dlog_->mark(id, p->offset_blocks * bs, p->num_blocks * bs);
      }
      // Not retired: the nexus shut itself down (nothing may be acknowledged now), or the child was the last
      // healthy one (the request failed where it mattered).
      const Errc e = result.ok() ? Errc::kOk : nx->failing_held_ ? Errc::kShutdown : err;
      nx->registry_.reactors().post(r, [nx, r, p, e] {
        if (NexusChannel* ch = nx->channels_[r]) ch->resolve(p, e);
      });
    }(this, reactor, parent, failed_slots, first_error));
    if (!started) {
      registry_.reactors().post(reactor, [this, reactor, parent] {
        if (NexusChannel* ch = channels_[reactor]) ch->resolve(parent, Errc::kShutdown);
      });
    }
  });
}

void Nexus::report_fault(uint32_t slot, uint64_t version, Errc e) {
  (void)version;
  registry_.reactors().post(0, [this, slot, e] {
    tasks_.spawn([](Nexus* nx, uint32_t s, Errc err) -> Task<void> {
      Uuid id;
      for (auto& c : nx->children_)
        if (c->slot == s) id = c->uuid;
      if (id.is_nil()) co_return;
      Status st = co_await nx->retire(id, reason_for(err));
      if (!st.ok()) TLOG_RL_WARN("nexus", 1000, "nexus {}: {}", nx->name(), st);
    }(this, slot, e));
  });
}

// ---------------------------------------------------------------------------------------------------
// Operations

NexusStatus Nexus::status() const {
  if (shut_done_) return NexusStatus::kShutdown;
  if (shutting_down_) return NexusStatus::kShuttingDown;
  const size_t healthy = healthy_children();
  if (healthy == 0) return NexusStatus::kFaulted;
  return healthy == children_.size() ? NexusStatus::kOnline : NexusStatus::kDegraded;
}

Task<NexusInfo> Nexus::info() {
  NexusInfo i;
  i.uuid = opts_.uuid;
  i.size_bytes = layout_.volume_bytes;
  i.block_size = layout_.block_size;
  i.status = status();
  i.persistence_key = opts_.persistence_key;
  i.generation = generation_;
  for (auto& c : children_) {
    ChildInfo ci;
    ci.uri = c->uri;
    ci.uuid = c->uuid;
    ci.device = c->device;
    ci.state = c->state;
    ci.reason = c->reason;
    ci.sync = c->sync;
    ci.local = c->local;
    ci.generation = c->data_gen;
    if (RebuildJob* j = rebuild_job(c->uuid)) ci.rebuild = j->stats();
    if (const DirtySlot* d = dlog_->slot_of(c->uuid)) {
      ci.tracked = true;
      ci.tracked_since_gen = d->base_gen;
      ci.dirty_bytes = std::min(d->bitmap->dirty_regions() << d->bitmap->region_shift(), layout_.volume_bytes);
    }
    i.children.push_back(ci);
  }
  i.log = dlog_->stats();
  // I/O counters live in each reactor's channel, per slot and child incarnation.
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    NexusInfo* out = &i;
    co_await set.submit_to(r, [this, r, out] {
      const ReactorCounters& rc = counters_[r];
      for (size_t k = 0; k < children_.size(); ++k) {
        const Child& c = *children_[k];
        if (rc.incarnation[c.slot] != c.incarnation) continue;
        const ChildIoCounters& x = rc.io[c.slot];
        ChildIoCounters& y = out->children[k].io;
        y.reads += x.reads;
        y.writes += x.writes;
        y.other += x.other;
        y.errors += x.errors;
        y.read_bytes += x.read_bytes;
        y.write_bytes += x.write_bytes;
      }
    });
  }
  co_return i;
}

Task<Status> Nexus::add_child(std::string uri) {
  auto g = co_await ops_mu_.lock();
  if (shutdown_.load() || shutting_down_) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shut down", name());
  TERN_CO_ASSIGN_OR_RETURN(ParsedChild p, parse_child_uri(uri));
  if (Child* existing = find_child(p.uuid)) {
    if (existing->uri == uri) co_return Status::Ok();  // the same call again
    co_return Status::Errorf(Errc::kExist, "nexus {} already has child {} as {}", name(), p.uuid.ToString(), existing->uri);
  }
  if (children_.size() >= kMaxChildren) {
    co_return Status::Errorf(Errc::kNoSpc, "nexus {} has {} children, the most it can have", name(), kMaxChildren);
  }
  auto c = co_await open_child(uri, true);
  if (!c.ok()) co_return c.status();
  Child& ch = **c;
  const BdevProps& cp = ch.desc->bdev().props();
  Status st;
  if (cp.block_size != layout_.block_size) {
    st = Status::Errorf(Errc::kInval, "child {} has {}-byte blocks; nexus {} has {}-byte blocks", uri, cp.block_size, name(),
                        layout_.block_size);
  } else if (ch.desc->bdev().num_blocks() * cp.block_size < layout_.required_child_bytes()) {
    st = Status::Errorf(Errc::kNoSpc, "child {} holds {} bytes; nexus {} needs {} bytes on every child", uri,
                        ch.desc->bdev().num_blocks() * cp.block_size, name(), layout_.required_child_bytes());
  }
  if (st.ok()) st = co_await write_label(ch, false);
  if (!st.ok()) {
    co_await release_child(ch);
    co_return st;
  }
  // The lowest free slot.
  uint32_t used = 0;
  for (auto& x : children_) used |= 1u << x->slot;
  uint32_t slot = 0;
  while (used & (1u << slot)) ++slot;
  ch.slot = slot;
  ch.sync = SyncState::kOutOfSync;  // it joins as a write-only member; rebuild makes it current
  children_.push_back(std::move(*c));
  co_await publish();
  st = co_await persist();
  if (!st.ok()) {
    co_await self_shutdown("the record could not be written");
    co_return st;
  }
  TLOG_INFO("nexus", "nexus {}: child {} added (out of sync)", name(), uri);
  auto_rebuilds();
  co_return Status::Ok();
}

Task<Status> Nexus::resize(uint64_t new_bytes) {
  auto lg = co_await dlog_->mu().lock();
  auto g = co_await ops_mu_.lock();
  if (shutdown_.load() || shutting_down_) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shut down", name());
  const uint32_t bs = layout_.block_size;
  if (new_bytes == layout_.volume_bytes) co_return Status::Ok();
  if (new_bytes < layout_.volume_bytes) {
    co_return Status::Errorf(Errc::kInval, "nexus {} holds {} bytes; shrinking to {} is not supported", name(),
                             layout_.volume_bytes, new_bytes);
  }
  auto nl = Layout::For(new_bytes, bs);
  if (!nl.ok()) co_return nl.status();
  for (auto& c : children_) {
    if (c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc) {
      co_return Status::Errorf(Errc::kBusy, "child {} of nexus {} is {} ({}): every child must be online and in sync to "
                               "resize; rebuild or remove it first",
                               c->uri, name(), child_state_name(c->state), sync_state_name(c->sync));
    }
  }
  // Every child must have grown already (a remote one's controller is asked for its size now).
  for (auto& c : children_) {
    Bdev& b = c->desc->bdev();
    auto sz = co_await b.rescan_async();
    if (!sz.ok() && sz.status().code() != Errc::kNotSup) co_return sz.status().WithContext(fmt::format("child {}", c->uri));
    const uint64_t have = b.num_blocks() * bs;
    if (have < nl->required_child_bytes()) {
      co_return Status::Errorf(Errc::kNoSpc, "child {} holds {} bytes; a {}-byte volume needs {} bytes on every child: grow "
                               "the replica first",
                               c->uri, have, new_bytes, nl->required_child_bytes());
    }
  }
  // 1. Labels in the new region (beyond the current volume: no host I/O reaches it). A crash here leaves
  //    the old labels in place: the volume opens at either size.
  for (auto& c : children_) {
    Status st = co_await write_label(*c, true, &*nl);
    if (!st.ok()) co_return st.WithContext("resize");
  }
  // The activity log and an empty slot table at the new place (tracked children lose their logs).
  if (Status st = co_await dlog_->resize(*nl); !st.ok()) co_return st.WithContext("resize");
  co_await publish();
  // 2. The old region becomes volume space: zeroed, so the host never reads our metadata as data.
  const uint64_t zero_from = layout_.volume_bytes;
  const uint64_t zero_to = std::min(new_bytes, layout_.meta_offset + layout_.meta_bytes);
  if (zero_to > zero_from) {
    AlignedBuffer zeros(kMiB, 4096);
    std::memset(zeros.data(), 0, kMiB);
    for (auto& c : children_) {
      auto ch = ChannelRef::Get(*c->desc);
      if (!ch.ok()) co_return ch.status();
      for (uint64_t off = zero_from; off < zero_to;) {
        const uint64_t n = std::min<uint64_t>(kMiB, zero_to - off);
        Errc e = co_await ch->write(zeros.data(), off / bs, n / bs, /*fua=*/true);
        if (e != Errc::kOk) {
          co_return Status::Errorf(e, "resize: child {}: zeroing the old metadata region failed: {}", c->uri,
                                   errc_describe(e));
        }
        off += n;
      }
    }
  }
  // 3. The new size for every request submitted from now on; holders hear of it.
  const uint64_t old_bytes = layout_.volume_bytes;
  layout_ = *nl;
  grow_to(new_bytes / bs);
  TLOG_INFO("nexus", "nexus {} grew from {} to {} bytes", name(), old_bytes, new_bytes);
  co_return Status::Ok();
}

Task<Status> Nexus::remove_child(Uuid id) {
  if (find_child(id)) {
    // Its rebuilds end first (a job may be finishing: that takes the reconfiguration lock).
    for (size_t i = 0; i < rebuilds_.size(); ++i) {
      if (rebuilds_[i]->child() != id) continue;
      rebuilds_[i]->stop("the child is being removed");
      co_await rebuilds_[i]->wait();
    }
  }
  auto g = co_await ops_mu_.lock();
  Child* c = find_child(id);
  if (!c) co_return Status::Errorf(Errc::kNoEnt, "nexus {} has no child {}", name(), id.ToString());
  if (children_.size() == 1) {
    co_return Status::Errorf(Errc::kBusy, "child {} is the only child of nexus {}; destroy the nexus instead", c->uri, name());
  }
  const bool healthy = c->state == ChildState::kOnline && c->sync == SyncState::kSynced && c->desc;
  if (healthy && healthy_children() == 1) {
    co_return Status::Errorf(Errc::kBusy, "child {} is the last healthy child of nexus {}; it cannot be removed", c->uri,
                             name());
  }
  // Out of the I/O path first, then out of the record, then closed. A child with a rebuild token is held
  // like an in-sync one: the record must lose the token before a write it misses is acknowledged.
  const bool tokened = !healthy && c->rebuild_token != 0;
  const bool bump = healthy || c->label_may_claim_sync;  // (as in retire())
  if (tokened) freeze();
  c->state = ChildState::kClosed;
  c->rebuild_token = 0;
  co_await publish();
  std::unique_ptr<Child> owned;
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->get() == c) {
      owned = std::move(*it);
      children_.erase(it);
      break;
    }
  }
  Status st;
  if (bump) {
    st = co_await new_generation("a healthy child was removed");
  } else {
    st = co_await persist();
  }
  if (tokened && st.ok()) unfreeze();
  co_await release_child(*owned);
  dlog_->untrack(id);  // removed on purpose: no partial rebuild if it is added again
  co_await publish();  // the slot is free
  if (st.ok()) {
    Status ts = co_await dlog_->write_slot_table();
    if (!ts.ok()) TLOG_WARN("nexus", "nexus {}: clearing child {}'s dirty-region slot: {}", name(), owned->uri, ts);
  }
  if (!st.ok()) {
    co_await self_shutdown("the record could not be written");
    co_return st;
  }
  std::erase_if(rebuilds_, [&](const std::unique_ptr<RebuildJob>& j) { return j->child() == id && j->ended(); });
  TLOG_INFO("nexus", "nexus {}: child {} removed", name(), owned->uri);
  co_return Status::Ok();
}

Task<Status> Nexus::fault_child(Uuid id, FaultReason reason) {
  {
    auto g = co_await ops_mu_.lock();
    Child* c = find_child(id);
    if (!c) co_return Status::Errorf(Errc::kNoEnt, "nexus {} has no child {}", name(), id.ToString());
    if (c->state != ChildState::kOnline) co_return Status::Ok();  // already out
    if (c->sync == SyncState::kSynced && healthy_children() == 1) {
      co_return Status::Errorf(Errc::kBusy, "child {} is the last healthy child of nexus {}; it cannot be faulted", c->uri,
                               name());
    }
  }
  co_return co_await retire(id, reason == FaultReason::kNone ? FaultReason::kOffline : reason);
}

Task<Status> Nexus::online_child(Uuid id) {
  auto g = co_await ops_mu_.lock();
  if (shutdown_.load() || shutting_down_) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shut down", name());
  Child* c = find_child(id);
  if (!c) co_return Status::Errorf(Errc::kNoEnt, "nexus {} has no child {}", name(), id.ToString());
  if (c->state == ChildState::kOnline) co_return Status::Ok();
  auto fresh = co_await open_child(c->uri, true);
  if (!fresh.ok()) co_return fresh.status();
  Status st = co_await write_label(**fresh, false);
  if (!st.ok()) {
    co_await release_child(**fresh);
    co_return st;
  }
  c->desc = std::move((*fresh)->desc);
  c->created = (*fresh)->created;
  c->device = (*fresh)->device;
  c->flushable = (*fresh)->flushable;
  c->incarnation = (*fresh)->incarnation;
  c->label_seq = (*fresh)->label_seq;
  c->newest_in_a = (*fresh)->newest_in_a;
  c->state = ChildState::kOnline;
  c->reason = FaultReason::kNone;
  c->sync = SyncState::kOutOfSync;  // back as a write-only member until it is rebuilt
  co_await publish();
  st = co_await persist();
  if (!st.ok()) {
    co_await self_shutdown("the record could not be written");
    co_return st;
  }
  TLOG_INFO("nexus", "nexus {}: child {} is online again (out of sync)", name(), c->uri);
  auto_rebuilds();
  co_return Status::Ok();
}

Task<Status> Nexus::shutdown_nexus() {
  if (shut_done_) co_return Status::Ok();
  if (shutting_down_) co_return Status::Errorf(Errc::kBusy, "nexus {} is already shutting down", name());
  shutting_down_ = true;
  shutdown_.store(true, std::memory_order_release);  // new requests are held: hosts wait, they do not fail
  co_await stop_rebuilds("the nexus is shutting down");  // each at its window's end (its range lock released)
  // What is on the children finishes first, and so do retires those requests wait for (they may still
  // write the record: a request they hold back must not complete unrecorded).
  Status drained = co_await drain(30'000'000'000ull);
  if (!drained.ok()) TLOG_WARN("nexus", "nexus {}: shutting down anyway: {}", name(), drained);
  // Bitmaps on disk and an empty activity log: the next nexus has nothing to reconcile.
  if (drained.ok()) {
    Status ls = co_await dlog_->close();
    if (!ls.ok()) TLOG_WARN("nexus", "nexus {}: closing the activity log: {}; the next nexus reconciles it", name(), ls);
  }
  auto g = co_await ops_mu_.lock();
  Status st = co_await persist();  // clean_shutdown: true (record() says so while shutting down)
  for (auto& c : children_) {
    if (c->state == ChildState::kOnline) c->state = ChildState::kClosed;
  }
  co_await publish();
  for (auto& c : children_) co_await release_child(*c);
  shut_done_ = true;
  TLOG_INFO("nexus", "nexus {} shut down{}", name(), st.ok() ? "" : fmt::format(" (record: {})", st.message()));
  co_return st;
}

Task<Status> Nexus::write_barrier(uint64_t timeout_ns) {
  auto g = co_await epoch_mu_.lock();
  ReactorSet& set = registry_.reactors();
  const uint64_t until = now_ns() + timeout_ns;
  uint64_t wait_ns = 5'000;
  // Flip every channel's epoch (after its previous one drained: a range lock that timed out may have
  // left writes there), then wait for the old epoch to drain everywhere.
  for (unsigned r = 0; r < set.size(); ++r) {
    for (;;) {
      const bool flipped = co_await set.submit_to(r, [this, r] {
        NexusChannel* ch = channels_[r];
        return ch ? ch->flip_epoch() : true;
      });
      if (flipped) break;
      if (now_ns() >= until) co_return Status::Errorf(Errc::kTimedOut, "nexus {}: write barrier timed out", name());
      co_await Reactor::sleep_for(wait_ns);
      wait_ns = std::min<uint64_t>(wait_ns * 2, 100'000);
    }
  }
  const uint64_t busy = co_await drain_old_writes(until, 5'000, 100'000);
  if (busy == 0) co_return Status::Ok();
  co_return Status::Errorf(Errc::kTimedOut, "nexus {}: {} writes still out after {} ms", name(), busy, timeout_ns / 1'000'000);
}

Task<uint64_t> Nexus::drain_old_writes(uint64_t until, uint64_t wait_ns, uint64_t max_wait_ns) {
  ReactorSet& set = registry_.reactors();
  for (;;) {
    uint64_t busy = 0;
    for (unsigned r = 0; r < set.size(); ++r) {
      busy += co_await set.submit_to(r, [this, r]() -> uint64_t {
        NexusChannel* ch = channels_[r];
        return ch ? ch->old_writes() : 0;
      });
    }
    if (busy == 0 || now_ns() >= until) co_return busy;
    co_await Reactor::sleep_for(wait_ns);
    wait_ns = std::min(wait_ns * 2, max_wait_ns);
  }
}

Task<Status> Nexus::lock_range(uint64_t lba, uint64_t blocks, uint64_t timeout_ns) {
  auto eg = co_await epoch_mu_.lock();  // (not with a write barrier: both flip the epochs)
  {
    std::lock_guard lk(view_mu_);
    if (range_lock_) co_return Status::Errorf(Errc::kBusy, "nexus {}: a range is locked already", name());
    range_lock_ = std::make_pair(lba, lba + blocks);
  }
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    const bool took = co_await set.submit_to(r, [this, r, lba, blocks] {
      NexusChannel* ch = channels_[r];
      return ch ? ch->lock_range(lba, lba + blocks) : true;
    });
    if (!took) {
      co_await unlock_range();
      co_return Status::Errorf(Errc::kBusy, "nexus {}: writes from an earlier range lock are still out", name());
    }
  }
  const uint64_t busy = co_await drain_old_writes(now_ns() + timeout_ns, 20'000, 1'000'000);
  if (busy == 0) co_return Status::Ok();
  co_await unlock_range();
  co_return Status::Errorf(Errc::kTimedOut, "nexus {}: {} writes still out after {} ms; range not locked", name(), busy,
                           timeout_ns / 1'000'000);
}

Task<void> Nexus::unlock_range() {
  {
    std::lock_guard lk(view_mu_);
    range_lock_.reset();
  }
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->unlock_range();
    });
  }
}

Task<Status> Nexus::drain(uint64_t timeout_ns) {
  ReactorSet& set = registry_.reactors();
  const uint64_t until = now_ns() + timeout_ns;
  uint64_t wait_ns = 50'000;
  for (;;) {
    uint64_t busy = 0;
    for (unsigned r = 0; r < set.size(); ++r) {
      busy += co_await set.submit_to(r, [this, r]() -> uint64_t {
        NexusChannel* ch = channels_[r];
        return ch ? ch->on_children() + ch->parked() : 0;
      });
    }
    if (busy == 0) co_return Status::Ok();
    if (now_ns() >= until) {
      co_return Status::Errorf(Errc::kTimedOut, "nexus {}: {} requests still on the children after {} ms", name(), busy,
                               timeout_ns / 1'000'000);
    }
    co_await Reactor::sleep_for(wait_ns);
    wait_ns = std::min<uint64_t>(wait_ns * 2, 1'000'000);
  }
}

Task<void> Nexus::self_shutdown(const char* why) {
  if (failing_held_) co_return;
  shutdown_.store(true, std::memory_order_release);
  TLOG_ERROR("nexus", "nexus {} shuts itself down: {}", name(), why);
  shutting_down_ = true;
  shut_done_ = true;
  failing_held_ = true;  // another nexus may take over: fail what waits, so hosts go there
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->fail_held(Errc::kShutdown);
    });
  }
}

Task<void> Nexus::close_children() {
  shutdown_.store(true, std::memory_order_release);
  failing_held_ = true;
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->fail_held(Errc::kNoDev);
    });
  }
  co_await stop_rebuilds("the nexus is being destroyed");
  auto g = co_await ops_mu_.lock();
  for (auto& c : children_) {
    if (c->state == ChildState::kOnline) c->state = ChildState::kClosed;
  }
  co_await publish();
  for (auto& c : children_) co_await release_child(*c);
}

// ---------------------------------------------------------------------------------------------------
// Rebuild (the job itself: rebuild.cc)

Task<Errc> Nexus::Child::io(IoType t, void* buf, uint64_t lba, uint64_t blocks, bool fua) {
  Pin pin(*this);
  if (!desc) co_return Errc::kNoDev;
  auto ch = ChannelRef::Get(*desc);
  if (!ch.ok()) co_return ch.status().code();
  switch (t) {
    case IoType::kRead: co_return co_await ch->read(buf, lba, blocks);
    case IoType::kWrite: co_return co_await ch->write(buf, lba, blocks, fua);
    case IoType::kWriteZeroes: co_return co_await ch->write_zeroes(lba, blocks);
    case IoType::kFlush: co_return co_await ch->flush();
    default: co_return Errc::kNotSup;
  }
}

Task<Status> Nexus::start_rebuild(Uuid id, std::optional<RebuildOptions> opts) {
  auto g = co_await ops_mu_.lock();  // the child cannot change under the checks and the token below
  if (shutdown_.load() || shutting_down_) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shut down", name());
  Child* c = find_child(id);
  if (!c) co_return Status::Errorf(Errc::kNoEnt, "nexus {} has no child {}", name(), id.ToString());
  const RebuildOptions o = opts ? *opts : opts_.rebuild;
  if (Status st = o.Validate(layout_.block_size); !st.ok()) co_return st;
  if (RebuildJob* j = rebuild_job(id); j && !j->finished()) co_return Status::Ok();  // running or paused already
  if (c->state != ChildState::kOnline || !c->desc) {
    co_return Status::Errorf(Errc::kBusy, "child {} of nexus {} is {}: online it first", c->uri, name(),
                             child_state_name(c->state));
  }
  if (c->sync == SyncState::kSynced) {
    co_return Status::Errorf(Errc::kInval, "child {} of nexus {} is in sync: there is nothing to rebuild", c->uri, name());
  }
  if (!rebuild_source(id, 0)) {
    co_return Status::Errorf(Errc::kBusy, "nexus {} has no in-sync child to rebuild {} from", name(), c->uri);
  }
  // Partial when the child's dirty-region log can be trusted: it left in sync at exactly the generation
  // its data still carries (docs/design/rebuild.md, rule 4). Otherwise full, and why.
  std::shared_ptr<RebuildJob::Dirty> dirty;
  std::string reason;
  const DirtySlot* d = dlog_->slot_of(id);
  if (d && d->base_gen == c->data_gen && c->data_gen > 0) {
    dirty = std::make_shared<RebuildJob::Dirty>();
    dirty->bits = d->bitmap->snapshot();
    dirty->region_shift = d->bitmap->region_shift();
    reason = fmt::format("partial: the child left at generation {} (the volume is at {}); its dirty-region log marks {} "
                         "bytes",
                         d->base_gen, generation_,
                         std::min(d->bitmap->dirty_regions() << d->bitmap->region_shift(), layout_.volume_bytes));
  } else if (d) {
    reason = fmt::format("full: its dirty-region log starts at generation {} but the child holds generation {}", d->base_gen,
                         c->data_gen);
  } else if (c->labelled || c->data_gen > 0) {
    reason = fmt::format("full: the child holds generation {} (the volume is at {}) and has no dirty-region log (it left "
                         "while out of sync, was removed, or its log was lost)",
                         c->data_gen, generation_);
  } else {
    reason = "full: the child is new to the volume";
  }
  // Resume from the child's checkpoint when its token is still the record's (the child has had every
  // write since); otherwise a new token goes into the record before any checkpoint carries it.
  uint64_t start = 0;
  if (c->rebuild_token) {
    auto cp = co_await read_checkpoint(*c);
    if (cp.ok() && cp->nexus == opts_.uuid && cp->child == id && cp->token == c->rebuild_token &&
        cp->volume_bytes == layout_.volume_bytes) {
      start = cp->done_bytes - cp->done_bytes % o.segment_bytes;
      reason = fmt::format("{}; resumed at byte {} from its checkpoint", reason, start);
    }
  } else {
    do {
      const auto b = Uuid::Generate().bytes();
      std::memcpy(&c->rebuild_token, b.data(), sizeof(c->rebuild_token));
    } while (c->rebuild_token == 0);
    Status st = co_await persist();
    if (!st.ok()) {
      c->rebuild_token = 0;
      co_return st.WithContext("recording the rebuild's checkpoint token");
    }
  }
  auto job = std::make_unique<RebuildJob>(*this, id, c->incarnation, o, std::move(reason), start, c->rebuild_token,
                                          std::move(dirty));
  RebuildJob* j = job.get();
  // Earlier jobs of the child go once their run() has returned (one that just finished may still be
  // unwinding: it stays until a later start, a removal or the nexus's end).
  std::erase_if(rebuilds_, [&](const std::unique_ptr<RebuildJob>& x) { return x->child() == id && x->ended(); });
  rebuilds_.push_back(std::move(job));
  if (!tasks_.spawn(j->run())) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shutting down", name());
  co_return Status::Ok();
}

RebuildJob* Nexus::rebuild_job(const Uuid& child) {
  RebuildJob* newest = nullptr;
  for (auto& j : rebuilds_)
    if (j->child() == child) newest = j.get();
  return newest;
}

Nexus::Child* Nexus::rebuild_source(const Uuid& dest, uint32_t exclude_slots) {
  Child* best = nullptr;
  for (auto& c : children_) {
    if (c->uuid == dest || c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc) continue;
    if (exclude_slots & (1u << c->slot)) continue;
    if (!best || (c->local && !best->local)) best = c.get();
  }
  return best;
}

Nexus::Child* Nexus::rebuild_destination(const Uuid& dest, uint64_t incarnation) {
  Child* c = find_child(dest);
  if (!c || c->incarnation != incarnation || c->state != ChildState::kOnline || !c->desc ||
      c->sync != SyncState::kOutOfSync) {
    return nullptr;
  }
  return c;
}

Task<Status> Nexus::complete_rebuild(Uuid dest, uint64_t incarnation) {
  auto lg = co_await dlog_->mu().lock();  // no activity-log transaction between the seed below and the view
  auto g = co_await ops_mu_.lock();
  Child* c = rebuild_destination(dest, incarnation);
  if (!c) co_return Status(Errc::kNoDev, "the destination went away before it could be made in sync");
  if (shutdown_.load() || shutting_down_) co_return Status(Errc::kShutdown, "the nexus shut down");
  // Durable before the label says so: the copy went without FUA.
  if (c->flushable) {
    Errc e = co_await c->io(IoType::kFlush, nullptr, 0, 0);
    if (e != Errc::kOk) co_return Status::Errorf(Errc::kIo, "flushing the destination failed: {}", errc_describe(e));
  }
  // The label first, then the view, then the record: the record never calls a child current that its
  // label does not back (a nexus made from the record's healthy children alone must find the data).
  // As an in-sync child it keeps the logs too: the other children's bitmaps, the slot table and the
  // current activity-log transaction, before it counts.
  if (Status st = co_await dlog_->seed(dest); !st.ok()) {
    co_return Status::Errorf(Errc::kIo, "writing the dirty-region logs to the destination failed: {}", st.message());
  }
  c->label_may_claim_sync = true;  // from here a retire must start a generation (see retire())
  if (Status st = co_await write_label(*c, true); !st.ok()) co_return Status(Errc::kIo, std::string(st.message()));
  c->sync = SyncState::kSynced;
  c->label_may_claim_sync = false;
  c->labelled = true;
  c->rebuild_token = 0;
  dlog_->untrack(dest);  // current: its log goes (from the view below, and from the slot table after the record)
  co_await publish();
  Status st = co_await persist();
  if (!st.ok()) {
    // Still under the lock: a retire waiting for it must find the nexus shut down, not the child "already
    // out" (the lock hands over at once when released).
    co_await self_shutdown("the record could not be written");
    co_return st;
  }
  if (Status ts = co_await dlog_->write_slot_table(); !ts.ok()) {
    TLOG_WARN("nexus", "nexus {}: clearing child {}'s dirty-region slot: {}", name(), c->uri, ts);  // (stale: ignored later)
  }
  TLOG_INFO("nexus", "nexus {}: child {} is in sync (generation {})", name(), c->uri, generation_);
  co_return Status::Ok();
}

Task<void> Nexus::rebuild_failed(Uuid dest, uint64_t incarnation) {
  if (!rebuild_destination(dest, incarnation)) co_return;
  Status st = co_await retire(dest, FaultReason::kRebuildFailed);
  if (!st.ok()) TLOG_WARN("nexus", "nexus {}: faulting child {} after its rebuild failed: {}", name(), dest.ToString(), st);
}

Task<Status> Nexus::write_checkpoint(Child& c, uint64_t token, uint64_t done_bytes) {
  if (c.flushable) {
    Errc e = co_await c.io(IoType::kFlush, nullptr, 0, 0);  // what the checkpoint vouches for is durable first
    if (e != Errc::kOk) co_return Status::Errorf(e, "flushing child {}: {}", c.uri, errc_describe(e));
  }
  RebuildCheckpoint cp;
  cp.nexus = opts_.uuid;
  cp.child = c.uuid;
  cp.token = token;
  cp.volume_bytes = layout_.volume_bytes;
  cp.done_bytes = done_bytes;
  cp.written_ns = wall_clock_ns();
  AlignedBuffer buf(Layout::kCheckpointSize, 4096);
  cp.Encode(buf.data());
  const uint32_t bs = layout_.block_size;
  Errc e = co_await c.io(IoType::kWrite, buf.data(), layout_.checkpoint / bs, Layout::kCheckpointSize / bs, /*fua=*/true);
  if (e != Errc::kOk) co_return Status::Errorf(e, "writing child {}'s rebuild checkpoint: {}", c.uri, errc_describe(e));
  co_return Status::Ok();
}

Task<Result<RebuildCheckpoint>> Nexus::read_checkpoint(Child& c) {
  AlignedBuffer buf(Layout::kCheckpointSize, 4096);
  const uint32_t bs = layout_.block_size;
  Errc e = co_await c.io(IoType::kRead, buf.data(), layout_.checkpoint / bs, Layout::kCheckpointSize / bs);
  if (e != Errc::kOk) co_return Status::Errorf(e, "reading child {}'s rebuild checkpoint: {}", c.uri, errc_describe(e));
  co_return RebuildCheckpoint::Decode(buf.data());
}

void Nexus::rebuild_ended(RebuildJob& job) {
  rebuild_history_.push_back(job.stats());
  const RebuildStats& s = rebuild_history_.back();
  rebuild_totals_.copied_bytes += s.copied_bytes;
  if (s.state == RebuildState::kCompleted) ++rebuild_totals_.completed;
  else if (s.state == RebuildState::kStopped) ++rebuild_totals_.stopped;
  else ++rebuild_totals_.failed;
  // The destination went away and is back already (faulted and onlined while the job waited): its new
  // incarnation gets a job of its own, which the old one kept auto-rebuild from starting.
  Child* c = find_child(job.child());
  if (c && c->incarnation != job.incarnation() && c->state == ChildState::kOnline && c->desc &&
      c->sync == SyncState::kOutOfSync) {
    auto_rebuilds();
  }
  while (rebuild_history_.size() > 64) rebuild_history_.pop_front();
  save_rebuild_history();
}

Task<void> Nexus::stop_rebuilds(const char* why) {
  for (auto& j : rebuilds_) j->stop(why);
  for (size_t i = 0; i < rebuilds_.size(); ++i) co_await rebuilds_[i]->wait();  // (the vector may grow meanwhile)
}

Task<void> Nexus::load_rebuild_history() {
  if (!store_ || opts_.persistence_key.empty()) co_return;
  std::string key = history_key();  // (named: GCC 12)
  auto got = co_await store_->get(std::move(key));
  if (!got.ok()) {
    if (got.code() != Errc::kNoEnt) TLOG_WARN("nexus", "nexus {}: reading the rebuild history: {}", name(), got.status());
    co_return;
  }
  auto h = RebuildHistoryFromJson(*got);
  if (!h.ok()) {
    TLOG_WARN("nexus", "nexus {}: the rebuild history at '{}' is unreadable ({}); starting a new one", name(),
              history_key(), h.status());
    co_return;
  }
  rebuild_history_.assign(h->begin(), h->end());
  while (rebuild_history_.size() > 64) rebuild_history_.pop_front();
}

void Nexus::save_rebuild_history() {
  if (!store_ || opts_.persistence_key.empty()) return;
  history_dirty_ = true;
  if (history_writing_) return;  // the writer running takes the newest state on its next round
  history_writing_ = true;
  const bool started = tasks_.spawn([](Nexus* nx) -> Task<void> {
    while (nx->history_dirty_) {
      nx->history_dirty_ = false;
      std::string value =
          RebuildHistoryToJson(std::vector<RebuildStats>(nx->rebuild_history_.begin(), nx->rebuild_history_.end()));
      std::string key = nx->history_key();  // (named: GCC 12 and temporaries in co_await expressions)
      Status st = co_await nx->store_->put(std::move(key), std::move(value));
      if (!st.ok()) TLOG_WARN("nexus", "nexus {}: writing the rebuild history: {}", nx->name(), st);
    }
    nx->history_writing_ = false;
  }(this));
  if (!started) history_writing_ = false;
}

void Nexus::auto_rebuilds() {
  if (!opts_.auto_rebuild) return;
  tasks_.spawn([](Nexus* nx) -> Task<void> {
    std::vector<Uuid> todo;
    for (auto& c : nx->children_) {
      if (c->state != ChildState::kOnline || !c->desc || c->sync != SyncState::kOutOfSync) continue;
      if (RebuildJob* j = nx->rebuild_job(c->uuid); j && !j->finished()) continue;
      todo.push_back(c->uuid);
    }
    for (const Uuid& u : todo) {
      Status st = co_await nx->start_rebuild(u);
      if (!st.ok()) TLOG_WARN("nexus", "nexus {}: rebuild of {} not started: {}", nx->name(), u.ToString(), st);
    }
  }(this));
}

// ---------------------------------------------------------------------------------------------------
// Snapshots

Task<Result<bool>> Nexus::take_child_snapshot(Child& c, const std::string& snap_name, Uuid snap) {
  if (c.local) {
    if (!opts_.local_snap) {
      co_return Status::Errorf(Errc::kNotSup, "child {} is local and this nexus has no way to snapshot local replicas", c.uri);
    }
    auto r = co_await opts_.local_snap->take(c.device, snap_name, snap);
    if (!r.ok()) co_return r.status().WithContext(fmt::format("child {}", c.uri));
    co_return *r;
  }
  nvme::Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = nvmf::vendor::kSnapshot;
  // (named first: GCC 12 destroys a temporary with a destructor inside a co_await expression twice)
  std::vector<uint8_t> data = nvmf::vendor::encode(nvmf::vendor::SnapshotCommand{snap, snap_name});
  auto rep = co_await nvmf::admin_passthru(c.desc->bdev(), s, std::move(data), 0);
  if (!rep.ok()) co_return rep.status().WithContext(fmt::format("child {}", c.uri));
  if (!rep->status.ok()) {
    const Errc e = nvmf::vendor::errc_of(rep->status);
    if (rep->status.sct == nvme::Sct::kGeneric && rep->status.sc == nvme::sc::kInvalidOpcode) {
      co_return Status::Errorf(Errc::kNotSup, "child {}: its engine does not take snapshots over NVMe/TCP", c.uri);
    }
    if (e == Errc::kAccess) {
      // Fenced: another nexus holds the child's reservation now.
      fenced_off_by(c.uri);
      co_return Status::Errorf(Errc::kAccess, "child {}: reservation conflict (a newer nexus took the volume over)", c.uri);
    }
    co_return Status::Errorf(e, "child {}: its engine refused the snapshot: {} ({})", c.uri, errc_describe(e),
                             nvmf::describe_status(rep->status));
  }
  co_return bool(rep->dw0 & 1);
}

Task<Status> Nexus::drop_child_snapshot(Child& c, Uuid snap) {
  if (c.local) {
    if (!opts_.local_snap) co_return Status(Errc::kNotSup, "no way to drop local snapshots");
    co_return co_await opts_.local_snap->drop(c.device, snap);
  }
  if (!c.desc) co_return Status::Errorf(Errc::kNoDev, "child {} is closed", c.uri);
  nvme::Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = nvmf::vendor::kDropSnapshot;
  std::vector<uint8_t> data = nvmf::vendor::encode(nvmf::vendor::SnapshotCommand{snap, "-"});
  auto rep = co_await nvmf::admin_passthru(c.desc->bdev(), s, std::move(data), 0);
  if (!rep.ok()) co_return rep.status();
  if (!rep->status.ok()) {
    const Errc e = nvmf::vendor::errc_of(rep->status);
    co_return Status::Errorf(e, "child {}: dropping snapshot {}: {}", c.uri, snap.ToString(), errc_describe(e));
  }
  co_return Status::Ok();
}

Task<Result<SnapshotResult>> Nexus::snapshot(SnapshotArgs args) {
  if (args.name.empty() || args.name.size() > nvmf::vendor::kMaxSnapshotName ||
      args.name.find('\0') != std::string::npos) {
    co_return Status::Errorf(Errc::kInval, "snapshot name: 1 to {} bytes, no NUL", nvmf::vendor::kMaxSnapshotName);
  }
  auto sg = co_await snap_mu_.lock();
  if (shutdown_.load() || shutting_down_) co_return Status::Errorf(Errc::kShutdown, "nexus {} is shut down", name());
  SnapshotResult res;
  res.name = args.name;
  res.uuid = args.uuid.is_nil() ? Uuid::Derive(opts_.uuid, args.name) : args.uuid;

  // 1. Hold new host requests and let the ones on the children finish (and any retire they wait for):
  //    from here until the thaw, no child's content changes.
  const uint64_t t0 = now_ns();
  freeze();
  Status st = co_await drain(opts_.drain_timeout_ns);
  if (!st.ok()) {
    unfreeze();
    co_return st.WithContext("snapshot");
  }
  // 2. Every in-sync child's replica, in parallel.
  std::vector<Child*> taking;
  Errc first_error = Errc::kOk;
  {
    auto g = co_await ops_mu_.lock();
    for (auto& c : children_) {
      ChildSnapshot cs;
      cs.child = c->uuid;
      cs.uri = c->uri;
      auto it = args.child_snapshots.find(c->uuid);
      cs.snapshot = it != args.child_snapshots.end() ? it->second : Uuid::Derive(res.uuid, c->uuid.ToString());
      if (c->state != ChildState::kOnline || !c->desc) {
        cs.detail = fmt::format("child is {} ({})", child_state_name(c->state), fault_reason_name(c->reason));
      } else if (c->sync != SyncState::kSynced) {
        cs.detail = "child is out of sync: its data is not the volume's";
      } else {
        taking.push_back(c.get());
      }
      res.children.push_back(std::move(cs));
    }
    if (taking.empty()) {
      unfreeze();
      co_return Status::Errorf(Errc::kBusy, "nexus {} has no in-sync child to snapshot", name());
    }
    std::vector<Task<Result<bool>>> tasks;
    for (Child* c : taking) {
      for (auto& cs : res.children)
        if (cs.child == c->uuid) tasks.push_back(take_child_snapshot(*c, args.name, cs.snapshot));
    }
    auto outcomes = co_await when_all(std::move(tasks));
    // 3. Thaw: the snapshots are taken (or failed); host requests flow again.
    unfreeze();
    res.frozen_us = (now_ns() - t0) / 1000;
    size_t k = 0;
    for (auto& cs : res.children) {
      if (k < taking.size() && taking[k]->uuid == cs.child) {
        Result<bool>& o = outcomes[k++];
        if (!o.ok()) {
          cs.outcome = SnapshotOutcome::kFailed;
          cs.detail = o.status().ToString();
          if (first_error == Errc::kOk) first_error = o.status().code();
        } else {
          cs.outcome = *o ? SnapshotOutcome::kExisted : SnapshotOutcome::kTaken;
        }
      }
    }
  }
  // 4. All or nothing for this call.
  size_t taken = 0, existed = 0, failed = 0;
  std::string first_failure;
  for (auto& cs : res.children) {
    taken += cs.outcome == SnapshotOutcome::kTaken;
    existed += cs.outcome == SnapshotOutcome::kExisted;
    if (cs.outcome == SnapshotOutcome::kFailed) {
      if (failed++ == 0) first_failure = cs.detail;
    }
  }
  if (failed == 0 && (existed == 0 || taken == 0)) {
    TLOG_INFO("nexus", "nexus {}: snapshot '{}' ({}) of {} children{}; host I/O held {} us", name(), res.name,
              res.uuid.ToString(), taking.size(), taken == 0 ? " (all existed already)" : "", res.frozen_us);
    co_return res;
  }
  std::string why = failed ? first_failure
                           : fmt::format("snapshot '{}' existed on {} children but not on {} (an earlier attempt that did "
                                         "not finish, or another snapshot of that name): destroy those first",
                                         res.name, existed, taken);
  // Roll back what this call took, so no set of snapshots from different points is left behind.
  for (auto& cs : res.children) {
    if (cs.outcome != SnapshotOutcome::kTaken) continue;
    auto g = co_await ops_mu_.lock();
    Child* c = find_child(cs.child);
    Status d(Errc::kNoEnt, "the child was removed meanwhile");
    if (c) d = co_await drop_child_snapshot(*c, cs.snapshot);  // (not `c ? co_await x : y`: see retire)
    if (d.ok()) {
      cs.outcome = SnapshotOutcome::kRolledBack;
    } else {
      TLOG_WARN("nexus", "nexus {}: snapshot '{}': could not destroy the snapshot {} of child {} again: {}", name(),
                res.name, cs.snapshot.ToString(), cs.uri, d);
      why += fmt::format("; snapshot {} of child {} could not be destroyed again: {}", cs.snapshot.ToString(), cs.uri,
                         d.message());
    }
  }
  TLOG_WARN("nexus", "nexus {}: snapshot '{}' failed: {}", name(), res.name, why);
  co_return Status::Errorf(failed ? first_error : Errc::kExist, "nexus {}: snapshot '{}': {}", name(), res.name, why);
}

// ---------------------------------------------------------------------------------------------------
// Bdev

bool Nexus::supports(IoType t) const {
  switch (t) {
    case IoType::kRead:
    case IoType::kWrite:
    case IoType::kFlush: return true;
    case IoType::kUnmap:
    case IoType::kWriteZeroes:
      for (auto& c : children_) {
        if (c->desc && !c->desc->bdev().supports(t)) return false;
      }
      return true;
    case IoType::kReset: return false;  // the layer waits for what is in flight
  }
  return false;
}

Result<std::unique_ptr<ChannelCtx>> Nexus::create_channel(Reactor& r) {
  return std::unique_ptr<ChannelCtx>(new NexusChannel(this, r));
}

void Nexus::submit(ChannelCtx* ctx, BdevIo* io) { static_cast<NexusChannel*>(ctx)->submit(io); }

Task<void> Nexus::on_remove() {
  // A forced destroy: what waits here would hold the channels open forever.
  shutdown_.store(true, std::memory_order_release);
  failing_held_ = true;
  ReactorSet& set = registry_.reactors();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (NexusChannel* ch = channels_[r]) ch->fail_held(Errc::kNoDev);
    });
  }
}

Task<void> Nexus::shutdown() {
  // No channel is left; retires and self-shutdowns in progress end, then the children close.
  co_await tasks_.close();
  for (auto& c : children_) {
    if (c->desc || c->created) co_await release_child(*c);
  }
}

}  // namespace tern::nexus
