// Test-only device backends, built on the public plug-in interface like any real backend.
#pragma once

#include <cstring>
#include <functional>
#include <vector>

#include "bdev/bdev.h"
#include "bdev/registry.h"

namespace tern::test {

// A RAM device with configurable geometry that records every request the layer hands it and can hold
// requests (complete them later, on demand) or fail chosen ones.
class RecordingBdev final : public Bdev {
 public:
  struct Seen {
    IoType type;
    uint64_t offset, num;
    int iovcnt;
    std::vector<size_t> iov_lens;
  };

  explicit RecordingBdev(BdevProps p) : Bdev(std::move(p)), mem_(props_.size_bytes(), 0) {}

  static BdevProps props(std::string name, uint64_t blocks, uint32_t bs = 512) {
    BdevProps p;
    p.name = std::move(name);
    p.uuid = Uuid::Generate();
    p.product = "recording";
    p.block_size = bs;
    p.num_blocks = blocks;
    return p;
  }

  bool supports(IoType t) const override { return !(unsupported_mask & (1u << unsigned(t))); }
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override { return std::make_unique<ChannelCtx>(); }

  void submit(ChannelCtx*, BdevIo* io) override {
    Seen s{io->type, io->offset_blocks, io->num_blocks, io->iovcnt, {}};
    for (int i = 0; i < io->iovcnt && io->type != IoType::kFlush; ++i) s.iov_lens.push_back(io->iovs[i].iov_len);
    seen.push_back(s);
    if (fail_piece_index >= 0 && int(seen.size()) - 1 == fail_piece_index) {
      bdev_io_complete_deferred(io, Errc::kIo);
      return;
    }
    if (io->type == IoType::kReset) {
      bdev_io_complete_deferred(io, Errc::kOk);
      return;
    }
    if (hold) {
      held.push_back(io);
      return;
    }
    execute(io);
    bdev_io_complete_deferred(io, Errc::kOk);
  }

  void execute(BdevIo* io) {
    uint8_t* p = mem_.data() + io->offset_blocks * props_.block_size;
    if (io->type == IoType::kRead) {
      for (int i = 0; i < io->iovcnt; ++i) {
        std::memcpy(io->iovs[i].iov_base, p, io->iovs[i].iov_len);
        p += io->iovs[i].iov_len;
      }
    } else if (io->type == IoType::kWrite) {
      for (int i = 0; i < io->iovcnt; ++i) {
        std::memcpy(p, io->iovs[i].iov_base, io->iovs[i].iov_len);
        p += io->iovs[i].iov_len;
      }
    } else if (io->type == IoType::kUnmap || io->type == IoType::kWriteZeroes) {
      std::memset(p, 0, io->num_blocks * props_.block_size);
    }
  }

  // Completes every held request (on the reactor that holds them).
  void release_held() {
    auto h = std::move(held);
    held.clear();
    for (BdevIo* io : h) {
      execute(io);
      bdev_io_complete(io, Errc::kOk);
    }
  }

  BdevProps& mutable_props() { return props_; }
  std::vector<Seen> seen;
  std::vector<BdevIo*> held;
  bool hold = false;
  int fail_piece_index = -1;
  uint32_t unsupported_mask = 0;
  std::vector<uint8_t> mem_;
};

// A pass-through device with its own geometry over a base device: forces the layer to split requests
// before they reach the base.
class SplitterBdev final : public Bdev {
 public:
  SplitterBdev(BdevProps p, std::unique_ptr<BdevDesc> base) : Bdev(std::move(p)), base_(std::move(base)) {}
  bool supports(IoType t) const override { return base_->bdev().supports(t); }
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override {
    auto ch = ChannelRef::Get(*base_);
    if (!ch.ok()) return ch.status();
    auto c = std::make_unique<Ch>();
    c->base = std::move(*ch);
    return std::unique_ptr<ChannelCtx>(std::move(c));
  }
  void submit(ChannelCtx* ctx, BdevIo* io) override {
    auto* c = static_cast<Ch*>(ctx);
    struct Fwd {
      BdevIo io;
      BdevIo* parent;
    };
    static_assert(sizeof(Fwd*) <= BdevIo::kDriverCtxSize);
    auto* f = new Fwd();  // test code: allocation is fine here
    f->parent = io;
    f->io.type = io->type;
    f->io.offset_blocks = io->offset_blocks;
    f->io.num_blocks = io->num_blocks;
    f->io.iovs = io->iovs;
    f->io.iovcnt = io->iovcnt;
    f->io.done = [](BdevIo* b, void* arg) {
      auto* fw = static_cast<Fwd*>(arg);
      Errc e = b->status;
      BdevIo* parent = fw->parent;
      delete fw;
      bdev_io_complete(parent, e);
    };
    f->io.done_arg = f;
    c->base.submit(&f->io);
  }
  Task<void> shutdown() override {
    base_.reset();
    co_return;
  }

 private:
  struct Ch : ChannelCtx {
    ChannelRef base;
  };
  std::unique_ptr<BdevDesc> base_;
};

}  // namespace tern::test
