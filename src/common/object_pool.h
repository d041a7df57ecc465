// ObjectPool<T>: recycled objects for per-request state that cannot live in the caller's memory
// (pieces of a split request, requests a wrapper forwards). Single-threaded: one pool per reactor-owned
// owner. It grows a chunk at a time and never shrinks, so after warm-up get/put never touch the heap.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace tern {

template <typename T, size_t kChunk = 32>
class ObjectPool {
 public:
  T* get() {
    if (free_.empty()) grow();
    T* t = free_.back();
    free_.pop_back();
    return t;
  }
  void put(T* t) { free_.push_back(t); }
  size_t capacity() const { return chunks_.size() * kChunk; }

 private:
  void grow() {
    chunks_.push_back(std::make_unique<T[]>(kChunk));
    free_.reserve(capacity());
    for (size_t i = kChunk; i > 0; --i) free_.push_back(&chunks_.back()[i - 1]);
  }
  std::vector<std::unique_ptr<T[]>> chunks_;
  std::vector<T*> free_;
};

}  // namespace tern
