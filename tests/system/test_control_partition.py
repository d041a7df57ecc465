"""The control plane under network partitions and with a 3-member etcd, against real processes.

One cluster for the module: a tern-agent on the host taking registrations at AGENT (a host-side address
of a veth pair); three etcd members (one cluster) and engines node0 and node1 on the host at DATA (a
second host-side address of the pair); engine node2 in a network namespace of its own at NS (the other
end of the pair). The agent and every engine are given all three etcd members. Two kinds of partition of
node2:

- full: the namespace's end of the pair goes down: node2 reaches nothing and nothing reaches it;
- from the agent only: a blackhole route to AGENT in the namespace: node2 cannot reach the agent nor the
  agent node2, but node2 still reaches etcd and node0's and node1's NVMe/TCP targets, so an old nexus
  there still reaches the other replicas and the record: only the reservations keep it off them.

While node2 is cut off, the test reaches its engine from inside the namespace (`ip netns exec`: its
address is local there). Needs root (ip netns, veth pairs); run otherwise it fails, it does not skip.

What is checked: a replica's node partitioned away and back (degraded writes, offline, online again, a
partial rebuild, every byte equal); the target's node partitioned away, fully or from the agent only
(switch-over to a new generation; a write through the old nexus afterwards neither acknowledged nor on
any current replica; the old nexus removed when node2 returns; node2's replica rejoined and equal to the
others; the nexus record, read back through etcd's history, never written by the old nexus after the
switch-over); and the 3-member etcd losing its leader (volumes created, published, written and
republished, the nexus record written, with a member down and after it is back).
"""
import base64
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest

from control_cluster import AgentError, LocalCluster, child, engine, nexuses, rebuilt
from etcd import EtcdCluster
from io_engine import stubs
from nexus_util import verify_pattern, write_pattern

MiB = 1 << 20
VOL = 20 * MiB  # written over [0, 12 MiB) at first; [12, 16) is what an old nexus tries; [16, 20) stays unwritten
NODES = ["node0", "node1", "node2"]


def _ip(*args, check=True):
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: rc={p.returncode}: {p.stderr.strip()}")
    return p


class Partition:
    """A network namespace joined to the host by a veth pair; cut() and heal() partition it away and back
    (the namespace's end of the pair down / up), cut_agent() / heal_agent() cut it off from the address
    `agent` only (a blackhole route in the namespace). destroy() removes the namespace and the pair."""

    def __init__(self):
        if os.geteuid() != 0:
            pytest.fail("the partition tests need root (ip netns, veth pairs); run the system tests as root")
        tag = os.getpid() % 100000
        self.ns = f"tern-part-{os.getpid()}"
        self.host_if, self.ns_if = f"tpart{tag}h", f"tpart{tag}n"
        used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
        net = next((f"10.231.{x}" for x in [*range(tag % 250, 250), *range(0, tag % 250)] if f"10.231.{x}." not in used), None)
        assert net, "no free 10.231.x.0/24 subnet for the partition tests"
        self.agent, self.ns_addr, self.data = f"{net}.1", f"{net}.2", f"{net}.3"
        self.created = False

    def create(self):
        self.created = True
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.ns)
        _ip("addr", "add", f"{self.agent}/24", "dev", self.host_if)
        _ip("addr", "add", f"{self.data}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        self.exec_ip("addr", "add", f"{self.ns_addr}/24", "dev", self.ns_if)
        self.exec_ip("link", "set", "lo", "up")
        self.exec_ip("link", "set", self.ns_if, "up")
        return self

    def exec_ip(self, *args, check=True):
        return _ip("netns", "exec", self.ns, "ip", *args, check=check)

    def cut(self):
        self.exec_ip("link", "set", self.ns_if, "down")

    def heal(self):
        self.exec_ip("link", "set", self.ns_if, "up")

    def cut_agent(self):
        self.exec_ip("route", "add", "blackhole", f"{self.agent}/32")

    def heal_agent(self):
        self.exec_ip("route", "del", "blackhole", f"{self.agent}/32")

    def heal_all(self):
        self.exec_ip("route", "del", "blackhole", f"{self.agent}/32", check=False)
        self.exec_ip("link", "set", self.ns_if, "up", check=False)

    def destroy(self):
        if not self.created:
            return
        _ip("netns", "del", self.ns, check=False)
        if _ip("link", "show", self.host_if, check=False).returncode == 0:
            _ip("link", "del", self.host_if, check=False)
        assert self.ns not in _ip("netns", "list").stdout, f"network namespace {self.ns} left behind"
        assert _ip("link", "show", self.host_if, check=False).returncode != 0, f"{self.host_if} left behind"


# Runs inside the namespace: WritePattern through an engine's API, the outcome as JSON on stdout.
_WRITER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from tern.engine.v1 import test_pb2, test_pb2_grpc
endpoint, device, offset, length, gen, timeout = sys.argv[2:8]
stub = test_pb2_grpc.TestServiceStub(grpc.insecure_channel(endpoint))
try:
    stub.WritePattern(test_pb2.PatternRequest(device=device, offset=int(offset), length=int(length), generation=int(gen)),
                      timeout=float(timeout))
    print(json.dumps({"ok": True}))
except grpc.RpcError as e:
    print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}))
