"""A small NVMe/TCP host written from the specification, for system tests: it builds PDUs by hand so
tests can send exactly what they mean, including malformed traffic. Not a performance tool."""
import socket
import struct
import uuid

import binascii

PDU_ICREQ, PDU_ICRESP, PDU_H2C_TERM, PDU_C2H_TERM = 0x00, 0x01, 0x02, 0x03
PDU_CMD, PDU_RESP, PDU_H2C_DATA, PDU_C2H_DATA, PDU_R2T = 0x04, 0x05, 0x06, 0x07, 0x09
FLAG_HDGST, FLAG_DDGST, FLAG_LAST, FLAG_SUCCESS = 0x01, 0x02, 0x04, 0x08
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"

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
    def __init__(self, fes, fei, data):
        super().__init__(f"C2HTermReq fes={fes:#x} fei={fei}")
        self.fes, self.fei, self.data = fes, fei, data


class Completion:
    def __init__(self, dw0, dw1, sqhd, sqid, cid, status):
        self.dw0, self.dw1, self.sqhd, self.sqid, self.cid = dw0, dw1, sqhd, sqid, cid
        self.raw_status = status
        self.sc = (status >> 1) & 0xFF
        self.sct = (status >> 9) & 0x7
        self.dnr = bool(status & 0x8000)

    @property
    def ok(self):
        return self.sc == 0 and self.sct == 0

    def __repr__(self):
        return f"Completion(cid={self.cid}, sct={self.sct}, sc={self.sc:#x}, dw0={self.dw0:#x})"


def sqe(opc, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, cdw13=0, cdw14=0, cdw15=0, sgl=None, flags=0x40):
    sgl = sgl or (0, 0, 0)  # (addr, length, type)
    return struct.pack("<BBHIIIQQIxxxBIIIIII", opc, flags, cid, nsid, 0, 0, 0, sgl[0], sgl[1], sgl[2],
                       cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)


