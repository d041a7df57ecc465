"""tern-csi against a real cluster (etcd, two agents, three engines with file pools), driven the way
Kubernetes' sidecars drive it: identity, the controller's volume, publish, expand and snapshot calls
with their retries and error paths, a crash of the plugin mid-life, a standby agent first in the list;
and the node plugin's calls that need no kernel NVMe/TCP host (info, capabilities, argument errors, the
bind mounts of publish). Staging over the kernel's NVMe/TCP host is in test_csi_kernel.py (the guest).

What the CSI sanity suite checks is covered here by name where it applies to a plugin with these
capabilities (idempotent create/delete, ALREADY_EXISTS on a different size, NOT_FOUND on missing volumes
and snapshots, pagination and bad tokens, node ID checks)."""
import os
import signal
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from control_cluster import LocalCluster
from csi_driver import Plugin, block_cap, code_of, mount_cap, pb

C = grpc.StatusCode
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b6e3f1c-5a2d-4c8e-9f10-1c0ffee0c0de"
OTHER_NQN = "nqn.2014-08.org.nvmexpress:uuid:0b6e3f1c-5a2d-4c8e-9f10-1c0ffee0beef"
MiB = 1 << 20


class Env:
    pass


@pytest.fixture(scope="module")
def env(build_dir, tmp_path_factory):
    e = Env()
    wd = tmp_path_factory.mktemp("csi")
    e.cl = LocalCluster(build_dir, wd, engines=3, agents=2, node_labels={0: {"zone": "a"}, 1: {"zone": "b"}, 2: {"zone": "c"}})
    e.plugins = []
    try:
        for eng in e.cl.engines:
            e.cl.rest.ok("PUT", f"/v1/pools/p-{eng.name}", {"node": eng.name, "disk": e.cl.disk(eng, "p0"),
                                                             "labels": {"class": "ssd" if eng.name != "node2" else "hdd"}})
        leader = e.cl.leader
        standby = next(a for a in e.cl.agents if a is not leader)
        # The standby first: every call must move on from its 503 to the leader.
        urls = ",".join(f"http://127.0.0.1:{a.rest_port}" for a in (standby, leader))
        binary = build_dir / "tools/tern-csi/tern-csi"
        e.ctrl = Plugin(binary, wd, "controller", ["--agent-url", urls]).start()
        e.node = Plugin(binary, wd, "node", ["--node-name", "node0", "--host-nqn", HOSTNQN, "--agent-url", urls],
                        name="csi-node").start()
        e.plugins = [e.ctrl, e.node]
        e.binary, e.urls, e.wd = binary, urls, wd
        yield e
    finally:
        errors = []
        for p in e.plugins:
            try:
                p.stop()
            except AssertionError as x:
                errors.append(str(x))
        e.cl.stop()
        assert not errors, "\n".join(errors)


def create(env, name, size=16 * MiB, params=None, caps=None, limit=0, source=None, timeout=120):
    c = pb().csi_pb2
    req = c.CreateVolumeRequest(name=name, capacity_range=c.CapacityRange(required_bytes=size, limit_bytes=limit),
                                volume_capabilities=caps or [mount_cap("ext4")], parameters=params or {})
    if source:
        req.volume_content_source.snapshot.snapshot_id = source
    return env.ctrl.controller.CreateVolume(req, timeout=timeout).volume


def node_id(name="node0", nqn=HOSTNQN):
    return f"{name}/{nqn}"


def publish(env, vol, nid=None, cap=None):
    c = pb().csi_pb2
    return env.ctrl.controller.ControllerPublishVolume(
        c.ControllerPublishVolumeRequest(volume_id=vol, node_id=nid or node_id(), volume_capability=cap or mount_cap()),
        timeout=120).publish_context


def unpublish(env, vol, nid=None):
    c = pb().csi_pb2
    env.ctrl.controller.ControllerUnpublishVolume(c.ControllerUnpublishVolumeRequest(volume_id=vol, node_id=nid or node_id()),
                                                  timeout=120)


