#!/usr/bin/env python3
"""Writes the seed corpus of nvmf_target_fuzz (tests/fuzz/corpus/nvmf_target): well-formed sessions the
fuzzer mutates from. See tests/fuzz/nvmf_target_fuzz.cc for the input layout. Re-run after changing it."""
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "nvmf_target"
PRE_NONE, PRE_ICREQ, PRE_ADMIN, PRE_IO = 0, 1, 2, 3
HDGST, DDGST, FRAMED, DISCOVERY = 0x04, 0x08, 0x10, 0x20


def sqe(opc, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, cdw13=0, cdw14=0, cdw15=0, sgl_len=0, sgl_type=0x01):
    # SGL: in-capsule data block (type 0x0, subtype 0x1 => byte 0x01) or transport data block (0x5A).
    return struct.pack("<BBHIIIQQIxxxBIIIIII", opc, 0x40, cid, nsid, 0, 0, 0, 0, sgl_len, sgl_type,
                       cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)


def rec(ptype, hdr, data=b"", flags=0):
    return struct.pack("<BBBH", ptype, flags, len(hdr), len(data)) + hdr + data


def cmd(s, data=b""):
    return rec(0x04, s, data)


def h2c(cccid, ttag, offset, data, last=True):
    return rec(0x06, struct.pack("<HHIIxxxx", cccid, ttag, offset, len(data)), data, flags=0x04 if last else 0)


def fabrics(cid, fctype, rest=b""):
    b = bytearray(64)
    b[0], b[1], b[2], b[4] = 0x7F, 0x40, cid, fctype
    b[40:40 + len(rest)] = rest
    return bytes(b)


seeds = {}
icreq_hdr = struct.pack("<HBBI", 0, 0, 0, 0) + bytes(112)
seeds["raw_icreq"] = bytes([PRE_NONE]) + struct.pack("<BBBBI", 0, 0, 128, 0, 128) + icreq_hdr
seeds["framed_icreq_digests"] = bytes([PRE_NONE | FRAMED]) + rec(0x00, struct.pack("<HBBI", 0, 0, 3, 0) + bytes(112))
seeds["raw_garbage"] = bytes([PRE_ICREQ]) + b"\x04\x00\x48\x00\x10\x00\x00\x00" + bytes(16)

admin = [
    cmd(sqe(0x06, 1, cdw10=1, sgl_len=4096, sgl_type=0x5A)),             # identify controller
    cmd(sqe(0x06, 2, nsid=1, cdw10=0, sgl_len=4096, sgl_type=0x5A)),     # identify namespace
    cmd(sqe(0x06, 3, cdw10=2, sgl_len=4096, sgl_type=0x5A)),             # active namespace list
    cmd(sqe(0x06, 4, nsid=1, cdw10=3, sgl_len=4096, sgl_type=0x5A)),     # ns descriptors
    cmd(sqe(0x02, 5, cdw10=(0x3FF << 16) | 0x0C, sgl_len=4096, sgl_type=0x5A)),  # ANA log
    cmd(sqe(0x02, 6, cdw10=(127 << 16) | 0x02, sgl_len=512, sgl_type=0x5A)),     # SMART
    cmd(sqe(0x02, 7, cdw10=(1023 << 16) | 0x04, sgl_len=4096, sgl_type=0x5A)),   # changed ns list
    cmd(sqe(0x09, 8, cdw10=0x07, cdw11=0x00030003)),                     # set features: queues
    cmd(sqe(0x0A, 9, cdw10=0x0F)),                                       # get features: keep-alive
    cmd(sqe(0x0C, 10)),                                                  # AER
    cmd(sqe(0x18, 11)),                                                  # keep alive
    cmd(sqe(0x08, 12, cdw10=(7 << 16) | 1)),                             # abort
    cmd(fabrics(13, 0x04, struct.pack("<BxxxI", 1, 0x1C))),              # property get CSTS
]
seeds["admin_session"] = bytes([PRE_ADMIN | FRAMED]) + b"".join(admin)
seeds["admin_session_digests"] = bytes([PRE_ADMIN | FRAMED | HDGST | DDGST]) + b"".join(admin[:5])
seeds["discovery_log"] = bytes([PRE_ADMIN | FRAMED | DISCOVERY]) + cmd(
    sqe(0x02, 1, cdw10=(1023 << 16) | 0x70, sgl_len=4096, sgl_type=0x5A))
