"""The Linux kernel's NBD client (nbd.ko driven by nbd-client 3.24, Debian 12 kernel in a QEMU guest)
against our io-engine's NBD export of a thin replica: a file system made, filled, checked and read back
through a new connection; fio's verified random writes; discard reading back zeros and releasing the
replica's clusters; a clean disconnect; and an export name that does not exist.

Each test starts its own engine (fixture `engines`: stopped with SIGTERM at the end, must exit 0 with a
clean log); the guest, booted once for the module, reaches the engine's NBD port at 10.0.2.100:4420
(forward slot 0)."""
import hashlib
import json
import os
import time

import pytest

from conftest import make_file

pytestmark = pytest.mark.kernel

MiB = 1 << 20
SIZE = 128 * MiB
CLUSTER = 4 * MiB   # the pool's cluster size (thin allocation and unmap granularity)
DEV = "/dev/nbd0"
MNT = "/mnt/tern"


@pytest.fixture(scope="module")
def guest(kernel_guest):
    g = kernel_guest(forwards=1)
    assert g.run_ok(f"test -b {DEV} && cat /sys/block/nbd0/size").strip() == "0"
    return g


class Node:
    def __init__(self, engine, replica, guest, pb):
        self.e, self.r, self.guest, self.pb = engine, replica, guest, pb
        self.host, self.port = "10.0.2.100", guest.forward_port(0)

    def connect(self, name=None):
        return self.guest.run(f"nbd-client {self.host} {self.port} {DEV} -N {name or self.r.uuid}", timeout=60)

    def connect_ok(self):
        rc, out = self.connect()
        assert rc == 0, out
        assert self.guest.run_ok("cat /sys/block/nbd0/size").strip() == str(SIZE // 512)
        return out

    def disconnect(self):
        rc, out = self.guest.run(f"nbd-client -d {DEV}", timeout=60)
        assert rc == 0, out
        return out

    def allocated(self):
        reps = self.e.api.replica.ListReplicas(self.pb.replica_pb2.ListReplicasRequest(name="vol"), timeout=60).replicas
        return reps[0].allocated

    def established(self):
        """TCP connections to the engine's NBD port (here, from the guest's forwarder) in ESTABLISHED state."""
        n = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = open(table).read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                if int(f[1].rsplit(":", 1)[1], 16) == self.e.nbd_port and f[3] == "01":
                    n += 1
        return n


@pytest.fixture
def node(engines, scratch, guest, pb):
    disk = make_file(scratch / "pool.img", 2 * SIZE)
    # The NBD server says when a client disconnects at debug level.
    e = engines(pools=[("p", f"uring://{disk}")], log_level="info,nbd=debug")
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
        name="vol", pool="p", size=SIZE, thin=True, share=pb.common_pb2.SHARE_PROTOCOL_NBD), timeout=60)
    # The export's name is the replica's UUID.
    assert r.share.uri == f"nbd://127.0.0.1:{e.nbd_port}/{r.uuid}", r.share.uri
    guest.route(0, e.nbd_port)
    n = Node(e, r, guest, pb)
    try:
        yield n
    finally:
        # Whatever the test left behind goes before the engine is stopped (the engines fixture checks it).
        guest.run(f"umount {MNT} 2>/dev/null; nbd-client -d {DEV} >/dev/null 2>&1; true", timeout=60)
        guest.route(0, 0)


def md5(data):
    return hashlib.md5(data).hexdigest()


def put_random(guest, name, size):
    data = os.urandom(size)
    (guest.share / name).write_bytes(data)
    return md5(data)


def test_ext4_written_checked_and_read_back_through_a_new_connection(node, guest):
    """mkfs.ext4 on the export, mount, copy files in, umount; e2fsck -fn finds it clean; after a disconnect
    and a new connection (nothing left in the guest's caches) the mounted files have the md5 sums of the
    originals, and the thin replica allocated space for what was written."""
    node.connect_ok()
    sums = {"a.bin": put_random(guest, "a.bin", 3 * MiB + 12345), "b.bin": put_random(guest, "b.bin", 100 * 1024)}
    guest.run_ok(f"mkfs.ext4 -q -F {DEV} && mkdir -p {MNT} && mount {DEV} {MNT} && mkdir {MNT}/d && "
                 f"cp /share/a.bin {MNT}/ && cp /share/b.bin {MNT}/d/ && sync && umount {MNT}", timeout=120)
    rc, out = guest.run(f"e2fsck -fn {DEV}", timeout=120)
    assert rc == 0, out
    assert "Pass 5" in out and f"{DEV}: " in out, out   # it ran all passes
    assert node.allocated() >= 3 * MiB, node.allocated()
    node.disconnect()
    node.connect_ok()
    assert "TYPE=\"ext4\"" in guest.run_ok(f"blkid {DEV}")
    rc, out = guest.run(f"e2fsck -fn {DEV}", timeout=120)
    assert rc == 0, out
    out = guest.run_ok(f"mount -o ro {DEV} {MNT} && md5sum {MNT}/a.bin {MNT}/d/b.bin && umount {MNT}", timeout=120)
    got = {os.path.basename(line.split()[1]): line.split()[0] for line in out.strip().splitlines()}
    assert got == sums, (got, sums)
    node.disconnect()


