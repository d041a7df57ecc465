#!/usr/bin/env python3
"""End-to-end benchmark: a volume served over NVMe/TCP against the raw device, side by side in one run
(issue 19: "overhead within single-digit percent of the device").

One file on the disk holds a pool (made offline with ternctl) with a thick 1 GiB replica `r` and a thick
replica `n` for a 1-child nexus; both are written once in full, so reads reach the disk. An io-engine
imports the pool on --engine-core; the host (ioperf with our NVMe/TCP initiator, or fio) runs on
--host-core. Variants, interleaved in every repetition (the order alternates), medians reported:

  raw ioperf    ioperf on a 1 GiB file on the same disk, written in full (uring://, O_DIRECT): the reference
                (the pool's own file cannot be opened beside the engine, which locks it)
  raw fio       fio (io_uring, O_DIRECT) on the same file: the second reference
  in-process    ioperf driving replica r of a second pool file in-process (`ioperf --pool`): what the
                pool layer costs without a network
  replica       r shared over NVMe/TCP by the engine, driven by ioperf through our initiator
  nexus-1       a nexus on the engine with n as its only child, published over NVMe/TCP (what a 1-replica
                volume is)
  ram nvmf      nvmf_tgt serving a RAM namespace on the engine core, minus ...
  ram local     ... ioperf on a RAM device in-process: their difference is the NVMe/TCP round trip itself
                (both reactors, both kernels' loopback TCP), measured in the same run

Rows: 4 KiB randread/randwrite at QD1 and QD32, 128 KiB sequential read and write at QD8. Kernel request
merging is off on the file's block device during the run (as bench/foundation.py does, restored after).
For each row: IOPS and mean latency per variant, the ratio of each volume variant to raw ioperf and to raw
fio (median of per-repetition ratios), and CPU per I/O on the host (ioperf's reactor) and on the engine
(the process's utime + stime over the run). Then the idle cost: an engine with --idle-replicas shared
replicas and a client engine holding --idle-devices connected `nvmf://` devices, no I/O.

Bars (issue 19), checked and printed:
  - QD32: replica and nexus-1 >= 0.91 x raw ioperf IOPS, randread and randwrite;
  - QD1: replica and nexus-1 mean latency <= raw ioperf mean latency + (ram nvmf - ram local) + 5 us;
  - idle: each engine < 1 % of a core.

The last line printed is one JSON object with every figure.

    bench/e2e.py [--reps 3] [--secs 4] [--host-core 0] [--engine-core 1] [--rows NAMES] [--no-build]
                 [--idle-replicas 100] [--idle-devices 20] [--idle-secs 10]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/system"))
sys.path.insert(0, str(ROOT / "bench"))
from foundation import NoMerges, run  # noqa: E402
from nexus_util import required_child_bytes  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
VOL = GiB
ROWS = [
    ("4k randread QD1", "randread", "4k", 1),
    ("4k randwrite QD1", "randwrite", "4k", 1),
    ("4k randread QD32", "randread", "4k", 32),
    ("4k randwrite QD32", "randwrite", "4k", 32),
    ("128k read QD8", "read", "128k", 8),
    ("128k write QD8", "write", "128k", 8),
]
VARIANTS = ["raw ioperf", "raw fio", "in-process", "replica", "nexus-1", "ram nvmf", "ram local"]
VOLUMES = ["replica", "nexus-1"]
QD32_BAR = 0.91
QD1_SLACK_US = 5.0
IDLE_BAR = 1.0  # % of a core
RAM_MB = 512
RAM_NQN = "nqn.2026-12.io.tern:e2e-ram"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


HOST_ARGS = []


def ioperf(binary, target, rw, bs, qd, secs, core):
    out = run([str(binary), *target, *HOST_ARGS, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core),
               "--time", f"{secs}s", "--ramp", "1s", "--json"], timeout=secs * 10 + 120)
    r = json.loads(out.strip().splitlines()[-1])
    side = r["read"] if r["read"]["ops"] else r["write"]
    busy = r["cpu_pct"][0] if r.get("cpu_pct") else None
    return {"iops": side["iops"], "lat": side["lat_us"]["mean"], "p99": side["lat_us"]["p99"],
            "host_busy_pct": busy, "ops": side["ops"], "sleeps": (r.get("reactor_sleeps") or [None])[0]}


def reactor_counters(port):
    """The engine's reactor counters, summed over its reactors (its /metrics)."""
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {"sleeps": 0.0, "submit_calls": 0.0, "sqes": 0.0, "completions": 0.0}
    for line in body.splitlines():
        for k in out:
            if line.startswith(f"tern_reactor_{k}_total{{"):
                out[k] += float(line.rsplit(" ", 1)[1])
    return out