seeds["admin_raw_identify"] = bytes([PRE_ADMIN]) + struct.pack("<BBBBI", 4, 0, 72, 0, 72) + sqe(
    0x06, 1, cdw10=1, sgl_len=4096, sgl_type=0x5A)

block = bytes(range(256)) * 2
io = [
    cmd(sqe(0x01, 1, nsid=1, cdw10=0, cdw12=0, sgl_len=512), block),                      # write, in-capsule
    cmd(sqe(0x02, 2, nsid=1, cdw10=0, cdw12=0, sgl_len=512, sgl_type=0x5A)),             # read
    cmd(sqe(0x05, 3, nsid=1, cdw10=0, cdw12=0, sgl_len=512), block),                      # compare
    cmd(sqe(0x00, 4, nsid=1)),                                                             # flush
    cmd(sqe(0x08, 5, nsid=1, cdw10=8, cdw12=7)),                                           # write zeroes
    cmd(sqe(0x09, 6, nsid=1, cdw10=0, cdw11=4, sgl_len=16), struct.pack("<IIQ", 0, 8, 16)),  # DSM deallocate
    cmd(sqe(0x01, 7, nsid=2, cdw10=1, cdw12=0, sgl_len=4096), bytes(4096)),               # 4K namespace
]
seeds["io_session"] = bytes([PRE_IO | FRAMED]) + b"".join(io)
seeds["io_session_digests"] = bytes([PRE_IO | FRAMED | HDGST | DDGST]) + b"".join(io[:3])
big = bytes(i & 0xFF for i in range(16384))
seeds["io_r2t_write"] = bytes([PRE_IO | FRAMED]) + cmd(
    sqe(0x01, 9, nsid=1, cdw10=64, cdw12=31, sgl_len=16384, sgl_type=0x5A)) + h2c(9, 0, 0, big[:8192], last=False) + \
    h2c(9, 0, 8192, big[8192:])
resv = [
    cmd(sqe(0x0D, 1, nsid=1, cdw10=0, sgl_len=16), struct.pack("<QQ", 0, 0x1111)),        # register
    cmd(sqe(0x11, 2, nsid=1, cdw10=1 << 8, sgl_len=16), struct.pack("<QQ", 0x1111, 0)),    # acquire WE
    cmd(sqe(0x0E, 3, nsid=1, cdw10=(4096 // 4) - 1, cdw11=1, sgl_len=4096, sgl_type=0x5A)),  # report (EDS)
    cmd(sqe(0x11, 4, nsid=1, cdw10=(3 << 8) | 1, sgl_len=16), struct.pack("<QQ", 0x1111, 0x1111)),  # preempt
    cmd(sqe(0x15, 5, nsid=1, cdw10=1 << 8, sgl_len=8), struct.pack("<Q", 0x1111)),         # release
    cmd(sqe(0x15, 6, nsid=1, cdw10=1, sgl_len=8), struct.pack("<Q", 0x1111)),              # clear
]
seeds["reservations"] = bytes([PRE_IO | FRAMED]) + b"".join(resv)
# tern's vendor admin commands (src/nvmf/vendor.h): snapshot, then drop, of namespace 1's device.
snap = struct.pack("<IHH16s8s256s", 0x504E5354, 1, 2, bytes(range(1, 17)), bytes(8), b"s1")
seeds["vendor_snapshot"] = bytes([PRE_ADMIN | FRAMED]) + cmd(sqe(0xC1, 1, nsid=1, sgl_len=len(snap)), snap) + \
    cmd(sqe(0xC5, 2, nsid=1, sgl_len=len(snap)), snap) + cmd(sqe(0xC1, 3, nsid=9, sgl_len=len(snap)), snap)
# Block status (answered by the target itself): namespace 1 from block 0, then past the end, then a bad
# count and an unknown namespace.
seeds["vendor_block_status"] = bytes([PRE_ADMIN | FRAMED]) + cmd(sqe(0xC2, 1, nsid=1, cdw12=64, sgl_len=16, sgl_type=0x5A)) + \
    cmd(sqe(0xC2, 2, nsid=1, cdw10=1 << 30, cdw12=8, sgl_len=16, sgl_type=0x5A)) + \
    cmd(sqe(0xC2, 3, nsid=1, cdw12=0, sgl_len=16, sgl_type=0x5A)) + cmd(sqe(0xC2, 4, nsid=9, cdw12=8, sgl_len=16, sgl_type=0x5A))

OUT.mkdir(parents=True, exist_ok=True)
for name, data in seeds.items():
    (OUT / name).write_bytes(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
