"""The io-engine's life cycle: configuration sources, restart and re-import, SIGKILL during verified
writes, a second engine on the same disk, two engines where one reads the other's replica over NVMe/TCP
while the first is killed and restarted, and the Prometheus page."""
import json
import os
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import make_file
from io_engine import Engine, EngineError

MiB = 1 << 20


def pattern(pb, device, offset, length, gen):
    return pb.test_pb2.PatternRequest(device=device, offset=offset, length=length, generation=gen)


def test_config_file_env_and_flags(engines, scratch, build_dir):
    disk = make_file(scratch / "p.img", 64 * MiB)
    e = engines(start=False, name="cfg")
    cfg = scratch / "engine.yaml"
    cfg.write_text(f"node-name: from-file\nnvmf-port: {e.nvmf_port}\nlog-level: debug\n"
                   f"pools:\n  - name: pf\n    disk: uring://{disk}\n")
    # The file names the node, the environment overrides nothing here, a flag beats the file.
    e.extra_args = ["--config", str(cfg)]
    e.start()
    assert e.info.node_name == "cfg"  # the flag (--node-name in Engine.args) beats the file
    assert [p.name for p in e.api.pool.ListPools(__import__("io_engine").stubs().pool_pb2.ListPoolsRequest(),
                                                 timeout=30).pools] == ["pf"]
    e.stop()
    import subprocess
    bad = scratch / "bad.yaml"
    bad.write_text("no-such-setting: 1\n")
    p = subprocess.run([e.binary, "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no-such-setting" in p.stderr
    p = subprocess.run([e.binary, "--pool", "nodisk"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "NAME=DISK_URI" in p.stderr
    p = subprocess.run([e.binary, "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    for flag in ["--grpc-endpoint", "--nvmf-port", "--cores", "--metrics-port", "--pool", "--log-level",
                 "TERN_GRPC_ENDPOINT", "10124", "8420", "9502"]:
        assert flag in p.stdout, flag
    # Environment: a variable beats the file.
    env = dict(os.environ, TERN_NODE_NAME="from-env")
    args = [a for a in e.args() if a not in ("--node-name", "cfg")]  # --config is among the extra args
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        ch = grpc.insecure_channel(e.endpoint)
        from io_engine import stubs
        node = stubs().node_pb2_grpc.NodeServiceStub(ch)
        deadline = time.monotonic() + 60
        while True:
            try:
                info = node.GetNodeInfo(stubs().common_pb2.Empty(), timeout=2)
                break
            except grpc.RpcError:
                assert proc.poll() is None, f"the engine exited with {proc.returncode}"
                assert time.monotonic() < deadline, "engine did not start"
                time.sleep(0.1)
        assert info.node_name == "from-env"
        ch.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_restart_brings_back_pools_replicas_and_shares(engines, scratch, pb, ioperf):
    e = engines()
    disk = f"uring://{make_file(scratch / 'p.img', 128 * MiB)}"
    # Created through the API (not configured): the engine remembers it in its state directory.
    e.api.pool.CreatePool(pb.pool_pb2.CreatePoolRequest(name="p", disk=disk), timeout=60)
    h = "nqn.2014-08.org.nvmexpress:uuid:allowed"
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
        name="r", pool="p", size=16 * MiB, thin=True, share=pb.common_pb2.SHARE_PROTOCOL_NVMF, allowed_hosts=[h]),
        timeout=60)
    e.api.test.WritePattern(pattern(pb, r.uuid, 0, 16 * MiB, 5), timeout=60)
    e.api.snapshot.CreateSnapshot(pb.snapshot_pb2.CreateSnapshotRequest(replica=pb.replica_pb2.ReplicaRef(name="r"),
                                                                        name="s"), timeout=60)
    before = e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(include_snapshots=True), timeout=60).replicas
    for how in ("SIGTERM", "SIGKILL"):
        if how == "SIGTERM":
            e.restart()
        else:
            e.kill()
            e.start()
        after = e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(include_snapshots=True), timeout=60).replicas
        key = lambda x: (x.uuid, x.name, x.kind, x.size, x.share.uri, tuple(x.share.allowed_hosts))
        assert sorted(map(key, after)) == sorted(map(key, before)), how
        v = e.api.test.VerifyPattern(pattern(pb, r.uuid, 0, 16 * MiB, 5), timeout=60)
        assert v.ok, (how, v.mismatch)
        # The share works again, with its host list.
        p = ioperf.run("--uri", f"{r.share.uri}?hostnqn={h}", "--rw", "randrw", "--qd", "4", "--time", "300ms",
                       "--verify", timeout=120)
        assert p.returncode == 0, (how, p.stdout + p.stderr)
        # ioperf wrote its own pattern: put ours back for the next round.
        e.api.test.WritePattern(pattern(pb, r.uuid, 0, 16 * MiB, 5), timeout=60)
    # Exported pools are forgotten: not imported at the next start.
    e.api.replica.UnshareReplica(pb.replica_pb2.ReplicaRef(name="r"), timeout=60)
    e.api.pool.ExportPool(pb.pool_pb2.PoolRef(name="p"), timeout=60)
    e.restart()
    assert len(e.api.pool.ListPools(pb.pool_pb2.ListPoolsRequest(), timeout=60).pools) == 0
    e.api.pool.ImportPool(pb.pool_pb2.ImportPoolRequest(disk=disk), timeout=60)
    rep = e.api.replica.ListReplicas(pb.replica_pb2.ListReplicasRequest(name="r"), timeout=60).replicas[0]
    assert rep.share.protocol == pb.common_pb2.SHARE_PROTOCOL_NONE


def test_sigkill_during_flushed_writes_loses_nothing_acknowledged(engines, scratch, pb):
    """Writers keep overwriting regions with new generations (each WritePattern returns after a flush);
    the engine is SIGKILLed mid-stream. After the restart every region holds the last acknowledged
    generation, or the one in flight when the engine died."""
    e = engines()
    disk = f"uring://{make_file(scratch / 'p.img', 128 * MiB)}"
    e.api.pool.CreatePool(pb.pool_pb2.CreatePoolRequest(name="p", disk=disk), timeout=60)
    # Thin: first writes allocate clusters (metadata commits race with the kill).
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="r", pool="p", size=64 * MiB, thin=True),
                                    timeout=60)
    region = 4 * MiB
    acked = {}       # region index -> last acknowledged generation
    inflight = {}    # region index -> generation being written when the kill came
    stop = threading.Event()
    errors = []

    def writer(w):
        gen = 1
        api = e.api.test
        while not stop.is_set():
            for i in range(w, 16, 2):
                inflight[i] = gen
                try:
                    api.WritePattern(pattern(pb, r.uuid, i * region, region, gen), timeout=30)
                except grpc.RpcError as ex:
                    if ex.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        errors.append(ex)
                    return
                acked[i] = gen
                del inflight[i]
                if stop.is_set():
                    return
            gen += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    e.kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert not errors, errors
    assert len(acked) >= 8, acked
    e.start()
    for i in range(16):
        gens = [g for g in (acked.get(i), inflight.get(i)) if g]
        if not gens:
            continue
        results = [e.api.test.VerifyPattern(pattern(pb, r.uuid, i * region, region, g), timeout=60) for g in gens]
        if i in inflight:
            continue  # a write in flight may have landed in part: only its acknowledged predecessors count
        assert results[0].ok, (i, gens, results[0].mismatch)


