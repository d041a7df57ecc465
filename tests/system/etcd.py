"""A real etcd (Debian's etcd-server) for system tests: free ports, a data directory of its own, readiness
by a real request, stop (SIGTERM then SIGKILL), kill (SIGKILL), pause and resume (SIGSTOP / SIGCONT) for
fault tests, and reads through etcd's v3 JSON gateway (no client library). `EtcdCluster` runs several
members as one cluster (`--initial-cluster`), each member an `Etcd`."""
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


class KvReads:
    """Reads through the v3 JSON gateway, for anything with `_post(path, body)` (a member, a cluster)."""

    def get(self, key):
        """The value of `key` (str), or None."""
        r = self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = r.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs and "value" in kvs[0] else None

    def get_json(self, key):
        v = self.get(key)
        return None if v is None else json.loads(v)


class Etcd(KvReads):
    """One etcd member. `host`: the address it listens on (client and peer); `initial_cluster`: the
    --initial-cluster of a member of a larger cluster (default: a cluster of this member alone)."""

    def __init__(self, workdir, name="etcd", host="127.0.0.1", initial_cluster=None, cluster_token=None):
        self.workdir = pathlib.Path(workdir)
        self.name = name
        self.host = host
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token
        self.client_port, self.peer_port = free_ports(2)
        self.data_dir = self.workdir / f"{name}.data"
        self.log_path = self.workdir / f"{name}.log"
        self.proc = None

    @property
    def endpoint(self):
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://{self.host}:{self.peer_port}"

    def start(self, timeout=30, wait=True):
        """Starts the member; unless `wait` is false, waits until it answers a read (which needs a quorum:
        the members of a new cluster are started with wait=False, then each is waited for)."""
        assert self.proc is None
        self._log = open(self.log_path, "a")
        args = [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}", "--log-level", "warn"]
        if self.cluster_token:
            args += ["--initial-cluster-token", self.cluster_token]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise EtcdError(f"etcd {self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                self._post("/v3/kv/range", {"key": _b64("health")}, timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise EtcdError(f"etcd {self.name} did not answer within {timeout} s:\n{self.log()[-3000:]}")
                time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: a member that crashed (its data directory stays, start() brings it back)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    def status(self, timeout=5):
        """/v3/maintenance/status of this member: its id (header.member_id), the leader's id, raft term..."""
        return self._post("/v3/maintenance/status", {}, timeout=timeout)

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



class EtcdCluster(KvReads):
    """`size` etcd members forming one cluster, all listening on `host` (ports of their own). `endpoint` is
    every member's, comma-separated (what the agents' and engines' --etcd take); reads go to any member
    that answers."""

    def __init__(self, workdir, size=3, host="127.0.0.1", name="etcd"):
        self.workdir = pathlib.Path(workdir)
        token = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [Etcd(workdir, f"{name}{i}", host=host, cluster_token=token) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoint(self):
        return ",".join(m.endpoint for m in self.members)

    def start(self, timeout=60):
        try:
            for m in self.members:
                m.start(wait=False)
            for m in self.members:
                m.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for m in self.members:
            m.stop()

    def running(self):
        return [m for m in self.members if m.running()]

    def leader(self, timeout=30):
        """The member that leads (asked of the running members: each names the leader's id), waiting for an
        election to end."""
        deadline = time.monotonic() + timeout
        while True:
            ids = {}
            named = set()
            for m in self.running():
                try:
                    st = m.status(timeout=2)
                except (OSError, urllib.error.URLError):
                    continue
                ids[st["header"]["member_id"]] = m
                if st.get("leader") and st["leader"] != "0":
                    named.add(st["leader"])
            if len(named) == 1 and next(iter(named)) in ids:
                return ids[next(iter(named))]
            if time.monotonic() > deadline:
                raise EtcdError(f"no etcd member leads within {timeout} s (leaders named: {named})")
            time.sleep(0.05)

    def _post(self, path, body, timeout=10):
        errors = []
        for m in self.running():
            try:
                return m._post(path, body, timeout=timeout)
            except (OSError, urllib.error.URLError) as e:
                errors.append(f"{m.name}: {e}")
        raise EtcdError(f"no etcd member answered {path}: {errors}")



def _b64(s):
    return base64.b64encode(s.encode()).decode()