def delete(env, vol):
    env.ctrl.controller.DeleteVolume(pb().csi_pb2.DeleteVolumeRequest(volume_id=vol), timeout=120)


def test_identity(env):
    c = pb().csi_pb2
    for p in (env.ctrl, env.node):
        info = p.identity.GetPluginInfo(c.GetPluginInfoRequest(), timeout=10)
        assert info.name == "io.tern.csi" and info.vendor_version
        caps = p.identity.GetPluginCapabilities(c.GetPluginCapabilitiesRequest(), timeout=10).capabilities
        services = {x.service.type for x in caps if x.HasField("service")}
        assert c.PluginCapability.Service.CONTROLLER_SERVICE in services
        assert any(x.volume_expansion.type == c.PluginCapability.VolumeExpansion.ONLINE
                   for x in caps if x.HasField("volume_expansion"))
        assert p.identity.Probe(c.ProbeRequest(), timeout=10).ready.value is True


def test_controller_capabilities(env):
    c = pb().csi_pb2
    caps = {x.rpc.type for x in env.ctrl.controller.ControllerGetCapabilities(
        c.ControllerGetCapabilitiesRequest(), timeout=10).capabilities}
    T = c.ControllerServiceCapability.RPC
    for want in (T.CREATE_DELETE_VOLUME, T.PUBLISH_UNPUBLISH_VOLUME, T.LIST_VOLUMES, T.GET_CAPACITY,
                 T.CREATE_DELETE_SNAPSHOT, T.LIST_SNAPSHOTS, T.EXPAND_VOLUME, T.GET_VOLUME, T.VOLUME_CONDITION):
        assert want in caps, T.Name(want)


def test_create_is_idempotent_and_refuses_a_different_volume_by_the_same_name(env):
    name = f"pvc-{uuid.uuid4()}"
    params = {"replicas": "2", "thin": "true", "poolLabels": "class=ssd", "spread": "zone",
              "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"}
    v = create(env, name, size=16 * MiB + 1, params=params)
    assert v.capacity_bytes == 16 * MiB + 4096  # rounded up to 4 KiB
    uuid.UUID(v.volume_id)
    assert v.volume_context["fsType"] == "ext4" and v.volume_context["protocol"] == "nvmf"
    # A retry with the same arguments returns the same volume.
    assert create(env, name, size=16 * MiB + 1, params=params).volume_id == v.volume_id
    rv = env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")
    assert rv["replicas"] == 1 + 1 and rv["thin"] is True
    assert rv["labels"]["csi.tern.io/name"] == name and rv["labels"]["csi.tern.io/pvc"] == "db/data"
    # The StorageClass's topology reached the placement: the two ssd pools, on nodes of different zones.
    assert sorted(r["node"] for r in rv["replica_details"]) == ["node0", "node1"]
    assert rv["topology"]["pool_labels"] == {"class": "ssd"} and rv["topology"]["spread"] == ["zone"]
    code, msg = code_of(create, env, name, size=32 * MiB, params=params)
    assert code == C.ALREADY_EXISTS, msg
    code, msg = code_of(create, env, name, size=16 * MiB + 1, params={**params, "replicas": "1"})
    assert code == C.ALREADY_EXISTS, msg
    delete(env, v.volume_id)


