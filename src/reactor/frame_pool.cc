#include "reactor/frame_pool.h"

#include <new>

namespace tern::frame_pool {
namespace {

constexpr size_t kGranule = 64;
constexpr size_t kClasses = 64;  // frames up to 4 KiB are pooled
constexpr size_t kMaxCached = 4096;  // per class and thread; beyond this, blocks go back to the heap

struct FreeBlock {
  FreeBlock* next;
};

struct Pool {
  FreeBlock* heads[kClasses] = {};
  size_t counts[kClasses] = {};
  bool alive = true;
  ~Pool() {
    alive = false;
    for (size_t c = 0; c < kClasses; ++c) {
      while (FreeBlock* b = heads[c]) {
        heads[c] = b->next;
        ::operator delete(b);
      }
    }
  }
};

thread_local Pool t_pool;

size_t size_class(size_t n) { return (n + kGranule - 1) / kGranule; }

}  // namespace

void* allocate(size_t n) {
  size_t c = size_class(n);
  if (c < kClasses && t_pool.alive) {
    if (FreeBlock* b = t_pool.heads[c]) {
      t_pool.heads[c] = b->next;
      --t_pool.counts[c];
      return b;
    }
    return ::operator new(c * kGranule);
  }
  return ::operator new(n);
}

void deallocate(void* p, size_t n) noexcept {
  size_t c = size_class(n);
  if (c < kClasses && t_pool.alive && t_pool.counts[c] < kMaxCached) {
    auto* b = static_cast<FreeBlock*>(p);
    b->next = t_pool.heads[c];
    t_pool.heads[c] = b;
    ++t_pool.counts[c];
    return;
  }
  ::operator delete(p);
}

}  // namespace tern::frame_pool
