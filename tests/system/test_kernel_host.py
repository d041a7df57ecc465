"""The Linux kernel's NVMe/TCP host (nvme-tcp + nvme-cli, in a QEMU guest) against our target (nvmf_tgt
here): discovery, connect with its options, the host ACL, identify and log pages as nvme-cli decodes them,
I/O with fio verify, trim, flush, ext4 and xfs, keep-alive, and a packet capture of the kernel's session
read by tshark's dissector. Our code checked only against our own initiator could share a misreading of
the specification with it; the kernel's host was written by other people."""
import json
import os
import uuid

import pytest

from conftest import make_file, usable_cores
from kernel_guest import GUEST_HOSTNQN
from kernel_nvme import blockdev, connect, controller_state, disconnect, fio_ok, fio_verify_cmd, wait_guest
from nvmf_target import Target, config, subsystem

pytestmark = pytest.mark.kernel

NQN = "nqn.2026-11.io.tern:kernel-host"
NQN_ACL = "nqn.2026-11.io.tern:kernel-acl"
HOST_OK = "nqn.2026-11.io.tern:host-allowed"
NS_UUID = "5c1a2b3c-0d4e-4f50-8a61-72839405a6b7"
SIZE = 512 << 20  # xfs needs at least 300 MiB


class Env:
    pass


@pytest.fixture(scope="module")
def env(build_dir, kernel_guest, tmp_path_factory):
    e = Env()
    wd = tmp_path_factory.mktemp("khost")
    e.img = f"/var/tmp/tern-khost-{os.getpid()}.img"
    with open(e.img, "wb") as f:
        f.truncate(SIZE)
    cfg = config([f"uring://{e.img}?uuid={NS_UUID}", "malloc:///acl?size_mb=16"],
                 [subsystem(NQN, [e.img], serial="TERNKHOST1", model="tern kernel test"),
                  subsystem(NQN_ACL, ["acl"], allow_any_host=False, hosts=[HOST_OK], serial="TERNKACL")])
    e.t = Target(build_dir / "tools/nvmf_tgt/nvmf_tgt", wd, cfg, cores=usable_cores(2))
    e.t.start()
    e.g = kernel_guest(forwards=2)  # slot 0: nvmf_tgt; slot 1: an io-engine's share
    e.g.route(0, e.t.port)
    try:
        yield e
        e.t.stop()
    finally:
        e.t.kill()
        os.unlink(e.img)


def wait_no_controllers(env, nqn):
    env.t.wait_for(f"no controllers on {nqn}", lambda: not env.t.controllers(nqn), timeout=20)


def test_discover_lists_what_this_host_may_see(env):
    """`nvme discover` reads our discovery log: the guest's host NQN sees the discovery entry and the open
    subsystem, not the one whose ACL leaves it out; an allowed host NQN sees that one too. Entries carry
    our listener's own address, TCP, IPv4, and TREQ 'not specified, SQ flow control disable supported'."""
    def discover(*opts):
        out = env.g.run_ok(f"nvme discover -t tcp -a 10.0.2.100 -s 4420 {' '.join(opts)} -o json")
        return json.loads(out[out.index("{"):])["records"]

    recs = discover()
    assert sorted(r["subnqn"] for r in recs) == sorted(["nqn.2014-08.org.nvmexpress.discovery", NQN])
    for r in recs:
        assert r["trtype"] == "tcp" and r["adrfam"] == "ipv4"
        assert r["traddr"] == "127.0.0.1" and r["trsvcid"] == str(env.t.port)
        assert r["treq"] == "not specified, sq flow control disable supported"
        assert r["sectype"] == "none"
    types = {r["subnqn"]: r["subtype"] for r in recs}
    assert types[NQN] == "nvme subsystem"
    assert types["nqn.2014-08.org.nvmexpress.discovery"] == "current discovery subsystem"

    recs = discover(f"--hostnqn={HOST_OK}")
    assert sorted(r["subnqn"] for r in recs) == sorted(["nqn.2014-08.org.nvmexpress.discovery", NQN, NQN_ACL])


