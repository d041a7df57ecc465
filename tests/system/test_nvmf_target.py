"""The NVMe/TCP target (tools/nvmf_tgt) against hand-built PDUs: each test checks one behaviour the NVMe
Base 2.0 / NVMe over Fabrics / NVMe/TCP 1.0 specifications require (status codes, TermReq fatal error
statuses, log page contents), not merely that our own initiator gets along with it."""
import os
import struct
import time
import uuid

import pytest

import nvme_tcp as nt
from nvme_tcp import Association, Host, TermReq, new_queue, sqe
from conftest import make_file
from nvmf_target import config, subsystem

NQN = "nqn.2024-01.io.tern:shared"
ACL_NQN = "nqn.2024-01.io.tern:acl"
RANGE_NQN = "nqn.2024-01.io.tern:range"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:host-a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:host-b"
DEV_UUID = "5f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0"
NS_BLOCKS = 32768  # 16 MiB of 512-byte blocks
SERIAL, MODEL = "TERNSN0001", "tern test model"


@pytest.fixture(scope="module")
def tgt(nvmf_module_target):
    """One target shared by the tests that do not change its configuration."""
    return nvmf_module_target(config(
        devices=[f"malloc:///m0?size_mb=16&uuid={DEV_UUID}", "malloc:///m1?size_mb=4"],
        subsystems=[
            subsystem(NQN, ["m0"], serial=SERIAL, model=MODEL),
            subsystem(ACL_NQN, ["m1"], allow_any_host=False, hosts=[HOST_A]),
        ]))


def admin(tgt, nqn=NQN, **kw):
    return new_queue(tgt.port, nqn, **kw)


def assert_target_serves(tgt):
    """Another connection still gets through Connect and Identify: one host's protocol error is local."""
    with admin(tgt) as h:
        c, data = h.identify(1)
        assert c.ok, c
        assert data[768:768 + len(NQN)] == NQN.encode()


def expect_fatal(h, fes, fei=None):
    t = h.expect_termreq()
    assert t.fes == fes, f"FES {t.fes:#x}, expected {fes:#x}"
    if fei is not None:
        assert t.fei == fei, f"FEI {t.fei}, expected {fei}"
    h.expect_closed()
    return t


# ---------------------------------------------------------------------------------------------------
# Connection establishment (ICReq / ICResp)

def test_icresp_fields(tgt):
    with Host(tgt.port) as h:
        pfv, cpda, dgst, maxh2c = h.icreq()
        ptype, flags, hlen, pdo, plen = struct.unpack_from("<BBBBI", h.icresp)
        assert (ptype, hlen, pdo, plen) == (nt.PDU_ICRESP, 128, 0, 128)
        assert pfv == 0 and cpda == 0 and dgst == 0
        # MAXH2CDATA: at least 4096 and dword aligned.
        assert maxh2c >= 4096 and maxh2c % 4 == 0


@pytest.mark.parametrize("dgst", [1, 2, 3])
def test_icresp_enables_the_digests_the_host_asks_for(tgt, dgst):
    with Host(tgt.port, hdgst=bool(dgst & 1), ddgst=bool(dgst & 2)) as h:
        assert h.icreq()[2] == dgst
        # And they are used: Connect and a write/read with digests on both sides.
        assert h.connect(NQN).ok
        h.enable()
        c, data = h.identify(1)
        assert c.ok and len(data) == 4096


def test_pdu_before_icreq_is_a_sequence_error(tgt):
    with Host(tgt.port) as h:
        h.send(h.capsule(sqe(nt.OPC_IDENTIFY, 1, cdw10=1, sgl=(0, 4096, nt.SGL_TRANSPORT))))
        t = expect_fatal(h, nt.FES_PDU_SEQUENCE_ERROR, 0)
        assert t.data[:1] == bytes([nt.PDU_CMD])  # the offending header comes back
    assert_target_serves(tgt)


def test_second_icreq_is_a_sequence_error(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        h.send(nt.header(nt.PDU_ICREQ, 0, 128, 0, 128) + bytes(120))
        expect_fatal(h, nt.FES_PDU_SEQUENCE_ERROR, 0)
    assert_target_serves(tgt)


def test_unsupported_pfv_is_an_unsupported_parameter(tgt):
    with Host(tgt.port) as h:
        h.send(nt.header(nt.PDU_ICREQ, 0, 128, 0, 128) + struct.pack("<HBBI", 1, 0, 0, 0) + bytes(112))
        expect_fatal(h, nt.FES_UNSUPPORTED_PARAMETER, 8)  # FEI: offset of PFV
    assert_target_serves(tgt)


def test_icreq_with_wrong_hlen_or_plen(tgt):
    for hlen, plen, fei in ((120, 128, 2), (128, 132, 4)):
        with Host(tgt.port) as h:
            h.send(nt.header(nt.PDU_ICREQ, 0, hlen, 0, plen) + bytes(plen - 8))
            expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, fei)
    assert_target_serves(tgt)


def connected(tgt, **kw):
    h = Host(tgt.port, **kw)
    h.icreq()
    assert h.connect(NQN).ok
    return h


def io_queue(tgt, nqn=NQN, **kw):
    """An I/O queue (qid 1) of a fresh controller; the admin queue rides along on the returned Host."""
    a = Association(tgt.port, nqn, **kw)
    a.q.companions = [a.admin]
    return a.q


def test_capsule_with_wrong_hlen(tgt):
    with connected(tgt) as h:
        pdu = bytearray(h.capsule(sqe(nt.OPC_KEEP_ALIVE, 7)))
        pdu[2] = 64
        h.send(bytes(pdu))
        expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 2)
    assert_target_serves(tgt)


def test_capsule_with_plen_shorter_than_its_header(tgt):
    with connected(tgt) as h:
        pdu = bytearray(h.capsule(sqe(nt.OPC_KEEP_ALIVE, 7)))
        struct.pack_into("<I", pdu, 4, 40)
        h.send(bytes(pdu))
        expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 4)
    assert_target_serves(tgt)


def test_oversized_capsule_is_refused_before_it_is_read(tgt):
    # A PLEN far beyond the in-capsule data the controller accepts: terminated from the header alone.
    with connected(tgt) as h:
        pdu = bytearray(h.capsule(sqe(nt.OPC_WRITE, 7, nsid=1, sgl=(0, 1 << 20, nt.SGL_ICD)), b"x" * 4096))
        struct.pack_into("<I", pdu, 4, 72 + (1 << 20))
        h.send(bytes(pdu))
        t = expect_fatal(h, nt.FES_DATA_LIMIT_EXCEEDED)
        assert t.fei == 0  # reserved for this FES
    assert_target_serves(tgt)


@pytest.mark.parametrize("ptype", [nt.PDU_ICRESP, nt.PDU_C2H_TERM, nt.PDU_RESP, nt.PDU_C2H_DATA, nt.PDU_R2T, 0x08,
                                   0x0A, 0x7F])
def test_pdu_types_a_host_may_not_send(tgt, ptype):
    with connected(tgt) as h:
        h.send(nt.header(ptype, 0, 24, 0, 24) + bytes(16))
        t = expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 0)  # FEI: offset of PDU-Type
        assert t.data[0] == ptype


def test_h2ctermreq_from_the_host_closes_the_connection(tgt):
    with connected(tgt) as h:
        h.send(nt.header(nt.PDU_H2C_TERM, 0, 24, 0, 24) + struct.pack("<HI", 1, 0) + bytes(10))
        h.expect_closed()
    assert_target_serves(tgt)


# ---------------------------------------------------------------------------------------------------
# Digests

def test_header_digest_error_is_fatal(tgt):
    with connected(tgt, hdgst=True) as h:
        pdu = bytearray(h.capsule(sqe(nt.OPC_KEEP_ALIVE, 9)))
        pdu[72] ^= 0xFF  # the header digest
        h.send(bytes(pdu))
        expect_fatal(h, nt.FES_HEADER_DIGEST_ERROR)
    assert_target_serves(tgt)


def test_missing_header_digest_is_an_invalid_header_field(tgt):
    with connected(tgt, hdgst=True) as h:
        h.hdgst = False
        h.send(h.capsule(sqe(nt.OPC_KEEP_ALIVE, 9)))
        expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 1)  # FEI: the FLAGS byte


def test_data_digest_error_in_capsule_is_a_transient_transport_error(tgt):
    # NVMe/TCP: a data digest error is not fatal; the command completes with Transient Transport Error.
    with io_queue(tgt, ddgst=True) as h:
        pdu = bytearray(h.capsule(h.write_sqe(1, 0, 512), b"\xAB" * 512))
        pdu[-1] ^= 0xFF
        h.send(bytes(pdu))
        c, _ = h.wait(h.cid)
        assert c.is_(nt.SCT_GENERIC, nt.SC_TRANSIENT_TRANSPORT_ERROR), c
        assert not c.dnr  # worth retrying
        # The connection goes on.
        assert h.write(1, 0, b"\xCD" * 512).ok
        c, data = h.read(1, 0, 1)
        assert c.ok and data == b"\xCD" * 512


def test_data_digest_error_in_h2cdata_is_a_transient_transport_error(tgt):
    with io_queue(tgt, ddgst=True) as h:
        cid = h.submit(h.write_sqe(1, 8, 16384, icd=False))
        ptype, _, _, _, r2t = h.recv_pdu()
        assert ptype == nt.PDU_R2T
        cccid, ttag, r2to, r2tl = struct.unpack_from("<HHII", r2t, 8)
        assert (cccid, r2to, r2tl) == (cid, 0, 16384)
        pdu = bytearray(h.h2c_pdu(cid, ttag, b"\x11" * 16384, 0))
        pdu[-2] ^= 0x01
        h.send(bytes(pdu))
        c, _ = h.wait(cid)
        assert c.is_(nt.SCT_GENERIC, nt.SC_TRANSIENT_TRANSPORT_ERROR), c
        assert h.write(1, 8, b"\x22" * 16384, in_capsule=False).ok