def fio(path, offset, size, rw, bs, qd, secs, core):
    out = run(["fio", "--name=bench", f"--filename={path}", f"--offset={offset}", f"--size={size}", f"--rw={rw}",
               f"--bs={bs}", f"--iodepth={qd}", "--ioengine=io_uring", "--direct=1", "--time_based",
               f"--runtime={secs}", "--ramp_time=1", f"--cpus_allowed={core}", "--output-format=json",
               "--randrepeat=0", "--norandommap"], timeout=secs * 10 + 120)
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    cpu = (job["usr_cpu"] + job["sys_cpu"])
    return {"iops": side["iops"], "lat": side["lat_ns"]["mean"] / 1000.0, "p99": None, "host_busy_pct": cpu,
            "ops": side["total_ios"]}


class RamTarget:
    """nvmf_tgt with one RAM namespace on the engine's core."""

    def __init__(self, binary, core, wd):
        import select
        cfg = wd / "ram-target.yaml"
        cfg.write_text(f"""cores: "{core}"
log_level: warn
devices: ["malloc:///ram0?size_mb={RAM_MB}&populate=1"]
listeners: ["127.0.0.1:0"]
subsystems:
  - nqn: {RAM_NQN}
    allow_any_host: true
    listeners: ["@0"]
    namespaces: [{{device: ram0}}]
""")
        self.proc = subprocess.Popen([str(binary), "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            sys.exit(f"benchmark: nvmf_tgt did not become ready: {self.proc.stderr.read()}")
        port = int(json.loads(line)["listeners"][0].rsplit(":", 1)[1])
        self.uri = f"nvmf://127.0.0.1:{port}/{RAM_NQN}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def make_pool(ternctl, path, replicas):
    """A pool file written in full (so the file system has real blocks), made offline with the replicas
    (name, bytes), thick. Returns ternctl's check report."""
    size = sum(b for _, b in replicas) + 256 * MiB
    run(["fio", "--name=fill", f"--filename={path}", f"--size={size}", "--rw=write", "--bs=1m", "--direct=1",
         "--ioengine=io_uring", "--iodepth=8"], timeout=900)
    uri = f"uring://{path}"
    run([ternctl, "offline", "pool", "create", uri, "--name", pathlib.Path(path).stem])
    for name, b in replicas:
        run([ternctl, "offline", "pool", "add-replica", uri, "--name", name, "--size", str(b)])
    return json.loads(run([ternctl, "offline", "pool", "check", uri, "-o", "json"]))


def idle_cost(build, wd, f, pb, replicas, devices, secs, cores):
    """An engine with `replicas` shared thin replicas on a RAM pool, and a client engine with `devices`
    nvmf:// devices connected to some of them; no I/O. CPU % of a core of each over `secs`."""
    R, C, B = pb.replica_pb2, pb.common_pb2, pb.bdev_pb2
    srv = f(name="idle-server", cores=str(cores[1]), pools=[("idle", f"malloc:///idle?size_mb={replicas * 8 + 256}")],
            log_level="warn")
    cli = f(name="idle-client", cores=str(cores[0]), pools=[], log_level="warn")
    uris = []
    for i in range(replicas):
        rep = srv.api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"i{i}", pool="idle", size=4 * MiB, thin=True, share=C.SHARE_PROTOCOL_NVMF), timeout=60)
        uris.append(f"{rep.share.uri}?uuid={rep.uuid}")
    for i in range(devices):
        cli.api.bdev.CreateBdev(B.CreateBdevRequest(uri=uris[i]), timeout=60)
    time.sleep(2.0)  # let connection set-up (keep-alive timers, first poll) settle before measuring
    out = {}
    s0, c0, t0 = cpu_seconds(srv.proc.pid), cpu_seconds(cli.proc.pid), time.monotonic()
    time.sleep(secs)
    s1, c1, t1 = cpu_seconds(srv.proc.pid), cpu_seconds(cli.proc.pid), time.monotonic()
    out["server_pct"] = (s1 - s0) / (t1 - t0) * 100
    out["client_pct"] = (c1 - c0) / (t1 - t0) * 100
    out["replicas"], out["devices"], out["secs"] = replicas, devices, secs
    srv.stop()
    cli.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--secs", type=int, default=4)
    allowed = sorted(os.sched_getaffinity(0))
    ap.add_argument("--host-core", type=int, default=allowed[0])
    ap.add_argument("--engine-core", type=int, default=allowed[-1])
    ap.add_argument("--rows", help="comma-separated row names (substrings) to run; default all")
    ap.add_argument("--variants", help="comma-separated variants to run; default all")
    ap.add_argument("--dir", default="/var/tmp", help="where the pool files go (the disk measured)")
    ap.add_argument("--idle-replicas", type=int, default=100)
    ap.add_argument("--idle-devices", type=int, default=20)
    ap.add_argument("--idle-secs", type=int, default=10)
    ap.add_argument("--no-idle", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--engine-args", default="", help="extra io-engine flags (e.g. '--poll busy'), for experiments")
    ap.add_argument("--host-args", default="", help="extra ioperf flags (e.g. '--poll busy'), for experiments")
    ap.add_argument("--build", default=str(ROOT / "build/release"), help="the build whose binaries are measured")
    a = ap.parse_args()
    HOST_ARGS[:] = a.host_args.split()
    if not a.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release", "io-engine", "ioperf", "nvmf_tgt", "ternctl"],
                       check=True, stdout=subprocess.DEVNULL)
    build = pathlib.Path(a.build)
    ioperf_bin = build / "tools/ioperf/ioperf"
    ternctl = str(build / "tools/ternctl/ternctl")
    rows = [r for r in ROWS if not a.rows or any(s.strip() in r[0] for s in a.rows.split(","))]
    variants = [v for v in VARIANTS if not a.variants or v in a.variants.split(",")]
    results = {"reps": a.reps, "secs": a.secs, "host_core": a.host_core, "engine_core": a.engine_core, "rows": {}}

    from io_engine import EngineFactory, stubs
    pb = stubs()
    with tempfile.TemporaryDirectory(prefix="tern-bench-e2e-", dir=a.dir) as td:
        wd = pathlib.Path(td)
        child = required_child_bytes(VOL)
        pool = wd / "p0.img"
        make_pool(ternctl, pool, [("r", VOL), ("n", child)])
        raw = wd / "raw.img"
        run(["fio", "--name=fill", f"--filename={raw}", f"--size={VOL}", "--rw=write", "--bs=1m", "--direct=1",
             "--ioengine=io_uring", "--iodepth=8"], timeout=900)
        pool2 = wd / "p1.img"
        make_pool(ternctl, pool2, [("r", VOL)])
        raw_target = ["--uri", f"uring://{raw}"]
        inproc_target = ["--dev", f"uring://{pool2}", "--pool", str(pool2), "--replica", "r"]
        # Written once in full, so that reads of the replica reach real blocks.
        run([str(ioperf_bin), *inproc_target, "--rw", "write", "--bs", "1m", "--qd", "8", "--time", "0",
             "--ios", str(VOL >> 20)], timeout=900)

        f = EngineFactory(build, wd)
        ram = None
        merges = NoMerges(str(pool))
        try:
            eng = f(name="engine", cores=str(a.engine_core), pools=[("p0", f"uring://{pool}")], log_level="warn",
                    extra_args=a.engine_args.split())
            R, C, N = pb.replica_pb2, pb.common_pb2, pb.nexus_pb2
            reps = {x.name: x for x in eng.api.replica.ListReplicas(R.ListReplicasRequest(), timeout=60).replicas}
            shared = eng.api.replica.ShareReplica(R.ShareReplicaRequest(
                replica=R.ReplicaRef(name="r", pool="p0"),
                protocol=C.SHARE_PROTOCOL_NVMF), timeout=60)
            vol = str(uuid.uuid4())
            nrep = reps["n"]
            eng.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL,
                                                           children=[f"bdev:///{nrep.uuid}?uuid={nrep.uuid}"]),
                                      timeout=120)
            nex = eng.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol), timeout=60)
            ram = RamTarget(build / "tools/nvmf_tgt/nvmf_tgt", a.engine_core, wd)
            targets = {
                "raw ioperf": raw_target,
                "in-process": inproc_target,
                "replica": ["--uri", shared.share.uri],
                "nexus-1": ["--uri", nex.share.uri],
                "ram nvmf": ["--uri", ram.uri],
                "ram local": ["--uri", f"malloc:///local?size_mb={RAM_MB}&populate=1"],
            }
            for v in ("replica", "nexus-1"):
                run([str(ioperf_bin), *targets[v], "--rw", "write", "--bs", "1m", "--qd", "8", "--time", "0",
                     "--ios", str(VOL >> 20)], timeout=900)
            results["nomerges_set"] = merges.set(2)
            print(f"host core {a.host_core}, engine core {a.engine_core}; pool files in {a.dir}; {a.reps} "
                  f"repetitions of {a.secs}s runs, order alternating; medians; kernel request merging "
                  f"{'off' if results['nomerges_set'] else 'ON'}", flush=True)
            header = f"{'row':<18} " + " ".join(f"{v:>11}" for v in variants)
            for name, rw, bs, qd in rows:
                samples = {v: [] for v in variants}
                for rep in range(a.reps):
                    order = variants if rep % 2 == 0 else list(reversed(variants))
                    for v in order:
                        if v.startswith("ram") and bs != "4k":
                            continue
                        pid = ram.proc.pid if v == "ram nvmf" else eng.proc.pid
                        k0 = reactor_counters(eng.metrics_port) if v in VOLUMES else None
                        c0 = cpu_seconds(pid)
                        if v == "raw fio":
                            s = fio(raw, 0, VOL, rw, bs, qd, a.secs, a.host_core)
                        else:
                            s = ioperf(ioperf_bin, targets[v], rw, bs, qd, a.secs, a.host_core)
                        c1 = cpu_seconds(pid)
                        s["engine_sleeps_per_io"] = s["engine_sqes_per_submit"] = None
                        if k0:
                            k1 = reactor_counters(eng.metrics_port)
                            ops = s["ops"] * (a.secs + 1) / a.secs
                            s["engine_sleeps_per_io"] = (k1["sleeps"] - k0["sleeps"]) / max(ops, 1)
                            s["engine_sqes_per_submit"] = ((k1["sqes"] - k0["sqes"]) /
                                                           max(k1["submit_calls"] - k0["submit_calls"], 1))
                        s["host_sleeps_per_io"] = (s["sleeps"] / max(s["ops"], 1)
                                                   if s.get("sleeps") is not None else None)
                        # The ramp second counts in the CPU but not in the ops: scale by the run's share.
                        s["engine_cpu_us"] = ((c1 - c0) * 1e6 * a.secs / (a.secs + 1) / max(s["ops"], 1)
                                              if v in ("replica", "nexus-1", "ram nvmf") else None)
                        s["host_cpu_us"] = (s["host_busy_pct"] / 100.0 * 1e6 / s["iops"]
                                            if s["host_busy_pct"] is not None and s["iops"] else None)
                        samples[v].append(s)
                row = {}
                for v in variants:
                    if not samples[v]:
                        continue
                    row[v] = {k: med([x[k] for x in samples[v]]) for k in
                              ("iops", "lat", "p99", "host_cpu_us", "engine_cpu_us", "host_sleeps_per_io",
                               "engine_sleeps_per_io", "engine_sqes_per_submit")}
                    for ref in ("raw ioperf", "raw fio"):
                        if ref in samples and samples[ref]:
                            row[v][f"vs {ref}"] = med([x["iops"] / r["iops"] for x, r in
                                                       zip(samples[v], samples[ref])])
                if "ram nvmf" in row and "ram local" in row:
                    row["ram_rtt_us"] = med([x["lat"] - y["lat"] for x, y in
                                             zip(samples["ram nvmf"], samples["ram local"])])
                results["rows"][name] = row
                print_row(name, row, variants)
        finally:
            merges.restore()
            if ram:
                ram.stop()
            f.stop_all()
        if not a.no_idle:
            f = EngineFactory(build, wd)
            try:
                results["idle"] = idle_cost(build, wd, f, pb, a.idle_replicas, a.idle_devices, a.idle_secs,
                                            (a.host_core, a.engine_core))
            finally:
                f.stop_all()
            i = results["idle"]
            print(f"\nidle: engine with {i['replicas']} shared replicas {i['server_pct']:.2f} % of a core; "
                  f"client engine with {i['devices']} connected nvmf:// devices {i['client_pct']:.2f} %", flush=True)
    results["bars"] = check_bars(results)
    print(json.dumps(results))


