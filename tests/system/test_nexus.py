"""The nexus across real engines: one etcd, three io-engines with file-backed pools on loopback, a nexus on
the first mirroring to a local replica and to replicas on the other two over NVMe/TCP, published to a host
(our initiator). Mirror integrity (every child holds what the host wrote), a child's engine killed during
verified writes (degraded, no host-visible error, the record says which child is out), etcd paused while
a retire must be recorded (host I/O is held, then flows), the last healthy child, the CLI.

One etcd and one set of engines for the module (each test builds its own nexus on fresh replicas)."""
import threading
import time
import urllib.request
import uuid

import grpc
import pytest

from conftest import make_file
from etcd import Etcd
from io_engine import EngineFactory
from nexus_util import nexus_of, required_child_bytes, verify_pattern, wait_rebuilt, write_pattern

MiB = 1 << 20
VOL = 32 * MiB


@pytest.fixture(scope="module")
def cluster(build_dir, tmp_path_factory):
    wd = tmp_path_factory.mktemp("nexus")
    etcd = Etcd(wd).start()
    f = EngineFactory(build_dir, wd)
    try:
        engines = []
        for i in range(3):
            disk = make_file(wd / f"pool{i}.img", 512 * MiB)
            engines.append(f(name=f"node{i}", pools=[(f"p{i}", f"uring://{disk}")],
                             extra_args=["--etcd", etcd.endpoint, "--etcd-timeout-ms", "1500"]))
        yield etcd, engines
    finally:
        try:
            f.stop_all()
        finally:
            etcd.stop()


def make_volume(cluster, pb, children=3, key=True, rebuild=None, al_extents=0):
    """Replicas on `children` engines (the first local to the nexus, the others shared over NVMe/TCP), and
    the nexus on engine 0. Returns (volume uuid, [replica uuid], nexus reply)."""
    etcd, engines = cluster
    R, C, N = pb.replica_pb2, pb.common_pb2, pb.nexus_pb2
    vol = str(uuid.uuid4())
    reps, uris = [], []
    for i in range(children):
        e = engines[i]
        r = e.api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"r-{vol[:8]}-{i}", pool=f"p{i}", size=required_child_bytes(VOL), thin=False,
            share=C.SHARE_PROTOCOL_NONE if i == 0 else C.SHARE_PROTOCOL_NVMF), timeout=60)
        reps.append(r.uuid)
        uris.append(f"bdev:///{r.uuid}?uuid={r.uuid}" if i == 0 else
                    f"{r.share.uri}?uuid={r.uuid}&timeout_ms=2000&ctrl_loss_tmo_s=2&reconnect_delay_ms=100")
    nx = engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=uris, persistence_key=f"/tern/test/volume/{vol}/nexus" if key else "",
        rebuild=rebuild, al_extents=al_extents), timeout=60)
    return vol, reps, nx


def pattern(engine, pb, device, gen, offset=0, length=VOL):
    write_pattern(engine, pb, device, gen, offset, length)


def verify(engine, pb, device, gen, offset=0, length=VOL):
    return verify_pattern(engine, pb, device, gen, offset, length)


def destroy(cluster, pb, vol):
    etcd, engines = cluster
    engines[0].api.nexus.DestroyNexus(pb.nexus_pb2.NexusRef(uuid=vol), timeout=60)


def assert_replicas_equal(engines, pb, reps, length=VOL):
    """Every replica (read on its own engine) holds the same bytes, MiB by MiB."""
    T = pb.test_pb2
    sums = [engines[i].api.test.Checksum(T.PatternRequest(device=r, offset=0, length=length), timeout=60).crc_per_mib
            for i, r in enumerate(reps)]
    for i in range(1, len(reps)):
        bad = [m for m in range(len(sums[0])) if sums[0][m] != sums[i][m]]
        assert not bad, f"replica {i} differs from replica 0 in MiB {bad[:8]}"


def test_every_child_holds_what_the_host_wrote(cluster, pb):
    etcd, engines = cluster
    vol, reps, nx = make_volume(cluster, pb)
    N = pb.nexus_pb2
    assert nx.state == N.NEXUS_STATE_ONLINE
    assert [c.uuid for c in nx.children] == reps
    assert [c.local for c in nx.children] == [True, False, False]
    assert nx.required_child_size == required_child_bytes(VOL)
    rec = etcd.get_json(f"/tern/test/volume/{vol}/nexus")
    assert rec.pop("writer") > 0  # this nexus's token: its record writes are compare-and-set
    assert rec == {"clean_shutdown": False, "generation": 1, "children": [{"uuid": r, "healthy": True} for r in reps]}
    assert nx.generation == 1 and [c.generation for c in nx.children] == [1, 1, 1]
    # Written through the nexus; each replica, read on its own engine, is the volume.
    pattern(engines[0], pb, vol, 7)
    assert verify(engines[0], pb, vol, 7).ok
    for i, r in enumerate(reps):
        v = verify(engines[i], pb, r, 7)
        assert v.ok, f"replica {i}: {v.mismatch}"
    l = engines[0].api.nexus.ListNexuses(N.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0]
    assert all(c.io.writes > 0 for c in l.children)
    destroy(cluster, pb, vol)