def test_create_argument_errors(env):
    c = pb().csi_pb2
    cases = [
        (c.CreateVolumeRequest(volume_capabilities=[mount_cap()]), C.INVALID_ARGUMENT, "name"),
        (c.CreateVolumeRequest(name="pvc-nocaps"), C.INVALID_ARGUMENT, "volume_capabilities"),
        (c.CreateVolumeRequest(name="pvc-multi", volume_capabilities=[mount_cap(mode="MULTI_NODE_MULTI_WRITER")]),
         C.INVALID_ARGUMENT, "MULTI_NODE_MULTI_WRITER"),
        (c.CreateVolumeRequest(name="pvc-fs", volume_capabilities=[mount_cap("btrfs")]), C.INVALID_ARGUMENT, "btrfs"),
        (c.CreateVolumeRequest(name="pvc-param", volume_capabilities=[mount_cap()], parameters={"replica": "2"}),
         C.INVALID_ARGUMENT, "replica"),
        (c.CreateVolumeRequest(name="pvc-range", volume_capabilities=[mount_cap()],
                               capacity_range=c.CapacityRange(required_bytes=10 * MiB, limit_bytes=MiB)),
         C.OUT_OF_RANGE, "limit"),
        (c.CreateVolumeRequest(name="pvc-huge", volume_capabilities=[mount_cap()],
                               capacity_range=c.CapacityRange(required_bytes=1 << 40)), C.RESOURCE_EXHAUSTED, ""),
        (c.CreateVolumeRequest(name="pvc-nosnap", volume_capabilities=[mount_cap()],
                               volume_content_source=c.VolumeContentSource(
                                   snapshot=c.VolumeContentSource.SnapshotSource(snapshot_id=str(uuid.uuid4())))),
         C.NOT_FOUND, "snapshot"),
    ]
    for req, want, word in cases:
        code, msg = code_of(env.ctrl.controller.CreateVolume, req, timeout=120)
        assert code == want, f"{req.name}: {code} {msg}"
        assert word in msg, msg
    # Nothing was left behind by the refused ones.
    assert not [v for v in env.cl.rest.ok("GET", "/v1/volumes") if v["labels"].get("csi.tern.io/name", "").startswith(
        ("pvc-huge", "pvc-nosnap"))]


def test_publish_unpublish_and_delete(env):
    v = create(env, f"pvc-{uuid.uuid4()}", params={"replicas": "2"})
    ctx = publish(env, v.volume_id)
    assert ctx["uri"].startswith("nvmf://") and v.volume_id in ctx["uri"]
    t = env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["target"]
    # Node0 runs an engine: the target is local to the pod's node, and only its host may connect.
    assert t["node"] == "node0" and t["allowed_hosts"] == [HOSTNQN]
    assert publish(env, v.volume_id) == ctx  # the attacher's retry
    code, msg = code_of(publish, env, v.volume_id, node_id("node1", OTHER_NQN))
    assert code == C.FAILED_PRECONDITION, msg
    code, msg = code_of(delete, env, v.volume_id)
    assert code == C.FAILED_PRECONDITION, msg
    unpublish(env, v.volume_id, node_id("node1", OTHER_NQN))  # not published there: nothing to do
    assert "target" in env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")
    unpublish(env, v.volume_id)
    assert "target" not in env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")
    unpublish(env, v.volume_id)  # again: OK
    # A node without an engine: the agent chooses where the target goes.
    ctx = publish(env, v.volume_id, node_id("worker-9", OTHER_NQN))
    t = env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["target"]
    assert t["node"] in ("node0", "node1", "node2") and t["allowed_hosts"] == [OTHER_NQN]
    unpublish(env, v.volume_id, node_id("worker-9", OTHER_NQN))
    delete(env, v.volume_id)
    assert env.cl.rest.get(f"/v1/volumes/{v.volume_id}")[0] == 404
    delete(env, v.volume_id)  # again: OK
    delete(env, "not-a-tern-volume")  # never existed: OK


def test_publish_errors(env):
    c = pb().csi_pb2
    missing = str(uuid.uuid4())
    assert code_of(publish, env, missing)[0] == C.NOT_FOUND
    v = create(env, f"pvc-{uuid.uuid4()}")
    assert code_of(publish, env, v.volume_id, "node0")[0] == C.NOT_FOUND  # not a node ID of this driver
    for req in (c.ControllerPublishVolumeRequest(node_id=node_id(), volume_capability=mount_cap()),
                c.ControllerPublishVolumeRequest(volume_id=v.volume_id, volume_capability=mount_cap()),
                c.ControllerPublishVolumeRequest(volume_id=v.volume_id, node_id=node_id())):
        assert code_of(env.ctrl.controller.ControllerPublishVolume, req, timeout=30)[0] == C.INVALID_ARGUMENT
    assert code_of(env.ctrl.controller.ControllerUnpublishVolume, c.ControllerUnpublishVolumeRequest(node_id=node_id()),
                   timeout=30)[0] == C.INVALID_ARGUMENT
    unpublish(env, missing)  # a volume that is gone is unpublished everywhere
    delete(env, v.volume_id)


