#!/usr/bin/env python3
"""The control plane, measured on a local cluster (scripts/cluster.py; release build): etcd, two agents
(a leader and a standby) and four io-engines on this machine.

Rows:
  create+publish   a 3-replica thin volume created, then published (NVMe/TCP): latency p50/p99, sequential
  create (x8)      eight creates at once: volumes/s
  destroy          latency p50/p99 (published volumes: the nexus goes first)
  failover kill    the leading agent killed (-9): until the standby leads and answers
  failover stop    the leading agent stopped (SIGTERM: it resigns): until the standby leads
  agent restart    every agent stopped, one started: until it serves (leads, specs loaded, GET /v1/volumes)
  snapshot         a published 3-replica volume snapshotted (through its nexus): latency p50/p99
  restore+publish  a volume restored from that snapshot (3 clones) and published: latency p50/p99
  switch-over      the engine serving a published volume killed (-9): until the volume is published again
                   on another node (node deadline + probe + republish)
  redundancy       ... and until a replacement replica on the fourth node is rebuilt (faulted-child wait
                   set to --wait-ms for the bench, plus a full rebuild of the volume)

Usage: bench/control.py [--build build/release] [--volumes 30] [--wait-ms 3000]"""
import argparse
import concurrent.futures
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
from cluster import Cluster  # noqa: E402

