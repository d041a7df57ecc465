"""The nexus with the Linux kernel as its host: the kernel's NVMe/TCP host and native multipath (Debian 12
kernel in a QEMU guest, kernel_guest.py) drive a published nexus (a volume mirrored to three replicas on
three io-engines with file-backed pools and a real etcd, as in test_nexus.py).

- A fio crc32c verify run through the published nexus while the engine holding one remote child is
  killed (SIGKILL): the kernel sees no error, the nexus is degraded with that child faulted, the etcd
  record says so, and the surviving remote replica alone holds everything fio wrote.
- A published nexus grown online: the kernel sees the namespace grow without a rescan.
- One volume published by two engines as two paths of one subsystem (controller-ID ranges 1..1000 and
  1001..2000, ANA optimized / inaccessible): the kernel joins them, sends I/O only to the optimized path,
  and follows an ANA swap made in the middle of a verify run.

One guest, one etcd and one set of engines for the module (each test builds its own volume on fresh
replicas). The guest reaches engine 0's NVMe/TCP port at 10.0.2.100:4420 (forward slot 0) and engine 1's
at 10.0.2.100:4421 (slot 1)."""
import json
import os
import uuid

import grpc

import pytest

from conftest import make_file
from etcd import Etcd
from io_engine import EngineFactory
from nexus_util import nexus_of, required_child_bytes
from nvme_tcp import wait_until as wait_for
from kernel_guest import GUEST_HOSTNQN
from kernel_nvme import blockdev, connect, controller_state, disconnect, fio_ok, fio_verify_cmd, wait_guest

pytestmark = pytest.mark.kernel

MiB = 1 << 20
VOL = 64 * MiB
CHILD_OPTS = "timeout_ms=2000&ctrl_loss_tmo_s=2&reconnect_delay_ms=100"


class Cluster:
    pass


@pytest.fixture(scope="module")
def cl(build_dir, kernel_guest, tmp_path_factory, pb):
    """etcd, three engines (spread over the usable cores) and the guest."""
    c = Cluster()
    c.pb = pb
    wd = tmp_path_factory.mktemp("knexus")
    cpus = sorted(os.sched_getaffinity(0))
    c.etcd = Etcd(wd).start()
    f = EngineFactory(build_dir, wd)
    try:
        c.engines = []
        for i in range(3):
            disk = make_file(wd / f"pool{i}.img", 512 * MiB)
            c.engines.append(f(name=f"node{i}", cores=str(cpus[i % len(cpus)]), pools=[(f"p{i}", f"uring://{disk}")],
                               extra_args=["--etcd", c.etcd.endpoint, "--etcd-timeout-ms", "1500"]))
        c.g = kernel_guest(forwards=2)
        c.g.route(0, c.engines[0].nvmf_port)
        c.g.route(1, c.engines[1].nvmf_port)
        yield c
    finally:
        try:
            f.stop_all()
        finally:
            c.etcd.stop()


# --- helpers -----------------------------------------------------------------------------------------

def replica(cl, i, vol, tag):
    """A thick replica for `vol` on engine i, shared over NVMe/TCP (so a nexus elsewhere can reach it).
    Returns (uuid, local child URI, remote child URI)."""
    R, C = cl.pb.replica_pb2, cl.pb.common_pb2
    r = cl.engines[i].api.replica.CreateReplica(R.CreateReplicaRequest(
        name=f"{tag}-{vol[:8]}-{i}", pool=f"p{i}", size=required_child_bytes(VOL), thin=False,
        share=C.SHARE_PROTOCOL_NVMF), timeout=60)
    return r.uuid, f"bdev:///{r.uuid}?uuid={r.uuid}", f"{r.share.uri}?uuid={r.uuid}&{CHILD_OPTS}"


def child_writes(engine, pb, vol):
    """Writes each child of the nexus on `engine` has been sent, by child UUID."""
    return {c.uuid: c.io.writes for c in nexus_of(engine, pb, vol).children}


def path_io(engine, pb, nqn):
    """I/O commands that came through this engine's path of subsystem `nqn` (all its controllers)."""
    subs = engine.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(nqn=nqn), timeout=60).subsystems
    return sum(c.io_commands for s in subs for c in s.controllers)