def test_validate_and_get_volume(env):
    c = pb().csi_pb2
    v = create(env, f"pvc-{uuid.uuid4()}")
    r = env.ctrl.controller.ValidateVolumeCapabilities(
        c.ValidateVolumeCapabilitiesRequest(volume_id=v.volume_id, volume_capabilities=[mount_cap(), block_cap()]),
        timeout=30)
    assert len(r.confirmed.volume_capabilities) == 2
    r = env.ctrl.controller.ValidateVolumeCapabilities(
        c.ValidateVolumeCapabilitiesRequest(volume_id=v.volume_id,
                                            volume_capabilities=[mount_cap(mode="MULTI_NODE_READER_ONLY")]), timeout=30)
    assert not r.HasField("confirmed") and "MULTI_NODE_READER_ONLY" in r.message
    assert code_of(env.ctrl.controller.ValidateVolumeCapabilities,
                   c.ValidateVolumeCapabilitiesRequest(volume_id=str(uuid.uuid4()), volume_capabilities=[mount_cap()]),
                   timeout=30)[0] == C.NOT_FOUND
    g = env.ctrl.controller.ControllerGetVolume(c.ControllerGetVolumeRequest(volume_id=v.volume_id), timeout=30)
    assert g.volume.volume_id == v.volume_id and g.volume.capacity_bytes == v.capacity_bytes
    assert not g.status.volume_condition.abnormal and "online" in g.status.volume_condition.message
    assert code_of(env.ctrl.controller.ControllerGetVolume, c.ControllerGetVolumeRequest(volume_id=str(uuid.uuid4())),
                   timeout=30)[0] == C.NOT_FOUND
    delete(env, v.volume_id)


def test_list_volumes_pages(env):
    c = pb().csi_pb2
    made = [create(env, f"pvc-list-{i}-{uuid.uuid4()}").volume_id for i in range(3)]
    seen, token, pages = [], "", 0
    while True:
        r = env.ctrl.controller.ListVolumes(c.ListVolumesRequest(max_entries=2, starting_token=token), timeout=30)
        assert len(r.entries) <= 2
        seen += [e.volume.volume_id for e in r.entries]
        pages += 1
        token = r.next_token
        if not token:
            break
    assert set(made) <= set(seen) and len(seen) == len(set(seen)) and pages >= 2
    # A volume deleted between two pages shifts nothing: the next page starts after the last one seen.
    r1 = env.ctrl.controller.ListVolumes(c.ListVolumesRequest(max_entries=1), timeout=30)
    first = r1.entries[0].volume.volume_id
    ids = sorted(e.volume.volume_id for e in env.ctrl.controller.ListVolumes(c.ListVolumesRequest(), timeout=30).entries)
    if first in made:
        delete(env, first)
        made.remove(first)
    r2 = env.ctrl.controller.ListVolumes(c.ListVolumesRequest(max_entries=1, starting_token=r1.next_token), timeout=30)
    assert r2.entries[0].volume.volume_id == ids[1]
    assert code_of(env.ctrl.controller.ListVolumes, c.ListVolumesRequest(starting_token="bogus"), timeout=30)[0] == C.ABORTED
    assert code_of(env.ctrl.controller.ListVolumes, c.ListVolumesRequest(max_entries=-1), timeout=30)[0] == C.INVALID_ARGUMENT
    for v in made:
        delete(env, v)


