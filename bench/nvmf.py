#!/usr/bin/env python3
"""NVMe/TCP benchmark: ioperf over nvmf://127.0.0.1 against our target on a RAM device, side by side with
ioperf on the same kind of RAM device in-process (the reference: what the device layer costs without a
network in between).

Layout: the target (nvmf_tgt) runs one reactor on --target-core; ioperf runs one reactor on
--initiator-core (the in-process reference uses the same core). Rows are 4 KiB random reads/writes at
QD1 and QD32 and 128 KiB sequential at QD8; each row runs in-process, over NVMe/TCP, over NVMe/TCP
with header and data digests, and over NVMe/TCP to a null device (no data copy on the target: the
transport's own ceiling). Repetitions interleave the variants, and medians are reported. First, the
loopback TCP round trip between the same two cores without any protocol (bench/tcp_rtt) is printed: the
floor under every QD1 figure.

The RAM devices are populated at creation and use transparent huge pages where the system allows
(malloc:// populate=1), so neither side pays page faults or 4 KiB TLB misses inside the measurement.

CPU: the initiator's reactor (ioperf's own figure) and the whole target process (utime + stime from
/proc over the run, divided by the run's wall time; the control thread sleeps).

Polling: `--poll adaptive` (default; reactors sleep when idle, what users run) or `busy` (both sides spin:
the lowest latency, one core each at 100 %).

The last line printed is one JSON object with every figure.

Comparing two builds: `--baseline DIR` (another checkout's build/release, e.g. the commit before a
change) adds the variant "nvmf (baseline)": that build's target and ioperf, interleaved with ours in every
repetition; "vs base" is the ratio of our nvmf row to it.

    bench/nvmf.py [--reps 3] [--secs 4] [--poll adaptive|busy] [--initiator-core 0] [--target-core 1]
                  [--rows NAMES] [--baseline DIR] [--no-build]
"""
import argparse
import json
import os
import pathlib
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The same rows as the foundation benchmark (ioperf vs fio), and its command runner.
from foundation import ROWS, run  # noqa: E402
NQN = "nqn.2026-11.io.tern:bench"
NQN_NULL = "nqn.2026-11.io.tern:bench-null"
RAM_MB = 512

VARIANTS = ["in-process", "nvmf", "nvmf+digests", "nvmf null-dev"]