"""


class NsWrite:
    """A write through an engine in the namespace, from inside it (works while the namespace is cut off)."""

    def __init__(self, part, engine, device, offset, length, gen, timeout):
        out = pathlib.Path(stubs().test_pb2.__file__).parents[3]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(["ip", "netns", "exec", part.ns, sys.executable, "-c", _WRITER, str(out),
                                      engine.endpoint, device, str(offset), str(length), str(gen), str(timeout)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.timeout = timeout
        self.took = None

    def result(self, timeout=None):
        out, err = self.proc.communicate(timeout=self.timeout + 30 if timeout is None else timeout)
        self.took = time.monotonic() - self.t0
        assert self.proc.returncode == 0 and out.strip(), f"the writer in the namespace failed: rc={self.proc.returncode} {err}"
        return json.loads(out.strip().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def part():
    p = Partition()
    try:
        yield p.create()
    finally:
        p.destroy()


@pytest.fixture(scope="module")
def cl(build_dir, tmp_path_factory, part):
    wd = tmp_path_factory.mktemp("partition")
    etcd = EtcdCluster(wd, size=3, host=part.data).start()
    # The cluster stops etcd with everything else (also when it fails to start). A partitioned target's
    # replica is given 30 s before the agent replaces it (8 s elsewhere): here the partition outlasts the
    # switch-over, the writes through both nexuses and the checks made before it heals.
    c = LocalCluster(build_dir, wd, engines=3, agents=1, etcd=etcd, address=part.agent,
                     engine_kw={0: {"address": part.data}, 1: {"address": part.data},
                                2: {"address": part.ns_addr, "netns": part.ns}},
                     agent_flags={"--faulted-child-wait-ms": "30000"})
    try:
        c.part = part
        for e in c.engines:
            c.rest.ok("PUT", f"/v1/pools/p-{e.name}", {"node": e.name, "disk": c.disk(e, "p0")})
        yield c
    finally:
        try:
            part.heal_all()
        finally:
            c.stop()


@pytest.fixture
def healed(cl):
    """The test may partition node2: it is healed again whatever happens, and online before the next test."""
    try:
        yield cl.part
    finally:
        cl.part.heal_all()
        cl.wait_nodes_online(NODES, timeout=30)


# --- helpers -------------------------------------------------------------------------------------------

def vol_id():
    return str(uuid.uuid4())


def checksums(e, device, offset, length):
    return list(e.api.test.Checksum(stubs().test_pb2.PatternRequest(device=device, offset=offset, length=length),
                                    timeout=120).crc_per_mib)


def replica_on(doc, node):
    return next(r["uuid"] for r in doc["replica_details"] if r["node"] == node)


def etcd_revision(cl):
    return int(cl.etcd._post("/v3/kv/range", {"key": _b64("/"), "keys_only": True, "limit": 1})["header"]["revision"])


def key_history(cl, key, since):
    """The values `key` held from revision `since` on, oldest first, as (mod_revision, parsed JSON): the one
    current at `since`, then every later one (etcd keeps its history: nothing compacts it here)."""
    out = []
    rev = etcd_revision(cl)
    while True:
        kvs = cl.etcd._post("/v3/kv/range", {"key": _b64(key), "revision": rev}).get("kvs") or []
        if not kvs:
            break
        mod = int(kvs[0]["mod_revision"])
        out.append((mod, json.loads(base64.b64decode(kvs[0]["value"]))))
        if mod <= since:
            break
        rev = mod - 1
    return out[::-1]


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def moved_from(cl, v, node):
    def moved():
        d = cl.rest.ok("GET", f"/v1/volumes/{v}")
        t = d.get("target")
        return t and t["node"] != node and t["state"] == "published" and d
    return moved


def check_record_after_switch(cl, v, since, current):
    """Every value of the volume's nexus record from revision `since` (the new nexus serving) on was
    written by the new nexus: never a clean shutdown (the volume stays published), never a generation
    lower than the new nexus's first, and the replicas it serves from (`current`) always healthy. A write
    of the old nexus (its retire of the children it lost, its shutdown) would break one of these."""
    hist = key_history(cl, f"/tern/v1/records/{v}", since)
    assert hist, f"no record of {v}"
    first_gen = hist[0][1]["generation"]
    last = 0
    for rev, rec in hist:
        healthy = {c["uuid"] for c in rec["children"] if c["healthy"]}
        assert not rec["clean_shutdown"], f"revision {rev}: the record says clean shutdown while published: {hist}"
        assert rec["generation"] >= max(first_gen, last), f"revision {rev}: the generation went back: {hist}"
        assert set(current) <= healthy, f"revision {rev}: a current replica called unhealthy: {hist}"
        last = rec["generation"]
    return hist


# --- partitions ----------------------------------------------------------------------------------------

def test_engines_advertise_addresses_everyone_can_reach(cl, part):
    nodes = {n["id"]: n for n in cl.rest.ok("GET", "/v1/nodes")}
    assert sorted(nodes) == NODES
    for e in cl.engines:
        n = nodes[e.name]
        assert n["status"] == "online" and n["grpc_endpoint"] == e.endpoint
        assert n["nvmf_endpoint"] == f"{e.address}:{e.nvmf_port}", n
    assert nodes["node2"]["grpc_endpoint"].startswith(part.ns_addr + ":")
    # node2 really runs in the namespace: its engine's network namespace is not ours.
    e2 = engine(cl, "node2")
    assert os.readlink(f"/proc/{e2.proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert pathlib.Path(f"/proc/{e2.proc.pid}/exe").resolve() == pathlib.Path(e2.binary).resolve()
    # A 3-replica volume published on node2 reaches the replicas on the host, and node0's nexus node2's.
    v = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 4 * MiB, "replicas": 3})
    for node in ["node2", "node0"]:
        t = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": node, "republish": True})["target"]
        assert t["node"] == node and t["uri"].startswith(f"nvmf://{engine(cl, node).address}:"), t
        e = engine(cl, node)
        write_pattern(e, stubs(), v, 1, 0, 4 * MiB)
        nx = e.api.nexus.ListNexuses(stubs().nexus_pb2.ListNexusesRequest(uuid=v), timeout=30).nexuses[0]
        assert len(nx.children) == 3 and all(c.synced for c in nx.children), nx
    assert verify_pattern(engine(cl, "node2"), stubs(), replica_on(doc, "node2"), 1, 0, 4 * MiB).ok
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_a_replica_node_partitioned_away_and_back_is_rebuilt_partially(cl, healed):
    """node2 holds a replica (not the target) and is cut off: writes go on degraded, node2 goes offline;
    back within --faulted-child-wait-ms, it comes online, its replica rejoins and copies only what it
    missed, and holds every byte the others hold."""
    pb = stubs()
    v = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": VOL, "replicas": 3})
    cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": "node0"})
    e0, e1, e2 = (engine(cl, n) for n in NODES)
    r0, r2 = replica_on(doc, "node0"), replica_on(doc, "node2")
    write_pattern(e0, pb, v, 1, 0, 12 * MiB)
    t0 = time.monotonic()
    healed.cut()
    write_pattern(e0, pb, v, 2, 0, MiB)  # node2's child stalls (timeout_ms=2000) and is retired under it
    took = time.monotonic() - t0
    assert took < 15, f"a write waited {took:.1f} s for the lost child"
    cl.wait("node2 offline", lambda: cl.node_status("node2") == "offline", timeout=20)
    node = cl.rest.ok("GET", "/v1/nodes/node2")
    assert "no heartbeat" in node["reason"], node
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["status"] == "degraded"
    rec = cl.rest.ok("GET", f"/v1/volumes/{v}/record")
    assert {c["uuid"]: c["healthy"] for c in rec["children"]}[r2] is False, rec
    write_pattern(e0, pb, v, 3, 4 * MiB, MiB)  # still written while node2 is away
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["target"]["node"] == "node0"  # no switch-over for a replica
    healed.heal()
    cl.wait("node2 online", lambda: cl.node_status("node2") == "online", timeout=20)
    c = cl.wait("node2's replica rebuilt", lambda: rebuilt(e0, v, r2), timeout=60)
    assert c.rebuild.kind == "partial", c.rebuild
    assert c.rebuild.copied_bytes <= 4 * MiB, c.rebuild  # what was written while it was away: 2 MiB
    hist = cl.rest.ok("GET", f"/v1/volumes/{v}/rebuild_history")["rebuilds"]
    assert [(h["child"], h["kind"], h["state"]) for h in hist] == [(r2, "partial", "completed")], hist
    got = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert got["status"] == "online" and got["target"]["generation"] == 1, got
    assert len(got["replica_details"]) == 3  # it was not replaced
    # Byte for byte: the pattern where it was written, and the same data as the other replicas throughout.
    for gen, off, length in [(2, 0, MiB), (1, MiB, 3 * MiB), (3, 4 * MiB, MiB), (1, 5 * MiB, 7 * MiB)]:
        r = verify_pattern(e2, pb, r2, gen, off, length)
        assert r.ok, (gen, off, r.mismatch)
    assert checksums(e2, r2, 0, VOL) == checksums(e0, r0, 0, VOL) == checksums(e1, replica_on(doc, "node1"), 0, VOL)
    rec = cl.rest.ok("GET", f"/v1/volumes/{v}/record")
    assert all(c["healthy"] for c in rec["children"]), rec
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def _target_partition(cl, healed, cut, heal, fenced):
    """The target's node (node2) is cut off (`cut`): the volume is served from another node (a new
    generation). A write through the old nexus after that must not reach the current replicas nor be
    acknowledged (`fenced`: node2 still reaches the other replicas and etcd; the reservations alone stop
    it, and it must fail at once). After `heal`, the old nexus is gone from node2, node2's replica rejoins
    the new nexus and holds what the others hold, and the nexus record was never written by the old nexus."""
    pb = stubs()
    v = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": VOL, "replicas": 3, "thin": True})
    w = None
    done = False
    try:
        t = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": "node2"})["target"]
        assert t["generation"] == 1
        e2 = engine(cl, "node2")
        reps = {n: replica_on(doc, n) for n in NODES}
        write_pattern(e2, pb, v, 11, 0, 12 * MiB)
        t0 = time.monotonic()
        cut()
        d = cl.wait("the target moved off node2", moved_from(cl, v, "node2"), timeout=60)
        switch_took = time.monotonic() - t0
        since = etcd_revision(cl)
        gen = d["target"]["generation"]
        assert gen >= 2, d["target"]
        assert cl.rest.ok("GET", "/v1/nodes/node2")["status"] == "offline"
        en = engine(cl, d["target"]["node"])
        other = next(n for n in ["node0", "node1"] if n != en.name)
        current = [reps[en.name], reps[other]]
        nx = en.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=v), timeout=30).nexuses[0]
        assert sorted(c.uuid for c in nx.children) == sorted(current) and nx.resv_key == gen, nx
        write_pattern(en, pb, v, 12, 0, 4 * MiB)
        # The old nexus is still on node2 (nothing could tell it): a write through it, from inside the namespace,
        # to a range nobody wrote before.
        logged = len(e2.log())
        w = NsWrite(healed, e2, v, 12 * MiB, 4 * MiB, 13, timeout=45)
        try:  # (the write reaches the old nexus while node2 is still cut off: it says so, or it is done)
            cl.wait("the old nexus to take the write", lambda: w.proc.poll() is not None or f"nexus {v}" in e2.log()[logged:],
                    timeout=10)
        except AssertionError:
            pass  # it may hold the write without a word: the partition heals under it all the same
        if fenced:
            res = w.result(timeout=60)
            assert not res["ok"], f"the old nexus acknowledged a write after the switch-over: {res}"
            fenced_took = w.took
            # Not one block of it on the current replicas, while node2 is still cut off.
            for n in [en.name, other]:
                e = engine(cl, n)
                assert not verify_pattern(e, pb, reps[n], 13, 12 * MiB, 4 * MiB).ok
                assert checksums(e, reps[n], 12 * MiB, 4 * MiB) == checksums(e, reps[n], 16 * MiB, 4 * MiB), \
                    f"{n}: the old nexus's range is not as never written"
        heal()
        cl.wait("node2 online", lambda: cl.node_status("node2") == "online", timeout=20)
        cl.wait("the old nexus gone from node2", lambda: v not in nexuses(e2), timeout=30)
        res = w.result()
        assert not res["ok"], f"the old nexus acknowledged a write after the switch-over: {res}"
        # The record: only ever the new nexus's from the switch-over on.
        check_record_after_switch(cl, v, since, current)
        cl.wait("node2's replica rejoined and rebuilt", lambda: rebuilt(en, v, reps["node2"]), timeout=60)
        got = cl.rest.ok("GET", f"/v1/volumes/{v}")
        assert got["target"]["node"] == en.name and got["target"]["generation"] == gen and got["status"] == "online", got
        assert sorted(r["uuid"] for r in got["replica_details"]) == sorted(reps.values()), got
        assert nexuses(en) == [v] and v not in nexuses(engine(cl, other))
        check_record_after_switch(cl, v, since, current)
        # The data: the new nexus's write, the first one's, and nothing of the old nexus's, on all three.
        for n in NODES:
            e = engine(cl, n)
            for gen, off, length in [(12, 0, 4 * MiB), (11, 4 * MiB, 8 * MiB)]:
                r = verify_pattern(e, pb, reps[n], gen, off, length)
                assert r.ok, (n, gen, off, r.mismatch)
        sums = {n: checksums(engine(cl, n), reps[n], 0, VOL) for n in NODES}
        assert sums["node2"] == sums["node0"] == sums["node1"], sums
        assert sums["node0"][12:16] == sums["node0"][16:20], "the old nexus's range holds something"
        assert verify_pattern(en, pb, v, 12, 0, 4 * MiB).ok and verify_pattern(en, pb, v, 11, 4 * MiB, 8 * MiB).ok
        # Timing last (the checks above matter more): cut -> node offline (2 s deadline + 1 s probe) -> the
        # next reconcile pass republishes; the fenced nexus fails its write at once.
        assert switch_took < 10, f"switch-over took {switch_took:.1f} s after the partition (node deadline 2 s)"
        if fenced:
            assert fenced_took < 10, f"the fenced nexus took {fenced_took:.1f} s to fail the write"
            assert "took the reservation" in e2.log(), e2.log()[-3000:]
        done = True
    finally:
        if w is not None:
            w.kill()
        healed.heal_all()
        try:
            st, _ = cl.rest.delete(f"/v1/volumes/{v}", timeout=60)
            assert st in (204, 404), st
        except (AssertionError, OSError):
            if done:  # (after a failure, the failure is what the report must show)
                raise


def test_the_target_node_partitioned_away_is_replaced_and_its_nexus_never_writes_again(cl, healed):
    _target_partition(cl, healed, healed.cut, healed.heal, fenced=False)


def test_an_old_nexus_cut_off_from_the_agent_only_is_fenced_by_the_reservations(cl, healed):
    _target_partition(cl, healed, healed.cut_agent, healed.heal_agent, fenced=True)


# --- a 3-member etcd -----------------------------------------------------------------------------------

def _serve_a_volume(cl, gen):
    """Creates a 3-replica volume, publishes it, writes and reads it back, then republishes it on another
    node: each step through the agent, the record written by each nexus. Returns the volume and its record."""
    pb = stubs()
    v = vol_id()

    def put(path, body):
        def done():
            try:
                st, doc = cl.rest.put(path, body, timeout=60)
            except AgentError:  # no agent leads for a moment: its lease may go with etcd's leader
                return False
            assert st in (200, 201, 503), (path, st, doc)  # 503: etcd or the lead unavailable for a moment
            return st in (200, 201)
        return cl.wait(f"PUT {path}", done, timeout=30)
    put(f"/v1/volumes/{v}", {"size": 8 * MiB, "replicas": 3})
    put(f"/v1/volumes/{v}/target", {"node": "node0"})
    e0 = engine(cl, "node0")
    write_pattern(e0, pb, v, gen, 0, 8 * MiB)
    rec1 = cl.etcd.get_json(f"/tern/v1/records/{v}")
    assert rec1 and rec1["generation"] >= 1 and len(rec1["children"]) == 3 and not rec1["clean_shutdown"], rec1
    put(f"/v1/volumes/{v}/target", {"node": "node1", "republish": True})
    e1 = engine(cl, "node1")
    assert verify_pattern(e1, pb, v, gen, 0, 8 * MiB).ok
    rec2 = cl.etcd.get_json(f"/tern/v1/records/{v}")
    assert rec2["generation"] > rec1["generation"] and all(c["healthy"] for c in rec2["children"]), (rec1, rec2)
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["target"]["generation"] == 2
    return v, rec2


def test_a_three_member_etcd_loses_its_leader_and_gets_it_back(cl):
    etcd = cl.etcd
    assert len(etcd.running()) == 3
    members = {m.status()["header"]["member_id"] for m in etcd.members}
    assert len(members) == 3  # one cluster of three, not three clusters of one
    leader = etcd.leader()
    before = leader.status()["header"]["member_id"]
    leader.kill()
    try:
        new = etcd.leader(timeout=30)
        assert new is not leader and new.status()["header"]["member_id"] != before
        cl.wait("an agent leads", lambda: any(a.running() and a.leading() for a in cl.agents), timeout=30)
        cl.wait_nodes_online(NODES, timeout=30)
        v1, rec1 = _serve_a_volume(cl, 31)
    finally:
        leader.start(timeout=30)
    # The member that was away catches up: its own (serializable) read has the record written meanwhile.
    key = _b64(f"/tern/v1/records/{v1}")

    def has_record():
        kvs = leader._post("/v3/kv/range", {"key": key, "serializable": True}).get("kvs") or []
        return kvs and json.loads(base64.b64decode(kvs[0]["value"])) == cl.etcd.get_json(f"/tern/v1/records/{v1}")
    cl.wait("the restarted member has the record", has_record, timeout=30)
    assert len(etcd.running()) == 3
    cl.wait_nodes_online(NODES, timeout=30)
    v2, _ = _serve_a_volume(cl, 32)
    # Whichever member leads now goes too: the cluster goes on with the other two (the restarted one among them).
    current = etcd.leader()
    current.kill()
    try:
        etcd.leader(timeout=30)
        cl.wait("an agent leads", lambda: any(a.running() and a.leading() for a in cl.agents), timeout=30)
        v3, _ = _serve_a_volume(cl, 33)
    finally:
        current.start(timeout=30)
    for v, gen in [(v1, 31), (v2, 32), (v3, 33)]:
        assert verify_pattern(engine(cl, "node1"), stubs(), v, gen, 0, 8 * MiB).ok
        cl.wait(f"{v} destroyed", lambda: cl.rest.delete(f"/v1/volumes/{v}", timeout=60)[0] == 204, timeout=30)
        assert not [k for k in cl.etcd_keys() if v in k]
