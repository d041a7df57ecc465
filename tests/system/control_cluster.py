"""A local tern cluster for system tests: a real etcd, one or more tern-agent processes and N io-engines
registered with them, each engine with a file-backed pool directory of its own. The REST client validates
every response against the OpenAPI document in the repo (docs/api/rest-v1.openapi.json), so the server and
the document cannot drift apart without a test failing."""
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.error
import urllib.request

import jsonschema

from etcd import Etcd
from io_engine import SANITIZER_MARKERS, EngineFactory, free_ports, stubs

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "docs/api/rest-v1.openapi.json").read_text())



def engine(cl, name):
    """The cluster's engine called `name`."""
    return next(e for e in cl.engines if e.name == name)


def nexuses(e):
    """The UUIDs of the nexuses engine `e` holds (its own API)."""
    return [n.uuid for n in e.api.nexus.ListNexuses(stubs().nexus_pb2.ListNexusesRequest(), timeout=30).nexuses]


def child(e, vol, replica):
    """Replica `replica` as a child of volume `vol`'s nexus on engine `e` (None: no nexus or no such child)."""
    nx = e.api.nexus.ListNexuses(stubs().nexus_pb2.ListNexusesRequest(uuid=vol), timeout=30).nexuses
    return next((c for c in nx[0].children if c.uuid == replica), None) if nx else None


def rebuilt(e, vol, replica):
    """The child when it is online and in sync (its rebuild done), else a false value."""
    c = child(e, vol, replica)
    return c is not None and c.synced and c.state == stubs().nexus_pb2.CHILD_STATE_ONLINE and c

class AgentError(AssertionError):
    pass