def test_host_io_through_the_published_nexus_survives_a_dead_child(cluster, pb, ioperf):
    etcd, engines = cluster
    vol, reps, nx = make_volume(cluster, pb)
    N = pb.nexus_pb2
    host = "nqn.2014-08.org.nvmexpress:uuid:test-host"
    p = engines[0].api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[host]), timeout=60)
    assert p.share.uri.endswith(f"nqn.2026-11.io.tern:{vol}")
    uri = f"{p.share.uri}?hostnqn={host}"
    # Verified random writes from a host while the engine of child 2 is killed under them.
    result = {}

    def load():
        result["p"] = ioperf.run("--uri", uri, "--rw", "randrw", "--bs", "4k", "--qd", "8", "--time", "4s",
                                 "--verify", timeout=180)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.0)
    engines[2].kill()
    t.join(timeout=200)
    r = result["p"]
    assert r.returncode == 0, f"host saw an error:\n{r.stdout}\n{r.stderr}"
    l = engines[0].api.nexus.ListNexuses(N.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0]
    assert l.state == N.NEXUS_STATE_DEGRADED
    dead = [c for c in l.children if c.uuid == reps[2]][0]
    assert dead.state == N.CHILD_STATE_FAULTED
    rec = etcd.get_json(f"/tern/test/volume/{vol}/nexus")
    assert [c["healthy"] for c in rec["children"]] == [True, True, False]
    assert rec["generation"] == 2 and l.generation == 2, rec  # the retire started a generation
    engines[2].start()
    # A new nexus of the volume over all three (the engine that died is back): the child that missed
    # writes holds generation 1 and joins out of sync, never read from; the others are current.
    destroy(cluster, pb, vol)
    again = engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=[c.uri for c in nx.children], persistence_key=f"/tern/test/volume/{vol}/nexus",
        no_auto_rebuild=True), timeout=60)
    assert again.generation == 3
    assert [(c.synced, c.generation) for c in again.children] == [(True, 3), (True, 3), (False, 1)], again
    assert again.state == N.NEXUS_STATE_DEGRADED
    assert [c["healthy"] for c in etcd.get_json(f"/tern/test/volume/{vol}/nexus")["children"]] == [True, True, False]
    # Rebuilt (copied from the local child), it is current again: generation 3, healthy, the same bytes.
    # Partial: it left in sync at generation 1, and the in-sync children kept its dirty-region log (the
    # writes all over the volume, and the activity log of the nexus destroyed without a shutdown).
    rb = engines[0].api.nexus.StartRebuild(N.StartRebuildRequest(uuid=vol, child_uuid=reps[2]), timeout=60)
    assert rb.state == N.REBUILD_STATE_RUNNING and rb.kind == "partial", rb
    l = wait_rebuilt(engines[0], pb, vol, reps[2])
    assert [(c.synced, c.generation) for c in l.children] == [(True, 3)] * 3, l
    assert l.children[2].rebuild.source == nx.children[0].uri
    assert [c["healthy"] for c in etcd.get_json(f"/tern/test/volume/{vol}/nexus")["children"]] == [True] * 3
    assert_replicas_equal(engines, pb, reps)
    destroy(cluster, pb, vol)


def test_host_io_is_held_while_the_retire_cannot_be_recorded(cluster, pb):
    etcd, engines = cluster
    vol, reps, nx = make_volume(cluster, pb, children=2)
    key = f"/tern/test/volume/{vol}/nexus"
    # etcd hangs, then child 1's engine dies: the writes that need child 1 retired wait, they do not fail.
    etcd.pause()
    try:
        engines[1].kill()
        done = {}

        def write():
            try:
                pattern(engines[0], pb, vol, 11, 0, 4 * MiB)
                done["ok"] = True
            except grpc.RpcError as e:
                done["err"] = e

        t = threading.Thread(target=write)
        t.start()
        t.join(timeout=3)
        assert t.is_alive(), "the write completed although its child's retire could not be recorded"
    finally:
        etcd.resume()
    t.join(timeout=120)
    assert done.get("ok"), done
    rec = etcd.get_json(key)
    assert [c["healthy"] for c in rec["children"]] == [True, False]
    assert verify(engines[0], pb, reps[0], 11, 0, 4 * MiB).ok
    engines[1].start()
    destroy(cluster, pb, vol)


