"""A small NVMe/TCP host written from the specifications (NVMe/TCP Transport 1.0, NVMe Base 2.0), for system
tests: it builds PDUs by hand so tests can send exactly what they mean, including malformed traffic, and
several commands can be outstanding at once (AERs, R2T writes). Not a performance tool."""
import socket
import struct
import time
import uuid

PDU_ICREQ, PDU_ICRESP, PDU_H2C_TERM, PDU_C2H_TERM = 0x00, 0x01, 0x02, 0x03
PDU_CMD, PDU_RESP, PDU_H2C_DATA, PDU_C2H_DATA, PDU_R2T = 0x04, 0x05, 0x06, 0x07, 0x09
FLAG_HDGST, FLAG_DDGST, FLAG_LAST, FLAG_SUCCESS = 0x01, 0x02, 0x04, 0x08
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
DEFAULT_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:test-host"

# Fatal Error Status of a TermReq (NVMe/TCP 1.0, C2HTermReq PDU).
FES_INVALID_HEADER_FIELD = 0x01
FES_PDU_SEQUENCE_ERROR = 0x02
FES_HEADER_DIGEST_ERROR = 0x03
FES_DATA_OUT_OF_RANGE = 0x04
FES_DATA_LIMIT_EXCEEDED = 0x05  # also "R2T Limit Exceeded"
FES_UNSUPPORTED_PARAMETER = 0x06

# Status code types and codes (NVMe Base 2.0, Figures 91-98; Fabrics status in the command set).
SCT_GENERIC, SCT_SPECIFIC, SCT_MEDIA, SCT_PATH = 0, 1, 2, 3
SC_SUCCESS = 0x00
SC_INVALID_OPCODE = 0x01
SC_INVALID_FIELD = 0x02
SC_CID_CONFLICT = 0x03
SC_ABORT_SQ_DELETED = 0x08
SC_INVALID_NAMESPACE = 0x0B
SC_COMMAND_SEQUENCE_ERROR = 0x0C
SC_SGL_LENGTH_INVALID = 0x0F
SC_HOSTID_INCONSISTENT = 0x18
SC_KEEP_ALIVE_INVALID = 0x1A
SC_TRANSIENT_TRANSPORT_ERROR = 0x22
SC_LBA_OUT_OF_RANGE = 0x80
SC_RESERVATION_CONFLICT = 0x83
# command specific
SC_INVALID_LOG_PAGE = 0x09
SC_FEATURE_NOT_SAVEABLE = 0x0D
SC_CONNECT_INCOMPATIBLE_FORMAT = 0x80
SC_CONNECT_CONTROLLER_BUSY = 0x81
SC_CONNECT_INVALID_PARAMETERS = 0x82
SC_CONNECT_INVALID_HOST = 0x84
# media
SC_COMPARE_FAILURE = 0x85
# path
SC_ANA_PERSISTENT_LOSS = 0x01
SC_ANA_INACCESSIBLE = 0x02
SC_ANA_TRANSITION = 0x03

# Opcodes.
OPC_GET_LOG_PAGE, OPC_IDENTIFY, OPC_ABORT, OPC_SET_FEATURES, OPC_GET_FEATURES = 0x02, 0x06, 0x08, 0x09, 0x0A
OPC_AER, OPC_KEEP_ALIVE, OPC_FABRICS = 0x0C, 0x18, 0x7F
OPC_FLUSH, OPC_WRITE, OPC_READ, OPC_COMPARE, OPC_WRITE_ZEROES, OPC_DSM = 0x00, 0x01, 0x02, 0x05, 0x08, 0x09
OPC_RESV_REGISTER, OPC_RESV_REPORT, OPC_RESV_ACQUIRE, OPC_RESV_RELEASE = 0x0D, 0x0E, 0x11, 0x15
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET, FCTYPE_DISCONNECT = 0x00, 0x01, 0x04, 0x08

# Properties.
PROP_CAP, PROP_VS, PROP_CC, PROP_CSTS = 0x00, 0x08, 0x14, 0x1C

SGL_ICD = 0x01        # Data Block, subtype Offset: data in the capsule
SGL_TRANSPORT = 0x5A  # Transport SGL Data Block: data moved by R2T/H2CData or C2HData

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


class TermReq(Exception):
    def __init__(self, fes, fei, data, hdr=b""):
        super().__init__(f"C2HTermReq fes={fes:#x} fei={fei}")
        self.fes, self.fei, self.data, self.hdr = fes, fei, data, hdr


