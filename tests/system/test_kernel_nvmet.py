"""Our NVMe/TCP initiator against the Linux kernel's target (nvmet-tcp, Debian 12 kernel in a QEMU guest,
configured through configfs): verified I/O with and without digests on one and two I/O queues, `ternctl
nvme discover` and `identify` reading back what configfs set, a host the subsystem does not allow, and an
io-engine that keeps a device open while the kernel takes the subsystem off its port and puts it back.

The target listens on the guest's port 4420, reachable here at 127.0.0.1:guest.exposed[4420]. ioperf runs
go through a small PDU-reading relay (`PduRelay`), so the tests see which digests were negotiated and used
and how many connections (queues) were opened, not only that the data came back right."""
import json
import re
import socket
import struct
import subprocess
import threading
import time

import grpc
import pytest

from conftest import usable_cores
from nvme_tcp import crc32c

pytestmark = pytest.mark.kernel

MiB = 1 << 20
OPEN = "nqn.2026-11.io.tern:kernel-open"
CLOSED = "nqn.2026-11.io.tern:kernel-closed"
ALLOWED_HOST = "nqn.2026-11.io.tern:kernel-allowed-host"
STRANGER = "nqn.2026-11.io.tern:kernel-stranger"
IOPERF_HOST = "nqn.2026-11.io.tern:kernel-ioperf"
MODEL = "tern interop model"
SERIAL = "TERNKSN0042"
NS_UUID = "6b1f3a2e-94c1-4d7a-8e25-3c0d51a7e9b4"
CNTLID_MIN, CNTLID_MAX = 0x20, 0x2f
RAM_MIB = 32  # brd.rd_size on the guest's command line: /dev/ram0 and /dev/ram1 are 32 MiB
CFG = "/sys/kernel/config/nvmet"

SETUP = f"""set -e
C={CFG}
test -b /dev/ram0 && test -b /dev/ram1
mkdir $C/subsystems/{OPEN}
echo 1 > $C/subsystems/{OPEN}/attr_allow_any_host
echo "{MODEL}" > $C/subsystems/{OPEN}/attr_model
echo {SERIAL} > $C/subsystems/{OPEN}/attr_serial
echo {CNTLID_MIN} > $C/subsystems/{OPEN}/attr_cntlid_min
echo {CNTLID_MAX} > $C/subsystems/{OPEN}/attr_cntlid_max
mkdir $C/subsystems/{OPEN}/namespaces/1
echo /dev/ram0 > $C/subsystems/{OPEN}/namespaces/1/device_path
echo {NS_UUID} > $C/subsystems/{OPEN}/namespaces/1/device_uuid
echo 1 > $C/subsystems/{OPEN}/namespaces/1/enable
mkdir $C/hosts/{ALLOWED_HOST}
mkdir $C/subsystems/{CLOSED}
echo 0 > $C/subsystems/{CLOSED}/attr_allow_any_host
ln -s $C/hosts/{ALLOWED_HOST} $C/subsystems/{CLOSED}/allowed_hosts/{ALLOWED_HOST}
mkdir $C/subsystems/{CLOSED}/namespaces/1
echo /dev/ram1 > $C/subsystems/{CLOSED}/namespaces/1/device_path
echo 1 > $C/subsystems/{CLOSED}/namespaces/1/enable
mkdir $C/ports/1
echo tcp > $C/ports/1/addr_trtype
echo ipv4 > $C/ports/1/addr_adrfam
echo 0.0.0.0 > $C/ports/1/addr_traddr
echo 4420 > $C/ports/1/addr_trsvcid
ln -s $C/subsystems/{OPEN} $C/ports/1/subsystems/{OPEN}
ln -s $C/subsystems/{CLOSED} $C/ports/1/subsystems/{CLOSED}
cat /sys/block/ram0/size
"""


@pytest.fixture(scope="module")
def guest(kernel_guest):
    g = kernel_guest(forwards=1, expose=(4420,), cmdline=f"brd.rd_size={RAM_MIB * 1024}")
    out = g.run_ok(SETUP, timeout=60)
    assert int(out.split()[-1]) == RAM_MIB * MiB // 512, out
    g.port = g.exposed[4420]
    return g


@pytest.fixture
def ternctl(build_dir):
    binary = str(build_dir / "tools/ternctl/ternctl")

    def run(*args):
        return subprocess.run([binary, "nvme", *args], capture_output=True, text=True, timeout=60)
    return run


