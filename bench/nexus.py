#!/usr/bin/env python3
"""Nexus benchmark: what mirroring costs, measured side by side in one run.

Three io-engines on loopback (A runs the nexus, B and C hold remote replicas), each with one pool, on
files (`--backing file`, the default), in RAM (`--backing ram`: the software is the bottleneck), or on a
disk of its own per node (`--backing disk`: RAM behind a delay:// device that takes `--disk-us` per read
and write, so that each node's disk is the bottleneck and the nodes do not share one, as three
loopback "nodes" on one machine's disk otherwise do). A host (ioperf, our NVMe/TCP initiator) drives, over NVMe/TCP to engine A:

  replica     A's replica alone, shared directly                       (the reference)
  nexus-1     a nexus on A with the local replica as its only child
  nexus-2     ... plus B's replica (over NVMe/TCP)
  nexus-3     ... plus C's replica
  relay       B's replica imported by A over NVMe/TCP (an nvmf:// device) and shared again: the host's
              hop plus one A-to-B NVMe/TCP hop, no nexus. relay - replica is what one NVMe/TCP round trip
              costs in this very placement (cores shared, vCPU wake-ups), the reference for QD1 writes.

Rows: 4 KiB randwrite and randread at QD1 and QD32, 128 KiB sequential write at QD8. Repetitions
interleave the variants; medians; ratios against `replica` from the same repetition. CPU per host I/O on
engine A (utime + stime over the run, divided by the requests done). The floor under every QD1 figure,
the loopback TCP round trip between the two cores, is printed first (bench/tcp_rtt).

Bars (issue 15), checked and printed:
  - nexus-3 write IOPS >= 0.9 x replica at QD32 when the disk is the bottleneck (judged with --backing
    disk; with file backing all three nodes write one disk, so a 3-way mirror gets a third of it);
  - nexus-3 QD1 write latency <= replica's + one loopback NVMe/TCP round trip + 10 us (the round trip both
    as tcp_rtt measures it between two idle cores, and as relay - replica measures it in place);
  - nexus-3 read IOPS >= nexus-1 read IOPS.

Then the cost of a retire: random writes at QD8 while C's engine is killed; the longest request (ioperf's
max latency) is the time from the child's death to host I/O flowing again. And the idle cost: engine A
holding N published nexuses (default 100) with 2 remote children each, no I/O: its CPU over 10 s.

    bench/nexus.py [--backing file|ram|disk] [--disk-us 1000] [--reps 3] [--secs 3] [--nexuses 100]
                   [--volume-mib 1024] [--no-build]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/system"))
sys.path.insert(0, str(ROOT / "bench"))
from foundation import run  # noqa: E402
from nexus_util import required_child_bytes  # noqa: E402

MiB = 1 << 20
VOL = 1024 * MiB
ROWS = [
    ("4k randwrite QD1", "randwrite", "4k", 1),
    ("4k randwrite QD32", "randwrite", "4k", 32),
    ("4k randread QD1", "randread", "4k", 1),
    ("4k randread QD32", "randread", "4k", 32),
    ("128k write QD8", "write", "128k", 8),
]
VARIANTS = ["replica", "nexus-1", "nexus-2", "nexus-3", "relay"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ioperf(binary, uri, rw, bs, qd, secs, core, extra=()):
    out = run([str(binary), "--uri", uri, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core),
               "--time", f"{secs}s", "--ramp", "1s", "--json", *extra], timeout=secs * 10 + 120)
    r = json.loads(out.strip().splitlines()[-1])
    side = r["read"] if r["read"]["ops"] else r["write"]
    return side


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Cluster:
    def __init__(self, build, wd, backing, cores, pool_bytes=None, disk_us=0):
        from io_engine import EngineFactory, stubs
        self.pb = stubs()
        self.f = EngineFactory(build, wd)
        self.engines = []
        for i, core in enumerate(cores):
            # A holds the four local replicas (one per variant), B and C three remote ones each.
            # Plus room for the idle-cost nexuses' thin replicas (each allocates a cluster for its label).
            size = pool_bytes or 4 * required_child_bytes(VOL) + 1024 * MiB
            if backing == "file":
                disk = wd / f"pool{i}.img"
                # Written once in full, so that reads of the replicas reach the disk.
                run(["fio", "--name=fill", f"--filename={disk}", f"--size={size}", "--rw=write", "--bs=1m",
                     "--direct=1", "--ioengine=io_uring", "--iodepth=8"], timeout=600)
                uri = f"uring://{disk}"
            elif backing == "disk":
                # A disk of the node's own: RAM behind a fixed service time. The pool is made through the
                # API, on the delay device.
                e = self.f(name=f"node{i}", cores=str(core), pools=[], log_level="warn")
                B, P = self.pb.bdev_pb2, self.pb.pool_pb2
                e.api.bdev.CreateBdev(B.CreateBdevRequest(uri=f"malloc:///ram{i}?size_mb={size >> 20}&populate=1"),
                                      timeout=300)
                e.api.bdev.CreateBdev(B.CreateBdevRequest(
                    uri=f"delay:///disk{i}?base=ram{i}&read_us={disk_us}&write_us={disk_us}"), timeout=60)
                e.api.pool.CreatePool(P.CreatePoolRequest(name=f"p{i}", disk=f"disk{i}"), timeout=300)
                self.engines.append(e)
                continue
            else:
                uri = f"malloc:///ram{i}?size_mb={size >> 20}&populate=1"
            self.engines.append(self.f(name=f"node{i}", cores=str(core), pools=[(f"p{i}", uri)], log_level="warn"))

    def replica(self, i, name, share):
        R, C = self.pb.replica_pb2, self.pb.common_pb2
        return self.engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
            name=name, pool=f"p{i}", size=required_child_bytes(VOL), thin=False,
            share=C.SHARE_PROTOCOL_NVMF if share else C.SHARE_PROTOCOL_NONE), timeout=300)

    def stop(self):
        self.f.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backing", choices=["file", "ram", "disk"], default="file")
    ap.add_argument("--disk-us", type=int, default=1000, help="--backing disk: each read's and write's service time")
    ap.add_argument("--volume-mib", type=int, default=1024, help="each variant's volume (and replica) size")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--nexuses", type=int, default=100, help="nexuses held idle for the idle-cost figure (0: skip)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--rows", help="comma-separated substrings of the row names to run (default: all)")
    ap.add_argument("--idle-only", action="store_true", help="only the idle-cost figure (small RAM pools)")
    ap.add_argument("--idle-secs", type=int, default=10, help="how long the idle CPU is measured")
    a = ap.parse_args()
    global VOL
    VOL = a.volume_mib * MiB
    if not a.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release", "io-engine", "ioperf", "tcp_rtt"], check=True,
                       stdout=subprocess.DEVNULL)
    build = ROOT / "build/release"
    ioperf_bin = build / "tools/ioperf/ioperf"
    allowed = sorted(os.sched_getaffinity(0))
    host_core, a_core = allowed[0], allowed[-1]
    rtt = json.loads(run([str(build / "bench/tcp_rtt"), "--client-core", str(host_core), "--server-core",
                          str(a_core), "--rounds", "50000", "--json"]))
    print(f"loopback TCP round trip between the host's and engine A's cores: {rtt['blocking_us']:.1f} us "
          f"(blocking), {rtt['spinning_us']:.1f} us (spinning)", flush=True)
    results = {"backing": a.backing, "disk_us": a.disk_us if a.backing == "disk" else None, "reps": a.reps, "secs": a.secs, "tcp_rtt_us": rtt["blocking_us"], "rows": {}}
    with tempfile.TemporaryDirectory(prefix="tern-bench-nexus-", dir="/var/tmp") as td:
        wd = pathlib.Path(td)
        # Engine A on its own core; B and C share the host's core (they only serve the children).
        if a.idle_only:
            cl = Cluster(build, wd, "ram", [a_core, host_core, host_core], pool_bytes=1024 * MiB)
            try:
                results["idle"] = idle_cost(cl, a.nexuses, a.idle_secs)
            finally:
                cl.stop()
            print(json.dumps(results))
            return
        cl = Cluster(build, wd, a.backing, [a_core, host_core, host_core], disk_us=a.disk_us)
        N = cl.pb.nexus_pb2
        A = cl.engines[0]
        try:
            local = [cl.replica(0, f"local{k}", share=(k == 0)) for k in range(4)]
            remote = [[cl.replica(i, f"r{k}", share=True) for k in range(3)] for i in (1, 2)]
            uris = {"replica": local[0].share.uri}
            relay = cl.replica(1, "relay", share=True)
            B_, C_ = cl.pb.bdev_pb2, cl.pb.common_pb2
            dev = A.api.bdev.CreateBdev(B_.CreateBdevRequest(uri=f"{relay.share.uri}?uuid={relay.uuid}"), timeout=120)
            uris["relay"] = A.api.bdev.ShareBdev(B_.ShareBdevRequest(name=dev.name, protocol=C_.SHARE_PROTOCOL_NVMF),
                                                 timeout=60).share.uri
            for n in (1, 2, 3):
                vol = str(uuid.uuid4())
                loc = local[n]
                children = [f"bdev:///{loc.uuid}?uuid={loc.uuid}"]
                children += [f"{remote[i][n - 1].share.uri}?uuid={remote[i][n - 1].uuid}" for i in range(n - 1)]
                A.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=children), timeout=120)
                p = A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol), timeout=60)
                uris[f"nexus-{n}"] = p.share.uri
            # Everything is written once through each variant, so reads read real blocks.
            for v in VARIANTS:
                run([str(ioperf_bin), "--uri", uris[v], "--rw", "write", "--bs", "1m", "--qd", "8", "--cores",
                     str(host_core), "--time", "0", "--ios", str(VOL >> 20)], timeout=600)
            for name, rw, bs, qd in ROWS:
                if a.rows and not any(x.strip() in name for x in a.rows.split(",")):
                    continue
                samples = {v: [] for v in VARIANTS}
                for rep in range(a.reps):
                    order = VARIANTS if rep % 2 == 0 else list(reversed(VARIANTS))
                    for v in order:
                        c0 = cpu_seconds(A.proc.pid)
                        s = ioperf(ioperf_bin, uris[v], rw, bs, qd, a.secs, host_core)
                        c1 = cpu_seconds(A.proc.pid)
                        # The ramp second counts in the CPU but not in the ops: scale by the run's share.
                        cpu_us = (c1 - c0) * 1e6 * a.secs / (a.secs + 1) / max(s["ops"], 1)
                        samples[v].append({"iops": s["iops"], "lat": s["lat_us"]["mean"], "p99": s["lat_us"]["p99"],
                                           "cpu_us": cpu_us})
                row = {}
                for v in VARIANTS:
                    row[v] = {k: med([x[k] for x in samples[v]]) for k in ("iops", "lat", "p99", "cpu_us")}
                    row[v]["ratio"] = med([x["iops"] / r["iops"] for x, r in zip(samples[v], samples["replica"])])
                results["rows"][name] = row
                print_row(name, row)
            if not a.rows:
                results["bars"] = check_bars(results)
            # Idle before the retire (a killed engine leaves its initiators reconnecting for a while).
            if a.nexuses:
                results["idle"] = idle_cost(cl, a.nexuses, a.idle_secs)
            # Retire: C's engine dies under random writes to nexus-3.
            res = {}

            def load():
                res["s"] = ioperf(ioperf_bin, uris["nexus-3"], "randwrite", "4k", 8, 6, host_core)

            t = threading.Thread(target=load)
            t.start()
            time.sleep(3.0)
            cl.engines[2].kill()
            t.join(timeout=300)
            results["retire_max_latency_ms"] = res["s"]["lat_us"]["max"] / 1000.0
            results["retire_errors"] = res["s"]["errors"]
            print(f"\nretire: C's engine killed under 4 KiB random writes at QD8 to nexus-3: longest request "
                  f"{results['retire_max_latency_ms']:.1f} ms, {res['s']['errors']} errors seen by the host", flush=True)
        finally:
            cl.stop()
    print(json.dumps(results))


def idle_cost(cl, count, secs=10):
    """Engine A holding `count` published nexuses, each with a local child and two children on engine B,
    connected and idle (besides the benchmark's own four volumes, idle too)."""
    N = cl.pb.nexus_pb2
    A = cl.engines[0]
    size = 16 * MiB
    for k in range(count):
        la = cl.engines[0].api.replica.CreateReplica(cl.pb.replica_pb2.CreateReplicaRequest(
            name=f"idle-a{k}", pool="p0", size=required_child_bytes(size), thin=True), timeout=60)
        rb = [cl.engines[1].api.replica.CreateReplica(cl.pb.replica_pb2.CreateReplicaRequest(
            name=f"idle-b{k}-{j}", pool="p1", size=required_child_bytes(size), thin=True,
            share=cl.pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60) for j in range(2)]
        vol = str(uuid.uuid4())
        children = [f"bdev:///{la.uuid}?uuid={la.uuid}"] + [f"{r.share.uri}?uuid={r.uuid}" for r in rb]
        A.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=size, children=children), timeout=120)
        A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol), timeout=60)
    time.sleep(2)
    c0, t0 = cpu_seconds(A.proc.pid), time.monotonic()
    time.sleep(secs)
    c1, t1 = cpu_seconds(A.proc.pid), time.monotonic()
    pct = 100.0 * (c1 - c0) / (t1 - t0)
    ok = pct < 1.0
    print(f"idle: engine A with {count} published nexuses, {2 * count} connected remote children, no I/O: "
          f"{pct:.2f} % of a core over {secs} s (bar < 1 %: {'ok' if ok else 'MISSED'})", flush=True)
    return {"nexuses": count, "remote_children": 2 * count, "cpu_pct": pct, "meets_bar": ok}


