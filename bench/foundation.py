#!/usr/bin/env python3
"""Foundation benchmark: ioperf (our device layer on io_uring reactors) against fio on the same file,
side by side in one run, plus RAM-device IOPS per core, idle CPU, and the latency cost of adaptive
polling.

Every comparison runs both tools pinned to the same core, alternating A/B/A/B, and reports medians.
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
    out = run([binary, "--uri", uri, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core),
               "--time", f"{secs}s", "--ramp", "1s", "--json", *extra])
    r = json.loads(out.strip().splitlines()[-1])
    side = r["read"] if r["read"]["ops"] else r["write"]
    return side["iops"], side["lat_us"]["mean"], r


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

    results = {"core": core, "file": path, "reps": args.reps, "secs": args.secs, "rows": []}
    print(f"ioperf vs fio (io_uring, O_DIRECT) on a 1 GiB file, both pinned to core {core}; "
          f"{args.reps} alternating runs of {args.secs}s each, medians")
    print(f"{'workload':<20} {'fio IOPS':>10} {'ioperf IOPS':>12} {'ratio':>6}   {'fio lat us':>10} "
          f"{'ioperf lat us':>13} {'ratio':>6}  bar")
    all_ok = True
    for name, rw, bs, qd in ROWS:
        f_iops, f_lat, i_iops, i_lat = [], [], [], []
        for _ in range(args.reps):
            a, b = fio(path, rw, bs, qd, args.secs, core)
            f_iops.append(a)
            f_lat.append(b)
            a, b, _ = ioperf(ioperf_bin, f"uring://{path}", rw, bs, qd, args.secs, core)
            i_iops.append(a)
            i_lat.append(b)
        fi, fl, ii, il = (statistics.median(x) for x in (f_iops, f_lat, i_iops, i_lat))
        iops_ratio, lat_ratio = ii / fi, il / fl
        ok = iops_ratio >= IOPS_BAR and lat_ratio <= LAT_BAR
        all_ok &= ok
        print(f"{name:<20} {fi:>10.0f} {ii:>12.0f} {iops_ratio:>6.2f}   {fl:>10.1f} {il:>13.1f} {lat_ratio:>6.2f}  "
              f"{'ok' if ok else 'MISSED'}")
        results["rows"].append({"workload": name, "fio_iops": fi, "ioperf_iops": ii, "iops_ratio": iops_ratio,
                                "fio_lat_us": fl, "ioperf_lat_us": il, "lat_ratio": lat_ratio, "meets_bar": ok,
                                "fio_iops_runs": f_iops, "ioperf_iops_runs": i_iops})
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
