#include "pool/pool.h"

#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/log.h"
#include "pool/device_io.h"
#include "pool/replica_bdev.h"
#include "reactor/reactor_set.h"

namespace tern::pool {
namespace {

constexpr uint64_t kLabel = Superblock::kSize;

struct Device {
  std::unique_ptr<BdevDesc> desc;
  uint64_t size = 0;  // bytes, rounded down to 4 KiB
};

Result<Device> open_claimed(BdevRegistry& reg, const std::string& device) {
  auto d = reg.open(device, true);
  if (!d.ok()) {
    return Status::Errorf(d.code(), "pool: cannot open device '{}': {}", device, d.status().message());
  }
  const BdevProps& p = (*d)->bdev().props();
  if (kLabel % p.block_size != 0) {
    return Status::Errorf(Errc::kInval, "pool: device '{}' has {}-byte blocks; pools need blocks of at most 4096 bytes",
                          device, p.block_size);
  }
  Status c = (*d)->claim("pool");
  if (!c.ok()) return Status::Errorf(c.code(), "pool: device '{}': {}", device, c.message());
  Device dev;
  dev.size = p.size_bytes() / kLabel * kLabel;
  dev.desc = std::move(*d);
  return dev;
}

// Reads and decodes the label at `offset`; an I/O error is reported as such (not as "no label").
Task<Result<Superblock>> read_label(BdevDesc& desc, uint64_t offset, std::string where) {
  AlignedBuffer buf(kLabel);
  Errc e = co_await device_io(desc, IoType::kRead, offset, buf.data(), kLabel);
  if (e != Errc::kOk) co_return Status::Errorf(e, "{}: read failed: {}", where, errc_describe(e));
  co_return Superblock::Decode(buf.data(), where);
}

std::string primary_where() { return "primary superblock at byte 0"; }
std::string backup_where(uint64_t off) { return fmt::format("backup superblock at byte {}", off); }

}  // namespace

Pool::~Pool() {
  // Replica bdevs may outlive the pool object (dropped without an export, as after a crash of the
  // caller): they must not call into it.
  for (auto& [id, sh] : shared_) sh->pool = nullptr;
}

Task<Status> Pool::write_superblock(bool primary, bool backup) {
  AlignedBuffer buf(kLabel);
  sb_.Encode(buf.data());
  // Backup first: a cut between the two leaves the old primary or the new backup, both valid.
  if (backup) {
    Errc e = co_await device_io(*desc_, IoType::kWrite, sb_.backup_offset(), buf.data(), kLabel);
    if (e == Errc::kOk) e = co_await device_flush(*desc_);
    if (e != Errc::kOk) {
      co_return Status::Errorf(e, "pool '{}': writing the backup superblock failed: {}", sb_.name, errc_describe(e));
    }
  }
  if (primary) {
    Errc e = co_await device_io(*desc_, IoType::kWrite, 0, buf.data(), kLabel);
    if (e == Errc::kOk) e = co_await device_flush(*desc_);
    if (e != Errc::kOk) {
      co_return Status::Errorf(e, "pool '{}': writing the primary superblock failed: {}", sb_.name, errc_describe(e));
    }
  }
  co_return Status::Ok();
}

Task<Result<std::unique_ptr<Pool>>> Pool::Create(BdevRegistry& reg, std::string device, PoolCreateOptions opts) {
  auto dev = open_claimed(reg, device);
  if (!dev.ok()) co_return dev.status();
  BdevDesc& desc = *dev->desc;
  // Refuse to write over any label of ours, good or damaged.
  const uint64_t end = dev->size >= 2 * kLabel ? dev->size - kLabel : 0;
  const uint64_t offs[2] = {0, end};
  for (uint64_t off : offs) {
    // Named, not a temporary: GCC 12 destroys temporaries inside a co_await expression twice.
    std::string where = off == 0 ? primary_where() : backup_where(off);
    auto l = co_await read_label(desc, off, where);
    if (l.ok()) {
      co_return Status::Errorf(Errc::kExist, "device '{}' already holds pool '{}' ({}); import it, or destroy it first",
                               device, l->name, l->pool_uuid.ToString());
    }
    if (l.code() == Errc::kCorruption || l.code() == Errc::kNotSup) {
      co_return Status::Errorf(Errc::kExist,
                               "device '{}' holds a pool label that cannot be read ({}); refusing to overwrite it "
                               "(destroy the pool first)",
                               device, l.status().message());
    }
    if (l.code() != Errc::kNoEnt) co_return l.status();
  }
  auto layout = make_layout(opts.name, opts.uuid.value_or(Uuid::Generate()), dev->size, opts.cluster_size);
  if (!layout.ok()) co_return Status::Errorf(layout.code(), "pool '{}' on '{}': {}", opts.name, device, layout.status().message());
  std::unique_ptr<Pool> p(new Pool(reg, device, std::move(dev->desc)));
  p->sb_ = std::move(*layout);
  p->sb_.created_ns = wall_clock_ns();  // persisted: wall-clock, not now_ns (see common/clock.h)
  p->sb_.clean = false;
  p->log_ = std::make_unique<MetaLog>(*p->desc_, p->sb_);
  p->state_ = std::make_unique<PoolState>(p->sb_.data_clusters, p->sb_.cluster_size);
  // The log's checkpoints first, the label last: a device with our label always has a readable log.
  Status s = co_await p->log_->Format();
  if (!s.ok()) co_return s;
  s = co_await p->write_superblock(true, true);
  if (!s.ok()) co_return s;
  TLOG_INFO("pool", "created pool '{}' ({}) on '{}': {} clusters of {} MiB, metadata {} MiB", p->sb_.name,
            p->sb_.pool_uuid.ToString(), device, p->sb_.data_clusters, p->sb_.cluster_size >> 20,
            p->sb_.data_offset >> 20);
  co_return p;
}

Task<Result<std::unique_ptr<Pool>>> Pool::CreateOrImport(BdevRegistry& reg, std::string device,
                                                         PoolCreateOptions opts) {
  const std::optional<std::string> name = opts.name;
  auto p = co_await Import(reg, device, name);
  if (p.ok() || p.code() != Errc::kNoEnt) co_return p;
  co_return co_await Create(reg, device, std::move(opts));
}

Task<Result<std::unique_ptr<Pool>>> Pool::Import(BdevRegistry& reg, std::string device,
                                                 std::optional<std::string> expect_name) {
  auto dev = open_claimed(reg, device);
  if (!dev.ok()) co_return dev.status();
  BdevDesc& desc = *dev->desc;
  const std::string pwhere = primary_where();
  auto primary = co_await read_label(desc, 0, pwhere);
  if (primary.ok() && primary->pool_size > dev->size) {
    co_return Status::Errorf(Errc::kRange,
                             "pool '{}' on '{}' spans {} bytes but the device has {} (was it replaced or shrunk?)",
                             primary->name, device, primary->pool_size, dev->size);
  }
  if (!primary.ok() && primary.code() != Errc::kNoEnt && primary.code() != Errc::kCorruption &&
      primary.code() != Errc::kNotSup) {
    co_return primary.status();  // an I/O error: say so rather than guess
  }
  // Without a readable primary we do not know the pool's size: the backup is looked for at the device's
  // end (after a grow outside the pool, it is not there; docs/operations.md says what to do).
  const uint64_t boff = primary.ok() ? primary->backup_offset() : (dev->size >= 2 * kLabel ? dev->size - kLabel : 0);
  const std::string bwhere = backup_where(boff);
  auto backup = co_await read_label(desc, boff, bwhere);
  auto choice = choose_superblock(primary, backup);
  if (!choice.ok()) {
    co_return Status::Errorf(choice.code(), "cannot import a pool from '{}': {}", device, choice.status().message());
  }
  if (expect_name && *expect_name != choice->sb.name) {
    co_return Status::Errorf(Errc::kInval, "device '{}' holds pool '{}', not '{}'", device, choice->sb.name,
                             *expect_name);
  }
  std::unique_ptr<Pool> p(new Pool(reg, device, std::move(dev->desc)));
  p->sb_ = choice->sb;
  p->repair_note_ = choice->note;
  if (!choice->note.empty()) TLOG_WARN("pool", "pool '{}' on '{}': {}", p->sb_.name, device, choice->note);
  if (!p->sb_.clean) {
    TLOG_INFO("pool", "pool '{}' was not exported cleanly (a crash or a kill); recovering", p->sb_.name);
  }
  p->log_ = std::make_unique<MetaLog>(*p->desc_, p->sb_);
  p->state_ = std::make_unique<PoolState>(p->sb_.data_clusters, p->sb_.cluster_size);
  PoolState* st = p->state_.get();
  const std::function<Status(const Checkpoint&)> load = [st](const Checkpoint& c) { return st->Load(c.body); };
  const std::function<Status(std::span<const uint8_t>)> apply = [st](std::span<const uint8_t> r) {
    return st->Apply(r);
  };
  auto rec = co_await p->log_->Recover(load, apply);
  if (!rec.ok()) {
    co_return Status::Errorf(rec.code(), "cannot import pool '{}' from '{}': {}", p->sb_.name, device,
                             rec.status().message());
  }
  // In use from now on: a crash before export is visible at the next import.
  p->sb_.clean = false;
  ++p->sb_.generation;
  Status s = co_await p->write_superblock(true, true);
  if (!s.ok()) co_return s;
  TLOG_INFO("pool", "imported pool '{}' ({}) from '{}'", p->sb_.name, p->sb_.pool_uuid.ToString(), device);
  co_return p;
}

Task<Status> Pool::Export() {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is already closed", sb_.name);
  {
    const std::optional<Uuid> all;
    Status u = co_await unexpose(all);
    if (!u.ok()) co_return u;
  }
  co_await tasks_.close();  // no replica is left: clusters being returned are returned
  auto g = co_await meta_mu_.lock();
  // A checkpoint makes the next import read one area and no log.
  if (failed_.ok()) {
    const std::vector<uint8_t> body = state_->Serialize();
    Status c = co_await log_->WriteCheckpoint(body);
    if (!c.ok()) co_return c;
  }
  g.release();
  sb_.clean = failed_.ok();
  ++sb_.generation;
  Status s = co_await write_superblock(true, true);
  co_await log_->Close();
  desc_.reset();
  if (s.ok()) TLOG_INFO("pool", "exported pool '{}' from '{}'", sb_.name, device_);
  co_return s;
}

Task<Status> Pool::Destroy() {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is already closed", sb_.name);
  {
    const std::optional<Uuid> all;
    Status u = co_await unexpose(all);
    if (!u.ok()) co_return u;
  }
  co_await tasks_.close();
  if (log_) co_await log_->Close();
  AlignedBuffer zero(kLabel, AlignedBuffer::kDefaultAlign, true);
  // Primary first: once it is gone the pool is gone for `create`, and a cut before the backup is wiped
  // leaves a pool that import can still find and destroy again.
  Errc e = co_await device_io(*desc_, IoType::kWrite, 0, zero.data(), kLabel);
  if (e == Errc::kOk) e = co_await device_io(*desc_, IoType::kWrite, sb_.backup_offset(), zero.data(), kLabel);
  if (e == Errc::kOk) e = co_await device_flush(*desc_);
  desc_.reset();
  if (e != Errc::kOk) {
    co_return Status::Errorf(e, "pool '{}': wiping its labels failed: {}", sb_.name, errc_describe(e));
  }
  TLOG_INFO("pool", "destroyed pool '{}' on '{}'", sb_.name, device_);
  co_return Status::Ok();
}

Task<Result<PoolStats>> Pool::Grow() {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  auto g = co_await meta_mu_.lock();
  Result<PoolStats> result = co_await grow_locked();
  co_return result;
}

Task<Result<PoolStats>> Pool::grow_locked() {
  TERN_CO_RETURN_IF_ERROR(refuse_if_failed());
  Bdev& dev = desc_->bdev();
  auto size = dev.rescan();
  if (!size.ok() && size.code() != Errc::kNotSup) co_return size.status();
  const uint64_t bytes = dev.num_blocks() * dev.props().block_size / kLabel * kLabel;
  if (bytes < sb_.pool_size) {
    co_return Status::Errorf(Errc::kRange, "pool '{}': device '{}' has {} bytes, less than the pool's {}", sb_.name,
                             device_, bytes, sb_.pool_size);
  }
  const uint64_t clusters = (bytes - kLabel - sb_.data_offset) / sb_.cluster_size;
  if (clusters <= sb_.data_clusters) co_return stats();  // nothing to add
  const uint64_t limit = std::min<uint64_t>(max_data_clusters(sb_), PoolState::kMaxClusters);
  if (clusters > limit) {
    co_return Status::Errorf(Errc::kNoSpc,
                             "pool '{}' cannot grow to {} clusters: its metadata areas hold at most {} ({} bytes); "
                             "create a new pool on the larger device",
                             sb_.name, clusters, limit, limit * sb_.cluster_size);
  }
  const Superblock before = sb_;
  sb_.pool_size = bytes;
  sb_.data_clusters = clusters;
  if (!sb_.devices.empty()) sb_.devices[0].size_bytes = bytes;
  ++sb_.generation;
  if (Status v = sb_.Validate(); !v.ok()) {
    sb_ = before;
    co_return Status::Errorf(Errc::kInval, "pool '{}': internal error growing: {}", sb_.name, v.message());
  }
  // Backup (at the new end) first, then the primary: see write_superblock.
  Status w = co_await write_superblock(true, true);
  if (!w.ok()) {
    failed_ = w;  // which copy is on the device is unknown until re-import
    co_return w;
  }
  state_->grow(clusters);
  TLOG_INFO("pool", "pool '{}' grew from {} to {} clusters ({} bytes)", sb_.name, before.data_clusters, clusters,
            bytes);
  co_return stats();
}

Status Pool::metadata_room(uint64_t extra) const {
  const uint64_t cap = sb_.checkpoint_size - 4096;  // the area's first block is its header
  const uint64_t need = state_->checkpoint_bytes() + extra;
  if (need <= cap) return Status::Ok();
  return Status::Errorf(Errc::kNoSpc,
                        "pool '{}': its metadata would need {} bytes, more than its checkpoint area's {} (too many "
                        "or too large thin replicas, snapshots or properties)",
                        sb_.name, need, cap);
}

Task<Status> Pool::SetProperty(Uuid uuid, std::string key, std::string value) {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  TERN_CO_RETURN_IF_ERROR(PoolState::ValidateProperty(key, value));
  auto g = co_await meta_mu_.lock();
  Status s = [&]() -> Status {
    const ReplicaMeta* r = state_->find(uuid);
    if (!r || r->discarded) {
      return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica or snapshot {}", sb_.name, uuid.ToString());
    }
    TERN_RETURN_IF_ERROR(refuse_if_failed());
    uint64_t bytes = key.size() + value.size();
    for (auto& [k, v] : r->props) bytes += k == key ? 0 : k.size() + v.size();
    if (bytes > PoolState::kMaxPropBytes) {
      return Status::Errorf(Errc::kNoSpc, "'{}': properties would take {} bytes; at most {}", r->name, bytes,
                            PoolState::kMaxPropBytes);
    }
    return metadata_room(key.size() + value.size() + 3);
  }();
  if (s.ok()) {
    const std::vector<uint8_t> record = PoolState::SetPropertyRecord(uuid, key, value);
    s = co_await commit(record);
  }
  co_return s;
}

Status Pool::refuse_if_failed() const {
  if (failed_.ok()) return Status::Ok();
  return Status::Errorf(Errc::kIo, "pool '{}' refuses changes after a failed metadata write ({}); re-import it",
                        sb_.name, failed_.message());
}

Result<MetaLog::Ticket> Pool::stage(const std::vector<uint8_t>& record) {
  // Applied before it is durable: the next change under the lock must see it. What an error leaves in
  // memory does not matter: the pool refuses changes (and a clean export) until it is re-imported.
  Status a = state_->Apply(record);
  if (!a.ok()) return Status::Errorf(Errc::kInval, "pool '{}': internal error: {}", sb_.name, a.message());
  auto t = log_->Enqueue(record);
  if (!t.ok()) {
    failed_ = t.status();
    return Status::Errorf(Errc::kIo, "pool '{}': cannot log a change: {}", sb_.name, t.status().message());
  }
  return t;
}

Task<Status> Pool::wait_durable(MetaLog::Ticket ticket) {
  Status s = co_await log_->Wait(std::move(ticket));
  if (s.ok()) co_return s;
  if (failed_.ok()) {
    failed_ = s;
    TLOG_ERROR("pool", "pool '{}': metadata write failed: {}; refusing further changes until re-imported", sb_.name, s);
  }
  co_return Status::Errorf(Errc::kIo, "pool '{}': metadata write failed ({}); no further changes until the pool is "
                           "re-imported", sb_.name, s.message());
}

Task<void> Pool::checkpoint_if_due() {
  if (!failed_.ok() || log_->used() <= log_->capacity() / 2) co_return;
  const std::vector<uint8_t> body = state_->Serialize();  // named: see the co_await temporaries rule
  Status c = co_await log_->WriteCheckpoint(body);
  if (!c.ok()) {
    // The changes themselves are durable; only further ones are refused.
    failed_ = c;
    TLOG_ERROR("pool", "pool '{}': checkpoint failed: {}; refusing further changes until re-imported", sb_.name, c);
  }
}

Task<Status> Pool::commit(const std::vector<uint8_t>& record) {
  auto t = stage(record);
  if (!t.ok()) co_return t.status();
  MetaLog::Ticket ticket = std::move(*t);
  Status s = co_await wait_durable(std::move(ticket));
  if (!s.ok()) co_return s;
  co_await checkpoint_if_due();
  co_return Status::Ok();
}

namespace {
Status validate_replica_name(std::string_view name) { return validate_object_name("replica", name, 255); }
}  // namespace

Task<Result<ReplicaMeta>> Pool::CreateReplica(ReplicaCreateOptions opts) {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  TERN_CO_RETURN_IF_ERROR(validate_replica_name(opts.name));
  if (opts.size == 0 || opts.size % 4096) {
    co_return Status::Errorf(Errc::kInval, "replica '{}': size {} is not a positive multiple of 4096", opts.name,
                             opts.size);
  }
  auto g = co_await meta_mu_.lock();
  auto result = [&]() -> Result<ReplicaMeta> {
    TERN_RETURN_IF_ERROR(refuse_if_failed());
    ReplicaMeta r;
    r.uuid = opts.uuid.value_or(Uuid::Generate());
    r.name = opts.name;
    r.size = opts.size;
    r.thin = opts.thin;
    r.created_ns = wall_clock_ns();
    if (state_->find(r.uuid)) {
      return Status::Errorf(Errc::kExist, "pool '{}' already has a replica with UUID {}", sb_.name, r.uuid.ToString());
    }
    if (state_->find_name(r.name)) {
      return Status::Errorf(Errc::kExist, "pool '{}' already has a replica named '{}'", sb_.name, r.name);
    }
    const uint64_t clusters = (r.size + sb_.cluster_size - 1) / sb_.cluster_size;
    TERN_RETURN_IF_ERROR(metadata_room(4 * clusters + 128 + r.name.size()));
    r.map.assign(clusters, 0);
    if (!r.thin) {
      auto picked = state_->pick_free(clusters);
      if (!picked.ok()) {
        return Status::Errorf(Errc::kNoSpc, "pool '{}' cannot hold thick replica '{}' of {} bytes: {}", sb_.name,
                              r.name, r.size, picked.status().message());
      }
      for (size_t i = 0; i < clusters; ++i) r.map[i] = (*picked)[i] + 1;
    }
    return r;
  }();
  if (!result.ok()) co_return result.status();
  const ReplicaMeta& r = *result;
  if (!r.thin) {
    // Clusters freed by another replica still hold its data: make them read as zeros before they are
    // ours (under the metadata lock, so no one else can pick them meanwhile).
    Status z = co_await zero_clusters(r.map);
    if (!z.ok()) co_return z;
  }
  const std::vector<uint8_t> record = PoolState::CreateReplicaRecord(r);
  Status s = co_await commit(record);
  if (!s.ok()) co_return s;
  ReplicaMeta made = *state_->find(r.uuid);
  g.release();
  TLOG_INFO("pool", "pool '{}': created {} replica '{}' ({}), {} bytes, {} cluster(s) allocated", sb_.name,
            made.thin ? "thin" : "thick", made.name, made.uuid.ToString(), made.size, made.allocated_clusters());
  co_return made;
}

Task<Status> Pool::DestroyReplica(Uuid uuid) {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  auto g = co_await meta_mu_.lock();
  const ReplicaMeta* r = state_->find(uuid);
  if (!r || r->discarded) {
    co_return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica or snapshot {}", sb_.name, uuid.ToString());
  }
  TERN_CO_RETURN_IF_ERROR(refuse_if_failed());
  const std::string name = r->name;
  {
    const std::optional<Uuid> only = uuid;
    Status u = co_await unexpose(only);
    if (!u.ok()) co_return u;
  }
  const std::vector<uint8_t> record = PoolState::DestroyReplicaRecord(uuid);
  Status s = co_await commit(record);
  republish();  // a snapshot merged into its child: the child owns what it inherited
  const bool kept = state_->find(uuid) != nullptr;
  g.release();
  if (s.ok()) {
    TLOG_INFO("pool", "pool '{}': destroyed '{}' ({}){}", sb_.name, name, uuid.ToString(),
              kept ? "; kept as a discarded snapshot until fewer than two clones read from it" : "");
  }
  co_return s;
}

std::vector<ReplicaMeta> Pool::ListReplicas() const {
  std::vector<ReplicaMeta> out;
  if (!state_) return out;
  for (auto& [id, r] : state_->replicas()) out.push_back(r);
  return out;
}

ObjectSpace Pool::Space(const Uuid& uuid) const {
  ObjectSpace o;
  if (!state_) return o;
  const PoolState::Space sp = state_->space(uuid);
  o.allocated = sp.owned * sb_.cluster_size;
  o.referenced = sp.readable * sb_.cluster_size;
  o.exclusive = sp.exclusive * sb_.cluster_size;
  return o;
}

PoolStats Pool::stats() const {
  PoolStats st;
  if (!failed_.ok()) {
    st.online = false;
    st.state_reason = fmt::format("a metadata write failed ({}); re-import the pool", failed_.message());
  }
  if (!state_) return st;
  st.capacity = state_->data_clusters() * sb_.cluster_size;
  st.used = (state_->data_clusters() - state_->free_clusters()) * sb_.cluster_size;
  st.committed = state_->committed_bytes();
  st.replicas = state_->replicas().size();
  return st;
}

Result<Bdev*> Pool::ExposeReplica(const Uuid& uuid) {
  if (!desc_) return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  const ReplicaMeta* r = state_->find(uuid);
  if (!r || r->discarded) {
    return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica or snapshot {}", sb_.name, uuid.ToString());
  }
  const std::string name = uuid.ToString();
  if (Bdev* b = reg_.find(name)) return b;
  const BdevProps& dp = desc_->bdev().props();
  BdevProps p;
  p.name = name;
  p.uuid = uuid;
  p.product = r->snapshot ? "snapshot" : "replica";
  p.block_size = dp.block_size;
  p.num_blocks = r->size / dp.block_size;
  p.max_io_blocks = dp.max_io_blocks;
  p.io_boundary_blocks = uint32_t(sb_.cluster_size / dp.block_size);
  p.optimal_io_blocks = dp.optimal_io_blocks;
  p.buf_align = dp.buf_align;
  p.write_cache = dp.write_cache;
  p.unmap_reads_zeroes = true;  // unmap releases or zeroes: it always reads zeros
  auto sh = std::make_shared<ReplicaShared>();
  sh->pool = this;
  sh->uuid = uuid;
  sh->read_only = r->snapshot;
  sh->thin = r->thin;
  sh->clusters = r->map.size();
  sh->per_reactor.resize(Reactor::current()->set().size());
  const std::vector<uint32_t> resolved = state_->resolve_all(uuid);
  sh->map.reset(new std::atomic<uint32_t>[resolved.size()]);
  for (size_t i = 0; i < resolved.size(); ++i) sh->map[i].store(resolved[i], std::memory_order_relaxed);
  auto b = reg_.add(make_replica_bdev(std::move(p), desc_, sh, sb_.cluster_size / dp.block_size,
                                      sb_.data_offset / dp.block_size),
                    fmt::format("{} of pool '{}'", r->snapshot ? "snapshot" : "replica", sb_.name));
  if (b.ok()) {
    exposed_.push_back(name);
    shared_[uuid] = std::move(sh);
  }
  return b;
}

void Pool::republish() {
  for (auto& [uuid, sh] : shared_) {
    if (!state_->find(uuid)) continue;
    const std::vector<uint32_t> resolved = state_->resolve_all(uuid);
    for (size_t i = 0; i < resolved.size() && i < sh->clusters; ++i) {
      if (sh->map[i].load(std::memory_order_relaxed) != resolved[i]) {
        sh->map[i].store(resolved[i], std::memory_order_release);
      }
    }
  }
}

Task<Status> Pool::unexpose(std::optional<Uuid> only) {
  std::vector<std::string> keep;
  Status first;
  for (const std::string& name : exposed_) {
    if (only && name != only->ToString()) {
      keep.push_back(name);
      continue;
    }
    if (!reg_.find(name)) continue;  // already gone
    Status s = co_await reg_.destroy(name, false);
    if (s.ok()) {
      auto u = Uuid::Parse(name);
      if (u.ok()) shared_.erase(*u);
    }
    if (!s.ok()) {
      keep.push_back(name);
      if (first.ok()) {
        first = Status::Errorf(s.code(), "pool '{}': replica {} is in use: {}", sb_.name, name, s.message());
      }
    }
  }
  exposed_ = std::move(keep);
  co_return first;
}

Task<Status> Pool::zero_clusters(const std::vector<uint32_t>& map) {
  auto ch = ChannelRef::Get(*desc_);
  if (!ch.ok()) co_return ch.status();
  const uint32_t bs = desc_->bdev().props().block_size;
  const uint64_t cb = sb_.cluster_size / bs;
  const bool wz = desc_->bdev().supports(IoType::kWriteZeroes);
  AlignedBuffer zero;
  if (!wz) zero = AlignedBuffer(1 << 20, AlignedBuffer::kDefaultAlign, true);
  for (uint32_t m : map) {
    if (!m) continue;
    const uint64_t lba = sb_.data_offset / bs + uint64_t(m - 1) * cb;
    Errc e = Errc::kOk;
    if (wz) {
      e = co_await ch->write_zeroes(lba, cb);
    } else {
      for (uint64_t done = 0; done < cb && e == Errc::kOk; done += zero.size() / bs) {
        e = co_await ch->write(zero.data(), lba + done, std::min<uint64_t>(zero.size() / bs, cb - done));
      }
    }
    if (e != Errc::kOk) {
      co_return Status::Errorf(e, "pool '{}': zeroing cluster {} failed: {}", sb_.name, m - 1, errc_describe(e));
    }
  }
  log_->data_written();  // the record that points here waits for this data to be durable
  co_return Status::Ok();
}

Task<Status> Pool::zero_range(uint32_t pc, uint64_t byte, uint64_t bytes) {
  auto ch = ChannelRef::Get(*desc_);
  if (!ch.ok()) co_return ch.status();
  const uint32_t bs = desc_->bdev().props().block_size;
  const uint64_t lba = (sb_.data_offset + uint64_t(pc) * sb_.cluster_size + byte) / bs;
  Errc e = Errc::kOk;
  if (desc_->bdev().supports(IoType::kWriteZeroes)) {
    e = co_await ch->write_zeroes(lba, bytes / bs);
  } else {
    AlignedBuffer zero(std::min<uint64_t>(bytes, 1 << 20), AlignedBuffer::kDefaultAlign, true);
    for (uint64_t done = 0; done < bytes && e == Errc::kOk; done += zero.size()) {
      e = co_await ch->write(zero.data(), lba + done / bs, std::min<uint64_t>(zero.size(), bytes - done) / bs);
    }
  }
  if (e != Errc::kOk) {
    co_return Status::Errorf(e, "pool '{}': zeroing cluster {} failed: {}", sb_.name, pc, errc_describe(e));
  }
  log_->data_written();  // the record that points here waits for this data to be durable
  co_return Status::Ok();
}

Task<Status> Pool::copy_cluster(uint32_t from, uint32_t to) {
  auto ch = ChannelRef::Get(*desc_);
  if (!ch.ok()) co_return ch.status();
  const uint32_t bs = desc_->bdev().props().block_size;
  const uint64_t chunk = std::min<uint64_t>(sb_.cluster_size, 1 << 20);
  AlignedBuffer buf(chunk);
  const uint64_t src = (sb_.data_offset + uint64_t(from) * sb_.cluster_size) / bs;
  const uint64_t dst = (sb_.data_offset + uint64_t(to) * sb_.cluster_size) / bs;
  for (uint64_t done = 0; done < sb_.cluster_size; done += chunk) {
    Errc e = co_await ch->read(buf.data(), src + done / bs, chunk / bs);
    if (e == Errc::kOk) e = co_await ch->write(buf.data(), dst + done / bs, chunk / bs);
    if (e != Errc::kOk) {
      co_return Status::Errorf(e, "pool '{}': copying cluster {} to {} failed: {}", sb_.name, from, to,
                               errc_describe(e));
    }
  }
  log_->data_written();  // the record that points here waits for this data to be durable
  co_return Status::Ok();
}

Result<const ReplicaMeta*> Pool::writable_cluster(const Uuid& uuid, uint32_t vc) const {
  const ReplicaMeta* r = state_->find(uuid);
  if (!r || r->snapshot || vc >= r->map.size()) {
    return Status::Errorf(Errc::kNoDev, "pool '{}': no writable replica {} with cluster {}", sb_.name, uuid.ToString(),
                          vc);
  }
  // A failed pool cannot tell durable map entries from applied ones: refuse them all.
  TERN_RETURN_IF_ERROR(refuse_if_failed());
  return r;
}

Task<void> Pool::checkpoint_soon() {
  if (log_->used() <= log_->capacity() / 2) co_return;
  auto g = co_await meta_mu_.lock();
  co_await checkpoint_if_due();
}

namespace {
struct WaitInList {
  std::vector<std::coroutine_handle<>>* list;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { list->push_back(h); }
  void await_resume() const noexcept {}
};
}  // namespace

Task<Result<uint32_t>> Pool::AllocateCluster(Uuid uuid, uint32_t vc) {
  const auto key = std::make_pair(uuid, vc);
  for (;;) {
    if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
    if (auto it = allocating_.find(key); it != allocating_.end()) {
      co_await WaitInList{&it->second};  // another write is allocating this cluster: take its result
      continue;
    }
    auto g = co_await meta_mu_.lock();
    if (allocating_.count(key)) continue;  // started while we waited for the lock
    auto found = writable_cluster(uuid, vc);
    if (!found.ok()) co_return found.status();
    if (ReplicaMeta::owned((*found)->map[vc])) {  // another write got there first (durable: see allocating_)
      const uint32_t pc = (*found)->map[vc] - 1;
      co_return pc;
    }
    const uint32_t source = state_->resolve(uuid, vc);  // 0, or an ancestor's cluster to copy
    auto picked = state_->pick_free(1);
    if (!picked.ok()) co_return Status::Errorf(Errc::kNoSpc, "pool '{}' is full", sb_.name);
    const uint32_t pc = (*picked)[0];
    state_->reserve(pc);
    allocating_[key];
    g.release();

    // Outside the lock: other clusters allocate meanwhile, and their records share log batches.
    Status z;
    if (source) {
      z = co_await copy_cluster((source & ~PoolState::kInheritedBit) - 1, pc);
    } else {
      const std::vector<uint32_t> one{pc + 1};
      z = co_await zero_clusters(one);
    }
    g = co_await meta_mu_.lock();
    std::optional<MetaLog::Ticket> ticket;
    bool retry = false;
    if (z.ok()) {
      found = writable_cluster(uuid, vc);
      if (!found.ok()) {
        z = found.status();
      } else if (ReplicaMeta::owned((*found)->map[vc]) || state_->resolve(uuid, vc) != source) {
        retry = true;  // a merge gave it the cluster, or an unmap changed what it reads: start again
      } else {
        const std::vector<uint8_t> record = PoolState::MapClusterRecord(uuid, vc, pc);
        auto t = stage(record);
        if (t.ok()) {
          ticket = std::move(*t);
        } else {
          z = t.status();
        }
      }
    }
    if (!ticket) state_->unreserve(pc);
    g.release();
    if (ticket) z = co_await wait_durable(std::move(*ticket));
    // Waiters resume and find the cluster mapped (durable) or retry themselves.
    std::vector<std::coroutine_handle<>> waiters = std::move(allocating_[key]);
    allocating_.erase(key);
    if (z.ok() && !retry) {
      if (auto it = shared_.find(uuid); it != shared_.end() && vc < it->second->clusters) {
        it->second->map[vc].store(pc + 1, std::memory_order_release);
      }
    }
    for (auto h : waiters) h.resume();
    if (!z.ok()) co_return z;
    if (retry) continue;
    co_await checkpoint_soon();
    co_return pc;
  }
}

Task<Status> Pool::ReleaseCluster(Uuid uuid, uint32_t vc) {
  const auto key = std::make_pair(uuid, vc);
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  auto g = co_await meta_mu_.lock();
  while (allocating_.count(key)) {  // let an allocation of this cluster finish first
    g.release();
    co_await WaitInList{&allocating_[key]};
    g = co_await meta_mu_.lock();
  }
  auto found = writable_cluster(uuid, vc);
  if (!found.ok()) co_return found.status();
  const uint32_t m = (*found)->map[vc];
  if (m == ReplicaMeta::kZero || (m == ReplicaMeta::kInherit && state_->resolve(uuid, vc) == 0)) {
    co_return Status::Ok();  // reads zeros already
  }
  const std::vector<uint8_t> record = PoolState::UnmapClusterRecord(uuid, vc);
  auto t = stage(record);
  if (!t.ok()) co_return t.status();
  MetaLog::Ticket ticket = std::move(*t);
  std::shared_ptr<ReplicaShared> sh;
  if (auto it = shared_.find(uuid); it != shared_.end()) sh = it->second;
  if (sh && vc < sh->clusters) sh->map[vc].store(0, std::memory_order_release);
  const bool freed = ReplicaMeta::owned(m);
  if (freed && sh) state_->reserve(m - 1);  // requests in flight may still reach it: see below
  g.release();
  Status s = co_await wait_durable(std::move(ticket));
  if (freed && sh) {
    // The cluster goes back to the pool once every request submitted before the map changed is done.
    // In the background (this very unmap is one of them), in the pool's scope: export and destroy wait
    // for it.
    tasks_.spawn([](std::shared_ptr<ReplicaShared> sh, Pool* self, uint32_t pc) -> Task<void> {
      co_await replica_drain(sh);
      self->unreserve_cluster(pc);
    }(sh, this, m - 1));
  }
  if (!s.ok()) co_return s;
  co_await checkpoint_soon();
  co_return Status::Ok();
}

Task<Result<ReplicaMeta>> Pool::CreateSnapshot(Uuid replica, SnapshotOptions opts) {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  TERN_CO_RETURN_IF_ERROR(validate_replica_name(opts.name));
  const Uuid id = opts.uuid.value_or(Uuid::Generate());
  auto check = [&]() -> Status {
    const ReplicaMeta* r = state_->find(replica);
    if (!r) return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica {}", sb_.name, replica.ToString());
    if (r->snapshot) {
      return Status::Errorf(Errc::kInval, "'{}' is a snapshot; snapshot a replica or a clone", r->name);
    }
    if (state_->find(id)) return Status::Errorf(Errc::kExist, "pool '{}' already has UUID {}", sb_.name, id.ToString());
    if (state_->find_name(opts.name)) {
      return Status::Errorf(Errc::kExist, "pool '{}' already has a replica or snapshot named '{}'", sb_.name, opts.name);
    }
    TERN_RETURN_IF_ERROR(metadata_room(4 * r->map.size() + 128 + opts.name.size()));
    return refuse_if_failed();
  };
  TERN_CO_RETURN_IF_ERROR(check());
  std::shared_ptr<ReplicaShared> sh;
  if (auto it = shared_.find(replica); it != shared_.end()) sh = it->second;
  // Quiesce: writes completed before this point are in the snapshot, later ones are not.
  if (sh) co_await replica_pause(sh);
  auto g = co_await meta_mu_.lock();
  Status s = check();
  if (s.ok()) {
    const std::vector<uint8_t> record = PoolState::SnapshotRecord(replica, id, opts.name, wall_clock_ns());
    s = co_await commit(record);
    republish();  // the replica's clusters are the snapshot's now: its writes copy them first
  }
  std::optional<ReplicaMeta> made;
  if (s.ok()) made = *state_->find(id);
  g.release();
  if (sh) co_await replica_resume(sh);
  if (!s.ok()) co_return s;
  TLOG_INFO("pool", "pool '{}': snapshot '{}' ({}) of replica {}", sb_.name, made->name, id.ToString(),
            replica.ToString());
  co_return *made;
}

Task<Result<ReplicaMeta>> Pool::CreateClone(Uuid snapshot, ReplicaCreateOptions opts) {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
  TERN_CO_RETURN_IF_ERROR(validate_replica_name(opts.name));
  const Uuid id = opts.uuid.value_or(Uuid::Generate());
  auto g = co_await meta_mu_.lock();
  auto check = [&]() -> Status {
    const ReplicaMeta* s = state_->find(snapshot);
    if (!s || s->discarded) {
      return Status::Errorf(Errc::kNoEnt, "pool '{}' has no snapshot {}", sb_.name, snapshot.ToString());
    }
    if (!s->snapshot) return Status::Errorf(Errc::kInval, "'{}' is not a snapshot; clone a snapshot", s->name);
    TERN_RETURN_IF_ERROR(metadata_room(4 * s->map.size() + 128 + opts.name.size()));
    if (state_->find(id)) return Status::Errorf(Errc::kExist, "pool '{}' already has UUID {}", sb_.name, id.ToString());
    if (state_->find_name(opts.name)) {
      return Status::Errorf(Errc::kExist, "pool '{}' already has a replica or snapshot named '{}'", sb_.name, opts.name);
    }
    return refuse_if_failed();
  };
  Status s = check();
  if (s.ok()) {
    const std::vector<uint8_t> record = PoolState::CloneRecord(snapshot, id, opts.name, wall_clock_ns());
    s = co_await commit(record);
  }
  std::optional<ReplicaMeta> made;
  if (s.ok()) made = *state_->find(id);
  g.release();
  if (!s.ok()) co_return s;
  TLOG_INFO("pool", "pool '{}': clone '{}' ({}) of snapshot {}", sb_.name, made->name, id.ToString(),
            snapshot.ToString());
  co_return *made;
}

Task<Result<ReplicaMeta>> Pool::ResizeReplica(Uuid uuid, uint64_t size, bool allow_shrink) {
  if (size == 0 || size % 4096) {
    co_return Status::Errorf(Errc::kInval, "size {} is not a positive multiple of 4096", size);
  }
  // Growing a replica in use (a nexus's child, a shared namespace): its requests are held while the map
  // grows, then it grows under them. Paused before the metadata lock: a write in flight may need it.
  std::shared_ptr<ReplicaShared> sh;
  if (auto it = shared_.find(uuid); it != shared_.end()) {
    const ReplicaMeta* r = state_->find(uuid);
    if (r && size > r->size) sh = it->second;
  }
  if (!sh) co_return co_await resize_replica(uuid, size, allow_shrink, nullptr);
  co_await replica_pause(sh);
  auto m = co_await resize_replica(uuid, size, allow_shrink, sh);
  co_await replica_resume(sh);
  co_return m;
}

Task<Result<ReplicaMeta>> Pool::resize_replica(Uuid uuid, uint64_t size, bool allow_shrink,
                                               std::shared_ptr<ReplicaShared> online) {
  const uint64_t cs = sb_.cluster_size;
  for (;;) {
    if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is closed", sb_.name);
    auto g = co_await meta_mu_.lock();
    const ReplicaMeta* r = state_->find(uuid);
    Status bad;
    if (!r || r->discarded) {
      bad = Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica {}", sb_.name, uuid.ToString());
    } else if (r->snapshot) {
      bad = Status::Errorf(Errc::kInval, "'{}' is a snapshot: snapshots keep their size", r->name);
    } else if (size < r->size && !allow_shrink) {
      bad = Status::Errorf(Errc::kInval,
                           "shrinking '{}' from {} to {} bytes loses the data past the new end; say so explicitly "
                           "(allow shrink) if that is meant", r->name, r->size, size);
    } else if (size > r->size && !metadata_room(4 * ((size - r->size) / cs + 1)).ok()) {
      bad = metadata_room(4 * ((size - r->size) / cs + 1));
    } else if (Bdev* b = reg_.find(uuid.ToString()); b && b->open_count() > 0 && !(online && size > r->size)) {
      bad = Status::Errorf(Errc::kBusy, "replica '{}' is open (shared or in use); only growing is possible while it is",
                           r->name);
    } else {
      bad = refuse_if_failed();
    }
    if (!bad.ok()) co_return bad;
    if (size == r->size) {
      ReplicaMeta same = *r;
      co_return same;
    }
    const uint64_t old_size = r->size;
    const size_t old_clusters = r->map.size();
    const bool thin = r->thin;
    // Growing: the old last cluster's bytes past the old end become visible and must read zeros. An
    // inherited cluster is copied first (by the allocation path, outside the lock), then zeroed there.
    uint32_t tail_pc = 0;  // + 1
    if (size > old_size && old_size % cs) {
      const uint32_t e = state_->resolve(uuid, old_size / cs);
      if (e & PoolState::kInheritedBit) {
        g.release();  // the allocation takes the lock itself
        auto pc = co_await AllocateCluster(uuid, uint32_t(old_size / cs));
        if (!pc.ok()) co_return pc.status();
        continue;  // check everything again
      }
      tail_pc = e;
    }
    // Online (paused): the device stays; its map and size grow below.
    const bool was_exposed = !online && shared_.count(uuid) != 0;
    if (was_exposed) {
      const std::optional<Uuid> only = uuid;
      Status u = co_await unexpose(only);
      if (!u.ok()) co_return u;
    }
    Status s;
    if (tail_pc) s = co_await zero_range(tail_pc - 1, old_size % cs, cs - old_size % cs);
    std::vector<uint32_t> fresh;
    const size_t new_clusters = (size + cs - 1) / cs;
    if (s.ok() && !thin && new_clusters > old_clusters) {
      auto picked = state_->pick_free(new_clusters - old_clusters);
      if (!picked.ok()) {
        s = Status::Errorf(Errc::kNoSpc, "pool '{}' cannot grow thick replica {} to {} bytes: {}", sb_.name,
                           uuid.ToString(), size, picked.status().message());
      } else {
        fresh = std::move(*picked);
        for (uint32_t pc : fresh) state_->reserve(pc);
        std::vector<uint32_t> plus1;
        for (uint32_t pc : fresh) plus1.push_back(pc + 1);
        s = co_await zero_clusters(plus1);
      }
    }
    if (s.ok()) {
      const std::vector<uint8_t> record = PoolState::ResizeRecord(uuid, size, fresh);
      s = co_await commit(record);
    } else {
      for (uint32_t pc : fresh) state_->unreserve(pc);
    }
    std::optional<ReplicaMeta> now;
    if (s.ok()) now = *state_->find(uuid);
    if (s.ok() && online) {
      auto it = shared_.find(uuid);
      if (Bdev* b = reg_.find(uuid.ToString()); b && it != shared_.end() && it->second == online) {
        replica_grow(*b, online, state_->resolve_all(uuid), size / b->props().block_size);
      }
    }
    if (was_exposed) {
      auto b = ExposeReplica(uuid);
      if (!b.ok() && s.ok()) s = b.status();
    }
    g.release();
    if (!s.ok()) co_return s;
    TLOG_INFO("pool", "pool '{}': resized replica '{}' from {} to {} bytes", sb_.name, now->name, old_size, size);
    co_return *now;
  }
}

Task<Result<PoolReport>> Pool::Inspect(BdevRegistry& reg, std::string device) {
  auto d = reg.open(device, false);
  if (!d.ok()) co_return Status::Errorf(d.code(), "pool check: cannot open device '{}': {}", device, d.status().message());
  BdevDesc& desc = **d;
  const BdevProps& props = desc.bdev().props();
  if (kLabel % props.block_size != 0) {
    co_return Status::Errorf(Errc::kInval, "pool check: device '{}' has {}-byte blocks", device, props.block_size);
  }
  const uint64_t size = props.size_bytes() / kLabel * kLabel;
  const std::string pwhere = primary_where();
  auto primary = co_await read_label(desc, 0, pwhere);
  if (!primary.ok() && primary.code() != Errc::kNoEnt && primary.code() != Errc::kCorruption &&
      primary.code() != Errc::kNotSup) {
    co_return primary.status();
  }
  if (primary.ok() && primary->pool_size > size) {
    co_return Status::Errorf(Errc::kRange, "pool '{}' spans {} bytes but device '{}' has {}", primary->name,
                             primary->pool_size, device, size);
  }
  const uint64_t boff = primary.ok() ? primary->backup_offset() : (size >= 2 * kLabel ? size - kLabel : 0);
  const std::string bwhere = backup_where(boff);
  auto backup = co_await read_label(desc, boff, bwhere);
  auto choice = choose_superblock(primary, backup);
  if (!choice.ok()) co_return choice.status();
  PoolReport rep;
  rep.sb = choice->sb;
  rep.label_note = choice->note;
  MetaLog log(desc, rep.sb);
  PoolState st(rep.sb.data_clusters, rep.sb.cluster_size);
  PoolState* stp = &st;
  uint64_t* n = &rep.records_replayed;
  const std::function<Status(const Checkpoint&)> load = [stp](const Checkpoint& c) { return stp->Load(c.body); };
  const std::function<Status(std::span<const uint8_t>)> apply = [stp, n](std::span<const uint8_t> r) {
    ++*n;
    return stp->Apply(r);
  };
  auto c = co_await log.Recover(load, apply);
  if (!c.ok()) co_return c.status();
  rep.checkpoint_generation = c->generation;
  for (auto& [id, r] : st.replicas()) {
    rep.replicas.push_back(r);
    const PoolState::Space sp = st.space(id);
    rep.space.push_back({sp.owned * rep.sb.cluster_size, sp.readable * rep.sb.cluster_size,
                         sp.exclusive * rep.sb.cluster_size});
  }
  rep.used_clusters = st.data_clusters() - st.free_clusters();
  co_return rep;
}

}  // namespace tern::pool