def test_fio_random_writes_verified(node, guest):
    """fio (libaio, O_DIRECT, random 4 KiB writes at queue depth 16, crc32c verification of every block
    read back) over 8 MiB of the export completes with no error, having written and read all of it."""
    node.connect_ok()
    size = 8 * MiB
    rc, out = guest.run(f"fio --name=kverify --filename={DEV} --ioengine=libaio --direct=1 --rw=randwrite --bs=4k "
                        f"--iodepth=16 --size={size} --offset={32 * MiB} --verify=crc32c --do_verify=1 "
                        f"--verify_fatal=1 --verify_state_save=0 --output-format=json --output=/share/fio.json",
                        timeout=150)
    assert rc == 0, out
    job = json.loads((guest.share / "fio.json").read_text())["jobs"][0]
    assert job["error"] == 0, job
    assert job["write"]["io_bytes"] == size and job["read"]["io_bytes"] == size, (job["write"], job["read"])
    assert job["write"]["total_ios"] == size // 4096
    assert node.allocated() >= size
    node.disconnect()


def test_blkdiscard_reads_back_zeros_and_frees_clusters(node, guest):
    """12 MiB of random data written at 92 MiB (three clusters); blkdiscard of the last 8 MiB: that range
    reads back as zeros, the 4 MiB before it keeps its data, and the replica releases two clusters."""
    node.connect_ok()
    data_md5 = put_random(guest, "rnd.bin", 12 * MiB)
    base = node.allocated()
    guest.run_ok(f"dd if=/share/rnd.bin of={DEV} bs=1M seek=92 oflag=direct conv=fsync 2>&1", timeout=120)
    out = guest.run_ok(f"dd if={DEV} bs=1M skip=92 count=12 iflag=direct 2>/dev/null | md5sum", timeout=120)
    assert out.split()[0] == data_md5
    assert node.allocated() == base + 3 * CLUSTER, (base, node.allocated())
    rc, out = guest.run(f"blkdiscard -o {96 * MiB} -l {8 * MiB} {DEV}", timeout=60)
    assert rc == 0, out
    out = guest.run_ok(f"dd if={DEV} bs=1M skip=96 count=8 iflag=direct 2>/dev/null | md5sum", timeout=120)
    assert out.split()[0] == md5(bytes(8 * MiB)), "the discarded range does not read back as zeros"
    out = guest.run_ok(f"dd if={DEV} bs=1M skip=92 count=4 iflag=direct 2>/dev/null | md5sum", timeout=120)
    rnd = (guest.share / "rnd.bin").read_bytes()
    assert out.split()[0] == md5(rnd[:4 * MiB]), "the discard reached data before its range"
    assert node.allocated() == base + CLUSTER, (base, node.allocated())
    node.disconnect()


def test_disconnect_is_clean(node, guest):
    """`nbd-client -d` sends NBD_CMD_DISC: nbd-client exits 0, the kernel says the disconnect was asked for,
    the device is empty again, the engine's log shows the client's DISC and the connection closing, and no
    connection to the engine's NBD port is left."""
    node.connect_ok()
    guest.run_ok(f"dd if=/dev/urandom of={DEV} bs=64k count=16 oflag=direct 2>&1", timeout=60)
    assert node.established() == 1
    node.disconnect()
    assert guest.run(f"nbd-client -c {DEV}", timeout=30)[0] != 0  # no longer connected
    assert guest.run_ok("cat /sys/block/nbd0/size").strip() == "0"
    assert "Disconnected due to user request" in guest.dmesg(20)
    deadline = time.monotonic() + 15
    while node.established() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.established() == 0
    log = node.e.log()
    serving = [line for line in log.splitlines() if f"serving export '{node.r.uuid}'" in line]
    assert len(serving) == 1, serving
    conn = serving[0].split("connection ", 1)[1].split(" ", 1)[0]
    assert f"connection {conn} " in log and "NBD_CMD_DISC" in log
    assert any(f"connection {conn} " in line and "closing: the client disconnected (NBD_CMD_DISC)" in line
               for line in log.splitlines()), log[-3000:]


def test_unknown_export_name_is_refused(node, guest):
    """nbd-client asking for an export that does not exist fails (non-zero exit) with our server's message
    ("no export named ..."), leaves the device unconfigured, and the right name still connects."""
    rc, out = node.connect("no-such-export")
    assert rc != 0, out
    assert "no export named 'no-such-export'" in out, out
    assert guest.run_ok("cat /sys/block/nbd0/size").strip() == "0"
    assert guest.run(f"nbd-client -c {DEV}", timeout=30)[0] != 0
    assert "serving export" not in node.e.log()
    node.connect_ok()
    node.disconnect()