# ---------------------------------------------------------------------------------------------------
# H2CData

def start_r2t_write(h, length=16384, slba=64):
    cid = h.submit(h.write_sqe(1, slba, length, icd=False))
    ptype, _, _, _, r2t = h.recv_pdu()
    assert ptype == nt.PDU_R2T
    cccid, ttag, r2to, r2tl = struct.unpack_from("<HHII", r2t, 8)
    assert cccid == cid and r2to == 0 and r2tl == length
    return cid, ttag


def test_h2cdata_for_an_unknown_transfer_tag(tgt):
    with io_queue(tgt) as h:
        cid, ttag = start_r2t_write(h)
        h.send(h.h2c_pdu(cid, ttag ^ 0x5A5, b"\0" * 512, 0))
        expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 10)  # FEI: TTAG
    assert_target_serves(tgt)


def test_h2cdata_without_an_r2t(tgt):
    with io_queue(tgt) as h:
        h.send(h.h2c_pdu(1, 0, b"\0" * 512, 0))
        t = expect_fatal(h, nt.FES_INVALID_HEADER_FIELD, 10)
        assert t.data[0] == nt.PDU_H2C_DATA


def test_h2cdata_beyond_the_r2t(tgt):
    with io_queue(tgt) as h:
        cid, ttag = start_r2t_write(h, length=8192 + 512)
        h.send(h.h2c_pdu(cid, ttag, b"\0" * 9216, 0))  # DATAO + DATAL past R2TO + R2TL
        expect_fatal(h, nt.FES_DATA_OUT_OF_RANGE, 0)
    assert_target_serves(tgt)


def test_h2cdata_larger_than_maxh2cdata(tgt):
    with io_queue(tgt) as h:
        cid, ttag = start_r2t_write(h, length=128 * 1024)
        big = h.maxh2cdata + 4
        # Only the header: the target must judge DATAL before it reads any data.
        h.send(nt.header(nt.PDU_H2C_DATA, nt.FLAG_LAST, 24, 24, 24 + big) +
               struct.pack("<HHIIxxxx", cid, ttag, 0, big))
        expect_fatal(h, nt.FES_DATA_LIMIT_EXCEEDED, 0)


def test_h2cdata_in_several_pdus_then_last_flag(tgt):
    # A write larger than MAXH2CDATA-sized chunks is sent as several H2CData PDUs; only the last has LAST_PDU.
    with io_queue(tgt) as h:
        data = bytes(range(256)) * 256  # 64 KiB
        cid, ttag = start_r2t_write(h, length=len(data), slba=256)
        for off in range(0, len(data), 8192):
            h.send_h2c(cid, ttag, data[off:off + 8192], off, last=off + 8192 == len(data))
        c, _ = h.wait(cid)
        assert c.ok, c
        c, back = h.read(1, 256, len(data) // 512)
        assert c.ok and back == data


# ---------------------------------------------------------------------------------------------------
# Connect

def test_connect_to_an_unknown_subsystem(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        c = h.connect("nqn.2024-01.io.tern:nosuch")
        # Fabrics status (SCT 1) Connect Invalid Parameters; dw0: IATTR bit 0 = in the Connect data, IPO = SUBNQN.
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS) and c.dnr, c
        assert c.dw0 == (1 << 16) | 256
        # The queue is still unconnected: anything but Connect is out of sequence, and Connect can be retried.
        assert h.prop_get(nt.PROP_CSTS)[0].is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR)
        assert h.connect(NQN).ok


def test_connect_from_a_host_not_allowed(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        c = h.connect(ACL_NQN, HOST_B)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_HOST) and c.dnr, c
        assert c.dw0 == 0  # no IATTR/IPO for this status: reserved
    with admin(tgt, ACL_NQN, hostnqn=HOST_A) as h:
        assert h.cntlid


def test_connect_with_unsupported_record_format(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        c = h.connect(NQN, recfmt=1)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INCOMPATIBLE_FORMAT) and c.dnr, c


def test_connect_parameters_checked_with_their_offsets(tgt):
    cases = [
        # (qid, sqsize, cntlid, IATTR, IPO)
        (0, 0, 0xFFFF, 0, 44),     # SQSIZE 0 is invalid (0's based: one entry)
        (0, 4095, 0xFFFF, 0, 44),  # beyond CAP.MQES of the admin queue
        (0, 31, 5, 1, 16),         # dynamic controller model: the admin Connect must ask for FFFFh
    ]
    for qid, sqsize, cntlid, iattr, ipo in cases:
        with Host(tgt.port) as h:
            h.icreq()
            c = h.connect(NQN, qid=qid, sqsize=sqsize, cntlid=cntlid)
            assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS), (qid, sqsize, cntlid, c)
            assert c.dw0 == (iattr << 16) | ipo, (qid, sqsize, cntlid, hex(c.dw0))


def test_connect_returns_the_controller_id(tgt):
    with admin(tgt) as h:
        ctrls = tgt.controllers(NQN)
        assert h.cntlid in [c["cntlid"] for c in ctrls]
        mine = [c for c in ctrls if c["cntlid"] == h.cntlid][0]
        assert mine["hostid"] == h.hostid.hex() and mine["hostnqn"] == nt.DEFAULT_HOSTNQN


def test_io_queue_connect_with_a_wrong_controller_id(tgt):
    with admin(tgt) as a, Host(tgt.port) as q:
        q.icreq()
        c = q.connect(NQN, qid=1, cntlid=(a.cntlid + 1000) & 0xFFFF, hostid=a.hostid)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS), c
        assert c.dw0 == (1 << 16) | 16  # IPO: CNTLID in the Connect data


def test_io_queue_connect_must_come_from_the_controllers_host(tgt):
    with admin(tgt) as a:
        for kw, ipo in (({"hostid": uuid.uuid4().bytes}, 0), ({"hostid": None, "hostnqn": HOST_B}, 512)):
            with Host(tgt.port) as q:
                q.icreq()
                hostid = kw.pop("hostid") or a.hostid
                c = q.connect(NQN, qid=1, cntlid=a.cntlid, hostid=hostid, **kw)
                assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS), c
                assert c.dw0 == (1 << 16) | ipo, hex(c.dw0)


def test_io_queue_connect_before_the_controller_is_enabled(tgt):
    with Host(tgt.port) as a, Host(tgt.port) as q:
        a.icreq()
        assert a.connect(NQN).ok
        q.icreq()
        c = q.connect(NQN, qid=1, cntlid=a.cntlid, hostid=a.hostid)
        assert c.is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR), c


def test_io_queue_ids_beyond_the_granted_number_of_queues(tgt):
    with admin(tgt) as a:
        c = a.set_features(0x07, 0)  # one I/O queue pair
        assert c.ok and c.dw0 == 0, c
        with new_queue(tgt.port, NQN, qid=1, cntlid=a.cntlid, hostid=a.hostid):
            for qid in (2, 1):  # beyond the limit, and a qid already in use
                with Host(tgt.port) as q:
                    q.icreq()
                    c = q.connect(NQN, qid=qid, cntlid=a.cntlid, hostid=a.hostid)
                    assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS), (qid, c)
                    assert c.dw0 == 42, hex(c.dw0)  # IATTR 0 (the SQE), IPO: QID


def test_commands_before_connect_are_a_sequence_error(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        c, _ = h.identify(1)
        assert c.is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR), c
        assert h.keep_alive().is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR)
        assert h.prop_set(nt.PROP_CC, 1).is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR)
        assert h.connect(NQN).ok


def test_second_connect_on_a_queue_is_a_sequence_error(tgt):
    with admin(tgt) as h:
        c = h.connect(NQN)
        assert c.is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR), c
        assert h.identify(1)[0].ok


def test_admin_commands_before_enable_are_a_sequence_error(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        assert h.connect(NQN).ok
        c, _ = h.identify(1)
        assert c.is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR), c
        h.enable()
        assert h.identify(1)[0].ok


# ---------------------------------------------------------------------------------------------------
# Properties

def test_cap_vs_and_initial_cc_csts(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        assert h.connect(NQN).ok
        c, cap = h.prop_get(nt.PROP_CAP, size8=True)
        assert c.ok, c
        mqes = cap & 0xFFFF
        assert mqes + 1 >= 2
        assert cap >> 16 & 1, "CAP.CQR: fabrics queues are contiguous"
        assert (cap >> 24) & 0xFF > 0, "CAP.TO"
        assert (cap >> 32) & 0xF == 0, "CAP.DSTRD"
        assert (cap >> 37) & 1, "CAP.CSS: NVM command set"
        assert (cap >> 48) & 0xF == 0, "CAP.MPSMIN: 4 KiB"
        c, vs = h.prop_get(nt.PROP_VS)
        assert c.ok and vs >= 0x00010300, hex(vs)
        assert h.prop_get(nt.PROP_CC)[1] == 0
        assert h.prop_get(nt.PROP_CSTS)[1] == 0
        # A 4-byte read of the 8-byte CAP, and unknown offsets, are invalid.
        assert h.prop_get(nt.PROP_CAP)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        assert h.prop_get(0x400)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        # Read-only properties cannot be set.
        for ofst in (nt.PROP_VS, nt.PROP_CSTS):
            assert h.prop_set(ofst, 0).is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), ofst
        # An I/O queue can hold up to MQES + 1 entries.
        h.enable()
        with new_queue(tgt.port, NQN, qid=1, cntlid=h.cntlid, hostid=h.hostid, sqsize=mqes):
            pass
        with Host(tgt.port) as q:
            q.icreq()
            c = q.connect(NQN, qid=1, cntlid=h.cntlid, hostid=h.hostid, sqsize=mqes + 1)
            assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_PARAMETERS) and c.dw0 == 44, c


