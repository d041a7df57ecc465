#!/usr/bin/env python3
"""Writes the seed corpus of nbd_fuzz (tests/fuzz/corpus/nbd): client sessions the fuzzer mutates from.
See tests/fuzz/nbd_fuzz.cc for the input layout. Re-run after changing it."""
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "nbd"
OPT_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513
FIXED, NO_ZEROES = 1, 2
EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED = 1, 2, 3, 5, 6, 7, 8
READ, WRITE, DISC, FLUSH, TRIM, WZ = 0, 1, 2, 3, 4, 6
FUA, NO_HOLE = 1, 2


def opt(o, data=b""):
    return struct.pack(">QII", OPT_MAGIC, o, len(data)) + data


def query(name, infos=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def req(t, cookie, off, length, flags=0, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, t, cookie, off, length) + payload


def flags(f=FIXED | NO_ZEROES):
    return struct.pack(">I", f)


IO = (req(WRITE, 1, 0, 512, 0, b"\xab" * 512) + req(READ, 2, 0, 4096) + req(FLUSH, 3, 0, 0) +
      req(TRIM, 4, 4096, 4096, FUA) + req(WZ, 5, 8192, 8192, NO_HOLE) + req(WRITE, 6, 1024, 1024, FUA, b"\x01" * 1024) +
      req(DISC, 7, 0, 0))

SEEDS = {
    "go_and_io": bytes([0]) + flags() + opt(GO, query("vol", (3, 1, 2))) + IO,
    "go_4k_readonly": bytes([3]) + flags() + opt(INFO, query("vol", (3,))) + opt(GO, query("vol")) + IO,
    "export_name_zeroes": bytes([4]) + flags(FIXED) + opt(EXPORT_NAME, b"a") + IO,
    "list_unknown_abort": bytes([0]) + flags() + opt(LIST) + opt(LIST, b"x") + opt(STARTTLS) + opt(STRUCTURED) +
                          opt(99, b"junk") + opt(GO, query("nope")) + opt(INFO, b"\x00\x00\x10\x00ab") + opt(ABORT),
    "requests_only": bytes([0x80 | 0x20]) + IO + req(42, 9, 0, 512) + req(READ, 10, 0, 1 << 20) +
                     req(WRITE, 11, 100, 512, 4, b"\x00" * 512),
    "bad_request_magic": bytes([0x80]) + struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 512),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")