class Completion:
    def __init__(self, dw0, dw1, sqhd, sqid, cid, status):
        self.dw0, self.dw1, self.sqhd, self.sqid, self.cid = dw0, dw1, sqhd, sqid, cid
        self.raw_status = status
        self.sc = (status >> 1) & 0xFF
        self.sct = (status >> 9) & 0x7
        self.crd = (status >> 12) & 0x3
        self.more = bool(status & 0x4000)
        self.dnr = bool(status & 0x8000)

    @property
    def ok(self):
        return self.sc == 0 and self.sct == 0

    def is_(self, sct, sc):
        return self.sct == sct and self.sc == sc

    def __repr__(self):
        return (f"Completion(cid={self.cid}, sct={self.sct}, sc={self.sc:#x}, dnr={int(self.dnr)}, dw0={self.dw0:#x}, "
                f"sqhd={self.sqhd})")


def sqe(opc, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, cdw13=0, cdw14=0, cdw15=0, sgl=None, flags=0x40):
    sgl = sgl or (0, 0, 0)  # (addr, length, type)
    return struct.pack("<BBHIIIQQIxxxBIIIIII", opc, flags, cid, nsid, 0, 0, 0, sgl[0], sgl[1], sgl[2],
                       cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)


def fabrics_sqe(fctype, cid, specific=bytes(24), sgl=(0, 0, 0)):
    return struct.pack("<BBHB19xQIxxxB", OPC_FABRICS, 0x40, cid, fctype, sgl[0], sgl[1], sgl[2]) + specific


def header(ptype, flags, hlen, pdo, plen):
    return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)


