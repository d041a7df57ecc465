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
  auto q = UriQuery::Make(uri, {"size_mb", "num_blocks", "blk_size", "uuid"});
  if (!q.ok()) co_return q.status();
  auto name = name_from_path(uri);
  if (!name.ok()) co_return name.status();
  if (Status st = reg.check_new_name(*name); !st.ok()) co_return st;
  auto sp = parse_size_params(uri, *q);
  if (!sp.ok()) co_return sp.status();
  BdevProps p;
  p.name = *name;
  p.uuid = sp->uuid;
  p.product = "null";
  p.block_size = sp->block_size;
  p.num_blocks = sp->num_blocks;
  p.unmap_reads_zeroes = true;
  co_return std::unique_ptr<Bdev>(new NullBdev(std::move(p)));
}

}  // namespace tern
