"""The Kubernetes deployment: the Helm chart (deploy/helm/tern) rendered offline and checked.

There is no Kubernetes and no helm here. deploy/tools/chart-render renders the chart as `helm template`
does (Go's text/template with sprig, from Debian's packages); deploy/tools/validate checks every
rendered object against the Kubernetes API's schemas (kubernetes-models, installed by
scripts/install-deps.sh) and the DiskPool CRD's own schema. On top, this module checks our rules: every
container has resources, probes where it serves, a pinned image and a securityContext; DaemonSets are
placed as documented; replicated workloads have disruption budgets; labels and selectors agree; every
flag given to our binaries exists in their --help; $(VAR) references resolve; StorageClass parameters
are documented; the committed deploy/manifests/tern.yaml is the default rendering. Each rule is also
run on a deliberately broken copy of the objects, to show it can fail.
"""
import copy
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

CHART = ROOT / "deploy/helm/tern"
MANIFEST = ROOT / "deploy/manifests/tern.yaml"
VALIDATE_DIR = ROOT / "deploy/tools/validate"
EXAMPLES = sorted((ROOT / "deploy/examples").glob("*.yaml"))
DOCS = ROOT / "docs/kubernetes.md"
NS = "tern"

GO_ENV = {"GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOFLAGS": "",
          "GOCACHE": os.environ.get("GOCACHE", str(ROOT / "build/go-cache"))}

# The flags the planned binaries take (the contract the CSI driver and HA node agent are built to;
# docs/kubernetes.md, "For the CSI driver").
CSI_FLAGS = {"mode", "csi-socket", "node-name", "agent-url", "agent-ca"}
HA_NODE_FLAGS = {"node-name", "agent-url", "agent-ca"}
# Containers that may run privileged, and why (values.yaml says more).
PRIVILEGED = {("DaemonSet", "io-engine", "io-engine"): "host block devices",
              ("DaemonSet", "csi-node", "tern-csi"): "nvme connect, mkfs, Bidirectional mounts",
              ("DaemonSet", "ha-node", "ha-node"): "nvme connect of new paths"}
COMMON_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                 "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart"]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass", "CSIDriver",
                  "CustomResourceDefinition", "VolumeSnapshotClass", "PersistentVolume"}


