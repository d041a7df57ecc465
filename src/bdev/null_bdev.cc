// null:///name?size_mb=N|num_blocks=N&blk_size=512|4096&uuid=U — discards writes, reads zeros.
// Useful to measure the layers above a device without any device cost.
#include <cstring>

#include "bdev/backends.h"

namespace tern {
namespace {

class NullBdev final : public Bdev {
 public:
  explicit NullBdev(BdevProps p) : Bdev(std::move(p)) {}
  bool supports(IoType) const override { return true; }
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override { return std::make_unique<ChannelCtx>(); }
  void submit(ChannelCtx*, BdevIo* io) override {
    if (io->type == IoType::kRead) {
      for (int i = 0; i < io->iovcnt; ++i) std::memset(io->iovs[i].iov_base, 0, io->iovs[i].iov_len);
    }
    bdev_io_complete_deferred(io, Errc::kOk);
  }
};

}  // namespace

Task<Result<std::unique_ptr<Bdev>>> make_null_bdev(const Uri& uri, BdevRegistry& reg) {
  auto props = ram_device_props(uri, reg, "null");
  if (!props.ok()) co_return props.status();
  co_return std::unique_ptr<Bdev>(new NullBdev(std::move(*props)));
}

}  // namespace tern
