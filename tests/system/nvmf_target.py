"""Runs tools/nvmf_tgt for system tests: writes its configuration, starts it, waits for its ready line,
talks to its control socket, and stops it — always with a timeout, and checking that it exited cleanly
(exit status 0, and nothing from the sanitizers in its log)."""
import json
import os
import pathlib
import selectors
import signal
import socket
import subprocess
import time

from nvme_tcp import wait_until

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ThreadSanitizer",
                     "AddressSanitizer:DEADLYSIGNAL")


class TargetError(AssertionError):
    pass


class Target:
    """One nvmf_tgt process. `config` is the YAML configuration as a dict (written as JSON, which is YAML)."""

    def __init__(self, binary, workdir, config, cores="0", name="tgt"):
        self.binary = str(binary)
        self.workdir = pathlib.Path(workdir)
        self.config = config
        self.cores = cores
        self.name = name
        self.proc = None
        self.listeners = []
        self.ports = []
        self.pid = None
        self._ctl = None
        self._ctl_buf = b""
        self.runs = 0
        self.log_path = None
        self.ready = {}

    # --- life cycle ---
    def start(self, timeout=30):
        assert self.proc is None, "already running"
        self.runs += 1
        cfg_path = self.workdir / f"{self.name}.{self.runs}.yaml"
        cfg_path.write_text(json.dumps(self.config, indent=1))
        self.ctl_path = self.workdir / f"{self.name}.ctl"
        self.log_path = self.workdir / f"{self.name}.{self.runs}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.binary, "-c", str(cfg_path), "--control", str(self.ctl_path),
                                      "--cores", self.cores], stdout=subprocess.PIPE, stderr=self._log)
        line = self._read_line(self.proc.stdout, timeout)
        if line is None:
            rc = self.proc.poll()
            self._kill()
            raise TargetError(f"nvmf_tgt was not ready within {timeout} s (rc={rc}):\n{self.log()[-4000:]}")
        ready = json.loads(line)
        assert ready.get("ready") is True, ready
        self.ready = ready  # the whole line: listeners, pid, and the NBD server's addresses when it has one
        self.listeners = ready["listeners"]
        self.ports = [int(l.rsplit(":", 1)[1]) for l in self.listeners]
        self.pid = ready["pid"]
        return self

    @property
    def port(self):
        return self.ports[0]

    @staticmethod
    def _read_line(f, timeout):
        sel = selectors.DefaultSelector()
        sel.register(f, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(f.fileno(), 4096)
                if not chunk:
                    return None
                buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode()

    def log(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_ctl(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
            self._ctl_buf = b""

    def _kill(self):
        self._close_ctl()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self._log.close()
        self.proc = None

    def kill(self):
        """SIGKILL: the target vanishes without closing anything (a crashed node)."""
        self._kill()
        self.check_log()

    def stop(self, timeout=40):
        """SIGTERM, then SIGKILL after `timeout`; raises unless it exited with 0 and a clean log."""
        self._close_ctl()
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise TargetError(f"nvmf_tgt did not stop within {timeout} s of SIGTERM:\n{self.log()[-4000:]}")
        rc = proc.returncode
        self._kill()
        self.check_log()
        if rc != 0:
            raise TargetError(f"nvmf_tgt exited with {rc}:\n{self.log()[-4000:]}")

    def check_log(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            at = text.find(m)
            if at >= 0:
                raise TargetError(f"sanitizer report in the nvmf_tgt log {self.log_path}:\n{text[max(0, at - 300):at + 6000]}")

    # --- control socket ---
    def control(self, op, timeout=30, **fields):
        if self._ctl is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(str(self.ctl_path))
            self._ctl = s
        self._ctl.settimeout(timeout)
        self._ctl.sendall((json.dumps({"op": op, **fields}) + "\n").encode())
        while b"\n" not in self._ctl_buf:
            chunk = self._ctl.recv(65536)
            if not chunk:
                raise TargetError("control socket closed")
            self._ctl_buf += chunk
        line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
        return json.loads(line)

    def ctl(self, op, **fields):
        """control() that must succeed."""
        r = self.control(op, **fields)
        assert r.get("ok"), f"{op} {fields}: {r}"
        return r

    def subsystem(self, nqn):
        for s in self.ctl("list")["subsystems"]:
            if s["nqn"] == nqn:
                return s
        raise KeyError(nqn)

    def controllers(self, nqn):
        return self.subsystem(nqn).get("controllers") or []

    def wait_for(self, what, cond, timeout=20, interval=0.05):
        """Polls `cond()` until it is true; fails after `timeout` seconds."""
        return wait_until(what, cond, timeout, interval)


def subsystem(nqn, namespaces=(), listeners=("@0",), allow_any_host=True, **kw):
    """A subsystem entry for the configuration."""
    s = {"nqn": nqn, "allow_any_host": allow_any_host, "listeners": list(listeners),
         "namespaces": [n if isinstance(n, dict) else {"device": n} for n in namespaces]}
    s.update(kw)
    return s


def config(devices, subsystems, listeners=("127.0.0.1:0",), log_level="info", options=None):
    c = {"log_level": log_level, "devices": list(devices), "listeners": list(listeners),
         "subsystems": list(subsystems)}
    if options:
        c["options"] = options
    return c