def test_cli_and_child_operations(cluster, pb):
    etcd, engines = cluster
    vol, reps, nx = make_volume(cluster, pb, children=2)
    e = engines[0]
    out = e.ternctl("nexus", "list")
    assert out.returncode == 0 and vol in out.stdout and "online" in out.stdout, out.stdout + out.stderr
    j = e.ternctl_json("nexus", "list", vol)
    assert j["uuid"] == vol and len(j["children"]) == 2
    # The last healthy child cannot be faulted; the other can, and comes back out of sync.
    p = e.ternctl("nexus", "fault-child", vol, reps[1])
    assert p.returncode == 0, p.stderr
    p = e.ternctl("nexus", "fault-child", vol, reps[0])
    assert p.returncode == 5 and "last healthy" in p.stderr, p.stderr
    assert etcd.get_json(f"/tern/test/volume/{vol}/nexus")["children"][1]["healthy"] is False
    p = e.ternctl("nexus", "online-child", vol, reps[1])
    assert p.returncode == 0, p.stderr
    # Back out of sync, it is rebuilt by itself: the CLI waits for that, then both are current.
    p = e.ternctl("nexus", "rebuild", "status", vol, "--watch", "--interval", "0.1", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    j = e.ternctl_json("nexus", "list", vol)
    assert [c.get("synced", False) for c in j["children"]] == [True, True]
    assert etcd.get_json(f"/tern/test/volume/{vol}/nexus")["children"][1]["healthy"] is True
    h = e.ternctl_json("nexus", "rebuild", "history", vol)
    assert [(b["child_uuid"], b["state"]) for b in h["history"]] == [(reps[1], "REBUILD_STATE_COMPLETED")], h
    # Shutdown records a clean shutdown.
    p = e.ternctl("nexus", "shutdown", vol)
    assert p.returncode == 0, p.stderr
    assert etcd.get_json(f"/tern/test/volume/{vol}/nexus")["clean_shutdown"] is True
    p = e.ternctl("nexus", "destroy", vol)
    assert p.returncode == 0, p.stderr
    p = e.ternctl("nexus", "list", vol)
    assert p.returncode == 3


def test_create_errors_name_what_is_wrong(cluster, pb):
    etcd, engines = cluster
    R, N = pb.replica_pb2, pb.nexus_pb2
    e = engines[0]
    small = e.api.replica.CreateReplica(R.CreateReplicaRequest(name=f"small-{uuid.uuid4().hex[:6]}", pool="p0",
                                                               size=VOL), timeout=60)
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=str(uuid.uuid4()), size=VOL,
                                                     children=[f"bdev:///{small.uuid}?uuid={small.uuid}"]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "nexus metadata" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=str(uuid.uuid4()), size=VOL,
                                                     children=[f"bdev:///{small.uuid}"]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "uuid" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid="nope", size=VOL, children=["x"]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "uuid" in ei.value.details()


def test_a_newer_nexus_fences_the_older_one(cluster, pb):
    """Two nexuses of one volume on two nodes, over the same remote replicas: the newer one preempts the
    older one's NVMe reservation, and from then on the older one cannot write a single block — its first
    write fails (the host is told to go elsewhere) and it shuts itself down."""
    etcd, engines = cluster
    R, C, N = pb.replica_pb2, pb.common_pb2, pb.nexus_pb2
    vol = str(uuid.uuid4())
    reps, uris = [], []
    for i in (1, 2):
        r = engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"f-{vol[:8]}-{i}", pool=f"p{i}", size=required_child_bytes(VOL), thin=False,
            share=C.SHARE_PROTOCOL_NVMF), timeout=60)
        reps.append((engines[i], r.uuid))
        uris.append(f"{r.share.uri}?uuid={r.uuid}&timeout_ms=2000&ctrl_loss_tmo_s=2&reconnect_delay_ms=100")
    old = engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=uris, resv_key=0xA1),
                                           timeout=60)
    assert old.resv_key == 0xA1 and old.resv_type == N.RESERVATION_TYPE_WRITE_EXCLUSIVE
    pattern(engines[0], pb, vol, 3, 0, 4 * MiB)
    # A nexus that may not preempt is refused while the old one holds the children.
    with pytest.raises(grpc.RpcError) as ei:
        engines[2].api.nexus.CreateNexus(N.CreateNexusRequest(
            uuid=vol, size=VOL, children=uris, resv_key=0xC3, preempt_policy=N.PREEMPT_POLICY_NONE), timeout=60)
    assert "0xa1" in ei.value.details() and "preempt" in ei.value.details(), ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        engines[2].api.nexus.CreateNexus(N.CreateNexusRequest(
            uuid=vol, size=VOL, children=uris, resv_key=0xC3, preempt_policy=N.PREEMPT_POLICY_KEY,
            preempt_key=0x77), timeout=60)
    assert "0x77" in ei.value.details(), ei.value.details()
    # The newer nexus takes over on node 1, where one replica is local: that one is fenced through node
    # 1's own target (the old nexus reaches it over the network), the other over NVMe/TCP.
    r1 = reps[0][1]
    new = engines[1].api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=[f"bdev:///{r1}?uuid={r1}", uris[1]], resv_key=0xB2), timeout=60)
    assert new.state == N.NEXUS_STATE_ONLINE
    # Each child alone refuses the old nexus: the local one through node 1's target...
    with pytest.raises(grpc.RpcError):
        pattern(engines[0], pb, vol, 5, 0, 4 * MiB)

    def old_state():
        return engines[0].api.nexus.ListNexuses(N.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0].state

    deadline = time.monotonic() + 30
    while old_state() != N.NEXUS_STATE_SHUTDOWN and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old_state() == N.NEXUS_STATE_SHUTDOWN
    with pytest.raises(grpc.RpcError):
        pattern(engines[0], pb, vol, 5, 0, 4 * MiB)
    # Not one block of the fenced nexus's writes reached a replica.
    for e, r in reps:
        v = verify(e, pb, r, 3, 0, 4 * MiB)
        assert v.ok, f"replica {r}: {v.mismatch}"
    # The newer nexus writes.
    pattern(engines[1], pb, vol, 9, 0, 4 * MiB)
    for e, r in reps:
        assert verify(e, pb, r, 9, 0, 4 * MiB).ok
    engines[0].api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
    engines[1].api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)


