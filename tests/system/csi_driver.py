"""A CSI client that plays the orchestrator's parts (kubelet, external-provisioner, -attacher, -resizer,
-snapshotter) against tern-csi: the generated csi.v1 stubs (proto/csi/v1/csi.proto) and a `Plugin` that
starts one tern-csi process on a unix socket and stops it (SIGTERM, or kill -9 to play a crash)."""
import importlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
_PB = None


def pb():
    """The generated modules: pb().csi_pb2, pb().csi_pb2_grpc."""
    global _PB
    if _PB is None:
        out = pathlib.Path(tempfile.mkdtemp(prefix="tern-csistubs-"))
        subprocess.run(["protoc", f"--proto_path={ROOT / 'proto'}", f"--python_out={out}", f"--grpc_out={out}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "csi/v1/csi.proto"],
                       check=True, timeout=60)
        sys.path.insert(0, str(out))

        class NS:
            pass

        ns = NS()
        ns.csi_pb2 = importlib.import_module("csi.v1.csi_pb2")
        ns.csi_pb2_grpc = importlib.import_module("csi.v1.csi_pb2_grpc")
        _PB = ns
    return _PB


def mount_cap(fs_type="", mode="SINGLE_NODE_WRITER", flags=()):
    c = pb().csi_pb2
    return c.VolumeCapability(mount=c.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
                              access_mode=c.VolumeCapability.AccessMode(mode=mode))


def block_cap(mode="SINGLE_NODE_WRITER"):
    c = pb().csi_pb2
    return c.VolumeCapability(block=c.VolumeCapability.BlockVolume(),
                              access_mode=c.VolumeCapability.AccessMode(mode=mode))


def code_of(fn, *args, **kw):
    """The gRPC status code a call ends with (grpc.StatusCode.OK when it succeeds) and its message."""
    try:
        fn(*args, **kw)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


class Plugin:
    """One tern-csi process. `args`: its flags after --mode/--csi-socket."""

    def __init__(self, binary, workdir, mode, args=(), name=None, env=None):
        self.binary = str(binary)
        self.workdir = pathlib.Path(workdir)
        self.mode = mode
        self.args = list(args)
        self.name = name or f"csi-{mode}"
        self.env = env or {}
        self.socket = f"/tmp/tern-{self.name}-{os.getpid()}.sock"
        self.proc = None
        self.runs = 0
        self.channel = None

    def start(self, timeout=30):
        assert self.proc is None
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}.{self.runs}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.binary, "--mode", self.mode, "--csi-socket", f"unix://{self.socket}",
                                      *self.args], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **self.env))
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            rc = self.proc.poll()
            self.kill()
            raise AssertionError(f"tern-csi did not serve within {timeout} s (exit {rc}):\n{self.log()[-3000:]}")
        c = pb().csi_pb2_grpc
        self.identity = c.IdentityStub(self.channel)
        self.controller = c.ControllerStub(self.channel)
        self.node = c.NodeStub(self.channel)
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _reap(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        if self.channel:
            self.channel.close()
            self.channel = None
        return rc

    def kill(self):
        """kill -9: a crash."""
        if self.proc is not None:
            self.proc.kill()
            self._reap(30)

    def stop(self, timeout=30):
        """SIGTERM; the exit status must be 0 and the log free of sanitizer reports."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        rc = self._reap(timeout)
        text = self.log()
        assert rc == 0, f"tern-csi exited {rc}:\n{text[-3000:]}"
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert marker not in text, f"tern-csi's log has a sanitizer report:\n{text[-6000:]}"
