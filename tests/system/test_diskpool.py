"""The agent's DiskPool operator (tern-agent --diskpools) against a stand-in Kubernetes API server
(kube_api.py: HTTPS, bearer tokens, list/watch/merge-patch, the CRD's status schema), with a real cluster:
etcd, two agents (one leads; both run the operator, only the leader acts), two engines with file disks.

What a user of `kubectl apply -f diskpool.yaml` expects: the pool appears and its status says so; a disk
that cannot be opened is an Error saying why and is retried; a spec the agent cannot act on is an Error
naming the field; labels follow the object; deleting the object destroys the pool, but not while replicas
live in it, and never a pool of the same name on another node or disk; a standby takes over; an expired
watch is a new list; a rotated or refused token is survived and said.
"""
import time
import uuid

import pytest

from control_cluster import LocalCluster
from kube_api import KubeApi

MiB = 1 << 20
RESYNC_S = 3


@pytest.fixture(scope="module")
def env(build_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("diskpool")
    (work / "certs").mkdir()
    api = KubeApi(work / "certs")
    token = work / "token"
    token.write_text("token-1\n")
    agent_env = {"TERN_AGENT_DISKPOOLS": "true", "TERN_AGENT_KUBE_API": api.url, "TERN_AGENT_KUBE_NAMESPACE": "tern",
                 "TERN_AGENT_KUBE_TOKEN_FILE": str(token), "TERN_AGENT_KUBE_CA_FILE": str(api.ca),
                 "TERN_AGENT_DISKPOOL_RESYNC_S": str(RESYNC_S)}
    try:
        # A longer lease than the suite's default: a loaded machine must not move the lead between the
        # agents mid-test (the tests tell the leader's requests from the standby's); a clean stop still
        # hands it over at once.
        c = LocalCluster(build_dir, work, engines=2, agents=2, agent_env=agent_env,
                         agent_flags={"--lease-ttl": "10", "--node-deadline-ms": "5000"})
    except BaseException:
        api.stop()
        raise
    c.api = api
    c.token = token
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            api.stop()


def wait(cl, what, cond, timeout=20):
    return cl.wait(what, cond, timeout=timeout, interval=0.1)


def status_of(cl, name):
    o = cl.api.get(name)
    return (o or {}).get("status") or {}


def wait_state(cl, name, state, timeout=20):
    def ok():
        st = status_of(cl, name)
        return st if st.get("state") == state else None
    try:
        return wait(cl, f"DiskPool {name} {state}", ok, timeout)
    except AssertionError:
        raise AssertionError(f"DiskPool {name}: {cl.api.get(name)}\n{cl.leader.log()[-3000:]}")


def disk_path(cl, engine, name, create=True):
    """A file disk on the engine's node, as a path (a DiskPool's disks[] entry); made now or later."""
    if create:
        cl.disk(engine, name, 128 * MiB)
    return str(cl.workdir / f"{engine.name}-disks" / f"{name}.img")


def test_a_diskpool_becomes_a_pool_and_its_status_says_so(env):
    cl = env
    e = cl.engines[0]
    path = disk_path(cl, e, "a")
    cl.api.create("pool-a", e.name, [path], labels={"class": "ssd"})
    st = wait_state(cl, "pool-a", "Created")
    assert st["poolStatus"] == "online" and st["capacity"] > 100 * MiB and st["replicas"] == 0, st
    assert st["observedGeneration"] == 1
    o = cl.api.get("pool-a")
    assert "tern.io/pool-protection" in o["metadata"]["finalizers"]
    p = cl.rest.ok("GET", "/v1/pools/pool-a")
    assert (p["node"], p["disk"], p["labels"], p["state"]) == (e.name, f"uring://{path}", {"class": "ssd"}, "created")
    wait(cl, "a Created event", lambda: [x for x in cl.api.events("pool-a") if x["reason"] == "Created"])
    ev = [x for x in cl.api.events("pool-a") if x["reason"] == "Created"][0]
    assert ev["type"] == "Normal" and ev["involvedObject"]["kind"] == "DiskPool" and e.name in ev["message"]
    # Settled: another resync patches nothing (the status is written only when it changes), and the one
    # Created event was not repeated by the events that carried the object from before the status.
    patches = cl.api.count("PATCH", "/apis/tern.io/v1alpha1/namespaces/tern/diskpools/pool-a/status")
    time.sleep(RESYNC_S + 1)
    assert cl.api.count("PATCH", "/apis/tern.io/v1alpha1/namespaces/tern/diskpools/pool-a/status") == patches
    assert [x["reason"] for x in cl.api.events("pool-a")] == ["Created"]

    # Labels follow the object; the node and disk do not (the CRD refuses such edits; the agent says why
    # when a server lets one through).
    cl.api.update_spec("pool-a", labels={"class": "nvme", "rack": "r1"})
    wait(cl, "relabelled", lambda: cl.rest.ok("GET", "/v1/pools/pool-a")["labels"] == {"class": "nvme", "rack": "r1"})
    wait(cl, "observedGeneration 2", lambda: status_of(cl, "pool-a").get("observedGeneration") == 2)
    assert status_of(cl, "pool-a")["state"] == "Created"


def test_a_disk_that_cannot_be_opened_is_an_error_and_retried(env):
    cl = env
    e = cl.engines[1]
    path = disk_path(cl, e, "late", create=False)
    cl.api.create("pool-late", e.name, [path])
    st = wait_state(cl, "pool-late", "Error")
    assert path in st["reason"] or "No such file" in st["reason"], st
    wait(cl, "a Failed event", lambda: [x for x in cl.api.events("pool-late") if x["reason"] == "Failed"])
    assert [x for x in cl.api.events("pool-late") if x["reason"] == "Failed"][0]["type"] == "Warning"
    # No pool (a retry may hold the declaration for the moment the engine takes to refuse again).
    got = cl.rest.get("/v1/pools/pool-late")
    assert got[0] == 404 or got[1]["state"] == "creating", got
    # The disk appears: the next resync creates the pool, and the reason goes.
    disk_path(cl, e, "late")
    st = wait_state(cl, "pool-late", "Created", timeout=RESYNC_S * 4)
    assert "reason" not in st, st
    cl.api.delete("pool-late")
    wait(cl, "pool-late gone", lambda: cl.api.get("pool-late") is None)
    assert cl.rest.get("/v1/pools/pool-late")[0] == 404


@pytest.mark.parametrize("node,disks,says", [
    ("node0", ["/a", "/b"], "exactly one disk"),
    ("node0", ["sdb"], "neither a path nor a device URI"),
    ("nowhere", ["/dev/null"], "never registered"),
])
def test_a_spec_the_agent_cannot_act_on_is_an_error_naming_why(env, node, disks, says):
    cl = env
    name = f"bad-{uuid.uuid4().hex[:6]}"
    cl.api.create(name, node, disks)
    st = wait_state(cl, name, "Error")
    assert says in st["reason"], st
    assert cl.rest.get(f"/v1/pools/{name}")[0] == 404
    cl.api.delete(name)
    wait(cl, f"{name} gone", lambda: cl.api.get(name) is None)


def test_a_diskpool_never_destroys_a_pool_it_does_not_describe(env):
    cl = env
    e0, e1 = cl.engines
    cl.rest.ok("PUT", "/v1/pools/clash", {"node": e0.name, "disk": cl.disk(e0, "clash")})
    cl.api.create("clash", e1.name, [disk_path(cl, e1, "clash")])
    st = wait_state(cl, "clash", "Error")
    assert "exists on node node0" in st["reason"], st
    cl.api.delete("clash")
    wait(cl, "the DiskPool gone", lambda: cl.api.get("clash") is None)
    p = cl.rest.ok("GET", "/v1/pools/clash")
    assert p["node"] == e0.name and p["state"] == "created"
    assert cl.rest.delete("/v1/pools/clash")[0] == 204


def test_deleting_waits_for_the_pools_replicas(env):
    cl = env
    e = cl.engines[1]
    cl.api.create("pool-b", e.name, [disk_path(cl, e, "b")], labels={"only": "b"})
    wait_state(cl, "pool-b", "Created")
    v = str(uuid.uuid4())
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 1, "thin": False,
                                          "topology": {"pool_labels": {"only": "b"}}})
    # The status follows the pool: its replica at once, the space once the engine's pools are read again.
    wait(cl, "the replica counted", lambda: status_of(cl, "pool-b").get("replicas") == 1
         and status_of(cl, "pool-b").get("committed", 0) >= 16 * MiB, timeout=RESYNC_S * 5)
    cl.api.delete("pool-b")
    st = wait_state(cl, "pool-b", "Deleting")
    wait(cl, "the reason", lambda: "reason" in status_of(cl, "pool-b"))
    st = status_of(cl, "pool-b")
    assert v in st["reason"] or "replica" in st["reason"], st
    assert cl.rest.ok("GET", "/v1/pools/pool-b")["state"] == "created"
    wait(cl, "a DeleteBlocked event", lambda: [x for x in cl.api.events("pool-b") if x["reason"] == "DeleteBlocked"])
    # The volume goes: so does the pool, then the object.
    assert cl.rest.delete(f"/v1/volumes/{v}")[0] == 204
    wait(cl, "pool-b gone", lambda: cl.api.get("pool-b") is None, timeout=RESYNC_S * 4)
    assert cl.rest.get("/v1/pools/pool-b")[0] == 404
    wait(cl, "a Deleted event", lambda: [x for x in cl.api.events("pool-b") if x["reason"] == "Deleted"])