def test_get_capacity(env):
    c = pb().csi_pb2
    r = env.ctrl.controller.GetCapacity(c.GetCapacityRequest(volume_capabilities=[mount_cap()]), timeout=30)
    pools = env.cl.rest.ok("GET", "/v1/pools")
    assert 0 < r.available_capacity <= sum(p["capacity"] for p in pools)
    assert 0 < r.maximum_volume_size.value <= max(p["capacity"] for p in pools)
    ssd = env.ctrl.controller.GetCapacity(c.GetCapacityRequest(parameters={"poolLabels": "class=ssd"}), timeout=30)
    assert 0 < ssd.available_capacity < r.available_capacity  # node2's hdd pool left out
    three = env.ctrl.controller.GetCapacity(c.GetCapacityRequest(parameters={"replicas": "3", "poolLabels": "class=ssd"}),
                                            timeout=30)
    assert three.maximum_volume_size.value == 0  # only two pools qualify: no 3-replica volume fits
    none = env.ctrl.controller.GetCapacity(c.GetCapacityRequest(parameters={"poolLabels": "class=nvram"}), timeout=30)
    assert none.available_capacity == 0
    assert code_of(env.ctrl.controller.GetCapacity, c.GetCapacityRequest(parameters={"bogus": "1"}),
                   timeout=30)[0] == C.INVALID_ARGUMENT


def test_expand(env):
    c = pb().csi_pb2
    v = create(env, f"pvc-{uuid.uuid4()}", params={"replicas": "2"})
    publish(env, v.volume_id)
    r = env.ctrl.controller.ControllerExpandVolume(
        c.ControllerExpandVolumeRequest(volume_id=v.volume_id, capacity_range=c.CapacityRange(required_bytes=24 * MiB),
                                        volume_capability=mount_cap()), timeout=120)
    assert r.capacity_bytes == 24 * MiB and r.node_expansion_required
    assert env.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["size"] == 24 * MiB
    # The resizer's retry, and a smaller ask: the size stays.
    r = env.ctrl.controller.ControllerExpandVolume(
        c.ControllerExpandVolumeRequest(volume_id=v.volume_id, capacity_range=c.CapacityRange(required_bytes=20 * MiB),
                                        volume_capability=block_cap()), timeout=120)
    assert r.capacity_bytes == 24 * MiB and not r.node_expansion_required
    assert code_of(env.ctrl.controller.ControllerExpandVolume,
                   c.ControllerExpandVolumeRequest(volume_id=str(uuid.uuid4()),
                                                   capacity_range=c.CapacityRange(required_bytes=MiB)),
                   timeout=30)[0] == C.NOT_FOUND
    assert code_of(env.ctrl.controller.ControllerExpandVolume, c.ControllerExpandVolumeRequest(volume_id=v.volume_id),
                   timeout=30)[0] == C.INVALID_ARGUMENT
    unpublish(env, v.volume_id)
    delete(env, v.volume_id)


