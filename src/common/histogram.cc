#include "common/histogram.h"

#include <cmath>

namespace tern {

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (int i = 0; i < kBuckets; ++i) buckets_[size_t(i)] += o.buckets_[size_t(i)];
  count_ += o.count_;
  sum_ += o.sum_;
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
}

uint64_t LatencyHistogram::bucket_low(int i) {
  if (i < kSub) return uint64_t(i);
  int shift = i / kSub - 1;
  uint64_t sub = uint64_t(i % kSub);
  return (uint64_t(kSub) | sub) << shift;
}

uint64_t LatencyHistogram::bucket_high(int i) {
  if (i < kSub) return uint64_t(i);
  int shift = i / kSub - 1;
  return bucket_low(i) + ((uint64_t(1) << shift) - 1);
}

uint64_t LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Rank of the wanted sample (1-based), as most tools define it.
  uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(count_))));
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[size_t(i)];
    if (seen >= rank) {
      uint64_t lo = bucket_low(i), hi = bucket_high(i);
      uint64_t mid = lo + (hi - lo) / 2;
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

}  // namespace tern