def test_resize_after_the_children_grew(cluster, pb):
    """Grow a published volume with a local and a remote child: refused until every replica grew (the
    remote one's size is read from its controller), then the volume and everything written stay whole."""
    etcd, engines = cluster
    R, N = pb.replica_pb2, pb.nexus_pb2
    vol, reps, nx = make_volume(cluster, pb, children=2)
    engines[0].api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol), timeout=60)
    pattern(engines[0], pb, vol, 4)
    big = 2 * VOL
    with pytest.raises(grpc.RpcError) as ei:
        engines[0].api.nexus.ResizeNexus(N.ResizeNexusRequest(uuid=vol, size=big), timeout=60)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "grow the replica" in ei.value.details()
    for i, r in enumerate(reps):
        engines[i].api.replica.ResizeReplica(R.ResizeReplicaRequest(
            replica=R.ReplicaRef(uuid=r), size=required_child_bytes(big)), timeout=60)
    with pytest.raises(grpc.RpcError) as ei:
        engines[0].api.nexus.ResizeNexus(N.ResizeNexusRequest(uuid=vol, size=VOL // 2), timeout=60)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    n = engines[0].api.nexus.ResizeNexus(N.ResizeNexusRequest(uuid=vol, size=big), timeout=60)
    assert n.size == big and n.required_child_size == required_child_bytes(big)
    assert engines[0].api.nexus.ResizeNexus(N.ResizeNexusRequest(uuid=vol, size=big), timeout=60).size == big
    # What was written is there; the grown part takes writes on every child.
    assert verify(engines[0], pb, vol, 4).ok
    pattern(engines[0], pb, vol, 5, VOL, VOL)
    for i, r in enumerate(reps):
        assert verify(engines[i], pb, r, 4).ok
        assert verify(engines[i], pb, r, 5, VOL, VOL).ok
    # A create repeated with the new size is this nexus.
    again = engines[0].api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=big, children=[c.uri for c in nx.children],
        persistence_key=f"/tern/test/volume/{vol}/nexus"), timeout=60)
    assert again.size == big
    destroy(cluster, pb, vol)


def test_a_snapshot_catches_every_replica_at_one_point_of_the_write_stream(cluster, pb, ioperf):
    """CreateNexusSnapshot on a published volume under verified host writes: the local replica's snapshot
    and the two taken by the remote engines (asked over the children's NVMe/TCP connections) hold the same
    bytes, the host saw no error, a retry is the same snapshot, and a snapshot one child cannot take leaves
    none behind on the others."""
    etcd, engines = cluster
    N, S, R, T = pb.nexus_pb2, pb.snapshot_pb2, pb.replica_pb2, pb.test_pb2
    vol, reps, nx = make_volume(cluster, pb)
    host = "nqn.2014-08.org.nvmexpress:uuid:snap-host"
    p = engines[0].api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[host]), timeout=60)
    pattern(engines[0], pb, vol, 3)
    result = {}

    def load():
        result["p"] = ioperf.run("--uri", f"{p.share.uri}?hostnqn={host}", "--rw", "randwrite", "--bs", "4k",
                                 "--qd", "16", "--time", "3s", "--verify", timeout=180)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.0)
    snap = engines[0].api.nexus.CreateNexusSnapshot(N.CreateNexusSnapshotRequest(uuid=vol, name=f"s-{vol[:8]}"),
                                                    timeout=60)
    t.join(timeout=200)
    assert result["p"].returncode == 0, f"host saw an error:\n{result['p'].stdout}\n{result['p'].stderr}"
    assert [c.outcome for c in snap.children] == ["taken"] * 3
    assert [c.child_uuid for c in snap.children] == reps
    for i, c in enumerate(snap.children):
        listed = engines[i].api.snapshot.ListSnapshots(S.ListSnapshotsRequest(source_uuid=reps[i]), timeout=60).replicas
        assert [(s.uuid, s.name) for s in listed] == [(c.snapshot_uuid, f"s-{vol[:8]}")]
    # One point of the write stream: every replica's snapshot holds the same bytes, and the host's writes
    # had begun to change the volume by then.
    sums = [engines[i].api.test.Checksum(T.PatternRequest(device=c.snapshot_uuid, offset=0, length=VOL),
                                         timeout=60).crc_per_mib for i, c in enumerate(snap.children)]
    assert len(sums[0]) == VOL // MiB
    for i in (1, 2):
        bad = [m for m in range(len(sums[0])) if sums[0][m] != sums[i][m]]
        assert not bad, f"replica {i}'s snapshot differs from replica 0's in MiB {bad[:8]}"
    assert not verify(engines[0], pb, snap.children[0].snapshot_uuid, 3).ok
    # The same request again: the same snapshot, nothing new taken.
    again = engines[0].api.nexus.CreateNexusSnapshot(N.CreateNexusSnapshotRequest(uuid=vol, name=f"s-{vol[:8]}"),
                                                     timeout=60)
    assert again.uuid == snap.uuid and [c.outcome for c in again.children] == ["existed"] * 3
    assert [c.snapshot_uuid for c in again.children] == [c.snapshot_uuid for c in snap.children]
    # A name that child 2's pool has for something else: refused there, and the snapshots the other two
    # took (one local, one through its engine) are destroyed again.
    engines[2].api.replica.CreateReplica(R.CreateReplicaRequest(name=f"t-{vol[:8]}", pool="p2", size=MiB, thin=True),
                                         timeout=60)
    with pytest.raises(grpc.RpcError) as ei:
        engines[0].api.nexus.CreateNexusSnapshot(N.CreateNexusSnapshotRequest(uuid=vol, name=f"t-{vol[:8]}"),
                                                 timeout=60)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS and reps[2] in ei.value.details(), ei.value.details()
    for i in (0, 1):
        listed = engines[i].api.snapshot.ListSnapshots(S.ListSnapshotsRequest(source_uuid=reps[i]), timeout=60).replicas
        assert [s.name for s in listed] == [f"s-{vol[:8]}"]
    # The CLI.
    out = engines[0].ternctl_json("nexus", "snapshot", vol, f"s-{vol[:8]}")
    assert [c["outcome"] for c in out["children"]] == ["existed"] * 3
    destroy(cluster, pb, vol)
    for i, c in enumerate(snap.children):
        engines[i].api.snapshot.DestroySnapshot(R.ReplicaRef(uuid=c.snapshot_uuid), timeout=60)
    engines[2].api.replica.DestroyReplica(R.ReplicaRef(name=f"t-{vol[:8]}", pool="p2"), timeout=60)


