#include "metrics/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace tern::metrics {
namespace {

TEST(MetricsFormat, ValuesPrintExactlyAndAsPrometheusSpellsThem) {
  EXPECT_EQ(format_value(0.0), "0");
  EXPECT_EQ(format_value(1.0), "1");
  EXPECT_EQ(format_value(-5.0), "-5");
  EXPECT_EQ(format_value(9007199254740992.0), "9007199254740992");  // 2^53
  EXPECT_EQ(format_value(1e15), "1000000000000000");                // not "1e+15"
  EXPECT_EQ(format_value(0x1p62), "4611686018427387904");
  EXPECT_EQ(format_value(0.1), "0.1");                              // shortest, not 0.10000000000000001
  EXPECT_EQ(format_value(1.5), "1.5");
  EXPECT_EQ(format_value(-0.25), "-0.25");
  EXPECT_EQ(format_value(1e-5), "1e-05");
  EXPECT_EQ(format_value(2.5e-5), "2.5e-05");
  EXPECT_EQ(format_value(1e-4), "0.0001");
  EXPECT_EQ(format_value(0.00025), "0.00025");
  EXPECT_EQ(format_value(2.5), "2.5");
  EXPECT_EQ(format_value(1e20), "100000000000000000000");
  EXPECT_EQ(format_value(1e21), "1e+21");
  EXPECT_EQ(format_value(1.7976931348623157e308), "1.7976931348623157e+308");
  EXPECT_EQ(format_value(5e-324), "5e-324");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
}

TEST(MetricsFormat, EveryFiniteValueReadsBackExactly) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200000; ++i) {
    uint64_t bits = rng();
    double v;
    static_assert(sizeof(v) == sizeof(bits));
    memcpy(&v, &bits, sizeof(v));
    if (!std::isfinite(v)) continue;
    std::string s = format_value(v);
    ASSERT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  for (double v : {1e-300, 123456.789, 1e16 + 2, 0.1 + 0.2, 1.0 / 3}) {
    EXPECT_EQ(std::strtod(format_value(v).c_str(), nullptr), v);
  }
}

TEST(MetricsFormat, LabelValuesAndHelpAreEscaped) {
  std::string s;
  append_label_value(s, "a\\b\"c\nd");
  EXPECT_EQ(s, "a\\\\b\\\"c\\nd");
  s.clear();
  append_help(s, "a\\b\"c\nd");
  EXPECT_EQ(s, "a\\\\b\"c\\nd");  // quotes need no escape in HELP
  s.clear();
  append_label_value(s, "tab\there, cr\r, {braces}=,");
  EXPECT_EQ(s, "tab\there, cr\r, {braces}=,");
}

