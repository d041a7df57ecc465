#include "metrics/exposition.h"

#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <unordered_set>

#include "common/log.h"

namespace tern::metrics {

// ---- formatting ----------------------------------------------------------------------------------

std::string_view type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
    case MetricType::kUntyped: return "untyped";
    case MetricType::kInfo: return "gauge";
  }
  return "untyped";
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[128];
  // Whole numbers (counters, byte counts) print as integers: exact, and never "1e+15".
  if (v == std::trunc(v) && std::fabs(v) < 0x1p63) {
    auto r = std::to_chars(buf, buf + sizeof(buf), int64_t(v));
    out.append(buf, r.ptr);
    return;
  }
  // Shortest digits that read back to v; the exponent decides the notation as Go's 'g' does with
  // exponent threshold 21, so le="0.0001" and le="1e-05" match what other exporters write.
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view sci(buf, size_t(r.ptr - buf));
  size_t e = sci.find('e');
  int exp = std::atoi(std::string(sci.substr(e + 1)).c_str());
  if (exp < -4 || exp >= 21) {
    out += sci;
    return;
  }
  r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  out.append(buf, r.ptr);
}

std::string format_value(double v) {
  std::string s;
  append_value(s, v);
  return s;
}

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not one (overlong forms,
// surrogates and code points above U+10FFFF are invalid, as in RFC 3629).
size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  uint8_t c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

void append_escaped(std::string& out, std::string_view v, bool escape_quote) {
  for (size_t i = 0; i < v.size();) {
    char c = v[i];
    size_t n = utf8_sequence(v, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
      continue;
    }
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out.append(v.substr(i, n));
    }
    i += n;
  }
}

bool name_char(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool valid_name(std::string_view s, bool colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i)
    if (!name_char(s[i], i == 0, colon)) return false;
  return true;
}

constexpr std::string_view kHistogramSuffixes[] = {"_bucket", "_sum", "_count"};

}  // namespace

void append_label_value(std::string& out, std::string_view v) { append_escaped(out, v, true); }
void append_help(std::string& out, std::string_view v) { append_escaped(out, v, false); }

bool valid_metric_name(std::string_view name) { return valid_name(name, true); }
bool valid_label_name(std::string_view name) { return valid_name(name, false) && !name.starts_with("__"); }

// ---- latency histograms --------------------------------------------------------------------------

std::vector<HistogramBucket> latency_buckets(const LatencyHistogram& h) {
  std::array<uint64_t, kLatencyBoundsNs.size() + 1> per{};  // the last slot is +Inf
  for (int i = 0; i < LatencyHistogram::kBuckets; ++i) {
    uint64_t c = h.bucket_count(i);
    if (c == 0) continue;
    uint64_t high = LatencyHistogram::bucket_high(i);
    size_t slot = 0;
    while (slot < kLatencyBoundsNs.size() && high > kLatencyBoundsNs[slot]) ++slot;
    per[slot] += c;
  }
  std::vector<HistogramBucket> out;
  out.reserve(per.size());
  uint64_t cum = 0;
  for (size_t s = 0; s < per.size(); ++s) {
    cum += per[s];
    out.push_back({s < kLatencyBoundsSeconds.size() ? kLatencyBoundsSeconds[s]
                                                    : std::numeric_limits<double>::infinity(),
                   cum});
  }
  return out;
}

// ---- the writer ----------------------------------------------------------------------------------

struct MetricsWriter::Family {
  std::string name;
  MetricType type;
  std::string help;
  std::string lines;
  // Series already written (name suffix and rendered labels), to refuse duplicates.
  std::unordered_set<std::string> series;
};

MetricsWriter::MetricsWriter() = default;
MetricsWriter::~MetricsWriter() = default;
MetricsWriter::MetricsWriter(MetricsWriter&&) noexcept = default;
MetricsWriter& MetricsWriter::operator=(MetricsWriter&&) noexcept = default;

void MetricsWriter::refuse(const char* why) {
  ++dropped_;
  TLOG_RL_WARN("metrics", 10000, "metrics: dropped a sample: {}", why);
  assert(false && "MetricsWriter misuse; see the log line above");
}

MetricsWriter::Family* MetricsWriter::find(std::string_view name) {
  for (auto& f : families_)
    if (f->name == name) return f.get();
  return nullptr;
}

void MetricsWriter::declare(std::string_view name, MetricType type, std::string_view help) {
  if (!valid_metric_name(name)) return refuse("invalid metric name");
  if (Family* f = find(name)) {
    if (f->type != type) refuse("family declared again with another type");
    return;
  }
  // A histogram's _bucket/_sum/_count lines would be read as samples of a family with that name.
  for (auto& f : families_) {
    for (std::string_view suffix : kHistogramSuffixes) {
      bool clash = (type == MetricType::kHistogram && f->name.size() == name.size() + suffix.size() &&
                    f->name.starts_with(name) && f->name.ends_with(suffix)) ||
                   (f->type == MetricType::kHistogram && name.size() == f->name.size() + suffix.size() &&
                    name.starts_with(f->name) && name.ends_with(suffix));
      if (clash) return refuse("family name clashes with a histogram's _bucket/_sum/_count");
    }
  }
  auto f = std::make_unique<Family>();
  f->name = name;
  f->type = type;
  f->help = help;
  families_.push_back(std::move(f));
}