def test_host_not_on_the_list_is_refused(env):
    """A host NQN missing from the subsystem's list gets Connect Invalid Host (the kernel logs 'not
    allowed'), nothing stays connected; the listed host NQN connects and disconnects cleanly."""
    rc, out = connect(env.g, NQN_ACL, ok=False)
    assert rc != 0, out
    assert f"Connect for subsystem {NQN_ACL} is not allowed, hostnqn: {GUEST_HOSTNQN}" in env.g.dmesg(10)
    assert not env.t.controllers(NQN_ACL)

    ctrl = connect(env.g, NQN_ACL, f"--hostnqn={HOST_OK}")
    assert controller_state(env.g, ctrl) == "live"
    [c] = env.t.controllers(NQN_ACL)
    assert c["hostnqn"] == HOST_OK
    assert blockdev(env.g, NQN_ACL)
    assert disconnect(env.g, NQN_ACL) == 1
    wait_no_controllers(env, NQN_ACL)


def test_identify_and_logs_as_nvme_cli_reads_them(env):
    """id-ctrl, id-ns, ns-descs, list-ns and the error, SMART and ANA log pages, decoded by nvme-cli,
    show what we configured: model, serial, NQN, controller id, size, LBA format, NGUID/UUID, ANA group."""
    ctrl = connect(env.g, NQN)
    try:
        dev = blockdev(env.g, NQN)
        idc = json.loads(env.g.run_ok(f"nvme id-ctrl /dev/{ctrl} -o json"))
        [c] = env.t.controllers(NQN)
        assert idc["mn"].strip() == "tern kernel test"
        assert idc["sn"].strip() == "TERNKHOST1"
        assert idc["subnqn"] == NQN
        assert idc["cntlid"] == c["cntlid"]
        assert idc["nn"] >= 1 and idc["anacap"] != 0 and idc["kas"] > 0
        assert idc["ioccsz"] * 16 >= 64 and idc["iorcsz"] == 1  # capsule sizes, in 16-byte units

        idns = json.loads(env.g.run_ok(f"nvme id-ns {dev} -o json"))
        assert idns["nsze"] == SIZE // 512 and idns["ncap"] == SIZE // 512
        assert idns["lbafs"][idns["flbas"] & 0xF]["ds"] == 9
        assert idns["nguid"] == NS_UUID.replace("-", "")
        assert idns["anagrpid"] == 1

        descs = json.loads(env.g.run_ok(f"nvme ns-descs {dev} -o json"))["ns-descs"]
        by = {d["type"]: d for d in descs}
        assert by["uuid"]["uuid"] == NS_UUID and by["nguid"]["nguid"] == NS_UUID.replace("-", "")

        nsl = json.loads(env.g.run_ok(f"nvme list-ns /dev/{ctrl} -o json"))["nsid_list"]
        assert [n["nsid"] for n in nsl] == [1]

        errs = json.loads(env.g.run_ok(f"nvme error-log /dev/{ctrl} -e 1 -o json"))["errors"]
        assert errs[0]["error_count"] == 0

        env.g.run_ok(f"dd if={dev} of=/dev/null bs=4k count=8 iflag=direct")
        smart = json.loads(env.g.run_ok(f"nvme smart-log /dev/{ctrl} -o json"))
        assert smart["critical_warning"] == 0 and int(smart["host_read_commands"]) >= 1

        ana = json.loads(env.g.run_ok(f"nvme ana-log /dev/{ctrl} -o json"))
        # nvme-cli 2.3 reads this page in 4 KiB pieces sized from NANAGRPID and MNAN (docs/interop.md).
        groups = ana.get("ANA DESC LIST ") or ana.get("ANA DESC LIST")  # 2.3 spells it with a space
        assert ana["ngrps"] == 1 and len(groups) == 1, ana
        assert groups[0]["grpid"] == 1 and groups[0]["state"] == "optimized"
        assert [n["nsid"] for n in groups[0]["NSIDS"]] == [1]
    finally:
        disconnect(env.g, NQN)
    wait_no_controllers(env, NQN)