def test_enable_sets_ready_and_cc_reads_back(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        assert h.connect(NQN).ok
        cc = 1 | (6 << 16) | (4 << 20)
        assert h.prop_set(nt.PROP_CC, cc).ok
        assert h.prop_get(nt.PROP_CC)[1] == cc
        assert h.prop_get(nt.PROP_CSTS)[1] & 1


def test_wrong_queue_entry_sizes_set_controller_fatal_status(tgt):
    with Host(tgt.port) as h:
        h.icreq()
        assert h.connect(NQN).ok
        assert h.prop_set(nt.PROP_CC, 1 | (5 << 16) | (4 << 20)).ok
        csts = h.prop_get(nt.PROP_CSTS)[1]
        assert csts & 2 and not csts & 1, hex(csts)  # CFS, not RDY


def test_shutdown_notification_completes(tgt):
    with admin(tgt) as h:
        cc = h.prop_get(nt.PROP_CC)[1]
        assert h.prop_set(nt.PROP_CC, cc | (1 << 14)).ok  # SHN = 01b: normal shutdown
        csts = nt.wait_until("CSTS.SHST = 10b", lambda: (lambda v: v if (v >> 2) & 3 == 2 else 0)(
            h.prop_get(nt.PROP_CSTS)[1]), timeout=15)
        assert csts & 1  # still ready: shutdown does not clear RDY


def test_shutdown_then_disconnect_during_a_slow_flush(nvmf_target, scratch):
    """A host sets CC.SHN and drops the connection at once while the shutdown flush is still on a slow
    device: the controller goes away with its last queue, the flush finishes later, and nothing touches
    the controller after it is gone (ASan would report a use after free; the target must keep serving
    and stop cleanly)."""
    img = make_file(scratch / "slow.img", 4 << 20)
    t = nvmf_target(config(devices=[f"uring://{img}", f"delay:///slow?base={img}&other_us=600000"],
                           subsystems=[subsystem(NQN, ["slow"])]))
    for _ in range(2):
        h = admin(t)
        cc = h.prop_get(nt.PROP_CC)[1]
        assert h.prop_set(nt.PROP_CC, cc | (1 << 14)).ok  # SHN = 01b: the flush starts
        h.close()
    t.wait_for("controllers gone", lambda: not t.controllers(NQN), timeout=15)
    t.wait_for("both shutdown flushes done", lambda: t.ctl("stats")["devices"]["slow"]["flushes"] >= 2, timeout=15)
    assert_target_serves_nqn(t, NQN)
    t.check_log()


def assert_target_serves_nqn(t, nqn):
    with new_queue(t.port, nqn) as h:
        c, _ = h.identify(1)
        assert c.ok, c


def test_controller_reset_closes_io_queues(tgt):
    with Association(tgt.port, NQN) as a:
        assert a.q.write(1, 100, b"\x5A" * 512).ok
        assert a.admin.prop_set(nt.PROP_CC, 0).ok  # CC.EN 1 -> 0: reset
        a.q.expect_closed()
        nt.wait_until("CSTS.RDY = 0", lambda: a.admin.prop_get(nt.PROP_CSTS)[1] & 1 == 0, timeout=20)
        assert a.admin.prop_get(nt.PROP_CC)[1] == 0
        a.admin.enable()
        with new_queue(tgt.port, NQN, qid=1, cntlid=a.cntlid, hostid=a.hostid) as q:
            c, data = q.read(1, 100, 1)
            assert c.ok and data == b"\x5A" * 512


# ---------------------------------------------------------------------------------------------------
# Identify

def asciz(b):
    return b.split(b"\0", 1)[0].decode()


def test_identify_controller(tgt):
    with admin(tgt) as h:
        c, d = h.identify(1)
        assert c.ok and len(d) == 4096
        assert d[4:24] == SERIAL.encode().ljust(20, b" ")
        assert d[24:64] == MODEL.encode().ljust(40, b" ")
        assert struct.unpack_from("<H", d, 78)[0] == h.cntlid
        ver = struct.unpack_from("<I", d, 80)[0]
        assert ver == h.prop_get(nt.PROP_VS)[1]
        assert d[111] == 1  # CNTRLTYPE: I/O controller
        assert struct.unpack_from("<I", d, 96)[0] & 1  # CTRATT: 128-bit host identifiers
        oaes = struct.unpack_from("<I", d, 92)[0]
        assert oaes & (1 << 8) and oaes & (1 << 11)  # namespace attribute and ANA change notices
        assert d[258] >= 0 and d[259] >= 0  # ACL, AERL (0's based)
        assert d[261] & 0x4  # LPA: extended data for Get Log Page (offsets)
        assert struct.unpack_from("<H", d, 320)[0] > 0  # KAS
        assert d[76] & 0x8  # CMIC: ANA reporting
        assert d[343] & 0x7 == 0x7  # ANACAP: optimized, non-optimized, inaccessible
        assert struct.unpack_from("<I", d, 344)[0] >= 1 and struct.unpack_from("<I", d, 348)[0] >= 1
        assert d[512] == 0x66 and d[513] == 0x44  # SQES, CQES
        assert struct.unpack_from("<I", d, 516)[0] >= 1  # NN
        oncs = struct.unpack_from("<H", d, 520)[0]
        assert oncs & 0x1 and oncs & 0x4 and oncs & 0x8 and oncs & 0x20  # compare, DSM, write zeroes, resv.
        sgls = struct.unpack_from("<I", d, 536)[0]
        assert sgls & 0x3 in (1, 2) and sgls & (1 << 20)  # SGLs; in-capsule data at an offset
        assert asciz(d[768:1024]) == NQN
        ioccsz, iorcsz, icdoff = struct.unpack_from("<IIH", d, 1792)
        assert ioccsz >= 4 and (ioccsz * 16 - 64) >= 4096  # room for in-capsule data
        assert iorcsz == 1 and icdoff == 0 and d[1803] == 1  # MSDBD
        mdts = d[77]
        assert mdts == 0 or (4096 << mdts) >= 128 * 1024


def test_identify_namespace(tgt):
    with admin(tgt) as h:
        c, d = h.identify(0, nsid=1)
        assert c.ok
        nsze, ncap, nuse = struct.unpack_from("<QQQ", d, 0)
        assert nsze == ncap == NS_BLOCKS
        assert d[25] == 0 and d[26] & 0xF == 0  # one LBA format, in use
        assert d[128 + 2] == 9  # LBADS: 512-byte blocks
        assert d[30] & 1  # NMIC: may be shared
        assert struct.unpack_from("<I", d, 92)[0] == 1  # ANAGRPID
        assert uuid.UUID(bytes=d[104:120]) == uuid.UUID(DEV_UUID)  # NGUID: the device's UUID
        listed = tgt.subsystem(NQN)["namespaces"][0]
        assert listed["uuid"] == DEV_UUID


def test_identify_inactive_and_invalid_namespaces(tgt):
    with admin(tgt) as h:
        c, d = h.identify(0, nsid=7)  # valid id, no namespace there: zero filled
        assert c.ok and d == bytes(4096)
        for nsid in (0, 0xFFFFFFFF):
            c, _ = h.identify(0, nsid=nsid)
            assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE), (nsid, c)
        c, _ = h.identify(3, nsid=7)
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE), c


def test_active_namespace_list(tgt):
    with admin(tgt) as h:
        c, d = h.identify(2, nsid=0)
        assert c.ok and struct.unpack_from("<II", d, 0) == (1, 0)
        c, d = h.identify(2, nsid=1)  # ids greater than 1: none
        assert c.ok and d == bytes(4096)
        c, _ = h.identify(2, nsid=0xFFFFFFFE)
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE), c


def test_namespace_identification_descriptors(tgt):
    with admin(tgt) as h:
        c, d = h.identify(3, nsid=1)
        assert c.ok
        descs, off = {}, 0
        while d[off] != 0:
            nidt, nidl = d[off], d[off + 1]
            descs[nidt] = d[off + 4:off + 4 + nidl]
            off += 4 + nidl
        assert uuid.UUID(bytes=descs[2]) == uuid.UUID(DEV_UUID)  # NGUID
        assert uuid.UUID(bytes=descs[3]) == uuid.UUID(DEV_UUID)  # UUID
        assert descs[4] == b"\0"  # CSI: NVM command set
        assert d[off:] == bytes(4096 - off)


def test_unknown_cns_and_opcodes(tgt):
    with Association(tgt.port, NQN) as a:
        assert a.admin.identify(0x7F)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        for opc in (0x10, 0x80, 0xC1):  # firmware commit (unsupported), vendor specific
            c, _ = a.admin.command(sqe(opc, a.admin.next_cid()))
            assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_OPCODE), (opc, c)
        for opc in (0x04, 0x80):  # write uncorrectable (unsupported), vendor specific
            c, _ = a.q.command(sqe(opc, a.q.next_cid(), nsid=1))
            assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_OPCODE), (opc, c)
        # Admin commands do not exist on I/O queues.
        c, _ = a.q.command(sqe(nt.OPC_IDENTIFY, a.q.next_cid(), nsid=1, cdw10=1, sgl=(0, 4096, nt.SGL_TRANSPORT)))
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_OPCODE), c
        # Fabrics commands of unknown types.
        c, _ = a.admin.command(nt.fabrics_sqe(0x7E, a.admin.next_cid()))
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_OPCODE), c


# ---------------------------------------------------------------------------------------------------
# I/O

