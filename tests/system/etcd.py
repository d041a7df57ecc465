"""A real etcd (Debian's etcd-server) for system tests: free ports, a data directory of its own, readiness
by a real request, stop (SIGTERM then SIGKILL), pause and resume (SIGSTOP / SIGCONT) for fault tests, and
reads through etcd's v3 JSON gateway (no client library)."""
import base64
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

from io_engine import free_ports

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdError(AssertionError):
    pass


class Etcd:
    def __init__(self, workdir, name="etcd"):
        self.workdir = pathlib.Path(workdir)
        self.name = name
        self.client_port, self.peer_port = free_ports(2)
        self.data_dir = self.workdir / f"{name}.data"
        self.log_path = self.workdir / f"{name}.log"
        self.proc = None

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    def start(self, timeout=30):
        assert self.proc is None
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
             "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-cluster", f"{self.name}=http://127.0.0.1:{self.peer_port}", "--log-level", "warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise EtcdError(f"etcd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                self._post("/v3/kv/range", {"key": _b64("health")}, timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise EtcdError(f"etcd did not answer within {timeout} s:\n{self.log()[-3000:]}")
                time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout=20):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    def pause(self):
        """SIGSTOP: etcd keeps its sockets but answers nothing (a hung store)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the stop takes effect asynchronously, thread by thread
            states = [pathlib.Path(f"/proc/{self.proc.pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                      for t in os.listdir(f"/proc/{self.proc.pid}/task")]
            if all(s == "T" for s in states):
                return
            time.sleep(0.01)
        raise EtcdError("etcd did not stop after SIGSTOP")

    def resume(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def _post(self, path, body, timeout=10):
        req = urllib.request.Request(f"http://{self.endpoint}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def get(self, key):
        """The value of `key` (str), or None."""
        r = self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = r.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs and "value" in kvs[0] else None

    def get_json(self, key):
        v = self.get(key)
        return None if v is None else json.loads(v)


def _b64(s):
    return base64.b64encode(s.encode()).decode()