# ---------------------------------------------------------------------------------------------------
# A relay that reads the PDU stream in both directions

PDU_ICREQ, PDU_ICRESP, PDU_CMD, PDU_RESP, PDU_H2C_DATA, PDU_C2H_DATA = 0, 1, 4, 5, 6, 7
FLAG_HDGST, FLAG_DDGST = 0x01, 0x02


class Stream:
    """One direction of one connection: every PDU's type and flags, the ICReq/ICResp digest bits, and the
    header digests checked (the data digests of the first few data PDUs too; the peers check them all)."""

    def __init__(self):
        self.buf = bytearray()
        self.pdus = []          # (type, flags)
        self.dgst = None        # DGST byte of the ICReq / ICResp
        self.bad_hdgst = 0
        self.bad_ddgst = 0
        self.ddgst_checked = 0

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 8:
            ptype, flags, hlen, pdo, plen = struct.unpack_from("<BBBBI", self.buf, 0)
            if plen < 8 or len(self.buf) < plen:
                return
            pdu = bytes(self.buf[:plen])
            del self.buf[:plen]
            self.pdus.append((ptype, flags))
            if ptype in (PDU_ICREQ, PDU_ICRESP):
                self.dgst = pdu[11]
            if flags & FLAG_HDGST:
                if crc32c(pdu[:hlen]) != struct.unpack_from("<I", pdu, hlen)[0]:
                    self.bad_hdgst += 1
            if flags & FLAG_DDGST and ptype in (PDU_H2C_DATA, PDU_C2H_DATA, PDU_CMD) and self.ddgst_checked < 8:
                self.ddgst_checked += 1
                if crc32c(pdu[pdo:plen - 4]) != struct.unpack_from("<I", pdu, plen - 4)[0]:
                    self.bad_ddgst += 1


class PduRelay:
    """Listens on 127.0.0.1:<port>, relays each connection to the guest's target, records both streams."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.conns = []  # (host->target Stream, target->host Stream)
        self.socks = []
        self.threads = []
        self.stopping = False
        self.lock = threading.Lock()
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            u.settimeout(None)
            c.settimeout(None)
            streams = (Stream(), Stream())
            with self.lock:
                self.conns.append(streams)
                self.socks += [c, u]
            for src, dst, st in ((c, u, streams[0]), (u, c, streams[1])):
                t = threading.Thread(target=self._pump, args=(src, dst, st), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pump(src, dst, st):
        try:
            while True:
                b = src.recv(262144)
                if not b:
                    break
                st.feed(b)
                dst.sendall(b)
        except OSError:
            pass
        finally:
            for s in (dst,):
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        self.lsock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=10)
            assert not t.is_alive(), "relay thread did not stop"


@pytest.fixture
def relay(guest):
    r = PduRelay(guest.port)
    yield r
    r.close()


def kmsg(guest, text):
    """The kernel log's lines containing `text`."""
    rc, out = guest.run(f"dmesg | grep -F '{text}'", timeout=20)
    return out.strip().splitlines() if rc == 0 else []