MiB = 1 << 20


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait(cond, timeout=120, what="condition"):
    t0 = time.monotonic()
    while True:
        v = cond()
        if v:
            return time.monotonic() - t0, v
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def leading(port):
    try:
        import json
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/cluster", timeout=1) as r:
            return json.loads(r.read())["leading"]
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(pathlib.Path(__file__).resolve().parents[1] / "build/release"))
    ap.add_argument("--volumes", type=int, default=30)
    ap.add_argument("--wait-ms", type=int, default=3000)
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tern-bench-control.", dir="/var/tmp"))
    c = Cluster(work, a.build)
    rows = []
    try:
        c.up(4, 1 << 30, standby=True, agent_args=["--faulted-child-wait-ms", str(a.wait_ms)])
        create, publish, destroy = [], [], []
        ids = []
        for _ in range(a.volumes):
            v = str(uuid.uuid4())
            t0 = time.monotonic()
            c.ok("PUT", f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 3, "thin": True})
            t1 = time.monotonic()
            c.ok("PUT", f"/v1/volumes/{v}/target", {})
            t2 = time.monotonic()
            create.append(t1 - t0)
            publish.append(t2 - t1)
            ids.append(v)
        both = [x + y for x, y in zip(create, publish)]
        rows.append(("create (3 replicas)", f"p50 {pct(create, 50) * 1e3:.0f} ms, p99 {pct(create, 99) * 1e3:.0f} ms"))
        rows.append(("publish", f"p50 {pct(publish, 50) * 1e3:.0f} ms, p99 {pct(publish, 99) * 1e3:.0f} ms"))
        rows.append(("create+publish", f"p50 {pct(both, 50) * 1e3:.0f} ms, p99 {pct(both, 99) * 1e3:.0f} ms ({a.volumes} volumes)"))
        for v in ids:
            t0 = time.monotonic()
            c.ok("DELETE", f"/v1/volumes/{v}")
            destroy.append(time.monotonic() - t0)
        rows.append(("destroy (published)", f"p50 {pct(destroy, 50) * 1e3:.0f} ms, p99 {pct(destroy, 99) * 1e3:.0f} ms"))
        par = [str(uuid.uuid4()) for _ in range(8)]
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda v: c.ok("PUT", f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 3, "thin": True}), par))
        took = time.monotonic() - t0
        rows.append(("create x8 at once", f"{len(par) / took:.1f} volumes/s ({took:.2f} s)"))
        for v in par:
            c.ok("DELETE", f"/v1/volumes/{v}")

        # Leader failover: kill -9 (the standby waits out the lease), then a clean stop (at once).
        standby_port = c.state["standby"]["rest_port"]
        agent_port = c.state["agent"]["rest_port"]
        t0 = time.monotonic()
        c.kill_process("agent")
        wait(lambda: leading(standby_port), 30, "the standby to lead")
        rows.append(("failover, leader kill -9", f"{time.monotonic() - t0:.2f} s (lease TTL 3 s)"))
        c.start_agent("agent", lead=False)
        wait(lambda: c.rest("GET", "/v1/cluster")[0] == 200, 30, "the agent to answer")  # it runs, as a standby
        t0 = time.monotonic()
        os.kill(c.state["standby"]["pid"], signal.SIGTERM)  # the leader resigns first thing on its way out
        wait(lambda: leading(agent_port), 30, "the agent to lead again")
        rows.append(("failover, leader SIGTERM", f"{time.monotonic() - t0:.2f} s"))
        c.stop_process("standby")
        # Agent restart: with no agent running, one started until it serves.
        c.stop_process("agent")
        t0 = time.monotonic()
        c.start_agent("agent")
        wait(lambda: c.rest("GET", "/v1/volumes")[0] == 200, 30, "the agent to serve")
        rows.append(("agent restart to serving", f"{time.monotonic() - t0:.2f} s (process start, campaign, specs loaded, "
                                                 f"engines re-registered)"))
        c.start_agent("standby")

        # Snapshots of a published volume, and restores from one.
        v = str(uuid.uuid4())
        c.ok("PUT", f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 3, "thin": True})
        c.ok("PUT", f"/v1/volumes/{v}/target", {})
        snaps, restores, made = [], [], []
        for _ in range(10):
            s = str(uuid.uuid4())
            t0 = time.monotonic()
            c.ok("PUT", f"/v1/volumes/{v}/snapshots/{s}", {})
            snaps.append(time.monotonic() - t0)
            r = str(uuid.uuid4())
            t0 = time.monotonic()
            c.ok("PUT", f"/v1/volumes/{r}", {"snapshot": s, "replicas": 3})
            c.ok("PUT", f"/v1/volumes/{r}/target", {})
            restores.append(time.monotonic() - t0)
            made.append((s, r))
        rows.append(("snapshot (3 replicas, published)", f"p50 {pct(snaps, 50) * 1e3:.0f} ms, p99 {pct(snaps, 99) * 1e3:.0f} ms"))
        rows.append(("restore (3 clones) + publish", f"p50 {pct(restores, 50) * 1e3:.0f} ms, p99 {pct(restores, 99) * 1e3:.0f} ms "
                                                     f"(in sync at once: no rebuild)"))
        for s, r in made:
            c.ok("DELETE", f"/v1/volumes/{r}")
            c.ok("DELETE", f"/v1/snapshots/{s}")
        c.ok("DELETE", f"/v1/volumes/{v}")

        # Switch-over and back to full redundancy.
        v = str(uuid.uuid4())
        c.ok("PUT", f"/v1/volumes/{v}", {"size": 256 * MiB, "replicas": 3})
        doc = c.ok("PUT", f"/v1/volumes/{v}/target", {})
        node = doc["target"]["node"]
        holders = {r["node"] for r in doc["replica_details"]}
        c.kill(node)
        t0 = time.monotonic()
        t, _ = wait(lambda: (lambda d: d.get("target", {}).get("node") not in (None, node) and
                             d["target"]["state"] == "published")(c.ok("GET", f"/v1/volumes/{v}")), 60, "switch-over")
        rows.append(("switch-over after kill -9", f"{t:.2f} s (node deadline 3 s after its last heartbeat + probe + republish)"))

        def redundant():
            d = c.ok("GET", f"/v1/volumes/{v}")
            kids = d.get("nexus", {}).get("children", [])
            nodes = {r["node"] for r in d["replica_details"]}
            return len(kids) == 3 and all(k["synced"] for k in kids) and nodes - holders
        wait(redundant, 180, "full redundancy")
        rows.append(("full redundancy again", f"{time.monotonic() - t0:.2f} s (wait {a.wait_ms / 1000:.0f} s + new "
                                                  f"replica + full rebuild of 256 MiB)"))
        c.start(node)
        c.ok("DELETE", f"/v1/volumes/{v}")
    finally:
        c.down()
    print("\n| row | result |\n|---|---|")
    for name, val in rows:
        print(f"| {name} | {val} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
