// LatencyHistogram: log-linear buckets over nanoseconds (16 sub-buckets per power of two, so any
// reported percentile is within ~6 % of the true value), exact count, sum, min and max.
//
// Not thread-safe: each reactor keeps its own and they are merged on read. record() is a handful of
// instructions and never allocates.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace tern {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  void record(uint64_t v) {
    ++buckets_[index(v)];
    ++count_;
    sum_ += v;
    if (v < min_) min_ = v;
    if (v > max_) max_ = v;
  }
  void merge(const LatencyHistogram& o);
  void reset() { *this = LatencyHistogram(); }

  uint64_t count() const { return count_; }
  uint64_t sum() const { return sum_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? double(sum_) / double(count_) : 0.0; }
  // Value at quantile q in [0, 1], estimated as the middle of its bucket (clamped to [min, max]).
  uint64_t percentile(double q) const;

  // Bucket layout, exposed for exporters (Prometheus) and tests.
  static int index(uint64_t v) {
    if (v < kSub) return int(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - kSubBits;
    return (shift + 1) * kSub + int((v >> shift) & (kSub - 1));
  }
  static uint64_t bucket_low(int i);
  static uint64_t bucket_high(int i);  // inclusive
  uint64_t bucket_count(int i) const { return buckets_[size_t(i)]; }

 private:
  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace tern