def ioperf_json(ioperf, *args, timeout=120):
    p = ioperf.run(*args, "--json", timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert lines, f"no output; rc={p.returncode}\n{p.stderr[-4000:]}"
    return p.returncode, json.loads(lines[-1]), p.stderr


# ---------------------------------------------------------------------------------------------------
# Data

@pytest.mark.parametrize("queues", [1, 2])
@pytest.mark.parametrize("digests", [False, True], ids=["plain", "digests"])
def test_ioperf_verify_against_the_kernel_target(guest, relay, ioperf, digests, queues):
    """Random 4 KiB and 64 KiB reads and writes through our nvmf:// device, every read checked, against the
    kernel's target: data integrity with header and data digests off and on (the relay sees the digests
    negotiated in ICReq/ICResp, carried on the PDUs, and correct), one connection per I/O queue plus the
    admin queue, and the host NQN from the URI reaching the kernel (its log names it)."""
    cores = usable_cores(queues)
    assert len(cores.split(",")) == queues, "this test needs two usable cores"
    host = f"{IOPERF_HOST}-{queues}q-{int(digests)}"
    q = f"nsid=1&hostnqn={host}&io_queues={queues}" + ("&hdgst=1&ddgst=1" if digests else "")
    uri = f"nvmf://127.0.0.1:{relay.port}/{OPEN}?{q}"
    total_ios = 0
    for bs, ios in (("4k", 600), ("64k", 160)):
        rc, r, err = ioperf_json(ioperf, "--uri", uri, "--rw", "randrw", "--bs", bs, "--qd", "8", "--cores", cores,
                                 "--ios", str(ios), "--time", "0", "--verify", "--log-level", "info")
        assert rc == 0, err[-4000:]
        assert r["ok"] and r["error"] is None and r["verify"]["mismatch"] is None, r
        assert r["read"]["ops"] + r["write"]["ops"] == ios
        assert r["read"]["errors"] == 0 and r["write"]["errors"] == 0
        assert r["verify"]["checked_bytes"] > 0
        assert r["device"]["product"] == "nvmf" and r["device"]["block_size"] == 512
        assert r["device"]["num_blocks"] == RAM_MIB * MiB // 512
        assert f"'{OPEN}' namespace 1 (controller " in err and f"{queues} I/O queue(s))" in err, err
        assert f"uuid {NS_UUID})" in err, err  # the device's UUID is the namespace's (see the engine test)
        cntlid = int(re.search(r"\(controller (\d+),", err).group(1))
        assert CNTLID_MIN <= cntlid <= CNTLID_MAX, cntlid
        total_ios += ios
    # Two runs, each: one admin connection and `queues` I/O connections.
    assert len(relay.conns) == 2 * (1 + queues), len(relay.conns)
    want = (FLAG_HDGST | FLAG_DDGST) if digests else 0
    cmds = data = 0
    for up, down in relay.conns:
        assert up.pdus[0][0] == PDU_ICREQ and down.pdus[0][0] == PDU_ICRESP
        assert up.dgst == want and down.dgst == want, (up.dgst, down.dgst)
        for st in (up, down):
            assert st.bad_hdgst == 0 and st.bad_ddgst == 0
            for ptype, flags in st.pdus[1:]:
                assert bool(flags & FLAG_HDGST) == digests, (ptype, flags)
                if ptype in (PDU_H2C_DATA, PDU_C2H_DATA):
                    assert bool(flags & FLAG_DDGST) == digests, (ptype, flags)
        cmds += sum(1 for t, _ in up.pdus if t == PDU_CMD)
        data += sum(1 for t, _ in down.pdus if t == PDU_C2H_DATA)
    assert cmds >= total_ios and data > 0
    if digests:
        assert sum(s.ddgst_checked for c in relay.conns for s in c) > 0
    assert kmsg(guest, f"for NQN {host}.")


# ---------------------------------------------------------------------------------------------------
# ternctl nvme

def test_discover_shows_what_configfs_set_up(guest, ternctl):
    """`ternctl nvme discover` reads the kernel's discovery log: the open subsystem on port 1 (tcp, ipv4,
    service 4420, the guest's address in place of the wildcard), the closed one only for its allowed host,
    in readable and JSON form."""
    p = ternctl("discover", "-s", str(guest.port), "-q", STRANGER, "-o", "json")
    assert p.returncode == 0, p.stderr
    recs = json.loads(p.stdout)["records"]
    nqns = [r["subnqn"] for r in recs]
    assert OPEN in nqns and CLOSED not in nqns, nqns
    rec = next(r for r in recs if r["subnqn"] == OPEN)
    assert rec["trtype"] == "tcp" and rec["adrfam"] == "ipv4" and rec["trsvcid"] == "4420" and rec["portid"] == 1
    assert rec["subtype"] == "nvme subsystem" and rec["traddr"] == "10.0.2.15", rec
    p = ternctl("discover", "-s", str(guest.port), "-q", ALLOWED_HOST, "-o", "json")
    assert p.returncode == 0, p.stderr
    assert {OPEN, CLOSED} <= {r["subnqn"] for r in json.loads(p.stdout)["records"]}
    text = ternctl("discover", "-s", str(guest.port), "-q", STRANGER)
    assert text.returncode == 0, text.stderr
    assert f"Discovery Log Number of Records {len(recs)}" in text.stdout and f"subnqn:  {OPEN}" in text.stdout


def test_identify_reads_back_model_serial_size_and_nqn(guest, ternctl):
    """`ternctl nvme identify` (controller and namespace, JSON and readable) against the kernel returns the
    model, serial, controller ID range, NVMe version and NQN set through configfs, and the namespace's size
    (the brd disk's) and UUID."""
    port = str(guest.port)
    p = ternctl("identify", "-s", port, "-n", OPEN, "-o", "json")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)
    assert c["subnqn"] == OPEN and c["mn"].strip() == MODEL and c["sn"].strip() == SERIAL, c
    assert CNTLID_MIN <= c["cntlid"] <= CNTLID_MAX, c["cntlid"]
    assert c["ver"] == 0x10300, hex(c["ver"])   # attr_version defaults to 1.3
    assert c["fr"].strip() and guest.kernel.startswith(c["fr"].strip()), (c["fr"], guest.kernel)  # the kernel release
    assert c["nn"] >= 1 and c["kas"] > 0
    p = ternctl("identify", "-s", port, "-n", OPEN, "--namespace", "1", "-o", "json")
    assert p.returncode == 0, p.stderr
    n = json.loads(p.stdout)
    assert n["nsze"] == RAM_MIB * MiB // 512 and n["ncap"] == n["nsze"], n
    assert n["lbafs"][n["flbas"] & 0xF]["ds"] == 9
    assert n["uuid"] == NS_UUID, n
    text = ternctl("identify", "-s", port, "-n", OPEN)
    assert text.returncode == 0, text.stderr
    assert "NVME Identify Controller:" in text.stdout and f"subnqn    : {OPEN}" in text.stdout
    assert MODEL in text.stdout and SERIAL in text.stdout
    p = ternctl("identify", "-s", port, "-n", OPEN, "--namespace", "7")
    assert p.returncode == 1 and "namespace 7" in p.stderr, p.stderr