def check_bars(results):
    rows = results["rows"]
    w32, w1, r32 = rows["4k randwrite QD32"], rows["4k randwrite QD1"], rows["4k randread QD32"]
    hop = w1["relay"]["lat"] - w1["replica"]["lat"]
    bars = {
        "write_qd32_ratio": (w32["nexus-3"]["ratio"], w32["nexus-3"]["ratio"] >= 0.9),
        "write_qd1_extra_us": (w1["nexus-3"]["lat"] - w1["replica"]["lat"],
                               w1["nexus-3"]["lat"] <= w1["replica"]["lat"] + results["tcp_rtt_us"] + 10),
        "write_qd1_extra_over_hop_us": (w1["nexus-3"]["lat"] - w1["relay"]["lat"],
                                        w1["nexus-3"]["lat"] <= w1["replica"]["lat"] + hop + 10),
        "write_qd1_nexus2_extra_over_hop_us": (w1["nexus-2"]["lat"] - w1["relay"]["lat"],
                                               w1["nexus-2"]["lat"] <= w1["replica"]["lat"] + hop + 10),
        "read_scaling": (r32["nexus-3"]["iops"] / r32["nexus-1"]["iops"],
                         r32["nexus-3"]["iops"] >= r32["nexus-1"]["iops"]),
    }
    print(f"\nbars ({results['backing']} backing):")
    print(f"  nexus-3 / replica, 4 KiB write QD32 IOPS: {bars['write_qd32_ratio'][0]:.2f} (>= 0.90: "
          f"{'ok' if bars['write_qd32_ratio'][1] else 'MISSED'})")
    print(f"  nexus-3 QD1 write latency over replica: {bars['write_qd1_extra_us'][0]:.1f} us (<= round trip "
          f"{results['tcp_rtt_us']:.1f} + 10 us: {'ok' if bars['write_qd1_extra_us'][1] else 'MISSED'})")
    print(f"  ... against the NVMe/TCP hop measured in place (relay - replica = {hop:.1f} us): nexus-3 is "
          f"{bars['write_qd1_extra_over_hop_us'][0]:+.1f} us over relay ({'ok' if bars['write_qd1_extra_over_hop_us'][1] else 'MISSED'}"
          f" <= +10), nexus-2 {bars['write_qd1_nexus2_extra_over_hop_us'][0]:+.1f} us "
          f"({'ok' if bars['write_qd1_nexus2_extra_over_hop_us'][1] else 'MISSED'})")
    print(f"  nexus-3 / nexus-1, 4 KiB read QD32 IOPS: {bars['read_scaling'][0]:.2f} (>= 1.00: "
          f"{'ok' if bars['read_scaling'][1] else 'MISSED'})", flush=True)
    return {k: {"value": v, "ok": ok} for k, (v, ok) in bars.items()}


def print_row(name, r):
    if not hasattr(print_row, "header"):
        print_row.header = True
        print(f"{'row':<20} {'variant':<9} {'IOPS':>9} {'mean us':>8} {'p99 us':>8} {'A cpu us/IO':>11} {'vs replica':>10}")
    for v, x in r.items():
        print(f"{name:<20} {v:<9} {x['iops']:>9.0f} {x['lat']:>8.1f} {x['p99']:>8.1f} {x['cpu_us']:>11.1f} "
              f"{x['ratio']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
