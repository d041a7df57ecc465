// BoundedMpscQueue: a fixed-capacity lock-free queue, many producers, one consumer
// (D. Vyukov's bounded queue, with the consumer side simplified for a single thread).
//
// Producers are any threads; the consumer is the owning reactor. try_push fails when full; the caller
// decides what to do (reactors keep an overflow list, other threads back off).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace tern {

template <typename T>
class BoundedMpscQueue {
 public:
  explicit BoundedMpscQueue(size_t capacity_pow2) : mask_(capacity_pow2 - 1), cells_(new Cell[capacity_pow2]) {
    for (size_t i = 0; i < capacity_pow2; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }

  bool try_push(T&& v) {
    size_t pos = tail_.load(std::memory_order_relaxed);
    Cell* c;
    for (;;) {
      c = &cells_[pos & mask_];
      size_t seq = c->seq.load(std::memory_order_acquire);
      intptr_t dif = intptr_t(seq) - intptr_t(pos);
      if (dif == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;  // full
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
    c->value = std::move(v);
    c->seq.store(pos + 1, std::memory_order_release);
    return true;
  }

  // Consumer only.
  bool try_pop(T& out) {
    Cell& c = cells_[head_ & mask_];
    if (c.seq.load(std::memory_order_acquire) != head_ + 1) return false;
    out = std::move(c.value);
    c.value = T();
    c.seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    return true;
  }

  // Consumer only: whether a published element is waiting at the head.
  bool has_ready() const { return cells_[head_ & mask_].seq.load(std::memory_order_acquire) == head_ + 1; }

  size_t capacity() const { return mask_ + 1; }

 private:
  struct Cell {
    std::atomic<size_t> seq;
    T value;
  };
  const size_t mask_;
  std::unique_ptr<Cell[]> cells_;
  alignas(64) std::atomic<size_t> tail_{0};
  alignas(64) size_t head_ = 0;
};

}  // namespace tern