def test_fio_verify_trim_flush(env):
    """fio random writes with crc32c verify (libaio, QD 16) pass; a discarded range reads back as zeros
    and reaches our device as deallocate; flush reaches it as a flush."""
    connect(env.g, NQN)
    try:
        dev = blockdev(env.g, NQN)
        fio_ok(env.g.run_ok(fio_verify_cmd(dev, size="8M"), timeout=240))
        before = env.t.ctl("stats")["devices"][env.img]
        assert env.g.run_ok(f"cat /sys/block/{dev[5:]}/queue/discard_max_bytes").strip() != "0"
        env.g.run_ok(f"blkdiscard -o 0 -l {1 << 20} {dev}")
        env.g.run_ok(f"cmp -n {1 << 20} {dev} /dev/zero")
        env.g.run_ok(f"nvme flush {dev}")
        after = env.t.ctl("stats")["devices"][env.img]
        assert after["unmaps"] > before["unmaps"] or after["write_zeroes"] > before["write_zeroes"]
        assert after["flushes"] > before["flushes"]
    finally:
        disconnect(env.g, NQN)
    wait_no_controllers(env, NQN)


def test_digests_and_two_io_queues(env):
    """Header and data digests (-g -G) with two I/O queues: the target sees two queues, fio verify passes
    over both, and disconnect leaves nothing behind."""
    ctrl = connect(env.g, NQN, "-g", "-G", "-i", "2")
    try:
        [c] = env.t.controllers(NQN)
        assert c["io_queues"] == 2
        assert "creating 2 I/O queues" in env.g.dmesg(20)
        dev = blockdev(env.g, NQN)
        fio_ok(env.g.run_ok(fio_verify_cmd(dev, size="8M", extra="--numjobs=2 --offset_increment=8M"),
                            timeout=240))
        assert controller_state(env.g, ctrl) == "live"
    finally:
        disconnect(env.g, NQN)
    wait_no_controllers(env, NQN)


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_filesystem(env, fs):
    """mkfs, mount, write files, unmount, check (e2fsck -fn / xfs_repair -n), mount again and compare."""
    connect(env.g, NQN)
    try:
        dev = blockdev(env.g, NQN)
        mkfs = f"mkfs.ext4 -F -q {dev}" if fs == "ext4" else f"mkfs.xfs -f -q {dev}"
        fsck = f"e2fsck -fn {dev}" if fs == "ext4" else f"xfs_repair -n {dev}"
        env.g.run_ok(mkfs, timeout=240)
        env.g.run_ok(f"mkdir -p /mnt/t && mount -t {fs} {dev} /mnt/t && "
                     "dd if=/dev/urandom of=/mnt/t/a bs=1M count=8 2>/dev/null && mkdir /mnt/t/d && "
                     "for i in $(seq 20); do echo file $i > /mnt/t/d/f$i; done && "
                     "md5sum /mnt/t/a /mnt/t/d/* > /tmp/sums && umount /mnt/t", timeout=180)
        env.g.run_ok(fsck, timeout=180)
        env.g.run_ok(f"mount -t {fs} {dev} /mnt/t && (cd / && md5sum -c /tmp/sums) && umount /mnt/t", timeout=120)
    finally:
        env.g.run("umount /mnt/t 2>/dev/null")
        disconnect(env.g, NQN)
    wait_no_controllers(env, NQN)


