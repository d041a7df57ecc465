"""Helpers shared by the nexus system tests (test_nexus*.py, test_kernel_nexus.py), bench/nexus.py and
bench/rebuild.py."""

import time

MiB = 1 << 20


def required_child_bytes(volume):
    """The nexus layout (src/nexus/layout.cc): the volume, then the metadata region from the next MiB."""
    regions = (volume + (64 << 10) - 1) // (64 << 10)
    slot = ((regions + 7) // 8 + 4095) // 4096 * 4096
    meta = (2 * MiB + 8 * slot + MiB - 1) // MiB * MiB
    return (volume + MiB - 1) // MiB * MiB + meta


def write_pattern(engine, pb, device, gen, offset, length):
    """The test API's verifiable pattern, generation `gen`, over [offset, offset + length) of `device`."""
    engine.api.test.WritePattern(pb.test_pb2.PatternRequest(device=device, offset=offset, length=length,
                                                            generation=gen), timeout=120)


def verify_pattern(engine, pb, device, gen, offset, length):
    return engine.api.test.VerifyPattern(pb.test_pb2.PatternRequest(device=device, offset=offset, length=length,
                                                                    generation=gen), timeout=120)


def nexus_of(engine, pb, vol):
    """The nexus `vol` as engine `engine` lists it."""
    return engine.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=vol), timeout=60).nexuses[0]


def wait_rebuilt(engine, pb, vol, child, timeout=120):
    """Waits until `child`'s rebuild has ended; asserts it completed and the child is in sync. Returns the
    nexus."""
    N = pb.nexus_pb2
    deadline = time.monotonic() + timeout
    while True:
        l = nexus_of(engine, pb, vol)
        c = [c for c in l.children if c.uuid == child][0]
        if c.HasField("rebuild") and c.rebuild.state not in (N.REBUILD_STATE_RUNNING, N.REBUILD_STATE_PAUSED):
            assert c.rebuild.state == N.REBUILD_STATE_COMPLETED, c.rebuild
            assert c.synced
            return l
        assert time.monotonic() < deadline, f"rebuild of {child} still not done: {c}"
        time.sleep(0.02)
