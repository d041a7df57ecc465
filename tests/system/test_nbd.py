"""The NBD server (src/nbd) run by tools/nvmf_tgt's `nbd:` section, against real NBD clients: nbdinfo,
qemu-img, nbdcopy (libnbd-bin), fio's nbd engine, and an ext4 file system on a loop device over nbdfuse.
A small raw client (below) checks what real clients never send: writes to a read-only export, and a
connection held open while its export is removed.

Every subprocess and socket read has a timeout; the target is always stopped (and its log checked for
sanitizer reports) by the fixtures in conftest.py.
"""
import contextlib
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import time

import pytest

from nvmf_target import config

MIB = 1 << 20
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
OPT_GO, REP_ACK, REP_INFO = 7, 1, 3
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
EPERM = 1
EXPORTS = {
    "vol": ("m0", False),       # 64 MiB, 512-byte blocks
    "v4k": ("m4k", False),      # 32 MiB, 4096-byte blocks
    "ro": ("r0", True),         # 16 MiB, read-only
    "fio": ("f0", False),       # 64 MiB for the fio verify job
    "fs": ("fs0", False),       # 256 MiB for ext4
}


def tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed (scripts/install-deps.sh installs it)")
    return path


def run(cmd, timeout=120, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def tgt(nvmf_module_target, tmp_path_factory):
    work = tmp_path_factory.mktemp("nbd")
    sock = work / "nbd.sock"
    c = config(devices=["malloc:///m0?size_mb=64", "malloc:///m4k?size_mb=32&blk_size=4096", "malloc:///r0?size_mb=16",
                        "malloc:///f0?size_mb=64", "malloc:///fs0?size_mb=256"],
               subsystems=[], listeners=[])
    c["nbd"] = {"listen": "127.0.0.1:0", "unix": str(sock),
                "exports": [{"name": n, "device": d, "read_only": ro} for n, (d, ro) in EXPORTS.items()]}
    t = nvmf_module_target(c)
    nbd = t.ready["nbd"]
    t.nbd_port = int(nbd["listen"].rsplit(":", 1)[1])
    t.nbd_unix = nbd["unix"]
    assert t.nbd_unix == str(sock)
    return t


def uri(t, name):
    return f"nbd://127.0.0.1:{t.nbd_port}/{name}"


def unix_uri(t, name):
    return f"nbd+unix:///{name}?socket={t.nbd_unix}"


def nbdinfo_json(target_uri):
    p = run([tool("nbdinfo"), "--json", target_uri], timeout=60)
    return json.loads(p.stdout)


def random_file(path, size, seed):
    # Incompressible, reproducible content, with a hole in the middle so zero runs are exercised too.
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(rnd.randbytes(size // 2))
        f.write(b"\0" * (size // 4))
        f.write(rnd.randbytes(size - size // 2 - size // 4))
    return path


def export_info(t, name):
    r = t.ctl("nbd_list")
    for e in r["exports"]:
        if e["name"] == name:
            return e
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------------
# A raw client for what real clients never do

class RawNbd:
    def __init__(self, port, name, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.settimeout(timeout)
        greeting = self.recv(18)
        assert greeting[:16] == b"NBDMAGICIHAVEOPT", greeting
        self.s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
        n = name.encode()
        data = struct.pack(">I", len(n)) + n + struct.pack(">H", 0)
        self.s.sendall(struct.pack(">QII", OPT_MAGIC, OPT_GO, len(data)) + data)
        while True:
            magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
            assert magic == REP_MAGIC and opt == OPT_GO
            self.recv(length)
            if rtype != REP_INFO:
                assert rtype == REP_ACK, hex(rtype)
                break
        self.cookie = 0

    def recv(self, n):
        b = b""
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise EOFError(f"connection closed after {len(b)} of {n} bytes")
            b += chunk
        return b

    def request(self, cmd, offset, length, payload=b""):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, self.cookie, offset, length) + payload)
        magic, err, cookie = struct.unpack(">IIQ", self.recv(16))
        assert magic == SIMPLE_REPLY_MAGIC and cookie == self.cookie
        data = self.recv(length) if cmd == CMD_READ and err == 0 else b""
        return err, data

    def closed_by_server(self, timeout=15):
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


# ---------------------------------------------------------------------------------------------------
# nbdinfo

def test_nbdinfo_size_block_sizes_and_flags(tgt):
    info = nbdinfo_json(uri(tgt, "vol"))
    assert info["protocol"] == "newstyle-fixed"
    assert info["structured"] is False  # structured replies are refused: simple replies only
    (e,) = info["exports"]
    assert e["export-name"] == "vol"
    assert e["export-size"] == 64 * MIB
    assert (e["block_size_minimum"], e["block_size_preferred"], e["block_size_maximum"]) == (512, 4096, 32 * MIB)
    assert e["is_read_only"] is False
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
        assert e[flag] is True, flag
    assert e["description"] == "tern device m0"
    (e4,) = nbdinfo_json(uri(tgt, "v4k"))["exports"]
    assert e4["block_size_minimum"] == 4096 and e4["export-size"] == 32 * MIB


def test_nbdinfo_list(tgt):
    info = json.loads(run([tool("nbdinfo"), "--list", "--json", uri(tgt, "")], timeout=60).stdout)
    names = sorted(e["export-name"] for e in info["exports"])
    assert names == sorted(EXPORTS)
    sizes = {e["export-name"]: e["export-size"] for e in info["exports"]}
    assert sizes["ro"] == 16 * MIB and sizes["fs"] == 256 * MIB


def test_unknown_export_is_refused(tgt):
    p = run([tool("nbdinfo"), uri(tgt, "no-such-export")], timeout=60, check=False)
    assert p.returncode != 0
    assert "opt_go" in p.stderr and "No such file or directory" in p.stderr, p.stderr  # NBD_REP_ERR_UNKNOWN
    p = run([tool("qemu-img"), "info", uri(tgt, "no-such-export")], timeout=60, check=False)
    assert p.returncode != 0


# ---------------------------------------------------------------------------------------------------
# Copies in and out

def test_qemu_img_convert_in_out_and_compare(tgt, tmp_path):
    qemu_img = tool("qemu-img")
    src = random_file(tmp_path / "src.img", 48 * MIB, 1)
    run([qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri(tgt, "vol")])
    # The export (64 MiB) is larger than the file (48 MiB): read it all back and compare the start.
    out = tmp_path / "out.img"
    run([qemu_img, "convert", "-f", "raw", "-O", "raw", uri(tgt, "vol"), str(out)])
    assert out.stat().st_size == 64 * MIB
    with open(src, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read(48 * MIB)
    # Whole-image round trip: a 64 MiB source, compared by qemu-img itself.
    full = random_file(tmp_path / "full.img", 64 * MIB, 2)
    run([qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(full), uri(tgt, "vol")])
    p = run([qemu_img, "compare", "-f", "raw", "-F", "raw", str(full), uri(tgt, "vol")])
    assert "Images are identical" in p.stdout
    # And through the 4 KiB-block export.
    small = random_file(tmp_path / "small.img", 32 * MIB, 3)
    run([qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(small), uri(tgt, "v4k")])
    assert "Images are identical" in run([qemu_img, "compare", "-f", "raw", "-F", "raw", str(small), uri(tgt, "v4k")]).stdout


def test_nbdcopy_multi_conn(tgt, tmp_path):
    nbdcopy = tool("nbdcopy")
    src = random_file(tmp_path / "src.img", 64 * MIB, 4)
    run([nbdcopy, "--connections=4", "--requests=16", "--flush", str(src), uri(tgt, "vol")])
    dst = tmp_path / "dst.img"
    run([nbdcopy, "--connections=4", uri(tgt, "vol"), str(dst)])
    assert src.read_bytes() == dst.read_bytes()
    # Export to export, over TCP and the unix socket.
    run([nbdcopy, uri(tgt, "vol"), unix_uri(tgt, "fio")])
    back = tmp_path / "back.img"
    run([nbdcopy, unix_uri(tgt, "fio"), str(back)])
    assert back.read_bytes() == src.read_bytes()


def test_unix_socket_export(tgt, tmp_path):
    (e,) = nbdinfo_json(unix_uri(tgt, "v4k"))["exports"]
    assert e["export-size"] == 32 * MIB and e["block_size_minimum"] == 4096
    src = random_file(tmp_path / "u.img", 32 * MIB, 5)
    run([tool("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), unix_uri(tgt, "v4k")])
    p = run([tool("qemu-img"), "compare", "-f", "raw", "-F", "raw", str(src), uri(tgt, "v4k")])
    assert "Images are identical" in p.stdout  # written over the unix socket, read back over TCP


# ---------------------------------------------------------------------------------------------------
# fio with verification

def test_fio_randwrite_verify_multi_conn(tgt, tmp_path):
    fio = tool("fio")
    job = tmp_path / "verify.fio"
    job.write_text(f"""
[global]
ioengine=nbd
uri={uri(tgt, "fio")}
rw=randwrite
bs=4k
iodepth=16
numjobs=4
size=16m
offset_increment=16m
verify=crc32c
verify_fatal=1
verify_state_save=0
do_verify=1
group_reporting=1

[verify]
""")
    p = run([fio, "--output-format=json", str(job)], timeout=300)
    r = json.loads(p.stdout[p.stdout.index("{"):])
    (j,) = r["jobs"]
    assert j["error"] == 0
    assert j["write"]["io_bytes"] == 64 * MIB
    assert j["read"]["io_bytes"] == 64 * MIB  # the verify pass read everything back
    # Four jobs, four connections: each libnbd handle is its own connection.
    c = export_info(tgt, "fio")["counters"]
    assert c["writes"] >= 16384 and c["errors"] == 0


# ---------------------------------------------------------------------------------------------------
# Read-only exports

def test_read_only_export_refuses_writes(tgt, tmp_path):
    (e,) = nbdinfo_json(uri(tgt, "ro"))["exports"]
    assert e["is_read_only"] is True and e["can_trim"] is False and e["can_zero"] is False
    img = random_file(tmp_path / "w.img", 1 * MIB, 6)
    p = run([tool("nbdcopy"), str(img), uri(tgt, "ro")], check=False)
    assert p.returncode != 0 and "read-only" in p.stderr, p.stderr
    p = run([tool("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(img), uri(tgt, "ro")], check=False)
    assert p.returncode != 0
    # A client that writes anyway gets EPERM, and the data is untouched.
    c = RawNbd(tgt.nbd_port, "ro")
    try:
        err, _ = c.request(CMD_WRITE, 0, 4096, b"\xaa" * 4096)
        assert err == EPERM
        err, data = c.request(CMD_READ, 0, 4096)
        assert err == 0 and data == b"\0" * 4096
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------------
# A file system over NBD: nbdfuse exposes the export as a file, a loop device makes it a disk

@contextlib.contextmanager
def nbdfuse_file(target_uri, work):
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: nbdfuse cannot mount (the suite needs FUSE: modprobe fuse)")
    mnt = work / "fuse"
    mnt.mkdir()
    pidfile = work / "nbdfuse.pid"
    log = open(work / "nbdfuse.log", "w")
    proc = subprocess.Popen([tool("nbdfuse"), "-P", str(pidfile), str(mnt / "disk"), target_uri],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert proc.poll() is None, f"nbdfuse exited with {proc.returncode}: {(work / 'nbdfuse.log').read_text()}"
            assert time.monotonic() < deadline, "nbdfuse did not come up within 30 s"
            time.sleep(0.05)
        yield mnt / "disk"
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def loop_device(path):
    p = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.fail(f"no loop device (the suite needs loop devices: modprobe loop): {p.stderr.strip()}")
    dev = p.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)


@contextlib.contextmanager
def mounted(dev, where):
    where.mkdir(exist_ok=True)
    run(["mount", dev, str(where)], timeout=60)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=60)


def test_ext4_through_nbdfuse_and_a_loop_device(tgt, tmp_path):
    files = {f"dir{i % 3}/file{i}": os.urandom(257 * 1024 + i * 4097) for i in range(12)}
    with nbdfuse_file(uri(tgt, "fs"), tmp_path) as disk:
        assert disk.stat().st_size == 256 * MIB
        with loop_device(disk) as dev:
            run(["mkfs.ext4", "-q", "-F", dev], timeout=120)
            with mounted(dev, tmp_path / "mnt") as m:
                for rel, data in files.items():
                    (m / rel).parent.mkdir(exist_ok=True)
                    (m / rel).write_bytes(data)
                run(["sync"], timeout=60)
            p = run(["e2fsck", "-fn", dev], timeout=120, check=False)
            assert p.returncode == 0, f"e2fsck -fn found problems:\n{p.stdout}\n{p.stderr}"
            with mounted(dev, tmp_path / "mnt") as m:
                for rel, data in files.items():
                    assert (m / rel).read_bytes() == data, rel
    # The client went away cleanly; the export saw flushes (sync, unmount) and no errors.
    deadline = time.monotonic() + 20
    while export_info(tgt, "fs")["clients"] and time.monotonic() < deadline:
        time.sleep(0.05)
    e = export_info(tgt, "fs")
    assert e["clients"] == []
    assert e["counters"]["errors"] == 0 and e["counters"]["flushes"] > 0


# ---------------------------------------------------------------------------------------------------
# Control socket: exports added, listed and removed while the target runs

def test_control_socket_add_list_remove(tgt, tmp_path):
    assert tgt.ctl("device_create", uri="malloc:///dyn0?size_mb=8")["name"] == "dyn0"
    r = tgt.ctl("nbd_export_add", name="dyn", device="dyn0")
    assert r["name"] == "dyn"
    tgt.ctl("nbd_export_add", name="dyn", device="dyn0")  # the same again: fine
    bad = tgt.control("nbd_export_add", name="dyn", device="m0")
    assert not bad["ok"] and "EEXIST" in bad["error"] and "device" in bad["error"], bad
    bad = tgt.control("nbd_export_add", name="dyn", device="dyn0", read_only=True)
    assert not bad["ok"] and "read_only" in bad["error"], bad
    assert not tgt.control("nbd_export_add", name="x", device="no-such-device")["ok"]
    (e,) = nbdinfo_json(uri(tgt, "dyn"))["exports"]
    assert e["export-size"] == 8 * MIB
    listing = tgt.ctl("nbd_list")
    assert listing["listen"] == f"127.0.0.1:{tgt.nbd_port}" and listing["unix"] == tgt.nbd_unix
    # A connected client with I/O done; then the export goes away under it.
    c = RawNbd(tgt.nbd_port, "dyn")
    try:
        assert c.request(CMD_WRITE, 0, 4096, b"\x5a" * 4096)[0] == 0
        assert c.request(CMD_READ, 0, 4096) == (0, b"\x5a" * 4096)
        e = export_info(tgt, "dyn")
        assert len(e["clients"]) == 1 and e["clients"][0]["peer"].startswith("127.0.0.1:")
        assert e["counters"]["writes"] == 1 and e["counters"]["read_bytes"] >= 4096  # nbdinfo read some too
        tgt.ctl("nbd_export_remove", name="dyn")
        assert c.closed_by_server(), "the client of a removed export was not disconnected"
    finally:
        c.close()
    assert "dyn" not in [x["name"] for x in tgt.ctl("nbd_list")["exports"]]
    gone = tgt.control("nbd_export_remove", name="dyn")
    assert not gone["ok"] and "ENOENT" in gone["error"], gone
    p = run([tool("nbdinfo"), uri(tgt, "dyn")], timeout=60, check=False)
    assert p.returncode != 0
    # The device is free again: a second export of it works.
    tgt.ctl("nbd_export_add", name="dyn2", device="dyn0", read_only=True)
    assert nbdinfo_json(uri(tgt, "dyn2"))["exports"][0]["is_read_only"] is True
    tgt.ctl("nbd_export_remove", name="dyn2")


def test_target_without_nbd_section(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"], subsystems=[], listeners=[]))
    assert "nbd" not in t.ready
    r = t.control("nbd_list")
    assert not r["ok"] and "no NBD server" in r["error"]


def test_bad_nbd_section_is_refused(build_dir, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(json.dumps({"devices": ["malloc:///m0?size_mb=4"], "nbd": {"listen": "127.0.0.1:0", "expotrs": []}}))
    p = run([str(build_dir / "tools/nvmf_tgt/nvmf_tgt"), "-c", str(cfg)], timeout=60, check=False)
    assert p.returncode == 2 and "unknown key 'expotrs'" in p.stderr, p.stderr
    cfg.write_text(json.dumps({"devices": ["malloc:///m0?size_mb=4"],
                               "nbd": {"listen": "127.0.0.1:0", "exports": [{"name": "a", "device": "nope"}]}}))
    p = run([str(build_dir / "tools/nvmf_tgt/nvmf_tgt"), "-c", str(cfg)], timeout=60, check=False)
    assert p.returncode == 2 and "nope" in p.stderr, p.stderr
