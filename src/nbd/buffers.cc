#include "nbd/buffers.h"

#include <algorithm>

namespace tern::nbd {

BufferSet::BufferSet(size_t small_max, size_t medium_max, size_t chunks_max)
    : small_(kSmall, small_max), medium_(kMedium, medium_max), chunks_(kChunk, chunks_max), chunks_max_(chunks_max) {}

bool BufferSet::acquire(uint32_t len, Lease* lease, iovec* iov, int* iovcnt) {
  lease->count = 0;
  if (len <= kMedium) {
    net::BufferPool& pool = len <= kSmall ? small_ : medium_;
    uint8_t* b = pool.get();
    if (!b) return false;
    lease->cls = len <= kSmall ? 0 : 1;
    lease->bufs[0] = b;
    lease->count = 1;
    iov[0] = {b, len};
    *iovcnt = 1;
    return true;
  }
  const size_t n = (size_t(len) + kChunk - 1) / kChunk;
  if (n > size_t(kMaxChunks) || chunks_out_ + n > chunks_max_) return false;
  lease->cls = 2;
  uint32_t left = len;
  for (size_t i = 0; i < n; ++i) {
    uint8_t* b = chunks_.get();
    if (!b) {  // out of memory: give back what was taken
      release(lease);
      return false;
    }
    lease->bufs[lease->count++] = b;
    ++chunks_out_;
    const uint32_t take = std::min(left, kChunk);
    iov[i] = {b, take};
    left -= take;
  }
  *iovcnt = int(n);
  return true;
}

void BufferSet::release(Lease* lease) {
  if (lease->count == 0) return;
  for (uint8_t i = 0; i < lease->count; ++i) {
    switch (lease->cls) {
      case 0: small_.put(lease->bufs[i]); break;
      case 1: medium_.put(lease->bufs[i]); break;
      default:
        chunks_.put(lease->bufs[i]);
        --chunks_out_;
        break;
    }
  }
  lease->count = 0;
  // Everyone waiting retries: a waiter may need another class or several chunks, so waking only the
  // first could leave the one that fits asleep. Waiters re-register if they still come up short.
  Waiter* w = head_;
  head_ = tail_ = nullptr;
  while (w) {
    Waiter* next = w->next;
    w->next = nullptr;
    w->linked = false;
    w->wake();
    w = next;
  }
}

void BufferSet::wait(Waiter* w) {
  if (w->linked) return;
  w->linked = true;
  w->next = nullptr;
  if (tail_) tail_->next = w; else head_ = w;
  tail_ = w;
}

void BufferSet::cancel(Waiter* w) {
  if (!w->linked) return;
  Waiter* prev = nullptr;
  for (Waiter* x = head_; x; prev = x, x = x->next) {
    if (x != w) continue;
    if (prev) prev->next = x->next; else head_ = x->next;
    if (tail_ == x) tail_ = prev;
    break;
  }
  w->next = nullptr;
  w->linked = false;
}

}  // namespace tern::nbd