def test_a_child_that_comes_back_is_rebuilt_under_verified_host_writes(cluster, pb, ioperf):
    """A remote child faulted and onlined while a host writes and verifies through the published nexus: it
    is rebuilt by itself from the local child while the writes go on (into the windows being copied too),
    paused, stopped and started again with the CLI, and ends in sync: every replica holds the same bytes,
    the record and the labels say it is current, the host saw no error."""
    etcd, engines = cluster
    N = pb.nexus_pb2
    # Slow rebuilds by default (4 MiB/s: 8 s for the volume), so that the CLI can catch one.
    vol, reps, nx = make_volume(cluster, pb, rebuild=N.RebuildSettings(rate_bytes_per_s=4 * MiB, segment_bytes=256 << 10))
    e = engines[0]
    host = "nqn.2014-08.org.nvmexpress:uuid:rebuild-host"
    p = e.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[host]), timeout=60)
    pattern(e, pb, vol, 5)
    e.api.nexus.FaultChild(N.FaultChildRequest(uuid=vol, child_uuid=reps[2]), timeout=60)
    result = {}

    def load():
        result["p"] = ioperf.run("--uri", f"{p.share.uri}?hostnqn={host}", "--rw", "randwrite", "--bs", "4k",
                                 "--qd", "8", "--time", "8s", "--verify", timeout=180)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.5)
        e.api.nexus.OnlineChild(N.ChildRef(uuid=vol, child_uuid=reps[2]), timeout=60)  # the rebuild starts by itself
        time.sleep(0.5)
        j = e.ternctl_json("nexus", "rebuild", "pause", vol, reps[2])
        assert j["state"] in ("REBUILD_STATE_RUNNING", "REBUILD_STATE_PAUSED"), j  # paused at its next window
        deadline = time.monotonic() + 10
        while True:
            cur = e.ternctl_json("nexus", "rebuild", "status", vol)["current"]
            if cur and cur[0]["state"] == "REBUILD_STATE_PAUSED":
                break
            assert time.monotonic() < deadline, cur
            time.sleep(0.05)
        done = int(cur[0]["done_bytes"])
        assert 0 < done < VOL and cur[0]["source"] == nx.children[0].uri, cur
        time.sleep(0.3)
        assert int(e.ternctl_json("nexus", "rebuild", "status", vol)["current"][0]["done_bytes"]) == done
        # Stopped: the child stays an out-of-sync member (written, not read).
        j = e.ternctl_json("nexus", "rebuild", "stop", vol, reps[2])
        deadline = time.monotonic() + 10
        while e.ternctl_json("nexus", "rebuild", "status", vol)["current"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        l = e.api.nexus.ListNexuses(N.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0]
        assert not l.children[2].synced and l.children[2].rebuild.state == N.REBUILD_STATE_STOPPED
        # Started again from the CLI, then the limit lifted; --watch waits for the end.
        p2 = e.ternctl("nexus", "rebuild", "start", vol, reps[2], "--rate", "8MiB/s", "--verify")
        assert p2.returncode == 0, p2.stderr
        j = e.ternctl_json("nexus", "rebuild", "rate", vol, reps[2], "0")
        assert int(j["rate_limit"]) == 0
        p2 = e.ternctl("nexus", "rebuild", "status", vol, "--watch", "--interval", "0.1", timeout=120)
        assert p2.returncode == 0, p2.stdout + p2.stderr  # (it may have ended before the watch began)
    finally:
        t.join(timeout=200)
    r = result["p"]
    assert r.returncode == 0, f"host saw an error:\n{r.stdout}\n{r.stderr}"
    l = wait_rebuilt(e, pb, vol, reps[2])
    assert l.state == N.NEXUS_STATE_ONLINE
    assert len({c.generation for c in l.children} | {l.generation}) == 1, l
    rec = etcd.get_json(f"/tern/test/volume/{vol}/nexus")
    assert [c["healthy"] for c in rec["children"]] == [True] * 3
    assert_replicas_equal(engines, pb, reps)
    hist = e.api.nexus.ListRebuilds(N.NexusRef(uuid=vol), timeout=60).history
    assert [b.state for b in hist] == [N.REBUILD_STATE_STOPPED, N.REBUILD_STATE_COMPLETED], hist
    assert hist[0].error == "stopped by request" and hist[1].total_bytes == VOL
    # The second job went on from the checkpoint the stopped one left (the child got every write meanwhile).
    assert 0 < hist[1].resumed_bytes <= hist[0].done_bytes and "checkpoint" in hist[1].reason, hist[1]
    # Partial (the child left in sync): what its dirty-region log marked past the checkpoint, at most.
    assert hist[1].kind == "partial" and "dirty-region log" in hist[1].reason, hist[1]
    assert 0 < hist[1].copied_bytes <= VOL - hist[1].resumed_bytes
    # Started with --verify: everything it wrote was read back and compared.
    assert hist[1].verify and hist[1].verified_bytes == hist[1].copied_bytes + hist[1].skipped_bytes, hist[1]
    page = urllib.request.urlopen(f"http://127.0.0.1:{e.metrics_port}/metrics", timeout=30).read().decode()
    assert f'tern_nexus_rebuilds_total{{nexus="{vol}",result="completed"}} 1' in page, page
    assert f'tern_nexus_rebuilds_total{{nexus="{vol}",result="stopped"}} 1' in page
    assert f'tern_nexus_child_synced{{nexus="{vol}",child="{reps[2]}"}} 1' in page
    # Errors name what is wrong.
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.StartRebuild(N.StartRebuildRequest(uuid=vol, child_uuid=reps[1]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "in sync" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.PauseRebuild(N.ChildRef(uuid=vol, child_uuid=reps[1]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    p2 = e.ternctl("nexus", "rebuild", "start", vol, reps[2], "--segment", "1000")
    assert p2.returncode == 9 and "segment" in p2.stderr, p2.stderr
    destroy(cluster, pb, vol)


def test_a_rebuild_copies_only_what_a_thin_source_holds(cluster, pb):
    """Thin replicas, half the volume written: a new child is rebuilt by copying that half only — from a
    local source (the pool's map) and from a remote one (tern's block-status command over NVMe/TCP) — and
    stays thin; the replicas end identical."""
    etcd, engines = cluster
    N, R, C = pb.nexus_pb2, pb.replica_pb2, pb.common_pb2
    vol = str(uuid.uuid4())

    def thin_replica(i, tag, shared):
        r = engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"t{tag}-{vol[:8]}", pool=f"p{i}", size=required_child_bytes(VOL), thin=True,
            share=C.SHARE_PROTOCOL_NVMF if shared else C.SHARE_PROTOCOL_NONE), timeout=60)
        uri = (f"{r.share.uri}?uuid={r.uuid}&timeout_ms=2000" if shared else f"bdev:///{r.uuid}?uuid={r.uuid}")
        return r.uuid, uri

    def allocated(i, rep):
        return engines[i].api.replica.ListReplicas(R.ListReplicasRequest(uuid=rep), timeout=60).replicas[0].allocated

    r0, u0 = thin_replica(0, 0, False)
    r1, u1 = thin_replica(1, 1, True)
    e = engines[0]
    e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=[u0, u1],
                                                 persistence_key=f"/tern/test/volume/{vol}/nexus"), timeout=60)
    half = VOL // 2
    pattern(e, pb, vol, 21, 0, half)
    # A new remote child, rebuilt from the local one: half the volume copied, the rest skipped.
    r2, u2 = thin_replica(2, 2, True)
    e.api.nexus.AddChild(N.AddChildRequest(uuid=vol, uri=u2), timeout=60)
    l = wait_rebuilt(e, pb, vol, r2)
    b = l.children[2].rebuild
    assert b.source == u0 and (b.copied_bytes, b.skipped_bytes) == (half, half), b
    before = allocated(2, r2)
    assert before <= half + 8 * MiB, before  # the written half, and the clusters of the metadata region
    # The local child removed, a new local one is rebuilt from a remote source.
    e.api.nexus.RemoveChild(N.ChildRef(uuid=vol, child_uuid=r0), timeout=60)
    r3, u3 = thin_replica(0, 3, False)
    e.api.nexus.AddChild(N.AddChildRequest(uuid=vol, uri=u3), timeout=60)
    l = wait_rebuilt(e, pb, vol, r3)
    b = [c for c in l.children if c.uuid == r3][0].rebuild
    assert b.source in (u1, u2) and (b.copied_bytes, b.skipped_bytes) == (half, half), b
    assert allocated(0, r3) <= half + 8 * MiB
    assert verify(e, pb, vol, 21, 0, half).ok
    assert_replicas_equal([engines[1], engines[2], engines[0]], pb, [r1, r2, r3])
    destroy(cluster, pb, vol)
    for i, r in ((0, r0), (1, r1), (2, r2), (0, r3)):
        engines[i].api.replica.DestroyReplica(R.ReplicaRef(uuid=r), timeout=60)


def test_a_rebuild_resumes_from_its_checkpoint_after_the_nexus_engine_is_killed(cluster, pb):
    """kill -9 of the nexus's engine in the middle of a rebuild: the nexus made again over the same
    children resumes the copy from the destination's last checkpoint (its token still in the record: the
    child had every write), not from the start, and ends with the replicas identical."""
    etcd, engines = cluster
    N = pb.nexus_pb2
    vol, reps, nx = make_volume(cluster, pb, rebuild=N.RebuildSettings(
        rate_bytes_per_s=4 * MiB, segment_bytes=256 << 10, concurrency=1, checkpoint_bytes=2 * MiB))
    e = engines[0]
    key = f"/tern/test/volume/{vol}/nexus"
    pattern(e, pb, vol, 9)
    # Removed and added back: no dirty-region log (a removal drops it), so a full rebuild.
    e.api.nexus.RemoveChild(N.ChildRef(uuid=vol, child_uuid=reps[2]), timeout=60)
    pattern(e, pb, vol, 10, 0, 4 * MiB)  # child 2 misses this
    e.api.nexus.AddChild(N.AddChildRequest(uuid=vol, uri=nx.children[2].uri), timeout=60)
    deadline = time.monotonic() + 60
    while True:
        c = e.api.nexus.ListNexuses(N.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0].children[2]
        if c.rebuild.done_bytes >= 12 * MiB:
            break
        assert time.monotonic() < deadline, c
        time.sleep(0.05)
    token = [c for c in etcd.get_json(key)["children"] if c["uuid"] == reps[2]][0].get("rebuild_token")
    assert token, etcd.get_json(key)
    e.kill()
    e.start()
    again = e.api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=[c.uri for c in nx.children], persistence_key=key), timeout=60)
    assert [c.synced for c in again.children] == [True, True, False], again
    l = wait_rebuilt(e, pb, vol, reps[2])
    b = l.children[2].rebuild
    assert b.kind == "full" and "no dirty-region log" in b.reason, b
    assert b.resumed_bytes >= 10 * MiB and "checkpoint" in b.reason, b
    assert b.copied_bytes == VOL - b.resumed_bytes, b
    assert "rebuild_token" not in [c for c in etcd.get_json(key)["children"] if c["uuid"] == reps[2]][0]
    assert verify(e, pb, vol, 10, 0, 4 * MiB).ok
    assert_replicas_equal(engines, pb, reps)
    # The history is kept next to the record: it outlives the nexus's engine (killed again).
    deadline = time.monotonic() + 30
    while len(etcd.get_json(f"{key}/rebuilds") or []) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    e.kill()
    e.start()
    e.api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=[c.uri for c in nx.children], persistence_key=key), timeout=60)
    hist = e.api.nexus.ListRebuilds(N.NexusRef(uuid=vol), timeout=60).history
    assert [(h.child_uuid, h.state, h.resumed_bytes) for h in hist] == [
        (reps[2], N.REBUILD_STATE_COMPLETED, b.resumed_bytes)], hist
    out = e.ternctl("nexus", "rebuild", "history", vol)
    assert out.returncode == 0 and reps[2] in out.stdout and "completed" in out.stdout, out.stdout + out.stderr
    destroy(cluster, pb, vol)


