// MetricsWriter: builds a page in the Prometheus text exposition format 0.0.4.
//
//   MetricsWriter w;
//   w.declare("tern_bdev_read_ops_total", MetricType::kCounter, "Read operations completed.");
//   w.declare("tern_bdev_read_latency_seconds", MetricType::kHistogram, "Read latency.");
//   for (const auto& d : devices) {
//     w.sample("tern_bdev_read_ops_total", {{"bdev", d.name}}, d.stats.read_ops);
//     w.latency_histogram("tern_bdev_read_latency_seconds", {{"bdev", d.name}}, d.stats.read_lat);
//   }
//   std::string page = w.str();
//
// Samples may be added in any order: each family's HELP, TYPE and samples come out together, families
// in the order they were declared, so a caller that loops over devices cannot split a family (which
// Prometheus would reject). Names, label names, label sets and histogram buckets are checked on every
// call: a bad call is a programming error (assert in debug builds); in release builds the sample is
// dropped and counted in dropped(), so the page stays parseable whatever a caller does.
//
// Not thread-safe: one writer per scrape, on the thread that builds the page.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/histogram.h"

namespace tern::metrics {

// The Content-Type of a page written by MetricsWriter.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType {
  kCounter,
  kGauge,
  kHistogram,
  kUntyped,
  // The 0.0.4 text format has no info type: an info family is written as a gauge whose samples are 1
  // and whose labels carry the information (by convention its name ends in "_info").
  kInfo,
};

struct Label {
  std::string_view name;
  std::string_view value;
};

// A borrowed list of labels: a braced list at the call site, or any contiguous range of Label.
class Labels {
 public:
  Labels() = default;
  Labels(std::initializer_list<Label> l) : s_(l.begin(), l.size()) {}  // NOLINT: implicit by design
  Labels(std::span<const Label> s) : s_(s) {}                           // NOLINT
  Labels(const std::vector<Label>& v) : s_(v) {}                        // NOLINT
  std::span<const Label> span() const { return s_; }

 private:
  std::span<const Label> s_;
};

// One cumulative histogram bucket: observations <= le.
struct HistogramBucket {
  double le;
  uint64_t count;
};

// The fixed `le` boundaries (seconds) used for every LatencyHistogram, and the same in nanoseconds.
inline constexpr std::array<double, 17> kLatencyBoundsSeconds = {
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5};
inline constexpr std::array<uint64_t, 17> kLatencyBoundsNs = {
    10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000,
    25'000'000, 50'000'000, 100'000'000, 250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000};

// The cumulative buckets of a nanosecond LatencyHistogram at kLatencyBoundsSeconds plus +Inf (18
// entries). An internal bucket is counted at the first boundary that its upper end does not exceed, so
// one that straddles a boundary is counted in the next bucket: a bucket's count can miss observations
// that are at most one sub-bucket (1/16, ~6 %) below its boundary. The +Inf count is the total.
std::vector<HistogramBucket> latency_buckets(const LatencyHistogram& h);

class MetricsWriter {
 public:
  MetricsWriter();
  ~MetricsWriter();
  MetricsWriter(MetricsWriter&&) noexcept;
  MetricsWriter& operator=(MetricsWriter&&) noexcept;

  // Declares a family; its HELP and TYPE lines are written once, before its samples. Declaring a name
  // again with the same type keeps the first help text; another type is an error (the call is ignored).
  void declare(std::string_view name, MetricType type, std::string_view help);

  // One sample of a counter, gauge or untyped family: `name{labels} value`. Integers print exactly
  // (beyond 2^53 too); doubles print as the shortest text that reads back to the same value.
  void sample(std::string_view family, Labels labels, double value);
  template <std::integral T>
  void sample(std::string_view family, Labels labels, T value) {
    if constexpr (std::is_signed_v<T>) {
      sample_int(family, labels, int64_t(value));
    } else {
      sample_uint(family, labels, uint64_t(value));
    }
  }

  // One sample of an info family: the labels, value 1.
  void info(std::string_view family, Labels labels);

  // One series of a histogram family from cumulative buckets: `le` strictly increasing, the last
  // +Inf, counts non-decreasing. Writes family_bucket{...,le="..."}, family_sum and family_count (the
  // +Inf count). `labels` must not contain "le".
  void histogram(std::string_view family, Labels labels, std::span<const HistogramBucket> buckets, double sum);

  // One series of a histogram family from a nanosecond LatencyHistogram, in seconds, with the fixed
  // boundaries of latency_buckets(); _sum is the exact sum converted to seconds.
  void latency_histogram(std::string_view family, Labels labels, const LatencyHistogram& h);

  // The page: every declared family that has samples, in declaration order (families without samples
  // are left out, as client libraries do for empty label sets).
  std::string str() const;

  // Calls refused as programming errors (bad names or labels, undeclared family, wrong type for the
  // call, a repeated series, malformed buckets). Always 0 in a correct program.
  uint64_t dropped() const { return dropped_; }

 private:
  struct Family;
  Family* find(std::string_view name);
  // Checks the family and labels for a sample call; nullptr (and counted) if the call is refused.
  Family* check(std::string_view family, Labels labels, bool histogram_call, bool info_call);
  // Appends `name{labels[,extra]} ` to f's lines unless the series was already written.
  bool begin_line(Family& f, std::string_view suffix, Labels labels, const Label* extra);
  void sample_int(std::string_view family, Labels labels, int64_t value);
  void sample_uint(std::string_view family, Labels labels, uint64_t value);
  void refuse(const char* why);

  std::vector<std::unique_ptr<Family>> families_;
  uint64_t dropped_ = 0;
};

// Formatting rules, exposed for tests and the fuzzer.

// Prometheus value text: "NaN", "+Inf", "-Inf"; integral values below 2^63 in magnitude as integers;
// otherwise the shortest round-trip digits, in plain notation for exponents -4..20 and scientific
// ("1e-05") outside, which is how Go's strconv and the official clients spell `le` values.
void append_value(std::string& out, double v);
std::string format_value(double v);

// Label value escaping: backslash, double quote and newline; invalid UTF-8 becomes U+FFFD (Prometheus
// refuses label values that are not UTF-8).
void append_label_value(std::string& out, std::string_view v);
// HELP text escaping: backslash and newline; invalid UTF-8 becomes U+FFFD.
void append_help(std::string& out, std::string_view v);

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved for Prometheus itself).
bool valid_label_name(std::string_view name);

std::string_view type_name(MetricType t);

}  // namespace tern::metrics
