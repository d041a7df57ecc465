// Per-reactor pools of data buffers for network requests (NVMe/TCP: the target's read data and received write
// data; NBD: request payloads). Two size classes so a 4 KiB request does
// not hold 128 KiB. Buffers are allocated lazily, a chunk at a time, and kept; a pool that reached its
// limit returns null and the caller queues the request until a buffer comes back.
//
// Threads: one pool per reactor, used only there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/small_function.h"

namespace tern::net {

class BufferPool {
 public:
  BufferPool(size_t buf_size, size_t max_buffers) : size_(buf_size), max_(max_buffers) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  uint8_t* get();
  void put(uint8_t* b);
  size_t buffer_size() const { return size_; }
  size_t allocated() const { return allocated_; }

  // Something waiting for a buffer: woken (once per registration) when one comes back.
  struct Waiter {
    SmallFunction<void()> wake;
    Waiter* prev = nullptr;
    Waiter* next = nullptr;
    bool linked = false;
  };
  void wait(Waiter* w);
  void cancel(Waiter* w);

 private:
  size_t size_;
  size_t max_;
  size_t allocated_ = 0;
  std::vector<uint8_t*> free_;
  std::vector<uint8_t*> chunks_;
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

}  // namespace tern::net