def background(guest, name, cmd):
    """Starts `cmd` in the guest detached from the agent: output in /tmp/<name>.log, exit status in
    /tmp/<name>.rc."""
    guest.run_ok(f"rm -f /tmp/{name}.rc; (sh -c '{cmd}' > /tmp/{name}.log 2>&1; echo $? > /tmp/{name}.rc) "
                 "</dev/null >/dev/null 2>&1 &")


def running(guest, name):
    return guest.run(f"test -s /tmp/{name}.rc", timeout=20)[0] != 0


def wait_background(guest, name, timeout):
    wait_guest(guest, f"{name} to finish", f"test -s /tmp/{name}.rc", timeout=timeout)
    return int(guest.run_ok(f"cat /tmp/{name}.rc")), guest.run_ok(f"cat /tmp/{name}.log")


def stop_background(guest, name):
    """Kills a background job left running by a failed test (nothing if it has finished)."""
    guest.run(f"test -s /tmp/{name}.rc || pkill -9 -x fio; true", timeout=20)


def ana_state(guest, ctrl):
    """The kernel's ANA state of namespace 1 through controller `ctrl` (one path)."""
    rc, s = guest.run(f"cat /sys/block/nvme*c{ctrl[4:]}n1/ana_state", timeout=20)
    return s.strip() if rc == 0 else None


# --- a child's engine killed under the kernel's fio verify ---------------------------------------------