def test_snapshots_and_restore(env):
    c = pb().csi_pb2
    src = create(env, f"pvc-{uuid.uuid4()}", params={"replicas": "2", "maxSnapshots": "2"})
    other = create(env, f"pvc-{uuid.uuid4()}")
    assert env.cl.rest.ok("GET", f"/v1/volumes/{src.volume_id}")["max_snapshots"] == 2
    name = f"snapshot-{uuid.uuid4()}"
    # What the snapshotter sends with --extra-create-metadata.
    meta = {"csi.storage.k8s.io/volumesnapshot/name": "snap-1", "csi.storage.k8s.io/volumesnapshot/namespace": "db",
            "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1"}
    s = env.ctrl.controller.CreateSnapshot(c.CreateSnapshotRequest(source_volume_id=src.volume_id, name=name,
                                                                   parameters=meta), timeout=120).snapshot
    assert code_of(env.ctrl.controller.CreateSnapshot,
                   c.CreateSnapshotRequest(source_volume_id=src.volume_id, name=name, parameters={"fast": "yes"}),
                   timeout=60)[0] == C.INVALID_ARGUMENT
    assert s.ready_to_use and s.source_volume_id == src.volume_id and s.size_bytes == src.capacity_bytes
    assert s.creation_time.seconds > 0
    again = env.ctrl.controller.CreateSnapshot(c.CreateSnapshotRequest(source_volume_id=src.volume_id, name=name),
                                               timeout=120).snapshot
    assert again.snapshot_id == s.snapshot_id
    assert code_of(env.ctrl.controller.CreateSnapshot, c.CreateSnapshotRequest(source_volume_id=other.volume_id, name=name),
                   timeout=60)[0] == C.ALREADY_EXISTS
    assert code_of(env.ctrl.controller.CreateSnapshot,
                   c.CreateSnapshotRequest(source_volume_id=str(uuid.uuid4()), name=f"snapshot-{uuid.uuid4()}"),
                   timeout=60)[0] == C.NOT_FOUND
    assert code_of(env.ctrl.controller.CreateSnapshot, c.CreateSnapshotRequest(name="x"), timeout=60)[0] == C.INVALID_ARGUMENT
    s2 = env.ctrl.controller.CreateSnapshot(c.CreateSnapshotRequest(source_volume_id=src.volume_id, name=name + "-2"),
                                            timeout=120).snapshot
    # maxSnapshots=2 reached: a third is refused for lack of room.
    code, msg = code_of(env.ctrl.controller.CreateSnapshot,
                        c.CreateSnapshotRequest(source_volume_id=src.volume_id, name=name + "-3"), timeout=60)
    assert code == C.RESOURCE_EXHAUSTED, (code, msg)
    # Listing: by id, by source volume, in pages, a bad token.
    ls = env.ctrl.controller.ListSnapshots(c.ListSnapshotsRequest(snapshot_id=s.snapshot_id), timeout=30).entries
    assert [e.snapshot.snapshot_id for e in ls] == [s.snapshot_id]
    assert not env.ctrl.controller.ListSnapshots(c.ListSnapshotsRequest(snapshot_id=str(uuid.uuid4())), timeout=30).entries
    p1 = env.ctrl.controller.ListSnapshots(c.ListSnapshotsRequest(source_volume_id=src.volume_id, max_entries=1), timeout=30)
    p2 = env.ctrl.controller.ListSnapshots(c.ListSnapshotsRequest(source_volume_id=src.volume_id, max_entries=1,
                                                                  starting_token=p1.next_token), timeout=30)
    assert {p1.entries[0].snapshot.snapshot_id, p2.entries[0].snapshot.snapshot_id} == {s.snapshot_id, s2.snapshot_id}
    assert not p2.next_token
    assert code_of(env.ctrl.controller.ListSnapshots, c.ListSnapshotsRequest(starting_token="99999"),
                   timeout=30)[0] == C.ABORTED
    # A volume from the snapshot, larger than it: restored, then grown.
    r = create(env, f"pvc-{uuid.uuid4()}", size=32 * MiB, source=s.snapshot_id)
    assert r.capacity_bytes == 32 * MiB and r.content_source.snapshot.snapshot_id == s.snapshot_id
    rv = env.cl.rest.ok("GET", f"/v1/volumes/{r.volume_id}")
    assert rv["source_snapshot"] == s.snapshot_id and rv["size"] == 32 * MiB
    code, msg = code_of(create, env, f"pvc-{uuid.uuid4()}", size=4 * MiB, source=s.snapshot_id)
    assert code == C.OUT_OF_RANGE, msg
    for v in (r.volume_id, other.volume_id):
        delete(env, v)
    for sid in (s.snapshot_id, s2.snapshot_id):
        env.ctrl.controller.DeleteSnapshot(c.DeleteSnapshotRequest(snapshot_id=sid), timeout=120)
        env.ctrl.controller.DeleteSnapshot(c.DeleteSnapshotRequest(snapshot_id=sid), timeout=120)  # again: OK
    env.ctrl.controller.DeleteSnapshot(c.DeleteSnapshotRequest(snapshot_id="never-was"), timeout=30)
    delete(env, src.volume_id)