def pattern(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_write_read_in_capsule_and_with_r2t(tgt):
    with Association(tgt.port, NQN) as a:
        q = a.q
        small = pattern(4096, 1)
        assert q.write(1, 1000, small, in_capsule=True).ok
        assert not q.r2ts
        big = pattern(128 * 1024, 2)
        assert q.write(1, 2000, big, in_capsule=False).ok
        assert len(q.r2ts) == 1 and q.r2ts[0][3] == len(big)
        c, d = q.read(1, 1000, 8)
        assert c.ok and d == small
        c, d = q.read(1, 2000, 256)
        assert c.ok and d == big


def test_io_with_digests(tgt):
    with Association(tgt.port, NQN, hdgst=True, ddgst=True) as a:
        data = pattern(64 * 1024, 3)
        assert a.q.write(1, 3000, data, in_capsule=False).ok
        assert a.q.write(1, 3200, data[:4096], in_capsule=True).ok
        c, d = a.q.read(1, 3000, 128)
        assert c.ok and d == data
        assert all(f & nt.FLAG_DDGST and f & nt.FLAG_HDGST for (_, _, _, f, _) in a.q.c2h_pdus)


def test_sq_head_and_flow_control(tgt):
    with Association(tgt.port, NQN, sqsize=3) as a:
        heads = [a.q.flush(1).sqhd for _ in range(6)]
        assert heads == [1, 2, 3, 0, 1, 2]  # SQHD wraps at SQSIZE + 1 entries
        # With SQ flow control disabled, SQHD is FFFFh, and a successful read may end with the SUCCESS flag.
    with Association(tgt.port, NQN) as a:
        q = Host(tgt.port)
        q.icreq()
        assert q.connect(NQN, qid=2, cntlid=a.cntlid, hostid=a.hostid, cattr=0x4).ok
        with q:
            assert q.flush(1).sqhd == 0xFFFF
            c, d = q.read(1, 0, 1)
            assert c.ok and len(d) == 512
            # Either a response capsule followed or the last C2HData carried SUCCESS; never both.
            assert q.c2h_pdus[-1][3] & nt.FLAG_LAST
        c, _ = a.q.read(1, 0, 1)
        assert c.ok and not any(f & nt.FLAG_SUCCESS for (_, _, _, f, _) in a.q.c2h_pdus), \
            "SUCCESS flag with SQ flow control enabled"


def test_lba_out_of_range(tgt):
    with Association(tgt.port, NQN) as a:
        c, _ = a.q.read(1, NS_BLOCKS - 1, 2)
        assert c.is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE), c
        assert a.q.write(1, NS_BLOCKS, b"\0" * 512).is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE)
        assert a.q.write_zeroes(1, NS_BLOCKS - 4, 8).is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE)
        assert a.q.dsm_deallocate(1, [(NS_BLOCKS - 1, 2)]).is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE)
        c, _ = a.q.read(1, (1 << 40), 1)  # SLBA beyond 32 bits
        assert c.is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE), c
        c, d = a.q.read(1, NS_BLOCKS - 1, 1)  # the last block is fine
        assert c.ok and len(d) == 512


def test_transfer_length_must_match_the_block_count(tgt):
    with Association(tgt.port, NQN) as a:
        q = a.q
        # No data at all for a one-block read or write, and an SGL shorter than NLB blocks.
        c, _ = q.command(sqe(nt.OPC_READ, q.next_cid(), nsid=1, cdw12=0))
        assert c.is_(nt.SCT_GENERIC, nt.SC_SGL_LENGTH_INVALID), c
        c, _ = q.command(sqe(nt.OPC_WRITE, q.next_cid(), nsid=1, cdw12=0))
        assert c.is_(nt.SCT_GENERIC, nt.SC_SGL_LENGTH_INVALID), c
        c = q.command(q.write_sqe(1, 0, 512, nlb=2), b"\0" * 512)[0]
        assert c.is_(nt.SCT_GENERIC, nt.SC_SGL_LENGTH_INVALID), c


def test_io_to_a_missing_namespace(tgt):
    with Association(tgt.port, NQN) as a:
        for nsid in (0, 2, 0xFFFFFFFF):
            c, _ = a.q.read(nsid, 0, 1)
            assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE), (nsid, c)
        # Broadcast flush (NSID FFFFFFFFh) is not supported (Identify Controller VWC bits 2:1 = 10b).
        assert a.admin.identify(1)[1][525] & 0x6 == 0x4
        assert a.q.flush(0xFFFFFFFF).is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE)


def test_write_zeroes(tgt):
    with Association(tgt.port, NQN) as a:
        assert a.q.write(1, 4000, pattern(8192, 4)).ok
        assert a.q.write_zeroes(1, 4004, 8).ok
        c, d = a.q.read(1, 4000, 16)
        assert c.ok and d == pattern(8192, 4)[:2048] + bytes(4096) + pattern(8192, 4)[6144:]


def test_dataset_management_deallocate(tgt):
    with Association(tgt.port, NQN) as a:
        c, ns = a.admin.identify(0, nsid=1)
        assert ns[33] & 0x7 == 1, "DLFEAT: deallocated blocks read as zeroes"
        assert a.q.write(1, 5000, pattern(8192, 5)).ok
        assert a.q.dsm_deallocate(1, [(5000, 4), (5008, 4), (5012, 0)]).ok
        c, d = a.q.read(1, 5000, 16)
        assert c.ok and d == bytes(2048) + pattern(8192, 5)[2048:4096] + bytes(2048) + pattern(8192, 5)[6144:]
        # Without the AD attribute nothing is deallocated.
        data = struct.pack("<IIQ", 0, 4, 5004)
        c, _ = a.q.command(sqe(nt.OPC_DSM, a.q.next_cid(), nsid=1, cdw10=0, cdw11=0, sgl=(0, 16, nt.SGL_ICD)), data)
        assert c.ok
        assert a.q.read(1, 5004, 4)[1] == pattern(8192, 5)[2048:4096]


def test_flush(tgt):
    with Association(tgt.port, NQN) as a:
        assert a.q.flush(1).ok


def test_compare(tgt):
    with Association(tgt.port, NQN) as a:
        data = pattern(16384, 6)
        assert a.q.write(1, 6000, data, in_capsule=False).ok
        assert a.q.compare(1, 6000, data, in_capsule=False).ok
        assert a.q.compare(1, 6000, data[:4096], in_capsule=True).ok
        bad = bytearray(data)
        bad[10000] ^= 1
        c = a.q.compare(1, 6000, bytes(bad), in_capsule=False)
        assert c.is_(nt.SCT_MEDIA, nt.SC_COMPARE_FAILURE), c
        assert a.q.read(1, 6000, 32)[1] == data  # compare never writes


def test_fua_write(tgt):
    with Association(tgt.port, NQN) as a:
        data = pattern(4096, 7)
        assert a.q.write(1, 7000, data, flags=1 << 30).ok
        assert a.q.read(1, 7000, 8, flags=1 << 30)[1] == data


def test_abort_reports_not_aborted(tgt):
    with Association(tgt.port, NQN) as a:
        c = a.admin.abort(1, 0x1234)
        assert c.ok and c.dw0 & 1 == 1  # dw0 bit 0 set: the command was not aborted


def test_disconnect_closes_an_io_queue(tgt):
    with Association(tgt.port, NQN) as a:
        assert a.q.disconnect().ok
        a.q.expect_closed()
        # The controller lives on: its admin queue still answers, and the queue id can be connected again.
        assert a.admin.keep_alive().ok
        with new_queue(tgt.port, NQN, qid=1, cntlid=a.cntlid, hostid=a.hostid) as q:
            assert q.flush(1).ok
        c = a.admin.disconnect()
        assert c.is_(nt.SCT_SPECIFIC, 0x85), c  # Invalid Queue Type: Disconnect is for I/O queues


# ---------------------------------------------------------------------------------------------------
# Hosts and controller ids

def test_hosts_added_and_removed_at_run_time(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"],
                           subsystems=[subsystem(ACL_NQN, ["m0"], allow_any_host=False, hosts=[HOST_A])]))

    def try_connect(hostnqn):
        with Host(t.port) as h:
            h.icreq()
            return h.connect(ACL_NQN, hostnqn)

    assert try_connect(HOST_B).is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_HOST)
    t.ctl("host_add", nqn=ACL_NQN, host=HOST_B)
    assert HOST_B in t.subsystem(ACL_NQN)["hosts"]
    with Association(t.port, ACL_NQN, HOST_B) as b, Association(t.port, ACL_NQN, HOST_A) as a:
        assert b.q.write(1, 0, b"b" * 512).ok
        t.ctl("host_remove", nqn=ACL_NQN, host=HOST_B)
        # B's controller goes (both of its queues are closed); A's stays.
        b.q.expect_closed()
        b.admin.expect_closed()
        t.wait_for("B's controller to go",
                   lambda: [c["hostnqn"] for c in t.controllers(ACL_NQN)] == [HOST_A])
        assert a.q.read(1, 0, 1)[1] == b"b" * 512
    assert try_connect(HOST_B).is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_INVALID_HOST)
    r = t.control("host_remove", nqn=ACL_NQN, host=HOST_B)
    assert not r["ok"] and "not allowed" in r["error"]
    r = t.control("host_add", nqn=ACL_NQN, host="not-an-nqn")
    assert not r["ok"]


def test_controller_id_range_is_honoured_and_can_run_out(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"],
                           subsystems=[subsystem(RANGE_NQN, ["m0"], cntlid_min=10, cntlid_max=11)]))
    a = admin(t, RANGE_NQN)
    b = admin(t, RANGE_NQN)
    assert sorted([a.cntlid, b.cntlid]) == [10, 11]
    assert struct.unpack_from("<H", a.identify(1)[1], 78)[0] == a.cntlid
    with Host(t.port) as h:
        h.icreq()
        c = h.connect(RANGE_NQN)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_CONNECT_CONTROLLER_BUSY), c
    freed = a.cntlid
    a.close()
    t.wait_for("the controller to go", lambda: len(t.controllers(RANGE_NQN)) == 1)
    with admin(t, RANGE_NQN) as c:
        assert c.cntlid == freed
    b.close()


# ---------------------------------------------------------------------------------------------------
# Log pages and asynchronous events