TEST(MetricsFormat, InvalidUtf8BecomesReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  auto esc = [](std::string_view v) {
    std::string s;
    append_label_value(s, v);
    return s;
  };
  EXPECT_EQ(esc("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(esc("a\xFF" "b"), "a" + fffd + "b");
  EXPECT_EQ(esc("\xC3"), fffd);                                // truncated
  EXPECT_EQ(esc("\xC0\xAF"), fffd + fffd);                      // overlong '/'
  EXPECT_EQ(esc("\xED\xA0\x80"), fffd + fffd + fffd);           // surrogate
  EXPECT_EQ(esc("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
  EXPECT_EQ(esc("\xE2\x82"), fffd + fffd);
}

TEST(MetricsFormat, NameRules) {
  for (auto n : {"a", "_", ":", "tern_io_total", "a:b_c9", "A"}) EXPECT_TRUE(valid_metric_name(n)) << n;
  for (auto n : {"", "9a", "a-b", "a b", "a.b", "é"}) EXPECT_FALSE(valid_metric_name(n)) << n;
  for (auto n : {"a", "_a", "bdev", "le", "A9_"}) EXPECT_TRUE(valid_label_name(n)) << n;
  for (auto n : {"", "a:b", "9", "__name__", "__x", "a-b"}) EXPECT_FALSE(valid_label_name(n)) << n;
}

TEST(MetricsWriter, FamiliesAreGroupedWhateverTheOrderOfCalls) {
  MetricsWriter w;
  w.declare("tern_reads_total", MetricType::kCounter, "Reads.");
  w.declare("tern_depth", MetricType::kGauge, "Queue depth.");
  w.declare("tern_unused", MetricType::kGauge, "Never sampled.");
  w.declare("tern_build_info", MetricType::kInfo, "Build.");
  for (const char* dev : {"a", "b"}) {
    w.sample("tern_reads_total", {{"bdev", dev}}, uint64_t(7));
    w.sample("tern_depth", {{"bdev", dev}, {"core", "0"}}, 1.5);
  }
  w.info("tern_build_info", {{"version", "0.1.0"}});
  w.sample("tern_reads_total", {}, 3);
  EXPECT_EQ(w.dropped(), 0u);
  EXPECT_EQ(w.str(),
            "# HELP tern_reads_total Reads.\n"
            "# TYPE tern_reads_total counter\n"
            "tern_reads_total{bdev=\"a\"} 7\n"
            "tern_reads_total{bdev=\"b\"} 7\n"
            "tern_reads_total 3\n"
            "# HELP tern_depth Queue depth.\n"
            "# TYPE tern_depth gauge\n"
            "tern_depth{bdev=\"a\",core=\"0\"} 1.5\n"
            "tern_depth{bdev=\"b\",core=\"0\"} 1.5\n"
            "# HELP tern_build_info Build.\n"
            "# TYPE tern_build_info gauge\n"
            "tern_build_info{version=\"0.1.0\"} 1\n");
}

TEST(MetricsWriter, IntegersAreExactAtEveryWidth) {
  MetricsWriter w;
  w.declare("x", MetricType::kUntyped, "");
  w.sample("x", {{"k", "u64max"}}, UINT64_MAX);
  w.sample("x", {{"k", "i64min"}}, INT64_MIN);
  w.sample("x", {{"k", "2^53+1"}}, (uint64_t(1) << 53) + 1);
  w.sample("x", {{"k", "int"}}, -3);
  EXPECT_EQ(w.str(),
            "# HELP x \n# TYPE x untyped\n"
            "x{k=\"u64max\"} 18446744073709551615\n"
            "x{k=\"i64min\"} -9223372036854775808\n"
            "x{k=\"2^53+1\"} 9007199254740993\n"
            "x{k=\"int\"} -3\n");
}

TEST(MetricsWriter, HelpAndLabelsEscapedInThePage) {
  MetricsWriter w;
  w.declare("x", MetricType::kGauge, "line one\nback\\slash \"q\"");
  std::vector<Label> labels = {{"path", "C:\\dev\n\"0\""}};
  w.sample("x", labels, 1.0);
  EXPECT_EQ(w.str(),
            "# HELP x line one\\nback\\\\slash \"q\"\n# TYPE x gauge\n"
            "x{path=\"C:\\\\dev\\n\\\"0\\\"\"} 1\n");
}

TEST(MetricsWriter, ExplicitHistogram) {
  MetricsWriter w;
  w.declare("size_bytes", MetricType::kHistogram, "Sizes.");
  std::vector<HistogramBucket> b = {{512, 1}, {4096, 3}, {std::numeric_limits<double>::infinity(), 4}};
  w.histogram("size_bytes", {{"op", "read"}}, b, 70000.5);
  EXPECT_EQ(w.dropped(), 0u);
  EXPECT_EQ(w.str(),
            "# HELP size_bytes Sizes.\n# TYPE size_bytes histogram\n"
            "size_bytes_bucket{op=\"read\",le=\"512\"} 1\n"
            "size_bytes_bucket{op=\"read\",le=\"4096\"} 3\n"
            "size_bytes_bucket{op=\"read\",le=\"+Inf\"} 4\n"
            "size_bytes_sum{op=\"read\"} 70000.5\n"
            "size_bytes_count{op=\"read\"} 4\n");
}

TEST(MetricsWriter, LatencyHistogramInSecondsWithFixedBounds) {
  LatencyHistogram h;
  h.record(0);              // le=1e-05
  h.record(9000);           // bucket [8704, 9215]: le=1e-05
  h.record(10000);          // bucket [9728, 10239] straddles 10 us: counted at 2.5e-05
  h.record(1'000'000);      // bucket [983040, 1048575] straddles 1 ms: counted at 0.0025
  h.record(3'000'000'000);  // above 2.5 s
  MetricsWriter w;
  w.declare("lat_seconds", MetricType::kHistogram, "Latency.");
  w.latency_histogram("lat_seconds", {}, h);
  EXPECT_EQ(w.str(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{le=\"1e-05\"} 2\n"
            "lat_seconds_bucket{le=\"2.5e-05\"} 3\n"
            "lat_seconds_bucket{le=\"5e-05\"} 3\n"
            "lat_seconds_bucket{le=\"0.0001\"} 3\n"
            "lat_seconds_bucket{le=\"0.00025\"} 3\n"
            "lat_seconds_bucket{le=\"0.0005\"} 3\n"
            "lat_seconds_bucket{le=\"0.001\"} 3\n"
            "lat_seconds_bucket{le=\"0.0025\"} 4\n"
            "lat_seconds_bucket{le=\"0.005\"} 4\n"
            "lat_seconds_bucket{le=\"0.01\"} 4\n"
            "lat_seconds_bucket{le=\"0.025\"} 4\n"
            "lat_seconds_bucket{le=\"0.05\"} 4\n"
            "lat_seconds_bucket{le=\"0.1\"} 4\n"
            "lat_seconds_bucket{le=\"0.25\"} 4\n"
            "lat_seconds_bucket{le=\"0.5\"} 4\n"
            "lat_seconds_bucket{le=\"1\"} 4\n"
            "lat_seconds_bucket{le=\"2.5\"} 4\n"
            "lat_seconds_bucket{le=\"+Inf\"} 5\n"
            "lat_seconds_sum 3.001019\n"
            "lat_seconds_count 5\n");
}

TEST(MetricsWriter, LatencyBucketsAreCumulativeAndWithinOneSubBucket) {
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> d(12.0, 3.0);  // ns: from ~1 us to seconds
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 100000; ++i) {
    uint64_t v = uint64_t(std::min(d(rng), 1e12));
    values.push_back(v);
    h.record(v);
  }
  std::vector<HistogramBucket> b = latency_buckets(h);
  ASSERT_EQ(b.size(), kLatencyBoundsNs.size() + 1);
  EXPECT_TRUE(std::isinf(b.back().le));
  EXPECT_EQ(b.back().count, h.count());
  for (size_t i = 0; i < kLatencyBoundsNs.size(); ++i) {
    EXPECT_EQ(b[i].le, kLatencyBoundsSeconds[i]);
    EXPECT_EQ(double(kLatencyBoundsNs[i]) / 1e9, kLatencyBoundsSeconds[i]);
    if (i > 0) {
      EXPECT_GE(b[i].count, b[i - 1].count);
    }
    // Never more than the truth; never less than the observations more than 1/16 below the bound.
    uint64_t le = kLatencyBoundsNs[i];
    uint64_t at_most = 0, surely = 0;
    for (uint64_t v : values) {
      at_most += v <= le;
      surely += v <= le - le / 16;
    }
    EXPECT_LE(b[i].count, at_most) << i;
    EXPECT_GE(b[i].count, surely) << i;
  }
}

TEST(MetricsWriter, EmptyLatencyHistogramIsAllZero) {
  MetricsWriter w;
  w.declare("l", MetricType::kHistogram, "");
  w.latency_histogram("l", {{"bdev", "x"}}, LatencyHistogram());
  std::string page = w.str();
  EXPECT_NE(page.find("l_bucket{bdev=\"x\",le=\"+Inf\"} 0\n"), std::string::npos);
  EXPECT_NE(page.find("l_sum{bdev=\"x\"} 0\n"), std::string::npos);
  EXPECT_NE(page.find("l_count{bdev=\"x\"} 0\n"), std::string::npos);
}

TEST(MetricsWriter, RedeclaringWithTheSameTypeKeepsTheFirstHelp) {
  MetricsWriter w;
  w.declare("g", MetricType::kGauge, "first");
  w.declare("g", MetricType::kGauge, "second");
  w.sample("g", {}, 1);
  EXPECT_EQ(w.dropped(), 0u);
  EXPECT_EQ(w.str(), "# HELP g first\n# TYPE g gauge\ng 1\n");
}

// Every misuse: asserts in debug builds; dropped and counted in release builds, leaving a valid page.
struct Misuse {
  const char* what;
  void (*call)(MetricsWriter&);
};
const Misuse kMisuses[] = {
    {"bad metric name", [](MetricsWriter& w) { w.declare("9x", MetricType::kGauge, ""); }},
    {"undeclared", [](MetricsWriter& w) { w.sample("nope", {}, 1); }},
    {"bad label name", [](MetricsWriter& w) { w.sample("g", {{"a-b", "v"}}, 1); }},
    {"reserved label", [](MetricsWriter& w) { w.sample("g", {{"__name__", "v"}}, 1); }},
    {"repeated label", [](MetricsWriter& w) { w.sample("g", {{"a", "1"}, {"a", "2"}}, 1); }},
    {"repeated series", [](MetricsWriter& w) { w.sample("g", {{"a", "1"}}, 2); }},
    {"type change", [](MetricsWriter& w) { w.declare("g", MetricType::kCounter, ""); }},
    {"sample on histogram", [](MetricsWriter& w) { w.sample("h", {}, 1); }},
    {"histogram on gauge", [](MetricsWriter& w) { w.latency_histogram("g", {}, LatencyHistogram()); }},
    {"info on gauge", [](MetricsWriter& w) { w.info("g", {}); }},
    {"le label", [](MetricsWriter& w) { w.latency_histogram("h", {{"le", "1"}}, LatencyHistogram()); }},
    {"clashing name", [](MetricsWriter& w) { w.declare("h_count", MetricType::kGauge, ""); }},
    {"clashing histogram", [](MetricsWriter& w) { 
       w.declare("z_sum", MetricType::kGauge, "");
       w.declare("z", MetricType::kHistogram, "");
      }},
    {"no +Inf", [](MetricsWriter& w) {
       HistogramBucket b[] = {{1, 1}};
       w.histogram("h", {{"x", "y"}}, b, 1);
     }},
    {"decreasing", [](MetricsWriter& w) {
       HistogramBucket b[] = {{1, 2}, {std::numeric_limits<double>::infinity(), 1}};
       w.histogram("h", {{"x", "y"}}, b, 1);
     }},
    {"repeated histogram series", [](MetricsWriter& w) { w.latency_histogram("h", {}, LatencyHistogram()); }},
};

MetricsWriter base_writer() {
  MetricsWriter w;
  w.declare("g", MetricType::kGauge, "G.");
  w.declare("h", MetricType::kHistogram, "H.");
  w.sample("g", {{"a", "1"}}, 1);
  w.latency_histogram("h", {}, LatencyHistogram());
  return w;
}

#ifdef NDEBUG
TEST(MetricsWriter, MisuseIsDroppedAndCountedInRelease) {
  const std::string good = base_writer().str();
  for (const Misuse& m : kMisuses) {
    MetricsWriter w = base_writer();
    m.call(w);
    EXPECT_GE(w.dropped(), 1u) << m.what;
    EXPECT_EQ(w.str(), good) << m.what;
  }
}
#else
TEST(MetricsWriterDeathTest, MisuseAssertsInDebug) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const Misuse& m : kMisuses) {
    EXPECT_DEATH(
        {
          MetricsWriter w = base_writer();
          m.call(w);
        },
        "MetricsWriter misuse")
        << m.what;
  }
}
#endif

}  // namespace
}  // namespace tern::metrics