MetricsWriter::Family* MetricsWriter::check(std::string_view family, Labels labels, bool histogram_call,
                                            bool info_call) {
  Family* f = find(family);
  if (!f) {
    refuse("undeclared family");
    return nullptr;
  }
  bool is_histogram = f->type == MetricType::kHistogram;
  bool is_info = f->type == MetricType::kInfo;
  if (histogram_call != is_histogram || info_call != is_info) {
    refuse("call does not match the family's type");
    return nullptr;
  }
  auto ls = labels.span();
  for (size_t i = 0; i < ls.size(); ++i) {
    if (!valid_label_name(ls[i].name)) {
      refuse("invalid label name");
      return nullptr;
    }
    if (is_histogram && ls[i].name == "le") {
      refuse("label 'le' is reserved in histograms");
      return nullptr;
    }
    for (size_t j = 0; j < i; ++j) {
      if (ls[j].name == ls[i].name) {
        refuse("label name repeated");
        return nullptr;
      }
    }
  }
  return f;
}

namespace {

void append_labels(std::string& out, Labels labels, const Label* extra) {
  auto ls = labels.span();
  if (ls.empty() && !extra) return;
  out += '{';
  bool first = true;
  auto one = [&](const Label& l) {
    if (!first) out += ',';
    first = false;
    out += l.name;
    out += "=\"";
    append_label_value(out, l.value);
    out += '"';
  };
  for (const Label& l : ls) one(l);
  if (extra) one(*extra);
  out += '}';
}

}  // namespace

bool MetricsWriter::begin_line(Family& f, std::string_view suffix, Labels labels, const Label* extra) {
  std::string line = f.name;
  line += suffix;
  append_labels(line, labels, extra);
  if (!f.series.insert(line).second) {
    refuse("series written twice");
    return false;
  }
  f.lines += line;
  f.lines += ' ';
  return true;
}

void MetricsWriter::sample(std::string_view family, Labels labels, double value) {
  Family* f = check(family, labels, false, false);
  if (!f || !begin_line(*f, "", labels, nullptr)) return;
  append_value(f->lines, value);
  f->lines += '\n';
}

void MetricsWriter::sample_int(std::string_view family, Labels labels, int64_t value) {
  Family* f = check(family, labels, false, false);
  if (!f || !begin_line(*f, "", labels, nullptr)) return;
  f->lines += std::to_string(value);
  f->lines += '\n';
}

void MetricsWriter::sample_uint(std::string_view family, Labels labels, uint64_t value) {
  Family* f = check(family, labels, false, false);
  if (!f || !begin_line(*f, "", labels, nullptr)) return;
  f->lines += std::to_string(value);
  f->lines += '\n';
}

void MetricsWriter::info(std::string_view family, Labels labels) {
  Family* f = check(family, labels, false, true);
  if (!f || !begin_line(*f, "", labels, nullptr)) return;
  f->lines += "1\n";
}

void MetricsWriter::histogram(std::string_view family, Labels labels, std::span<const HistogramBucket> buckets,
                              double sum) {
  Family* f = check(family, labels, true, false);
  if (!f) return;
  if (buckets.empty() || !std::isinf(buckets.back().le) || buckets.back().le < 0) {
    return refuse("histogram buckets must end with +Inf");
  }
  for (size_t i = 1; i < buckets.size(); ++i) {
    if (!(buckets[i].le > buckets[i - 1].le) || buckets[i].count < buckets[i - 1].count) {
      return refuse("histogram buckets must have increasing le and non-decreasing counts");
    }
  }
  if (std::isnan(buckets.front().le)) return refuse("histogram bucket le is NaN");
  // One check for the whole series: its _count line stands for all of its lines.
  std::string key = "_count";
  append_labels(key, labels, nullptr);
  if (!f->series.insert(key).second) return refuse("series written twice");

  std::string le_text;
  for (const HistogramBucket& b : buckets) {
    le_text.clear();
    append_value(le_text, b.le);
    Label le{"le", le_text};
    f->lines += f->name;
    f->lines += "_bucket";
    append_labels(f->lines, labels, &le);
    f->lines += ' ';
    f->lines += std::to_string(b.count);
    f->lines += '\n';
  }
  f->lines += f->name;
  f->lines += "_sum";
  append_labels(f->lines, labels, nullptr);
  f->lines += ' ';
  append_value(f->lines, sum);
  f->lines += '\n';
  f->lines += f->name;
  f->lines += "_count";
  append_labels(f->lines, labels, nullptr);
  f->lines += ' ';
  f->lines += std::to_string(buckets.back().count);
  f->lines += '\n';
}

void MetricsWriter::latency_histogram(std::string_view family, Labels labels, const LatencyHistogram& h) {
  std::vector<HistogramBucket> b = latency_buckets(h);
  histogram(family, labels, b, double(h.sum()) / 1e9);
}

std::string MetricsWriter::str() const {
  size_t size = 0;
  for (const auto& f : families_) size += f->lines.size() + f->help.size() + 2 * f->name.size() + 32;
  std::string out;
  out.reserve(size);
  for (const auto& f : families_) {
    if (f->lines.empty()) continue;
    out += "# HELP ";
    out += f->name;
    out += ' ';
    append_help(out, f->help);
    out += "\n# TYPE ";
    out += f->name;
    out += ' ';
    out += type_name(f->type);
    out += '\n';
    out += f->lines;
  }
  return out;
}

}  // namespace tern::metrics