def test_error_and_smart_logs(tgt):
    with Association(tgt.port, NQN) as a:
        c, d = a.admin.get_log(0x01, 4096)
        assert c.ok and len(d) == 4096
        c, before = a.admin.get_log(0x02, 512)
        assert c.ok and len(before) == 512
        # 512 KiB = 1024 units of 512 B: at least one more thousand, whatever earlier tests wrote.
        for i in range(8):
            assert a.q.write(1, 8000 + 128 * i, pattern(65536, i), in_capsule=False).ok
        assert a.q.read(1, 8000, 128)[0].ok
        c, after = a.admin.get_log(0x02, 512)

        def u128(d, off):
            return int.from_bytes(d[off:off + 16], "little")

        assert after[5] == 0 and after[3] == 100  # percentage used, available spare
        assert struct.unpack_from("<H", after, 1)[0] > 273  # composite temperature in kelvin
        # Data units: thousands of 512-byte units, rounded up.
        assert u128(after, 48) >= u128(before, 48) + 1  # data units written
        assert u128(after, 80) >= u128(before, 80) + 8  # host write commands
        assert u128(after, 64) >= u128(before, 64) + 1  # host read commands


def test_get_log_page_errors(tgt):
    with admin(tgt) as h:
        c, _ = h.get_log(0xC0, 512)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_INVALID_LOG_PAGE), c
        c, _ = h.get_log(0x70, 1024)  # the discovery log exists on discovery controllers only
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_INVALID_LOG_PAGE), c
        c, _ = h.get_log(0x0C, 64, offset=2)  # LPO must be dword aligned
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), c
        c, _ = h.get_log(0x0C, 64, offset=1 << 20)  # beyond the log
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), c


def enable_events(h, mask):
    assert h.set_features(0x0B, mask).ok
    c, _ = h.get_features(0x0B)
    assert c.ok and c.dw0 == mask


def settle(h):
    """Gives an event time to be reported, then reads everything the target sent (a completion that
    arrived is kept in h.done)."""
    time.sleep(0.5)
    assert h.keep_alive().ok


def aer_info(c):
    return c.dw0 & 0x7, (c.dw0 >> 8) & 0xFF, (c.dw0 >> 16) & 0xFF  # type, info, log page


def changed_ns_list(h):
    c, d = h.get_log(0x04, 4096)
    assert c.ok
    ids = struct.unpack("<1024I", d)
    return [i for i in ids if i]


def test_namespace_changes_raise_events_and_fill_the_changed_namespace_log(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4", "malloc:///m1?size_mb=4", "malloc:///m2?size_mb=4"],
                           subsystems=[subsystem(NQN, ["m0"])]))
    with admin(t) as h:
        enable_events(h, 1 << 8)
        aer = h.submit_aer()
        assert t.ctl("ns_add", nqn=NQN, device="m1")["nsid"] == 2
        c, _ = h.wait(aer)
        assert c.ok and aer_info(c) == (0x2, 0x00, 0x04), c  # Notice / Namespace Attribute Changed / log 04h
        assert changed_ns_list(h) == [2]
        assert changed_ns_list(h) == []  # reading it without RAE cleared it
        c, d = h.identify(2, nsid=0)
        assert struct.unpack_from("<III", d) == (1, 2, 0)

        # A second change before the log is read is recorded but not reported twice.
        aer = h.submit_aer()
        t.ctl("ns_remove", nqn=NQN, nsid=2)
        c, _ = h.wait(aer)
        assert aer_info(c) == (0x2, 0x00, 0x04)
        aer2 = h.submit_aer()
        t.ctl("ns_add", nqn=NQN, device="m2", nsid=7)
        settle(h)
        assert aer2 not in h.done
        c, d = h.get_log(0x04, 4096, rae=True)  # RAE: the event stays masked, the list stays
        assert sorted(i for i in struct.unpack("<1024I", d) if i) == [2, 7]
        assert sorted(changed_ns_list(h)) == [2, 7]
        t.ctl("ns_remove", nqn=NQN, nsid=7)
        c, _ = h.wait(aer2)  # unmasked by the read: reported again
        assert aer_info(c) == (0x2, 0x00, 0x04)
        assert changed_ns_list(h) == [7]
        assert h.identify(0, nsid=7)[1] == bytes(4096)  # inactive now


def test_namespace_grown_underneath_is_rescanned_and_reported(nvmf_target, scratch):
    """ns_rescan after the namespace's file grew: Identify Namespace shows the new size, I/O beyond the
    old end works, hosts get a Namespace Attribute Changed event for it; a rescan without growth raises
    none; a device that cannot change size and a missing namespace are refused."""
    img = scratch / "grow.img"
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    t = nvmf_target(config(devices=[f"uring://{img}", "malloc:///m1?size_mb=4"],
                           subsystems=[subsystem(NQN, [str(img), "m1"])]))
    with Association(t.port, NQN) as a:
        h = a.admin
        enable_events(h, 1 << 8)
        aer = h.submit_aer()
        assert t.ctl("ns_rescan", nqn=NQN, nsid=1)["size"] == 4 << 20
        settle(h)
        assert aer not in h.done
        end = (4 << 20) // 512
        assert a.q.read(1, end, 1)[0].is_(nt.SCT_GENERIC, nt.SC_LBA_OUT_OF_RANGE)
        os.truncate(img, 6 << 20)
        assert t.ctl("ns_rescan", nqn=NQN, nsid=1)["size"] == 6 << 20
        c, _ = h.wait(aer)
        assert aer_info(c) == (0x2, 0x00, 0x04), c
        assert changed_ns_list(h) == [1]
        nsze = struct.unpack_from("<Q", h.identify(0, nsid=1)[1], 0)[0]
        assert nsze == (6 << 20) // 512
        assert a.q.write(1, end, b"\5" * 512).ok and a.q.read(1, end, 1)[1] == b"\5" * 512
    r = t.control("ns_rescan", nqn=NQN, nsid=2)
    assert not r["ok"] and "cannot change its size" in r["error"], r
    r = t.control("ns_rescan", nqn=NQN, nsid=9)
    assert not r["ok"] and "no namespace 9" in r["error"], r


def test_events_are_not_reported_when_disabled(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4", "malloc:///m1?size_mb=4"],
                           subsystems=[subsystem(NQN, ["m0"])]))
    with admin(t) as h:
        aer = h.submit_aer()
        t.ctl("ns_add", nqn=NQN, device="m1")
        settle(h)
        assert aer not in h.done
        assert changed_ns_list(h) == [2]  # the log is kept all the same
        # The AER is still outstanding; it is answered once an enabled event happens.
        enable_events(h, 1 << 8)
        t.ctl("ns_remove", nqn=NQN, nsid=2)
        c, _ = h.wait(aer)
        assert aer_info(c) == (0x2, 0x00, 0x04)


def test_aer_limit(tgt):
    with admin(tgt) as h:
        aerl = h.identify(1)[1][259]
        cids = [h.submit_aer() for _ in range(aerl + 1)]
        c, _ = h.command(sqe(nt.OPC_AER, h.next_cid()))
        assert c.is_(nt.SCT_SPECIFIC, 0x05), c  # Asynchronous Event Request Limit Exceeded
        assert not any(cid in h.done for cid in cids)


# ---------------------------------------------------------------------------------------------------
# ANA

ANA_CFG = dict(devices=["malloc:///m0?size_mb=4", "malloc:///m1?size_mb=4"],
               listeners=["127.0.0.1:0", "127.0.0.1:0"])


def ana_target(nvmf_target, **kw):
    return nvmf_target(config(**ANA_CFG, subsystems=[subsystem(
        NQN, [{"device": "m0", "ana_group": 1}, {"device": "m1", "ana_group": 2}], listeners=["@0", "@1"], **kw)]))


def ana_log(h, rgo=False):
    c, d = h.get_log(0x0C, 4096, lsp=1 if rgo else 0)
    assert c.ok, c
    chgcnt, ngrps = struct.unpack_from("<QH", d, 0)
    groups, off = {}, 16
    for _ in range(ngrps):
        grpid, nnsids, gchg, state = struct.unpack_from("<IIQB", d, off)
        nsids = list(struct.unpack_from(f"<{nnsids}I", d, off + 32))
        groups[grpid] = (state & 0xF, nsids, gchg)
        off += 32 + 4 * nnsids
    return chgcnt, groups


def test_ana_log_and_change_event(nvmf_target):
    t = ana_target(nvmf_target)
    with admin(t) as h:
        chg0, groups = ana_log(h)
        assert {g: (s, n) for g, (s, n, _) in groups.items()} == {1: (0x1, [1]), 2: (0x1, [2])}
        enable_events(h, 1 << 11)
        aer = h.submit_aer()
        t.ctl("ana_set", nqn=NQN, listener=t.listeners[0], group=2, state="inaccessible")
        c, _ = h.wait(aer)
        assert aer_info(c) == (0x2, 0x03, 0x0C), c  # Notice / ANA Change / log 0Ch
        chg1, groups = ana_log(h)
        assert chg1 > chg0
        assert groups[2][0] == 0x3 and groups[1][0] == 0x1
        # Return Groups Only: no namespace lists.
        _, groups = ana_log(h, rgo=True)
        assert groups[1][1] == [] and groups[2][1] == []
        # The state is per listener: the other port still sees group 2 optimized.
        with new_queue(t.ports[1], NQN) as h2:
            assert ana_log(h2)[1][2][0] == 0x1


def test_ana_log_read_in_pieces_up_to_its_maximum_size(nvmf_target):
    """nvme-cli 2.3 sizes the ANA log from NANAGRPID and MNAN (header + 32 B per group + 4 B per namespace)
    and reads it in 4 KiB pieces at growing offsets: offsets up to that maximum read as zero padding,
    beyond it they are Invalid Field (found with the Linux guest, docs/interop.md)."""
    t = ana_target(nvmf_target)
    with admin(t) as h:
        d = h.identify(1)[1]
        nanagrpid = struct.unpack_from("<I", d, 344)[0]
        mnan = struct.unpack_from("<I", d, 540)[0]
        assert nanagrpid > 0 and mnan > 0
        full = 16 + 32 * nanagrpid + 4 * mnan
        c, first = h.get_log(0x0C, 4096)
        assert c.ok and struct.unpack_from("<H", first, 8)[0] == 2
        c, d = h.get_log(0x0C, 4096, offset=4096)
        assert c.ok and d == bytes(4096), c
        c, d = h.get_log(0x0C, 4, offset=full)
        assert c.ok and d == bytes(4), c
        c, _ = h.get_log(0x0C, 4, offset=full + 4)
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), c