def test_a_call_in_progress_makes_the_same_call_abort(env):
    """While the agents cannot answer (stopped), a CreateVolume waits; the same call again is ABORTED at
    once; once they answer, the first completes and a retry returns its volume."""
    name = f"pvc-{uuid.uuid4()}"
    agents = [a for a in env.cl.agents if a.running()]
    for a in agents:
        os.kill(a.proc.pid, signal.SIGSTOP)
    result = {}

    def first():
        try:
            result["v"] = create(env, name)
        except grpc.RpcError as e:
            result["err"] = e

    t = threading.Thread(target=first)
    try:
        t.start()
        deadline = time.monotonic() + 20
        while True:
            # A short deadline: should this call, not the thread's, be the one that got in first, it waits
            # for the agents like the first would, and the next one is refused.
            code, msg = code_of(create, env, name, timeout=2)
            if code == C.ABORTED:
                break
            assert time.monotonic() < deadline, f"the second call was not ABORTED: {code} {msg}"
            time.sleep(0.05)
    finally:
        for a in agents:
            os.kill(a.proc.pid, signal.SIGCONT)
    t.join(timeout=150)
    assert not t.is_alive()
    if "err" in result:  # the first may have given up on the leader's lease meanwhile; a retry completes it
        result["v"] = create(env, name)
    assert create(env, name).volume_id == result["v"].volume_id
    delete(env, result["v"].volume_id)


def test_controller_crash_then_retries_carry_on(env):
    """The plugin keeps no state: after kill -9 and a restart the same calls find what the first made."""
    name = f"pvc-{uuid.uuid4()}"
    v = create(env, name, params={"replicas": "2"})
    publish(env, v.volume_id)
    env.ctrl.kill()
    env.ctrl.start()
    assert create(env, name, params={"replicas": "2"}).volume_id == v.volume_id
    assert publish(env, v.volume_id)["uri"]
    unpublish(env, v.volume_id)
    delete(env, v.volume_id)


def test_node_info_and_capabilities(env):
    c = pb().csi_pb2
    info = env.node.node.NodeGetInfo(c.NodeGetInfoRequest(), timeout=10)
    assert info.node_id == node_id()
    assert info.accessible_topology.segments["io.tern.csi/node"] == "node0"
    caps = {x.rpc.type for x in env.node.node.NodeGetCapabilities(c.NodeGetCapabilitiesRequest(), timeout=10).capabilities}
    T = c.NodeServiceCapability.RPC
    assert {T.STAGE_UNSTAGE_VOLUME, T.GET_VOLUME_STATS, T.EXPAND_VOLUME, T.VOLUME_CONDITION} <= caps


def test_node_argument_errors_and_idempotent_undo(env, tmp_path):
    c = pb().csi_pb2
    n = env.node.node
    vol = str(uuid.uuid4())
    stage = str(tmp_path / "stage")
    for req in (c.NodeStageVolumeRequest(staging_target_path=stage, volume_capability=mount_cap(),
                                         publish_context={"uri": "nvmf://127.0.0.1:1/nqn.x:y"}),
                c.NodeStageVolumeRequest(volume_id=vol, volume_capability=mount_cap(),
                                         publish_context={"uri": "nvmf://127.0.0.1:1/nqn.x:y"}),
                c.NodeStageVolumeRequest(volume_id=vol, staging_target_path=stage,
                                         publish_context={"uri": "nvmf://127.0.0.1:1/nqn.x:y"}),
                c.NodeStageVolumeRequest(volume_id=vol, staging_target_path=stage, volume_capability=mount_cap()),
                c.NodeStageVolumeRequest(volume_id=vol, staging_target_path=stage, volume_capability=mount_cap(),
                                         publish_context={"uri": "iscsi://x"})):
        code, msg = code_of(n.NodeStageVolume, req, timeout=30)
        assert code == C.INVALID_ARGUMENT, (code, msg)
    assert code_of(n.NodePublishVolume, c.NodePublishVolumeRequest(volume_id=vol, staging_target_path=stage,
                                                                   volume_capability=mount_cap()),
                   timeout=30)[0] == C.INVALID_ARGUMENT  # no target_path
    target = str(tmp_path / "pod")
    code, msg = code_of(n.NodePublishVolume, c.NodePublishVolumeRequest(volume_id=vol, staging_target_path=stage,
                                                                        target_path=target, volume_capability=mount_cap()),
                        timeout=30)
    assert code == C.FAILED_PRECONDITION and "not staged" in msg, (code, msg)
    assert code_of(n.NodeGetVolumeStats, c.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=target),
                   timeout=30)[0] == C.NOT_FOUND
    # Undoing what was never done succeeds (the kubelet retries these after crashes).
    n.NodeUnpublishVolume(c.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target), timeout=30)
    n.NodeUnstageVolume(c.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=stage), timeout=30)


