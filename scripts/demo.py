#!/usr/bin/env python3
"""The main job: a three-node tern cluster on this machine, and what it does for a volume when nodes die.

  1. start etcd, the core agent and three io-engines, each with a file-backed pool (scripts/cluster.py);
  2. create a 3-replica volume and publish it (NBD), put ext4 on it (nbdfuse + a loop device), write files
     and record their checksums;
  3. kill -9 the engine of one replica while files are being written: the volume runs degraded;
  4. bring that engine back: the agent onlines its replica, which is rebuilt from the dirty-region log
     (a partial rebuild: only what it missed), with progress;
  5. stop the application, kill -9 the engine serving the volume: the agent republishes it on another node;
  6. mount it from there and verify every file; tear everything down; report.

Usage: scripts/demo.py [--build build/release] [--dir /var/tmp/tern-demo.XXXX]"""
import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cluster import Cluster, ClusterError  # noqa: E402

MiB = 1 << 20
VOLUME = "6a7e5c3e-0d1f-4c55-9a7b-3e6f1d2c4b5a"


def step(msg):
    print(f"\n-- {msg}", flush=True)


def run(args, timeout=120, check=True):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, args))}: rc={p.returncode}\n{p.stdout}{p.stderr}")
    return p


class Mount:
    """nbdfuse exposes the NBD export as a file, a loop device makes it a disk, ext4 is mounted on it."""

    def __init__(self, work, uri, name):
        self.work, self.uri = work, uri
        self.fuse = work / f"fuse-{name}"
        self.mnt = work / f"mnt-{name}"
        self.proc = self.loop = None

    def attach(self):
        self.fuse.mkdir()
        self.mnt.mkdir()
        pidfile = self.work / f"{self.fuse.name}.pid"
        self.proc = subprocess.Popen(["nbdfuse", "-P", str(pidfile), str(self.fuse / "disk"), self.uri],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"nbdfuse did not come up on {self.uri}")
            time.sleep(0.05)
        self.loop = run(["losetup", "--find", "--show", str(self.fuse / "disk")]).stdout.strip()
        return self.loop

    def mount(self):
        run(["mount", self.loop, str(self.mnt)])
        return self.mnt

    def detach(self):
        subprocess.run(["umount", str(self.mnt)], capture_output=True, timeout=60)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], capture_output=True, timeout=60)
            self.loop = None
        if self.proc:
            subprocess.run(["umount", str(self.fuse)], capture_output=True, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self.proc = None


def write_files(root, prefix, count, sums, seed):
    for i in range(count):
        rel = f"{prefix}/file{i:03d}.bin"
        data = hashlib.shake_256(f"{seed}-{i}".encode()).digest(256 * 1024 + (i * 37 % 9) * 65536)
        path = root / rel
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sums[rel] = hashlib.sha256(data).hexdigest()


def describe(c):
    subprocess.run([str(c.build / "tools/ternctl/ternctl"), "--agent", c.agent_url, "describe", "volume", VOLUME], timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(pathlib.Path(__file__).resolve().parents[1] / "build/release"))
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    for tool in ("nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "etcd"):
        if not shutil.which(tool):
            print(f"demo: '{tool}' is missing (scripts/install-deps.sh installs it)", file=sys.stderr)
            return 2
    if not os.path.exists("/dev/fuse"):
        print("demo: /dev/fuse is missing: nbdfuse cannot mount the volume", file=sys.stderr)
        return 2
    work = pathlib.Path(a.dir or tempfile.mkdtemp(prefix="tern-demo.", dir="/var/tmp"))
    c = Cluster(work / "cluster", a.build)
    mounts = []
    report = {}
    try:
        print("== tern main job: a three-node cluster, a 3-replica volume with ext4 on it, and two node failures")
        step("1. cluster up: etcd, the core agent, three io-engines with a 1 GiB file-backed pool each")
        t0 = time.monotonic()
        c.up(3, 1 << 30)
        print(f"up in {time.monotonic() - t0:.1f} s; agent REST at {c.agent_url}")
        run_ternctl(c, "get", "nodes")
        run_ternctl(c, "get", "pools")

        step("2. a 256 MiB volume with 3 replicas (thin), published over NBD; ext4 on it; 24 files written")
        t0 = time.monotonic()
        c.ok("PUT", f"/v1/volumes/{VOLUME}", {"size": 256 * MiB, "replicas": 3, "thin": True})
        vol = c.ok("PUT", f"/v1/volumes/{VOLUME}/target", {"protocol": "nbd"})
        report["create_publish_s"] = time.monotonic() - t0
        target = vol["target"]["node"]
        print(f"created and published in {report['create_publish_s']:.2f} s: nexus on {target}, {vol['target']['uri']}")
        m = Mount(work, vol["target"]["uri"], "a")
        mounts.append(m)
        dev = m.attach()
        run(["mkfs.ext4", "-q", "-F", dev], timeout=240)
        root = m.mount()
        sums = {}
        write_files(root, "before", 24, sums, "a")
        describe(c)

        victim = next(r["node"] for r in vol["replica_details"] if r["node"] != target)
        step(f"3. kill -9 the engine of a replica ({victim}) while 24 more files are written")
        writer = threading.Thread(target=write_files, args=(root, "during", 24, sums, "b"))
        writer.start()
        time.sleep(0.3)
        c.kill(victim)
        writer.join(timeout=300)
        run(["sync"])
        deadline = time.monotonic() + 60
        while c.ok("GET", f"/v1/volumes/{VOLUME}")["status"] != "degraded":
            if time.monotonic() > deadline:
                raise ClusterError("the volume did not show degraded")
            time.sleep(0.2)
        print(f"the application kept writing: {len(sums)} files, no error; the volume is degraded:")
        describe(c)

        step(f"4. {victim} comes back: its replica is onlined and rebuilt from the dirty-region log")
        t0 = time.monotonic()
        c.start(victim)
        away = next(r["uuid"] for r in vol["replica_details"] if r["node"] == victim)
        last = ""
        while True:
            v = c.ok("GET", f"/v1/volumes/{VOLUME}")
            ch = next((x for x in v.get("nexus", {}).get("children", []) if x["uuid"] == away), None)
            r = ch.get("rebuild") if ch else None
            if r:
                pct = 100.0 * r["done_bytes"] / r["total_bytes"] if r["total_bytes"] else 100.0
                line = f"   rebuild {r['kind']:7} {r['state']:9} [{'#' * int(pct / 5):20}] {pct:5.1f}%  {r['copied_bytes'] / MiB:.1f} MiB copied"
                if line != last:
                    print(line, flush=True)
                    last = line
                if r["state"] == "completed" and ch["synced"]:
                    report["rebuild"] = dict(r, seconds=time.monotonic() - t0)
                    break
                if r["state"] == "failed":
                    raise ClusterError(f"the rebuild failed: {r}")
            if time.monotonic() - t0 > 120:
                raise ClusterError("the replica was not rebuilt within 120 s")
            time.sleep(0.1)
        print(f"rebuilt in {report['rebuild']['seconds']:.1f} s: {report['rebuild']['kind']}, "
              f"{report['rebuild']['copied_bytes'] / MiB:.1f} MiB copied of a {256} MiB volume")
        describe(c)

        step(f"5. the application stops (unmount); kill -9 the engine serving the volume ({target})")
        m.detach()
        t0 = time.monotonic()
        c.kill(target)
        while True:
            v = c.ok("GET", f"/v1/volumes/{VOLUME}")
            t = v.get("target")
            if t and t["node"] != target and t["state"] == "published":
                break
            if time.monotonic() - t0 > 60:
                raise ClusterError(f"the volume was not republished within 60 s: {t}")
            time.sleep(0.1)
        report["switchover_s"] = time.monotonic() - t0
        print(f"republished on {t['node']} {report['switchover_s']:.1f} s after the kill (generation {t['generation']}): {t['uri']}")
        describe(c)

        step(f"6. mount it from {t['node']}: e2fsck, then every file checked")
        m2 = Mount(work, t["uri"], "b")
        mounts.append(m2)
        dev = m2.attach()
        p = run(["e2fsck", "-fn", dev], timeout=240, check=False)
        report["fsck"] = p.returncode == 0
        print("e2fsck -fn: " + ("clean" if p.returncode == 0 else f"PROBLEMS\n{p.stdout}{p.stderr}"))
        root = m2.mount()
        bad = [rel for rel, h in sums.items() if hashlib.sha256((root / rel).read_bytes()).hexdigest() != h]
        report["files"], report["bad"] = len(sums), bad
        print(f"{len(sums) - len(bad)} of {len(sums)} files intact" + (f"; BAD: {bad}" if bad else ""))
        m2.detach()

        step(f"7. {target} comes back (its replica rejoins), the volume is destroyed, the cluster goes down")
        c.start(target)
        old = next(r["uuid"] for r in vol["replica_details"] if r["node"] == target)
        deadline = time.monotonic() + 120
        while True:
            v = c.ok("GET", f"/v1/volumes/{VOLUME}")
            ch = next((x for x in v.get("nexus", {}).get("children", []) if x["uuid"] == old), None)
            if ch and ch["synced"]:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"{target}'s replica did not rejoin: {ch}")
            time.sleep(0.2)
        print(f"{target}'s replica rejoined ({ch['rebuild']['kind']} rebuild, {ch['rebuild']['copied_bytes'] / MiB:.1f} MiB)")
        c.ok("DELETE", f"/v1/volumes/{VOLUME}")
        left = {e["name"]: len(engine_replicas(c, e["name"])) for e in c.state["engines"]}
        report["leftover_replicas"] = sum(left.values())
        print(f"volume destroyed; replicas left on the engines: {report['leftover_replicas']}")
    except (ClusterError, subprocess.SubprocessError, OSError) as e:
        print(f"\ndemo: FAILED: {e}", file=sys.stderr)
        for m in mounts:
            m.detach()
        c.down(keep=True)
        print(f"logs kept in {work}", file=sys.stderr)
        return 1
    unclean = c.down()
    shutil.rmtree(work, ignore_errors=True)
    r = report["rebuild"]
    ok = report["fsck"] and not report["bad"] and not unclean and report["leftover_replicas"] == 0 and r["kind"] == "partial"
    print("\n== report")
    print(f"create + publish a 3-replica volume: {report['create_publish_s']:.2f} s")
    print(f"replica back after kill -9: {r['kind']} rebuild, {r['copied_bytes'] / MiB:.1f} MiB copied of 256 MiB, "
          f"{r['seconds']:.1f} s")
    print(f"serving engine killed: volume republished on another node in {report['switchover_s']:.1f} s")
    print(f"files: {report['files'] - len(report['bad'])}/{report['files']} intact, e2fsck {'clean' if report['fsck'] else 'NOT clean'}; "
          f"teardown {'clean' if not unclean else 'UNCLEAN: ' + ', '.join(unclean)}")
    print(f"== main job: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def run_ternctl(c, *args):
    subprocess.run([str(c.build / "tools/ternctl/ternctl"), "--agent", c.agent_url, *args], timeout=60)


def engine_replicas(c, name):
    e = c.engine(name)
    p = subprocess.run([str(c.build / "tools/ternctl/ternctl"), "--engine", f"127.0.0.1:{e['grpc']}", "replica", "list", "-o",
                        "json"], capture_output=True, text=True, timeout=60)
    import json
    return json.loads(p.stdout).get("replicas", []) if p.returncode == 0 else []


if __name__ == "__main__":
    sys.exit(main())
