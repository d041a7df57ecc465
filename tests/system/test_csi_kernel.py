"""tern-csi's node plugin where it really runs: on a Linux host with the kernel's NVMe/TCP initiator (the
QEMU guest of kernel_guest.py, the plugin's release build copied in). The controller plugin and a real
cluster (etcd, an agent, two engines) run on this machine; this test plays the kubelet and the sidecars.

Stage connects with nvme-cli and finds the namespace by NGUID, makes a file system only where there is
none and mounts it; Publish bind-mounts it (or the raw device); Expand grows a mounted ext4 or xfs file
system online; Unstage unmounts and disconnects; a restarted plugin finishes what the last one began.
Last, tern-ha-node (the HA node agent) in the guest: a fio verify job keeps running through a switch-over
when the engine serving the volume is killed (-9) and the agent republishes it on another node.

The guest reaches this machine only through forwarded ports (10.0.2.100:<4420+slot>), so the agent's
answers reach the guest's plugins through a small proxy that rewrites the engines' addresses in them to
the guest's view (what routing does on a real network); the plugins themselves are unchanged."""
import http.server
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

from control_cluster import LocalCluster, engine
from csi_driver import block_cap, code_of, mount_cap, pb
from kernel_guest import GUEST_HOSTNQN, HOST_ADDR
from kernel_nvme import fio_ok, fio_verify_cmd, wait_guest

pytestmark = pytest.mark.kernel

C = grpc.StatusCode
MiB = 1 << 20
CSI_PORT = 10130          # the node plugin's gRPC port in the guest (exposed here)
NODE_ID = f"guest/{GUEST_HOSTNQN}"


class Env:
    pass


@pytest.fixture(scope="module")
def env(build_dir, release_dir, kernel_guest, tmp_path_factory):
    from csi_driver import Plugin
    e = Env()
    wd = tmp_path_factory.mktemp("csik")
    e.cl = LocalCluster(build_dir, wd, engines=2, agents=1)
    e.ctrl = None
    try:
        for eng in e.cl.engines:
            e.cl.rest.ok("PUT", f"/v1/pools/p-{eng.name}", {"node": eng.name, "disk": e.cl.disk(eng, "p0", size=2 << 30)})
        e.ctrl = Plugin(build_dir / "tools/tern-csi/tern-csi", wd, "controller",
                        ["--agent-url", f"http://127.0.0.1:{e.cl.leader.rest_port}"]).start()
        # Slots 0 and 1: the engines' NVMe/TCP ports; slot 2: the agent's REST API through the proxy.
        e.g = kernel_guest(forwards=3, expose=(CSI_PORT,))
        for i, eng in enumerate(e.cl.engines):
            e.g.route(i, eng.nvmf_port)
        e.proxy = GuestViewProxy(e)
        e.g.route(2, e.proxy.port)
        e.run_csi = e.g.put_program(release_dir / "tools/tern-csi/tern-csi", "tern-csi")
        e.ha_binary = release_dir / "tools/tern-ha-node/tern-ha-node"
        start_node(e)
        yield e
    finally:
        if getattr(e, "proxy", None):
            e.proxy.close()
        if e.ctrl:
            e.ctrl.stop()
        e.cl.stop()


class GuestViewProxy:
    """GETs to the agent, answered with every engine's NVMe/TCP address (127.0.0.1:<port>) rewritten to the
    guest's way to it (10.0.2.100:<4420+slot>)."""

    def __init__(self, e):
        ports = {eng.nvmf_port: e.g.forward_port(i) for i, eng in enumerate(e.cl.engines)}
        upstream = f"http://127.0.0.1:{e.cl.leader.rest_port}"

        def rewrite(text):
            return re.sub(r"nvmf://127\.0\.0\.1:(\d+)/",
                          lambda m: f"nvmf://{HOST_ADDR}:{ports.get(int(m.group(1)), 1)}/", text)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=10) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as x:
                    status, body = x.code, x.read()
                except OSError:
                    status, body = 503, b""
                body = rewrite(body.decode()).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_node(e):
    """Starts the node plugin in the guest (in its own session, so the command agent's time limit does
    not end it) and connects to it."""
    e.g.run_ok(f"setsid sh -c '{e.run_csi} --mode node --csi-socket tcp://0.0.0.0:{CSI_PORT} --node-name guest "
               f"--agent-url http://{HOST_ADDR}:{e.g.forward_port(2)} --attach-timeout-s 60 "
               f">>/tmp/tern-csi.log 2>&1' </dev/null >/dev/null 2>&1 &", timeout=20)
    e.chan = grpc.insecure_channel(f"127.0.0.1:{e.g.exposed[CSI_PORT]}")
    try:
        grpc.channel_ready_future(e.chan).result(timeout=60)
    except grpc.FutureTimeoutError:
        raise AssertionError(f"the node plugin did not serve:\n{e.g.run('tail -n 40 /tmp/tern-csi.log')[1]}")
    e.node = pb().csi_pb2_grpc.NodeStub(e.chan)
    # Serving is not yet answering: the first call may race the listener's start.
    deadline = time.monotonic() + 30
    while True:
        try:
            e.node.NodeGetInfo(pb().csi_pb2.NodeGetInfoRequest(), timeout=10)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def log(e):
    return e.g.run("tail -n 60 /tmp/tern-csi.log", timeout=20)[1]