def test_fio_verify_through_a_nexus_survives_a_killed_child_engine(cl):
    """A nexus on engine 0 over a local replica and replicas on engines 1 and 2 (over NVMe/TCP, 2 s
    timeouts), published to the guest's host NQN. The kernel runs a fio crc32c verify (random 16 KiB writes,
    QD 8, direct, then everything read back) and engine 2 is killed with SIGKILL while fio is writing. fio
    finishes with no error and every block verified; writes went on after the kill; the nexus is degraded
    with child 2 faulted (timed out or I/O error) and the two others online; the etcd record marks child 2
    unhealthy. Then the local child is faulted too, and a fio verify-only pass reads the whole run back
    from engine 1's replica alone: the remote mirror got every write the kernel was told succeeded. Then
    engine 2 comes back and its child is rebuilt from engine 1's replica while the kernel writes a second
    verified run, and engine 2's replica alone reads both runs back."""
    pb, g, etcd, engines = cl.pb, cl.g, cl.etcd, cl.engines
    N = pb.nexus_pb2
    vol = str(uuid.uuid4())
    key = f"/tern/test/volume/{vol}/nexus"
    reps = [replica(cl, i, vol, "kill") for i in range(3)]
    children = [reps[0][1], reps[1][2], reps[2][2]]
    e0 = engines[0]
    # Rebuilds at 8 MiB/s: the one below lasts the kernel's second fio run.
    nx = e0.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=children, persistence_key=key,
                                                       rebuild=N.RebuildSettings(rate_bytes_per_s=8 * MiB)), timeout=60)
    assert nx.state == N.NEXUS_STATE_ONLINE
    p = e0.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[GUEST_HOSTNQN]), timeout=60)
    nqn = p.share.uri.rsplit("/", 1)[1]
    assert nqn == f"nqn.2026-11.io.tern:{vol}"
    r0, r1, r2 = (r[0] for r in reps)
    killed = False
    job = fio_verify_cmd("DEV", size="32M", bs="16k", iodepth=8)
    try:
        ctrl = connect(g, nqn, slot=0)
        dev = blockdev(g, nqn)
        assert int(g.run_ok(f"cat /sys/block/{dev[5:]}/size")) * 512 == VOL
        job = job.replace("DEV", dev)
        base = child_writes(e0, pb, vol)
        background(g, "nxfio", job)
        wait_for("fio to be writing through the nexus", lambda: child_writes(e0, pb, vol)[r0] - base[r0] > 300,
                 timeout=120)
        assert running(g, "nxfio"), "fio finished before the child's engine could be killed: make the run longer"
        engines[2].kill()
        killed = True
        at_kill = child_writes(e0, pb, vol)
        rc, out = wait_background(g, "nxfio", timeout=300)
        assert rc == 0, out + g.dmesg(30)
        fio_ok(out)
        assert controller_state(g, ctrl) == "live"

        l = nexus_of(e0, pb, vol)
        assert l.state == N.NEXUS_STATE_DEGRADED, l
        st = {c.uuid: c for c in l.children}
        assert st[r2].state == N.CHILD_STATE_FAULTED, l
        assert st[r2].reason in (N.CHILD_REASON_TIMED_OUT, N.CHILD_REASON_IO_ERROR), l
        assert st[r0].state == N.CHILD_STATE_ONLINE and st[r1].state == N.CHILD_STATE_ONLINE, l
        after = child_writes(e0, pb, vol)
        assert after[r0] > at_kill[r0] and after[r1] > at_kill[r1], (at_kill, after)
        rec = etcd.get_json(key)
        assert rec["clean_shutdown"] is False
        assert {c["uuid"]: c["healthy"] for c in rec["children"]} == {r0: True, r1: True, r2: False}, rec

        # Engine 1's replica alone: reads can only go there once the local child is out.
        e0.api.nexus.FaultChild(N.FaultChildRequest(uuid=vol, child_uuid=r0), timeout=60)
        before = nexus_of(e0, pb, vol)
        fio_ok(g.run_ok(f"{job} --verify_only", timeout=300))
        l = nexus_of(e0, pb, vol)
        reads = {c.uuid: c.io.reads for c in l.children}
        was = {c.uuid: c.io.reads for c in before.children}
        assert reads[r1] - was[r1] >= 2048 and reads[r0] == was[r0], (was, reads)

        # Engine 2 back: its child is onlined and rebuilt by itself — from engine 1's replica, the local one
        # being out — slowly, while the kernel writes a second verified run past the first; then engine 2's
        # replica alone serves verify-only passes of both runs.
        engines[2].start()
        killed = False
        e0.api.nexus.OnlineChild(N.ChildRef(uuid=vol, child_uuid=r2), timeout=60)
        wait_for("child 2's rebuild to run",
                 lambda: {c.uuid: c for c in nexus_of(e0, pb, vol).children}[r2].rebuild.state == N.REBUILD_STATE_RUNNING,
                 timeout=60)
        job2 = fio_verify_cmd(dev, size="16M", bs="16k", iodepth=8, extra="--offset=32M")
        fio_ok(g.run_ok(job2, timeout=300))
        try:  # the rest at full speed (it may have ended meanwhile)
            e0.api.nexus.SetRebuildRate(N.SetRebuildRateRequest(uuid=vol, child_uuid=r2, rate_bytes_per_s=0), timeout=60)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
        wait_for("child 2 to be rebuilt", lambda: {c.uuid: c for c in nexus_of(e0, pb, vol).children}[r2].synced,
                 timeout=120)
        c2 = {c.uuid: c for c in nexus_of(e0, pb, vol).children}[r2]
        assert c2.rebuild.state == N.REBUILD_STATE_COMPLETED and c2.rebuild.source == children[1], c2.rebuild
        e0.api.nexus.FaultChild(N.FaultChildRequest(uuid=vol, child_uuid=r1), timeout=60)
        before = nexus_of(e0, pb, vol)
        fio_ok(g.run_ok(f"{job} --verify_only", timeout=300))
        fio_ok(g.run_ok(f"{job2} --verify_only", timeout=300))
        l = nexus_of(e0, pb, vol)
        reads = {c.uuid: c.io.reads for c in l.children}
        was = {c.uuid: c.io.reads for c in before.children}
        assert reads[r2] - was[r2] >= 3072 and reads[r1] == was[r1], (was, reads)
    finally:
        try:
            stop_background(g, "nxfio")
            disconnect(g, nqn)
            e0.api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
        finally:
            if killed:
                engines[2].start()


# --- one volume, two engines, native multipath with ANA ---------------------------------------------------

