// AlignedBuffer: an owned, aligned byte buffer for direct I/O (O_DIRECT wants buffers aligned to the
// device's logical block size; we default to 4096, which satisfies every device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace tern {

class AlignedBuffer {
 public:
  static constexpr size_t kDefaultAlign = 4096;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size, size_t align = kDefaultAlign, bool zero = false) : size_(size) {
    if (size == 0) return;
    size_t rounded = (size + align - 1) / align * align;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(align, rounded));
    if (!data_) throw std::bad_alloc();
    if (zero) std::memset(data_, 0, rounded);
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tern
