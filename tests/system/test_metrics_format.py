"""The metrics page is accepted by a standard Prometheus parser and reads back exactly what was written.

metrics_test's MetricsSample test writes a page that uses every feature of MetricsWriter (counters,
gauges, untyped, info, explicit and latency histograms, escapes, repaired UTF-8, NaN/Inf, exact
integers, interleaved calls) plus a manifest of what it wrote. This test parses the page with
prometheus_client's parser, compares every sample with the manifest, computes the latency histograms'
buckets itself from the raw observations, and checks the line grammar strictly on top (the Python
parser is laxer than Prometheus' own).
"""
import json
import math
import os
import re
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT

# The fixed boundaries of src/metrics/exposition.h, in nanoseconds.
LATENCY_BOUNDS_NS = [10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
                     10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000,
                     1_000_000_000, 2_500_000_000]
LE_TEXT = ["1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
           "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?Inf|NaN|[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
SAMPLE_RE = re.compile(rf"^({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? ({VALUE})$")
HELP_RE = re.compile(rf"^# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)$")
TYPE_RE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def _binary():
    candidates = [os.environ.get("TERN_BUILD_DIR"), ROOT / "build/asan", os.environ.get("TERN_RELEASE_DIR"),
                  ROOT / "build/release"]
    for d in candidates:
        if d and (p := os.path.join(d, "tests/unit/metrics_test")) and os.path.exists(p):
            return p
    pytest.fail("metrics_test is not built; run scripts/build.sh asan metrics_test")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics")
    env = dict(os.environ, TERN_METRICS_SAMPLE_DIR=str(out))
    p = subprocess.run([_binary(), "--gtest_filter=MetricsSample.*"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    raw = (out / "exposition.txt").read_bytes()
    text = raw.decode("utf-8")  # strict: the page must be valid UTF-8
    manifest = json.loads((out / "expected.json").read_text())
    return text, manifest


def _value(v):
    return float.fromhex(v["hex"]) if "hex" in v else float(int(v["int"]))


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def _key(name, labels):
    return name, tuple(sorted(labels.items()))


def _bucket_high(v):
    """Upper end (inclusive) of the LatencyHistogram bucket holding v: 16 sub-buckets per power of two."""
    if v < 16:
        return v
    shift = v.bit_length() - 1 - 4
    return ((v >> shift) << shift) + (1 << shift) - 1


def _le_key(le):
    return repr(le)


def _expected_samples(manifest):
    exp = {}
    for s in manifest["samples"]:
        exp[_key(s["name"], s["labels"])] = _value(s["value"])
    for h in manifest["histograms"]:
        for le, count in h["buckets"]:
            exp[_key(h["family"] + "_bucket", {**h["labels"], "le": _le_key(float.fromhex(le))})] = float(count)
        exp[_key(h["family"] + "_sum", h["labels"])] = float.fromhex(h["sum"])
        exp[_key(h["family"] + "_count", h["labels"])] = float(h["buckets"][-1][1])
    for h in manifest["latency"]:
        values = h["values_ns"]
        for i, le in enumerate(LE_TEXT):
            bound = LATENCY_BOUNDS_NS[i] if i < len(LATENCY_BOUNDS_NS) else math.inf
            count = sum(1 for v in values if _bucket_high(v) <= bound)
            exp[_key(h["family"] + "_bucket", {**h["labels"], "le": _le_key(float(le))})] = float(count)
        exp[_key(h["family"] + "_sum", h["labels"])] = sum(values) / 1e9
        exp[_key(h["family"] + "_count", h["labels"])] = float(len(values))
    return exp


def _normalise_le(labels):
    """Bucket boundaries compare as numbers (their spelling is checked separately)."""
    return {**labels, "le": _le_key(float(labels["le"]))} if "le" in labels else labels


def test_prometheus_client_parses_the_page_and_reads_back_every_value(sample):
    text, manifest = sample
    families = list(text_string_to_metric_families(text))  # raises on anything it cannot parse

    # Families: the declared ones with samples, in order, with their types and HELP text.
    want = [(f["name"], f["type"], f["help"]) for f in manifest["families"]]
    got = []
    for fam in families:
        # prometheus_client drops a counter's _total from the family name and calls untyped "unknown"
        # (the OpenMetrics name).
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        got.append((name, "untyped" if fam.type == "unknown" else fam.type, fam.documentation))
    assert got == want
    for name in manifest["absent"]:
        assert name not in text

    parsed = {}
    for fam in families:
        for s in fam.samples:
            key = _key(s.name, _normalise_le(s.labels))
            assert key not in parsed, f"sample {key} appears twice"
            parsed[key] = s.value
            assert s.timestamp is None
    expected = _expected_samples(manifest)
    missing = sorted(set(expected) - set(parsed), key=str)
    extra = sorted(set(parsed) - set(expected), key=str)
    assert not missing, f"samples written but not read back: {missing}"
    assert not extra, f"samples read back but never written: {extra}"
    wrong = {k: (parsed[k], expected[k]) for k in expected if not _same(parsed[k], expected[k])}
    assert not wrong, f"values differ (parsed, written): {wrong}"


def test_line_grammar_is_strict_text_format_0_0_4(sample):
    text, _ = sample
    assert text.endswith("\n") and "\r" not in text
    seen_help, seen_type, seen_samples = set(), set(), set()
    current = None
    types = {}
    for line in text.split("\n")[:-1]:
        if m := HELP_RE.match(line):
            name = m.group(1)
            assert name not in seen_help, f"second HELP for {name}"
            assert name not in seen_samples, f"HELP for {name} after its samples"
            seen_help.add(name)
            current = name
        elif m := TYPE_RE.match(line):
            name = m.group(1)
            assert name == current, f"TYPE {name} does not follow its HELP"
            assert name not in seen_type
            seen_type.add(name)
            types[name] = m.group(2)
        elif m := SAMPLE_RE.match(line):
            name = m.group(1)
            family = name
            if types.get(current) == "histogram":
                assert name in (current + "_bucket", current + "_sum", current + "_count"), line
                family = current
            assert family == current, f"sample {name} outside its family block ({current})"
            seen_samples.add(family)
        else:
            pytest.fail(f"line matches no production of the text format: {line!r}")
    assert seen_help == seen_type == seen_samples


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def test_integers_are_written_exactly(sample):
    """Floats cannot tell 2^64-1 from 2^64-2: integer samples must carry their exact digits."""
    text, manifest = sample
    raw = {}
    for line in text.split("\n"):
        if m := SAMPLE_RE.match(line):
            labels = dict((n, _unescape(v)) for n, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                                                   m.group(2) or ""))
            raw[_key(m.group(1), labels)] = m.group(3)
    ints = [s for s in manifest["samples"] if "int" in s["value"]]
    assert len(ints) >= 8
    for s in ints:
        assert raw[_key(s["name"], s["labels"])] == s["value"]["int"], s


def test_histograms_are_cumulative_with_count_equal_to_inf_bucket(sample):
    text, _ = sample
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        series = {}
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k != "le"}
            entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": []})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                entry["count"] = s.value
            else:
                entry["sum"] = s.value
        assert series
        for key, e in series.items():
            les = [le for le, _ in e["buckets"]]
            counts = [c for _, c in e["buckets"]]
            assert les == sorted(les) and len(set(les)) == len(les), (fam.name, key)
            assert math.isinf(les[-1]), (fam.name, key)
            assert counts == sorted(counts), (fam.name, key, counts)
            assert e["count"] == counts[-1], (fam.name, key)
            assert e["sum"] >= 0
        if fam.name.endswith("_seconds"):
            # Latency histograms: exactly the fixed boundaries, spelled as other exporters spell them.
            spellings = {}
            for line in text.split("\n"):
                if line.startswith(fam.name + "_bucket"):
                    series_labels = re.sub(r',?le="[^"]*"', "", line.split(" ")[0])
                    spellings.setdefault(series_labels, []).append(re.search(r'le="([^"]*)"', line).group(1))
            assert spellings and all(v == LE_TEXT for v in spellings.values()), spellings
