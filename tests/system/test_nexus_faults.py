"""Nexus faults across real engines: one etcd and three io-engines (file-backed pools on loopback), the
nexus on the first engine, remote children over NVMe/TCP.

- etcd stopped while a child's retire must be recorded: host writes are held, then fail when the record
  cannot be written within the persist timeout, the nexus shuts itself down, and the record (never
  rewritten) and the replicas agree on every acknowledged write.
- ENOSPC on a thin child: only that child is faulted (reason no_space), the volume stays degraded and the
  host's writes succeed; the child comes back out of sync once its pool has room again.

One etcd and one set of engines for the module (each test builds its own nexus on fresh replicas)."""
import base64
import socket
import threading
import time
import uuid

import grpc
import pytest

from conftest import make_file
from etcd import Etcd
from io_engine import EngineFactory
from nexus_util import nexus_of, required_child_bytes, verify_pattern as verify, write_pattern as pattern
from nvme_tcp import wait_until as wait_for

MiB = 1 << 20
# The nexus's persist timeout (the engine's --nexus-persist-timeout-ms; 30 s by default).
PERSIST_TIMEOUT_S = 6.0



def without_writer(rec):
    """The record without its writer token (NexusRecord::writer, random per nexus instance)."""
    assert rec.get("writer", 0) > 0, rec
    return {k: v for k, v in rec.items() if k != "writer"}

