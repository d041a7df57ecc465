"""tern's container images (deploy/images/build.py: Debian packages on a debootstrapped base, no registry
image), built from the release build and started with podman:

- each image holds what the chart runs (its binaries answer --help, the node plugin's tools are on PATH,
  the agent and etcd run as 65532, tags are pinned);
- a local deployment — etcd, the agent (read-only root file system, uid 65532), two engines and the CSI
  controller, each in its own container on the host network — makes a two-replica volume through REST,
  publishes it over NVMe/TCP, and a verify job (ioperf, this machine's) writes and reads it back; the CSI
  controller in its container makes a volume through its socket; every container stops with status 0.

podman runs with runc and with the open-file and process limits this session already has (a container
that asks for more fails where CAP_SYS_RESOURCE is withheld, as in some CI sandboxes)."""
import json
import os
import pathlib
import resource
import shutil
import subprocess
import time
import urllib.request
import uuid

import grpc
import pytest

from conftest import usable_cores
from csi_driver import mount_cap, pb
from io_engine import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[2]
MiB = 1 << 20
TAG = "0.1.0-test"


def podman(*args, timeout=300, ok=True):
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if ok and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return r


def run_flags():
    """What every container here runs with: runc, host network, limits no higher than this session's."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 32768)
    return ["--network", "host", "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


RUNTIME = ["--runtime", "runc"]


@pytest.fixture(scope="module")
def images(release_dir):
    for tool in ("podman", "buildah", "debootstrap", "runc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed: run scripts/install-deps.sh")
    r = subprocess.run([str(ROOT / "deploy/images/build.py"), "--build-dir", str(release_dir), "--tag", TAG],
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, f"deploy/images/build.py failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    print(r.stdout)
    return {n: f"localhost/tern/{n}:{TAG}" for n in ("io-engine", "agent", "csi", "etcd")}


def test_images_hold_what_the_chart_runs(images):
    for name, progs in {"io-engine": ["io-engine", "ternctl"], "agent": ["tern-agent", "ternctl"],
                        "csi": ["tern-csi", "tern-ha-node"], "etcd": ["etcd"]}.items():
        for prog in progs:
            r = podman(*RUNTIME, "run", "--rm", *run_flags(), "--entrypoint", prog, images[name], "--help", ok=False)
            assert r.returncode == 0 and "--" in (r.stdout + r.stderr), f"{name}: {prog} --help: {r.stderr[-1500:]}"
    # The node plugin's tools, on PATH.
    tools = "nvme blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs mount umount"
    r = podman(*RUNTIME, "run", "--rm", *run_flags(), "--entrypoint", "sh", images["csi"], "-c",
               f"for t in {tools}; do command -v $t >/dev/null || echo missing $t; done")
    assert "missing" not in r.stdout, r.stdout
    for name, image in images.items():
        info = json.loads(podman("image", "inspect", image).stdout)[0]
        user = info["Config"].get("User", "")
        assert user == ("65532:65532" if name in ("agent", "etcd") else "0:0"), (name, user)
        assert info["Config"]["Labels"]["org.opencontainers.image.version"] == TAG
        assert info["Size"] < 300e6, f"{name} is {info['Size'] / 1e6:.0f} MB"
        assert info["Config"]["Entrypoint"][0].startswith("/usr/local/bin/")
    r = subprocess.run([str(ROOT / "deploy/images/build.py"), "--tag", "latest"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "latest" in r.stderr


class Deployment:
    def __init__(self, images, wd):
        self.images, self.wd = images, wd
        self.names = []
        self.tag = f"tern-t{os.getpid()}"

    def start(self, role, image, args, extra=()):
        name = f"{self.tag}-{role}"
        podman(*RUNTIME, "run", "-d", "--name", name, *run_flags(), *extra, image, *args)
        self.names.append(name)
        return name

    def logs(self, name):
        r = podman("logs", name, ok=False)
        return (r.stdout + r.stderr)[-4000:]

    def running(self, name):
        return podman("inspect", name, "--format", "{{.State.Running}}", ok=False).stdout.strip() == "true"

    def stop_all(self):
        """SIGTERM to each (agents and engines exit 0 on it); returns {name: exit status}."""
        codes = {}
        for name in reversed(self.names):
            podman("stop", "-t", "30", name, ok=False, timeout=120)
            codes[name] = podman("inspect", name, "--format", "{{.State.ExitCode}}", ok=False).stdout.strip()
        return codes

    def remove_all(self):
        for name in self.names:
            podman("rm", "-f", name, ok=False, timeout=120)


def rest(port, method, path, body=None, timeout=60):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def wait(what, cond, timeout=60, logs=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
            if v:
                return v
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.2)


def test_local_deployment(images, release_dir, tmp_path):
    wd = tmp_path / "data"
    wd.mkdir()
    os.chmod(wd, 0o777)
    (wd / "etcd").mkdir()
    os.chown(wd / "etcd", 65532, 65532)
    csi_dir = tmp_path / "csi"
    csi_dir.mkdir()
    os.chmod(csi_dir, 0o777)
    d = Deployment(images, wd)
    etcd_port, peer_port, rest_port, reg_port = free_ports(4)
    try:
        d.start("etcd", images["etcd"], ["--name", "e0", "--data-dir", "/data/etcd",
                                         "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                                         "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                                         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                                         "--initial-cluster", f"e0=http://127.0.0.1:{peer_port}"],
                extra=["-v", f"{wd}:/data"])
        agent = d.start("agent", images["agent"], ["--etcd", f"127.0.0.1:{etcd_port}", "--name", "agent-a",
                                                   "--rest-address", "127.0.0.1", "--rest-port", str(rest_port),
                                                   "--grpc-endpoint", f"127.0.0.1:{reg_port}", "--lease-ttl", "2",
                                                   "--node-deadline-ms", "2000", "--poll-ms", "1000",
                                                   "--reconcile-ms", "1000"],
                        # As the chart runs it: seccomp unconfined (io_uring), read-only root, uid 65532.
                        extra=["--read-only", "--security-opt", "seccomp=unconfined"])
        wait("the agent to lead", lambda: rest(rest_port, "GET", "/v1/cluster", timeout=5)[1]["leading"],
             logs=lambda: d.logs(agent))
        engines = {}
        cores = usable_cores(2).split(",")
        for i in range(2):
            g, n, b, m = free_ports(4)
            node = f"node{i}"
            with open(wd / f"{node}.img", "wb") as f:
                f.truncate(256 * MiB)
            engines[node] = d.start(node, images["io-engine"], [
                "--node-name", node, "--grpc-endpoint", f"127.0.0.1:{g}", "--nvmf-address", "127.0.0.1",
                "--nvmf-port", str(n), "--nbd-port", str(b), "--metrics-address", "127.0.0.1", "--metrics-port", str(m),
                "--cores", cores[i % len(cores)], "--state-dir", f"/data/{node}-state",
                "--agent", f"127.0.0.1:{reg_port}", "--etcd", f"127.0.0.1:{etcd_port}"],
                extra=["--privileged", "-v", f"{wd}:/data"])

        def online():
            status, nodes = rest(rest_port, "GET", "/v1/nodes", timeout=5)
            return status == 200 and {x["id"] for x in nodes if x["status"] == "online"} >= set(engines)
        wait("both engines online", online, logs=lambda: "\n".join(d.logs(x) for x in engines.values()))
        for node in engines:
            status, body = rest(rest_port, "PUT", f"/v1/pools/p-{node}", {"node": node, "disk": f"uring:///data/{node}.img"})
            assert status in (200, 201), body
        vol = str(uuid.uuid4())
        status, body = rest(rest_port, "PUT", f"/v1/volumes/{vol}", {"size": 64 * MiB, "replicas": 2})
        assert status in (200, 201), body
        assert sorted(r["node"] for r in body["replica_details"]) == ["node0", "node1"]
        status, body = rest(rest_port, "PUT", f"/v1/volumes/{vol}/target", {"protocol": "nvmf"})
        assert status in (200, 201), body
        uri = body["target"]["uri"]
        assert uri.startswith("nvmf://127.0.0.1:"), uri
        r = subprocess.run([str(release_dir / "tools/ioperf/ioperf"), "--uri", uri, "--rw", "randwrite", "--bs", "4k",
                            "--qd", "8", "--ios", "4000", "--time", "0", "--verify", "--cores", usable_cores(1)],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"verify job: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        # The CSI controller in its image (uid 65532, read-only root), its socket on a shared directory.
        csi = d.start("csi", images["csi"], ["--mode", "controller", "--csi-socket", "unix:///csi/csi.sock",
                                             "--agent-url", f"http://127.0.0.1:{rest_port}"],
                      extra=["--user", "65532:65532", "--read-only", "-v", f"{csi_dir}:/csi"])
        chan = grpc.insecure_channel(f"unix://{csi_dir}/csi.sock")
        try:
            grpc.channel_ready_future(chan).result(timeout=60)
        except grpc.FutureTimeoutError:
            raise AssertionError(f"the CSI controller did not serve:\n{d.logs(csi)}")
        c = pb().csi_pb2
        ctrl = pb().csi_pb2_grpc.ControllerStub(chan)
        v = ctrl.CreateVolume(c.CreateVolumeRequest(name="pvc-in-a-container", capacity_range=c.CapacityRange(
            required_bytes=16 * MiB), volume_capabilities=[mount_cap()], parameters={"replicas": "2"}), timeout=120).volume
        assert rest(rest_port, "GET", f"/v1/volumes/{v.volume_id}")[0] == 200
        ctrl.DeleteVolume(c.DeleteVolumeRequest(volume_id=v.volume_id), timeout=120)
        chan.close()
        assert rest(rest_port, "DELETE", f"/v1/volumes/{vol}/target")[0] in (200, 204)
        assert rest(rest_port, "DELETE", f"/v1/volumes/{vol}")[0] in (200, 204)
        for name in d.names:
            assert d.running(name), f"{name} is not running:\n{d.logs(name)}"
        codes = d.stop_all()
        bad = {n: code for n, code in codes.items() if code != "0"}
        assert not bad, "\n\n".join(f"{n} exited {code}:\n{d.logs(n)}" for n, code in bad.items())
    finally:
        d.remove_all()