def test_host_not_allowed_is_refused_clearly(guest, ternctl, ioperf):
    """A subsystem with attr_allow_any_host=0 and one allowed host: that host connects; another host NQN is
    refused at Connect (the kernel answers Connect Invalid Host), and ternctl and ioperf exit non-zero with
    a message naming the host and the subsystem."""
    port = str(guest.port)
    ok = ternctl("identify", "-s", port, "-n", CLOSED, "-q", ALLOWED_HOST, "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["subnqn"] == CLOSED
    p = ternctl("identify", "-s", port, "-n", CLOSED, "-q", STRANGER)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert f"host '{STRANGER}' is not allowed on '{CLOSED}'" in p.stderr, p.stderr
    p = ioperf.run("--uri", f"nvmf://127.0.0.1:{port}/{CLOSED}?nsid=1&hostnqn={STRANGER}", "--rw", "randread",
                   "--ios", "10", "--time", "0", timeout=60)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr[-2000:])  # 2: device setup failed
    assert f"Connect admin queue 0: host '{STRANGER}' is not allowed on '{CLOSED}'" in p.stderr, p.stderr[-2000:]
    assert kmsg(guest, f"connect by host {STRANGER} for subsystem {CLOSED} not allowed")
    # The allowed host does I/O.
    rc, r, err = ioperf_json(ioperf, "--uri", f"nvmf://127.0.0.1:{port}/{CLOSED}?nsid=1&hostnqn={ALLOWED_HOST}",
                             "--rw", "randrw", "--qd", "4", "--ios", "200", "--time", "0", "--verify")
    assert rc == 0 and r["ok"] and r["verify"]["mismatch"] is None, (r, err[-2000:])


# ---------------------------------------------------------------------------------------------------
# Reconnect