def _inline_refs(node):
    """The schema with every #/components/schemas/X reference replaced by X itself (no resolver needed)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            return _inline_refs(OPENAPI["components"]["schemas"][ref.rsplit("/", 1)[1]])
        return {k: _inline_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v) for v in node]
    return node


def _template_matches(template, path):
    t = template.strip("/").split("/")
    p = path.strip("/").split("/")
    return len(t) == len(p) and all(a.startswith("{") or a == b for a, b in zip(t, p))


def response_schema(method, path, status):
    """The schema the document gives for this response (None for a bodyless one); raises when the document
    has no such operation or status."""
    for template, ops in OPENAPI["paths"].items():
        if _template_matches(template, path) and method.lower() in ops:
            responses = ops[method.lower()]["responses"]
            if str(status) not in responses:
                raise AssertionError(f"{method} {path} answered {status}, which the OpenAPI document does not list "
                                     f"(it lists {sorted(responses)})")
            content = responses[str(status)].get("content")
            if not content:
                return None, None
            (ctype, media), = content.items()
            return ctype, _inline_refs(media["schema"])
    if status in (404, 405):
        # A path or method the document does not have: still a problem document.
        return "application/problem+json", _inline_refs(OPENAPI["components"]["schemas"]["Problem"])
    raise AssertionError(f"{method} {path} answered {status} but is not in the OpenAPI document")


class Rest:
    """HTTP/JSON against an agent; every answer checked against the OpenAPI document."""

    def __init__(self, base, check=True, context=None):
        self.base = base
        self.check = check
        self.context = context  # an ssl.SSLContext for an https base

    def call(self, method, path, body=None, timeout=60, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as r:
                status, ctype, text = r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, text = e.code, e.headers.get("Content-Type", ""), e.read()
        doc = json.loads(text) if text and "json" in ctype else (text.decode() if text else None)
        if self.check and path.split("?")[0] != "/metrics":
            want_type, schema = response_schema(method, path.split("?")[0], status)
            if want_type is not None:
                assert ctype.startswith(want_type), f"{method} {path}: Content-Type {ctype}, the document says {want_type}"
                jsonschema.Draft202012Validator(schema).validate(doc)
            else:
                assert not text, f"{method} {path} -> {status} has a body the document does not give: {text[:200]}"
        return status, doc

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ok(self, method, path, body=None, want=(200, 201, 204), **kw):
        status, doc = self.call(method, path, body, **kw)
        assert status in want, f"{method} {path}: {status} {doc}"
        return doc


# The agent's timing for tests: short enough that failures are noticed and healed within seconds.
AGENT_FLAGS = {"--lease-ttl": "2", "--node-deadline-ms": "2000", "--heartbeat-ms": "300", "--poll-ms": "1000",
               "--reconcile-ms": "1000", "--child-params": "timeout_ms=2000&ctrl_loss_tmo_s=2&reconnect_delay_ms=100",
               "--faulted-child-wait-ms": "8000", "--orphan-grace-ms": "2000"}


class Agent:
    """One tern-agent process; ports chosen free at construction and kept across restarts. `etcd`: anything
    with an `endpoint` (an Etcd, or an EtcdCluster: every member); `address`: where engines register (its
    gRPC endpoint's host; the REST API stays on 127.0.0.1); `flags`: {flag: value} replacing those of
    AGENT_FLAGS (a value of None drops the flag)."""

    def __init__(self, build_dir, workdir, etcd, name="agent-a", extra_args=(), env=None, address="127.0.0.1",
                 flags=None):
        self.binary = str(pathlib.Path(build_dir) / "tools/tern-agent/tern-agent")
        self.workdir = pathlib.Path(workdir)
        self.etcd = etcd
        self.name = name
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.address = address
        self.flags = {**AGENT_FLAGS, **(flags or {})}
        self.rest_port, self.grpc_port = free_ports(2)
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.rest = Rest(f"http://127.0.0.1:{self.rest_port}")

    @property
    def grpc_endpoint(self):
        return f"{self.address}:{self.grpc_port}"

    def start(self, timeout=30, env=None):
        assert self.proc is None
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}.{self.runs}.log"
        self._log = open(self.log_path, "w")
        args = [self.binary, "--etcd", self.etcd.endpoint, "--name", self.name, "--rest-address", "127.0.0.1",
                "--rest-port", str(self.rest_port), "--grpc-endpoint", self.grpc_endpoint,
                *[x for k, v in self.flags.items() if v is not None for x in (k, v)],
                *self.extra_args]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env, **(env or {})})
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._cleanup()
                raise AgentError(f"tern-agent exited with {rc} during start-up:\n{self.log()[-4000:]}")
            try:
                self.rest.get("/v1/cluster", timeout=2)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise AgentError(f"tern-agent did not answer within {timeout} s:\n{self.log()[-4000:]}")
                time.sleep(0.02)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def leading(self):
        return self.rest.get("/v1/cluster")[1]["leading"]

    def wait_leading(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.leading():
            if time.monotonic() > deadline:
                raise AgentError(f"{self.name} did not lead within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.02)
        return self

    def wait_exit(self, timeout=30):
        """For an agent told to crash: waits for it to die, returns its exit code."""
        rc = self.proc.wait(timeout=timeout)
        self._cleanup()
        return rc

    def _cleanup(self):
        if self.proc is not None:
            self._log.close()
            self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._cleanup()
        self.check_log()

    def stop(self, timeout=30):
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AgentError(f"tern-agent did not stop within {timeout} s:\n{self.log()[-4000:]}")
        rc = proc.returncode
        self._cleanup()
        self.check_log()
        if rc != 0:
            raise AgentError(f"tern-agent exited with {rc}:\n{self.log()[-4000:]}")

    def check_log(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            at = text.find(m)
            if at >= 0:
                raise AgentError(f"sanitizer report in {self.log_path}:\n{text[max(0, at - 300):at + 6000]}")


class LocalCluster:
    """etcd + agents + engines (registered with every agent); `stop()` stops everything, checking logs.

    Optional: `etcd`, a started Etcd or EtcdCluster to use (stopped with the cluster) instead of a new
    single member; `address`, where the agents take registrations (their gRPC endpoint's host);
    `engine_kw`, {engine index: Engine keyword arguments} (e.g. `address`, `netns`); `agent_flags`, the
    agents' flags replacing their defaults (Agent's `flags`); `agent_env`, variables for the agents."""

    def __init__(self, build_dir, workdir, engines=3, agents=1, node_labels=None, etcd=None, address="127.0.0.1",
                 engine_kw=None, agent_flags=None, agent_env=None):
        self.build_dir = build_dir
        self.workdir = pathlib.Path(workdir)
        self.etcd = etcd if etcd is not None else Etcd(self.workdir).start()
        self.agents = []
        self.engines = []
        try:
            self.factory = EngineFactory(build_dir, self.workdir)
            for i in range(agents):
                self.agents.append(Agent(build_dir, self.workdir, self.etcd, name=f"agent-{'abc'[i]}",
                                         address=address, flags=agent_flags, env=agent_env).start())
            self.agents[0].wait_leading()
            for i in range(engines):
                labels = (node_labels or {}).get(i, {})
                self.add_engine(labels, **(engine_kw or {}).get(i, {}))
            self.wait_nodes_online([e.name for e in self.engines])
        except BaseException:
            self.stop(check=False)
            raise

    def add_engine(self, labels=None, **engine_kw):
        i = len(self.engines)
        args = ["--etcd", self.etcd.endpoint]
        for a in self.agents:
            args += ["--agent", a.grpc_endpoint]
        for k, v in (labels or {}).items():
            args += ["--node-label", f"{k}={v}"]
        args += engine_kw.pop("extra_args", [])
        e = self.factory(name=f"node{i}", extra_args=args, **engine_kw)
        (self.workdir / f"node{i}-disks").mkdir(exist_ok=True)
        self.engines.append(e)
        return e

    def disk(self, engine, name, size=256 << 20):
        path = self.workdir / f"{engine.name}-disks" / f"{name}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        return f"uring://{path}"

    @property
    def leader(self):
        for a in self.agents:
            if a.running():
                try:
                    if a.leading():
                        return a
                except OSError:
                    pass
        raise AgentError("no agent leads")

    @property
    def rest(self):
        return self.leader.rest

    def wait(self, what, cond, timeout=30, interval=0.05):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)

    def wait_nodes_online(self, names, timeout=30):
        def online():
            status, nodes = self.rest.get("/v1/nodes")
            if status != 200:
                return False
            up = {n["id"] for n in nodes if n["status"] == "online"}
            return set(names) <= up
        return self.wait(f"nodes {names} online", online, timeout)

    def node_status(self, name):
        return self.rest.ok("GET", f"/v1/nodes/{name}")["status"]

    def etcd_keys(self, prefix="/tern/v1/"):
        import base64
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self.etcd._post("/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                             "range_end": base64.b64encode(end.encode()).decode(), "keys_only": True})
        return sorted(base64.b64decode(kv["key"]).decode() for kv in r.get("kvs") or [])

    def engine_replicas(self, engine):
        """The replica UUIDs the engine holds (asked over its own API, not the agent's)."""
        from io_engine import stubs
        r = engine.api.replica.ListReplicas(stubs().replica_pb2.ListReplicasRequest(), timeout=30)
        return sorted(x.uuid for x in r.replicas)

    def stop(self, check=True):
        errors = []
        for a in self.agents:
            try:
                a.stop()
            except AssertionError as e:
                errors.append(str(e))
        try:
            if hasattr(self, "factory"):
                self.factory.stop_all()
        except AssertionError as e:
            errors.append(str(e))
        self.etcd.stop()
        if errors and check:
            raise AgentError("\n\n".join(errors))