def test_a_child_away_across_a_crash_of_the_nexus_engine_is_rebuilt_from_its_dirty_regions(cluster, pb, ioperf):
    """A remote child's engine is killed under verified host writes (the child is retired, its dirty-region
    log starts); more writes land while it is down; then the nexus's own engine is killed too (kill -9:
    an unclean stop). Both engines come back, and the volume moves: the nexus is made again on another
    node (engine 1, whose replica becomes its local child) from the record's healthy children. It
    reconciles only its activity log's extents between them, and the child, added back, is rebuilt from
    its dirty regions alone — kept on the children's disks, not in any engine — a fraction of the volume,
    byte-identical, the host's data intact."""
    etcd, engines = cluster
    N = pb.nexus_pb2
    vol, reps, nx = make_volume(cluster, pb, al_extents=3)  # 12 MiB of the 32 MiB volume may be hot
    e = engines[0]
    key = f"/tern/test/volume/{vol}/nexus"
    host = "nqn.2014-08.org.nvmexpress:uuid:partial-host"
    pattern(e, pb, vol, 31)
    p = e.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[host]), timeout=60)
    result = {}

    def load():  # verified random writes over the first 8 MiB only
        result["p"] = ioperf.run("--uri", f"{p.share.uri}?hostnqn={host}", "--rw", "randwrite", "--bs", "4k",
                                 "--qd", "8", "--time", "3s", "--size", str(8 * MiB), "--verify", timeout=120)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1)
        engines[2].kill()
    finally:
        t.join(timeout=150)
    r = result["p"]
    assert r.returncode == 0, f"host saw an error:\n{r.stdout}\n{r.stderr}"
    l = nexus_of(e, pb, vol)
    c2 = l.children[2]
    assert c2.state == N.CHILD_STATE_FAULTED and c2.tracked and c2.tracked_since_generation == 1, c2
    assert 0 < c2.dirty_bytes <= 8 * MiB, c2
    pattern(e, pb, vol, 32, 20 * MiB, 2 * MiB)  # while child 2 is away, outside the host's range
    e.kill()  # the nexus's engine: no clean shutdown
    e.start()
    engines[2].start()
    rec = etcd.get_json(key)
    assert rec["clean_shutdown"] is False and [c["healthy"] for c in rec["children"]] == [True, True, False], rec
    # The nexus moves to engine 1, made from the record's healthy children: engine 0's replica (shared now)
    # and engine 1's own (local there). The log's extents are reconciled, nothing more.
    R, C = pb.replica_pb2, pb.common_pb2
    r0 = e.api.replica.ShareReplica(R.ShareReplicaRequest(replica=R.ReplicaRef(uuid=reps[0]),
                                                          protocol=C.SHARE_PROTOCOL_NVMF), timeout=60)
    e = engines[1]
    children = [f"{r0.share.uri}?uuid={reps[0]}&timeout_ms=2000", f"bdev:///{reps[1]}?uuid={reps[1]}"]
    again = e.api.nexus.CreateNexus(N.CreateNexusRequest(
        uuid=vol, size=VOL, children=children, persistence_key=key, al_extents=3), timeout=60)
    assert [c.synced for c in again.children] == [True, True] and again.children[1].local, again
    al = again.activity_log
    assert al.reconciled_bytes == 3 * 4 * MiB, al  # the host's two extents and the last pattern's one
    assert_replicas_equal(engines[:2], pb, reps[:2])
    # The child back: partial, from the log the in-sync children kept across the crash and the move.
    e.api.nexus.AddChild(N.AddChildRequest(uuid=vol, uri=nx.children[2].uri), timeout=60)
    l = wait_rebuilt(e, pb, vol, reps[2])
    b = l.children[2].rebuild
    assert b.kind == "partial" and "dirty-region log" in b.reason, b
    assert 2 * MiB <= b.dirty_bytes <= 16 * MiB and b.copied_bytes + b.skipped_bytes <= b.dirty_bytes, b
    assert_replicas_equal(engines, pb, reps)
    assert verify(e, pb, vol, 32, 20 * MiB, 2 * MiB).ok
    assert verify(e, pb, vol, 31, 8 * MiB, 12 * MiB).ok
    out = e.ternctl("nexus", "list", vol)
    assert out.returncode == 0 and "activity log:" in out.stdout, out.stdout + out.stderr
    e.api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)