def test_second_engine_on_the_same_disk_is_refused(engines, scratch, pb):
    path = make_file(scratch / "p.img", 64 * MiB)
    disk = f"uring://{path}"
    a = engines(pools=[("p", disk)])
    r = a.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="r", pool="p", size=8 * MiB), timeout=60)
    a.api.test.WritePattern(pattern(pb, r.uuid, 0, 8 * MiB, 3), timeout=60)
    b = engines(pools=[("p", disk)])
    # B starts (it serves other pools) but does not get this one, and says why.
    assert len(b.api.pool.ListPools(pb.pool_pb2.ListPoolsRequest(), timeout=60).pools) == 0
    assert "lock" in b.log().lower() or "in use" in b.log().lower(), b.log()[-2000:]
    with pytest.raises(grpc.RpcError) as ei:
        b.api.pool.ImportPool(pb.pool_pb2.ImportPoolRequest(disk=disk), timeout=60)
    assert ei.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE,
                               grpc.StatusCode.PERMISSION_DENIED), ei.value
    b.stop()
    assert a.api.test.VerifyPattern(pattern(pb, r.uuid, 0, 8 * MiB, 3), timeout=60).ok
    a.restart()
    assert a.api.test.VerifyPattern(pattern(pb, r.uuid, 0, 8 * MiB, 3), timeout=60).ok