class Target:
    """nvmf_tgt with one RAM namespace, started and stopped for real."""

    def __init__(self, binary, core, poll, workdir):
        cfg = pathlib.Path(workdir) / "target.yaml"
        cfg.write_text(f"""cores: "{core}"
log_level: warn
devices: ["malloc:///bench0?size_mb={RAM_MB}&populate=1", "null:///bench1?size_mb={RAM_MB}"]
listeners: ["127.0.0.1:0"]
subsystems:
  - nqn: {NQN}
    allow_any_host: true
    listeners: ["@0"]
    namespaces: [{{device: bench0}}]
  - nqn: {NQN_NULL}
    allow_any_host: true
    listeners: ["@0"]
    namespaces: [{{device: bench1}}]
""")
        self.proc = subprocess.Popen([str(binary), "-c", str(cfg), "--poll", poll], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            sys.exit(f"benchmark: nvmf_tgt did not become ready: {self.proc.stderr.read()}")
        self.port = int(json.loads(line)["listeners"][0].rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ioperf(binary, uri, rw, bs, qd, secs, core, poll):
    out = run([str(binary), "--uri", uri, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core),
               "--time", f"{secs}s", "--ramp", "1s", "--poll", poll, "--json"])
    r = json.loads(out.strip().splitlines()[-1])
    side = r["read"] if r["read"]["ops"] else r["write"]
    return {"iops": side["iops"], "mean_us": side["lat_us"]["mean"], "p99_us": side["lat_us"]["p99"],
            "init_cpu": r["cpu_pct"][0]}


def measure(variant, binary, target, rw, bs, qd, secs, core, poll, base=None):
    if variant == "nvmf (baseline)":
        binary, target = base
        variant = "nvmf"
    if variant == "in-process":
        r = ioperf(binary, f"malloc:///ref?size_mb={RAM_MB}&populate=1", rw, bs, qd, secs, core, poll)
        r["tgt_cpu"] = None
        return r
    q = "?nsid=1&io_queues=1" + ("&hdgst=1&ddgst=1" if variant == "nvmf+digests" else "")
    nqn = NQN_NULL if variant == "nvmf null-dev" else NQN
    uri = f"nvmf://127.0.0.1:{target.port}/{nqn}{q}"
    c0, t0 = target.cpu_seconds(), time.monotonic()
    r = ioperf(binary, uri, rw, bs, qd, secs, core, poll)
    c1, t1 = target.cpu_seconds(), time.monotonic()
    r["tgt_cpu"] = 100.0 * (c1 - c0) / (t1 - t0)
    return r


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--poll", choices=["adaptive", "busy"], default="adaptive")
    ap.add_argument("--initiator-core", type=int, default=0)
    ap.add_argument("--target-core", type=int, default=1)
    ap.add_argument("--rows", default="", help="comma-separated row names to run (default: all)")
    ap.add_argument("--baseline", default="", help="another build/release directory to compare with, interleaved")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    variants = VARIANTS + (["nvmf (baseline)"] if a.baseline else [])
    if not a.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release", "ioperf", "nvmf_tgt", "tcp_rtt"], check=True,
                       stdout=subprocess.DEVNULL)
    rel = ROOT / "build/release/tools"
    ioperf_bin, tgt_bin = rel / "ioperf/ioperf", rel / "nvmf_tgt/nvmf_tgt"
    rows = [r for r in ROWS if not a.rows or r[0] in a.rows.split(",")]

    # The floor: plain loopback TCP between the same two cores, no protocol.
    rtt = [json.loads(run([str(ROOT / "build/release/bench/tcp_rtt"), "--client-core", str(a.initiator_core),
                           "--server-core", str(a.target_core), "--rounds", "50000", "--json"]))
           for _ in range(a.reps)]
    floor = {k: med([x[k] for x in rtt]) for k in ("blocking_us", "spinning_us")}
    print(f"loopback TCP round trip (72 B out, 4120 B back; the floor under QD1): "
          f"blocking recv {floor['blocking_us']:.1f} us, spinning recv {floor['spinning_us']:.1f} us", flush=True)

    results = {}
    with tempfile.TemporaryDirectory(prefix="tern-bench-nvmf-") as wd:
        target = Target(tgt_bin, a.target_core, a.poll, wd)
        base = None
        if a.baseline:
            bdir = pathlib.Path(a.baseline) / "tools"
            bwd = pathlib.Path(wd) / "baseline"
            bwd.mkdir()
            base = (bdir / "ioperf/ioperf", Target(bdir / "nvmf_tgt/nvmf_tgt", a.target_core, a.poll, bwd))
        try:
            for name, rw, bs, qd in rows:
                samples = {v: [] for v in variants}
                for rep in range(a.reps):
                    order = variants if rep % 2 == 0 else list(reversed(variants))
                    for v in order:
                        samples[v].append(measure(v, ioperf_bin, target, rw, bs, qd, a.secs, a.initiator_core, a.poll, base))
                results[name] = {}
                for v in variants:
                    s = samples[v]
                    results[name][v] = {k: med([x[k] for x in s]) for k in ("iops", "mean_us", "p99_us", "init_cpu", "tgt_cpu")}
                    if base:
                        # Per-repetition ratio of our nvmf run to the baseline's, then the median.
                        results[name][v]["vs_base"] = med([x["iops"] / b["iops"] for x, b in
                                                           zip(s, samples["nvmf (baseline)"])]) if v == "nvmf" else None
                ref = results[name]["in-process"]["iops"]
                for v in variants:
                    results[name][v]["ratio"] = results[name][v]["iops"] / ref if ref else None
                print_row(name, results[name])
        finally:
            target.stop()
            if base:
                base[1].stop()
    print(json.dumps({"poll": a.poll, "reps": a.reps, "secs": a.secs, "tcp_rtt": floor, "rows": results}))


def print_row(name, r):
    if not hasattr(print_row, "header"):
        print_row.header = True
        print(f"{'row':<18} {'variant':<16} {'IOPS':>10} {'mean us':>8} {'p99 us':>8} {'init cpu':>8} {'tgt cpu':>8} "
              f"{'vs in-proc':>10} {'vs base':>8}")
    for v, x in r.items():
        tgt = f"{x['tgt_cpu']:.0f}%" if x["tgt_cpu"] is not None else "-"
        vb = f"{x['vs_base']:.3f}" if x.get("vs_base") else ""
        print(f"{name:<18} {v:<16} {x['iops']:>10.0f} {x['mean_us']:>8.1f} {x['p99_us']:>8.1f} "
              f"{x['init_cpu']:>7.0f}% {tgt:>8} {x['ratio']:>10.2f} {vb:>8}", flush=True)


if __name__ == "__main__":
    main()
