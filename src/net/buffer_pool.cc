#include "net/buffer_pool.h"

#include <cstdlib>
#include <new>

namespace tern::net {

namespace {
constexpr size_t kChunkBuffers = 8;
}

BufferPool::~BufferPool() {
  for (uint8_t* c : chunks_) std::free(c);
}

uint8_t* BufferPool::get() {
  if (free_.empty()) {
    if (allocated_ >= max_) return nullptr;
    size_t n = std::min(kChunkBuffers, max_ - allocated_);
    auto* chunk = static_cast<uint8_t*>(std::aligned_alloc(4096, n * size_));
    if (!chunk) return nullptr;
    chunks_.push_back(chunk);
    free_.reserve(allocated_ + n);
    for (size_t i = 0; i < n; ++i) free_.push_back(chunk + i * size_);
    allocated_ += n;
  }
  uint8_t* b = free_.back();
  free_.pop_back();
  return b;
}

void BufferPool::put(uint8_t* b) {
  free_.push_back(b);
  if (Waiter* w = head_) {
    cancel(w);
    w->wake();
  }
}

void BufferPool::wait(Waiter* w) {
  if (w->linked) return;
  w->linked = true;
  w->next = nullptr;
  w->prev = tail_;
  if (tail_) tail_->next = w; else head_ = w;
  tail_ = w;
}

void BufferPool::cancel(Waiter* w) {
  if (!w->linked) return;
  w->linked = false;
  if (w->prev) w->prev->next = w->next; else head_ = w->next;
  if (w->next) w->next->prev = w->prev; else tail_ = w->prev;
  w->prev = w->next = nullptr;
}

}  // namespace tern::net