def new_volume(e, size, fs="ext4", cap=None, replicas=2):
    c = pb().csi_pb2
    v = e.ctrl.controller.CreateVolume(c.CreateVolumeRequest(
        name=f"pvc-{uuid.uuid4()}", capacity_range=c.CapacityRange(required_bytes=size),
        volume_capabilities=[cap or mount_cap(fs)], parameters={"replicas": str(replicas), "thin": "true",
                                                                "nvmeCtrlLossTmo": "30"}), timeout=120).volume
    return v


def publish(e, v, cap=None):
    """ControllerPublish for the guest, with the target's address as the guest reaches it (its slot)."""
    c = pb().csi_pb2
    ctx = dict(e.ctrl.controller.ControllerPublishVolume(c.ControllerPublishVolumeRequest(
        volume_id=v.volume_id, node_id=NODE_ID, volume_capability=cap or mount_cap()), timeout=120).publish_context)
    t = e.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["target"]
    assert t["allowed_hosts"] == [GUEST_HOSTNQN]
    slot = [x.name for x in e.cl.engines].index(t["node"])
    port = engine(e.cl, t["node"]).nvmf_port
    assert f":{port}/" in ctx["uri"], ctx
    ctx["uri"] = ctx["uri"].replace(ctx["uri"].split("/")[2], f"{HOST_ADDR}:{e.g.forward_port(slot)}")
    return ctx


def stage(e, v, ctx, path, cap=None):
    c = pb().csi_pb2
    e.node.NodeStageVolume(c.NodeStageVolumeRequest(volume_id=v.volume_id, publish_context=ctx, staging_target_path=path,
                                                    volume_capability=cap or mount_cap(), volume_context=v.volume_context),
                           timeout=180)


def unstage(e, v, path):
    e.node.NodeUnstageVolume(pb().csi_pb2.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=path),
                             timeout=120)


def node_publish(e, v, stage_path, target, cap=None, readonly=False):
    e.node.NodePublishVolume(pb().csi_pb2.NodePublishVolumeRequest(
        volume_id=v.volume_id, staging_target_path=stage_path, target_path=target, volume_capability=cap or mount_cap(),
        readonly=readonly), timeout=60)


def node_unpublish(e, v, target):
    e.node.NodeUnpublishVolume(pb().csi_pb2.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=target),
                               timeout=60)


def finish(e, v):
    c = pb().csi_pb2
    e.ctrl.controller.ControllerUnpublishVolume(c.ControllerUnpublishVolumeRequest(volume_id=v.volume_id, node_id=NODE_ID),
                                                timeout=120)
    e.ctrl.controller.DeleteVolume(c.DeleteVolumeRequest(volume_id=v.volume_id), timeout=120)


def controllers(e, v):
    """The guest's NVMe controllers of the volume's subsystem."""
    return e.g.run(f"grep -l {v.volume_id} /sys/class/nvme/nvme*/subsysnqn 2>/dev/null", timeout=20)[1].split()


def mount_line(e, path):
    return e.g.run(f"grep ' {path} ' /proc/mounts", timeout=20)[1].strip()


