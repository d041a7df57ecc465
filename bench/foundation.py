#!/usr/bin/env python3
"""Foundation benchmark: ioperf (our device layer on io_uring reactors) against fio on the same file,
side by side in one run, plus RAM-device IOPS per core, idle CPU, and the latency cost of adaptive
polling.

Every comparison runs both tools pinned to the same core, in pairs whose order alternates (fio first,
then ioperf first, ...), and reports the median of each tool and the median of the per-pair ratios (a
pair runs back to back, so slow drifts of a shared machine cancel out).

Kernel request merging is switched off on the file's block device for the comparison (sysfs
queue/nomerges=2, restored afterwards): with it on, how often adjacent requests reach the kernel in one
io_uring_enter decides how many get merged, and on some devices (virtio disks) bigger merged requests
are slower. That measures a kernel heuristic, not the tools. The 128 KiB sequential rows are also run
with merging on and printed for information.

The last line printed is one JSON object with every figure and ratio.

    bench/foundation.py [--reps 3] [--secs 5] [--core N] [--file /var/tmp/tern-bench.img] [--no-build]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]

ROWS = [
    # name, fio rw, bs, qd
    ("4k randread QD1", "randread", "4k", 1),
    ("4k randread QD32", "randread", "4k", 32),
    ("4k randwrite QD1", "randwrite", "4k", 1),
    ("4k randwrite QD32", "randwrite", "4k", 32),
    ("128k read QD8", "read", "128k", 8),
    ("128k write QD8", "write", "128k", 8),
]
IOPS_BAR = 0.95
LAT_BAR = 1.05


def run(cmd, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"benchmark: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def fio(path, rw, bs, qd, secs, core):
    out = run(["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
               "--ioengine=io_uring", "--direct=1", "--time_based", f"--runtime={secs}", "--ramp_time=1",
               f"--cpus_allowed={core}", "--output-format=json", "--randrepeat=0", "--norandommap"])
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["iops"], side["lat_ns"]["mean"] / 1000.0


def ioperf(binary, uri, rw, bs, qd, secs, core, extra=()):
    """`uri`: a device URI, or the list of arguments that choose the device (--pool/--replica ...)."""
    target = ["--uri", uri] if isinstance(uri, str) else list(uri)
    out = run([binary, *target, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core),
               "--time", f"{secs}s", "--ramp", "1s", "--json", *extra])
    r = json.loads(out.strip().splitlines()[-1])
    side = r["read"] if r["read"]["ops"] else r["write"]
    return side["iops"], side["lat_us"]["mean"], r


class NoMerges:
    """Sets queue/nomerges=2 on the block device holding `path` while active (needs root)."""

    def __init__(self, path):
        self.knob = None
        self.old = None
        st = os.stat(path)
        dev = pathlib.Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
        if (dev / "partition").exists():
            dev = dev.parent
        knob = dev / "queue/nomerges"
        if knob.exists() and os.access(knob, os.W_OK):
            self.knob = knob

    def set(self, value):
        if self.knob is None:
            return False
        if self.old is None:
            self.old = self.knob.read_text().strip()
        self.knob.write_text(str(value))
        return True

    def restore(self):
        if self.knob is not None and self.old is not None:
            self.knob.write_text(self.old)


def compare(path, ioperf_bin, rw, bs, qd, secs, core, reps):
    """Runs fio and ioperf in `reps` back-to-back pairs; returns medians and median per-pair ratios."""
    f_iops, f_lat, i_iops, i_lat, r_iops, r_lat = [], [], [], [], [], []
    for rep in range(reps):
        def run_fio():
            return fio(path, rw, bs, qd, secs, core)

        def run_ioperf():
            a, b, _ = ioperf(ioperf_bin, f"uring://{path}", rw, bs, qd, secs, core)
            return a, b

        if rep % 2 == 0:
            fa, fb = run_fio()
            ia, ib = run_ioperf()
        else:
            ia, ib = run_ioperf()
            fa, fb = run_fio()
        f_iops.append(fa)
        f_lat.append(fb)
        i_iops.append(ia)
        i_lat.append(ib)
        r_iops.append(ia / fa)
        r_lat.append(ib / fb)
    med = statistics.median
    return {"fio_iops": med(f_iops), "ioperf_iops": med(i_iops), "fio_lat_us": med(f_lat), "ioperf_lat_us": med(i_lat),
            "iops_ratio": med(r_iops), "lat_ratio": med(r_lat), "fio_iops_runs": f_iops, "ioperf_iops_runs": i_iops,
            "iops_ratio_runs": r_iops, "lat_ratio_runs": r_lat}


def print_row(name, r, bar=True):
    ok = r["iops_ratio"] >= IOPS_BAR and r["lat_ratio"] <= LAT_BAR
    verdict = ("ok" if ok else "MISSED") if bar else "(info)"
    print(f"{name:<22} {r['fio_iops']:>10.0f} {r['ioperf_iops']:>12.0f} {r['iops_ratio']:>6.2f}   "
          f"{r['fio_lat_us']:>10.1f} {r['ioperf_lat_us']:>13.1f} {r['lat_ratio']:>6.2f}  {verdict}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--core", type=int, default=None, help="core both tools are pinned to (default: the last allowed)")
    ap.add_argument("--file", default=None, help="1 GiB test file (default: a new one in /var/tmp)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--idle-secs", type=int, default=10)
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release"], check=True, stdout=subprocess.DEVNULL)
    build = ROOT / "build/release"
    ioperf_bin = str(build / "tools/ioperf/ioperf")
    idle_bin = str(build / "bench/reactor_idle")
    allowed = sorted(os.sched_getaffinity(0))
    core = args.core if args.core is not None else allowed[-1]

    tmp = None
    path = args.file
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="tern-bench-", dir="/var/tmp")
        path = os.path.join(tmp.name, "bench.img")
    if not os.path.exists(path) or os.path.getsize(path) != 1 << 30:
        # Really written, so reads hit allocated blocks rather than holes.
        run(["fio", "--name=fill", f"--filename={path}", "--size=1g", "--rw=write", "--bs=1m", "--direct=1",
             "--ioengine=io_uring", "--iodepth=8"])

    results = {"core": core, "file": path, "reps": args.reps, "secs": args.secs, "rows": [], "merging_on_rows": []}
    merges = NoMerges(path)
    results["nomerges_set"] = merges.set(2)
    header = (f"{'workload':<22} {'fio IOPS':>10} {'ioperf IOPS':>12} {'ratio':>6}   {'fio lat us':>10} "
              f"{'ioperf lat us':>13} {'ratio':>6}  bar")
    print(f"ioperf vs fio (io_uring, O_DIRECT) on a 1 GiB file, both pinned to core {core}; {args.reps} back-to-back "
          f"pairs of {args.secs}s runs; medians, and ratios as the median of per-pair ratios; kernel request merging "
          f"{'off' if results['nomerges_set'] else 'ON (could not change it: not root?)'}")
    print(header)
    all_ok = True
    try:
        for name, rw, bs, qd in ROWS:
            r = compare(path, ioperf_bin, rw, bs, qd, args.secs, core, args.reps)
            r["workload"] = name
            r["meets_bar"] = print_row(name, r)
            all_ok &= r["meets_bar"]
            results["rows"].append(r)
        if results["nomerges_set"]:
            merges.set(0)
            print("with kernel request merging on (the device's default), for information:")
            for name, rw, bs, qd in ROWS:
                if not bs.startswith("128k"):
                    continue
                r = compare(path, ioperf_bin, rw, bs, qd, args.secs, core, args.reps)
                r["workload"] = name
                print_row(name + " merging", r, bar=False)
                results["merging_on_rows"].append(r)
    finally:
        merges.restore()
    results["all_rows_meet_bar"] = all_ok

    # RAM device: the layer's own cost per I/O.
    iops = [ioperf(ioperf_bin, "malloc:///m0?size_mb=64", "randread", "4k", 32, args.secs, core)[0]
            for _ in range(args.reps)]
    results["malloc_4k_randread_qd32_iops_per_core"] = statistics.median(iops)
    print(f"\nmalloc device (64 MiB), 4k randread QD32, one core: {statistics.median(iops):,.0f} IOPS per core")

    # Idle reactors.
    idle = json.loads(run([idle_bin, "--cores", ",".join(map(str, allowed[:2])), "--seconds", str(args.idle_secs),
                           "--devices", "4"]).strip())
    results["idle"] = idle
    print(f"idle reactors on cores {idle['cores']} with 4 open devices, {args.idle_secs}s: "
          f"{idle['cpu_pct_total']:.2f}% of a core in total (bar < 1%), {idle['sleeps']} sleeps")
    results["idle_meets_bar"] = idle["cpu_pct_total"] < 1.0

    # QD1 latency: adaptive polling vs pure (busy) polling, on the file, on RAM, and on a device slower
    # than the idle spin (where the adaptive reactor really sleeps between requests).
    print("\nQD1 mean latency, adaptive vs busy polling (medians):")
    results["polling_qd1"] = []
    for label, uri, extra in [
        ("file 4k randread", f"uring://{path}", ()),
        ("malloc 4k randread", "malloc:///m0?size_mb=256", ()),
        ("delay 200us 4k randread", "delay:///d0?base=m0&read_us=200", ("--dev", "malloc:///m0?size_mb=256")),
    ]:
        lat = {}
        cpu = {}
        for mode in ("adaptive", "busy"):
            runs = [ioperf(ioperf_bin, uri, "randread", "4k", 1, max(2, args.secs // 2), core,
                           ("--poll", mode, *extra)) for _ in range(args.reps)]
            lat[mode] = statistics.median(r[1] for r in runs)
            cpu[mode] = statistics.median(r[2]["cpu_pct"][0] for r in runs)
        added = lat["adaptive"] - lat["busy"]
        print(f"  {label:<26} adaptive {lat['adaptive']:8.2f} us ({cpu['adaptive']:5.1f}% cpu)   "
              f"busy {lat['busy']:8.2f} us ({cpu['busy']:5.1f}% cpu)   added {added:+.2f} us")
        results["polling_qd1"].append({"device": label, "adaptive_lat_us": lat["adaptive"], "busy_lat_us": lat["busy"],
                                       "added_us": added, "adaptive_cpu_pct": cpu["adaptive"],
                                       "busy_cpu_pct": cpu["busy"]})
    if tmp:
        tmp.cleanup()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
