#include "pool/pool.h"

#include <chrono>
#include <cstring>

#include "common/aligned_buffer.h"
#include "common/log.h"

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

Task<Errc> io_block(BdevDesc& desc, IoType type, uint64_t offset, uint8_t* buf) {
  auto ch = ChannelRef::Get(desc);
  if (!ch.ok()) co_return ch.code();
  const uint32_t bs = desc.bdev().props().block_size;
  if (type == IoType::kRead) co_return co_await ch->read(buf, offset / bs, kLabel / bs);
  co_return co_await ch->write(buf, offset / bs, kLabel / bs);
}

Task<Errc> flush(BdevDesc& desc) {
  if (!desc.bdev().supports(IoType::kFlush)) co_return Errc::kOk;
  auto ch = ChannelRef::Get(desc);
  if (!ch.ok()) co_return ch.code();
  co_return co_await ch->flush();
}

// Reads and decodes the label at `offset`; an I/O error is reported as such (not as "no label").
Task<Result<Superblock>> read_label(BdevDesc& desc, uint64_t offset, std::string where) {
  AlignedBuffer buf(kLabel);
  Errc e = co_await io_block(desc, IoType::kRead, offset, buf.data());
  if (e != Errc::kOk) co_return Status::Errorf(e, "{}: read failed: {}", where, errc_describe(e));
  co_return Superblock::Decode(buf.data(), where);
}

std::string primary_where() { return "primary superblock at byte 0"; }
std::string backup_where(uint64_t off) { return fmt::format("backup superblock at byte {}", off); }

}  // namespace

Pool::~Pool() = default;

Task<Status> Pool::write_superblock(bool primary, bool backup) {
  AlignedBuffer buf(kLabel);
  sb_.Encode(buf.data());
  // Backup first: a cut between the two leaves the old primary or the new backup, both valid.
  if (backup) {
    Errc e = co_await io_block(*desc_, IoType::kWrite, sb_.backup_offset(), buf.data());
    if (e == Errc::kOk) e = co_await flush(*desc_);
    if (e != Errc::kOk) {
      co_return Status::Errorf(e, "pool '{}': writing the backup superblock failed: {}", sb_.name, errc_describe(e));
    }
  }
  if (primary) {
    Errc e = co_await io_block(*desc_, IoType::kWrite, 0, buf.data());
    if (e == Errc::kOk) e = co_await flush(*desc_);
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
  p->sb_.created_ns = uint64_t(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  p->sb_.clean = false;
  Status s = co_await p->write_superblock(true, true);
  if (!s.ok()) co_return s;
  TLOG_INFO("pool", "created pool '{}' ({}) on '{}': {} clusters of {} MiB, metadata {} MiB", p->sb_.name,
            p->sb_.pool_uuid.ToString(), device, p->sb_.data_clusters, p->sb_.cluster_size >> 20,
            p->sb_.data_offset >> 20);
  co_return p;
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
  sb_.clean = true;
  ++sb_.generation;
  Status s = co_await write_superblock(true, true);
  desc_.reset();
  if (s.ok()) TLOG_INFO("pool", "exported pool '{}' from '{}'", sb_.name, device_);
  co_return s;
}

Task<Status> Pool::Destroy() {
  if (!desc_) co_return Status::Errorf(Errc::kBadF, "pool '{}' is already closed", sb_.name);
  AlignedBuffer zero(kLabel, AlignedBuffer::kDefaultAlign, true);
  // Primary first: once it is gone the pool is gone for `create`, and a cut before the backup is wiped
  // leaves a pool that import can still find and destroy again.
  Errc e = co_await io_block(*desc_, IoType::kWrite, 0, zero.data());
  if (e == Errc::kOk) e = co_await io_block(*desc_, IoType::kWrite, sb_.backup_offset(), zero.data());
  if (e == Errc::kOk) e = co_await flush(*desc_);
  desc_.reset();
  if (e != Errc::kOk) {
    co_return Status::Errorf(e, "pool '{}': wiping its labels failed: {}", sb_.name, errc_describe(e));
  }
  TLOG_INFO("pool", "destroyed pool '{}' on '{}'", sb_.name, device_);
  co_return Status::Ok();
}

}  // namespace tern::pool