def run(cmd, timeout, env=None, cwd=ROOT, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    if not shutil.which("go"):
        pytest.fail("go is not installed: run scripts/install-deps.sh (golang-go and the Go packages)")
    out = tmp_path_factory.mktemp("chart-render") / "chart-render"
    run(["go", "build", "-o", str(out), "./deploy/tools/chart-render"], timeout=300, env=GO_ENV)
    return out


@pytest.fixture(scope="module")
def validator():
    if not (VALIDATE_DIR / "node_modules/kubernetes-models").is_dir() or not shutil.which("node"):
        pytest.fail("the manifest validator's packages are not installed: run scripts/install-deps.sh "
                    "(npm ci in deploy/tools/validate)")

    def validate(*files, crd=None):
        cmd = ["node", str(VALIDATE_DIR / "validate.js")] + (["--crd", str(crd)] if crd else []) + [str(f) for f in files]
        p = run(cmd, timeout=120, check=False)
        try:
            report = json.loads(p.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"validate.js: exit {p.returncode}, no report:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        assert (p.returncode == 0) == (not report["errors"]), p.stderr
        return report
    return validate


class Rendering:
    def __init__(self, text, release, namespace):
        self.text = text
        self.release = release
        self.namespace = namespace
        self.docs = []  # (source, object)
        source = None
        for part in re.split(r"(?m)^---\n", text):
            m = re.match(r"# Source: (\S+)", part)
            if m:
                source = m.group(1)
            obj = yaml.safe_load(part)
            if obj is not None:
                self.docs.append((source, obj))

    def objects(self, kind=None):
        return [o for _, o in self.docs if kind is None or o["kind"] == kind]

    def one(self, kind, component):
        found = [o for o in self.objects(kind) if o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
        assert len(found) == 1, f"{len(found)} {kind} objects of component {component}"
        return found[0]


def render(renderer, tmp_path, *args, release="tern", namespace=NS, name="out"):
    out = tmp_path / f"{name}.yaml"
    run([str(renderer), "--strict", "-n", namespace, "-o", str(out), *args, release, str(CHART)], timeout=60)
    return Rendering(out.read_text(), release, namespace), out


# Scenarios: the defaults and a few sets of overrides a user would make.
SCENARIOS = {
    "default": [],
    "ha-tls": ["--set", "agent.replicas=3,csi.controller.replicas=2",
               "--set", "agent.tls.enabled=true,agent.tls.secretName=tern-agent-tls",
               "--set", "agent.antiAffinity=soft,etcd.antiAffinity=soft"],
    "monitoring": ["--set", "metrics.serviceMonitor.enabled=true",
                   "--set", "metrics.serviceMonitor.labels.release=prometheus"],
    "engine": ["--set", "engine.cpuCount=4,engine.coreList=2-5,engine.poll=busy",
               "--set", "engine.nbd.enabled=true,engine.privileged=false,engine.metricsPort=0",
               "--set", "engine.nodeLabels.zone=a,engine.nodeLabels.class=ssd",
               "--set", "engine.resources.requests.cpu=1,engine.resources.limits.memory=2Gi",
               "--set", "engine.tolerations[0].key=storage,engine.tolerations[0].operator=Exists"],
    "minimal": ["--set", "csi.enabled=false,haNode.enabled=false,snapshots.enabled=false,crds.install=false",
                "--set", "etcd.enabled=false", "--set", "etcd.endpoints={10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379}",
                "--set", "agent.replicas=1,agent.rbac.create=false,agent.diskPools.enabled=false"],
}


@pytest.fixture(scope="module")
def values_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("values") / "values.yaml"
    p.write_text(yaml.safe_dump({
        "image": {"registry": "registry.example.com/", "tag": "0.1.0-rc1", "pullSecrets": [{"name": "regcred"}]},
        "commonLabels": {"team": "storage"},
        "storageClasses": [
            {"name": "tern", "default": True, "replicas": 3, "thin": True, "fsType": "ext4"},
            {"name": "tern-xfs-spread", "replicas": 2, "thin": False, "fsType": "xfs", "reclaimPolicy": "Retain",
             "volumeBindingMode": "Immediate", "allowVolumeExpansion": False,
             "parameters": {"spread": "zone", "nodeLabels": "class=ssd", "poolLabels": "tier=fast",
                            "maxSnapshots": 10, "rebuildRate": "200MiB",
                            "nvmeCtrlLossTmo": 1800, "nvmeKeepAliveTmo": 10, "nvmeReconnectDelay": 2}},
        ],
        "snapshots": {"default": True},
    }))
    return p


def scenario_args(name, values_file):
    if name == "values-file":
        return ["-f", str(values_file)]
    return SCENARIOS[name]


ALL_SCENARIOS = list(SCENARIOS) + ["values-file"]


@pytest.fixture(scope="module")
def rendered(renderer, tmp_path_factory, values_file):
    """Every scenario rendered once: name -> (Rendering, file)."""
    d = tmp_path_factory.mktemp("rendered")
    out = {}
    for name in ALL_SCENARIOS:
        # The values-file scenario also uses another release name and namespace: names follow them.
        kw = {"release": "storage", "namespace": "storage-system"} if name == "values-file" else {}
        out[name] = render(renderer, d, *scenario_args(name, values_file), name=name, **kw)
    return out


@pytest.fixture(scope="module")
def helps(release_dir):
    """The long flags each of our binaries accepts, from its --help."""
    out = {}
    for prog, rel in [("io-engine", "tools/io-engine/io-engine"), ("tern-agent", "tools/tern-agent/tern-agent"),
                      ("tern-csi", "tools/tern-csi/tern-csi"), ("tern-ha-node", "tools/tern-ha-node/tern-ha-node")]:
        path = release_dir / rel
        if not path.exists():
            continue
        p = run([str(path), "--help"], timeout=30)
        flags = set(re.findall(r"(?m)^\s{2,}(?:-\w,)?--([a-z0-9-]+)", p.stdout))
        assert flags, f"no flags found in {prog} --help"
        out[prog] = flags
    assert {"io-engine", "tern-agent"} <= set(out), f"io-engine and tern-agent must be built in {release_dir}"
    # etcd's flags from Debian's etcd (3.4; the chart's image is 3.5, whose flags are a superset of these).
    etcd = shutil.which("etcd")
    if not etcd:
        pytest.fail("etcd is not installed: run scripts/install-deps.sh (etcd-server)")
    p = run([etcd, "--help"], timeout=30)
    out["etcd"] = set(re.findall(r"(?m)^\s{2,}--([a-z0-9-]+)", p.stdout + p.stderr))
    assert {"name", "initial-cluster", "listen-metrics-urls"} <= out["etcd"]
    return out


# ---------------------------------------------------------------------------------------------------
# Our rules. Each takes a Rendering (and what it needs) and returns a list of violations.

def containers_of(r):
    """(workload, pod spec, container, is_init) for every container of every workload."""
    for o in r.objects():
        if o["kind"] not in WORKLOADS:
            continue
        pod = o["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []):
            yield o, pod, c, True
        for c in pod["containers"]:
            yield o, pod, c, False


def where(o, c=None):
    comp = o["metadata"].get("labels", {}).get("app.kubernetes.io/component", "?")
    return f"{o['kind']} {o['metadata']['name']} ({comp})" + (f" container {c['name']}" if c else "")


def component(o):
    return o["metadata"]["labels"]["app.kubernetes.io/component"]


def rule_resources(r):
    bad = []
    for o, _, c, _ in containers_of(r):
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for k in ("cpu", "memory"):
                if not res.get(part, {}).get(k):
                    bad.append(f"{where(o, c)}: no resources.{part}.{k}")
    return bad


def selected_by(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def rule_probes(r):
    """A container that declares ports has a liveness probe, and a readiness probe when a Service sends
    it traffic; a probe's port is one the pod declares; the CSI driver's liveness is the livenessprobe
    sidecar's port."""
    bad = []
    services = r.objects("Service")
    for o, pod, c, init in containers_of(r):
        if init:
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        pod_ports = {p.get("name"): p["containerPort"] for cc in pod["containers"] for p in cc.get("ports", [])}
        if c.get("ports"):
            if "livenessProbe" not in c:
                bad.append(f"{where(o, c)}: serves ports but has no livenessProbe")
            behind = [s for s in services if selected_by({k: v for k, v in s["spec"].get("selector", {}).items()
                                                          if k != "statefulset.kubernetes.io/pod-name"}, labels)]
            if behind and "readinessProbe" not in c:
                bad.append(f"{where(o, c)}: behind Service {behind[0]['metadata']['name']} without a readinessProbe")
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(kind)
            if not pr:
                continue
            port = (pr.get("httpGet") or pr.get("tcpSocket") or pr.get("grpc") or {}).get("port")
            if port is None and "exec" not in pr:
                bad.append(f"{where(o, c)}: {kind} without a port")
            elif port is not None and port not in pod_ports and port not in pod_ports.values():
                bad.append(f"{where(o, c)}: {kind} port {port} is not declared in the pod")
        if c["name"] == "tern-csi":
            lp = next((x for x in pod["containers"] if x["name"] == "liveness-probe"), None)
            if lp is None:
                bad.append(f"{where(o, c)}: no livenessprobe sidecar")
            else:
                health = [a.split("=", 1)[1] for a in lp.get("args", []) if a.startswith("--health-port=")]
                port = c.get("livenessProbe", {}).get("httpGet", {}).get("port")
                if not health or pod_ports.get(port, port) != int(health[0]):
                    bad.append(f"{where(o, c)}: livenessProbe port {port} is not the sidecar's --health-port {health}")
    return bad


def rule_images(r, app_version, tag=None):
    bad = []
    for o, _, c, _ in containers_of(r):
        img = c.get("image", "")
        name, _, t = img.rpartition(":")
        if not name or "/" in t or not t:
            bad.append(f"{where(o, c)}: image {img!r} has no tag")
        elif t == "latest":
            bad.append(f"{where(o, c)}: image {img!r} is 'latest'")
        if re.search(r"(^|/)tern/", img) and t != (tag or app_version):
            bad.append(f"{where(o, c)}: tern image {img!r} is not tagged {tag or app_version}")
        if c.get("imagePullPolicy") == "Always":
            bad.append(f"{where(o, c)}: imagePullPolicy Always")
    return bad


def rule_security(r):
    bad = []
    for o, pod, c, _ in containers_of(r):
        sc = c.get("securityContext")
        if not sc:
            bad.append(f"{where(o, c)}: no securityContext")
            continue
        key = (o["kind"], component(o), c["name"])
        if sc.get("privileged"):
            if key not in PRIVILEGED:
                bad.append(f"{where(o, c)}: privileged, and not one of the containers that need it")
            continue
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where(o, c)}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad.append(f"{where(o, c)}: capabilities not dropped (drop: [ALL])")
        if sc.get("capabilities", {}).get("add"):
            bad.append(f"{where(o, c)}: adds capabilities {sc['capabilities']['add']}")
    for o in r.objects():
        if o["kind"] in WORKLOADS and not o["spec"]["template"]["spec"].get("hostNetwork"):
            psc = o["spec"]["template"]["spec"].get("securityContext", {})
            # The agent runs on io_uring, which the runtimes' default seccomp profiles refuse (test_images.py
            # shows it): Unconfined for it alone, every other pod-network pod RuntimeDefault.
            want = "Unconfined" if component(o) == "agent" else "RuntimeDefault"
            if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != want:
                bad.append(f"{where(o)}: a pod-network pod that does not run as non-root with the {want} seccomp profile")
    return bad


def rule_daemonsets(r, engine_selector=(("tern.io/engine", "true"),)):
    """As documented: every DaemonSet on Linux nodes; the engine on labelled nodes with OnDelete updates;
    the CSI node plugin and the HA node agent on every node, tolerating every taint."""
    bad = []
    for o in r.objects("DaemonSet"):
        pod = o["spec"]["template"]["spec"]
        sel = pod.get("nodeSelector", {})
        if sel.get("kubernetes.io/os") != "linux":
            bad.append(f"{where(o)}: nodeSelector without kubernetes.io/os: linux")
        comp = component(o)
        if comp == "io-engine":
            for k, v in engine_selector:
                if sel.get(k) != v:
                    bad.append(f"{where(o)}: nodeSelector without {k}: {v!r}")
            if o["spec"].get("updateStrategy", {}).get("type") != "OnDelete":
                bad.append(f"{where(o)}: updateStrategy is not OnDelete (engines are upgraded one node at a time)")
            if not pod.get("hostNetwork") or pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
                bad.append(f"{where(o)}: not on the host network with ClusterFirstWithHostNet")
        elif comp in ("csi-node", "ha-node"):
            if {"operator": "Exists"} not in pod.get("tolerations", []):
                bad.append(f"{where(o)}: does not tolerate every taint")
            if not pod.get("hostNetwork"):
                bad.append(f"{where(o)}: not on the host network (kernel NVMe/TCP connections)")
        else:
            bad.append(f"{where(o)}: a DaemonSet the rules do not know")
    return bad


def rule_disruption_budgets(r):
    bad = []
    pdbs = r.objects("PodDisruptionBudget")
    for o in r.objects():
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if selected_by(p["spec"]["selector"]["matchLabels"], labels)]
        if o["spec"].get("replicas", 1) > 1 and not covering:
            bad.append(f"{where(o)}: {o['spec']['replicas']} replicas and no PodDisruptionBudget")
        for p in covering:
            if "minAvailable" in p["spec"] and p["spec"]["minAvailable"] >= o["spec"].get("replicas", 1):
                bad.append(f"{where(o)}: PodDisruptionBudget {p['metadata']['name']} allows no disruption")
    for p in pdbs:
        n = sum(1 for o in r.objects() if o["kind"] in WORKLOADS
                and selected_by(p["spec"]["selector"]["matchLabels"], o["spec"]["template"]["metadata"]["labels"]))
        if n != 1:
            bad.append(f"PodDisruptionBudget {p['metadata']['name']} selects {n} workloads")
    return bad


def rule_labels(r):
    """Common labels everywhere; namespaced objects in the release namespace; selectors that select;
    references (ServiceAccounts, roles, Services' target ports, StatefulSet service names) that exist."""
    bad = []
    for o in r.objects():
        labels = o["metadata"].get("labels", {})
        for k in COMMON_LABELS:
            if k not in labels:
                bad.append(f"{where(o)}: no label {k}")
        if labels.get("app.kubernetes.io/instance") not in (None, r.release):
            bad.append(f"{where(o)}: instance label {labels['app.kubernetes.io/instance']!r} is not the release")
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != r.namespace:
            bad.append(f"{where(o)}: namespace {o['metadata'].get('namespace')!r}, not {r.namespace!r}")
        if o["kind"] in WORKLOADS:
            tl = o["spec"]["template"]["metadata"]["labels"]
            for k in COMMON_LABELS + ["app.kubernetes.io/component"]:
                if k not in tl:
                    bad.append(f"{where(o)}: pod template without label {k}")
            if tl.get("app.kubernetes.io/component") != labels.get("app.kubernetes.io/component"):
                bad.append(f"{where(o)}: pod template's component differs from the workload's")
    workloads = [o for o in r.objects() if o["kind"] in WORKLOADS]
    sas = {o["metadata"]["name"] for o in r.objects("ServiceAccount")}
    for o in workloads:
        sa = o["spec"]["template"]["spec"].get("serviceAccountName")
        if sa not in sas:
            bad.append(f"{where(o)}: ServiceAccount {sa!r} is not in the manifests")
    for s in r.objects("Service"):
        sel = dict(s["spec"].get("selector", {}))
        pod_name = sel.pop("statefulset.kubernetes.io/pod-name", None)
        targets = [o for o in workloads if selected_by(sel, o["spec"]["template"]["metadata"]["labels"])]
        if len(targets) != 1:
            bad.append(f"Service {s['metadata']['name']} selects {len(targets)} workloads")
            continue
        t = targets[0]
        if pod_name is not None:
            m = re.fullmatch(re.escape(t["metadata"]["name"]) + r"-(\d+)", pod_name)
            if t["kind"] != "StatefulSet" or not m or int(m.group(1)) >= t["spec"]["replicas"]:
                bad.append(f"Service {s['metadata']['name']}: pod {pod_name} is not a pod of {where(t)}")
        names = {p.get("name") for c in t["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                bad.append(f"Service {s['metadata']['name']}: targetPort {p['targetPort']} is not a port of {where(t)}")
    for o in r.objects("StatefulSet"):
        svc = next((s for s in r.objects("Service") if s["metadata"]["name"] == o["spec"]["serviceName"]), None)
        if svc is None or svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
            bad.append(f"{where(o)}: serviceName {o['spec']['serviceName']!r} is not a headless Service publishing unready pods")
    roles = {(o["kind"], o["metadata"]["name"]) for o in r.objects() if o["kind"] in ("Role", "ClusterRole")}
    for b in r.objects("RoleBinding") + r.objects("ClusterRoleBinding"):
        if (b["roleRef"]["kind"], b["roleRef"]["name"]) not in roles:
            bad.append(f"{b['kind']} {b['metadata']['name']}: {b['roleRef']['kind']} {b['roleRef']['name']} is not in the manifests")
        for sub in b["subjects"]:
            if sub["kind"] == "ServiceAccount" and (sub["name"] not in sas or sub.get("namespace") != r.namespace):
                bad.append(f"{b['kind']} {b['metadata']['name']}: ServiceAccount {sub['name']} is not in the manifests")
    return bad


def long_flags(args):
    return [m.group(1) for a in args for m in [re.match(r"--([a-z0-9-]+)(=|$)", a)] if m]


def rule_flags(r, helps):
    """Every flag given to our binaries (and etcd) exists (their --help; the contract for those not built yet), and
    every $(VAR) in their arguments is defined: by the container's env or by a Service of the namespace
    (Kubernetes' <NAME>_SERVICE_HOST variables)."""
    bad = []
    service_vars = set()
    for s in r.objects("Service"):
        base = s["metadata"]["name"].upper().replace("-", "_")
        service_vars |= {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT"}
        service_vars |= {f"{base}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}" for p in s["spec"]["ports"] if p.get("name")}
    contracts = {"tern-csi": CSI_FLAGS, "tern-ha-node": HA_NODE_FLAGS}
    for o, pod, c, _ in containers_of(r):
        prog = (c.get("command") or [None])[0]
        args = c.get("args", [])
        if prog in ("io-engine", "tern-agent", "tern-csi", "tern-ha-node", "etcd"):
            # the binary's --help when it is built; until then the documented contract
            known = helps.get(prog) or contracts[prog]
            for f in long_flags(args):
                if f not in known:
                    bad.append(f"{where(o, c)}: {prog} has no flag --{f}")
            if prog in contracts:
                for f in long_flags(args):
                    if f not in contracts[prog]:
                        bad.append(f"{where(o, c)}: --{f} is not in {prog}'s documented flags")
        elif prog is not None:
            bad.append(f"{where(o, c)}: command {prog!r} is not one whose flags are known")
        env = {e["name"] for e in c.get("env", [])}
        for a in args + (c.get("command") or []):
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                if var not in env and not (var in service_vars and pod.get("enableServiceLinks") is True):
                    bad.append(f"{where(o, c)}: $({var}) is neither in its env nor a Service variable of the namespace")
    return bad


def rule_endpoints(r):
    """The agents' and etcd members' addresses given to the binaries name pods and Services that exist."""
    bad = []
    sts = {o["metadata"]["name"]: o for o in r.objects("StatefulSet")}
    services = {s["metadata"]["name"]: s for s in r.objects("Service")}
    for o, _, c, _ in containers_of(r):
        for a in c.get("args", []):
            m = re.match(r"--(agent|agent-url|etcd)=(.*)", a)
            if not m:
                continue
            for ep in m.group(2).split(","):
                h = re.fullmatch(r"(?:https?://)?([a-z0-9-]+)-(\d+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", ep)
                v = re.fullmatch(r"\$\(([A-Z0-9_]+)_SERVICE_HOST\):(\d+)", ep)
                if h:
                    s = sts.get(h.group(1))
                    if (s is None or int(h.group(2)) >= s["spec"]["replicas"] or s["spec"]["serviceName"] != h.group(3)
                            or h.group(4) != r.namespace):
                        bad.append(f"{where(o, c)}: {ep} is not a pod of a StatefulSet here")
                    elif not any(p["port"] == int(h.group(5)) for p in services[h.group(3)]["spec"]["ports"]):
                        bad.append(f"{where(o, c)}: {ep}: no such port on {h.group(3)}")
                    elif a.startswith("--agent-url=") != ep.startswith("http"):
                        bad.append(f"{where(o, c)}: {ep}: a URL where an endpoint is expected or the reverse")
                elif v:
                    svc = next((s for n, s in services.items() if n.upper().replace("-", "_") == v.group(1)), None)
                    if svc is None or not any(p["port"] == int(v.group(2)) for p in svc["spec"]["ports"]):
                        bad.append(f"{where(o, c)}: {ep}: no Service with that port")
                elif not re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", ep):
                    bad.append(f"{where(o, c)}: {ep} is neither a pod, a Service address nor IP:port")
    agents = [o for o in r.objects("StatefulSet") if component(o) == "agent"]
    for o, _, c, _ in containers_of(r):
        if c["name"] == "io-engine":
            n = sum(1 for a in c["args"] if a.startswith("--agent="))
            if agents and n != agents[0]["spec"]["replicas"]:
                bad.append(f"{where(o, c)}: registers with {n} agents, not every one of {agents[0]['spec']['replicas']}")
    return bad


def documented_sc_parameters():
    text = DOCS.read_text()
    m = re.search(r"(?ms)^## StorageClass parameters\n(.*?)(?=^## )", text)
    assert m, "docs/kubernetes.md has no '## StorageClass parameters' section"
    return set(re.findall(r"(?m)^\| `([^`]+)` \|", m.group(1)))


def rule_storage(r, documented):
    bad = []
    drivers = {o["metadata"]["name"] for o in r.objects("CSIDriver")}
    for sc in r.objects("StorageClass") + r.objects("VolumeSnapshotClass"):
        d = sc.get("provisioner") or sc.get("driver")
        if drivers and d not in drivers:
            bad.append(f"{sc['kind']} {sc['metadata']['name']}: driver {d} is not the CSIDriver {drivers}")
    for sc in r.objects("StorageClass"):
        for k, v in sc.get("parameters", {}).items():
            if k not in documented:
                bad.append(f"StorageClass {sc['metadata']['name']}: parameter {k!r} is not documented in docs/kubernetes.md")
            if not isinstance(v, str):
                bad.append(f"StorageClass {sc['metadata']['name']}: parameter {k} is not a string")
    return bad


def check_all(r, helps, documented, app_version, tag=None, engine_selector=(("tern.io/engine", "true"),)):
    return {
        "resources": rule_resources(r),
        "probes": rule_probes(r),
        "images": rule_images(r, app_version, tag),
        "security": rule_security(r),
        "daemonsets": rule_daemonsets(r, engine_selector),
        "disruption budgets": rule_disruption_budgets(r),
        "labels": rule_labels(r),
        "flags": rule_flags(r, helps),
        "endpoints": rule_endpoints(r),
        "storage": rule_storage(r, documented),
    }


@pytest.fixture(scope="module")
def app_version():
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


# ---------------------------------------------------------------------------------------------------

def test_renderer_unit_tests():
    run(["go", "test", "./deploy/tools/chart-render"], timeout=300, env=GO_ENV)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_rendered_objects_are_valid_kubernetes(scenario, rendered, validator):
    r, path = rendered[scenario]
    report = validator(path)
    assert not report["errors"], "\n".join(f"{e['source']}: {e['kind']} {e['name']}: {e['message']}" for e in report["errors"])
    assert report["documents"] == len(r.docs) > 5
    kinds = {k.rsplit("/", 1)[1] for k in report["kinds"]}
    expected = {"ServiceAccount", "Service", "StatefulSet", "DaemonSet", "StorageClass"}
    if scenario != "minimal":
        expected |= {"Deployment", "CSIDriver", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                     "VolumeSnapshotClass", "CustomResourceDefinition", "PodDisruptionBudget"}
    if scenario == "monitoring":
        expected.add("ServiceMonitor")
    assert expected <= kinds, f"missing kinds: {expected - kinds}"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_our_rules(scenario, rendered, helps, app_version):
    r, _ = rendered[scenario]
    tag = "0.1.0-rc1" if scenario == "values-file" else None
    violations = check_all(r, helps, documented_sc_parameters(), app_version, tag)
    assert not any(violations.values()), json.dumps({k: v for k, v in violations.items() if v}, indent=1)


def test_each_rule_can_fail(rendered, helps, app_version):
    """Every rule reports a deliberately broken copy of the default objects."""
    base, _ = rendered["default"]
    documented = documented_sc_parameters()

    def broken(mutate):
        r = copy.deepcopy(base)
        mutate(r)
        return check_all(r, helps, documented, app_version)

    def container(r, comp, name):
        o = next(o for o in r.objects() if o["kind"] in WORKLOADS and component(o) == comp)
        return o, next(c for c in o["spec"]["template"]["spec"]["containers"] if c["name"] == name)

    cases = {
        "resources": lambda r: container(r, "agent", "agent")[1]["resources"]["limits"].pop("memory"),
        "probes": lambda r: container(r, "etcd", "etcd")[1].pop("readinessProbe"),
        "images": lambda r: container(r, "csi-controller", "csi-provisioner")[1].update(
            image="registry.k8s.io/sig-storage/csi-provisioner:latest"),
        "security": lambda r: container(r, "agent", "agent")[1]["securityContext"].update(privileged=True),
        "daemonsets": lambda r: container(r, "io-engine", "io-engine")[0]["spec"].update(updateStrategy={"type": "RollingUpdate"}),
        "disruption budgets": lambda r: r.docs.remove(next(d for d in r.docs if d[1]["kind"] == "PodDisruptionBudget"
                                                            and component(d[1]) == "agent")),
        "labels": lambda r: next(s for s in r.objects("Service") if s["metadata"]["name"] == "tern-agent")["spec"][
            "selector"].update({"app.kubernetes.io/component": "agnet"}),
        "flags": lambda r: container(r, "agent", "agent")[1]["args"].append("--no-such-flag=1"),
        "endpoints": lambda r: container(r, "io-engine", "io-engine")[1]["args"].append(
            "--agent=tern-agent-7.tern-agent-hl.tern.svc.cluster.local:50051"),
        "storage": lambda r: r.objects("StorageClass")[0]["parameters"].update(replicaCount="3"),
    }
    for rule, mutate in cases.items():
        assert broken(mutate)[rule], f"rule {rule!r} did not catch its broken case"
    # and the service-variable check of the flags rule
    assert broken(lambda r: container(r, "agent", "agent")[1]["args"].append("--etcd=$(TERN_ETCD_9_SERVICE_HOST):2379"))["flags"]


def test_validator_catches_invalid_objects(rendered, validator, tmp_path):
    """The schema validation can fail: unknown fields, wrong types, bad quantities, bad names, a DiskPool
    against its CRD."""
    _, path = rendered["default"]
    text = path.read_text()
    bad = (text.replace("  podManagementPolicy: Parallel", "  podManagementPolicy: Paralel", 1)
               .replace("      hostNetwork: true", "      hostNetwrk: true", 1)
               .replace("memory: 64Mi", "memory: 64Mx", 1)
               .replace("name: provis-hz", "name: provisioner-health", 1))
    assert bad.count("\n") == text.count("\n")
    (tmp_path / "bad.yaml").write_text(bad)
    msgs = [e["message"] for e in validator(tmp_path / "bad.yaml")["errors"]]
    for want in ["podManagementPolicy", 'unknown field "hostNetwrk"', 'format "quantity"', "invalid port name"]:
        assert any(want in m for m in msgs), f"{want!r} not reported: {msgs}"
    pool = (ROOT / "deploy/examples/diskpool.yaml").read_text().replace("  node: node1", "  nodes: node1")
    (tmp_path / "pool.yaml").write_text(pool + "\n---\n" + pool.replace("name: pool-node1-nvme1", "name: p2")
                                        .replace("    - /dev/", "    - dev/"))
    msgs = [e["message"] for e in validator(tmp_path / "pool.yaml", crd=path)["errors"]]
    assert any("'node'" in m for m in msgs) and any('"nodes"' in m for m in msgs) and any("pattern" in m for m in msgs), msgs


def test_examples_are_valid(rendered, validator):
    _, path = rendered["default"]
    report = validator(*EXAMPLES, crd=path)
    assert not report["errors"], report["errors"]
    assert "tern.io/v1alpha1/DiskPool" in report["kinds"]


def test_committed_manifest_is_the_default_rendering(renderer, tmp_path):
    r, out = render(renderer, tmp_path, "--set", "namespace.create=true")
    committed = MANIFEST.read_text()
    body = committed[committed.index("---\n"):]
    assert body == out.read_text(), ("deploy/manifests/tern.yaml is out of date with the chart: "
                                     "run deploy/tools/render-manifests.sh")
    assert r.objects("Namespace") and r.objects("Namespace")[0]["metadata"]["name"] == NS


def test_committed_manifest_is_valid(validator):
    report = validator(MANIFEST)
    assert not report["errors"], report["errors"]
    assert report["kinds"].get("v1/Namespace") == 1


def test_overrides_take_effect(rendered):
    ha, _ = rendered["ha-tls"]
    agent = ha.one("StatefulSet", "agent")
    assert agent["spec"]["replicas"] == 3
    c = agent["spec"]["template"]["spec"]["containers"][0]
    assert "--tls-cert=/etc/tern/tls/tls.crt" in c["args"] and c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    csi = ha.one("DaemonSet", "csi-node")["spec"]["template"]["spec"]["containers"][0]
    url = next(a for a in csi["args"] if a.startswith("--agent-url="))
    assert url.count("https://") == 3 and "--agent-ca=/etc/tern/agent-ca/ca.crt" in csi["args"]
    assert ha.one("Deployment", "csi-controller")["spec"]["replicas"] == 2
    assert ha.one("PodDisruptionBudget", "csi-controller")

    eng, _ = rendered["engine"]
    ec = eng.one("DaemonSet", "io-engine")["spec"]["template"]["spec"]["containers"][0]
    assert "--cores=2-5" in ec["args"] and "--poll=busy" in ec["args"] and "--nbd-port=10809" in ec["args"]
    assert {"--node-label=zone=a", "--node-label=class=ssd"} <= set(ec["args"])
    assert ec["resources"]["requests"]["cpu"] == ec["resources"]["limits"]["cpu"] == "4"  # cpuCount decides
    assert ec["resources"]["limits"]["memory"] == "2Gi"
    assert "privileged" not in ec["securityContext"] and ec["livenessProbe"] == {**ec["livenessProbe"], "tcpSocket": {"port": "grpc"}}
    assert not [s for s in eng.objects("Service") if component(s) == "io-engine"]

    mon, _ = rendered["monitoring"]
    sms = mon.objects("ServiceMonitor")
    assert sorted(component(s) for s in sms) == ["agent", "io-engine"]
    assert all(s["metadata"]["labels"]["release"] == "prometheus" for s in sms)

    mini, _ = rendered["minimal"]
    assert not mini.objects("Deployment") and not mini.objects("CustomResourceDefinition")
    assert not [o for o in mini.objects("StatefulSet") if component(o) == "etcd"]
    ac = mini.one("StatefulSet", "agent")["spec"]["template"]["spec"]["containers"][0]
    assert "--etcd=10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379" in ac["args"]
    assert not [a for a in ac["args"] if a.startswith(("--diskpools", "--kube-"))]
    # By default the agents run the DiskPool operator on the release namespace.
    assert {"--diskpools", "--kube-namespace=tern", "--diskpool-resync-s=15"} <= set(
        ha.one("StatefulSet", "agent")["spec"]["template"]["spec"]["containers"][0]["args"])

    vf, _ = rendered["values-file"]
    assert vf.one("StatefulSet", "agent")["metadata"]["name"] == "storage-tern-agent"
    assert all(o["metadata"]["labels"]["team"] == "storage" for o in vf.objects())
    scs = {s["metadata"]["name"]: s for s in vf.objects("StorageClass")}
    assert scs["tern"]["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    xfs = scs["tern-xfs-spread"]
    assert xfs["parameters"]["csi.storage.k8s.io/fstype"] == "xfs" and xfs["parameters"]["spread"] == "zone"
    assert xfs["reclaimPolicy"] == "Retain" and xfs["allowVolumeExpansion"] is False
    assert vf.one("DaemonSet", "io-engine")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com/tern/io-engine:0.1.0-rc1"


@pytest.mark.parametrize("args,message", [
    (["--set", "image.tag=latest"], "pin a version"),
    (["--set", "csi.sidecars.provisioner.tag=latest"], "pin a version"),
    (["--set", "etcd.enabled=false"], "etcd.endpoints"),
    (["--set", "agent.rbac.create=false"], "agent.diskPools.enabled needs agent.rbac.create"),
    (["--set", "etcd.enabled=false", "--set", "etcd.endpoints={etcd-0.example:2379}"], "not IP:port"),
    (["--set", "agent.tls.enabled=true"], "agent.tls.secretName"),
    (["--set", "agent.antiAffinity=sometimes"], "hard or soft"),
    (["--set", "storageClasses[0].name=x,storageClasses[0].replicas=9"], "1 to 8"),
    (["--set", "storageClasses[0].name=x,storageClasses[0].replicas=1,storageClasses[0].fsType=btrfs"], "ext4 or xfs"),
    (["--set", "engine.cpuCount=0"], "at least 1"),
    (["--set", "engine.nodeSelector=null"], "engine.nodeSelector"),
    (["--kube-version", "v1.26.9"], "incompatible with Kubernetes"),
])
def test_bad_values_are_refused(renderer, tmp_path, args, message):
    p = run([str(renderer), "--strict", "-n", NS, *args, "tern", str(CHART)], timeout=60, check=False)
    assert p.returncode != 0 and message in p.stderr, (p.returncode, p.stderr[-1000:])


def test_values_are_documented():
    """Every value in values.yaml has a row in docs/kubernetes.md's values table (free-form maps and lists,
    such as resources or tolerations, as one value; a CSI sidecar's image, tag and port as the sidecar)."""
    text = DOCS.read_text()
    m = re.search(r"(?ms)^## Values\n(.*?)(?=^## )", text)
    assert m, "docs/kubernetes.md has no '## Values' section"
    documented = set(re.findall(r"`([A-Za-z][A-Za-z0-9.]*)`", m.group(1)))
    free = {"resources", "nodeSelector", "tolerations", "commonLabels", "nodeLabels", "labels", "tlsConfig",
            "pullSecrets", "extraArgs", "storageClasses", "endpoints"}
    missing = []

    def walk(d, prefix):
        for k, v in d.items():
            p = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and v and k not in free:
                walk(v, p)
            elif p not in documented and not (p.startswith("csi.sidecars.") and p.rsplit(".", 1)[0] in documented):
                missing.append(p)
    walk(yaml.safe_load((CHART / "values.yaml").read_text()), "")
    assert not missing, f"values not in docs/kubernetes.md's values table: {missing}"


def test_notes(renderer):
    p = run([str(renderer), "--strict", "--notes", "-n", "storage", "rel", str(CHART)], timeout=60)
    assert "<no value>" not in p.stdout and "namespace storage" in p.stdout
    assert "kubectl label node <node> tern.io/engine=true" in p.stdout and "rel-tern-agent-0" in p.stdout