def test_multipath_over_two_engines_follows_an_ana_swap(cl):
    """One volume published by two engines as two paths of one subsystem, and the kernel's native
    multipath following the engines' ANA states.

    Layout: replicas r0, r1, r2 on engines 0, 1, 2, each shared over NVMe/TCP. Engine A (0) holds nexus
    [r0 local, r1 and r2 remote], published with controller IDs 1..1000, ANA optimized; engine B (1) holds a
    nexus of the same volume UUID over the same replicas [r0 remote, r1 local, r2 remote], published with
    controller IDs 1001..2000, ANA inaccessible. Same UUID, so same NQN and namespace NGUID: the kernel
    makes one subsystem, one namespace head, two paths.

    Why neither nexus holds a reservation: a nexus with resv_key fences on create (it registers and
    acquires, or preempts, a Write Exclusive reservation on every child, and its own local child through
    its node's target), and a second nexus over the same children can then not even write its labels (with
    preempt it would fence the first one off at once; with preempt_policy none it is refused). Two
    unfenced nexuses over the same children are safe here because exactly one path is usable at a time:
    the target checks the ANA state when a command arrives (an inaccessible path refuses it with a path
    error and the kernel retries it elsewhere; nothing refused was executed), a command A accepted before
    the swap is completed by A before the kernel completes it, and the kernel requeues rather than fails
    I/O while its only live paths are inaccessible, so the swap order is: A inaccessible first, then B
    optimized (never two optimized paths).

    What that does not cover, and what a control plane must do when A is not reachable (a failover, not
    a planned swap): the kernel may resubmit on B a write A still has in flight to a child, and A's view
    of its children's health is not B's. There the control plane fences: it creates B's nexus with its own
    resv_key and preempt_policy holder (or key = A's key), which takes the reservations on every replica
    (A's next write to any child gets Reservation Conflict and A shuts itself down; its local child is
    watched through its node's target), using the children the etcd record says are healthy, then
    publishes it optimized - test_nexus.py's test_a_newer_nexus_fences_the_older_one checks the fencing.

    The test: the kernel sees one subsystem with both paths live, A's path optimized and B's inaccessible,
    the controller IDs in their ranges; a fio verify goes entirely through A (A's target counts it and A's
    nexus mirrors it to all three replicas; B's counts nothing). Then, with fio running, A is made
    inaccessible: once the kernel has seen it, nothing reaches either nexus (fio's I/O is held, not
    failed); B is made optimized: the rest of the run goes through B and fio's verify passes. Afterwards B
    reads back what was written through A (fio verify-only) and takes new verified writes, with A's path
    and A's nexus idle."""
    pb, engines = cl.pb, cl.engines
    N = pb.nexus_pb2
    A, B = engines[0], engines[1]
    vol = str(uuid.uuid4())
    nqn = f"nqn.2026-11.io.tern:{vol}"
    reps = [replica(cl, i, vol, "mp") for i in range(3)]
    (r0, loc0, rem0), (r1, loc1, rem1), (r2, _, rem2) = reps
    A.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=[loc0, rem1, rem2],
                                                 cntlid_min=1, cntlid_max=1000), timeout=60)
    B.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=[rem0, loc1, rem2],
                                                 cntlid_min=1001, cntlid_max=2000), timeout=60)
    try:
        pa = A.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[GUEST_HOSTNQN],
                                                            ana_state="optimized"), timeout=60)
        pb_ = B.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[GUEST_HOSTNQN],
                                                             ana_state="inaccessible"), timeout=60)
        assert (pa.cntlid_min, pa.cntlid_max, pa.ana_state) == (1, 1000, "optimized"), pa
        assert (pb_.cntlid_min, pb_.cntlid_max, pb_.ana_state) == (1001, 2000, "inaccessible"), pb_
        assert pa.share.uri.endswith(nqn) and pb_.share.uri.endswith(nqn)
        assert pa.state == N.NEXUS_STATE_ONLINE and pb_.state == N.NEXUS_STATE_ONLINE
        _multipath_and_swap(cl, vol, nqn, (r0, r1, r2))
    finally:
        try:
            A.api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
        finally:
            B.api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)


