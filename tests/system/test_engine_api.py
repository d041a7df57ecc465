"""The io-engine's gRPC API, method by method: results, bad inputs and the idempotency rules of
docs/api/engine-v1.md ("Errors"), through gRPC and through ternctl."""
import json
import os

import grpc
import pytest

from conftest import make_file

MiB = 1 << 20


def code_of(fn, *args, **kw):
    """The gRPC status code (and message) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, timeout=60, **kw)
    return ei.value.code(), ei.value.details()


@pytest.fixture
def node(engines, scratch):
    """An engine with one 256 MiB file-backed pool 'p0'."""
    disk = make_file(scratch / "p0.img", 256 * MiB)
    return engines(pools=[("p0", f"uring://{disk}")])


def test_node_info(node):
    n = node.info
    assert n.node_name == node.name
    assert n.api_version == "v1"
    assert n.version and n.build and len(n.instance_uuid) == 36
    assert list(n.cores) == [int(node.cores)]
    assert n.nvmf_endpoint == f"127.0.0.1:{node.nvmf_port}"
    assert n.grpc_endpoint == node.endpoint
    assert 0 < n.startup_ms < 10_000


def test_pool_create_list_and_idempotency(engines, scratch, pb):
    e = engines()
    disk = f"uring://{make_file(scratch / 'a.img', 128 * MiB)}"
    req = pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk)
    p = e.api.pool.CreatePool(req, timeout=60)
    assert p.name == "pa" and p.state == pb.pool_pb2.POOL_STATE_ONLINE and p.disk == disk
    assert 100 * MiB < p.capacity < 128 * MiB and p.used == 0 and p.cluster_size == 4 * MiB
    # Identical arguments: the existing pool.
    again = e.api.pool.CreatePool(req, timeout=60)
    assert again.uuid == p.uuid
    # Same name, other disk / uuid / cluster size: ALREADY_EXISTS naming what differs.
    other = f"uring://{make_file(scratch / 'b.img', 128 * MiB)}"
    c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pa", disk=other))
    assert c == grpc.StatusCode.ALREADY_EXISTS and "disk" in msg
    c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk, cluster_size=MiB))
    assert c == grpc.StatusCode.ALREADY_EXISTS and "cluster_size" in msg
    c, msg = code_of(e.api.pool.CreatePool,
                     pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk, uuid="00000000-0000-4000-8000-000000000001"))
    assert c == grpc.StatusCode.ALREADY_EXISTS and "uuid" in msg
    # Another pool on the same disk: refused.
    c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pz", disk=disk))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "pa" in msg
    # Bad arguments name the field.
    for bad, field in [(dict(name="", disk=other), "name"), (dict(name="pb", disk=""), "disk"),
                       (dict(name="bad name!", disk=other), "name"),
                       (dict(name="pb", disk=other, uuid="nope"), "uuid"),
                       (dict(name="pb", disk="bogus:///x"), "disk")]:
        c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(**bad))
        assert c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (bad, c, msg)
        assert field in msg or "scheme" in msg, (bad, msg)
    c, _ = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pb", disk="no-such-device"))
    assert c == grpc.StatusCode.NOT_FOUND
    # A missing disk file.
    c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pb", disk=f"uring://{scratch}/missing.img"))
    assert c == grpc.StatusCode.NOT_FOUND, msg
    pools = e.api.pool.ListPools(pb.pool_pb2.ListPoolsRequest(), timeout=60).pools
    assert [x.name for x in pools] == ["pa"]
    assert len(e.api.pool.ListPools(pb.pool_pb2.ListPoolsRequest(name="nope"), timeout=60).pools) == 0


def test_pool_export_import_destroy_grow(engines, scratch, pb):
    e = engines()
    path = make_file(scratch / "a.img", 128 * MiB)
    disk = f"uring://{path}"
    p = e.api.pool.CreatePool(pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk), timeout=60)
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="r", pool="pa", size=8 * MiB), timeout=60)
    e.api.pool.ExportPool(pb.pool_pb2.PoolRef(name="pa"), timeout=60)
    c, _ = code_of(e.api.pool.ExportPool, pb.pool_pb2.PoolRef(name="pa"))
    assert c == grpc.StatusCode.NOT_FOUND
    # A disk holding a pool: create refuses, import (by disk, with or without the name) brings it back.
    c, msg = code_of(e.api.pool.CreatePool, pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "import" in msg
    c, msg = code_of(e.api.pool.ImportPool, pb.pool_pb2.ImportPoolRequest(disk=disk, name="other"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "pa" in msg
    back = e.api.pool.ImportPool(pb.pool_pb2.ImportPoolRequest(disk=disk), timeout=60)
    assert back.uuid == p.uuid and back.replica_count == 1
    reps = e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(pool="pa"), timeout=60).replicas
    assert [x.uuid for x in reps] == [r.uuid]
    # Create-or-import of an existing pool imports; of an empty disk creates.
    e.api.pool.ExportPool(pb.pool_pb2.PoolRef(name="pa"), timeout=60)
    again = e.api.pool.CreateOrImportPool(pb.pool_pb2.CreatePoolRequest(name="pa", disk=disk), timeout=60)
    assert again.uuid == p.uuid
    fresh = f"uring://{make_file(scratch / 'b.img', 64 * MiB)}"
    c, _ = code_of(e.api.pool.ImportPool, pb.pool_pb2.ImportPoolRequest(disk=fresh))
    assert c == grpc.StatusCode.NOT_FOUND
    made = e.api.pool.CreateOrImportPool(pb.pool_pb2.CreatePoolRequest(name="pb", disk=fresh), timeout=60)
    assert made.replica_count == 0
    # Grow: the file gets bigger, the pool takes the space; growing again changes nothing.
    os.truncate(path, 256 * MiB)
    grown = e.api.pool.GrowPool(pb.pool_pb2.PoolRef(name="pa"), timeout=60)
    assert grown.capacity > again.capacity + 100 * MiB
    assert e.api.pool.GrowPool(pb.pool_pb2.PoolRef(name="pa"), timeout=60).capacity == grown.capacity
    # Destroying a pool that holds data is refused, naming what it holds; with force it goes, and wipes it:
    # nothing to import afterwards.
    c, msg = code_of(e.api.pool.DestroyPool, pb.pool_pb2.DestroyPoolRequest(name="pa"))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and r.uuid in msg and "1 replica" in msg and "force" in msg, msg
    out = e.ternctl("pool", "destroy", "pa")
    assert out.returncode == 5 and r.uuid in out.stderr and "destroyed" not in out.stdout, out.stdout + out.stderr
    assert [x.uuid for x in e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(pool="pa"), timeout=60).replicas] == [r.uuid]
    out = e.ternctl("pool", "destroy", "pa", "--force")
    assert out.returncode == 0 and "pool 'pa' destroyed" in out.stdout, out.stdout + out.stderr
    c, _ = code_of(e.api.pool.DestroyPool, pb.pool_pb2.DestroyPoolRequest(name="pa"))
    assert c == grpc.StatusCode.NOT_FOUND
    c, _ = code_of(e.api.pool.ImportPool, pb.pool_pb2.ImportPoolRequest(disk=disk))
    assert c == grpc.StatusCode.NOT_FOUND


def test_replica_create_idempotency_and_errors(node, pb):
    R = pb.replica_pb2
    api = node.api.replica
    req = R.CreateReplicaRequest(name="r1", pool="p0", size=16 * MiB, thin=True)
    r = api.CreateReplica(req, timeout=60)
    assert r.kind == R.REPLICA_KIND_REPLICA and r.thin and r.size == 16 * MiB and r.allocated == 0
    assert r.device == r.uuid and r.share.protocol == pb.common_pb2.SHARE_PROTOCOL_NONE
    assert api.CreateReplica(req, timeout=60).uuid == r.uuid
    for change, field in [(dict(size=32 * MiB), "size"), (dict(thin=False), "thin"),
                          (dict(uuid="11111111-1111-4111-8111-111111111111"), "uuid")]:
        kw = dict(name="r1", pool="p0", size=16 * MiB, thin=True)
        kw.update(change)
        c, msg = code_of(api.CreateReplica, R.CreateReplicaRequest(**kw))
        assert c == grpc.StatusCode.ALREADY_EXISTS and field in msg, (change, msg)
    # Its UUID under another name.
    c, msg = code_of(api.CreateReplica, R.CreateReplicaRequest(name="r2", pool="p0", size=MiB, uuid=r.uuid))
    assert c == grpc.StatusCode.ALREADY_EXISTS and "uuid" in msg
    for bad, field in [(dict(name="", pool="p0", size=MiB), "name"), (dict(name="x", pool="", size=MiB), "pool"),
                       (dict(name="x", pool="p0", size=0), "size"), (dict(name="x", pool="p0", size=1000), "size"),
                       (dict(name="x", pool="p0", size=MiB, uuid="zz"), "uuid"),
                       (dict(name="x", pool="p0", size=MiB, allowed_hosts=["not-an-nqn"]), "allowed_hosts")]:
        c, msg = code_of(api.CreateReplica, R.CreateReplicaRequest(**bad))
        assert c == grpc.StatusCode.INVALID_ARGUMENT and field in msg, (bad, msg)
    c, _ = code_of(api.CreateReplica, R.CreateReplicaRequest(name="x", pool="nope", size=MiB))
    assert c == grpc.StatusCode.NOT_FOUND
    # Thick and bigger than the pool: no space. Thin: fine (space is taken on first write).
    c, msg = code_of(api.CreateReplica, R.CreateReplicaRequest(name="big", pool="p0", size=1024 * MiB))
    assert c == grpc.StatusCode.RESOURCE_EXHAUSTED, msg
    api.CreateReplica(R.CreateReplicaRequest(name="big", pool="p0", size=1024 * MiB, thin=True), timeout=60)
    # Destroy: by name or UUID; missing is NOT_FOUND.
    api.DestroyReplica(R.ReplicaRef(name="big"), timeout=60)
    api.DestroyReplica(R.ReplicaRef(uuid=r.uuid), timeout=60)
    c, _ = code_of(api.DestroyReplica, R.ReplicaRef(uuid=r.uuid))
    assert c == grpc.StatusCode.NOT_FOUND
    c, _ = code_of(api.DestroyReplica, R.ReplicaRef())
    assert c == grpc.StatusCode.INVALID_ARGUMENT


def test_replica_list_filters_resize_and_stats(node, pb):
    R = pb.replica_pb2
    api = node.api.replica
    a = api.CreateReplica(R.CreateReplicaRequest(name="a", pool="p0", size=8 * MiB), timeout=60)
    b = api.CreateReplica(R.CreateReplicaRequest(name="b", pool="p0", size=8 * MiB, thin=True), timeout=60)
    names = lambda **f: sorted(x.name for x in api.ListReplicas(R.ListReplicasRequest(**f), timeout=60).replicas)
    assert names() == ["a", "b"]
    assert names(name="b") == ["b"]
    assert names(uuid=a.uuid) == ["a"]
    assert names(pool="nope") == []
    # Resize: grow; shrink only when allowed.
    g = api.ResizeReplica(R.ResizeReplicaRequest(replica=R.ReplicaRef(name="b"), size=16 * MiB), timeout=60)
    assert g.size == 16 * MiB
    c, msg = code_of(api.ResizeReplica, R.ResizeReplicaRequest(replica=R.ReplicaRef(name="b"), size=4 * MiB))
    assert c == grpc.StatusCode.INVALID_ARGUMENT, msg
    s = api.ResizeReplica(R.ResizeReplicaRequest(replica=R.ReplicaRef(name="b"), size=4 * MiB, allow_shrink=True),
                          timeout=60)
    assert s.size == 4 * MiB
    # Shared: grows under its hosts (a namespace change for them); shrinking is refused.
    api.ShareReplica(R.ShareReplicaRequest(replica=R.ReplicaRef(name="a"), protocol=pb.common_pb2.SHARE_PROTOCOL_NVMF),
                     timeout=60)
    assert api.ResizeReplica(R.ResizeReplicaRequest(replica=R.ReplicaRef(name="a"), size=16 * MiB),
                             timeout=60).size == 16 * MiB
    c, msg = code_of(api.ResizeReplica, R.ResizeReplicaRequest(replica=R.ReplicaRef(name="a"), size=8 * MiB,
                                                                allow_shrink=True))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "shared" in msg
    # Stats move with I/O.
    T = pb.test_pb2
    node.api.test.WritePattern(T.PatternRequest(device=b.uuid, offset=0, length=MiB, generation=1), timeout=60)
    st = api.GetReplicaStats(R.ListReplicasRequest(name="b"), timeout=60).stats
    assert len(st) == 1 and st[0].uuid == b.uuid and st[0].bytes_written == MiB and st[0].num_flush_ops >= 1
    assert st[0].write_latency.count == st[0].num_write_ops and st[0].write_latency.buckets[-1].count == st[0].num_write_ops
    node.api.stats.ResetIoStats(pb.stats_pb2.GetIoStatsRequest(name=b.uuid), timeout=60)
    st = api.GetReplicaStats(R.ListReplicasRequest(uuid=b.uuid), timeout=60).stats
    assert st[0].bytes_written == 0 and st[0].write_latency.count == 0
    all_stats = api.GetReplicaStats(R.ListReplicasRequest(), timeout=60).stats
    assert sorted(x.name for x in all_stats) == sorted([a.uuid, b.uuid])


def test_share_unshare_allowed_hosts(node, pb, ioperf):
    R, C = pb.replica_pb2, pb.common_pb2
    api = node.api.replica
    r = api.CreateReplica(R.CreateReplicaRequest(name="r", pool="p0", size=8 * MiB, thin=True), timeout=60)
    ref = R.ReplicaRef(name="r")
    h1, h2 = "nqn.2014-08.org.nvmexpress:uuid:host-one", "nqn.2014-08.org.nvmexpress:uuid:host-two"
    s = api.ShareReplica(R.ShareReplicaRequest(replica=ref, protocol=C.SHARE_PROTOCOL_NVMF, allowed_hosts=[h1]), timeout=60)
    uri = s.share.uri
    assert uri == f"nvmf://127.0.0.1:{node.nvmf_port}/nqn.2026-11.io.tern:{r.uuid}"
    assert list(s.share.allowed_hosts) == [h1]
    # Sharing again with the same protocol is fine; another protocol is refused.
    api.ShareReplica(R.ShareReplicaRequest(replica=ref, protocol=C.SHARE_PROTOCOL_NVMF, allowed_hosts=[h1]), timeout=60)
    c, msg = code_of(api.ShareReplica, R.ShareReplicaRequest(replica=ref, protocol=C.SHARE_PROTOCOL_NBD))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "unshare" in msg
    subs = node.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(nqn=f"nqn.2026-11.io.tern:{r.uuid}"),
                                        timeout=60).subsystems
    assert len(subs) == 1 and list(subs[0].allowed_hosts) == [h1] and not subs[0].allow_any_host
    assert subs[0].namespaces[0].device == r.uuid and subs[0].namespaces[0].size == 8 * MiB

    def io(host):
        return ioperf.run("--uri", f"{uri}?hostnqn={host}&ctrl_loss_tmo_s=1", "--rw", "randrw", "--qd", "4",
                          "--time", "300ms", "--verify", timeout=120)

    p = io(h1)
    assert p.returncode == 0, p.stdout + p.stderr
    # A connected host is listed with the path it came in through and the I/O it sent that way.
    import nvme_tcp
    with nvme_tcp.Association(node.nvmf_port, f"nqn.2026-11.io.tern:{r.uuid}", hostnqn=h1) as a:
        assert a.q.write(1, 0, b"\7" * 4096).ok and a.q.read(1, 0, 8)[0].ok
        [sub] = node.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(nqn=f"nqn.2026-11.io.tern:{r.uuid}"),
                                             timeout=60).subsystems
        [ctl] = sub.controllers
        assert ctl.host_nqn == h1 and ctl.cntlid == a.cntlid and ctl.listener == f"127.0.0.1:{node.nvmf_port}"
        assert (ctl.io_commands, ctl.write_bytes, ctl.read_bytes) == (2, 4096, 4096), ctl
    p = io(h2)
    assert p.returncode != 0 and "host" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    # Changing the list takes effect for new connections.
    api.SetReplicaAllowedHosts(R.SetAllowedHostsRequest(replica=ref, allowed_hosts=[h2]), timeout=60)
    assert io(h2).returncode == 0
    assert io(h1).returncode != 0
    # Empty list: any host.
    api.SetReplicaAllowedHosts(R.SetAllowedHostsRequest(replica=ref, allowed_hosts=[]), timeout=60)
    assert io(h1).returncode == 0
    c, msg = code_of(api.SetReplicaAllowedHosts, R.SetAllowedHostsRequest(replica=ref, allowed_hosts=["bad host"]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    # Unshare is idempotent; the subsystem goes; allowed hosts of an unshared replica: precondition.
    u = api.UnshareReplica(ref, timeout=60)
    assert u.share.protocol == C.SHARE_PROTOCOL_NONE
    api.UnshareReplica(ref, timeout=60)
    assert len(node.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(nqn=f"nqn.2026-11.io.tern:{r.uuid}"),
                                        timeout=60).subsystems) == 0
    c, _ = code_of(api.SetReplicaAllowedHosts, R.SetAllowedHostsRequest(replica=ref, allowed_hosts=[h1]))
    assert c == grpc.StatusCode.FAILED_PRECONDITION
    c, _ = code_of(api.ShareReplica, R.ShareReplicaRequest(replica=ref))
    assert c == grpc.StatusCode.INVALID_ARGUMENT


def test_snapshots_and_clones(node, pb):
    R, S, T = pb.replica_pb2, pb.snapshot_pb2, pb.test_pb2
    r = node.api.replica.CreateReplica(R.CreateReplicaRequest(name="r", pool="p0", size=8 * MiB, thin=True), timeout=60)
    node.api.test.WritePattern(T.PatternRequest(device=r.uuid, offset=0, length=8 * MiB, generation=1), timeout=60)
    snap = node.api.snapshot.CreateSnapshot(S.CreateSnapshotRequest(replica=R.ReplicaRef(name="r"), name="s1"), timeout=60)
    assert snap.kind == R.REPLICA_KIND_SNAPSHOT and snap.parent_uuid == r.uuid
    # Idempotent; the same name for another kind of object is ALREADY_EXISTS.
    assert node.api.snapshot.CreateSnapshot(S.CreateSnapshotRequest(replica=R.ReplicaRef(name="r"), name="s1"),
                                            timeout=60).uuid == snap.uuid
    c, _ = code_of(node.api.snapshot.CreateSnapshot, S.CreateSnapshotRequest(replica=R.ReplicaRef(name="r"), name="r"))
    assert c == grpc.StatusCode.ALREADY_EXISTS
    c, _ = code_of(node.api.snapshot.CreateSnapshot, S.CreateSnapshotRequest(replica=R.ReplicaRef(name="s1"), name="x"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    # The replica moves on; the snapshot keeps generation 1.
    node.api.test.WritePattern(T.PatternRequest(device=r.uuid, offset=0, length=8 * MiB, generation=2), timeout=60)
    v = node.api.test.VerifyPattern(T.PatternRequest(device=snap.uuid, offset=0, length=8 * MiB, generation=1), timeout=60)
    assert v.ok, v.mismatch
    clone = node.api.snapshot.CreateClone(S.CreateCloneRequest(snapshot=R.ReplicaRef(name="s1"), name="c1"), timeout=60)
    assert clone.kind == R.REPLICA_KIND_CLONE and clone.parent_uuid == snap.uuid and clone.allocated == 0
    assert node.api.snapshot.CreateClone(S.CreateCloneRequest(snapshot=R.ReplicaRef(name="s1"), name="c1"),
                                         timeout=60).uuid == clone.uuid
    c, _ = code_of(node.api.snapshot.CreateClone, S.CreateCloneRequest(snapshot=R.ReplicaRef(name="r"), name="c2"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    v = node.api.test.VerifyPattern(T.PatternRequest(device=clone.uuid, offset=0, length=8 * MiB, generation=1), timeout=60)
    assert v.ok, v.mismatch
    snaps = node.api.snapshot.ListSnapshots(S.ListSnapshotsRequest(source_uuid=r.uuid), timeout=60).replicas
    assert [x.uuid for x in snaps] == [snap.uuid]
    clones = node.api.snapshot.ListClones(S.ListSnapshotsRequest(source_uuid=snap.uuid), timeout=60).replicas
    assert [x.uuid for x in clones] == [clone.uuid]
    # ListReplicas shows replicas and clones; snapshots only when asked.
    names = lambda **f: sorted(x.name for x in node.api.replica.ListReplicas(R.ListReplicasRequest(**f), timeout=60).replicas)
    assert names() == ["c1", "r"] and names(include_snapshots=True) == ["c1", "r", "s1"]
    # Wrong service for the kind: a clear error.
    c, msg = code_of(node.api.replica.DestroyReplica, R.ReplicaRef(name="s1"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "DestroySnapshot" in msg
    c, msg = code_of(node.api.snapshot.DestroySnapshot, R.ReplicaRef(name="r"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    node.api.snapshot.DestroySnapshot(R.ReplicaRef(name="s1"), timeout=60)
    # The clone still reads its data (the snapshot merged into it).
    v = node.api.test.VerifyPattern(T.PatternRequest(device=clone.uuid, offset=0, length=8 * MiB, generation=1), timeout=60)
    assert v.ok, v.mismatch
    c, _ = code_of(node.api.snapshot.DestroySnapshot, R.ReplicaRef(name="s1"))
    assert c == grpc.StatusCode.NOT_FOUND


def test_uuid_is_unique_on_the_node_for_every_create(engines, scratch, pb):
    """A UUID used on one pool is refused by CreateReplica, CreateSnapshot and CreateClone on another
    (snapshots and clones used to be made anyway, their device clashing with the holder's), and nothing
    is left behind."""
    R, S = pb.replica_pb2, pb.snapshot_pb2
    disks = [f"uring://{make_file(scratch / f'p{i}.img', 128 * MiB)}" for i in range(2)]
    e = engines(pools=[("p0", disks[0]), ("p1", disks[1])])
    taken = "0b5e55ed-0000-4000-8000-000000000002"
    holder = e.api.replica.CreateReplica(R.CreateReplicaRequest(name="holder", pool="p1", size=8 * MiB, thin=True,
                                                                uuid=taken), timeout=60)
    e.api.replica.CreateReplica(R.CreateReplicaRequest(name="r0", pool="p0", size=8 * MiB, thin=True), timeout=60)
    e.api.snapshot.CreateSnapshot(S.CreateSnapshotRequest(replica=R.ReplicaRef(name="r0"), name="s0"), timeout=60)
    used = f"uuid {taken} is already used by 'holder' on pool 'p1'"
    for call, req in [
            (e.api.replica.CreateReplica, R.CreateReplicaRequest(name="r1", pool="p0", size=8 * MiB, uuid=taken)),
            (e.api.snapshot.CreateSnapshot, S.CreateSnapshotRequest(replica=R.ReplicaRef(name="r0"), name="s1",
                                                                    uuid=taken)),
            (e.api.snapshot.CreateClone, S.CreateCloneRequest(snapshot=R.ReplicaRef(name="s0"), name="c1", uuid=taken)),
            (e.api.snapshot.CreateClone, S.CreateCloneRequest(snapshot=R.ReplicaRef(name="s0"), name="c1", uuid=taken,
                                                              share=pb.common_pb2.SHARE_PROTOCOL_NVMF))]:
        c, msg = code_of(call, req)
        assert c == grpc.StatusCode.ALREADY_EXISTS and msg == used, (req, c, msg)
    objs = e.api.replica.ListReplicas(R.ListReplicasRequest(include_snapshots=True), timeout=60).replicas
    assert sorted((x.pool, x.name) for x in objs) == [("p0", "r0"), ("p0", "s0"), ("p1", "holder")]
    [h] = [x for x in objs if x.name == "holder"]
    assert h.uuid == holder.uuid and h.device == taken
    subs = e.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(), timeout=60).subsystems
    assert all(taken not in s.nqn for s in subs), [s.nqn for s in subs]


def test_bdevs(node, pb):
    B = pb.bdev_pb2
    api = node.api.bdev
    b = api.CreateBdev(B.CreateBdevRequest(uri="malloc:///m0?size_mb=8"), timeout=60)
    assert b.name == "m0" and b.product == "malloc" and b.size == 8 * MiB and b.uri == "malloc:///m0?size_mb=8"
    assert api.CreateBdev(B.CreateBdevRequest(uri="malloc:///m0?size_mb=8"), timeout=60).uuid == b.uuid
    c, msg = code_of(api.CreateBdev, B.CreateBdevRequest(uri="malloc:///m0?size_mb=16"))
    assert c == grpc.StatusCode.ALREADY_EXISTS, msg
    for bad in ["", "nonsense", "bogus:///x", "malloc:///m1?size_mb=abc"]:
        c, msg = code_of(api.CreateBdev, B.CreateBdevRequest(uri=bad))
        assert c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND), (bad, c, msg)
    names = [x.name for x in api.ListBdevs(B.ListBdevsRequest(), timeout=60).bdevs]
    assert "m0" in names and any(x.endswith("p0.img") for x in names)
    c, _ = code_of(api.ListBdevs, B.ListBdevsRequest(name="nope"))
    assert c == grpc.StatusCode.NOT_FOUND
    s = api.ShareBdev(B.ShareBdevRequest(name="m0", protocol=pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60)
    assert s.share.uri == f"nvmf://127.0.0.1:{node.nvmf_port}/nqn.2026-11.io.tern:m0" and s.open_count == 1
    # Open (shared) devices need force; the pool's disk is refused outright.
    c, msg = code_of(api.DestroyBdev, B.DestroyBdevRequest(name=[x for x in names if x.endswith("p0.img")][0]))
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "p0" in msg
    assert api.UnshareBdev(B.BdevRef(name="m0"), timeout=60).share.protocol == pb.common_pb2.SHARE_PROTOCOL_NONE
    api.DestroyBdev(B.DestroyBdevRequest(name="m0"), timeout=60)
    c, _ = code_of(api.DestroyBdev, B.DestroyBdevRequest(name="m0"))
    assert c == grpc.StatusCode.NOT_FOUND
    # A replica's device is destroyed through the replica API.
    r = node.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="r", pool="p0", size=MiB), timeout=60)
    c, msg = code_of(api.DestroyBdev, B.DestroyBdevRequest(name=r.uuid))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "replica" in msg
    # Sharing a replica's device through the bdev API is remembered like a replica share.
    api.ShareBdev(B.ShareBdevRequest(name=r.uuid, protocol=pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60)
    rep = node.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(uuid=r.uuid), timeout=60).replicas[0]
    assert rep.share.protocol == pb.common_pb2.SHARE_PROTOCOL_NVMF


def test_nvmf_listing_and_ana(node, pb, ioperf):
    N = pb.nvmf_pb2
    r = node.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
        name="r", pool="p0", size=4 * MiB, share=pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60)
    nqn = f"nqn.2026-11.io.tern:{r.uuid}"
    assert list(node.api.nvmf.ListListeners(pb.common_pb2.Empty(), timeout=60).listeners) == [f"127.0.0.1:{node.nvmf_port}"]
    subs = {s.nqn: s for s in node.api.nvmf.ListSubsystems(N.ListSubsystemsRequest(), timeout=60).subsystems}
    assert nqn in subs and subs[nqn].allow_any_host and subs[nqn].listeners == [f"127.0.0.1:{node.nvmf_port}"]
    node.api.nvmf.SetAnaState(N.SetAnaStateRequest(nqn=nqn, state="non-optimized"), timeout=60)
    s = node.api.nvmf.ListSubsystems(N.ListSubsystemsRequest(nqn=nqn), timeout=60).subsystems[0]
    assert [(a.listener, a.group, a.state) for a in s.ana] == [(f"127.0.0.1:{node.nvmf_port}", 1, "non-optimized")]
    for bad in [dict(nqn=nqn, state="sideways"), dict(nqn=nqn, state="optimized", listener="nope"),
                dict(nqn="", state="optimized")]:
        c, _ = code_of(node.api.nvmf.SetAnaState, N.SetAnaStateRequest(**bad))
        assert c == grpc.StatusCode.INVALID_ARGUMENT, bad
    c, _ = code_of(node.api.nvmf.SetAnaState, N.SetAnaStateRequest(nqn="nqn.2026-11.io.tern:none", state="optimized"))
    assert c == grpc.StatusCode.NOT_FOUND


def test_test_hooks_error_injection_and_verify(node, pb):
    T, B = pb.test_pb2, pb.bdev_pb2
    node.api.bdev.CreateBdev(B.CreateBdevRequest(uri="malloc:///m0?size_mb=4"), timeout=60)
    node.api.bdev.CreateBdev(B.CreateBdevRequest(uri="error:///e0?base=m0"), timeout=60)
    node.api.test.WritePattern(T.PatternRequest(device="e0", offset=0, length=4 * MiB, generation=7), timeout=60)
    assert node.api.test.VerifyPattern(T.PatternRequest(device="e0", offset=0, length=4 * MiB, generation=7), timeout=60).ok
    v = node.api.test.VerifyPattern(T.PatternRequest(device="e0", offset=0, length=4 * MiB, generation=8), timeout=60)
    assert not v.ok and "generation" in v.mismatch
    node.api.test.SetErrorRules(T.SetErrorRulesRequest(device="e0", rules=["op=write,errno=EIO"]), timeout=60)
    c, msg = code_of(node.api.test.WritePattern, T.PatternRequest(device="e0", offset=0, length=MiB, generation=9))
    assert c == grpc.StatusCode.UNAVAILABLE and "writing" in msg
    node.api.test.SetErrorRules(T.SetErrorRulesRequest(device="e0", rules=[]), timeout=60)
    node.api.test.WritePattern(T.PatternRequest(device="e0", offset=0, length=MiB, generation=9), timeout=60)
    for bad in [dict(device="e0", offset=0, length=0), dict(device="e0", offset=100, length=512),
                dict(device="e0", offset=0, length=8 * MiB)]:
        c, _ = code_of(node.api.test.VerifyPattern, T.PatternRequest(**bad))
        assert c == grpc.StatusCode.INVALID_ARGUMENT, bad
    c, _ = code_of(node.api.test.SetErrorRules, T.SetErrorRulesRequest(device="m0", rules=[]))
    assert c == grpc.StatusCode.NOT_FOUND
    c, _ = code_of(node.api.test.SetErrorRules, T.SetErrorRulesRequest(device="e0", rules=["garbage"]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    node.api.bdev.CreateBdev(B.CreateBdevRequest(uri="delay:///d0?base=e0"), timeout=60)
    node.api.test.SetDelay(T.SetDelayRequest(device="d0", read_us=100), timeout=60)
    reactors = node.api.stats.GetReactorStats(pb.common_pb2.Empty(), timeout=60).reactors
    assert len(reactors) == 1 and reactors[0].busy_ns + reactors[0].idle_ns > 0


def test_cli_walkthrough_and_exit_codes(node, scratch):
    ok = node.ternctl_json
    pools = ok("pool", "list")["pools"]
    assert [p["name"] for p in pools] == ["p0"]
    r = ok("replica", "create", "vol", "--pool", "p0", "--size", "8MiB", "--thin", "--share", "nvmf")
    assert r["share"]["uri"].startswith(f"nvmf://127.0.0.1:{node.nvmf_port}/")
    # Tables by default, YAML on request.
    t = node.ternctl("replica", "list")
    assert t.returncode == 0 and t.stdout.splitlines()[0].split()[:3] == ["NAME", "UUID", "POOL"] and "vol" in t.stdout
    y = node.ternctl("pool", "list", "-o", "yaml")
    assert y.returncode == 0 and "name: p0" in y.stdout
    assert ok("replica", "create", "vol", "--pool", "p0", "--size", "8MiB", "--thin", "--share", "nvmf")["uuid"] == r["uuid"]
    ok("snapshot", "create", "vol", "s")
    ok("clone", "create", "s", "c")
    assert {x["name"] for x in ok("replica", "list", "--all")["replicas"]} == {"vol", "s", "c"}
    ok("bdev", "create", "malloc:///m9?size_mb=4")
    ok("test", "write-pattern", "m9", "--length", "1MiB", "--generation", "3")
    assert node.ternctl("test", "verify-pattern", "m9", "--length", "1MiB", "--generation", "3").returncode == 0
    bad = node.ternctl("test", "verify-pattern", "m9", "--length", "1MiB", "--generation", "4")
    assert bad.returncode == 1 and "FAILED" in bad.stdout
    assert ok("stats", "io", "m9")["stats"][0]["name"] == "m9"
    assert node.ternctl("stats", "reactors").returncode == 0
    assert ok("node", "info")["node_name"] == node.name
    assert ok("nvmf", "subsystems")["subsystems"]
    # Exit codes and messages that say what to do.
    cases = [
        (["replica", "create", "vol", "--pool", "p0", "--size", "16MiB", "--thin"], 4, "size"),
        (["replica", "destroy", "nope"], 3, "replica list"),
        (["pool", "destroy", "nope"], 3, "pool list"),
        (["replica", "create", "x", "--pool", "p0", "--size", "1000"], 9, "size"),
        (["replica", "create", "x", "--pool", "p0", "--size", "12parsecs"], 2, "size"),
        (["replica", "create", "huge", "--pool", "p0", "--size", "10GiB"], 6, "free cluster"),
        (["replica", "resize", "vol", "4MiB", "--allow-shrink"], 5, "shared"),
        (["pool", "create", "p1"], 2, "disk"),
    ]
    for args, rc, words in cases:
        p = node.ternctl(*args)
        assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
        assert words in (p.stdout + p.stderr).lower(), (args, p.stderr)
    gone = node.ternctl("pool", "list", "--engine", "127.0.0.1:1", "--timeout", "5")
    assert gone.returncode == 7 and "cannot reach" in gone.stderr
    ok("replica", "destroy", "c")
    ok("snapshot", "destroy", "s")
    ok("replica", "unshare", "vol")
    ok("replica", "destroy", "vol")
    assert ok("replica", "list")["replicas"] == []


def test_nbd_share_with_real_clients(node, pb, scratch):
    """A replica shared over NBD works with nbdinfo and qemu-img, and the share survives a restart."""
    import subprocess
    R, C = pb.replica_pb2, pb.common_pb2
    r = node.api.replica.CreateReplica(R.CreateReplicaRequest(name="nb", pool="p0", size=16 * MiB, thin=True,
                                                              share=C.SHARE_PROTOCOL_NBD), timeout=60)
    assert r.share.uri == f"nbd://127.0.0.1:{node.nbd_port}/{r.uuid}"
    assert node.info.nbd_endpoint == f"127.0.0.1:{node.nbd_port}"
    c, msg = code_of(node.api.replica.ShareReplica, R.ShareReplicaRequest(
        replica=R.ReplicaRef(name="nb"), protocol=C.SHARE_PROTOCOL_NBD, allowed_hosts=["nqn.2014-08.org.x:h"]))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "allowed_hosts" in msg

    def run(*cmd):
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (cmd, p.stdout, p.stderr)
        return p.stdout

    info = json.loads(run("nbdinfo", "--json", r.share.uri))
    assert info["exports"][0]["export-size"] == 16 * MiB
    src = scratch / "src.raw"
    src.write_bytes(os.urandom(16 * MiB))
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), r.share.uri)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), r.share.uri)
    node.restart()
    rep = node.api.replica.ListReplicas(R.ListReplicasRequest(name="nb"), timeout=60).replicas[0]
    assert rep.share.uri == r.share.uri
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), r.share.uri)
    node.api.replica.UnshareReplica(R.ReplicaRef(name="nb"), timeout=60)
    p = subprocess.run(["nbdinfo", r.share.uri], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0


def test_concurrent_requests_are_serialized_per_pool(engines, scratch, pb):
    """Many clients creating the same replicas at once get one replica each (the same UUID for every
    caller), on two pools in parallel; then concurrent destroys: one succeeds, the rest are NOT_FOUND."""
    from concurrent.futures import ThreadPoolExecutor
    disks = [f"uring://{make_file(scratch / f'p{i}.img', 128 * MiB)}" for i in range(2)]
    e = engines(pools=[("p0", disks[0]), ("p1", disks[1])])
    R = pb.replica_pb2

    def create(i):
        pool = f"p{i % 2}"
        return pool, e.api.replica.CreateReplica(R.CreateReplicaRequest(
            name=f"r{i % 4}", pool=pool, size=8 * MiB, thin=True, share=pb.common_pb2.SHARE_PROTOCOL_NVMF),
            timeout=120).uuid

    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(create, range(64)))
    by_key = {}
    for i, (pool, uuid) in enumerate(results):
        by_key.setdefault((pool, f"r{i % 4}"), set()).add(uuid)
    assert len(by_key) == 4 and all(len(u) == 1 for u in by_key.values()), by_key
    reps = e.api.replica.ListReplicas(R.ListReplicasRequest(), timeout=60).replicas
    assert len(reps) == 4 and all(r.share.uri for r in reps)
    subs = e.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(), timeout=60).subsystems
    assert len(subs) == 4

    def destroy(_):
        try:
            e.api.replica.DestroyReplica(R.ReplicaRef(name="r0", pool="p0"), timeout=120)
            return "ok"
        except grpc.RpcError as ex:
            return ex.code()

    with ThreadPoolExecutor(8) as ex:
        outcomes = list(ex.map(destroy, range(8)))
    assert outcomes.count("ok") == 1 and outcomes.count(grpc.StatusCode.NOT_FOUND) == 7, outcomes

    # Creates racing an export of their pool: each one either lands before it or is NOT_FOUND.
    def create_late(i):
        try:
            e.api.replica.CreateReplica(R.CreateReplicaRequest(name=f"late{i}", pool="p1", size=MiB), timeout=120)
            return "ok"
        except grpc.RpcError as ex:
            return ex.code()

    with ThreadPoolExecutor(9) as ex:
        futs = [ex.submit(create_late, i) for i in range(8)]
        export = ex.submit(lambda: e.api.pool.ExportPool(pb.pool_pb2.PoolRef(name="p1"), timeout=120))
        outcomes = [f.result() for f in futs]
        export.result()
    assert set(outcomes) <= {"ok", grpc.StatusCode.NOT_FOUND}, outcomes
    back = e.api.pool.ImportPool(pb.pool_pb2.ImportPoolRequest(disk=disks[1]), timeout=60)
    assert back.replica_count == 2 + outcomes.count("ok")  # r1, r3 and the creates that made it


def test_vendor_snapshot_commands_over_nvme_tcp(node, pb):
    """tern's vendor admin commands as any NVMe/TCP host can send them (src/nvmf/vendor.h): a snapshot of
    the namespace's replica (C1h), its retry, its drop (C5h); a payload that is not ours, a namespace that
    does not exist and an opcode nobody handles get clear NVMe errors; a host fenced off by another's
    reservation gets Reservation Conflict and takes nothing."""
    import struct
    import uuid as uuidlib
    import nvme_tcp as nt
    R, S = pb.replica_pb2, pb.snapshot_pb2
    r = node.api.replica.CreateReplica(R.CreateReplicaRequest(name="vr", pool="p0", size=8 * MiB, thin=True,
                                                             share=pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60)
    nqn = f"nqn.2026-11.io.tern:{r.uuid}"
    snap_uuid = uuidlib.uuid4()

    def payload(name=b"vs1", u=snap_uuid, magic=0x504E5354, version=1):
        return struct.pack("<IHH16s8s256s", magic, version, len(name), u.bytes, bytes(8), name)

    def vendor(admin, opc, data, nsid=1):
        c, _ = admin.command(nt.sqe(opc, admin.next_cid(), nsid=nsid, sgl=(0, len(data), nt.SGL_ICD)), data)
        return c

    def snaps():
        return [(s.uuid, s.name) for s in
                node.api.snapshot.ListSnapshots(S.ListSnapshotsRequest(source_uuid=r.uuid), timeout=60).replicas]

    with nt.Association(node.nvmf_port, nqn, hostnqn="nqn.2014-08.org.nvmexpress:uuid:vendor-a") as a:
        c = vendor(a.admin, 0xC1, payload())
        assert c.ok and c.dw0 & 1 == 0, c
        assert snaps() == [(str(snap_uuid), "vs1")]
        c = vendor(a.admin, 0xC1, payload())
        assert c.ok and c.dw0 & 1 == 1, c  # existed
        # Not our payload; no such namespace; an opcode nobody handles.
        assert vendor(a.admin, 0xC1, payload(magic=0x12345678)).is_(0, 0x02)
        assert vendor(a.admin, 0xC1, payload(version=9)).is_(0, 0x02)
        assert vendor(a.admin, 0xC1, payload(name=b"")).is_(0, 0x02)
        assert vendor(a.admin, 0xC1, payload()[:100]).is_(0, 0x02)
        assert vendor(a.admin, 0xC1, payload(), nsid=7).is_(0, 0x0B)
        assert vendor(a.admin, 0xC9, payload()).is_(0, 0x01)
        # The name taken by another object on the pool: EEXIST, as a vendor-specific status.
        c = vendor(a.admin, 0xC1, payload(name=b"vr", u=uuidlib.uuid4()))
        assert c.is_(7, 17), c
        # Host A holds a write-exclusive reservation: host B may not take a snapshot.
        assert a.q.resv_register(1, 0, nrkey=0xA).ok
        assert a.q.resv_acquire(1, 0, 1, crkey=0xA).ok
        with nt.Association(node.nvmf_port, nqn, hostnqn="nqn.2014-08.org.nvmexpress:uuid:vendor-b") as b:
            other = uuidlib.uuid4()
            assert vendor(b.admin, 0xC1, payload(name=b"vs2", u=other)).is_(0, 0x83)
            assert vendor(b.admin, 0xC5, payload()).is_(0, 0x83)
        assert snaps() == [(str(snap_uuid), "vs1")]
        # The holder drops it; dropping again is fine.
        assert vendor(a.admin, 0xC5, payload()).ok
        assert snaps() == []
        assert vendor(a.admin, 0xC5, payload()).ok
    node.api.replica.DestroyReplica(R.ReplicaRef(name="vr"), timeout=60)