def print_row(name, row, variants):
    print(f"\n{name}", flush=True)
    print(f"  {'variant':<11} {'IOPS':>9} {'lat us':>8} {'p99 us':>8} {'vs raw':>7} {'vs fio':>7} "
          f"{'host us/io':>10} {'engine us/io':>12} {'host sl/io':>10} {'eng sl/io':>9} {'eng sqe/sub':>11}")
    for v in variants:
        r = row.get(v)
        if not r:
            continue

        def fmt(x, w, p=2):
            return f"{x:>{w}.{p}f}" if x is not None else f"{'-':>{w}}"
        print(f"  {v:<11} {r['iops']:>9.0f} {r['lat']:>8.1f} {fmt(r['p99'], 8, 0)} {fmt(r.get('vs raw ioperf'), 7)} "
              f"{fmt(r.get('vs raw fio'), 7)} {fmt(r['host_cpu_us'], 10, 1)} {fmt(r['engine_cpu_us'], 12, 1)} "
              f"{fmt(r['host_sleeps_per_io'], 10)} {fmt(r['engine_sleeps_per_io'], 9)} "
              f"{fmt(r['engine_sqes_per_submit'], 11)}")
    if "ram_rtt_us" in row:
        print(f"  NVMe/TCP round trip on a RAM namespace (ram nvmf - ram local): {row['ram_rtt_us']:.1f} us")
    sys.stdout.flush()