def _multipath_and_swap(cl, vol, nqn, reps):
    pb, g = cl.pb, cl.g
    N = pb.nexus_pb2
    A, B = cl.engines[0], cl.engines[1]
    first = fio_verify_cmd("DEV", size="8M", bs="16k", iodepth=8)
    try:
        ca = connect(g, nqn, slot=0)
        cb = connect(g, nqn, slot=1)
        dev = blockdev(g, nqn)
        first = first.replace("DEV", dev)
        # One subsystem, one namespace head, two live paths.
        subs = json.loads(g.run_ok("nvme list-subsys -o json"))
        [sub] = [s for h in subs for s in h["Subsystems"] if s["NQN"] == nqn]
        assert sorted(p["Name"] for p in sub["Paths"]) == sorted([ca, cb]), sub
        assert all(p["State"] == "live" for p in sub["Paths"]), sub
        assert g.run_ok("ls -d /sys/class/nvme-subsystem/*/nvme*n1 | wc -l").strip() == "1"
        assert 1 <= int(g.run_ok(f"cat /sys/class/nvme/{ca}/cntlid")) <= 1000
        assert 1001 <= int(g.run_ok(f"cat /sys/class/nvme/{cb}/cntlid")) <= 2000
        idns = json.loads(g.run_ok(f"nvme id-ns {dev} -o json"))
        assert idns["nguid"] == vol.replace("-", "") and idns["nmic"] & 1, idns
        assert ana_state(g, ca) == "optimized" and ana_state(g, cb) == "inaccessible"

        # Through A only: A's target counts the I/O, A's nexus mirrors every write to all three replicas.
        io0 = {A: path_io(A, pb, nqn), B: path_io(B, pb, nqn)}
        wa0, wb0 = child_writes(A, pb, vol), child_writes(B, pb, vol)
        fio_ok(g.run_ok(first, timeout=240))
        io1 = {A: path_io(A, pb, nqn), B: path_io(B, pb, nqn)}
        wa1, wb1 = child_writes(A, pb, vol), child_writes(B, pb, vol)
        assert io1[A] - io0[A] >= 1024 and io1[B] == io0[B], (io0, io1)
        assert all(wa1[r] - wa0[r] >= 512 for r in reps), (wa0, wa1)
        assert wb1 == wb0, (wb0, wb1)

        # The swap, in the middle of a verify run: A inaccessible first (and seen so by the kernel: with no
        # usable path it holds fio's I/O, it does not fail it), then B optimized.
        second = fio_verify_cmd(dev, size="24M", bs="16k", iodepth=8, extra="--offset=16M")
        background(g, "mpfio", second)
        wait_for("fio to be writing through A", lambda: path_io(A, pb, nqn) - io1[A] > 200, timeout=120)
        assert running(g, "mpfio"), "fio finished before the swap: make the run longer"
        requeued = int(g.run_ok("dmesg | grep -c 'no usable path - requeuing I/O'; true").strip() or 0)
        assert A.api.nexus.SetNexusAnaState(N.SetNexusAnaStateRequest(uuid=vol, ana_state="inaccessible"),
                                            timeout=60).ana_state == "inaccessible"
        wait_guest(g, "the kernel to see path A inaccessible",
                   f"grep -q '^inaccessible' /sys/block/nvme*c{ca[4:]}n1/ana_state", timeout=60)
        wait_guest(g, "the kernel to hold I/O with no usable path",
                   f"test $(dmesg | grep -c 'no usable path - requeuing I/O') -gt {requeued}", timeout=60)
        held_a, held_b = child_writes(A, pb, vol), child_writes(B, pb, vol)
        assert running(g, "mpfio"), "fio finished during the swap: make the run longer"
        assert path_io(B, pb, nqn) == io1[B] and held_b == wb1, "I/O reached B while it was inaccessible"
        assert B.api.nexus.SetNexusAnaState(N.SetNexusAnaStateRequest(uuid=vol, ana_state="optimized"),
                                            timeout=60).ana_state == "optimized"
        wait_guest(g, "the kernel to see path B optimized",
                   f"grep -q '^optimized' /sys/block/nvme*c{cb[4:]}n1/ana_state", timeout=60)
        rc, out = wait_background(g, "mpfio", timeout=300)
        assert rc == 0, out + g.dmesg(30)
        fio_ok(out)
        wb2 = child_writes(B, pb, vol)
        assert all(wb2[r] > held_b[r] for r in reps), (held_b, wb2)
        assert child_writes(A, pb, vol) == held_a, "A's nexus wrote after the kernel saw its path inaccessible"
        assert controller_state(g, ca) == "live" and controller_state(g, cb) == "live"

        # Through B only: it reads back what was written through A, and takes new verified writes.
        io2 = {A: path_io(A, pb, nqn), B: path_io(B, pb, nqn)}
        fio_ok(g.run_ok(f"{first} --verify_only", timeout=240))
        fio_ok(g.run_ok(fio_verify_cmd(dev, size="8M", bs="16k", iodepth=8, extra="--offset=48M"), timeout=240))
        io3 = {A: path_io(A, pb, nqn), B: path_io(B, pb, nqn)}
        wb3 = child_writes(B, pb, vol)
        assert io3[B] - io2[B] >= 1024 and io3[A] == io2[A], (io2, io3)
        assert all(wb3[r] - wb2[r] >= 512 for r in reps), (wb2, wb3)
        assert child_writes(A, pb, vol) == held_a
        for e in (A, B):
            assert nexus_of(e, pb, vol).state == N.NEXUS_STATE_ONLINE
    finally:
        stop_background(g, "mpfio")
        disconnect(g, nqn)