def test_stage_publish_unstage_and_the_data_stays(env):
    e, c = env, pb().csi_pb2
    v = new_volume(e, 64 * MiB)
    ctx = publish(e, v)
    st, tgt = "/tmp/k/stage-a", "/tmp/k/pods/a/mount"
    stage(e, v, ctx, st)
    line = mount_line(e, st)
    assert " ext4 " in line and line.startswith("/dev/nvme"), f"{line}\n{log(e)}"
    stage(e, v, ctx, st)  # the kubelet's retry: nothing new
    assert e.g.run(f"grep -c ' {st} ' /proc/mounts", timeout=20)[1].strip() == "1"
    node_publish(e, v, st, tgt)
    e.g.run_ok(f"echo kept > {tgt}/file && sync", timeout=30)
    ro = "/tmp/k/pods/b/mount"
    node_publish(e, v, st, ro, readonly=True)
    assert e.g.run(f"echo x > {ro}/nope", timeout=20)[0] != 0
    stats = e.node.NodeGetVolumeStats(c.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=tgt), timeout=60)
    units = {u.unit: u for u in stats.usage}
    assert 40 * MiB < units[c.VolumeUsage.BYTES].total <= 64 * MiB and units[c.VolumeUsage.INODES].used > 0
    assert not stats.volume_condition.abnormal, stats.volume_condition.message
    assert "1 live" in stats.volume_condition.message and "online" in stats.volume_condition.message
    for t in (tgt, ro):
        node_unpublish(e, v, t)
    # Unstage while a pod still has it mounted is refused, not forced.
    node_publish(e, v, st, tgt)
    unstage_code = code_of(e.node.NodeUnstageVolume, c.NodeUnstageVolumeRequest(volume_id=v.volume_id,
                                                                                staging_target_path=st), timeout=60)
    assert unstage_code[0] == C.FAILED_PRECONDITION, unstage_code
    assert controllers(e, v)
    node_unpublish(e, v, tgt)
    unstage(e, v, st)
    assert not mount_line(e, st) and not controllers(e, v), log(e)
    unstage(e, v, st)  # again: OK
    # Staged again: the file system is found, not made anew.
    stage(e, v, ctx, st)
    assert e.g.run_ok(f"cat {st}/file", timeout=20).strip() == "kept"
    unstage(e, v, st)
    finish(e, v)


def test_expand_a_mounted_ext4_file_system(env):
    e, c = env, pb().csi_pb2
    v = new_volume(e, 64 * MiB)
    ctx = publish(e, v)
    st, tgt = "/tmp/k/stage-x", "/tmp/k/pods/x/mount"
    stage(e, v, ctx, st)
    node_publish(e, v, st, tgt)
    e.g.run_ok(f"dd if=/dev/urandom of={tgt}/blob bs=1M count=8 2>/dev/null && md5sum {tgt}/blob > /tmp/k/x.md5",
               timeout=60)
    r = e.ctrl.controller.ControllerExpandVolume(c.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=c.CapacityRange(required_bytes=160 * MiB), volume_capability=mount_cap()),
        timeout=120)
    assert r.capacity_bytes == 160 * MiB and r.node_expansion_required
    n = e.node.NodeExpandVolume(c.NodeExpandVolumeRequest(volume_id=v.volume_id, volume_path=tgt,
                                                          capacity_range=c.CapacityRange(required_bytes=160 * MiB),
                                                          staging_target_path=st, volume_capability=mount_cap()),
                                timeout=180)
    assert n.capacity_bytes == 160 * MiB, log(e)
    stats = e.node.NodeGetVolumeStats(c.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=tgt), timeout=60)
    total = next(u.total for u in stats.usage if u.unit == c.VolumeUsage.BYTES)
    assert total > 120 * MiB, (total, log(e))
    e.g.run_ok("md5sum -c /tmp/k/x.md5", timeout=60)  # grown under the data, online
    node_unpublish(e, v, tgt)
    unstage(e, v, st)
    finish(e, v)


def test_xfs_grows_and_a_device_with_another_file_system_is_refused(env):
    e, c = env, pb().csi_pb2
    v = new_volume(e, 320 * MiB, fs="xfs")  # mkfs.xfs needs 300 MiB
    ctx = publish(e, v, cap=mount_cap("xfs"))
    st = "/tmp/k/stage-xfs"
    stage(e, v, ctx, st, cap=mount_cap("xfs"))
    assert " xfs " in mount_line(e, st), log(e)
    e.ctrl.controller.ControllerExpandVolume(c.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=c.CapacityRange(required_bytes=400 * MiB)), timeout=120)
    n = e.node.NodeExpandVolume(c.NodeExpandVolumeRequest(volume_id=v.volume_id, volume_path=st,
                                                          capacity_range=c.CapacityRange(required_bytes=400 * MiB)),
                                timeout=180)
    assert n.capacity_bytes == 400 * MiB
    size = int(e.g.run_ok(f"stat -f -c '%b %S' {st}", timeout=20).split()[0]) * 4096
    assert size > 330 * MiB, size
    unstage(e, v, st)
    # The same device asked for as ext4: refused, and its xfs is left alone.
    code, msg = code_of(stage, e, v, ctx, st, cap=mount_cap("ext4"))
    assert code == C.FAILED_PRECONDITION and "xfs" in msg, (code, msg)
    stage(e, v, ctx, st, cap=mount_cap("xfs"))
    assert " xfs " in mount_line(e, st)
    unstage(e, v, st)
    finish(e, v)