def test_engine_b_reads_engine_a_over_nvmf_while_a_restarts(engines, scratch, pb):
    disk = f"uring://{make_file(scratch / 'a.img', 128 * MiB)}"
    a = engines(name="a", pools=[("pa", disk)])
    r = a.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(
        name="r", pool="pa", size=16 * MiB, thin=True, share=pb.common_pb2.SHARE_PROTOCOL_NVMF), timeout=60)
    b = engines(name="b")
    uri = f"{r.share.uri}?uuid=00000000-0000-4000-8000-0000000000b1&ctrl_loss_tmo_s=60&reconnect_delay_ms=200&timeout_ms=5000"
    dev = b.api.bdev.CreateBdev(pb.bdev_pb2.CreateBdevRequest(uri=uri), timeout=60)
    assert dev.size == 16 * MiB and dev.product == "nvmf"
    outcomes = []
    mismatches = []
    stop = threading.Event()

    def loop():
        gen = 1
        while not stop.is_set():
            off = (gen % 4) * 4 * MiB
            t0 = time.monotonic()
            try:
                b.api.test.WritePattern(pattern(pb, dev.name, off, 4 * MiB, gen), timeout=60)
                v = b.api.test.VerifyPattern(pattern(pb, dev.name, off, 4 * MiB, gen), timeout=60)
                if not v.ok:
                    mismatches.append((gen, v.mismatch))
                outcomes.append(("ok", time.monotonic()))
            except grpc.RpcError as ex:
                # Failing cleanly is allowed while A is away; hanging (DEADLINE_EXCEEDED) is not.
                outcomes.append((ex.code(), time.monotonic()))
                if ex.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
                time.sleep(0.1)
            assert time.monotonic() - t0 < 60
            gen += 1

    t = threading.Thread(target=loop)
    t.start()
    try:
        time.sleep(1.5)
        a.kill()
        time.sleep(1.0)
        a.start()
        restarted = time.monotonic()
        deadline = restarted + 60
        while time.monotonic() < deadline and not any(o == "ok" and at > restarted + 0.5 for o, at in outcomes):
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive(), "engine B's I/O hung"
    assert not mismatches, mismatches
    codes = {o for o, _ in outcomes}
    assert grpc.StatusCode.DEADLINE_EXCEEDED not in codes, outcomes
    assert codes <= {"ok", grpc.StatusCode.UNAVAILABLE}, codes
    assert any(o == "ok" and at > restarted for o, at in outcomes), "B's I/O did not resume after A came back"
    b.api.bdev.DestroyBdev(pb.bdev_pb2.DestroyBdevRequest(name=dev.name), timeout=60)


def test_metrics_scrape_parses_and_moves_with_io(engines, scratch, pb):
    from prometheus_client.parser import text_string_to_metric_families
    disk = f"uring://{make_file(scratch / 'p.img', 64 * MiB)}"
    e = engines(pools=[("p", disk)])
    r = e.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="r", pool="p", size=8 * MiB, thin=True,
                                                                        share=pb.common_pb2.SHARE_PROTOCOL_NVMF),
                                    timeout=60)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{e.metrics_port}/metrics", timeout=30) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = resp.read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        return fams

    def value(fams, family, sample, **labels):
        for s in fams[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise KeyError((family, sample, labels))

    m1 = scrape()
    for f in ["tern_build_info", "tern_pool_capacity_bytes", "tern_pool_used_bytes", "tern_pool_online",
              "tern_replica_allocated_bytes", "tern_replica_ops", "tern_replica_latency_seconds", "tern_device_ops",
              "tern_reactor_busy_seconds", "tern_reactor_idle_seconds", "tern_nvmf_connected_hosts",
              "tern_nvmf_subsystems"]:
        assert f in m1, (f, sorted(m1))
    assert value(m1, "tern_pool_online", "tern_pool_online", pool="p") == 1
    assert value(m1, "tern_replica_allocated_bytes", "tern_replica_allocated_bytes", replica="r") == 0
    w0 = value(m1, "tern_replica_ops", "tern_replica_ops_total", replica="r", op="write")
    e.api.test.WritePattern(pattern(pb, r.uuid, 0, 8 * MiB, 1), timeout=60)
    m2 = scrape()
    assert value(m2, "tern_replica_ops", "tern_replica_ops_total", replica="r", op="write") > w0
    assert value(m2, "tern_replica_bytes", "tern_replica_bytes_total", replica="r", op="write") == 8 * MiB
    assert value(m2, "tern_replica_allocated_bytes", "tern_replica_allocated_bytes", replica="r") == 8 * MiB
    assert value(m2, "tern_pool_used_bytes", "tern_pool_used_bytes", pool="p") >= 8 * MiB
    n = value(m2, "tern_replica_latency_seconds", "tern_replica_latency_seconds_count", replica="r", op="write")
    assert n == value(m2, "tern_replica_latency_seconds", "tern_replica_latency_seconds_bucket", replica="r", op="write",
                      le="+Inf") and n > 0
    assert value(m2, "tern_reactor_busy_seconds", "tern_reactor_busy_seconds_total", reactor="0") > 0


def test_share_uris_use_the_advertised_address_for_wildcard_listeners(engines, pb):
    e = engines(extra_args=["--nbd-address", "0.0.0.0", "--advertise-address", "127.0.0.1"])
    e.api.bdev.CreateBdev(pb.bdev_pb2.CreateBdevRequest(uri="malloc:///m0?size_mb=4"), timeout=60)
    b = e.api.bdev.ShareBdev(pb.bdev_pb2.ShareBdevRequest(name="m0", protocol=pb.common_pb2.SHARE_PROTOCOL_NBD), timeout=60)
    assert b.share.uri == f"nbd://127.0.0.1:{e.nbd_port}/m0"
    assert e.info.nbd_endpoint == f"127.0.0.1:{e.nbd_port}"
    import subprocess
    p = subprocess.run(["nbdinfo", "--size", b.share.uri], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and int(p.stdout) == 4 << 20, p.stderr
