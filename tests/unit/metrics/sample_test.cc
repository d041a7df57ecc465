// A page that uses every feature of MetricsWriter, for tests/system/test_metrics_format.py: with
// TERN_METRICS_SAMPLE_DIR set, it writes exposition.txt and expected.json (what was written: names,
// labels as they should read back, values as C99 hex floats or exact integers, raw latency observations)
// so the Python side can parse the page with prometheus_client and compare.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/exposition.h"

namespace tern::metrics {
namespace {

using json = nlohmann::json;

std::string hex(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%a", v);
  return buf;
}

// Writes to the page and records what a parser must read back.
class Recorder {
 public:
  void declare(const std::string& name, MetricType t, const std::string& help) {
    w_.declare(name, t, help);
    m_["families"].push_back({{"name", name}, {"type", std::string(type_name(t))}, {"help", help}});
  }
  void absent(const std::string& name, MetricType t) {
    w_.declare(name, t, "never sampled");
    m_["absent"].push_back(name);
  }
  // `expect` overrides the labels as they must read back (for values the writer has to repair).
  void sample(const std::string& name, const std::vector<Label>& labels, double v, json expect = nullptr) {
    w_.sample(name, labels, v);
    record(name, labels, {{"hex", hex(v)}}, std::move(expect));
  }
  void sample_u(const std::string& name, const std::vector<Label>& labels, uint64_t v) {
    w_.sample(name, labels, v);
    record(name, labels, {{"int", std::to_string(v)}}, nullptr);
  }
  void sample_i(const std::string& name, const std::vector<Label>& labels, int64_t v) {
    w_.sample(name, labels, v);
    record(name, labels, {{"int", std::to_string(v)}}, nullptr);
  }
  void info(const std::string& name, const std::vector<Label>& labels) {
    w_.info(name, labels);
    record(name, labels, {{"int", "1"}}, nullptr);
  }
  void histogram(const std::string& name, const std::vector<Label>& labels, std::vector<HistogramBucket> b,
                 double sum) {
    w_.histogram(name, labels, b, sum);
    json buckets = json::array();
    for (auto& x : b) buckets.push_back({hex(x.le), x.count});
    m_["histograms"].push_back({{"family", name}, {"labels", labels_json(labels)}, {"buckets", buckets},
                                {"sum", hex(sum)}});
  }
  void latency(const std::string& name, const std::vector<Label>& labels, const std::vector<uint64_t>& ns) {
    LatencyHistogram h;
    for (uint64_t v : ns) h.record(v);
    w_.latency_histogram(name, labels, h);
    m_["latency"].push_back({{"family", name}, {"labels", labels_json(labels)}, {"values_ns", ns}});
  }

  MetricsWriter& writer() { return w_; }
  json& manifest() { return m_; }

 private:
  static json labels_json(const std::vector<Label>& labels) {
    json l = json::object();
    for (const Label& x : labels) l[std::string(x.name)] = std::string(x.value);
    return l;
  }
  void record(const std::string& name, const std::vector<Label>& labels, json value, json expect) {
    m_["samples"].push_back(
        {{"name", name}, {"labels", expect.is_null() ? labels_json(labels) : expect}, {"value", value}});
  }