def test_a_device_with_a_partition_table_is_not_formatted(env):
    e = env
    v = new_volume(e, 32 * MiB)
    ctx = publish(e, v)
    st = "/tmp/k/stage-pt"
    stage(e, v, ctx, st, cap=block_cap())  # connected only
    # An MBR with one partition, written as another system would have left it.
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    path = e.g.share / "mbr.bin"
    path.write_bytes(bytes(mbr))
    dev = guest_dev(e, v)
    e.g.run_ok(f"dd if=/share/mbr.bin of={dev} bs=512 count=1 oflag=direct 2>/dev/null", timeout=30)
    unstage(e, v, st)
    code, msg = code_of(stage, e, v, ctx, st)
    assert code == C.FAILED_PRECONDITION and "partition table" in msg, (code, msg)
    assert not mount_line(e, st)
    assert e.g.run_ok(f"blkid -p -o export {dev}", timeout=20).count("PTTYPE=dos") == 1  # untouched
    unstage(e, v, st)
    finish(e, v)


def test_raw_block(env):
    e, c = env, pb().csi_pb2
    v = new_volume(e, 32 * MiB, cap=block_cap())
    ctx = publish(e, v, cap=block_cap())
    st, dev = "/tmp/k/stage-blk", "/tmp/k/pods/blk/dev"
    stage(e, v, ctx, st, cap=block_cap())
    assert not mount_line(e, st)  # nothing mounted for a raw block volume
    node_publish(e, v, st, dev, cap=block_cap())
    node_publish(e, v, st, dev, cap=block_cap())  # retried
    assert e.g.run_ok(f"blockdev --getsize64 {dev}", timeout=20).strip() == str(32 * MiB)
    e.g.run_ok(f"dd if=/dev/urandom of=/tmp/k/pat bs=1M count=4 2>/dev/null && "
               f"dd if=/tmp/k/pat of={dev} bs=1M oflag=direct 2>/dev/null && "
               f"dd if={dev} of=/tmp/k/back bs=1M count=4 iflag=direct 2>/dev/null && cmp /tmp/k/pat /tmp/k/back",
               timeout=60)
    stats = e.node.NodeGetVolumeStats(c.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=dev), timeout=60)
    assert [u.total for u in stats.usage] == [32 * MiB]
    # Unstage while the device is bound into a pod is refused.
    code, msg = code_of(unstage, e, v, st)
    assert code == C.FAILED_PRECONDITION and dev in msg, (code, msg)
    node_unpublish(e, v, dev)
    assert e.g.run(f"test -e {dev}", timeout=20)[0] != 0
    unstage(e, v, st)
    assert not controllers(e, v)
    finish(e, v)


def test_a_restarted_node_plugin_carries_on(env):
    """kill -9 of the plugin between the kubelet's calls: the new one finds the connection and the mount."""
    e = env
    v = new_volume(e, 64 * MiB)
    ctx = publish(e, v)
    st, tgt = "/tmp/k/stage-r", "/tmp/k/pods/r/mount"
    stage(e, v, ctx, st)
    e.g.run_ok("kill -9 $(pidof tern-csi) && while pidof tern-csi; do sleep 0.1; done", timeout=20)
    e.chan.close()
    start_node(e)
    stage(e, v, ctx, st)
    assert e.g.run(f"grep -c ' {st} ' /proc/mounts", timeout=20)[1].strip() == "1"
    assert len(controllers(e, v)) == 1  # not connected twice
    node_publish(e, v, st, tgt)
    node_unpublish(e, v, tgt)
    unstage(e, v, st)
    finish(e, v)


def guest_dev(e, v):
    """The guest's block device of the volume (found by NGUID, as the plugin does)."""
    out = e.g.run_ok(f"for b in /sys/block/nvme*; do [ \"$(cat $b/nguid 2>/dev/null)\" = {v.volume_id} ] && "
                     f"[ -b /dev/${{b##*/}} ] && echo /dev/${{b##*/}}; done; true", timeout=20).split()
    assert len(out) == 1, out
    return out[0]


def paths(e, v):
    """{controller: (state, address)} of the volume's subsystem in the guest."""
    out = e.g.run_ok(f"for c in /sys/class/nvme/nvme*; do grep -q {v.volume_id} $c/subsysnqn 2>/dev/null && "
                     f"echo ${{c##*/}} $(cat $c/state) $(cat $c/address | tr -d ' '); done; true", timeout=20)
    return {line.split()[0]: (line.split()[1], line.split()[2]) for line in out.splitlines() if line.strip()}