def test_node_publish_binds_the_staged_file_system(env, tmp_path):
    """Publish's bind mounts, read-write and read-only, on this host: the staging path is a tmpfs standing
    for a staged volume (staging itself needs the kernel's NVMe/TCP host: test_csi_kernel.py)."""
    c = pb().csi_pb2
    n = env.node.node
    vol = str(uuid.uuid4())
    stage, rw, ro = tmp_path / "stage", str(tmp_path / "pods/a/mount"), str(tmp_path / "pods/b/mount")
    stage.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(stage)], check=True)
    try:
        (stage / "data").write_text("staged")
        for target, readonly in ((rw, False), (ro, True)):
            req = c.NodePublishVolumeRequest(volume_id=vol, staging_target_path=str(stage), target_path=target,
                                             volume_capability=mount_cap(), readonly=readonly)
            n.NodePublishVolume(req, timeout=30)
            n.NodePublishVolume(req, timeout=30)  # retried: OK, not a second mount
            assert open(os.path.join(target, "data")).read() == "staged"
        with open(os.path.join(rw, "new"), "w") as f:
            f.write("x")
        with pytest.raises(OSError):
            open(os.path.join(ro, "nope"), "w")
        mounts = open("/proc/self/mountinfo").read()
        assert mounts.count(f" {rw} ") == 1 and mounts.count(f" {ro} ") == 1
        # The same target asked read-write now: it is mounted read-only, and that is not silently kept.
        code, _ = code_of(n.NodePublishVolume, c.NodePublishVolumeRequest(
            volume_id=vol, staging_target_path=str(stage), target_path=ro, volume_capability=mount_cap()), timeout=30)
        assert code == C.ALREADY_EXISTS
        stats = n.NodeGetVolumeStats(c.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=rw), timeout=30)
        units = {u.unit: u for u in stats.usage}
        assert units[c.VolumeUsage.BYTES].total == 8 * MiB and units[c.VolumeUsage.INODES].total > 0
        # Not a connected volume: its condition says so.
        assert stats.volume_condition.abnormal and "not connected" in stats.volume_condition.message
        for target in (rw, ro):
            n.NodeUnpublishVolume(c.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target), timeout=30)
            assert not os.path.exists(target)
            n.NodeUnpublishVolume(c.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target), timeout=30)
        assert (stage / "new").read_text() == "x"
    finally:
        for t in (rw, ro):
            subprocess.run(["umount", t], capture_output=True)
        subprocess.run(["umount", str(stage)], check=True)


def test_plugin_refuses_bad_flags(env, tmp_path):
    for args, word in ((["--mode", "controller"], "--agent-url"),
                       (["--mode", "bogus"], "mode"),
                       (["--mode", "node", "--host-nqn", "not-an-nqn", "--node-name", "n"], "NQN"),
                       (["--mode", "node", "--host-nqn", HOSTNQN, "--node-name", "a/b"], "node-name"),
                       (["--mode", "controller", "--agent-url", env.urls, "--csi-socket", str(tmp_path)], "not a socket")):
        r = subprocess.run([str(env.binary), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert word in r.stderr, (args, r.stderr)
    h = subprocess.run([str(env.binary), "--help"], capture_output=True, text=True, timeout=30)
    assert h.returncode == 0 and "--agent-url" in h.stdout and "Examples" in h.stdout
