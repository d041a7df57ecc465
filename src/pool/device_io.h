// Internal to the pool: metadata I/O at byte offsets on the pool's device, from a coroutine on the
// primary reactor (a channel is taken per call: metadata I/O is rare and never on the data path).
#pragma once

#include "bdev/bdev.h"

namespace tern::pool {

// Reads or writes `len` bytes at byte `offset`; both multiples of the device's block size.
inline Task<Errc> device_io(BdevDesc& desc, IoType type, uint64_t offset, uint8_t* buf, uint64_t len) {
  auto ch = ChannelRef::Get(desc);
  if (!ch.ok()) co_return ch.code();
  const uint32_t bs = desc.bdev().props().block_size;
  if (type == IoType::kRead) co_return co_await ch->read(buf, offset / bs, len / bs);
  co_return co_await ch->write(buf, offset / bs, len / bs);
}

// Flushes the device's volatile cache; a device without one has nothing to flush.
inline Task<Errc> device_flush(BdevDesc& desc) {
  if (!desc.bdev().supports(IoType::kFlush)) co_return Errc::kOk;
  auto ch = ChannelRef::Get(desc);
  if (!ch.ok()) co_return ch.code();
  co_return co_await ch->flush();
}

}  // namespace tern::pool