def test_switch_over_moves_a_running_fio_job(env):
    """kill -9 of the engine serving the volume while fio writes and verifies: the agent republishes it on
    the other node, tern-ha-node connects the guest to it and removes the dead path; fio sees a pause."""
    e = env
    v = new_volume(e, 64 * MiB, cap=block_cap())
    ctx = publish(e, v, cap=block_cap())
    st = "/tmp/k/stage-ha"
    stage(e, v, ctx, st, cap=block_cap())
    dev = guest_dev(e, v)
    served_by = e.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["target"]["node"]
    ha = e.g.put_program(e.ha_binary, "tern-ha-node")
    e.g.run_ok(f"setsid sh -c '{ha} --node-name guest --agent-url http://{HOST_ADDR}:{e.g.forward_port(2)} "
               f"--interval-ms 200 --dead-after-ms 500 >>/tmp/ha.log 2>&1' </dev/null >/dev/null 2>&1 &", timeout=20)
    fio = fio_verify_cmd(dev, size="8M", bs="4k", iodepth=4)
    e.g.run_ok(f"rm -f /tmp/fio.rc; setsid sh -c '{fio} >/tmp/fio.out 2>&1; echo $? >/tmp/fio.rc' "
               f"</dev/null >/dev/null 2>&1 &", timeout=20)
    name = dev.split("/")[-1]
    try:
        # Writes are counted on the paths (nvmeXcYnZ), not on the multipath head.
        per_path = "c*n".join(name.rsplit("n", 1))  # nvme0n1 -> nvme0c*n1
        wait_guest(e.g, "fio writing", f"[ $(cat /sys/block/{per_path}/stat | awk '{{s += $5}} END {{print s}}') -gt 200 ]",
                   timeout=60)
    except AssertionError as x:
        raise AssertionError(f"{x}\nfio: {e.g.run('cat /tmp/fio.out /tmp/fio.rc; cat /sys/block/' + name + '/stat')[1]}")
    victim = engine(e.cl, served_by)
    victim.kill()
    t0 = time.monotonic()
    try:
        # The kill came while fio was still at work (else this would prove nothing).
        assert e.g.run("test -e /tmp/fio.rc", timeout=20)[0] != 0, "fio finished before the kill"
        wait_guest(e.g, "fio to finish", "test -s /tmp/fio.rc", timeout=240)
        took = time.monotonic() - t0
        out = e.g.run_ok("cat /tmp/fio.out; echo rc=$(cat /tmp/fio.rc)", timeout=20)
        ha_log = e.g.run("cat /tmp/ha.log", timeout=20)[1]
        assert "rc=0" in out, f"{out[-3000:]}\n{ha_log}\n{e.g.dmesg(30)}"
        fio_ok(out)
        now = e.cl.rest.ok("GET", f"/v1/volumes/{v.volume_id}")["target"]["node"]
        assert now != served_by
        assert "new path to its target on " + now in ha_log, ha_log
        # The dead path is removed once the new one is live.
        e.cl.wait("only live paths", lambda: all(s == "live" for s, _ in paths(e, v).values()), timeout=60)
        p = paths(e, v)
        assert len(p) == 1 and f"trsvcid={e.g.forward_port([x.name for x in e.cl.engines].index(now))}" in \
            next(iter(p.values()))[1], p
        assert "removed its dead path" in e.g.run("cat /tmp/ha.log", timeout=20)[1]
        # I/O went through the new path (its per-path device counts reads and writes).
        ctrl = next(iter(p))
        ios = e.g.run_ok(f"cat /sys/block/nvme*c{ctrl[4:]}n*/stat | awk '{{s += $1 + $5}} END {{print s}}'", timeout=20)
        assert int(ios.strip() or 0) > 100, ios
        print(f"switch-over: fio finished {took:.1f} s after the kill, no error")
    finally:
        e.g.run("kill $(pidof tern-ha-node) 2>/dev/null; true", timeout=20)
        if not victim.running():
            victim.restart()
    # Staged again with the publish context of before the switch-over (the attacher does not publish
    # again): the plugin asks the agent and connects where the volume is served now.
    unstage(e, v, st)
    assert not controllers(e, v)
    stage(e, v, ctx, st, cap=block_cap())
    p = paths(e, v)
    assert len(p) == 1 and all(s == "live" for s, _ in p.values()), (p, log(e))
    unstage(e, v, st)
    finish(e, v)