def test_engine_device_survives_the_subsystem_leaving_the_port(guest, engines, pb):
    """An io-engine holds an nvmf:// device on the kernel's target and keeps writing and verifying
    patterns. The subsystem's link on the port is removed (the kernel drops our controller, then refuses
    Connect for an unknown subsystem), then re-added; next, both links go (the kernel disables the port:
    connections are refused), then come back. While the target is away I/O fails cleanly (UNAVAILABLE),
    nothing hangs, the initiator keeps reconnecting, and afterwards every pattern verifies."""
    e = engines(name="host")
    uri = (f"nvmf://127.0.0.1:{guest.port}/{OPEN}?nsid=1&hostnqn={IOPERF_HOST}-engine"
           "&ctrl_loss_tmo_s=90&reconnect_delay_ms=200&timeout_ms=5000&kato_ms=2000")
    dev = e.api.bdev.CreateBdev(pb.bdev_pb2.CreateBdevRequest(uri=uri), timeout=60)
    assert dev.size == RAM_MIB * MiB and dev.product == "nvmf" and dev.block_size == 512
    # nvmet reports the namespace's UUID only in the Identification Descriptor list (NGUID is zero).
    assert dev.uuid == NS_UUID, dev.uuid
    region, nregions = 1 * MiB, 4
    outcomes = []     # (outcome, time)
    mismatches = []
    last_gen = {}     # region -> last generation written and verified
    stop = threading.Event()

    def pat(i, gen):
        return pb.test_pb2.PatternRequest(device=dev.name, offset=i * region, length=region, generation=gen)

    def loop():
        gen = 1
        while not stop.is_set():
            i = gen % nregions
            t0 = time.monotonic()
            try:
                e.api.test.WritePattern(pat(i, gen), timeout=60)
                v = e.api.test.VerifyPattern(pat(i, gen), timeout=60)
                if not v.ok:
                    mismatches.append((gen, v.mismatch))
                last_gen[i] = gen
                outcomes.append(("ok", time.monotonic()))
            except grpc.RpcError as ex:
                outcomes.append((ex.code(), time.monotonic()))
                last_gen.pop(i, None)  # a write cut short leaves the region undefined
                if ex.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
                time.sleep(0.1)
            if time.monotonic() - t0 > 60:
                outcomes.append(("slow", time.monotonic()))
            gen += 1

    def wait_for(what, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            assert t.is_alive(), f"the I/O loop ended while waiting for {what}: {outcomes[-5:]}"
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s; outcomes {outcomes[-10:]}\n" \
                                                f"{e.log()[-3000:]}"
            time.sleep(0.1)

    def oks_after(t0):
        return sum(1 for o, at in outcomes if o == "ok" and at > t0)

    def errors_after(t0):
        return sum(1 for o, at in outcomes if o != "ok" and at > t0)

    link = f"{CFG}/ports/1/subsystems"
    t = threading.Thread(target=loop)
    t.start()
    try:
        wait_for("first verified patterns", lambda: oks_after(0) >= 3, 60)
        # Round 1: only the open subsystem leaves the port (the port stays up for the closed one).
        gone = time.monotonic()
        guest.run_ok(f"rm {link}/{OPEN}", timeout=30)
        wait_for("I/O to fail while the subsystem is away", lambda: errors_after(gone) >= 1, 30)
        wait_for("a refused reconnect", lambda: "the target has no subsystem" in e.log(), 30)
        guest.run_ok(f"ln -s {CFG}/subsystems/{OPEN} {link}/{OPEN}", timeout=30)
        back = time.monotonic()
        wait_for("I/O to resume", lambda: oks_after(back) >= 2, 60)
        # Round 2: both subsystems leave, so the kernel disables the port altogether.
        gone2 = time.monotonic()
        guest.run_ok(f"rm {link}/{OPEN} {link}/{CLOSED}", timeout=30)
        wait_for("I/O to fail while the port is down", lambda: errors_after(gone2) >= 1, 30)
        time.sleep(2)
        guest.run_ok(f"ln -s {CFG}/subsystems/{OPEN} {link}/{OPEN}; ln -s {CFG}/subsystems/{CLOSED} {link}/{CLOSED}",
                     timeout=30)
        back2 = time.monotonic()
        wait_for("I/O to resume after the port came back", lambda: oks_after(back2) >= 2, 60)
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive(), "the engine's I/O hung"
    assert not mismatches, mismatches
    codes = {o for o, _ in outcomes}
    assert codes <= {"ok", grpc.StatusCode.UNAVAILABLE}, codes
    log = e.log()
    assert log.count("controller reconnected") >= 2, log[-4000:]
    assert "removing the device" not in log
    assert "the target has no subsystem" in log                # round 1: Connect refused (Invalid Parameters)
    assert "NVMe/TCP connection initialization failed" in log  # round 2: the port is gone
    # Everything written last is still there, read through the reconnected controller.
    for i, gen in sorted(last_gen.items()):
        v = e.api.test.VerifyPattern(pat(i, gen), timeout=60)
        assert v.ok, (i, gen, v.mismatch)
    e.api.bdev.DestroyBdev(pb.bdev_pb2.DestroyBdevRequest(name=dev.name), timeout=60)
    assert kmsg(guest, f"connect request for invalid subsystem {OPEN}")