class Host:
    """One queue pair. Raises TermReq when the target terminates the connection."""

    def __init__(self, port, host="127.0.0.1", hdgst=False, ddgst=False, timeout=15):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.hdgst, self.ddgst = hdgst, ddgst
        self.cid = 0
        self.maxh2cdata = 0
        self.cntlid = None
        self.hostid = None
        self.qid = None
        self.done = {}       # cid -> (Completion, data) received while waiting for another command
        self.data_in = {}    # cid -> C2H data gathered so far
        self.data_out = {}   # cid -> data for R2Ts
        self.r2ts = []       # every R2T seen: (cccid, ttag, r2to, r2tl)
        self.c2h_pdus = []   # every C2HData header seen: (cccid, datao, datal, flags, pdo)

    def close(self):
        self.sock.close()
        for h in getattr(self, "companions", ()):
            h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- raw PDU I/O ---
    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("target closed the connection")
            buf += chunk
        return buf

    def recv_pdu(self):
        ch = self.recv_exact(8)
        ptype, flags, hlen, pdo, plen = struct.unpack("<BBBBI", ch)
        assert plen >= 8, f"PDU with plen {plen}"
        rest = self.recv_exact(plen - 8)
        pdu = ch + rest
        if ptype == PDU_C2H_TERM:
            assert hlen == 24 and plen <= 152, f"C2HTermReq with hlen {hlen}, plen {plen}"
            fes, fei = struct.unpack_from("<HI", pdu, 8)
            raise TermReq(fes, fei, pdu[24:], pdu[:24])
        if flags & FLAG_HDGST:
            want = struct.unpack_from("<I", pdu, hlen)[0]
            assert want == crc32c(pdu[:hlen]), "bad header digest from target"
        return ptype, flags, hlen, pdo, pdu

    def expect_termreq(self):
        """Reads until the target's C2HTermReq; returns it (the connection must then close)."""
        try:
            while True:
                self.recv_pdu()
        except TermReq as t:
            return t

    def expect_closed(self, timeout=10):
        """The target closes the connection (EOF or reset) within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return
        except (ConnectionResetError, BrokenPipeError):
            return
        finally:
            self.sock.settimeout(self.timeout)

    def icreq(self, pfv=0, hpda=0, maxr2t=0, dgst=None):
        d = dgst if dgst is not None else (1 if self.hdgst else 0) | (2 if self.ddgst else 0)
        pdu = header(PDU_ICREQ, 0, 128, 0, 128) + struct.pack("<HBBI", pfv, hpda, d, maxr2t) + bytes(112)
        self.send(pdu)
        ptype, flags, hlen, pdo, resp = self.recv_pdu()
        assert ptype == PDU_ICRESP, ptype
        self.icresp = resp
        pfv, cpda, dg, maxh2c = struct.unpack_from("<HBBI", resp, 8)
        self.maxh2cdata = maxh2c
        return pfv, cpda, dg, maxh2c

    def capsule(self, sqe_bytes, data=b""):
        hd = 4 if self.hdgst else 0
        dd = 4 if (self.ddgst and data) else 0
        pdo = 72 + hd if data else 0
        plen = 72 + hd + len(data) + dd
        flags = (FLAG_HDGST if self.hdgst else 0) | (FLAG_DDGST if dd else 0)
        hdr = header(PDU_CMD, flags, 72, pdo, plen) + sqe_bytes
        pdu = hdr + (struct.pack("<I", crc32c(hdr)) if hd else b"") + data
        if dd:
            pdu += struct.pack("<I", crc32c(data))
        return pdu

    def next_cid(self):
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def submit(self, sqe_bytes, data_out=b"", in_capsule=True):
        """Sends a command without waiting; returns its command id."""
        cid = struct.unpack_from("<H", sqe_bytes, 2)[0]
        if data_out and not in_capsule:
            self.data_out[cid] = data_out
            self.send(self.capsule(sqe_bytes))
        else:
            self.send(self.capsule(sqe_bytes, data_out))
        return cid

    def wait(self, cid):
        """Reads PDUs (answering R2Ts) until command `cid` completes; returns (Completion, data)."""
        while cid not in self.done:
            self.pump()
        return self.done.pop(cid)

    def pump(self):
        """Handles one PDU from the target."""
        ptype, flags, hlen, pdo, pdu = self.recv_pdu()
        if ptype == PDU_RESP:
            c = Completion(*struct.unpack_from("<IIHHHH", pdu, 8))
            self.done[c.cid] = (c, self.data_in.pop(c.cid, b""))
            self.data_out.pop(c.cid, None)
            return
        if ptype == PDU_C2H_DATA:
            cccid, ttag, datao, datal = struct.unpack_from("<HHII", pdu, 8)
            self.c2h_pdus.append((cccid, datao, datal, flags, pdo))
            chunk = pdu[pdo:pdo + datal]
            if flags & FLAG_DDGST:
                assert struct.unpack_from("<I", pdu, pdo + datal)[0] == crc32c(chunk), "bad data digest"
            have = self.data_in.get(cccid, b"")
            assert datao == len(have), f"C2HData at offset {datao}, expected {len(have)}"
            self.data_in[cccid] = have + chunk
            if flags & FLAG_SUCCESS:
                assert flags & FLAG_LAST, "SUCCESS without LAST_PDU"
                self.done[cccid] = (Completion(0, 0, 0, 0, cccid, 0), self.data_in.pop(cccid))
            return
        if ptype == PDU_R2T:
            cccid, ttag, r2to, r2tl = struct.unpack_from("<HHII", pdu, 8)
            self.r2ts.append((cccid, ttag, r2to, r2tl))
            data = self.data_out[cccid]
            assert r2to + r2tl <= len(data), f"R2T for {r2to}+{r2tl} of a {len(data)}-byte write"
            step = self.maxh2cdata or r2tl
            off = r2to
            while off < r2to + r2tl:
                n = min(step, r2to + r2tl - off)
                self.send_h2c(cccid, ttag, data[off:off + n], off, last=off + n == r2to + r2tl)
                off += n
            return
        raise AssertionError(f"unexpected PDU type {ptype}")

    def command(self, sqe_bytes, data_out=b"", in_capsule=True):
        """Sends a command; returns (Completion, data read from C2HData PDUs)."""
        return self.wait(self.submit(sqe_bytes, data_out, in_capsule))

    def h2c_pdu(self, cccid, ttag, chunk, offset, last=True, datal=None):
        hd = 4 if self.hdgst else 0
        dd = 4 if self.ddgst else 0
        flags = (FLAG_LAST if last else 0) | (FLAG_HDGST if hd else 0) | (FLAG_DDGST if dd else 0)
        hdr = header(PDU_H2C_DATA, flags, 24, 24 + hd, 24 + hd + len(chunk) + dd)
        hdr += struct.pack("<HHIIxxxx", cccid, ttag, offset, len(chunk) if datal is None else datal)
        pdu = hdr + (struct.pack("<I", crc32c(hdr)) if hd else b"") + chunk
        if dd:
            pdu += struct.pack("<I", crc32c(chunk))
        return pdu

    def send_h2c(self, cccid, ttag, chunk, offset, last=True):
        self.send(self.h2c_pdu(cccid, ttag, chunk, offset, last))

    # --- fabrics ---
    def connect_sqe(self, cid, qid, sqsize, kato, cattr=0, recfmt=0, datalen=1024):
        specific = struct.pack("<HHHBxI12x", recfmt, qid, sqsize, cattr, kato)
        return fabrics_sqe(FCTYPE_CONNECT, cid, specific, sgl=(0, datalen, SGL_ICD))

    @staticmethod
    def connect_data(hostid, cntlid, subnqn, hostnqn):
        return (hostid + struct.pack("<H", cntlid) + bytes(238) + subnqn.encode().ljust(256, b"\0") +
                hostnqn.encode().ljust(256, b"\0") + bytes(256))

    def connect(self, subnqn, hostnqn=DEFAULT_HOSTNQN, qid=0, sqsize=31, cntlid=0xFFFF, kato=0, hostid=None,
                cattr=0, recfmt=0):
        self.hostid = hostid or self.hostid or uuid.uuid4().bytes
        data = self.connect_data(self.hostid, cntlid, subnqn, hostnqn)
        c, _ = self.command(self.connect_sqe(self.next_cid(), qid, sqsize, kato, cattr, recfmt), data)
        if c.ok:
            self.cntlid = c.dw0 & 0xFFFF
            self.qid = qid
        return c

    def prop_get(self, offset, size8=False):
        specific = struct.pack("<B3xI16x", 1 if size8 else 0, offset)
        c, _ = self.command(fabrics_sqe(FCTYPE_PROPERTY_GET, self.next_cid(), specific))
        return c, c.dw0 | (c.dw1 << 32)

    def prop_set(self, offset, value, size8=False):
        specific = struct.pack("<B3xIQ8x", 1 if size8 else 0, offset, value)
        c, _ = self.command(fabrics_sqe(FCTYPE_PROPERTY_SET, self.next_cid(), specific))
        return c

    def disconnect(self):
        c, _ = self.command(fabrics_sqe(FCTYPE_DISCONNECT, self.next_cid()))
        return c

    def enable(self):
        c = self.prop_set(PROP_CC, 1 | (6 << 16) | (4 << 20))
        assert c.ok, c
        c, csts = self.prop_get(PROP_CSTS)
        assert c.ok and csts & 1, f"CSTS.RDY not set: {csts:#x} ({c})"

    # --- admin ---
    def identify(self, cns, nsid=0, length=4096):
        return self.command(sqe(OPC_IDENTIFY, self.next_cid(), nsid=nsid, cdw10=cns, sgl=(0, length, SGL_TRANSPORT)))

    def get_log_sqe(self, lid, length, nsid=0xFFFFFFFF, offset=0, lsp=0, rae=False):
        numd = length // 4 - 1
        cdw10 = lid | (lsp << 8) | ((1 << 15) if rae else 0) | ((numd & 0xFFFF) << 16)
        return sqe(OPC_GET_LOG_PAGE, self.next_cid(), nsid=nsid, cdw10=cdw10, cdw11=numd >> 16,
                   cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32, sgl=(0, length, SGL_TRANSPORT))

    def get_log(self, lid, length, nsid=0xFFFFFFFF, offset=0, lsp=0, rae=False):
        return self.command(self.get_log_sqe(lid, length, nsid, offset, lsp, rae))

    def set_features(self, fid, cdw11, nsid=0, save=False):
        c, _ = self.command(sqe(OPC_SET_FEATURES, self.next_cid(), nsid=nsid, cdw10=fid | ((1 << 31) if save else 0),
                                cdw11=cdw11))
        return c

    def get_features(self, fid, cdw11=0, sel=0, length=0):
        sgl = (0, length, SGL_TRANSPORT) if length else None
        return self.command(sqe(OPC_GET_FEATURES, self.next_cid(), cdw10=fid | (sel << 8), cdw11=cdw11, sgl=sgl))

    def submit_aer(self):
        return self.submit(sqe(OPC_AER, self.next_cid()))

    def keep_alive(self):
        return self.command(sqe(OPC_KEEP_ALIVE, self.next_cid()))[0]

    def abort(self, sqid, cid):
        return self.command(sqe(OPC_ABORT, self.next_cid(), cdw10=sqid | (cid << 16)))[0]

    # --- I/O ---
    def read(self, nsid, slba, nlb, block=512, flags=0):
        return self.command(sqe(OPC_READ, self.next_cid(), nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32,
                                cdw12=((nlb - 1) & 0xFFFF) | flags, sgl=(0, nlb * block, SGL_TRANSPORT)))

    def write_sqe(self, nsid, slba, length, block=512, icd=True, opc=OPC_WRITE, flags=0, nlb=None):
        nlb = length // block if nlb is None else nlb
        sgl = (0, length, SGL_ICD) if icd else (0, length, SGL_TRANSPORT)
        return sqe(opc, self.next_cid(), nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32,
                   cdw12=((nlb - 1) & 0xFFFF) | flags, sgl=sgl)

    def write(self, nsid, slba, data, block=512, in_capsule=None, flags=0):
        icd = in_capsule if in_capsule is not None else len(data) <= 8192
        return self.command(self.write_sqe(nsid, slba, len(data), block, icd, flags=flags), data, in_capsule=icd)[0]

    def compare(self, nsid, slba, data, block=512, in_capsule=None):
        icd = in_capsule if in_capsule is not None else len(data) <= 8192
        return self.command(self.write_sqe(nsid, slba, len(data), block, icd, opc=OPC_COMPARE), data,
                            in_capsule=icd)[0]

    def write_zeroes(self, nsid, slba, nlb):
        return self.command(sqe(OPC_WRITE_ZEROES, self.next_cid(), nsid=nsid, cdw10=slba & 0xFFFFFFFF,
                                cdw11=slba >> 32, cdw12=(nlb - 1) & 0xFFFF))[0]

    def flush(self, nsid):
        return self.command(sqe(OPC_FLUSH, self.next_cid(), nsid=nsid))[0]

    def dsm_deallocate(self, nsid, ranges):
        data = b"".join(struct.pack("<IIQ", 0, nlb, slba) for slba, nlb in ranges)
        s = sqe(OPC_DSM, self.next_cid(), nsid=nsid, cdw10=len(ranges) - 1, cdw11=0x4, sgl=(0, len(data), SGL_ICD))
        return self.command(s, data)[0]

    # --- reservations (NVMe Base 2.0, 7.2-7.5 of the NVM command set) ---
    def resv_register(self, nsid, action, crkey=0, nrkey=0, iekey=False, cptpl=0):
        data = struct.pack("<QQ", crkey, nrkey)
        s = sqe(OPC_RESV_REGISTER, self.next_cid(), nsid=nsid, cdw10=action | (0x8 if iekey else 0) | (cptpl << 30),
                sgl=(0, 16, SGL_ICD))
        return self.command(s, data)[0]

    def resv_acquire(self, nsid, action, rtype, crkey=0, prkey=0):
        data = struct.pack("<QQ", crkey, prkey)
        s = sqe(OPC_RESV_ACQUIRE, self.next_cid(), nsid=nsid, cdw10=action | (rtype << 8), sgl=(0, 16, SGL_ICD))
        return self.command(s, data)[0]

    def resv_release(self, nsid, action, rtype, crkey=0):
        data = struct.pack("<Q", crkey)
        s = sqe(OPC_RESV_RELEASE, self.next_cid(), nsid=nsid, cdw10=action | (rtype << 8), sgl=(0, 8, SGL_ICD))
        return self.command(s, data)[0]

    def resv_report(self, nsid, length=4096, eds=True):
        s = sqe(OPC_RESV_REPORT, self.next_cid(), nsid=nsid, cdw10=length // 4 - 1, cdw11=1 if eds else 0,
                sgl=(0, length, SGL_TRANSPORT))
        return self.command(s)


def new_queue(port, subnqn, hostnqn=DEFAULT_HOSTNQN, qid=0, cntlid=0xFFFF, hostid=None, kato=0, hdgst=False,
              ddgst=False, sqsize=31, enable=True):
    """A connected queue: ICReq + Connect (+ enable for the admin queue). Fails the test if Connect fails."""
    h = Host(port, hdgst=hdgst, ddgst=ddgst)
    h.icreq()
    c = h.connect(subnqn, hostnqn, qid=qid, cntlid=cntlid, kato=kato, hostid=hostid, sqsize=sqsize)
    assert c.ok, c
    if qid == 0 and enable:
        h.enable()
    return h


def connect_admin(port, subnqn, hostnqn=DEFAULT_HOSTNQN, **kw):
    return new_queue(port, subnqn, hostnqn, **kw)


class Association:
    """An admin queue and one I/O queue of one controller."""

    def __init__(self, port, subnqn, hostnqn=DEFAULT_HOSTNQN, hostid=None, kato=0, io_queues=1, **kw):
        self.admin = new_queue(port, subnqn, hostnqn, hostid=hostid or uuid.uuid4().bytes, kato=kato, **kw)
        self.hostid = self.admin.hostid
        self.cntlid = self.admin.cntlid
        self.io = [new_queue(port, subnqn, hostnqn, qid=q + 1, cntlid=self.cntlid, hostid=self.hostid, **kw)
                   for q in range(io_queues)]

    @property
    def q(self):
        return self.io[0]

    def close(self):
        for h in self.io:
            h.close()
        self.admin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until(what, cond, timeout=20, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
