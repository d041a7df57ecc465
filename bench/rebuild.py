#!/usr/bin/env python3
"""Rebuild benchmark: how fast a child is rebuilt, against what its devices can copy, and what it costs
the host meanwhile — measured side by side in one run.

Two io-engines on loopback: A runs the nexus and holds its local replica (the source), B holds the
replica that is rebuilt (the destination, over NVMe/TCP). Pools in RAM (`--backing ram`: the software
is the bottleneck) or on a disk of their own per node (`--backing disk`: RAM behind a delay:// device
taking `--disk-us` per request).

  copy-ref    what the devices allow: 1 MiB sequential reads of A's replica at QD`concurrency` (the
              source) and 1 MiB sequential writes to B's replica over NVMe/TCP at the same depth (the
              destination), each measured alone by ioperf; a copy cannot beat the slower of the two.
  full        a thick volume written in full; B's replica added; the time until it is in sync.
  thin        the same with thin replicas and half the volume written: bytes copied and time.
  host        4 KiB random writes at QD8 to the nexus: IOPS with both children in sync, then while the
              rebuild runs unlimited, then while it runs at `--rate` (the limit an operator would set).
              (The child is removed and added again: a full rebuild each time.)
  reconcile   the nexus destroyed without a shutdown with every extent of the volume hot, made again
              over the same children: bytes reconciled and how long the create took.
  log-thrash  the same host writes with an activity log of 8 extents (32 MiB) over the whole volume:
              nearly every write names a cold extent (a log write, and evictions with their barriers)
              — the worst case of the log's steady-state cost, against the in-sync IOPS above (every
              extent hot: no log write).
  partial     B's child faulted, 4 KiB random writes dirtying about a tenth of its 64 KiB regions, then
              onlined: the fraction of the volume marked and copied, and the time against the full one.

Repetitions; medians; ratios against copy-ref and the in-sync host IOPS of the same run.

    bench/rebuild.py [--backing ram|disk] [--disk-us 200] [--volume-mib 1024] [--reps 3] [--rate 64]
                     [--no-build]
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
from nexus_util import required_child_bytes, wait_rebuilt  # noqa: E402

MiB = 1 << 20


def ioperf(binary, uri, rw, bs, qd, core, secs=None, ios=None):
    args = [str(binary), "--uri", uri, "--rw", rw, "--bs", bs, "--qd", str(qd), "--cores", str(core), "--json"]
    args += ["--time", f"{secs}s"] if secs else ["--time", "0", "--ios", str(ios)]
    out = run(args, timeout=(secs or 60) * 10 + 300)
    r = json.loads(out.strip().splitlines()[-1])
    return r["read"] if r["read"]["ops"] else r["write"]


def med(xs):
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, build, wd, backing, disk_us, vol, cores):
        from io_engine import EngineFactory, stubs
        self.pb = stubs()
        self.f = EngineFactory(build, wd)
        self.vol = vol
        self.engines = []
        size = 6 * required_child_bytes(vol) + 64 * MiB
        B, P = self.pb.bdev_pb2, self.pb.pool_pb2
        for i, core in enumerate(cores):
            e = self.f(name=f"node{i}", cores=str(core), pools=[], log_level="warn")
            e.api.bdev.CreateBdev(B.CreateBdevRequest(uri=f"malloc:///ram{i}?size_mb={size >> 20}&populate=1"), timeout=300)
            disk = f"ram{i}"
            if backing == "disk":
                e.api.bdev.CreateBdev(B.CreateBdevRequest(
                    uri=f"delay:///disk{i}?base=ram{i}&read_us={disk_us}&write_us={disk_us}"), timeout=60)
                disk = f"disk{i}"
            e.api.pool.CreatePool(P.CreatePoolRequest(name=f"p{i}", disk=disk), timeout=300)
            self.engines.append(e)

    def replica(self, i, name, thin, share):
        R, C = self.pb.replica_pb2, self.pb.common_pb2
        return self.engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
            name=name, pool=f"p{i}", size=required_child_bytes(self.vol), thin=thin,
            share=C.SHARE_PROTOCOL_NVMF if share else C.SHARE_PROTOCOL_NONE), timeout=300)

    def drop(self, i, r):
        self.engines[i].api.replica.DestroyReplica(self.pb.replica_pb2.ReplicaRef(uuid=r.uuid), timeout=300)

    def stop(self):
        self.f.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backing", choices=["ram", "disk"], default="ram")
    ap.add_argument("--disk-us", type=int, default=200)
    ap.add_argument("--volume-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rate", type=int, default=64, help="MiB/s: the limited rebuild of the host row")
    ap.add_argument("--concurrency", type=int, default=2, help="the rebuild's segments in flight (and copy-ref's QD)")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    vol = a.volume_mib * MiB
    if not a.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release", "io-engine", "ioperf"], check=True,
                       stdout=subprocess.DEVNULL)
    build = ROOT / "build/release"
    ioperf_bin = build / "tools/ioperf/ioperf"
    allowed = sorted(os.sched_getaffinity(0))
    host_core, a_core = allowed[0], allowed[-1]
    res = {"backing": a.backing, "disk_us": a.disk_us if a.backing == "disk" else None, "volume_mib": a.volume_mib,
           "reps": a.reps, "samples": []}
    with tempfile.TemporaryDirectory(prefix="tern-bench-rebuild-", dir="/var/tmp") as td:
        bench = Bench(build, pathlib.Path(td), a.backing, a.disk_us, vol, [a_core, host_core])
        N = bench.pb.nexus_pb2
        A = bench.engines[0]
        settings = N.RebuildSettings(concurrency=a.concurrency)
        try:
            for rep in range(a.reps):
                s = {}
                # copy-ref: the source's reads and the destination's writes, each alone.
                src = bench.replica(0, f"src{rep}", thin=False, share=True)
                dst = bench.replica(1, f"dst{rep}", thin=False, share=True)
                ios = vol // MiB
                ioperf(ioperf_bin, src.share.uri, "write", "1m", 8, host_core, ios=ios)  # written once
                rd = ioperf(ioperf_bin, src.share.uri, "read", "1m", a.concurrency, host_core, ios=ios)
                wr = ioperf(ioperf_bin, dst.share.uri, "write", "1m", a.concurrency, host_core, ios=ios)
                s["src_read_mib_s"] = rd["iops"]
                s["dst_write_mib_s"] = wr["iops"]
                s["copy_ref_mib_s"] = min(rd["iops"], wr["iops"])
                A.api.replica.UnshareReplica(bench.pb.replica_pb2.ReplicaRef(uuid=src.uuid), timeout=60)
                # full: the local replica holds the volume; the remote one is added and rebuilt.
                v = str(uuid.uuid4())
                A.api.nexus.CreateNexus(N.CreateNexusRequest(
                    uuid=v, size=vol, children=[f"bdev:///{src.uuid}?uuid={src.uuid}"], rebuild=settings), timeout=300)
                t0 = time.monotonic()
                A.api.nexus.AddChild(N.AddChildRequest(uuid=v, uri=f"{dst.share.uri}?uuid={dst.uuid}"), timeout=300)
                rb = [c for c in wait_rebuilt(A, bench.pb, v, dst.uuid, 1200).children if c.uuid == dst.uuid][0].rebuild
                el = time.monotonic() - t0
                s["full_mib_s"] = vol / MiB / el
                s["full_engine_mib_s"] = rb.bytes_per_s / MiB
                s["full_ratio"] = s["full_mib_s"] / s["copy_ref_mib_s"]
                # host: random writes in sync, then during an unlimited and a limited rebuild.
                uri = A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=v), timeout=60).share.uri
                s["host_insync_iops"] = ioperf(ioperf_bin, uri, "randwrite", "4k", 8, host_core, secs=3)["iops"]
                dst_uri = f"{dst.share.uri}?uuid={dst.uuid}"
                for label, rate in (("unlimited", 0), ("limited", a.rate * MiB)):
                    # Removed and added again: no dirty-region log, a full rebuild.
                    A.api.nexus.RemoveChild(N.ChildRef(uuid=v, child_uuid=dst.uuid), timeout=60)
                    A.api.nexus.AddChild(N.AddChildRequest(uuid=v, uri=dst_uri), timeout=300)
                    time.sleep(0.1)
                    try:
                        A.api.nexus.SetRebuildRate(N.SetRebuildRateRequest(uuid=v, child_uuid=dst.uuid,
                                                                           rate_bytes_per_s=rate), timeout=60)
                    except Exception:
                        pass  # ended already (a small volume)
                    h = ioperf(ioperf_bin, uri, "randwrite", "4k", 8, host_core, secs=3)
                    s[f"host_{label}_iops"] = h["iops"]
                    s[f"host_{label}_ratio"] = h["iops"] / s["host_insync_iops"]
                    s[f"host_{label}_p99_us"] = h["lat_us"]["p99"]
                    wait_rebuilt(A, bench.pb, v, dst.uuid, 1200)
                # reconcile: the nexus goes without a shutdown, every extent hot (the writes above).
                children = [f"bdev:///{src.uuid}?uuid={src.uuid}", dst_uri]
                A.api.nexus.DestroyNexus(N.NexusRef(uuid=v), timeout=300)
                t0 = time.monotonic()
                nx = A.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=v, size=vol, children=children, rebuild=settings,
                                                                  al_extents=8), timeout=600)
                s["reconcile_s"] = time.monotonic() - t0
                s["reconcile_fraction"] = nx.activity_log.reconciled_bytes / vol
                # log-thrash: 8 hot extents, random writes over the whole volume.
                uri = A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=v), timeout=60).share.uri
                h = ioperf(ioperf_bin, uri, "randwrite", "4k", 8, host_core, secs=3)
                s["log_thrash_ratio"] = h["iops"] / s["host_insync_iops"]
                s["log_thrash_p99_us"] = h["lat_us"]["p99"]
                # partial: about a tenth of the regions written while B's child is away.
                A.api.nexus.FaultChild(N.FaultChildRequest(uuid=v, child_uuid=dst.uuid), timeout=60)
                ioperf(ioperf_bin, uri, "randwrite", "4k", 8, host_core, ios=vol // (64 << 10) // 10)
                t0 = time.monotonic()
                A.api.nexus.OnlineChild(N.ChildRef(uuid=v, child_uuid=dst.uuid), timeout=60)
                rb = [c for c in wait_rebuilt(A, bench.pb, v, dst.uuid, 1200).children if c.uuid == dst.uuid][0].rebuild
                s["partial_s"] = time.monotonic() - t0
                s["partial_dirty_fraction"] = rb.dirty_bytes / vol
                s["partial_copied_fraction"] = rb.copied_bytes / vol
                s["partial_vs_full_time"] = s["partial_s"] / (vol / MiB / s["full_mib_s"])
                A.api.nexus.DestroyNexus(N.NexusRef(uuid=v), timeout=300)
                bench.drop(0, src)
                bench.drop(1, dst)
                # thin: half written, a thin destination.
                src = bench.replica(0, f"tsrc{rep}", thin=True, share=False)
                dst = bench.replica(1, f"tdst{rep}", thin=True, share=True)
                v = str(uuid.uuid4())
                A.api.nexus.CreateNexus(N.CreateNexusRequest(
                    uuid=v, size=vol, children=[f"bdev:///{src.uuid}?uuid={src.uuid}"], rebuild=settings), timeout=300)
                uri = A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=v), timeout=60).share.uri
                ioperf(ioperf_bin, uri, "write", "1m", 8, host_core, ios=ios // 2)
                t0 = time.monotonic()
                A.api.nexus.AddChild(N.AddChildRequest(uuid=v, uri=f"{dst.share.uri}?uuid={dst.uuid}"), timeout=300)
                rb = [c for c in wait_rebuilt(A, bench.pb, v, dst.uuid, 1200).children if c.uuid == dst.uuid][0].rebuild
                s["thin_s"] = time.monotonic() - t0
                s["thin_copied_fraction"] = rb.copied_bytes / vol
                s["thin_dst_allocated_fraction"] = bench.engines[1].api.replica.ListReplicas(
                    bench.pb.replica_pb2.ListReplicasRequest(uuid=dst.uuid), timeout=60).replicas[0].allocated / vol
                A.api.nexus.DestroyNexus(N.NexusRef(uuid=v), timeout=300)
                bench.drop(0, src)
                bench.drop(1, dst)
                res["samples"].append(s)
                print(f"rep {rep}: " + ", ".join(f"{k} {x:.3g}" for k, x in s.items()), flush=True)
        finally:
            bench.stop()
    keys = res["samples"][0].keys()
    res["median"] = {k: med([s[k] for s in res["samples"]]) for k in keys}
    m = res["median"]
    print(f"\nrebuild, {a.volume_mib} MiB volume, {a.backing} backing"
          f"{f' ({a.disk_us} us per request)' if a.backing == 'disk' else ''}, medians of {a.reps}:")
    print(f"  copy-ref (min of source read {m['src_read_mib_s']:.0f}, destination write {m['dst_write_mib_s']:.0f}): "
          f"{m['copy_ref_mib_s']:.0f} MiB/s")
    print(f"  full rebuild: {m['full_mib_s']:.0f} MiB/s end to end = {m['full_ratio']:.2f} x copy-ref")
    print(f"  thin, half written: {m['thin_copied_fraction']:.2f} of the volume copied, destination "
          f"{m['thin_dst_allocated_fraction']:.2f} allocated, {m['thin_s']:.2f} s")
    print(f"  host 4k randwrite QD8: in sync {m['host_insync_iops']:.0f} IOPS; during an unlimited rebuild "
          f"{m['host_unlimited_ratio']:.2f} x (p99 {m['host_unlimited_p99_us']:.0f} us); at {a.rate} MiB/s "
          f"{m['host_limited_ratio']:.2f} x (p99 {m['host_limited_p99_us']:.0f} us)")
    print(f"  reconcile after an unclean stop, every extent hot: {m['reconcile_fraction']:.2f} of the volume "
          f"in {m['reconcile_s']:.2f} s (the create)")
    print(f"  log-thrash (8-extent activity log, writes all over the volume): {m['log_thrash_ratio']:.2f} x the "
          f"in-sync IOPS (p99 {m['log_thrash_p99_us']:.0f} us)")
    print(f"  partial: {m['partial_dirty_fraction']:.3f} of the volume marked, {m['partial_copied_fraction']:.3f} "
          f"copied, {m['partial_s']:.2f} s = {m['partial_vs_full_time']:.3f} x the full rebuild's time")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
