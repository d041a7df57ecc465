#!/usr/bin/env python3
"""A local tern cluster on one machine: etcd, the core agent and N io-engines, each engine with its own
state directory and a file-backed pool, all on 127.0.0.1 with free ports. Processes run in the background
and survive this command; their pids, ports and paths are kept in <dir>/cluster.json so `status`, `kill`,
`start` and `down` find them again.

  scripts/cluster.py up [--engines 3] [--dir /var/tmp/tern-cluster] [--build build/release] [--pool-size 1GiB]
  scripts/cluster.py status [--dir ...]
  scripts/cluster.py kill node1 [--dir ...]     # SIGKILL one engine (a crashed node)
  scripts/cluster.py start node1 [--dir ...]    # start it again (same ports, same state)
  scripts/cluster.py down [--dir ...] [--keep]  # SIGTERM everything, wait, remove the directory

`up` prints the variables that point ternctl at the cluster (TERN_AGENT). Also a library: scripts/demo.py
drives a cluster through the `Cluster` class."""
import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parse_size(s):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = s.strip().lower().replace("ib", "").replace("b", "")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


class ClusterError(RuntimeError):
    pass


class Cluster:
    """The cluster in `dir`. `up()` starts it; every other method works on a cluster started earlier (by
    this process or another), through cluster.json."""

    def __init__(self, dir, build=None):
        self.dir = pathlib.Path(dir)
        self.state_path = self.dir / "cluster.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else None
        self.build = pathlib.Path(build or (self.state or {}).get("build") or ROOT / "build/release")

    # --- processes ---
    def _bin(self, rel):
        p = self.build / rel
        if not p.exists():
            raise ClusterError(f"{p} is not built (scripts/build.sh release)")
        return str(p)

    def _spawn(self, name, args):
        log = open(self.dir / f"{name}.log", "a")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return p.pid

    def _save(self):
        self.state_path.write_text(json.dumps(self.state, indent=1))

    @staticmethod
    def alive(pid):
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie child of this process counts as gone.
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def _wait(self, what, cond, timeout=30, pid=None, log=None):
        deadline = time.monotonic() + timeout
        while True:
            if cond():
                return
            if pid and not self.alive(pid):
                tail = (self.dir / log).read_text(errors="replace")[-2000:] if log else ""
                raise ClusterError(f"{what}: the process exited\n{tail}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what}: not within {timeout} s")
            time.sleep(0.05)

    # --- REST ---
    @property
    def agent_url(self):
        return f"http://127.0.0.1:{self.state['agent']['rest_port']}"

    def rest(self, method, path, body=None, timeout=120):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.agent_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None)

    def ok(self, method, path, body=None, timeout=120):
        status, doc = self.rest(method, path, body, timeout)
        if status >= 300:
            raise ClusterError(f"{method} {path}: {status} {doc.get('detail') if isinstance(doc, dict) else doc}")
        return doc

    # --- life ---
    def up(self, engines=3, pool_size=1 << 30, standby=False, agent_args=()):
        if self.state is not None:
            raise ClusterError(f"a cluster is already recorded in {self.state_path} (scripts/cluster.py down first)")
        self.dir.mkdir(parents=True, exist_ok=True)
        etcd_bin = shutil.which("etcd") or "/usr/bin/etcd"
        c, p, rest, reg = free_ports(4)
        self.state = {"build": str(self.build), "etcd": {"client": c, "peer": p}, "agent": {"rest_port": rest, "grpc_port": reg},
                      "engines": [], "agent_args": list(agent_args)}
        if standby:
            self.add_standby()
        for i in range(engines):
            g, n, nbd, m = free_ports(4)
            self.state["engines"].append({"name": f"node{i}", "grpc": g, "nvmf": n, "nbd": nbd, "metrics": m,
                                          "disk": str(self.dir / f"node{i}-pool.img"), "pid": 0})
        self._save()
        try:
            self.state["etcd"]["pid"] = self._spawn("etcd", [
                etcd_bin, "--name", "etcd", "--data-dir", str(self.dir / "etcd.data"),
                "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
                "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-cluster", f"etcd=http://127.0.0.1:{p}", "--log-level", "warn"])
            self._save()
            self._wait("etcd", lambda: self._port_open(c), pid=self.state["etcd"]["pid"], log="etcd.log")
            self.start_agent()
            if standby:
                self.start_agent("standby")
            for e in self.state["engines"]:
                with open(e["disk"], "wb") as f:
                    f.truncate(pool_size)
                self.start(e["name"])
            self._wait("every engine registered", lambda: self._online() == {e["name"] for e in self.state["engines"]}, 60)
            for e in self.state["engines"]:
                self.ok("PUT", f"/v1/pools/p-{e['name']}", {"node": e["name"], "disk": f"uring://{e['disk']}"})
        except BaseException:
            self.down()
            raise
        return self

    def _port_open(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def _online(self):
        try:
            status, nodes = self.rest("GET", "/v1/nodes", timeout=5)
        except OSError:
            return set()
        return {n["id"] for n in nodes if n["status"] == "online"} if status == 200 else set()

    def start_agent(self, which="agent", extra=(), lead=None):
        """Starts the agent (or, with which="standby", a second one: `add_standby` first); waits until it
        leads (`lead`, default: for the agent) or answers."""
        a = self.state[which]
        settings = {"--node-deadline-ms": "3000", "--heartbeat-ms": "500", "--poll-ms": "2000", "--reconcile-ms": "1000",
                    "--faulted-child-wait-ms": "60000",
                    "--child-params": "timeout_ms=3000&ctrl_loss_tmo_s=3&reconnect_delay_ms=200"}
        more = [*self.state.get("agent_args", []), *extra]
        settings.update(zip(more[::2], more[1::2]))  # flag value pairs override the defaults
        a["pid"] = self._spawn(which, [
            self._bin("tools/tern-agent/tern-agent"), "--etcd", f"127.0.0.1:{self.state['etcd']['client']}", "--name", which,
            "--rest-address", "127.0.0.1", "--rest-port", str(a["rest_port"]), "--grpc-endpoint", f"127.0.0.1:{a['grpc_port']}",
            *[x for kv in settings.items() for x in kv]])
        self._save()
        if not (lead if lead is not None else which == "agent"):
            self._wait(f"the {which} answers", lambda: self._port_open(a["rest_port"]), pid=a["pid"], log=f"{which}.log")
            return

        def leads():
            try:
                return self.rest("GET", "/v1/cluster", timeout=2)[1].get("leading")
            except (OSError, AttributeError):
                return False
        self._wait("the agent leads", leads, pid=a["pid"], log="agent.log")

    def add_standby(self):
        """A second agent's ports (engines started after this register with both)."""
        rest, reg = free_ports(2)
        self.state["standby"] = {"rest_port": rest, "grpc_port": reg, "pid": 0}
        self._save()

    def engine(self, name):
        for e in self.state["engines"]:
            if e["name"] == name:
                return e
        raise ClusterError(f"no engine '{name}' (engines: {', '.join(e['name'] for e in self.state['engines'])})")

    def start(self, name):
        e = self.engine(name)
        if self.alive(e["pid"]):
            raise ClusterError(f"{name} is running (pid {e['pid']})")
        e["pid"] = self._spawn(name, [
            self._bin("tools/io-engine/io-engine"), "--node-name", name, "--grpc-endpoint", f"127.0.0.1:{e['grpc']}",
            "--nvmf-address", "127.0.0.1", "--nvmf-port", str(e["nvmf"]), "--nbd-port", str(e["nbd"]),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(e["metrics"]), "--state-dir", str(self.dir / f"{name}-state"),
            "--etcd", f"127.0.0.1:{self.state['etcd']['client']}", "--agent", f"127.0.0.1:{self.state['agent']['grpc_port']}",
            *(["--agent", f"127.0.0.1:{self.state['standby']['grpc_port']}"] if "standby" in self.state else []),
            "--cores", str(min(os.sched_getaffinity(0)))])
        self._save()
        self._wait(f"{name} listening", lambda: self._port_open(e["grpc"]), pid=e["pid"], log=f"{name}.log")

    def kill(self, name):
        e = self.engine(name)
        if self.alive(e["pid"]):
            os.kill(e["pid"], signal.SIGKILL)
            self._wait(f"{name} gone", lambda: not self.alive(e["pid"]), 30)
        e["pid"] = 0
        self._save()

    def kill_process(self, which):
        """SIGKILL the agent or the standby."""
        pid = self.state[which].get("pid")
        if self.alive(pid):
            os.kill(pid, signal.SIGKILL)
            self._wait(f"{which} gone", lambda: not self.alive(pid), 30)
        self.state[which]["pid"] = 0
        self._save()

    def stop_process(self, which):
        """SIGTERM the agent or the standby (a leader resigns)."""
        self._term(self.state[which].get("pid"))
        self.state[which]["pid"] = 0
        self._save()

    def _term(self, pid, timeout=60):
        if not self.alive(pid):
            return True
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return False
            time.sleep(0.05)
        return True

    def down(self, keep=False):
        if self.state is None:
            return []
        unclean = []
        for e in self.state["engines"]:
            if not self._term(e.get("pid")):
                unclean.append(e["name"])
        for name in ("agent", "standby", "etcd"):
            if not self._term(self.state.get(name, {}).get("pid")):
                unclean.append(name)
        self.state = None
        if keep:
            self.state_path.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return unclean


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "status", "kill", "start", "down"])
    ap.add_argument("node", nargs="?", help="kill/start: the engine (node0, node1, ...)")
    ap.add_argument("--dir", default=os.environ.get("TERN_CLUSTER_DIR", "/var/tmp/tern-cluster"))
    ap.add_argument("--build", default=None, help="build directory with the binaries (default: build/release)")
    ap.add_argument("--engines", type=int, default=3)
    ap.add_argument("--pool-size", default="1GiB")
    ap.add_argument("--keep", action="store_true", help="down: keep the directory (logs, disks)")
    a = ap.parse_args()
    c = Cluster(a.dir, a.build)
    try:
        if a.command == "up":
            c.up(a.engines, parse_size(a.pool_size))
            print(f"cluster up in {a.dir}: etcd 127.0.0.1:{c.state['etcd']['client']}, agent {c.agent_url}, "
                  f"{a.engines} engines with a {a.pool_size} pool each")
            print(f"export TERN_AGENT={c.agent_url}")
            return 0
        if c.state is None:
            raise ClusterError(f"no cluster in {a.dir} (scripts/cluster.py up)")
        if a.command in ("kill", "start"):
            if not a.node:
                raise ClusterError(f"{a.command}: which engine?")
            getattr(c, a.command)(a.node)
            return 0
        if a.command == "status":
            procs = [("etcd", c.state["etcd"].get("pid")), ("agent", c.state["agent"].get("pid"))]
            procs += [(e["name"], e["pid"]) for e in c.state["engines"]]
            for name, pid in procs:
                print(f"{name:8} {'running' if c.alive(pid) else 'stopped'}{f' (pid {pid})' if c.alive(pid) else ''}")
            subprocess.run([str(c.build / "tools/ternctl/ternctl"), "--agent", c.agent_url, "get", "nodes"], timeout=60)
            return 0
        unclean = c.down(a.keep)
        print("cluster down" + (f" (killed after no clean stop: {', '.join(unclean)})" if unclean else ""))
        return 1 if unclean else 0
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