def check_bars(results):
    bars = []
    rows = results["rows"]
    for name in ("4k randread QD32", "4k randwrite QD32"):
        for v in VOLUMES:
            r = rows.get(name, {}).get(v)
            if r and "vs raw ioperf" in r:
                bars.append({"bar": f"{name}: {v} >= {QD32_BAR} x raw ioperf", "value": r["vs raw ioperf"],
                             "ok": r["vs raw ioperf"] >= QD32_BAR})
    for name in ("4k randread QD1", "4k randwrite QD1"):
        row = rows.get(name, {})
        if "ram_rtt_us" not in row or "raw ioperf" not in row:
            continue
        limit = row["raw ioperf"]["lat"] + row["ram_rtt_us"] + QD1_SLACK_US
        for v in VOLUMES:
            if v in row:
                bars.append({"bar": f"{name}: {v} mean latency <= raw + RAM round trip + {QD1_SLACK_US:.0f} us "
                                    f"({limit:.1f} us)", "value": row[v]["lat"], "ok": row[v]["lat"] <= limit})
    if "idle" in results:
        i = results["idle"]
        bars.append({"bar": f"idle: engine with {i['replicas']} shared replicas < {IDLE_BAR} % of a core",
                     "value": i["server_pct"], "ok": i["server_pct"] < IDLE_BAR})
        bars.append({"bar": f"idle: client engine with {i['devices']} nvmf:// devices < {IDLE_BAR} % of a core",
                     "value": i["client_pct"], "ok": i["client_pct"] < IDLE_BAR})
    print("\nbars:")
    for b in bars:
        print(f"  {'ok    ' if b['ok'] else 'MISSED'} {b['bar']}: {b['value']:.2f}")
    return bars


if __name__ == "__main__":
    main()
