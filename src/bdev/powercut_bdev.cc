// powercut:///name?base=<device>[&cut_at=N][&persist=P][&seed=S][&uuid=U] — a volatile write cache in
// front of `base` that can lose power (see fault_bdevs.h). Built to prove crash consistency: the base
// device holds exactly what survives, and a cut may keep any subset of the unflushed blocks.
#include <sys/uio.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "bdev/backends.h"
#include "bdev/fault_bdevs.h"
#include "bdev/wrapper_io.h"
#include "common/aligned_buffer.h"
#include "common/log.h"

namespace tern {

class PowerCutChannel final : public ChannelCtx {
 public:
  PowerCutChannel(PowerCutBdev* b, ChannelRef base) : bdev(b), base(std::move(base)) {}
  PowerCutBdev* bdev;
  ChannelRef base;
  ChildIoPool pool;
};

namespace {

// Copies between a request's iovecs, starting `off` bytes into them, and a flat buffer.
void copy_from_iov(const iovec* iov, int iovcnt, size_t off, uint8_t* dst, size_t len) {
  for (int i = 0; i < iovcnt && len; ++i) {
    if (off >= iov[i].iov_len) {
      off -= iov[i].iov_len;
      continue;
    }
    size_t n = std::min(len, iov[i].iov_len - off);
    std::memcpy(dst, static_cast<const uint8_t*>(iov[i].iov_base) + off, n);
    dst += n;
    len -= n;
    off = 0;
  }
}
void copy_to_iov(const iovec* iov, int iovcnt, size_t off, const uint8_t* src, size_t len) {
  for (int i = 0; i < iovcnt && len; ++i) {
    if (off >= iov[i].iov_len) {
      off -= iov[i].iov_len;
      continue;
    }
    size_t n = std::min(len, iov[i].iov_len - off);
    auto* d = static_cast<uint8_t*>(iov[i].iov_base) + off;
    if (src) {
      std::memcpy(d, src, n);
      src += n;
    } else {
      std::memset(d, 0, n);
    }
    len -= n;
    off = 0;
  }
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

PowerCutBdev::PowerCutBdev(BdevProps p, std::unique_ptr<BdevDesc> base, uint64_t cut_at, double persist,
                           uint64_t seed, unsigned reactors)
    : Bdev(std::move(p)), base_(std::move(base)), bs_(props_.block_size), cut_at_(cut_at), persist_(persist),
      seed_(seed), destaging_("powercut destage", reactors) {}

PowerCutBdev::~PowerCutBdev() = default;

void PowerCutBdev::arm(uint64_t at, double persist, uint64_t seed) {
  std::lock_guard<std::mutex> g(mu_);
  persist_ = persist;
  seed_ = seed;
  cut_at_.store(at);
}

size_t PowerCutBdev::dirty_blocks() const {
  std::lock_guard<std::mutex> g(mu_);
  return cache_.size();
}

bool PowerCutBdev::supports(IoType t) const {
  // Unmap and write-zeroes are cached as zeros; reset passes through to the base.
  return t != IoType::kReset || base_->bdev().supports(t);
}

Result<std::unique_ptr<ChannelCtx>> PowerCutBdev::create_channel(Reactor&) {
  auto base = ChannelRef::Get(*base_);
  if (!base.ok()) return base.status();
  return std::unique_ptr<ChannelCtx>(new PowerCutChannel(this, std::move(*base)));
}

void PowerCutBdev::cut(double persist, uint64_t seed) { cut_and_destage(persist, seed); }

// Chooses the surviving blocks, empties the cache, turns the power off, and writes the survivors to the
// base (what the disk's cache had destaged when the lights went out).
void PowerCutBdev::cut_and_destage(double persist, uint64_t seed) {
  std::vector<Dirty> keep;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (cut_.load()) return;
    cut_.store(true);
    uint64_t s = seed;
    const uint64_t threshold = persist >= 1.0 ? UINT64_MAX : uint64_t(persist * 18446744073709551615.0);
    // Decide in LBA order so that a seed means the same choice whatever the hash map's order.
    std::vector<uint64_t> lbas;
    lbas.reserve(cache_.size());
    for (auto& [lba, b] : cache_) lbas.push_back(lba);
    std::sort(lbas.begin(), lbas.end());
    for (uint64_t lba : lbas) {
      Block& b = cache_[lba];
      if (persist > 0 && splitmix(s) <= threshold) {
        keep.push_back({lba, b.version, std::move(b.data)});
      }
    }
    kept_ += keep.size();
    dropped_ += cache_.size() - keep.size();
    cache_.clear();
  }
  TLOG_INFO("bdev", "powercut device '{}': power cut after {} events; {} cached block(s) survive, the rest are lost",
            name(), events_.load(), keep.size());
  if (!keep.empty()) destaging_.local().spawn(destage(std::move(keep), nullptr));
}

bool PowerCutBdev::count_event() {
  uint64_t n = events_.fetch_add(1);
  if (n < cut_at_.load()) return false;
  double persist;
  uint64_t seed;
  {
    std::lock_guard<std::mutex> g(mu_);
    persist = persist_;
    seed = seed_;
  }
  cut_and_destage(persist, seed);
  return true;
}

void PowerCutBdev::cache_write(BdevIo* io) {
  const bool zeros = io->type != IoType::kWrite;
  std::lock_guard<std::mutex> g(mu_);
  for (uint64_t i = 0; i < io->num_blocks; ++i) {
    Block& b = cache_[io->offset_blocks + i];
    b.version = next_version_++;
    if (zeros) {
      b.data.reset();
    } else {
      // A fresh buffer per write: a destage in progress may still hold the previous one.
      // Aligned to the block size: the base may be an O_DIRECT file or disk.
      b.data = std::shared_ptr<uint8_t[]>(static_cast<uint8_t*>(std::aligned_alloc(bs_, bs_)),
                                          [](uint8_t* p) { std::free(p); });
      copy_from_iov(io->iovs, io->iovcnt, i * bs_, b.data.get(), bs_);
    }
  }
}

void PowerCutBdev::overlay_read(BdevIo* io) {
  std::lock_guard<std::mutex> g(mu_);
  if (cache_.empty()) return;
  for (uint64_t i = 0; i < io->num_blocks; ++i) {
    auto it = cache_.find(io->offset_blocks + i);
    if (it != cache_.end()) copy_to_iov(io->iovs, io->iovcnt, i * bs_, it->second.data.get(), bs_);
  }
}

void PowerCutBdev::submit(ChannelCtx* ctx, BdevIo* io) {
  auto* ch = static_cast<PowerCutChannel*>(ctx);
  if (cut_.load()) {
    bdev_io_complete_deferred(io, Errc::kIo);
    return;
  }
  switch (io->type) {
    case IoType::kWrite:
    case IoType::kWriteZeroes:
    case IoType::kUnmap:
      if (count_event()) {
        bdev_io_complete_deferred(io, Errc::kIo);
        return;
      }
      cache_write(io);
      if (io->fua && io->type != IoType::kUnmap) {
        // Force Unit Access: this request's blocks go to the base before it completes; the rest of the
        // cache stays volatile.
        std::vector<Dirty> mine;
        {
          std::lock_guard<std::mutex> g(mu_);
          mine.reserve(io->num_blocks);
          for (uint64_t i = 0; i < io->num_blocks; ++i) {
            const Block& b = cache_[io->offset_blocks + i];
            mine.push_back({io->offset_blocks + i, b.version, b.data});
          }
        }
        destaging_.local().spawn(destage(std::move(mine), io));
        return;
      }
      bdev_io_complete_deferred(io, Errc::kOk);
      return;
    case IoType::kFlush: {
      if (count_event()) {
        bdev_io_complete_deferred(io, Errc::kIo);
        return;
      }
      std::vector<Dirty> snap;
      {
        std::lock_guard<std::mutex> g(mu_);
        snap.reserve(cache_.size());
        for (auto& [lba, b] : cache_) snap.push_back({lba, b.version, b.data});
      }
      destaging_.local().spawn(destage(std::move(snap), io));
      return;
    }
    case IoType::kRead: {
      ChildIo* f = ch->pool.get(io, ch);
      forward_io(ch->base, f, io, [](BdevIo* c, void* arg) {
        ChildIo* fw = ChildIo::from(arg);
        auto* pch = static_cast<PowerCutChannel*>(fw->owner);
        BdevIo* parent = fw->parent;
        Errc st = c->status;
        pch->pool.put(fw);
        if (st == Errc::kOk && pch->bdev->cut_.load()) st = Errc::kIo;
        if (st == Errc::kOk) pch->bdev->overlay_read(parent);
        bdev_io_complete(parent, st);
      });
      return;
    }
    case IoType::kReset: {
      ChildIo* f = ch->pool.get(io, ch);
      forward_io(ch->base, f, io, [](BdevIo* c, void* arg) {
        ChildIo* fw = ChildIo::from(arg);
        BdevIo* parent = fw->parent;
        Errc st = c->status;
        static_cast<PowerCutChannel*>(fw->owner)->pool.put(fw);
        bdev_io_complete(parent, st);
      });
      return;
    }
  }
  bdev_io_complete_deferred(io, Errc::kNotSup);
}

// Writes `blocks` to the base in LBA order, contiguous runs as one request, then flushes the base. For a
// flush or FUA request (`flush_io`), forgets the cached blocks that were not rewritten meanwhile and
// completes it; a cut meanwhile fails it. Runs on the reactor that started it, in its destaging scope.
Task<void> PowerCutBdev::destage(std::vector<Dirty> blocks, BdevIo* flush_io) {
  std::sort(blocks.begin(), blocks.end(), [](const Dirty& a, const Dirty& b) { return a.lba < b.lba; });
  auto got = ChannelRef::Get(*base_);
  Errc st = got.ok() ? Errc::kOk : got.status().code();
  ChannelRef base = got.ok() ? std::move(*got) : ChannelRef();
  AlignedBuffer zero(bs_, bs_, true);
  std::vector<iovec> iov;
  for (size_t i = 0; i < blocks.size() && st == Errc::kOk;) {
    size_t j = i;
    iov.clear();
    while (j < blocks.size() && blocks[j].lba == blocks[i].lba + (j - i) && iov.size() < 256) {
      iov.push_back({blocks[j].data ? blocks[j].data.get() : zero.data(), bs_});
      ++j;
    }
    st = co_await base.writev(iov.data(), int(iov.size()), blocks[i].lba, j - i);
    i = j;
  }
  if (st == Errc::kOk && base_->bdev().supports(IoType::kFlush)) st = co_await base.flush();
  if (flush_io) {
    if (st == Errc::kOk) {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& d : blocks) {
        auto it = cache_.find(d.lba);
        if (it != cache_.end() && it->second.version == d.version) cache_.erase(it);
      }
    }
    if (st == Errc::kOk && cut_.load()) st = Errc::kIo;
    bdev_io_complete(flush_io, st);
  }
}

Task<void> PowerCutBdev::shutdown() {
  // Destaging holds channels to the base: let it finish before the base goes.
  co_await destaging_.close(Reactor::current()->set());
  base_.reset();
}

Task<Result<std::unique_ptr<Bdev>>> make_powercut_bdev(const Uri& uri, BdevRegistry& reg) {
  auto q = UriQuery::Make(uri, {"base", "cut_at", "persist", "seed", "uuid"});
  if (!q.ok()) co_return q.status();
  auto name = name_from_path(uri);
  if (!name.ok()) co_return name.status();
  auto cut_at = q->u64("cut_at");
  if (!cut_at.ok()) co_return cut_at.status();
  auto seed = q->u64("seed");
  if (!seed.ok()) co_return seed.status();
  double persist = 0;
  if (auto v = q->str("persist")) {
    char* end = nullptr;
    persist = std::strtod(v->c_str(), &end);
    if (v->empty() || *end || !(persist >= 0 && persist <= 1)) {
      co_return Status::Errorf(Errc::kInval, "invalid URI '{}': persist must be a number from 0 to 1, got '{}'",
                               uri.text, *v);
    }
  }
  auto uuid = uuid_param(uri, *q);
  if (!uuid.ok()) co_return uuid.status();
  auto desc = open_wrapper_base(reg, uri, *name, q->str("base").value_or(""));
  if (!desc.ok()) co_return desc.status();
  BdevProps p = wrapper_props((*desc)->bdev(), *name, *uuid, "powercut");
  p.write_cache = true;
  p.unmap_reads_zeroes = true;
  co_return std::unique_ptr<Bdev>(new PowerCutBdev(std::move(p), std::move(*desc), cut_at->value_or(PowerCutBdev::kNever),
                                                   persist, seed->value_or(1), reg.reactors().size()));
}

}  // namespace tern
