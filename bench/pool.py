#!/usr/bin/env python3
"""Pool benchmark: ioperf on a thick replica of a pool against ioperf on the raw region of the same file
that holds the replica's clusters (same device type, same request sizes and queue depths), side by side
in one run; then bench/pool_ops (pool create, thick create, thin first write, snapshot and copy-on-write,
import with 1000 replicas).

The pool is made with `ternctl offline pool create` on a 2 GiB file, and a 1 GiB thick replica with `ternctl
pool add-replica`, written once in full through the replica (its create zeroed the clusters with
FALLOC_FL_ZERO_RANGE, which leaves unwritten extents that reads would not fetch from the disk); a fresh pool
hands out clusters lowest first, so the replica's clusters are one contiguous region, found from
`ternctl offline pool check -o json` (data offset + first cluster). The raw runs use `ioperf --uri uring://FILE
--offset REGION --size 1g`; the replica runs `ioperf --pool FILE --replica r` (import, run, export).
Both are pinned to the same core, in pairs whose order alternates; medians and median per-pair ratios
are reported, with kernel request merging off as in bench/foundation.py.

Bar (issue 5): replica IOPS >= 0.97x raw, latency <= 1.03x raw.

Comparing two builds: `--baseline DIR` (another checkout's build/release) runs that build's ioperf on the
same replica as a third member of every pair (order rotating); "vs base" is the median per-round ratio of
our replica IOPS to the baseline's.

    bench/pool.py [--reps 5] [--secs 4] [--core N] [--baseline DIR] [--no-build]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from foundation import ROWS, NoMerges, ioperf, run  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
IOPS_BAR = 0.97
LAT_BAR = 1.03
GiB = 1 << 30


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--core", type=int, default=None, help="core both runs are pinned to (default: the last allowed)")
    ap.add_argument("--baseline", default="", help="another build/release directory to compare with, interleaved")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release"], check=True, stdout=subprocess.DEVNULL)
    build = ROOT / "build/release"
    ioperf_bin = str(build / "tools/ioperf/ioperf")
    ternctl = str(build / "tools/ternctl/ternctl")
    allowed = sorted(os.sched_getaffinity(0))
    core = args.core if args.core is not None else allowed[-1]

    tmp = tempfile.TemporaryDirectory(prefix="tern-pool-bench-", dir="/var/tmp")
    path = os.path.join(tmp.name, "pool.img")
    run(["fio", "--name=fill", f"--filename={path}", "--size=2g", "--rw=write", "--bs=1m", "--direct=1",
         "--ioengine=io_uring", "--iodepth=8"])
    uri = f"uring://{path}"
    run([ternctl, "offline", "pool", "create", uri, "--name", "bench"])
    run([ternctl, "offline", "pool", "add-replica", uri, "--name", "r", "--size", "1g"])
    rep = json.loads(run([ternctl, "offline", "pool", "check", uri, "-o", "json"]))
    r = rep["replicas"][0]
    first = r["map"][0] - 1
    if r["map"] != list(range(first + 1, first + 1 + len(r["map"]))):
        sys.exit("benchmark: the replica's clusters are not contiguous")
    region = rep["data_offset"] + first * rep["cluster_size"]
    raw_args = ["--uri", uri, "--offset", str(region), "--size", str(GiB)]
    replica_args = ["--dev", uri, "--pool", path, "--replica", "r"]
    # The thick create zeroed the clusters with FALLOC_FL_ZERO_RANGE: the file system marks them unwritten
    # and reads of them never reach the disk. Write the replica once so both sides read real blocks.
    run([ioperf_bin, *replica_args, "--rw", "write", "--bs", "1m", "--qd", "8", "--time", "0",
         "--ios", str(GiB >> 20)])

    results = {"core": core, "reps": args.reps, "secs": args.secs, "region_offset": region, "rows": []}
    merges = NoMerges(path)
    results["nomerges_set"] = merges.set(2)
    print(f"thick replica (1 GiB, pool on a 2 GiB file) vs the raw file region holding its clusters (offset {region}); "
          f"ioperf pinned to core {core}; {args.reps} back-to-back pairs of {args.secs}s runs; medians, ratios as the "
          f"median of per-pair ratios; kernel request merging {'off' if results['nomerges_set'] else 'ON'}")
    print(f"{'workload':<22} {'raw IOPS':>10} {'replica IOPS':>13} {'ratio':>6}   {'raw lat us':>10} "
          f"{'replica lat us':>14} {'ratio':>6}  bar")
    all_ok = True
    med = statistics.median
    base_bin = str(pathlib.Path(args.baseline) / "tools/ioperf/ioperf") if args.baseline else None
    try:
        for name, rw, bs, qd in ROWS:
            a_iops, a_lat, b_iops, b_lat, ri, rl, vb = [], [], [], [], [], [], []
            for i in range(args.reps):
                runs = [("raw", ioperf_bin, raw_args), ("replica", ioperf_bin, replica_args)]
                if base_bin:
                    runs.append(("base", base_bin, replica_args))
                k = i % len(runs)
                order = runs[k:] + runs[:k] if i % 2 == 0 else list(reversed(runs[k:] + runs[:k]))
                got = {}
                for tag, binary, which in order:
                    got[tag] = ioperf(binary, which, rw, bs, qd, args.secs, core)[:2]
                ra, rb = got["raw"], got["replica"]
                if base_bin:
                    vb.append(rb[0] / got["base"][0])
                a_iops.append(ra[0])
                a_lat.append(ra[1])
                b_iops.append(rb[0])
                b_lat.append(rb[1])
                ri.append(rb[0] / ra[0])
                rl.append(rb[1] / ra[1])
            row = {"workload": name, "raw_iops": med(a_iops), "replica_iops": med(b_iops), "raw_lat_us": med(a_lat),
                   "replica_lat_us": med(b_lat), "iops_ratio": med(ri), "lat_ratio": med(rl), "iops_ratio_runs": ri}
            if vb:
                row["vs_base"] = med(vb)
                row["vs_base_runs"] = vb
            row["meets_bar"] = row["iops_ratio"] >= IOPS_BAR and row["lat_ratio"] <= LAT_BAR
            all_ok &= row["meets_bar"]
            print(f"{name:<22} {row['raw_iops']:>10.0f} {row['replica_iops']:>13.0f} {row['iops_ratio']:>6.2f}   "
                  f"{row['raw_lat_us']:>10.1f} {row['replica_lat_us']:>14.1f} {row['lat_ratio']:>6.2f}  "
                  f"{'ok' if row['meets_bar'] else 'MISSED'}" + (f"  vs base {row['vs_base']:.3f}" if vb else ""))
            results["rows"].append(row)
    finally:
        merges.restore()
    results["all_rows_meet_bar"] = all_ok
    print("\npool operations (bench/pool_ops):")
    ops = run([str(build / "bench/pool_ops"), "--file", os.path.join(tmp.name, "ops.img"), "--core", str(core)])
    print(ops)
    results["pool_ops"] = ops
    print(json.dumps(results))


if __name__ == "__main__":
    main()