def test_ana_states_decide_io(nvmf_target):
    t = ana_target(nvmf_target)
    with Association(t.port, NQN) as a:
        for state, expect in (("inaccessible", nt.SC_ANA_INACCESSIBLE), ("persistent_loss", nt.SC_ANA_PERSISTENT_LOSS),
                              ("change", nt.SC_ANA_TRANSITION)):
            t.ctl("ana_set", nqn=NQN, listener=t.listeners[0], group=1, state=state)
            c, _ = a.q.read(1, 0, 1)
            assert c.is_(nt.SCT_PATH, expect) and not c.dnr, (state, c)
            c = a.q.write(1, 0, b"\1" * 512)
            assert c.is_(nt.SCT_PATH, expect), (state, c)
            assert a.q.read(2, 0, 1)[0].ok  # the other group is unaffected
            assert a.admin.identify(0, nsid=1)[0].ok  # admin commands still work
        for state in ("non_optimized", "optimized"):
            t.ctl("ana_set", nqn=NQN, listener=t.listeners[0], group=1, state=state)
            assert a.q.write(1, 0, b"\2" * 512).ok, state
            assert a.q.read(1, 0, 1)[1] == b"\2" * 512
    r = t.control("ana_set", nqn=NQN, listener=t.listeners[0], group=1, state="sideways")
    assert not r["ok"]


def test_paths_close_when_their_listener_goes(nvmf_target):
    """listener_remove closes the controllers of that subsystem that came in through that address (other
    paths stay); stop_listening closes every connection the socket accepted, and nobody can connect there
    until it listens again."""
    t = ana_target(nvmf_target)
    l0, l1 = t.listeners
    with Association(t.ports[0], NQN) as a0, Association(t.ports[1], NQN) as a1:
        assert {c["listener"] for c in t.controllers(NQN)} == {l0, l1}
        t.ctl("listener_remove", nqn=NQN, listener=l0)
        a0.q.expect_closed()
        a0.admin.expect_closed()
        t.wait_for("the path through listener 0 to go", lambda: [c["listener"] for c in t.controllers(NQN)] == [l1])
        assert a1.q.write(1, 0, b"\3" * 512).ok
        with Host(t.ports[0]) as h:  # the socket still listens, for other subsystems
            h.icreq()
            assert not h.connect(NQN).ok
        t.ctl("stop_listening", listener=l1)
        a1.q.expect_closed()
        a1.admin.expect_closed()
        t.wait_for("no controllers", lambda: not t.controllers(NQN))
    with pytest.raises(ConnectionRefusedError):
        Host(t.ports[1])
    t.ctl("listen", listener=l1)
    with Association(t.ports[1], NQN) as a:
        assert a.q.read(1, 0, 1)[1] == b"\3" * 512


def test_ana_reporting_off(nvmf_target):
    t = ana_target(nvmf_target, ana_reporting=False)
    with admin(t) as h:
        d = h.identify(1)[1]
        assert not d[76] & 0x8 and d[343] == 0  # CMIC.ANAR, ANACAP
        assert struct.unpack_from("<I", h.identify(0, nsid=1)[1], 92)[0] == 0  # ANAGRPID
        c, _ = h.get_log(0x0C, 4096)
        assert c.is_(nt.SCT_SPECIFIC, nt.SC_INVALID_LOG_PAGE), c


# ---------------------------------------------------------------------------------------------------
# Discovery

def discovery_log(port, hostnqn):
    with Host(port) as h:
        h.icreq()
        assert h.connect(nt.DISCOVERY_NQN, hostnqn).ok
        h.enable()
        c, d = h.identify(1)
        assert c.ok and d[111] == 2  # CNTRLTYPE: discovery controller
        c, hdr = h.get_log(0x70, 1024)
        assert c.ok
        genctr, numrec, recfmt = struct.unpack_from("<QQH", hdr)
        assert recfmt == 0
        c, d = h.get_log(0x70, 1024 * (numrec + 1))
        assert c.ok
        entries = []
        for i in range(numrec):
            e = d[1024 * (i + 1):1024 * (i + 2)]
            entries.append({"trtype": e[0], "adrfam": e[1], "subtype": e[2], "treq": e[3],
                            "portid": struct.unpack_from("<H", e, 4)[0], "cntlid": struct.unpack_from("<H", e, 6)[0],
                            "trsvcid": asciz(e[32:64]).strip(), "subnqn": asciz(e[256:512]),
                            "traddr": asciz(e[512:768]).strip(), "sectype": e[768]})
        return genctr, entries


def test_discovery_log_shows_only_what_the_host_may_connect_to(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4", "malloc:///m1?size_mb=4"],
                           listeners=["127.0.0.1:0", "127.0.0.1:0"],
                           subsystems=[subsystem(NQN, ["m0"], listeners=["@0", "@1"]),
                                       subsystem(ACL_NQN, ["m1"], allow_any_host=False, hosts=[HOST_A],
                                                 listeners=["@1"])]))
    gen_a, ents = discovery_log(t.ports[0], HOST_A)
    got = sorted((e["subnqn"], int(e["trsvcid"]), e["subtype"]) for e in ents)
    assert got == sorted([(nt.DISCOVERY_NQN, t.ports[0], 3), (NQN, t.ports[0], 2), (NQN, t.ports[1], 2),
                          (ACL_NQN, t.ports[1], 2)])
    for e in ents:
        assert e["trtype"] == 3 and e["adrfam"] == 1 and e["traddr"] == "127.0.0.1"
        assert e["cntlid"] == 0xFFFF and e["sectype"] == 0
        # Secure channel not specified + SQ flow control disable supported (what Linux's target sends;
        # nvme-cli names this combination).
        assert e["treq"] == 0x4
    _, ents = discovery_log(t.ports[0], HOST_B)
    assert ACL_NQN not in [e["subnqn"] for e in ents]
    # Allowing B changes what B sees, and the generation counter moves.
    t.ctl("host_add", nqn=ACL_NQN, host=HOST_B)
    gen_b, ents = discovery_log(t.ports[0], HOST_B)
    assert gen_b > gen_a and ACL_NQN in [e["subnqn"] for e in ents]


def test_discovery_log_change_event(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"],
                           subsystems=[subsystem(ACL_NQN, ["m0"], allow_any_host=False, hosts=[HOST_A])]))
    with Host(t.port) as h:
        h.icreq()
        assert h.connect(nt.DISCOVERY_NQN, HOST_B).ok
        h.enable()
        enable_events(h, 1 << 31)
        aer = h.submit_aer()
        t.ctl("host_add", nqn=ACL_NQN, host=HOST_B)
        c, _ = h.wait(aer)
        assert aer_info(c) == (0x2, 0xF0, 0x70), c  # Notice / Discovery Log Page Change / log 70h
        # Discovery controllers have no I/O: Identify Namespace is not theirs, nor the SMART log.
        assert h.identify(0, nsid=1)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        assert h.get_log(0x02, 512)[0].is_(nt.SCT_SPECIFIC, nt.SC_INVALID_LOG_PAGE)


# ---------------------------------------------------------------------------------------------------
# Reservations (NVM Command Set 1.0, Reservations; NVMe Base 2.0, 8.19)

WE, EA, WE_RO, EA_RO, WE_AR, EA_AR = 1, 2, 3, 4, 5, 6
REG, UNREG, REPLACE = 0, 1, 2
ACQUIRE, PREEMPT, PREEMPT_ABORT = 0, 1, 2
RELEASE, CLEAR = 0, 1
KEY_A, KEY_B = 0xAAAA0000AAAA0000, 0xBBBB


@pytest.fixture
def resv(nvmf_target):
    """A target and three hosts (A, B registrants-to-be, C never registered), each with one I/O queue."""
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"], subsystems=[subsystem(NQN, ["m0"])]))
    hosts = [Association(t.port, NQN, hostnqn=f"nqn.2014-08.org.nvmexpress:uuid:host-{n}") for n in "abc"]
    try:
        yield t, hosts
    finally:
        for h in hosts:
            h.close()


def report(q):
    c, d = q.resv_report(1)
    assert c.ok, c
    gen, rtype, regctl, ptpls = struct.unpack_from("<IBHxxB", d)
    regs = {}
    for i in range(regctl):
        cntlid, rcsts, rkey = struct.unpack_from("<HB5xQ", d, 64 + 64 * i)
        hostid = d[64 + 64 * i + 16:64 + 64 * i + 32]
        regs[hostid] = (cntlid, rcsts & 1, rkey)
    return gen, rtype, regs


def can(q, nsid=1):
    """(read allowed, write allowed) for queue q; anything but success or a conflict fails the test."""
    out = []
    for c in (q.read(nsid, 10, 1)[0], q.write(nsid, 10, b"r" * 512)):
        assert c.ok or c.is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT), c
        out.append(c.ok)
    return tuple(out)