  MetricsWriter w_;
  json m_ = {{"families", json::array()}, {"absent", json::array()}, {"samples", json::array()},
             {"histograms", json::array()}, {"latency", json::array()}};
};

void build_sample(Recorder& r) {
  const double inf = std::numeric_limits<double>::infinity();
  r.declare("tern_sample_ops_total", MetricType::kCounter, "Operations completed, by device and kind.");
  r.declare("tern_sample_value", MetricType::kGauge, "Help with a backslash \\ and a\nnewline and \"quotes\".");
  r.declare("tern_sample_latency_seconds", MetricType::kHistogram, "I/O latency.");
  r.absent("tern_sample_unused", MetricType::kGauge);
  r.declare("tern_sample_untyped", MetricType::kUntyped, "");
  r.declare("tern_sample_build_info", MetricType::kInfo, "Build information.");
  r.declare("tern_sample_size_bytes", MetricType::kHistogram, "I/O sizes.");
  r.declare("tern_sample:recorded_rule", MetricType::kGauge, "A name with a colon.");

  // Interleaved on purpose: the writer groups families.
  const char* devs[] = {"malloc0", "nvme0n1"};
  for (int d = 0; d < 2; ++d) {
    r.sample_u("tern_sample_ops_total", {{"bdev", devs[d]}, {"op", "read"}}, uint64_t(1000 + d));
    r.latency("tern_sample_latency_seconds", {{"bdev", devs[d]}, {"op", "read"}},
              d == 0 ? std::vector<uint64_t>{800, 5000, 9000, 12000, 60000, 450000, 900000, 3000000, 40000000,
                                             700000000, 2000000000, 9000000000}
                     : std::vector<uint64_t>{});
    r.sample_u("tern_sample_ops_total", {{"bdev", devs[d]}, {"op", "write"}}, uint64_t(1) << (53 + d));
  }
  r.sample_u("tern_sample_ops_total", {}, UINT64_MAX);
  r.latency("tern_sample_latency_seconds", {}, {15000, 15000, 15000, 120000, 1200000000});

  // Values and escapes.
  r.sample("tern_sample_value", {{"case", "zero"}}, 0.0);
  r.sample("tern_sample_value", {{"case", "fraction"}}, 0.1);
  r.sample("tern_sample_value", {{"case", "negative"}}, -1234.5678);
  r.sample("tern_sample_value", {{"case", "tiny"}}, 1e-300);
  r.sample("tern_sample_value", {{"case", "subnormal"}}, 5e-324);
  r.sample("tern_sample_value", {{"case", "huge"}}, 1.7976931348623157e308);
  r.sample("tern_sample_value", {{"case", "2^53"}}, 9007199254740992.0);
  r.sample("tern_sample_value", {{"case", "1e20"}}, 1e20);
  r.sample("tern_sample_value", {{"case", "third"}}, 1.0 / 3);
  r.sample("tern_sample_value", {{"case", "nan"}}, std::nan(""));
  r.sample("tern_sample_value", {{"case", "+inf"}}, inf);
  r.sample("tern_sample_value", {{"case", "-inf"}}, -inf);
  r.sample("tern_sample_value", {{"case", "escapes"}, {"path", "C:\\dev\\\"x\"\nline2"}}, 1.0);
  r.sample("tern_sample_value", {{"case", "punctuation"}, {"path", "a}b{c=d,e f\tg#h"}}, 2.0);
  r.sample("tern_sample_value", {{"case", "empty"}, {"path", ""}}, 3.0);
  r.sample("tern_sample_value", {{"case", "unicode"}, {"path", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"}}, 4.0);
  r.sample("tern_sample_value", {{"case", "bad-utf8"}, {"path", "a\xFF" "b\xC0\xAF"}}, 5.0,
           {{"case", "bad-utf8"}, {"path", "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD"}});
  r.sample("tern_sample_value", {{"case", "trailing-backslash"}, {"path", "dir\\"}}, 6.0);
  r.sample_i("tern_sample_untyped", {{"kind", "min"}}, INT64_MIN);
  r.sample_i("tern_sample_untyped", {{"kind", "negative"}}, -42);
  r.info("tern_sample_build_info", {{"version", "0.1.0"}, {"commit", "abc123"}});
  r.histogram("tern_sample_size_bytes", {{"op", "write"}}, {{512, 3}, {4096, 10}, {131072, 12}, {inf, 13}}, 1234567.25);
  r.sample("tern_sample:recorded_rule", {}, 0.5);
}

TEST(MetricsSample, EveryFeatureOnOnePage) {
  Recorder r;
  build_sample(r);
  EXPECT_EQ(r.writer().dropped(), 0u);
  std::string page = r.writer().str();
  EXPECT_EQ(page.find("tern_sample_unused"), std::string::npos);
  EXPECT_EQ(page.back(), '\n');

  const char* dir = std::getenv("TERN_METRICS_SAMPLE_DIR");
  if (!dir) return;  // in the unit suite: built and checked, nothing written
  std::ofstream(std::string(dir) + "/exposition.txt", std::ios::binary) << page;
  std::ofstream(std::string(dir) + "/expected.json", std::ios::binary) << r.manifest().dump(1);
}

}  // namespace
}  // namespace tern::metrics
