"""tshark's NVMe/TCP dissector — written by other people, from the specification — reads a captured session
between our initiator tools and our target: every PDU decodes, nothing is malformed, every header and data
digest checks out, and the PDU types and commands are the ones the session used. A last check proves the
digest checking is live: a PDU with a wrong header digest is flagged."""
import shutil
import signal
import subprocess
import time

import pytest

import nvme_tcp
from conftest import usable_cores
from nvmf_target import config, subsystem

NQN = "nqn.2026-11.io.tern:tshark"


def tshark_fields(pcap, port, *fields, display_filter=None):
    cmd = ["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},nvme-tcp", "-o", "nvme-tcp.check_hdgst:TRUE",
           "-o", "nvme-tcp.check_ddgst:TRUE", "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = []
    for line in p.stdout.splitlines():
        cols = line.split("\t")
        rows.append([c.split(",") if c else [] for c in cols])
    return rows


class Capture:
    """tshark capturing loopback traffic on one port into a file; stopped (bounded) on exit."""

    def __init__(self, port, path):
        self.path = path
        self.proc = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {port}", "-w", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # "Capturing on" comes before the capture filter is live; "Capture started" after.
        deadline = time.monotonic() + 30
        seen = ""
        while "Capture started" not in seen:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"tshark did not start capturing: {seen}")
            seen += self.proc.stderr.readline()
        time.sleep(0.5)

    def stop(self):
        if self.proc.poll() is None:
            time.sleep(0.5)  # let the last segments reach the capture
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def tshark():
    if not shutil.which("tshark"):
        pytest.fail("tshark is not installed; run scripts/install-deps.sh")
    return "tshark"


def check_clean_session(pcap, port, min_digests):
    """Asserts a captured session decodes cleanly: no malformed packets, no dissector warnings, every PDU
    type of a session with R2T writes and reads, no TermReq, and more than min_digests = (header, data)
    digests, all good. Returns the NVMe opcodes and fabrics command types seen."""
    malformed = tshark_fields(pcap, port, "frame.number", display_filter="_ws.malformed")
    assert malformed == [], f"tshark found malformed packets in frames {malformed}"
    warnings = tshark_fields(pcap, port, "frame.number", "_ws.expert.message",
                             display_filter="(nvme-tcp || nvme) && _ws.expert.severity >= warning")
    assert warnings == [], f"tshark's NVMe dissectors complained: {warnings}"

    rows = tshark_fields(pcap, port, "nvme-tcp.type", "nvme-tcp.hdgst.status", "nvme-tcp.ddgst.status",
                         "nvme.cmd.opc", "nvme.fabrics.cmd.fctype", display_filter="nvme-tcp")
    types, hd, dd, opcs, fctypes = [], [], [], [], []
    for r in rows:
        types += [int(x) for x in r[0]]
        hd += r[1]
        dd += r[2]
        opcs += [int(x, 16) for x in r[3]]
        fctypes += [int(x, 16) for x in r[4]]
    # ICReq/ICResp, capsules both ways, H2CData, C2HData and R2T all appear.
    for ptype, name in ((0, "ICReq"), (1, "ICResp"), (4, "CapsuleCmd"), (5, "CapsuleResp"), (6, "H2CData"),
                        (7, "C2HData"), (9, "R2T")):
        assert ptype in types, f"no {name} PDU decoded; types seen: {sorted(set(types))}"
    assert 2 not in types and 3 not in types, "a TermReq was exchanged in a clean session"
    # Wireshark's checksum status: 0 = bad, 1 = good, 2 = unverified.
    assert len(hd) > min_digests[0] and set(hd) == {"1"}, f"header digests: {sorted(set(hd))} over {len(hd)} PDUs"
    assert len(dd) > min_digests[1] and set(dd) == {"1"}, f"data digests: {sorted(set(dd))} over {len(dd)} PDUs"
    return opcs, fctypes


def test_tshark_decodes_a_session(tshark, nvmf_target, build_dir, scratch):
    t = nvmf_target(config(["malloc:///ts0?size_mb=32"], [subsystem(NQN, ["ts0"])]))
    ctl = str(build_dir / "tools/ternctl/ternctl")
    ioperf = str(build_dir / "tools/ioperf/ioperf")
    pcap = scratch / "session.pcapng"
    cap = Capture(t.port, pcap)
    try:
        for args in (["discover"], ["identify", "-n", NQN, "-g", "-G"], ["identify", "-n", NQN, "--namespace", "1"]):
            p = subprocess.run([ctl, "nvme", *args, "-s", str(t.port)], capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
        # Digests on; 4 KiB writes travel in the capsule, 16 KiB ones after an R2T.
        for bs in ("4k", "16k"):
            uri = f"nvmf://127.0.0.1:{t.port}/{NQN}?nsid=1&hdgst=1&ddgst=1"
            p = subprocess.run([ioperf, "--uri", uri, "--rw", "randrw", "--bs", bs, "--qd", "4", "--ios", "200",
                                "--time", "0", "--verify", "--cores", usable_cores(1), "--json"],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stdout + p.stderr
    finally:
        cap.stop()

    opcs, fctypes = check_clean_session(pcap, t.port, min_digests=(100, 100))
    assert 0x01 in fctypes and 0x04 in fctypes and 0x00 in fctypes, f"Connect/Property Get/Set: {set(fctypes)}"
    assert 0x06 in opcs and 0x02 in opcs and 0x01 in opcs, f"Identify, Get Log Page/Read, Write: {set(opcs)}"


def test_tshark_flags_a_bad_header_digest(tshark, nvmf_target, scratch):
    """The check above can fail: a capsule whose header digest is wrong is reported as bad."""
    t = nvmf_target(config(["malloc:///ts1?size_mb=8"], [subsystem(NQN, ["ts1"])]))
    pcap = scratch / "bad.pcapng"
    cap = Capture(t.port, pcap)
    try:
        h = nvme_tcp.Host(t.port, hdgst=True)
        h.icreq()
        sqe = nvme_tcp.fabrics_sqe(0x04, 1)  # Property Get
        body = sqe
        hlen = 8 + len(body)
        pdu = nvme_tcp.header(nvme_tcp.PDU_CMD, nvme_tcp.FLAG_HDGST, hlen, 0, hlen + 4) + body
        digest = nvme_tcp.crc32c(pdu) ^ 0xFFFF
        h.send(pdu + digest.to_bytes(4, "little"))
        with pytest.raises(nvme_tcp.TermReq) as e:
            h.recv_pdu()
        assert e.value.fes == 0x03  # Header Digest Error
        h.close()
    finally:
        cap.stop()
    rows = tshark_fields(pcap, t.port, "nvme-tcp.type", "nvme-tcp.hdgst.status", display_filter="nvme-tcp")
    statuses = {(int(ty), st) for r in rows for ty, st in zip(r[0], r[1] or [""] * len(r[0]))}
    assert (4, "0") in statuses, f"the corrupted capsule was not flagged: {statuses}"