def test_register_report_replace_unregister(resv):
    t, (a, b, c) = resv
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok  # same key again: fine
    assert a.q.resv_register(1, REG, nrkey=KEY_B).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert b.q.resv_register(1, REG, nrkey=KEY_B).ok
    gen, rtype, regs = report(c.q)  # anyone may ask
    assert rtype == 0 and gen >= 2
    assert regs == {a.hostid: (a.cntlid, 0, KEY_A), b.hostid: (b.cntlid, 0, KEY_B)}
    # Replace needs the current key, unless IEKEY.
    assert a.q.resv_register(1, REPLACE, crkey=1, nrkey=5).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert a.q.resv_register(1, REPLACE, crkey=KEY_A, nrkey=5).ok
    assert a.q.resv_register(1, REPLACE, crkey=0, nrkey=6, iekey=True).ok
    gen2, _, regs = report(a.q)
    assert gen2 > gen and regs[a.hostid][2] == 6
    # Unregister: wrong key conflicts; C was never registered.
    assert a.q.resv_register(1, UNREG, crkey=5).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert c.q.resv_register(1, UNREG, crkey=0).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert a.q.resv_register(1, UNREG, crkey=6).ok
    assert set(report(a.q)[2]) == {b.hostid}
    # Persistence through power loss is not supported, and CPTPL 01b is reserved; 10b (clear) is fine.
    for cptpl in (1, 3):
        assert a.q.resv_register(1, REG, nrkey=1, cptpl=cptpl).is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), cptpl
    assert a.q.resv_register(1, REG, nrkey=1, cptpl=2).ok


def test_report_needs_the_extended_data_structure(resv):
    t, (a, b, c) = resv
    c_, _ = a.q.resv_report(1, eds=False)
    assert c_.is_(nt.SCT_GENERIC, nt.SC_HOSTID_INCONSISTENT), c_  # 128-bit host identifiers in use


@pytest.mark.parametrize("rtype,others_registered,others_unregistered", [
    # (reads, writes) allowed for a registrant that does not hold the reservation, and for a non-registrant.
    (WE, (True, False), (True, False)),
    (EA, (False, False), (False, False)),
    (WE_RO, (True, True), (True, False)),
    (EA_RO, (True, True), (False, False)),
    (WE_AR, (True, True), (True, False)),
    (EA_AR, (True, True), (False, False)),
])
def test_reservation_types_decide_access(resv, rtype, others_registered, others_unregistered):
    t, (a, b, c) = resv
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert b.q.resv_register(1, REG, nrkey=KEY_B).ok
    # Acquiring needs a registration and the right key.
    assert c.q.resv_acquire(1, ACQUIRE, rtype, crkey=0).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert a.q.resv_acquire(1, ACQUIRE, rtype, crkey=KEY_B).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert a.q.resv_acquire(1, ACQUIRE, rtype, crkey=KEY_A).ok
    assert a.q.resv_acquire(1, ACQUIRE, rtype, crkey=KEY_A).ok  # again, same type: no change
    _, got_type, regs = report(c.q)
    assert got_type == rtype
    holders = {h for h, (_, held, _) in regs.items() if held}
    assert holders == ({a.hostid, b.hostid} if rtype in (WE_AR, EA_AR) else {a.hostid})
    assert can(a.q) == (True, True)
    assert can(b.q) == others_registered
    assert can(c.q) == others_unregistered
    # Another registrant cannot acquire a different type while it is held.
    other = WE if rtype != WE else EA
    assert b.q.resv_acquire(1, ACQUIRE, other, crkey=KEY_B).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    # Release: the type must match, then everyone has access again.
    assert a.q.resv_release(1, RELEASE, other, crkey=KEY_A).is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
    assert a.q.resv_release(1, RELEASE, rtype, crkey=KEY_A).ok
    assert report(c.q)[1] == 0
    assert can(c.q) == (True, True)


def test_holder_unregistering_releases_the_reservation(resv):
    t, (a, b, c) = resv
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert a.q.resv_acquire(1, ACQUIRE, WE, crkey=KEY_A).ok
    assert can(c.q) == (True, False)
    assert a.q.resv_register(1, UNREG, crkey=KEY_A).ok
    assert report(c.q)[1] == 0 and can(c.q) == (True, True)
    # All-registrants types last while any registrant is left.
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert b.q.resv_register(1, REG, nrkey=KEY_B).ok
    assert a.q.resv_acquire(1, ACQUIRE, WE_AR, crkey=KEY_A).ok
    assert a.q.resv_register(1, UNREG, crkey=KEY_A).ok
    assert report(c.q)[1] == WE_AR and can(c.q) == (True, False) and can(b.q) == (True, True)
    assert b.q.resv_register(1, UNREG, crkey=KEY_B).ok
    assert report(c.q)[1] == 0 and can(c.q) == (True, True)


def resv_log(h):
    c, d = h.get_log(0x80, 64)
    assert c.ok, c
    count, ltype, navail, nsid = struct.unpack_from("<QBBxxI", d)
    return count, ltype, navail, nsid


@pytest.mark.parametrize("action", [PREEMPT, PREEMPT_ABORT])
def test_preempt(resv, action):
    t, (a, b, c) = resv
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert b.q.resv_register(1, REG, nrkey=KEY_B).ok
    assert a.q.resv_acquire(1, ACQUIRE, EA, crkey=KEY_A).ok
    aer = a.admin.submit_aer()
    # B takes the reservation over, and A's registration goes.
    assert b.q.resv_acquire(1, action, WE, crkey=KEY_B, prkey=0x1234).is_(nt.SCT_GENERIC,
                                                                           nt.SC_RESERVATION_CONFLICT)
    # PRKEY 0 that is not the holder's key is an invalid field, not a conflict.
    assert b.q.resv_acquire(1, action, WE, crkey=KEY_B, prkey=0).is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
    assert b.q.resv_acquire(1, action, WE, crkey=KEY_B, prkey=KEY_A).ok
    gen, rtype, regs = report(c.q)
    assert rtype == WE and set(regs) == {b.hostid} and regs[b.hostid][1] == 1
    assert can(a.q) == (True, False)  # no longer registered
    assert can(b.q) == (True, True)
    # A's controller is told: an I/O command set specific event for the reservation notification log.
    ev, _ = a.admin.wait(aer)
    assert aer_info(ev) == (0x6, 0x00, 0x80), ev
    count, ltype, navail, nsid = resv_log(a.admin)
    assert count >= 1 and nsid == 1 and ltype in (1, 3)  # registration preempted / reservation preempted
    while navail:
        count2, ltype, navail, nsid = resv_log(a.admin)
        assert count2 > count
        count = count2
    assert resv_log(a.admin)[1] == 0  # empty once read


def test_clear(resv):
    t, (a, b, c) = resv
    assert a.q.resv_register(1, REG, nrkey=KEY_A).ok
    assert b.q.resv_register(1, REG, nrkey=KEY_B).ok
    assert a.q.resv_acquire(1, ACQUIRE, EA_RO, crkey=KEY_A).ok
    assert can(c.q) == (False, False)
    assert b.q.resv_release(1, CLEAR, 0, crkey=0x99).is_(nt.SCT_GENERIC, nt.SC_RESERVATION_CONFLICT)
    assert b.q.resv_release(1, CLEAR, 0, crkey=KEY_B).ok
    gen, rtype, regs = report(c.q)
    assert rtype == 0 and regs == {}
    assert can(c.q) == (True, True)
    assert resv_log(a.admin)[1] == 3  # A: Reservation Preempted


def test_reservations_are_per_namespace_and_need_one(resv):
    t, (a, b, c) = resv
    assert a.q.resv_register(2, REG, nrkey=1).is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE)
    assert a.q.resv_report(9)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE)


# ---------------------------------------------------------------------------------------------------
# Keep-alive and features

def test_keep_alive_timeout_tears_the_controller_down(tgt):
    h = Association(tgt.port, NQN, kato=1000)
    try:
        cntlid = h.cntlid
        assert h.admin.get_features(0x0F)[0].dw0 == 1000
        assert cntlid in [c["cntlid"] for c in tgt.controllers(NQN)]
        # No keep-alive: within KATO (plus the granularity, and slack for a busy machine) it is gone.
        h.admin.expect_closed(timeout=20)
        h.q.expect_closed(timeout=20)
        tgt.wait_for("the controller to go", lambda: cntlid not in [c["cntlid"] for c in tgt.controllers(NQN)])
    finally:
        h.close()
    with Association(tgt.port, NQN, kato=1000) as again:
        assert again.q.flush(1).ok


def test_keep_alive_commands_keep_it_alive(tgt):
    with Association(tgt.port, NQN, kato=1500) as h:
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            assert h.admin.keep_alive().ok
            time.sleep(0.2)
        assert h.cntlid in [c["cntlid"] for c in tgt.controllers(NQN)]
        assert h.q.flush(1).ok


def test_keep_alive_timer_feature(tgt):
    with admin(tgt, kato=0) as h:
        c, _ = h.get_features(0x0F)
        assert c.ok and c.dw0 == 0
        assert h.set_features(0x0F, 5000).ok
        assert h.get_features(0x0F)[0].dw0 == 5000
        assert tgt.controllers(NQN) and [c for c in tgt.controllers(NQN) if c["kato_ms"] == 5000]
        assert h.set_features(0x0F, 10_000_000).is_(nt.SCT_GENERIC, nt.SC_KEEP_ALIVE_INVALID)
        assert h.set_features(0x0F, 0).ok


def test_number_of_queues_feature(tgt):
    with admin(tgt) as h:
        c = h.set_features(0x07, (3 << 16) | 2)  # NCQR 3, NSQR 2 (0's based)
        assert c.ok
        nsqa, ncqa = c.dw0 & 0xFFFF, c.dw0 >> 16
        assert nsqa >= 2 and ncqa >= 3
        c, _ = h.get_features(0x07)
        assert c.ok and (c.dw0 & 0xFFFF, c.dw0 >> 16) == (nsqa, ncqa)
        assert h.set_features(0x07, 0xFFFF).is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        with new_queue(tgt.port, NQN, qid=1, cntlid=h.cntlid, hostid=h.hostid):
            # Once I/O queues exist the number cannot change.
            assert h.set_features(0x07, 0).is_(nt.SCT_GENERIC, nt.SC_COMMAND_SEQUENCE_ERROR)


def test_async_event_configuration_feature(tgt):
    with admin(tgt) as h:
        assert h.get_features(0x0B)[0].dw0 == 0
        enable_events(h, (1 << 8) | (1 << 11))