class Host:
    """One queue pair. Raises TermReq when the target terminates the connection."""

    def __init__(self, port, host="127.0.0.1", hdgst=False, ddgst=False, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.hdgst, self.ddgst = hdgst, ddgst
        self.cid = 0
        self.maxh2cdata = 0
        self.cntlid = None

    def close(self):
        self.sock.close()

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
        rest = self.recv_exact(plen - 8)
        pdu = ch + rest
        if ptype == PDU_C2H_TERM:
            fes, fei = struct.unpack_from("<HI", pdu, 8)
            raise TermReq(fes, fei, pdu[24:])
        if flags & FLAG_HDGST:
            want = struct.unpack_from("<I", pdu, hlen)[0]
            assert want == crc32c(pdu[:hlen]), "bad header digest from target"
        return ptype, flags, hlen, pdo, pdu

    def header(self, ptype, flags, hlen, pdo, plen):
        return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)

    def icreq(self, pfv=0, hpda=0, maxr2t=0, dgst=None):
        d = dgst if dgst is not None else (1 if self.hdgst else 0) | (2 if self.ddgst else 0)
        pdu = self.header(PDU_ICREQ, 0, 128, 0, 128) + struct.pack("<HBBI", pfv, hpda, d, maxr2t) + bytes(112)
        self.send(pdu)
        ptype, flags, hlen, pdo, resp = self.recv_pdu()
        assert ptype == PDU_ICRESP, ptype
        pfv, cpda, dg, maxh2c = struct.unpack_from("<HBBI", resp, 8)
        self.maxh2cdata = maxh2c
        return pfv, cpda, dg, maxh2c

    def capsule(self, sqe_bytes, data=b""):
        hd = 4 if self.hdgst else 0
        dd = 4 if (self.ddgst and data) else 0
        pdo = 72 + hd if data else 0
        plen = 72 + hd + len(data) + dd
        flags = (FLAG_HDGST if self.hdgst else 0) | (FLAG_DDGST if dd else 0)
        hdr = self.header(PDU_CMD, flags, 72, pdo, plen) + sqe_bytes
        pdu = hdr + (struct.pack("<I", crc32c(hdr)) if hd else b"") + data
        if dd:
            pdu += struct.pack("<I", crc32c(data))
        return pdu

    def next_cid(self):
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def command(self, sqe_bytes, data_out=b"", in_capsule=True):
        """Sends a command; returns (Completion, data read from C2HData PDUs)."""
        if data_out and not in_capsule:
            self.send(self.capsule(sqe_bytes))
        else:
            self.send(self.capsule(sqe_bytes, data_out))
        data = b""
        while True:
            ptype, flags, hlen, pdo, pdu = self.recv_pdu()
            if ptype == PDU_RESP:
                f = struct.unpack_from("<IIHHHH", pdu, 8)
                return Completion(*f), data
            if ptype == PDU_C2H_DATA:
                cccid, ttag, datao, datal = struct.unpack_from("<HHII", pdu, 8)
                chunk = pdu[pdo:pdo + datal]
                if flags & FLAG_DDGST:
                    assert struct.unpack_from("<I", pdu, pdo + datal)[0] == crc32c(chunk), "bad data digest"
                data += chunk
                if flags & FLAG_SUCCESS:
                    return Completion(0, 0, 0, 0, cccid, 0), data
                continue
            if ptype == PDU_R2T:
                cccid, ttag, r2to, r2tl = struct.unpack_from("<HHII", pdu, 8)
                self.send_h2c(cccid, ttag, data_out[r2to:r2to + r2tl], r2to)
                continue
            raise AssertionError(f"unexpected PDU type {ptype}")

    def send_h2c(self, cccid, ttag, chunk, offset, last=True):
        hd = 4 if self.hdgst else 0
        dd = 4 if self.ddgst else 0
        flags = (FLAG_LAST if last else 0) | (FLAG_HDGST if hd else 0) | (FLAG_DDGST if dd else 0)
        hdr = self.header(PDU_H2C_DATA, flags, 24, 24 + hd, 24 + hd + len(chunk) + dd)
        hdr += struct.pack("<HHIIxxxx", cccid, ttag, offset, len(chunk))
        pdu = hdr + (struct.pack("<I", crc32c(hdr)) if hd else b"") + chunk
        if dd:
            pdu += struct.pack("<I", crc32c(chunk))
        self.send(pdu)

    # --- fabrics ---
    def connect(self, subnqn, hostnqn, qid=0, sqsize=31, cntlid=0xFFFF, kato=0, hostid=None, cattr=0):
        self.hostid = hostid or getattr(self, "hostid", None) or uuid.uuid4().bytes
        data = self.hostid + struct.pack("<H", cntlid) + bytes(238)
        data += subnqn.encode().ljust(256, b"\0") + hostnqn.encode().ljust(256, b"\0") + bytes(256)
        cid = self.next_cid()
        s = struct.pack("<BBHBxxxxxxxxxxxxxxxxxxxQIxxxBHHHBxIxxxxxxxxxxxx", 0x7F, 0x40, cid, 0x01, 0, len(data), 0x01,
                        0, qid, sqsize, cattr, kato)
        c, _ = self.command(s, data)
        if c.ok:
            self.cntlid = c.dw0 & 0xFFFF
        return c

    def prop_get(self, offset, size8=False):
        cid = self.next_cid()
        s = struct.pack("<BBHB35xB3xI16x", 0x7F, 0, cid, 0x04, 1 if size8 else 0, offset)
        c, _ = self.command(s)
        return c, c.dw0 | (c.dw1 << 32)

    def prop_set(self, offset, value):
        cid = self.next_cid()
        s = struct.pack("<BBHB35xB3xIQ8x", 0x7F, 0, cid, 0x00, 0, offset, value)
        c, _ = self.command(s)
        return c

    def enable(self):
        c = self.prop_set(0x14, 1 | (6 << 16) | (4 << 20))
        assert c.ok, c
        c, csts = self.prop_get(0x1C)
        assert csts & 1, f"CSTS.RDY not set: {csts:#x}"

    # --- admin ---
    def identify(self, cns, nsid=0):
        cid = self.next_cid()
        c, data = self.command(sqe(0x06, cid, nsid=nsid, cdw10=cns, sgl=(0, 4096, 0x5A)))
        return c, data

    def get_log(self, lid, length, nsid=0xFFFFFFFF, offset=0, lsp=0, rae=False):
        cid = self.next_cid()
        numd = length // 4 - 1
        cdw10 = lid | (lsp << 8) | ((1 << 15) if rae else 0) | ((numd & 0xFFFF) << 16)
        c, data = self.command(sqe(0x02, cid, nsid=nsid, cdw10=cdw10, cdw11=numd >> 16, cdw12=offset & 0xFFFFFFFF,
                                   cdw13=offset >> 32, sgl=(0, length, 0x5A)))
        return c, data

    def set_features(self, fid, cdw11, nsid=0):
        cid = self.next_cid()
        c, _ = self.command(sqe(0x09, cid, nsid=nsid, cdw10=fid, cdw11=cdw11))
        return c

    def get_features(self, fid, cdw11=0, sel=0):
        cid = self.next_cid()
        c, data = self.command(sqe(0x0A, cid, cdw10=fid | (sel << 8), cdw11=cdw11))
        return c, data

    # --- I/O ---
    def read(self, nsid, slba, nlb, block=512):
        cid = self.next_cid()
        return self.command(sqe(0x02, cid, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=nlb - 1,
                                sgl=(0, nlb * block, 0x5A)))

    def write(self, nsid, slba, data, block=512, in_capsule=None):
        cid = self.next_cid()
        nlb = len(data) // block
        icd = in_capsule if in_capsule is not None else len(data) <= 8192
        sgl = (0, len(data), 0x01) if icd else (0, len(data), 0x5A)
        return self.command(sqe(0x01, cid, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32, cdw12=nlb - 1,
                                sgl=sgl), data, in_capsule=icd)[0]


def connect_admin(port, subnqn, hostnqn="nqn.2014-08.org.nvmexpress:uuid:test-host", **kw):
    h = Host(port, **{k: v for k, v in kw.items() if k in ("hdgst", "ddgst", "timeout")})
    h.icreq()
    c = h.connect(subnqn, hostnqn, **{k: v for k, v in kw.items() if k in ("kato", "hostid", "sqsize")})
    assert c.ok, c
    h.enable()
    return h