def etcd_kv(etcd, key):
    """The key's raw entry (value and revisions) from etcd's v3 JSON gateway, or None."""
    r = etcd._post("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
    kvs = r.get("kvs") or []
    return kvs[0] if kvs else None


class Call(threading.Thread):
    """A blocking gRPC call on its own thread: .ok / .error once done, .ended (monotonic) when it ended."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.ok, self.error, self.ended = fn, None, None, None
        self.start()

    def run(self):
        try:
            self.fn()
            self.ok = True
        except grpc.RpcError as e:
            self.ok, self.error = False, e
        self.ended = time.monotonic()


@pytest.fixture(scope="module")
def cluster(build_dir, tmp_path_factory):
    wd = tmp_path_factory.mktemp("nexus-faults")
    etcd = Etcd(wd).start()
    f = EngineFactory(build_dir, wd)
    try:
        engines = []
        for i in range(3):
            disk = make_file(wd / f"pool{i}.img", 512 * MiB)
            engines.append(f(name=f"node{i}", pools=[(f"p{i}", f"uring://{disk}")],
                             extra_args=["--etcd", etcd.endpoint, "--etcd-timeout-ms", "500",
                                         "--nexus-persist-timeout-ms", str(int(PERSIST_TIMEOUT_S * 1000))]))
        yield etcd, engines, wd
    finally:
        try:
            f.stop_all()
        finally:
            etcd.stop()


def child_uri(replica, local):
    if local:
        return f"bdev:///{replica.uuid}?uuid={replica.uuid}"
    return f"{replica.share.uri}?uuid={replica.uuid}&timeout_ms=2000&ctrl_loss_tmo_s=2&reconnect_delay_ms=100"


def test_etcd_down_holds_io_then_the_nexus_shuts_down_and_nothing_is_acknowledged_wrongly(cluster, pb):
    """etcd is stopped (the process gone, not paused), then the engine of child 1 is killed, then the host
    writes through the nexus. The write reached children 0 and 2 but not 1, so it may only be acknowledged
    once child 1's retire is in the record; the record cannot be written, so:

    - the write is held, not failed and not acknowledged, for the whole persist timeout (and a second
      write, submitted while the nexus is frozen, is held too);
    - then both FAIL (a path error) and the nexus reports SHUTDOWN; a write after that fails at once;
    - the record in etcd was never rewritten (same mod_revision as before etcd stopped): it still says
      every child is healthy, clean_shutdown false.

    "Nothing acknowledged wrongly": the record says every child holds every acknowledged write. That
    stays true only if no write is acknowledged that child 1 lacks. The test shows it both ways: from the
    host (every write after the kill failed) and from the replicas — child 1 holds generation 21, the
    last acknowledged write, over the whole range; children 0 and 2 additionally hold the failed
    generation 22 in [0, 1 MiB) (data a host never had confirmed, as after any crash mid-write), and the
    held write (generation 23) reached no child. Had the nexus acknowledged generation 22, the write
    would not have raised, and the record — still saying child 1 is healthy — would point the control
    plane at a replica missing an acknowledged write."""
    etcd, engines, wd = cluster
    R, C, N = pb.replica_pb2, pb.common_pb2, pb.nexus_pb2
    vol_bytes = 8 * MiB
    vol = str(uuid.uuid4())
    key = f"/tern/test/volume/{vol}/nexus"
    reps, uris = [], []
    for i in range(3):
        r = engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"e-{vol[:8]}-{i}", pool=f"p{i}", size=required_child_bytes(vol_bytes), thin=False,
            share=C.SHARE_PROTOCOL_NONE if i == 0 else C.SHARE_PROTOCOL_NVMF), timeout=60)
        reps.append(r.uuid)
        uris.append(child_uri(r, i == 0))
    engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=vol_bytes, children=uris,
                                                          persistence_key=key), timeout=60)
    writes = []
    try:
        # Acknowledged while every child is healthy: every child holds generation 21 in [0, 2 MiB).
        pattern(engines[0], pb, vol, 21, 0, 2 * MiB)
        healthy = {"clean_shutdown": False, "generation": 1, "children": [{"uuid": r, "healthy": True} for r in reps]}
        assert without_writer(etcd.get_json(key)) == healthy
        before = etcd_kv(etcd, key)

        etcd.stop()  # the process is gone (not SIGSTOPped): every put is refused at once
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", etcd.client_port), timeout=5).close()
        engines[1].kill()
        t0 = time.monotonic()
        a = Call(lambda: pattern(engines[0], pb, vol, 22, 0, MiB))
        writes.append(a)
        # The retire has begun once child 1 shows faulted: the nexus froze new I/O before marking it.
        def child1_faulted():
            n = nexus_of(engines[0], pb, vol)
            return n if n.children[1].state == N.CHILD_STATE_FAULTED else None

        nx = wait_for("child 1 to be marked faulted", child1_faulted, 20)
        assert nx.state == N.NEXUS_STATE_DEGRADED, N.NexusState.Name(nx.state)
        assert [c.state for c in nx.children] == [N.CHILD_STATE_ONLINE, N.CHILD_STATE_FAULTED, N.CHILD_STATE_ONLINE]
        assert a.is_alive(), f"the write ended (ok={a.ok}, {a.error}) before its child's retire was recorded"
        b = Call(lambda: pattern(engines[0], pb, vol, 23, MiB, MiB))
        writes.append(b)
        # Held, neither acknowledged nor failed, until shortly before the persist timeout can have passed
        # (it started after t0).
        a.join(timeout=max(0.0, t0 + PERSIST_TIMEOUT_S - 3 - time.monotonic()))
        assert a.is_alive(), (f"the write ended {a.ended - t0:.1f} s after the kill (ok={a.ok}, {a.error}) "
                              f"although the retire could not be recorded and the timeout is {PERSIST_TIMEOUT_S} s")
        assert b.is_alive(), f"the write submitted while frozen ended (ok={b.ok}, {b.error})"
        assert nexus_of(engines[0], pb, vol).state == N.NEXUS_STATE_DEGRADED
        # Then it fails: not acknowledged unrecorded.
        a.join(timeout=20)
        b.join(timeout=20)
        assert not a.is_alive() and not b.is_alive(), "the writes are still held after the persist timeout"
        assert a.ok is False, "the write was ACKNOWLEDGED although child 1's retire was never recorded"
        assert b.ok is False, "the held write was ACKNOWLEDGED although child 1's retire was never recorded"
        assert a.error.code() == grpc.StatusCode.UNAVAILABLE, a.error  # a path error (ESHUTDOWN)
        assert b.error.code() == grpc.StatusCode.UNAVAILABLE, b.error
        assert a.ended - t0 >= PERSIST_TIMEOUT_S - 0.5, f"failed after {a.ended - t0:.1f} s, before the timeout"
        nx = nexus_of(engines[0], pb, vol)
        assert nx.state == N.NEXUS_STATE_SHUTDOWN, N.NexusState.Name(nx.state)
        # Shut down: nothing more is taken, and nothing is held for ever either (a held write would end in
        # DEADLINE_EXCEEDED here).
        with pytest.raises(grpc.RpcError) as ei:
            engines[0].api.test.WritePattern(pb.test_pb2.PatternRequest(device=vol, offset=2 * MiB, length=MiB,
                                                                        generation=24), timeout=10)
        assert ei.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, ei.value

        # etcd back: the record is the one written before the fault, untouched.
        etcd.start()
        assert without_writer(etcd.get_json(key)) == healthy
        after = etcd_kv(etcd, key)
        assert after["mod_revision"] == before["mod_revision"], (before, after)

        # The replicas against the record ("every child holds every acknowledged write").
        engines[1].start()
        v = verify(engines[1], pb, reps[1], 21, 0, 2 * MiB)
        assert v.ok, f"the killed child lacks an acknowledged write: {v.mismatch}"
        for i in (0, 2):
            v = verify(engines[i], pb, reps[i], 22, 0, MiB)
            assert v.ok, f"child {i}: the failed write did not reach it, the test shows nothing: {v.mismatch}"
            v = verify(engines[i], pb, reps[i], 21, MiB, MiB)
            assert v.ok, f"child {i}: the write held while frozen reached it: {v.mismatch}"
    finally:
        for w in writes:
            w.join(timeout=60)
        if etcd.proc is None:
            etcd.start()
        if not engines[1].running():
            engines[1].start()
        engines[0].api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
    # Destroying the shut-down nexus wrote nothing either.
    assert etcd_kv(etcd, key)["mod_revision"] == before["mod_revision"]
    for i, r in enumerate(reps):
        engines[i].api.replica.DestroyReplica(R.ReplicaRef(uuid=r), timeout=60)


def test_enospc_on_a_thin_child_faults_only_that_child(cluster, pb):
    """Three children: thick replicas on engines 0 (local) and 1, and on engine 2 a THIN replica on a 64 MiB
    pool — too small for the 96 MiB volume. Writing the whole volume fills that pool part way: the thin
    child's write fails with ENOSPC (carried over NVMe/TCP as Capacity Exceeded); the nexus retires that
    child alone, reason no_space, and records it unhealthy; the volume is degraded, not faulted, and
    every host write succeeds (the other two hold it) and reads back. The thin child holds the volume
    up to where its pool ran out. Then the pool's file grows, GrowPool makes the room usable, and
    OnlineChild brings the child back — online, out of sync (not healthy in the record until a rebuild),
    taking writes again, also into newly allocated clusters."""
    etcd, engines, wd = cluster
    R, C, N, P = pb.replica_pb2, pb.common_pb2, pb.nexus_pb2, pb.pool_pb2
    vol_bytes = 96 * MiB
    vol = str(uuid.uuid4())
    key = f"/tern/test/volume/{vol}/nexus"
    small_img = make_file(wd / "small.img", 64 * MiB)
    small = engines[2].api.pool.CreatePool(P.CreatePoolRequest(name="small", disk=f"uring://{small_img}"), timeout=60)
    assert small.capacity < required_child_bytes(vol_bytes), small
    created = []
    nexus = False
    try:
        for i, pool, thin in ((0, "p0", False), (1, "p1", False), (2, "small", True)):
            r = engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
                name=f"n-{vol[:8]}-{i}", pool=pool, size=required_child_bytes(vol_bytes), thin=thin,
                share=C.SHARE_PROTOCOL_NONE if i == 0 else C.SHARE_PROTOCOL_NVMF), timeout=60)
            created.append((engines[i], r))
        reps = [r.uuid for _, r in created]
        nx = engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(
            uuid=vol, size=vol_bytes, children=[child_uri(r, i == 0) for i, (_, r) in enumerate(created)],
            persistence_key=key, no_auto_rebuild=True), timeout=60)  # (rebuilds: test_nexus.py)
        nexus = True
        assert nx.state == N.NEXUS_STATE_ONLINE

        # The whole volume: the host sees success although the thin child ran out of space part way.
        pattern(engines[0], pb, vol, 31, 0, vol_bytes)
        nx = nexus_of(engines[0], pb, vol)
        states = [(N.ChildState.Name(c.state), N.ChildReason.Name(c.reason)) for c in nx.children]
        assert states == [("CHILD_STATE_ONLINE", "CHILD_REASON_NONE"), ("CHILD_STATE_ONLINE", "CHILD_REASON_NONE"),
                          ("CHILD_STATE_FAULTED", "CHILD_REASON_NO_SPACE")], states
        assert nx.state == N.NEXUS_STATE_DEGRADED, N.NexusState.Name(nx.state)
        assert without_writer(etcd.get_json(key)) == {"clean_shutdown": False, "generation": 2, "children": [
            {"uuid": r, "healthy": ok} for r, ok in zip(reps, (True, True, False))]}
        v = verify(engines[0], pb, vol, 31, 0, vol_bytes)
        assert v.ok, v.mismatch
        v = verify(engines[1], pb, reps[1], 31, 0, vol_bytes)
        assert v.ok, f"the other remote child: {v.mismatch}"
        # The pool really is full, and the thin child holds the volume up to where it ran out (its labels
        # took one cluster at the end at create).
        pool = engines[2].api.pool.ListPools(P.ListPoolsRequest(name="small"), timeout=30).pools[0]
        assert pool.used == pool.capacity, pool
        filled = pool.capacity - pool.cluster_size
        assert 0 < filled < vol_bytes
        v = verify(engines[2], pb, reps[2], 31, 0, filled)
        assert v.ok, f"the thin child before it ran out: {v.mismatch}"
        assert not verify(engines[2], pb, reps[2], 31, filled, pool.cluster_size).ok, \
            "the thin child holds data past the space its pool had"

        # Room again: the pool's file grows, the pool takes it, the child comes back out of sync.
        with open(small_img, "r+b") as f:
            f.truncate(128 * MiB)
        grown = engines[2].api.pool.GrowPool(P.PoolRef(name="small"), timeout=60)
        assert grown.capacity > small.capacity + 32 * MiB, grown
        nx = engines[0].api.nexus.OnlineChild(N.ChildRef(uuid=vol, child_uuid=reps[2]), timeout=60)
        c2 = nx.children[2]
        assert (c2.state, c2.reason, c2.synced) == (N.CHILD_STATE_ONLINE, N.CHILD_REASON_NONE, False), c2
        assert nx.state == N.NEXUS_STATE_DEGRADED  # not healthy until rebuilt
        assert etcd.get_json(key)["children"][2] == {"uuid": reps[2], "healthy": False}
        # It takes writes again: over clusters it had and clusters it allocates now.
        lo, n = filled - 8 * MiB, 16 * MiB
        pattern(engines[0], pb, vol, 32, lo, n)
        nx = nexus_of(engines[0], pb, vol)
        assert [c.state for c in nx.children] == [N.CHILD_STATE_ONLINE] * 3, nx
        v = verify(engines[2], pb, reps[2], 32, lo, n)
        assert v.ok, f"the child back online: {v.mismatch}"
        assert verify(engines[0], pb, vol, 32, lo, n).ok
        assert verify(engines[0], pb, vol, 31, 0, lo).ok
    finally:
        if nexus:
            engines[0].api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
        for e, r in created:
            e.api.replica.DestroyReplica(R.ReplicaRef(uuid=r.uuid), timeout=60)
        engines[2].api.pool.DestroyPool(P.DestroyPoolRequest(name="small", force=True), timeout=60)