def test_features_cannot_be_saved(tgt):
    with admin(tgt) as h:
        assert h.set_features(0x0B, 0, save=True).is_(nt.SCT_SPECIFIC, nt.SC_FEATURE_NOT_SAVEABLE)
        c, _ = h.get_features(0x0B, sel=3)  # capabilities: changeable, not saveable
        assert c.ok and c.dw0 & 0x7 == 0x4
        assert h.get_features(0x7E)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD)
        c, d = h.get_features(0x81, cdw11=1, length=16)  # Host Identifier, 128-bit
        assert c.ok and d == h.hostid


def test_volatile_write_cache(nvmf_target, scratch):
    disk = scratch / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    t = nvmf_target(config(devices=[f"uring://{disk}"], subsystems=[subsystem(NQN, [str(disk)])]))
    with Association(t.port, NQN) as a:
        d = a.admin.identify(1)[1]
        assert d[525] & 1  # VWC present: files are cached
        assert a.admin.get_features(0x06)[0].dw0 == 1
        stats = lambda: t.ctl("stats")["devices"][str(disk)]
        s0 = stats()
        # FUA: durable before it completes — one write with FUA on the device, not a write and a flush of
        # the whole device (which is what it used to cost).
        assert a.q.write(1, 0, pattern(4096, 8), flags=1 << 30).ok
        s1 = stats()
        assert (s1["writes"] - s0["writes"], s1["fua_writes"] - s0["fua_writes"], s1["flushes"] - s0["flushes"]) == (1, 1, 0)
        assert a.q.flush(1).ok
        assert stats()["flushes"] == s1["flushes"] + 1
        # With the cache disabled every write is written through: each one is a FUA write.
        assert a.admin.set_features(0x06, 0).ok
        assert a.admin.get_features(0x06)[0].dw0 == 0
        s2 = stats()
        assert a.q.write(1, 8, pattern(4096, 9)).ok
        s3 = stats()
        assert (s3["fua_writes"] - s2["fua_writes"], s3["flushes"] - s2["flushes"]) == (1, 0)
        assert a.admin.set_features(0x06, 1).ok
        assert a.q.write(1, 16, pattern(4096, 10)).ok
        s4 = stats()
        assert (s4["writes"] - s3["writes"], s4["fua_writes"] - s3["fua_writes"], s4["flushes"] - s3["flushes"]) == (1, 0, 0)


# ---------------------------------------------------------------------------------------------------
# Namespace removal with commands on the device

def test_namespace_removed_while_commands_are_on_the_device(nvmf_target, scratch):
    # A FUA write is one device request; a multi-range deallocate is one unmap per range. The namespace
    # goes while they are on the (slow) device: the write, done in full and durably by the device, completes
    # with success; the deallocate's remaining steps must not run on a channel that is gone; both complete.
    disk = scratch / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    t = nvmf_target(config(devices=[f"uring://{disk}", f"delay:///d0?base={disk}&write_us=3000000&other_us=3000000"],
                           subsystems=[subsystem(NQN, ["d0"])]))
    with Association(t.port, NQN) as a:
        assert a.admin.identify(1)[1][525] & 1  # the delay device passes the file's write cache on
        w = a.q.submit(a.q.write_sqe(1, 0, 512, flags=1 << 30), b"x" * 512)
        ranges = struct.pack("<IIQ", 0, 4, 0) + struct.pack("<IIQ", 0, 4, 8)
        d = a.q.submit(sqe(nt.OPC_DSM, a.q.next_cid(), nsid=1, cdw10=1, cdw11=4, sgl=(0, 32, nt.SGL_ICD)), ranges)
        time.sleep(0.3)
        t.ctl("ns_remove", nqn=NQN, nsid=1)
        c, _ = a.q.wait(w)
        assert c.ok, c
        c, _ = a.q.wait(d)
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE), c
        assert a.q.read(1, 0, 1)[0].is_(nt.SCT_GENERIC, nt.SC_INVALID_NAMESPACE)
        # The same device can come back as a namespace, on a fresh channel.
        t.ctl("delay_set", device="d0")
        assert t.ctl("ns_add", nqn=NQN, device="d0", nsid=1)["nsid"] == 1
        assert a.q.write(1, 0, b"y" * 512, flags=1 << 30).ok
        assert a.q.read(1, 0, 1)[1] == b"y" * 512


def test_controller_reset_completes_after_its_io_queues_are_gone(nvmf_target):
    # CSTS.RDY goes to 0 only when the reset is done (I/O queues deleted): a host that waits for it and
    # then reconnects its queues must find the queue ids free, even with commands slow on the device.
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4", "delay:///d0?base=m0&write_us=1500000"],
                           subsystems=[subsystem(NQN, ["d0"])]))
    with Association(t.port, NQN) as a:
        a.q.submit(a.q.write_sqe(1, 0, 512), b"z" * 512)
        time.sleep(0.2)
        assert a.admin.prop_set(nt.PROP_CC, 0).ok
        nt.wait_until("CSTS.RDY = 0", lambda: a.admin.prop_get(nt.PROP_CSTS)[1] & 1 == 0, timeout=20)
        a.admin.enable()
        with new_queue(t.port, NQN, qid=1, cntlid=a.cntlid, hostid=a.hostid) as q:
            c, d = q.read(1, 0, 1)
            assert c.ok and d == b"z" * 512  # the write in flight at the reset finished


# ---------------------------------------------------------------------------------------------------
# Transfers: alignment, MAXH2CDATA, SGLs, command identifiers

def test_c2hdata_honours_the_host_pdu_data_alignment(tgt):
    a = Association(tgt.port, NQN, hdgst=True)
    try:
        q = Host(tgt.port, hdgst=True)
        q.icreq(hpda=7)  # 32-byte alignment
        assert q.connect(NQN, qid=2, cntlid=a.cntlid, hostid=a.hostid).ok
        with q:
            assert q.write(1, 9000, pattern(4096, 11)).ok
            c, d = q.read(1, 9000, 8)
            assert c.ok and d == pattern(4096, 11)
            pdo = q.c2h_pdus[-1][4]
            assert pdo % 32 == 0 and pdo >= 24 + 4, pdo  # header and digest, padded to 32 bytes
    finally:
        a.close()


def test_configured_maxh2cdata(nvmf_target):
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4"], subsystems=[subsystem(NQN, ["m0"])],
                           options={"max_h2c_data": 8192}))
    with Association(t.port, NQN) as a:
        assert a.q.maxh2cdata == 8192
        data = pattern(65536, 12)
        assert a.q.write(1, 0, data, in_capsule=False).ok  # one R2T, eight H2CData PDUs
        assert a.q.r2ts[-1][3] == 65536
        assert a.q.read(1, 0, 128)[1] == data
        cid, ttag = start_r2t_write(a.q, length=65536, slba=0)
        a.q.send(a.q.h2c_pdu(cid, ttag, b"\0" * 8704, 0))
        expect_fatal(a.q, nt.FES_DATA_LIMIT_EXCEEDED, 0)


def test_sgl_descriptors_are_checked(tgt):
    with Association(tgt.port, NQN) as a:
        q = a.q
        # Keyed SGL descriptors are for RDMA; TCP takes data blocks with an offset or transport data blocks.
        c, _ = q.command(sqe(nt.OPC_READ, q.next_cid(), nsid=1, sgl=(0, 512, 0x40)))
        assert c.is_(nt.SCT_GENERIC, 0x11), c  # SGL Descriptor Type Invalid
        # In-capsule data must start at offset 0 of the capsule's data.
        c, _ = q.command(sqe(nt.OPC_WRITE, q.next_cid(), nsid=1, sgl=(512, 512, nt.SGL_ICD)), b"\0" * 512)
        assert c.is_(nt.SCT_GENERIC, 0x16), c  # SGL Offset Invalid
        # In-capsule data whose SGL says otherwise.
        c, _ = q.command(sqe(nt.OPC_WRITE, q.next_cid(), nsid=1, sgl=(0, 1024, nt.SGL_ICD)), b"\0" * 512)
        assert c.is_(nt.SCT_GENERIC, nt.SC_SGL_LENGTH_INVALID), c
        # More than MDTS.
        mdts = a.admin.identify(1)[1][77]
        n = (4096 << mdts) // 512 * 2
        c, _ = q.read(1, 0, n)
        assert c.is_(nt.SCT_GENERIC, nt.SC_INVALID_FIELD), c
        assert q.read(1, 0, 1)[0].ok


def test_command_identifier_conflict(tgt):
    with Association(tgt.port, NQN) as a:
        q = a.q
        cid, ttag = start_r2t_write(q, length=4096, slba=9100)
        c, _ = q.command(sqe(nt.OPC_FLUSH, cid, nsid=1))  # same CID while the write waits for its data
        assert c.is_(nt.SCT_GENERIC, nt.SC_CID_CONFLICT), c
        q.send_h2c(cid, ttag, pattern(4096, 13), 0)
        c, _ = q.wait(cid)
        assert c.ok, c
        assert q.read(1, 9100, 8)[1] == pattern(4096, 13)


def test_shutdown_with_a_command_stuck_on_a_device(nvmf_target):
    # A device that never completes a write (held until a reset) must not keep SIGTERM from shutting the
    # target down promptly and cleanly.
    t = nvmf_target(config(devices=["malloc:///m0?size_mb=4", "error:///e0?base=m0"],
                           subsystems=[subsystem(NQN, ["e0"])]))
    t.ctl("error_rules", device="e0", rules=["op=write,kind=timeout"])
    with Association(t.port, NQN) as a:
        a.q.submit(a.q.write_sqe(1, 0, 512), b"h" * 512)
        time.sleep(0.5)  # on the device by now
        t0 = time.monotonic()
        t.stop(timeout=40)  # exit status 0 and a clean log, or it raises
        assert time.monotonic() - t0 < 20