def test_idle_controller_survives_keep_alive(env):
    """With a 2 s keep-alive timeout, an idle controller stays connected (and is the same controller on
    the target) past three times that: the kernel's keep-alives reach our timer."""
    lines_before = int(env.g.run_ok("dmesg | wc -l"))
    ctrl = connect(env.g, NQN, "--keep-alive-tmo=2")
    try:
        [c] = env.t.controllers(NQN)
        assert c["kato_ms"] == 2000
        env.g.run_ok("sleep 7", timeout=30)
        assert controller_state(env.g, ctrl) == "live"
        [c2] = env.t.controllers(NQN)
        assert c2["cntlid"] == c["cntlid"]
        since = env.g.run_ok(f"dmesg | tail -n +{lines_before + 1}").lower()
        assert "keep alive" not in since and "keep-alive" not in since and "reset" not in since, since
    finally:
        disconnect(env.g, NQN)
    wait_no_controllers(env, NQN)


def test_kernel_session_decodes_in_tshark(env, tmp_path):
    """A capture of the kernel's session (digests on, connect, writes, reads, disconnect) on our target's
    port decodes in tshark's NVMe/TCP dissector: no malformed packets, every digest checks out."""
    from test_nvmf_tshark import Capture, check_clean_session
    pcap = tmp_path / "kernel.pcap"
    cap = Capture(env.t.port, pcap)
    try:
        connect(env.g, NQN, "-g", "-G")
        dev = blockdev(env.g, NQN)
        env.g.run_ok(f"dd if=/dev/urandom of={dev} bs=64k count=4 oflag=direct 2>/dev/null && "
                     f"dd if={dev} of=/dev/null bs=64k count=4 iflag=direct 2>/dev/null")
        disconnect(env.g, NQN)
    finally:
        cap.stop()
    wait_no_controllers(env, NQN)
    check_clean_session(pcap, env.t.port, min_digests=(20, 4))  # the kernel negotiated both digests


def test_engine_replica_share_as_a_user_attaches_it(env, engines, pb, scratch):
    """The io-engine's NVMe/TCP share of a thin replica, allowed for the guest's host NQN: the kernel
    connects, sees the replica's UUID as NGUID, and ext4 on it is clean after files are written; a host
    NQN not on the replica's list is refused."""
    disk = make_file(scratch / "pool.img", 256 << 20)
    e = engines(pools=[("p", f"uring://{disk}")])
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
        name="vol", pool="p", size=64 << 20, thin=True, share=pb.common_pb2.SHARE_PROTOCOL_NVMF,
        allowed_hosts=[GUEST_HOSTNQN]), timeout=60)
    nqn = r.share.uri.rsplit("/", 1)[1]
    assert nqn == f"nqn.2026-11.io.tern:{r.uuid}"
    env.g.route(1, e.nvmf_port)
    try:
        rc, out = connect(env.g, nqn, f"--hostnqn={HOST_OK}", slot=1, ok=False)
        assert rc != 0, out
        assert f"Connect for subsystem {nqn} is not allowed" in env.g.dmesg(5)
        connect(env.g, nqn, slot=1)
        dev = blockdev(env.g, nqn)
        idns = json.loads(env.g.run_ok(f"nvme id-ns {dev} -o json"))
        assert idns["nguid"] == r.uuid.replace("-", "") and idns["nsze"] * 512 == 64 << 20
        env.g.run_ok(f"mkfs.ext4 -F -q {dev} && mkdir -p /mnt/e && mount {dev} /mnt/e && "
                     "dd if=/dev/urandom of=/mnt/e/f bs=1M count=4 2>/dev/null && md5sum /mnt/e/f > /tmp/e.sum && "
                     f"umount /mnt/e && e2fsck -fn {dev} && mount {dev} /mnt/e && (cd / && md5sum -c /tmp/e.sum) && "
                     "umount /mnt/e", timeout=180)
        used = e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(), timeout=60).replicas[0]
        assert used.allocated > 4 << 20, used
    finally:
        env.g.run("umount /mnt/e 2>/dev/null; true")
        disconnect(env.g, nqn)
        env.g.route(1, 0)