def test_a_clone_of_another_volume_is_adopted_only_when_asked(cluster, pb):
    """A clone of a replica snapshot carries the source volume's nexus labels: another nexus refuses it,
    one created with adopt_labels_of=[source] takes it in sync and writes its own labels in both slots, so
    a later create without the list takes it too."""
    etcd, engines = cluster
    e = engines[0]
    R, S, N = pb.replica_pb2, pb.snapshot_pb2, pb.nexus_pb2
    vol, reps, nx = make_volume(cluster, pb, children=1)
    pattern(e, pb, vol, 41)
    destroy(cluster, pb, vol)
    snap = e.api.snapshot.CreateSnapshot(S.CreateSnapshotRequest(replica=R.ReplicaRef(uuid=reps[0]),
                                                                 name=f"s-{vol[:8]}"), timeout=60)
    clone = e.api.snapshot.CreateClone(S.CreateCloneRequest(snapshot=R.ReplicaRef(uuid=snap.uuid),
                                                            name=f"c-{vol[:8]}"), timeout=60)
    child = f"bdev:///{clone.uuid}?uuid={clone.uuid}"
    new = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=new, size=VOL, children=[child]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS and vol in ei.value.details(), ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=new, size=VOL, children=[child],
                                                     adopt_labels_of=[str(uuid.uuid4())]), timeout=60)
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS  # only the volume named is adopted
    got = e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=new, size=VOL, children=[child], adopt_labels_of=[vol]),
                                  timeout=60)
    assert [c.synced for c in got.children] == [True], got
    assert verify(e, pb, new, 41)
    destroy(cluster, pb, new)
    again = e.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=new, size=VOL, children=[child]), timeout=60)
    assert [c.synced for c in again.children] == [True], again
    assert verify(e, pb, new, 41)
    destroy(cluster, pb, new)
    e.api.replica.DestroyReplica(R.ReplicaRef(uuid=clone.uuid), timeout=60)
    e.api.snapshot.DestroySnapshot(R.ReplicaRef(uuid=snap.uuid), timeout=60)
    e.api.replica.DestroyReplica(R.ReplicaRef(uuid=reps[0]), timeout=60)