# --- online resize: the kernel sees the namespace grow -------------------------------------------------

def test_the_kernel_sees_a_resized_nexus_grow(cl):
    """A published nexus (a local and a remote replica) written by the kernel, then grown online: both
    replicas grow in place under it, ResizeNexus moves the metadata, and the kernel — still connected,
    no rescan asked for — sees the namespace's new size (Namespace Attribute Changed) and can write and
    read the grown range; what it wrote before is intact."""
    pb, g, engines = cl.pb, cl.g, cl.engines
    N, R = pb.nexus_pb2, pb.replica_pb2
    vol = str(uuid.uuid4())
    reps = [replica(cl, i, vol, "grow") for i in range(2)]
    e0 = engines[0]
    e0.api.nexus.CreateNexus(N.CreateNexusRequest(uuid=vol, size=VOL, children=[reps[0][1], reps[1][2]]), timeout=60)
    p = e0.api.nexus.PublishNexus(N.PublishNexusRequest(uuid=vol, allowed_hosts=[GUEST_HOSTNQN]), timeout=60)
    nqn = p.share.uri.rsplit("/", 1)[1]
    big = 2 * VOL
    try:
        connect(g, nqn, slot=0)
        dev = blockdev(g, nqn)
        sysfs = f"/sys/block/{dev[5:]}/size"
        assert int(g.run_ok(f"cat {sysfs}")) * 512 == VOL
        g.run_ok(f"dd if=/dev/urandom of=/tmp/before bs=1M count=4 status=none && "
                 f"dd if=/tmp/before of={dev} bs=1M oflag=direct status=none", timeout=60)
        for i, (r, _, _) in enumerate(reps):
            engines[i].api.replica.ResizeReplica(R.ResizeReplicaRequest(
                replica=R.ReplicaRef(uuid=r), size=required_child_bytes(big)), timeout=60)
        n = e0.api.nexus.ResizeNexus(N.ResizeNexusRequest(uuid=vol, size=big), timeout=60)
        assert n.size == big
        wait_guest(g, "the kernel to see the grown namespace", f"test $(cat {sysfs}) -eq {big // 512}", timeout=30)
        # The grown range takes writes and reads them back; the first 4 MiB are what was written before.
        g.run_ok(f"dd if=/dev/urandom of=/tmp/after bs=1M count=4 status=none && "
                 f"dd if=/tmp/after of={dev} bs=1M seek={VOL // MiB + 8} oflag=direct status=none && "
                 f"dd if={dev} bs=1M skip={VOL // MiB + 8} count=4 iflag=direct status=none | cmp - /tmp/after && "
                 f"dd if={dev} bs=1M count=4 iflag=direct status=none | cmp - /tmp/before && "
                 # where the nexus's labels were: zeros now, never our metadata
                 f"dd if={dev} bs=1M skip={VOL // MiB} count=2 iflag=direct status=none | cmp -n {2 * MiB} - /dev/zero",
                 timeout=60)
    finally:
        disconnect(g, nqn)
        e0.api.nexus.DestroyNexus(N.NexusRef(uuid=vol), timeout=60)