def test_deleting_a_retained_diskpool_keeps_its_pool(env):
    cl = env
    e = cl.engines[0]
    cl.api.create("pool-r", e.name, [disk_path(cl, e, "r")])
    wait_state(cl, "pool-r", "Created")
    cl.api.annotate("pool-r", "tern.io/retain-pool", "true")
    cl.api.delete("pool-r")
    wait(cl, "pool-r gone", lambda: cl.api.get("pool-r") is None)
    assert cl.rest.ok("GET", "/v1/pools/pool-r")["state"] == "created"
    ev = wait(cl, "a Deleted event", lambda: [x for x in cl.api.events("pool-r") if x["reason"] == "Deleted"])
    assert "kept" in ev[0]["message"]
    assert cl.rest.delete("/v1/pools/pool-r")[0] == 204


def test_a_refused_token_is_said_and_a_rotated_one_is_read(env):
    cl = env
    cl.api.set_token("token-2")  # the server rotated it; the kubelet has not yet written the file
    logs = lambda: "".join(a.log() for a in cl.agents)
    wait(cl, "the refusal in the leader's log", lambda: "the agent's service account" in logs(), timeout=RESYNC_S * 4)
    cl.token.write_text("token-2\n")
    e = cl.engines[1]
    cl.api.create("pool-t", e.name, [disk_path(cl, e, "t")])
    wait_state(cl, "pool-t", "Created", timeout=40)
    assert "the API server answers again" in logs()


