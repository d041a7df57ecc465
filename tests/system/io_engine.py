"""Runs the io-engine for system tests: free ports, its own state directory, readiness through the gRPC
API, and a stop that checks it exited cleanly (exit status 0 after SIGTERM, nothing from the sanitizers in
its log). Also generates the Python gRPC stubs from proto/ (protoc + grpc_python_plugin) once per session.
"""
import importlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

from nvmf_target import SANITIZER_MARKERS

ROOT = pathlib.Path(__file__).resolve().parents[2]
_STUBS = None


def stubs():
    """The generated modules as a namespace: stubs().pool_pb2, stubs().replica_pb2_grpc, ..."""
    global _STUBS
    if _STUBS is None:
        out = pathlib.Path(tempfile.mkdtemp(prefix="tern-pystubs-"))
        protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto/tern/engine/v1").glob("*.proto"))
        subprocess.run(["protoc", f"--proto_path={ROOT / 'proto'}", f"--python_out={out}", f"--grpc_out={out}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", *protos], check=True, timeout=60)
        sys.path.insert(0, str(out))

        class NS:
            pass

        ns = NS()
        for p in protos:
            base = pathlib.Path(p).stem
            setattr(ns, f"{base}_pb2", importlib.import_module(f"tern.engine.v1.{base}_pb2"))
            setattr(ns, f"{base}_pb2_grpc", importlib.import_module(f"tern.engine.v1.{base}_pb2_grpc"))
        _STUBS = ns
    return _STUBS


def free_ports(n, host="0.0.0.0"):
    """`n` ports free on every local address (a port free on 127.0.0.1 may be taken on another address a
    test binds, such as a veth pair's)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EngineError(AssertionError):
    pass


class Api:
    """One stub per service, calls with a deadline so nothing can hang."""

    def __init__(self, channel, timeout):
        import grpc  # noqa: F401  (imported here: only engine tests need it)
        s = stubs()
        self.pool = s.pool_pb2_grpc.PoolServiceStub(channel)
        self.replica = s.replica_pb2_grpc.ReplicaServiceStub(channel)
        self.snapshot = s.snapshot_pb2_grpc.SnapshotServiceStub(channel)
        self.bdev = s.bdev_pb2_grpc.BdevServiceStub(channel)
        self.nvmf = s.nvmf_pb2_grpc.NvmfServiceStub(channel)
        self.stats = s.stats_pb2_grpc.StatsServiceStub(channel)
        self.node = s.node_pb2_grpc.NodeServiceStub(channel)
        self.test = s.test_pb2_grpc.TestServiceStub(channel)
        self.nexus = s.nexus_pb2_grpc.NexusServiceStub(channel)
        self.timeout = timeout


class Engine:
    """One io-engine process. Ports are chosen free at construction and kept across restarts. `address`:
    where its gRPC API and NVMe/TCP target listen (and what it advertises); `netns`: the name of a network
    namespace to run it in (`ip netns exec`, which execs: the process is the engine itself)."""

    def __init__(self, build_dir, workdir, name="engine", cores="0", pools=(), extra_args=(), timeout=60,
                 log_level="info", address="127.0.0.1", netns=None):
        self.binary = str(pathlib.Path(build_dir) / "tools/io-engine/io-engine")
        self.ternctl_bin = str(pathlib.Path(build_dir) / "tools/ternctl/ternctl")
        self.workdir = pathlib.Path(workdir)
        self.name = name
        self.cores = cores
        self.pools = list(pools)
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.address = address
        self.netns = netns
        self.grpc_port, self.nvmf_port, self.nbd_port, self.metrics_port = free_ports(4)
        self.state_dir = self.workdir / f"{name}-state"
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.timeout = timeout
        self._channel = None
        self.api = None

    @property
    def endpoint(self):
        return f"{self.address}:{self.grpc_port}"

    def args(self):
        a = [self.binary, "--node-name", self.name, "--grpc-endpoint", self.endpoint, "--nvmf-address", self.address,
             "--nvmf-port", str(self.nvmf_port), "--nbd-port", str(self.nbd_port), "--metrics-address", "127.0.0.1",
             "--metrics-port", str(self.metrics_port), "--cores", self.cores, "--state-dir", str(self.state_dir),
             "--log-level", self.log_level]
        for name, disk in self.pools:
            a += ["--pool", f"{name}={disk}"]
        if self.netns:
            a = ["ip", "netns", "exec", self.netns] + a
        return a + self.extra_args

    def start(self, timeout=60):
        import grpc
        assert self.proc is None, "already running"
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}.{self.runs}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        # Wait for the port first: a gRPC channel that met a refused connection backs off for seconds.
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._cleanup()
                raise EngineError(f"io-engine exited with {rc} during start-up:\n{self.log()[-4000:]}")
            try:
                socket.create_connection((self.address, self.grpc_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._kill()
                    raise EngineError(f"io-engine was not listening within {timeout} s:\n{self.log()[-4000:]}")
                time.sleep(0.02)
        self._channel = grpc.insecure_channel(self.endpoint)
        self.api = Api(self._channel, self.timeout)
        Empty = stubs().common_pb2.Empty
        while True:
            try:
                self.info = self.api.node.GetNodeInfo(Empty(), timeout=5, wait_for_ready=True)
                return self
            except grpc.RpcError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self._kill()
                    raise EngineError(f"io-engine was not serving within {timeout} s:\n{self.log()[-4000:]}")
                time.sleep(0.05)

    def log(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _cleanup(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is not None:
            self._log.close()
            self.proc = None

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._cleanup()

    def kill(self):
        """SIGKILL: a crashed node."""
        self._kill()
        self.check_log()

    def stop(self, timeout=60):
        """SIGTERM; raises unless it exited with 0 within `timeout` and its log is clean."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise EngineError(f"io-engine did not stop within {timeout} s of SIGTERM:\n{self.log()[-4000:]}")
        rc = proc.returncode
        self._cleanup()
        self.check_log()
        if rc != 0:
            raise EngineError(f"io-engine exited with {rc}:\n{self.log()[-4000:]}")

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    def check_log(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            at = text.find(m)
            if at >= 0:
                raise EngineError(f"sanitizer report in {self.log_path}:\n{text[max(0, at - 300):at + 6000]}")

    # --- the CLI against this engine ---
    def ternctl(self, *args, timeout=120):
        env = dict(os.environ, TERN_ENGINE=self.endpoint)
        return subprocess.run([self.ternctl_bin, *args], capture_output=True, text=True, timeout=timeout, env=env)

    def ternctl_json(self, *args, timeout=120):
        p = self.ternctl(*args, "-o", "json", timeout=timeout)
        assert p.returncode == 0, f"ternctl {' '.join(args)}: rc={p.returncode}\n{p.stdout}{p.stderr}"
        return json.loads(p.stdout)


class EngineFactory:
    """Starts engines and stops every one at the end, checking each exited cleanly."""

    def __init__(self, build_dir, workdir):
        self.build_dir = build_dir
        self.workdir = workdir
        self.engines = []
        if not (pathlib.Path(build_dir) / "tools/io-engine/io-engine").exists():
            raise EngineError(f"io-engine is not built in {build_dir}; run scripts/build.sh first")

    def __call__(self, start=True, **kw):
        kw.setdefault("name", f"engine{len(self.engines)}")
        e = Engine(self.build_dir, self.workdir, **kw)
        self.engines.append(e)
        return e.start() if start else e

    def stop_all(self):
        errors = []
        for e in self.engines:
            try:
                e.stop()
            except AssertionError as ex:
                errors.append(str(ex))
        if errors:
            raise EngineError("\n\n".join(errors))
