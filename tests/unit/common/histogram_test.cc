#include "common/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace tern {
namespace {

TEST(Histogram, BucketsCoverEveryValueContiguously) {
  EXPECT_EQ(LatencyHistogram::bucket_low(0), 0u);
  for (int i = 1; i < LatencyHistogram::kBuckets; ++i) {
    EXPECT_EQ(LatencyHistogram::bucket_low(i), LatencyHistogram::bucket_high(i - 1) + 1) << i;
  }
  EXPECT_EQ(LatencyHistogram::bucket_high(LatencyHistogram::kBuckets - 1), UINT64_MAX);
  for (uint64_t v : std::initializer_list<uint64_t>{0, 1, 15, 16, 17, 31, 32, 1000, 123456789, UINT64_MAX}) {
    int i = LatencyHistogram::index(v);
    EXPECT_LE(LatencyHistogram::bucket_low(i), v);
    EXPECT_GE(LatencyHistogram::bucket_high(i), v);
  }
}

TEST(Histogram, PercentilesWithinBucketPrecision) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> d(10.0, 1.0);
  std::vector<uint64_t> v;
  LatencyHistogram h;
  for (int i = 0; i < 100000; ++i) {
    uint64_t x = uint64_t(d(rng));
    v.push_back(x);
    h.record(x);
  }
  std::sort(v.begin(), v.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    double exact = double(v[size_t(std::ceil(q * double(v.size()))) - 1]);
    double est = double(h.percentile(q));
    EXPECT_NEAR(est, exact, exact * 0.07) << q;
  }
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.min(), v.front());
  EXPECT_EQ(h.max(), v.back());
  EXPECT_EQ(h.percentile(1.0), v.back());
}

TEST(Histogram, MergeAndReset) {
  LatencyHistogram a, b;
  for (int i = 0; i < 100; ++i) a.record(1000);
  for (int i = 0; i < 100; ++i) b.record(3000);
  a.merge(b);
  EXPECT_EQ(a.count(), 200u);
  EXPECT_DOUBLE_EQ(a.mean(), 2000.0);
  EXPECT_EQ(a.min(), 1000u);
  EXPECT_EQ(a.max(), 3000u);
  EXPECT_NEAR(double(a.percentile(0.25)), 1000, 40);
  EXPECT_NEAR(double(a.percentile(0.75)), 3000, 120);
  a.reset();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.percentile(0.5), 0u);
  EXPECT_EQ(a.min(), 0u);
}

}  // namespace
}  // namespace tern
