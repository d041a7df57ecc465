#!/usr/bin/python3
"""io-engine start-up and control-plane speed: start-up to serving for an empty node, the cost of
creating replicas through the gRPC API, and start-up with N replicas (half of them shared over NVMe/TCP)
after a clean stop (SIGTERM) and after a crash (SIGKILL). Start-up time is the engine's own figure
(process start to "ready", NodeInfo.startup_ms); each start-up is repeated and the median reported.

    bench/engine_startup.py [--replicas 1000] [--reps 3] [--build build/release] [--no-build]

The last line printed is one JSON object with every figure.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/system"))
from io_engine import Engine, stubs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build", default=str(ROOT / "build/release"))
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run([str(ROOT / "scripts/build.sh"), "release", "io-engine"], check=True)
    pb = stubs()
    out = {"replicas": a.replicas}
    with tempfile.TemporaryDirectory(prefix="tern-bench-engine-", dir="/var/tmp") as d:
        d = pathlib.Path(d)
        disk = d / "pool.img"
        with open(disk, "wb") as f:
            f.truncate(64 << 30)  # sparse: thin replicas allocate nothing
        e = Engine(a.build, d, name="bench")
        empty = []
        for _ in range(a.reps):
            e.start()
            empty.append(e.info.startup_ms)
            e.stop()
        out["startup_empty_ms"] = statistics.median(empty)
        print(f"start-up, empty node: {out['startup_empty_ms']} ms (median of {a.reps}: {empty})", flush=True)

        e.start()
        e.api.pool.CreatePool(pb.pool_pb2.CreatePoolRequest(name="p", disk=f"uring://{disk}"), timeout=60)
        t0 = time.monotonic()
        for i in range(a.replicas):
            share = pb.common_pb2.SHARE_PROTOCOL_NVMF if i % 2 == 0 else pb.common_pb2.SHARE_PROTOCOL_NONE
            e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
                name=f"r{i}", pool="p", size=1 << 30, thin=True, share=share), timeout=60)
        dt = time.monotonic() - t0
        out["create_ms_per_replica"] = round(dt * 1000 / a.replicas, 2)
        print(f"created {a.replicas} thin replicas (half shared over NVMe/TCP) in {dt:.1f} s: "
              f"{out['create_ms_per_replica']} ms each", flush=True)
        for how in ("clean", "crash"):
            times = []
            for _ in range(a.reps):
                if how == "clean":
                    e.restart()
                else:
                    e.kill()
                    e.start()
                n = len(e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(), timeout=60).replicas)
                subs = len(e.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(), timeout=60).subsystems)
                assert n == a.replicas and subs == (a.replicas + 1) // 2, (n, subs)
                times.append(e.info.startup_ms)
            out[f"startup_{how}_ms"] = statistics.median(times)
            print(f"start-up with {a.replicas} replicas after a {'SIGTERM' if how == 'clean' else 'SIGKILL'}: "
                  f"{out[f'startup_{how}_ms']} ms (median of {a.reps}: {times})", flush=True)
        e.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