def test_the_standby_takes_over(env):
    cl = env
    old = cl.leader
    other = [a for a in cl.agents if a is not old][0]
    # The standby has asked the API server nothing (it neither lists nor watches, let alone writes).
    assert cl.api.requests_from(f"tern-agent/{old.name}")
    assert cl.api.requests_from(f"tern-agent/{other.name}") == []
    old.stop()
    other.wait_leading()
    e = cl.engines[0]
    cl.api.create("pool-s", e.name, [disk_path(cl, e, "s")])
    wait_state(cl, "pool-s", "Created", timeout=30)
    assert "DiskPool pool-s: pool declared" in other.log()
    old.start()
    cl.api.delete("pool-s")
    wait(cl, "pool-s gone", lambda: cl.api.get("pool-s") is None, timeout=RESYNC_S * 4)
    assert cl.rest.get("/v1/pools/pool-s")[0] == 404


def test_an_expired_watch_is_a_new_list_at_once(env):
    cl = env
    # Long resyncs, so that only the expiry can explain a prompt new list.
    for a in cl.agents:
        a.stop()
    before = len(cl.api.requests)
    for a in cl.agents:
        a.start(env={"TERN_AGENT_DISKPOOL_RESYNC_S": "60"})
    coll = "/apis/tern.io/v1alpha1/namespaces/tern/diskpools"
    # The new leader's first watch.
    first = wait(cl, "a watch", lambda: next((r for r in cl.api.requests[before:]
                                             if r[0] == "GET" and "watch=true" in r[1]), None))
    ua = first[3]
    time.sleep(0.5)
    lists = cl.api.count("GET", coll, user_agent=ua) - cl.api.count("GET", coll, "watch=true", user_agent=ua)
    cl.api.expire_watches()
    wait(cl, "a new list", lambda: cl.api.count("GET", coll, user_agent=ua)
         - cl.api.count("GET", coll, "watch=true", user_agent=ua) > lists, timeout=5)
    # Then watched from the new list's resourceVersion: a new object is taken up through the watch (the
    # next list is a minute away), and no watch asked again from an expired one.
    e = cl.engines[1]
    cl.api.create("pool-w", e.name, [disk_path(cl, e, "w")])
    wait_state(cl, "pool-w", "Created", timeout=10)
    # (Watches of the agents stopped above may still get one on the server's side: not counted.)
    assert len([i for i in cl.api.expired_to if i >= before]) == 1
