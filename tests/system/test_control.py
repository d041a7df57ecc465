"""The control plane against real parts: etcd, two tern-agents (a leader and a standby) and three io-engines
registered with both, over real sockets. One cluster for the module; tests leave it as they found it
(volumes destroyed, pools declared on every node). Every REST answer is checked against the OpenAPI
document (control_cluster.Rest)."""
import json
import time
import uuid

import pytest

from control_cluster import OPENAPI, Agent, LocalCluster, Rest, child, engine, nexuses, rebuilt
from nexus_util import required_child_bytes

MiB = 1 << 20


@pytest.fixture(scope="module")
def cl(build_dir, tmp_path_factory):
    c = LocalCluster(build_dir, tmp_path_factory.mktemp("control"), engines=3, agents=2,
                     node_labels={0: {"zone": "a"}, 1: {"zone": "a"}, 2: {"zone": "b"}})
    try:
        for e in c.engines:
            c.rest.ok("PUT", f"/v1/pools/p-{e.name}", {"node": e.name, "disk": c.disk(e, "p0"), "labels": {"tier": e.name}})
        yield c
    finally:
        c.stop()


def vol_id():
    return str(uuid.uuid4())


def problem(status_doc, status, *words):
    status_got, doc = status_doc
    assert status_got == status, f"expected {status}, got {status_got}: {doc}"
    for w in words:
        assert w in doc["detail"], f"'{w}' not in: {doc['detail']}"
    return doc



def engine_snapshots(cl):
    """Every pool snapshot on the running engines (their own API), as {uuid: node}."""
    from io_engine import stubs
    S = stubs().snapshot_pb2
    out = {}
    for e in cl.engines:
        if e.running():
            for x in e.api.snapshot.ListSnapshots(S.ListSnapshotsRequest(), timeout=30).replicas:
                out[x.uuid] = e.name
    return out


def replicas_by_node(cl):
    out = {}
    for e in cl.engines:
        if e.running():
            out[e.name] = cl.engine_replicas(e)
    return out


def test_engines_register_and_a_standby_names_the_leader(cl):
    nodes = cl.rest.ok("GET", "/v1/nodes")
    assert [n["id"] for n in nodes] == ["node0", "node1", "node2"]
    for n, e in zip(nodes, cl.engines):
        assert n["status"] == "online" and n["grpc_endpoint"] == e.endpoint
        assert n["nvmf_endpoint"].endswith(f":{e.nvmf_port}")
        assert n["instance"] and n["version"]
    assert nodes[2]["labels"] == {"zone": "b"}
    leader = cl.leader
    standby = next(a for a in cl.agents if a is not leader)
    info = leader.rest.ok("GET", "/v1/cluster")
    assert info["leading"] and info["term"] > 0 and info["leader"] == info["agent"]
    assert info["agent"] == f"{leader.name}@127.0.0.1:{leader.rest_port}"
    s = standby.rest.ok("GET", "/v1/cluster")
    assert not s["leading"] and s["leader"] == info["agent"] and s["term"] == 0
    problem(standby.rest.get("/v1/nodes"), 503, "standby", info["agent"])


def test_openapi_document_is_served_and_metrics_are_exposed(cl):
    status, doc = cl.rest.get("/v1/openapi.json")
    assert status == 200 and doc == OPENAPI
    status, text = cl.rest.get("/metrics")
    assert status == 200
    assert 'tern_nodes{status="online"} 3' in text
    assert f'tern_agent_leader{{agent="{cl.leader.name}@127.0.0.1:{cl.leader.rest_port}"}} 1' in text
    for m in ["tern_rebuilds 0", "tern_snapshots 0", "tern_agent_orphans_collected_total", 'tern_volumes{status="online"}']:
        assert m in text, text


def test_pools_are_created_listed_and_declared_idempotently(cl):
    pools = cl.rest.ok("GET", "/v1/pools")
    assert [p["name"] for p in pools] == ["p-node0", "p-node1", "p-node2"]
    for p in pools:
        assert p["state"] == "created" and p["status"] == "online" and p["capacity"] > 200 * MiB
    e = cl.engines[0]
    assert [p.name for p in e.api.pool.ListPools(__import__("io_engine").stubs().pool_pb2.ListPoolsRequest(),
                                                  timeout=30).pools] == ["p-node0"]
    same = pools[0]
    status, doc = cl.rest.put("/v1/pools/p-node0", {"node": "node0", "disk": same["disk"], "labels": {"tier": "node0"}})
    assert status == 200 and doc["name"] == "p-node0"
    # Other labels: the same pool, relabelled (and back).
    status, doc = cl.rest.put("/v1/pools/p-node0", {"node": "node0", "disk": same["disk"], "labels": {"tier": "x"}})
    assert status == 200 and doc["labels"] == {"tier": "x"} and cl.rest.ok("GET", "/v1/pools/p-node0")["labels"] == {"tier": "x"}
    status, doc = cl.rest.put("/v1/pools/p-node0", {"node": "node0", "disk": same["disk"], "labels": {"tier": "node0"}})
    assert status == 200 and doc["labels"] == {"tier": "node0"}
    problem(cl.rest.put("/v1/pools/p-node0", {"node": "node0", "disk": cl.disk(e, "other")}), 409, "exists on node node0")
    problem(cl.rest.put("/v1/pools/p-x", {"node": "node0", "disk": same["disk"]}), 409, "already holds pool 'p-node0'")
    problem(cl.rest.put("/v1/pools/p-x", {"node": "nowhere", "disk": "uring:///tmp/x"}), 404, "never registered")
    problem(cl.rest.put("/v1/pools/bad%20name", {"node": "node0", "disk": "uring:///tmp/x"}), 400, "pool name")
    problem(cl.rest.put("/v1/pools/p-x", {"node": "node0", "disk": "uring:///tmp/x", "dsik": 1}), 400, "'dsik'")
    problem(cl.rest.put("/v1/pools/p-x", {"node": "node0"}), 400, "'disk'")
    # A disk the engine cannot open: the engine's error, and no declaration is left behind.
    status, doc = cl.rest.put("/v1/pools/p-x", {"node": "node0", "disk": "uring:///nonexistent/dir/x.img"})
    assert status in (400, 404), doc
    assert cl.rest.get("/v1/pools/p-x")[0] == 404
    assert not [k for k in cl.etcd_keys() if k.endswith("/pools/p-x")]


def test_volume_replicas_go_to_distinct_nodes_and_are_destroyed_with_it(cl):
    v = vol_id()
    status, doc = cl.rest.put(f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 3, "thin": True, "labels": {"app": "db"}})
    assert status == 201, doc
    assert doc["state"] == "created" and doc["status"] == "online" and doc["labels"] == {"app": "db"}
    reps = doc["replica_details"]
    assert sorted(r["node"] for r in reps) == ["node0", "node1", "node2"]
    held = replicas_by_node(cl)
    for r in reps:
        assert r["uuid"] in held[r["node"]], f"{r} not on its engine: {held}"
        assert r["pool"] == f"p-{r['node']}" and r["size"] == required_child_bytes(64 * MiB) and r["thin"]
    # The same create again is the same volume; other arguments are a conflict that says what differs.
    status, again = cl.rest.put(f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 3, "thin": True, "labels": {"app": "db"}})
    assert status == 200 and [r["uuid"] for r in again["replica_details"]] == [r["uuid"] for r in reps]
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 128 * MiB, "replicas": 3, "thin": True}), 409, "size")
    assert [x["uuid"] for x in cl.rest.ok("GET", "/v1/volumes")] == [v]
    assert sorted(x["uuid"] for x in cl.rest.ok("GET", "/v1/replicas")) == sorted(r["uuid"] for r in reps)
    assert cl.rest.ok("GET", "/v1/pools/p-node1")["replicas"] == 1
    assert cl.rest.delete(f"/v1/volumes/{v}") == (204, None)
    held = replicas_by_node(cl)
    assert not any(r["uuid"] in held[r["node"]] for r in reps), held
    problem(cl.rest.get(f"/v1/volumes/{v}"), 404, v)
    problem(cl.rest.delete(f"/v1/volumes/{v}"), 404, v)
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k or "/records/" in k]


def test_placement_refusals_say_why_and_topology_is_honoured(cl):
    v = vol_id()
    doc = problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 64 * MiB, "replicas": 4}), 507, "3 of 4",
                  "already holds a replica of the volume")
    assert doc["code"] == "ENOSPC"
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 1 << 40, "replicas": 1}), 507, "needed")
    # Spread by zone: nodes 0 and 1 share zone a, so three replicas cannot be spread; two can.
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3, "topology": {"spread": ["zone"]}}), 507,
            "zone=a already holds a replica")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2, "topology": {"spread": ["zone"]}})
    zones = {cl.rest.ok("GET", f"/v1/nodes/{r['node']}")["labels"]["zone"] for r in doc["replica_details"]}
    assert zones == {"a", "b"}
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    w = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{w}", {"size": 16 * MiB, "topology": {"pool_labels": {"tier": "node1"}}})
    assert [r["node"] for r in doc["replica_details"]] == ["node1"]
    cl.rest.ok("DELETE", f"/v1/volumes/{w}")
    # Nothing was left by the refused creations.
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k]


def test_bad_requests_are_refused_with_the_field_named(cl):
    problem(cl.rest.put("/v1/volumes/not-a-uuid", {"size": MiB}), 400, "not-a-uuid")
    v = vol_id()
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 1000}), 400, "multiple of 4096")
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": MiB, "replicas": 0}), 400, "replicas")
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": MiB, "replica": 2}), 400, "'replica'")
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": "1GiB"}), 400, "'size'")
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": MiB, "topology": {"zones": []}}), 400, "topology.zones")
    problem(cl.rest.call("PUT", f"/v1/volumes/{v}", raw=b"{not json"), 400, "JSON")
    problem(cl.rest.put(f"/v1/volumes/{v}"), 400, "body")
    status, doc = cl.rest.call("POST", f"/v1/volumes/{v}", {"size": MiB})
    assert status == 405 and "GET, PUT, DELETE" in doc["detail"]
    status, doc = Rest_unchecked(cl).get("/v1/nothing")
    assert status == 404 and doc["status"] == 404 and doc["type"] == "about:blank"
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k]


def Rest_unchecked(cl):
    from control_cluster import Rest
    return Rest(cl.rest.base, check=False)


def test_a_pool_holding_replicas_is_not_destroyed_unless_forced(cl):
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    rep = next(r for r in cl.rest.ok("GET", f"/v1/volumes/{v}")["replica_details"] if r["node"] == "node2")
    doc = problem(cl.rest.delete("/v1/pools/p-node2"), 409, "holds 1 replica", rep["uuid"], v)
    assert doc["code"] == "EBUSY"
    assert cl.rest.ok("GET", "/v1/pools/p-node2")["state"] == "created"
    # Forced: the replica leaves its volume (degraded: 2 of 3), the pool goes from the engine too.
    assert cl.rest.delete("/v1/pools/p-node2?force=true") == (204, None)
    problem(cl.rest.get("/v1/pools/p-node2"), 404, "p-node2")
    from io_engine import stubs
    assert not cl.engines[2].api.pool.ListPools(stubs().pool_pb2.ListPoolsRequest(), timeout=30).pools
    vol = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert len(vol["replica_details"]) == 2 and vol["status"] == "degraded"
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    e = cl.engines[2]
    cl.rest.ok("PUT", "/v1/pools/p-node2", {"node": "node2", "disk": cl.disk(e, "p1"), "labels": {"tier": "node2"}})
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k]


def test_a_cordoned_node_gets_nothing_new(cl):
    doc = cl.rest.ok("PUT", "/v1/nodes/node1/cordon/maintenance")
    assert doc["cordons"] == ["maintenance"]
    assert cl.rest.ok("PUT", "/v1/nodes/node1/cordon/maintenance")["cordons"] == ["maintenance"]  # idempotent
    v = vol_id()
    problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3}), 507, "node node1 is cordoned")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    assert sorted(r["node"] for r in doc["replica_details"]) == ["node0", "node2"]
    assert cl.rest.ok("DELETE", "/v1/nodes/node1/cordon/maintenance")["cordons"] == []
    assert cl.rest.ok("DELETE", "/v1/nodes/node1/cordon/maintenance")["cordons"] == []
    problem(cl.rest.put("/v1/nodes/nowhere/cordon/x"), 404, "nowhere")
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_a_dead_engine_goes_offline_and_its_pools_come_back_with_it(cl):
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    e = cl.engines[1]
    t0 = time.monotonic()
    e.kill()
    cl.wait("node1 offline", lambda: cl.node_status("node1") == "offline", timeout=20)
    took = time.monotonic() - t0
    assert took < 10, f"offline after {took:.1f} s (deadline 2 s + a 1 s probe)"
    node = cl.rest.ok("GET", "/v1/nodes/node1")
    assert "no heartbeat" in node["reason"]
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["status"] == "degraded"
    assert cl.rest.ok("GET", "/v1/pools/p-node1")["status"] == "offline"
    # Nothing new goes to an offline node.
    problem(cl.rest.put(f"/v1/volumes/{vol_id()}", {"size": 16 * MiB, "replicas": 3}), 507, "node node1 is offline")
    e.start()
    cl.wait("node1 online", lambda: cl.node_status("node1") == "online", timeout=20)
    cl.wait("p-node1 online", lambda: cl.rest.ok("GET", "/v1/pools/p-node1")["status"] == "online", timeout=20)
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["status"] == "online"
    # A clean stop deregisters first: offline by the time the engine has exited, not after the deadline.
    e.stop()
    node = cl.rest.ok("GET", "/v1/nodes/node1")
    assert node["status"] == "offline" and "deregistered" in node["reason"], node
    # Destroying a volume whose replica's node is away: done now, the replica when the node returns.
    rep = next(r for r in cl.rest.ok("GET", f"/v1/volumes/{v}")["replica_details"] if r["node"] == "node1")
    assert cl.rest.delete(f"/v1/volumes/{v}") == (204, None)
    assert [r["state"] for r in cl.rest.ok("GET", "/v1/replicas")] == ["deleting"]
    e.start()
    cl.wait("the orphan replica destroyed", lambda: not cl.rest.ok("GET", "/v1/replicas"), timeout=20)
    assert rep["uuid"] not in cl.engine_replicas(e)
    cl.wait("p-node1 online", lambda: cl.rest.ok("GET", "/v1/pools/p-node1")["status"] == "online", timeout=20)


@pytest.mark.parametrize("step", ["create:specs", "create:replica", "create:done", "destroy:marked",
                                  "publish:recorded", "publish:created", "snapshot:recorded", "snapshot:taken"])
def test_an_agent_killed_in_the_middle_leaves_no_half_state(cl, step):
    """The leader aborts at `step`; the standby takes over and completes or undoes the operation: no
    half-created volume, no replica on an engine that no spec names, no nexus that no target names."""
    leader = cl.leader
    v = vol_id()
    if not step.startswith("create"):
        cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    before = replicas_by_node(cl)
    leader.stop()
    leader.start(env={"TERN_AGENT_CRASH_AT": step})
    other = next(a for a in cl.agents if a is not leader)
    other.wait_leading()
    # Make the crash-armed agent the leader: the other one steps down (a clean stop hands over at once).
    other.stop()
    leader.wait_leading()
    other.start()
    cl.wait_nodes_online(["node0", "node1", "node2"])
    with pytest.raises(OSError):
        if step.startswith("create"):
            leader.rest.put(f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
        elif step.startswith("publish"):
            leader.rest.put(f"/v1/volumes/{v}/target", {})
        elif step.startswith("snapshot"):
            leader.rest.put(f"/v1/volumes/{v}/snapshots/{vol_id()}", {})
        else:
            leader.rest.delete(f"/v1/volumes/{v}")
    assert leader.wait_exit() != 0
    t0 = time.monotonic()
    other.wait_leading(timeout=20)
    took = time.monotonic() - t0
    assert took < 6, f"the standby took {took:.1f} s to lead (lease TTL 2 s)"
    if step.startswith("publish"):
        # The publish is undone: no target, and no nexus left on any engine.
        cl.wait("the target undone", lambda: "target" not in cl.rest.ok("GET", f"/v1/volumes/{v}"))
        cl.wait("no nexus anywhere", lambda: not any(nexuses(e) for e in cl.engines))
        # And the volume can be published now.
        doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
        assert doc["target"]["state"] == "published" and doc["target"]["generation"] == 2
        cl.rest.ok("DELETE", f"/v1/volumes/{v}")
        assert not any(nexuses(e) for e in cl.engines)
    elif step.startswith("snapshot"):
        # The half-taken snapshot is undone: no spec, and no pool snapshot left on any engine.
        cl.wait("the snapshot undone", lambda: not cl.rest.ok("GET", "/v1/snapshots"))
        cl.wait("no pool snapshot anywhere", lambda: not engine_snapshots(cl))
        assert len(cl.rest.ok("PUT", f"/v1/volumes/{v}/snapshots/{vol_id()}", {})["parts"]) == 3
        cl.rest.ok("DELETE", f"/v1/volumes/{v}")
        cl.rest.ok("DELETE", f"/v1/snapshots/{cl.rest.ok('GET', '/v1/snapshots')[0]['uuid']}")
        assert not engine_snapshots(cl)
    elif step == "create:done":
        # Every replica was made and the specs said so: the volume exists.
        cl.wait("the volume", lambda: cl.rest.get(f"/v1/volumes/{v}")[0] == 200)
        assert cl.rest.ok("GET", f"/v1/volumes/{v}")["state"] == "created"
        cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    else:
        cl.wait("the volume gone", lambda: cl.rest.get(f"/v1/volumes/{v}")[0] == 404)
        cl.wait("its replicas gone", lambda: not cl.rest.ok("GET", "/v1/replicas"))
    # (A replica whose node the new leader has not heard from yet is destroyed once it has.)
    def clean():
        for node, held in replicas_by_node(cl).items():
            extra = set(held) - set(before.get(node, []))
            if extra or (step.startswith("destroy") and held):
                return False
        return True
    cl.wait("no replica that no spec names", clean, timeout=30)
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k or "/snapshots/" in k]
    leader.start()


def test_leader_failover_is_prompt_and_the_old_leader_becomes_a_standby(cl):
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    leader = cl.leader
    other = next(a for a in cl.agents if a is not leader)
    term = leader.rest.ok("GET", "/v1/cluster")["term"]
    t0 = time.monotonic()
    leader.kill()
    other.wait_leading(timeout=20)
    took = time.monotonic() - t0
    assert took < 5, f"takeover after kill -9 took {took:.1f} s (lease TTL 2 s)"
    info = other.rest.ok("GET", "/v1/cluster")
    assert info["term"] > term
    # The new leader knows the nodes at once (they registered with it all along) and has the volume.
    assert all(n["status"] == "online" for n in other.rest.ok("GET", "/v1/nodes"))
    assert other.rest.ok("GET", f"/v1/volumes/{v}")["status"] == "online"
    leader.start()
    assert not leader.leading()
    # A clean stop hands over at once.
    t0 = time.monotonic()
    other.stop()
    leader.wait_leading(timeout=20)
    assert time.monotonic() - t0 < 2, "a resigning leader should hand over at once"
    other.start()
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_publish_puts_the_nexus_on_a_replica_node_and_the_data_follows_a_republish(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 32 * MiB, "replicas": 2})
    holders = sorted(r["node"] for r in doc["replica_details"])
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    t = doc["target"]
    assert t["node"] in holders and t["state"] == "published" and t["generation"] == 1 and t["protocol"] == "nvmf"
    assert t["uri"].startswith("nvmf://") and t["uri"].endswith(v), t
    e = engine(cl, t["node"])
    nx = e.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=v), timeout=30).nexuses[0]
    assert len(nx.children) == 2 and sum(c.local for c in nx.children) == 1, nx
    assert nx.resv_key == 1 and nx.persistence_key == f"/tern/v1/records/{v}" and nx.cntlid_min == 8001
    write_pattern(e, pb, v, 7, 0, 8 * MiB)
    # Idempotent; elsewhere needs republish.
    assert cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})["target"]["generation"] == 1
    other = next(n for n in ["node0", "node1", "node2"] if n != t["node"])
    problem(cl.rest.put(f"/v1/volumes/{v}/target", {"node": other}), 409, f"on node {t['node']}", "republish")
    problem(cl.rest.put(f"/v1/volumes/{v}/target", {"protocol": "iscsi"}), 400, "nvmf or nbd")
    # Republish on another node: the old nexus goes (cleanly), the new one has the data.
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": other, "republish": True})
    assert doc["target"]["node"] == other and doc["target"]["generation"] == 2
    assert nexuses(e) == []
    e2 = engine(cl, other)
    assert verify_pattern(e2, pb, v, 7, 0, 8 * MiB).ok
    rec = cl.etcd.get_json(f"/tern/v1/records/{v}")
    assert all(c["healthy"] for c in rec["children"]), rec
    # Unpublish: the nexus is gone and the record says it stopped cleanly.
    assert cl.rest.delete(f"/v1/volumes/{v}/target") == (204, None)
    assert nexuses(e2) == [] and "target" not in cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert cl.etcd.get_json(f"/tern/v1/records/{v}")["clean_shutdown"] is True
    problem(cl.rest.delete(f"/v1/volumes/{v}/target"), 404, "not published")
    # A published volume is destroyed with its nexus.
    cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    assert cl.rest.delete(f"/v1/volumes/{v}") == (204, None)
    assert not any(nexuses(x) for x in cl.engines)
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/records/" in k]


def test_a_publish_never_serves_from_stale_replicas_alone(cl):
    """A replica that missed writes (its node died under the nexus) is stale: with the current one's node
    down, publishing is refused rather than serve old data; once that node is back, the volume publishes
    with the newest data and the stale replica is rebuilt."""
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    tnode = doc["target"]["node"]
    onode = next(r["node"] for r in doc["replica_details"] if r["node"] != tnode)
    et, eo = engine(cl, tnode), engine(cl, onode)
    write_pattern(et, pb, v, 1, 0, 4 * MiB)
    eo.kill()
    write_pattern(et, pb, v, 2, 0, 4 * MiB)  # the remote child fails under it and is retired, recorded
    rec = cl.etcd.get_json(f"/tern/v1/records/{v}")
    stale = next(r["uuid"] for r in doc["replica_details"] if r["node"] == onode)
    assert [c["healthy"] for c in rec["children"] if c["uuid"] == stale] == [False], rec
    assert cl.rest.delete(f"/v1/volumes/{v}/target") == (204, None)
    et.kill()
    eo.start()
    cl.wait(f"{onode} online", lambda: cl.node_status(onode) == "online")
    cl.wait(f"{tnode} offline", lambda: cl.node_status(tnode) == "offline")
    problem(cl.rest.put(f"/v1/volumes/{v}/target", {}), 409, "current data", tnode)
    assert not nexuses(eo)
    et.start()
    cl.wait(f"{tnode} online", lambda: cl.node_status(tnode) == "online")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": onode})
    assert doc["target"]["generation"] == 2
    assert verify_pattern(eo, pb, v, 2, 0, 4 * MiB).ok  # the newest data, though served from the stale one's node
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_ternctl_cluster_commands(cl):
    """ternctl through the REST API; given the standby first, it moves on to the leader."""
    import subprocess
    ternctl = str(cl.build_dir / "tools/ternctl/ternctl")
    standby = next(a for a in cl.agents if a is not cl.leader)
    agents = f"http://127.0.0.1:{standby.rest_port},127.0.0.1:{cl.leader.rest_port}"

    def run(*args):
        return subprocess.run([ternctl, "--agent", agents, *args], capture_output=True, text=True, timeout=60)

    p = run("get", "nodes")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].split() == ["NODE", "STATUS", "GRPC", "NVMF", "LABELS", "CORDONED", "DRAINING"]
    assert sum(" online " in l for l in p.stdout.splitlines()) == 3, p.stdout
    p = run("volume", "create", "--size", "16MiB", "--replicas", "2", "--thin", "--spread", "zone", "-o", "json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert v["replicas"] == 2 and v["thin"] and v["topology"]["spread"] == ["zone"]
    p = run("describe", "volume", v["uuid"])
    assert p.returncode == 0 and "2 wanted, 2 placed" in p.stdout and "not published" in p.stdout, p.stdout
    p = run("volume", "publish", v["uuid"], "--protocol", "nbd")
    assert p.returncode == 0 and "published on" in p.stdout and "nbd://" in p.stdout, p.stdout + p.stderr
    p = run("describe", "volume", v["uuid"])
    assert p.returncode == 0 and "nexus:       online" in p.stdout and "local" in p.stdout, p.stdout
    p = run("volume", "expand", v["uuid"], "--size", "32MiB")
    assert p.returncode == 0 and "is 32 MiB" in p.stdout, p.stdout + p.stderr
    p = run("volume", "scale", v["uuid"], "3")  # spread by zone: only two zones exist
    assert p.returncode == 6 and "zone=a already holds a replica" in p.stderr, p.stdout + p.stderr
    p = run("volume", "scale", v["uuid"], "1")
    assert p.returncode == 0 and "has 1 replica(s)" in p.stdout, p.stdout + p.stderr
    p = run("volume", "set", v["uuid"], "--max-snapshots", "3", "--rebuild-rate", "64MiB", "--label", "app=db")
    assert p.returncode == 0 and "labels app=db, max snapshots 3, rebuild rate 64 MiB/s" in p.stdout, p.stdout + p.stderr
    p = run("volume", "set", v["uuid"])
    assert p.returncode != 0 and "nothing to set" in p.stderr, p.stdout + p.stderr
    p = run("rebuild-history", v["uuid"])
    assert p.returncode == 0 and p.stdout == "No rebuilds.\n", p.stdout + p.stderr  # both replicas were made together
    snap = str(uuid.uuid4())
    p = run("volume", "snapshot", v["uuid"], snap, "--name", "t1")
    assert p.returncode == 0 and f"snapshot {snap} of volume {v['uuid']} taken: 1 part(s)" in p.stdout, p.stdout + p.stderr
    p = run("get", "snapshots")
    assert p.returncode == 0 and snap in p.stdout and " t1 " in p.stdout, p.stdout
    p = run("volume", "create", "--from-snapshot", snap, "-o", "json")
    assert p.returncode == 0, p.stderr
    restored = json.loads(p.stdout)
    assert restored["source_snapshot"] == snap and restored["size"] == 32 * MiB
    p = run("describe", "volume", restored["uuid"])
    assert p.returncode == 0 and f"from snapshot {snap}" in p.stdout, p.stdout
    assert run("volume", "destroy", restored["uuid"]).returncode == 0
    p = run("volume", "snapshot-destroy", snap)
    assert p.returncode == 0 and "destroyed" in p.stdout, p.stdout + p.stderr
    p = run("volume", "unpublish", v["uuid"])
    assert p.returncode == 0 and "unpublished" in p.stdout
    p = run("volume", "unpublish", v["uuid"])
    assert p.returncode == 3 and "not published" in p.stderr
    p = run("get", "volumes", "-o", "yaml")
    assert p.returncode == 0 and f"uuid: {v['uuid']}" in p.stdout, p.stdout
    p = run("volume", "create", v["uuid"], "--size", "64MiB", "--replicas", "2")
    assert p.returncode == 4 and "size" in p.stderr, (p.returncode, p.stderr)  # exists with other arguments
    p = run("volume", "create", "--size", "16MiB", "--replicas", "4")
    assert p.returncode == 6 and "3 of 4" in p.stderr, (p.returncode, p.stderr)  # no room
    p = run("node", "cordon", "node0", "--label", "t")
    assert p.returncode == 0 and "t" in p.stdout
    assert run("node", "uncordon", "node0", "--label", "t").returncode == 0
    p = run("cluster", "pool", "remove", "p-node9")
    assert p.returncode == 3, p.stderr
    p = run("cluster", "status")
    assert p.returncode == 0 and "3 of 3 online" in p.stdout, p.stdout
    p = run("volume", "destroy", v["uuid"])
    assert p.returncode == 0 and "destroyed" in p.stdout
    p = run("describe", "volume", v["uuid"])
    assert p.returncode == 3 and "does not exist" in p.stderr
    p = subprocess.run([ternctl, "--agent", "127.0.0.1:1", "get", "nodes"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 7 and "cannot reach the agent" in p.stderr, p.stderr



def test_a_replica_that_returns_is_onlined_and_rebuilds_only_what_it_missed(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    tnode = doc["target"]["node"]
    et = engine(cl, tnode)
    away = next(r for r in doc["replica_details"] if r["node"] != tnode)
    ea = engine(cl, away["node"])
    write_pattern(et, pb, v, 1, 0, 16 * MiB)
    ea.kill()
    write_pattern(et, pb, v, 2, 0, 1 * MiB)  # the child is retired under these writes; the others log them
    ea.start()
    c = cl.wait("the child rebuilt", lambda: rebuilt(et, v, away["uuid"]), timeout=60)
    assert c.rebuild.kind == "partial", c.rebuild
    assert c.rebuild.copied_bytes <= 2 * MiB, c.rebuild
    assert verify_pattern(ea, pb, away["uuid"], 2, 0, 1 * MiB).ok
    assert verify_pattern(ea, pb, away["uuid"], 1, 1 * MiB, 15 * MiB).ok
    got = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert got["status"] == "online" and got["nexus"]["state"] == "online"
    ch = next(x for x in got["nexus"]["children"] if x["uuid"] == away["uuid"])
    assert ch["rebuild"]["kind"] == "partial" and ch["rebuild"]["state"] == "completed" and ch["synced"], ch
    assert sum(x["local"] for x in got["nexus"]["children"]) == 1
    hist = cl.rest.ok("GET", f"/v1/volumes/{v}/rebuild_history")["rebuilds"]
    assert [(h["child"], h["kind"], h["state"]) for h in hist] == [(away["uuid"], "partial", "completed")], hist
    rec = cl.rest.ok("GET", f"/v1/volumes/{v}/record")
    assert len(rec["children"]) == 3 and all(c["healthy"] for c in rec["children"]) and rec["generation"] >= 1, rec
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    problem(cl.rest.get(f"/v1/volumes/{v}/record"), 404, "does not exist")


def test_when_the_target_node_dies_the_volume_is_served_from_another(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    tnode = doc["target"]["node"]
    et = engine(cl, tnode)
    write_pattern(et, pb, v, 3, 0, 16 * MiB)
    t0 = time.monotonic()
    et.kill()

    def moved():
        d = cl.rest.ok("GET", f"/v1/volumes/{v}")
        t = d.get("target")
        return t and t["node"] != tnode and t["state"] == "published" and d
    d = cl.wait("the target moved", moved, timeout=40)
    took = time.monotonic() - t0
    assert took < 20, f"switch-over took {took:.1f} s (node deadline 2 s)"
    assert d["target"]["generation"] == 2
    en = engine(cl, d["target"]["node"])
    assert verify_pattern(en, pb, v, 3, 0, 16 * MiB).ok
    # The old node returns: its replica joins the new nexus and is rebuilt.
    old = next(r for r in d["replica_details"] if r["node"] == tnode)
    et.start()
    cl.wait("the returning replica rebuilt", lambda: rebuilt(en, v, old["uuid"]), timeout=60)
    assert not nexuses(et), "the dead node's nexus must not come back"
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_a_replica_away_too_long_is_replaced_elsewhere(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    tnode = doc["target"]["node"]
    et = engine(cl, tnode)
    away = next(r for r in doc["replica_details"] if r["node"] != tnode)
    spare = next(n for n in ["node0", "node1", "node2"] if n not in (tnode, away["node"]))
    ea = engine(cl, away["node"])
    write_pattern(et, pb, v, 4, 0, 16 * MiB)
    ea.kill()
    write_pattern(et, pb, v, 5, 0, 1 * MiB)

    def replaced():
        d = cl.rest.ok("GET", f"/v1/volumes/{v}")
        new = [r for r in d["replica_details"] if r["node"] == spare]
        return new and rebuilt(et, v, new[0]["uuid"]) and new[0]
    new = cl.wait("a replica on the spare node, rebuilt", replaced, timeout=60)
    d = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert sorted(r["node"] for r in d["replica_details"]) == sorted([tnode, spare]) and d["status"] == "online"
    es = engine(cl, spare)
    assert verify_pattern(es, pb, new["uuid"], 5, 0, 1 * MiB).ok
    assert verify_pattern(es, pb, new["uuid"], 4, 1 * MiB, 15 * MiB).ok
    # The old replica is destroyed when its node returns.
    assert [r["uuid"] for r in cl.rest.ok("GET", "/v1/replicas") if r["state"] == "deleting"] == [away["uuid"]]
    ea.start()
    cl.wait("the old replica destroyed", lambda: away["uuid"] not in cl.engine_replicas(ea), timeout=30)
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_a_hundred_volumes_at_once_leave_nothing_behind(cl):
    """100 volumes created, published, written and read back, unpublished and destroyed by 10 clients at
    once: every one works, and at the end no replica, nexus, subsystem or etcd key of them is left."""
    import concurrent.futures
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    subsystems_before = {e.name: len(e.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(), timeout=30).subsystems)
                         for e in cl.engines}
    replicas_before = replicas_by_node(cl)

    def life(i):
        v = vol_id()
        cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 8 * MiB, "replicas": 2, "thin": True}, timeout=120)
        doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {}, timeout=120)
        e = engine(cl, doc["target"]["node"])
        write_pattern(e, pb, v, 10 + i, 0, MiB)
        assert verify_pattern(e, pb, v, 10 + i, 0, MiB).ok
        r = cl.rest.delete(f"/v1/volumes/{v}/target", timeout=120)
        assert r == (204, None), r
        r = cl.rest.delete(f"/v1/volumes/{v}", timeout=120)
        assert r == (204, None), r
        return v

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        done = list(ex.map(life, range(100)))
    assert len(set(done)) == 100
    assert cl.rest.ok("GET", "/v1/volumes") == [] and cl.rest.ok("GET", "/v1/replicas") == []
    assert replicas_by_node(cl) == replicas_before
    for e in cl.engines:
        assert nexuses(e) == []
        n = len(e.api.nvmf.ListSubsystems(pb.nvmf_pb2.ListSubsystemsRequest(), timeout=30).subsystems)
        assert n == subsystems_before[e.name], f"{e.name}: {n} subsystems, {subsystems_before[e.name]} before"
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k or "/records/" in k]
    for p in cl.rest.ok("GET", "/v1/pools"):
        assert p["replicas"] == 0


def test_etcd_restarted_under_the_agents(cl):
    """etcd stops: requests get 503 naming the cause, nothing is half-done; etcd returns: an agent leads
    again with every spec intact and the volume still served."""
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    node = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})["target"]["node"]
    agents = [a for a in cl.agents if a.running()]
    cl.etcd.stop()
    try:
        w = vol_id()
        status, doc = agents[0].rest.put(f"/v1/volumes/{w}", {"size": 16 * MiB, "replicas": 2}, timeout=60)
        assert status == 503, (status, doc)
        assert "etcd" in doc["detail"] or "leads" in doc["detail"], doc
    finally:
        cl.etcd.start()
    cl.wait("an agent leads again", lambda: any(a.leading() for a in agents), timeout=30)
    doc = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert doc["target"]["node"] == node and doc["target"]["state"] == "published" and doc["status"] == "online"
    assert cl.rest.get(f"/v1/volumes/{w}")[0] == 404  # the refused create left nothing
    assert nexuses(engine(cl, node)) == [v]
    cl.rest.ok("PUT", f"/v1/volumes/{w}", {"size": 16 * MiB, "replicas": 2})
    cl.rest.ok("DELETE", f"/v1/volumes/{w}")
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    assert not [k for k in cl.etcd_keys() if "/volumes/" in k or "/replicas/" in k]


def test_scaling_a_published_volume_up_and_down(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 1})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    et = engine(cl, doc["target"]["node"])
    write_pattern(et, pb, v, 21, 0, 8 * MiB)
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/replica_count/3")
    assert doc["replicas"] == 3 and len({r["node"] for r in doc["replica_details"]}) == 3
    new = [r for r in doc["replica_details"] if r["node"] != et.name]
    for r in new:
        cl.wait(f"{r['uuid']} rebuilt", lambda: rebuilt(et, v, r["uuid"]), timeout=60)
        assert verify_pattern(engine(cl, r["node"]), pb, r["uuid"], 21, 0, 8 * MiB).ok
    problem(cl.rest.put(f"/v1/volumes/{v}/replica_count/4"), 507, "already holds a replica")
    assert cl.rest.ok("GET", f"/v1/volumes/{v}")["replicas"] == 3  # a scale that cannot be placed changes nothing
    problem(cl.rest.put(f"/v1/volumes/{v}/replica_count/0"), 400, "1 to 8")
    problem(cl.rest.put(f"/v1/volumes/{v}/replica_count/x"), 400, "replica count")
    # Down to one: the local replica of the target stays; the others leave the nexus and their engines.
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/replica_count/1")
    assert doc["replicas"] == 1 and [r["node"] for r in doc["replica_details"]] == [et.name]
    nx = et.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=v), timeout=30).nexuses[0]
    assert [c.local for c in nx.children] == [True]
    for r in new:
        assert r["uuid"] not in cl.engine_replicas(engine(cl, r["node"]))
    assert verify_pattern(et, pb, v, 21, 0, 8 * MiB).ok
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_expanding_a_published_volume_online(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 2})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    et = engine(cl, doc["target"]["node"])
    write_pattern(et, pb, v, 31, 0, 16 * MiB)
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/size/{32 * MiB}")
    assert doc["size"] == 32 * MiB
    assert all(r["size"] == required_child_bytes(32 * MiB) for r in doc["replica_details"])
    nx = et.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=v), timeout=30).nexuses[0]
    assert nx.size == 32 * MiB
    write_pattern(et, pb, v, 32, 16 * MiB, 16 * MiB)
    assert verify_pattern(et, pb, v, 31, 0, 16 * MiB).ok and verify_pattern(et, pb, v, 32, 16 * MiB, 16 * MiB).ok
    assert cl.rest.ok("PUT", f"/v1/volumes/{v}/size/{32 * MiB}")["size"] == 32 * MiB  # the same size: nothing to do
    problem(cl.rest.put(f"/v1/volumes/{v}/size/{16 * MiB}"), 400, "shrinking")
    problem(cl.rest.put(f"/v1/volumes/{v}/size/1000"), 400, "multiple of 4096")
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_draining_a_node_moves_its_targets_and_keeps_it_cordoned(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    node = doc["target"]["node"]
    write_pattern(engine(cl, node), pb, v, 41, 0, 16 * MiB)
    n = cl.rest.ok("PUT", f"/v1/nodes/{node}/drain/upgrade")
    assert n["cordons"] == ["upgrade"] and n["draining"] is False
    doc = cl.rest.ok("GET", f"/v1/volumes/{v}")
    assert doc["target"]["node"] != node and doc["target"]["state"] == "published"
    assert nexuses(engine(cl, node)) == []
    assert verify_pattern(engine(cl, doc["target"]["node"]), pb, v, 41, 0, 16 * MiB).ok
    problem(cl.rest.put(f"/v1/volumes/{v}/target", {"node": node, "republish": True}), 409, "cordoned")
    assert cl.rest.ok("DELETE", f"/v1/nodes/{node}/cordon/upgrade")["cordons"] == []
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_a_spec_the_agent_cannot_read_is_left_alone(cl):
    """Garbage under a volume's key (a newer agent's format, a hand edit): the leader reports it, lists
    nothing for it, and refuses to overwrite or remove it; once an operator removes it, the name is free."""
    import base64
    v = vol_id()
    key = f"/tern/v1/volumes/{v}"
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    cl.etcd._post("/v3/kv/put", {"key": b64(key), "value": b64('{"v": 9, "uuid": "from the future"}')})

    def failover():
        old = cl.leader
        other = next(a for a in cl.agents if a is not old)
        old.stop()
        other.wait_leading()
        old.start()
        cl.wait_nodes_online(["node0", "node1", "node2"])
    failover()
    assert v not in [x["uuid"] for x in cl.rest.ok("GET", "/v1/volumes")]
    doc = problem(cl.rest.put(f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 1}), 409, key, "cannot read")
    assert doc["code"] == "CORRUPTION", doc
    assert cl.etcd.get(key) == '{"v": 9, "uuid": "from the future"}'
    assert not [r for r in cl.rest.ok("GET", "/v1/replicas") if r["volume"] == v]
    cl.etcd._post("/v3/kv/deleterange", {"key": b64(key)})
    failover()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 1})
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_snapshots_are_of_one_instant_and_restore_into_new_volumes(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v, r, s1, s2 = vol_id(), vol_id(), vol_id(), vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    et = engine(cl, cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})["target"]["node"])
    write_pattern(et, pb, v, 51, 0, 16 * MiB)
    # Taken through the nexus: every replica, one instant; idempotent by UUID.
    snap = cl.rest.ok("PUT", f"/v1/volumes/{v}/snapshots/{s1}", {"name": "before"})
    assert snap["state"] == "created" and snap["status"] == "online" and snap["size"] == 16 * MiB
    assert sorted(p["node"] for p in snap["parts"]) == ["node0", "node1", "node2"]
    assert set(engine_snapshots(cl)) == {p["uuid"] for p in snap["parts"]}
    assert cl.rest.put(f"/v1/volumes/{v}/snapshots/{s1}", {"name": "before"})[0] == 200
    problem(cl.rest.put(f"/v1/volumes/{v}/snapshots/{s1}", {"name": "other"}), 409, "named 'before'")
    problem(cl.rest.put(f"/v1/volumes/{vol_id()}/snapshots/{s1}", {}), 404, "does not exist")
    problem(cl.rest.put(f"/v1/volumes/{v}/snapshots/nope", {}), 400, "not a snapshot UUID")
    problem(cl.rest.put(f"/v1/volumes/{v}/snapshots/{vol_id()}", {"nmae": "x"}), 400, "'nmae' is not a field")
    assert [x["uuid"] for x in cl.rest.ok("GET", f"/v1/volumes/{v}/snapshots")] == [s1]
    assert cl.rest.ok("GET", f"/v1/snapshots/{s1}")["name"] == "before"
    write_pattern(et, pb, v, 52, 0, 16 * MiB)  # the volume moves on; the snapshot does not
    # Restore: clones of the parts on their pools; the new nexus adopts them in sync (no rebuild).
    problem(cl.rest.put(f"/v1/volumes/{r}", {"snapshot": s1, "replicas": 4}), 507, "4 replica(s) asked, 3 of its 3")
    problem(cl.rest.put(f"/v1/volumes/{r}", {"snapshot": s1, "replicas": 3, "size": 32 * MiB}), 400, "expand it afterwards")
    problem(cl.rest.put(f"/v1/volumes/{r}", {"snapshot": vol_id(), "replicas": 1}), 404, "does not exist")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{r}", {"snapshot": s1, "replicas": 3})
    assert doc["size"] == 16 * MiB and doc["thin"] is True and doc["source_snapshot"] == s1
    assert sorted(x["clone_of"] for x in doc["replica_details"]) == sorted(p["uuid"] for p in snap["parts"])
    assert cl.rest.put(f"/v1/volumes/{r}", {"snapshot": s1, "replicas": 3})[0] == 200
    assert cl.rest.ok("GET", f"/v1/snapshots/{s1}")["clones"] == 3
    er = engine(cl, cl.rest.ok("PUT", f"/v1/volumes/{r}/target", {})["target"]["node"])
    nx = er.api.nexus.ListNexuses(pb.nexus_pb2.ListNexusesRequest(uuid=r), timeout=30).nexuses[0]
    assert len(nx.children) == 3 and all(c.synced for c in nx.children), nx
    assert cl.rest.ok("GET", f"/v1/volumes/{r}/rebuild_history")["rebuilds"] == []
    assert verify_pattern(er, pb, r, 51, 0, 16 * MiB).ok
    assert all(c["healthy"] for c in cl.rest.ok("GET", f"/v1/volumes/{r}/record")["children"])
    write_pattern(er, pb, r, 53, 0, 8 * MiB)
    assert verify_pattern(et, pb, v, 52, 0, 16 * MiB).ok  # the source is untouched by its clone's writes
    # A pool holding a snapshot part is not destroyed unless forced, and says so.
    problem(cl.rest.delete("/v1/pools/p-node0"), 409, "snapshot", s1)
    # Not published: the snapshot is taken replica by replica (nothing writes meanwhile).
    cl.rest.ok("DELETE", f"/v1/volumes/{v}/target")
    assert len(cl.rest.ok("PUT", f"/v1/volumes/{v}/snapshots/{s2}", {})["parts"]) == 3
    # A snapshot with clones is destroyed; the clones keep their data (the engine keeps what they read).
    assert cl.rest.delete(f"/v1/snapshots/{s1}") == (204, None)
    problem(cl.rest.get(f"/v1/snapshots/{s1}"), 404, "does not exist")
    assert verify_pattern(er, pb, r, 53, 0, 8 * MiB).ok and verify_pattern(er, pb, r, 51, 8 * MiB, 8 * MiB).ok
    # A volume's snapshots outlive it.
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    assert cl.rest.ok("GET", f"/v1/snapshots/{s2}")["volume_exists"] is False
    cl.rest.ok("DELETE", f"/v1/volumes/{r}")
    assert cl.rest.delete(f"/v1/snapshots/{s2}") == (204, None)
    problem(cl.rest.delete(f"/v1/snapshots/{s2}"), 404, "does not exist")
    cl.wait("no pool snapshot anywhere", lambda: not engine_snapshots(cl))
    assert not [k for k in cl.etcd_keys() if "/snapshots/" in k or "/volumes/" in k or "/replicas/" in k]


def lead_with_env(cl, env):
    """Restarts the leader with `env` and makes it lead again (the standby hands over on a clean stop)."""
    leader = cl.leader
    other = next(a for a in cl.agents if a is not leader)
    leader.stop()
    leader.start(env=env)
    other.wait_leading()
    other.stop()
    leader.wait_leading()
    other.start()
    cl.wait_nodes_online(["node0", "node1", "node2"])
    return leader


def test_rebuilds_wait_for_a_slot_under_max_rebuilds(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    leader = lead_with_env(cl, {"TERN_AGENT_MAX_REBUILDS": "1"})
    try:
        vols = [vol_id(), vol_id()]
        e0, e2 = engine(cl, "node0"), engine(cl, "node2")
        away = {}
        for v in vols:
            doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
            away[v] = next(r["uuid"] for r in doc["replica_details"] if r["node"] == "node2")
            cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {"node": "node0"})
            write_pattern(e0, pb, v, 61, 0, 16 * MiB)
        e2.kill()
        for v in vols:
            write_pattern(e0, pb, v, 62, 0, 1 * MiB)  # each nexus retires its child on node2
        e2.start()
        for v in vols:
            cl.wait(f"{away[v]} rebuilt", lambda: rebuilt(e0, v, away[v]), timeout=60)
            assert verify_pattern(e2, pb, away[v], 62, 0, 1 * MiB).ok and verify_pattern(e2, pb, away[v], 61, 1 * MiB, 15 * MiB).ok
        # Both came back in one pass: the second waited for the first one's slot.
        assert "waits: 1 rebuilds run (--max-rebuilds 1)" in leader.log(), leader.log()[-3000:]
        for v in vols:
            cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    finally:
        lead_with_env(cl, {})


def test_orphans_no_spec_names_are_collected_and_hand_made_objects_are_not(cl):
    """A replica (and a snapshot) named by a UUID in a declared pool with no spec is destroyed after the
    grace (--orphan-grace-ms 2000 here); one an operator named otherwise is left alone."""
    from io_engine import stubs
    pb = stubs()
    e1 = engine(cl, "node1")
    orphan = str(uuid.uuid4())
    e1.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name=orphan, uuid=orphan, pool="p-node1", size=4 * MiB,
                                                                     thin=True), timeout=30)
    snap = e1.api.snapshot.CreateSnapshot(pb.snapshot_pb2.CreateSnapshotRequest(
        replica=pb.replica_pb2.ReplicaRef(uuid=orphan), name=str(uuid.uuid4())), timeout=30)
    mine = e1.api.replica.CreateReplica(pb.replica_pb2.CreateReplicaRequest(name="operators-own", pool="p-node1", size=4 * MiB,
                                                                            thin=True), timeout=30)
    t0 = time.monotonic()
    cl.wait("the orphans destroyed", lambda: orphan not in cl.engine_replicas(e1) and snap.uuid not in engine_snapshots(cl),
            timeout=30)
    assert time.monotonic() - t0 >= 1.5  # not before the grace
    assert mine.uuid in cl.engine_replicas(e1)
    assert "was named by no spec" in cl.leader.log()
    status, text = cl.rest.get("/metrics")
    assert status == 200 and "tern_agent_orphans_collected_total 2" in text, text
    e1.api.replica.DestroyReplica(pb.replica_pb2.ReplicaRef(uuid=mine.uuid), timeout=30)


def test_the_rest_api_over_tls(cl, tmp_path):
    """--tls-cert/--tls-key: HTTPS only; ternctl checks the agent's certificate (--agent-ca). The agent here
    runs a cluster of its own (another key prefix in the same etcd)."""
    import ssl
    import subprocess

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=tmp_path)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=tern test CA")
    openssl("req", *ec, "-keyout", "agent.key", "-out", "agent.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "agent.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "agent.crt",
            "-days", "1", "-extfile", "san.ext")
    a = Agent(cl.build_dir, cl.workdir, cl.etcd, name="agent-tls",
              extra_args=["--prefix", "/tern-tls/v1", "--tls-cert", str(tmp_path / "agent.crt"),
                          "--tls-key", str(tmp_path / "agent.key")])
    a.rest = Rest(f"https://127.0.0.1:{a.rest_port}", context=ssl.create_default_context(cafile=str(tmp_path / "ca.crt")))
    a.start()
    try:
        a.wait_leading()
        assert a.rest.ok("GET", "/v1/nodes") == []
        problem(a.rest.get("/v1/volumes/nope"), 400, "not a volume UUID")
        with pytest.raises(OSError):  # plain HTTP gets no answer from a TLS port
            Rest(f"http://127.0.0.1:{a.rest_port}", check=False).get("/v1/cluster", timeout=5)
        ternctl = str(cl.build_dir / "tools/ternctl/ternctl")
        url = f"https://127.0.0.1:{a.rest_port}"
        p = subprocess.run([ternctl, "--agent", url, "--agent-ca", str(tmp_path / "ca.crt"), "cluster", "status"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "agent-tls" in p.stdout, p.stdout + p.stderr
        p = subprocess.run([ternctl, "--agent", url, "get", "nodes"], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "not trusted" in p.stderr, p.stdout + p.stderr
        p = subprocess.run([ternctl, "--agent", f"https://localhost:{a.rest_port}", "--agent-ca", str(tmp_path / "ca.crt"),
                            "get", "nodes"], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "not trusted" in p.stderr, p.stdout + p.stderr  # the certificate names 127.0.0.1 only
    finally:
        a.stop()
    bad = Agent(cl.build_dir, cl.workdir, cl.etcd, name="agent-tls-bad",
                extra_args=["--prefix", "/tern-tls/v1", "--tls-cert", str(tmp_path / "ca.crt"),
                            "--tls-key", str(tmp_path / "agent.key")])
    with pytest.raises(AssertionError, match="TLS key .*mismatch.*is it the key of certificate"):
        bad.start(timeout=10)


def test_draining_with_replicas_moves_each_without_losing_redundancy(cl):
    """drain ?replicas=true: targets move at once; each replica on the node is rebuilt elsewhere before it
    goes (an unpublished volume gets a nexus no host may use for the copy, removed afterwards)."""
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    a, b = vol_id(), vol_id()
    for n in ["node0"]:
        cl.rest.ok("PUT", f"/v1/nodes/{n}/cordon/t")
    cl.rest.ok("PUT", f"/v1/volumes/{a}", {"size": 16 * MiB, "replicas": 2})  # on node1 and node2
    cl.rest.ok("PUT", "/v1/nodes/node1/cordon/t")
    cl.rest.ok("PUT", f"/v1/volumes/{b}", {"size": 16 * MiB, "replicas": 1})  # on node2
    for n in ["node0", "node1"]:
        cl.rest.ok("DELETE", f"/v1/nodes/{n}/cordon/t")
    e1, e2 = engine(cl, "node1"), engine(cl, "node2")
    cl.rest.ok("PUT", f"/v1/volumes/{a}/target", {"node": "node1"})
    write_pattern(e1, pb, a, 71, 0, 16 * MiB)
    cl.rest.ok("PUT", f"/v1/volumes/{b}/target", {"node": "node2"})
    write_pattern(e2, pb, b, 72, 0, 16 * MiB)
    cl.rest.ok("DELETE", f"/v1/volumes/{b}/target")
    problem(cl.rest.put("/v1/nodes/node2/drain/evac?replicas=maybe"), 400, "true or false")
    st, n = cl.rest.put("/v1/nodes/node2/drain/evac?replicas=true")
    assert st == 202 and n["evacuating"] and n["draining"] and n["replicas"] == 2, n
    write_pattern(e1, pb, a, 73, 0, 4 * MiB)  # the volume is written while its replica moves
    cl.wait("node2 evacuated", lambda: not cl.rest.ok("GET", "/v1/nodes/node2")["evacuating"], timeout=60)
    n = cl.rest.ok("GET", "/v1/nodes/node2")
    assert n["draining"] is False and n["cordons"] == ["evac"], n
    assert not [r for r in cl.rest.ok("GET", "/v1/replicas") if r["node"] == "node2"]
    assert not set(cl.engine_replicas(e2)) & {r["uuid"] for r in cl.rest.ok("GET", "/v1/replicas")}
    da, db = cl.rest.ok("GET", f"/v1/volumes/{a}"), cl.rest.ok("GET", f"/v1/volumes/{b}")
    assert sorted(r["node"] for r in da["replica_details"]) == ["node0", "node1"] and da["target"]["node"] == "node1"
    assert "target" not in db and len(db["replica_details"]) == 1  # its copy's nexus is gone again
    assert not any(nexuses(engine(cl, x)) == [b] for x in ["node0", "node1", "node2"])
    for r in da["replica_details"]:
        assert verify_pattern(engine(cl, r["node"]), pb, r["uuid"], 73, 0, 4 * MiB).ok
        assert verify_pattern(engine(cl, r["node"]), pb, r["uuid"], 71, 4 * MiB, 12 * MiB).ok
    rb = db["replica_details"][0]
    assert verify_pattern(engine(cl, rb["node"]), pb, rb["uuid"], 72, 0, 16 * MiB).ok
    cl.rest.ok("DELETE", "/v1/nodes/node2/cordon/evac")
    for v in (a, b):
        cl.rest.ok("DELETE", f"/v1/volumes/{v}")


def test_volume_properties_limit_snapshots_and_rebuild_rate(cl):
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    v = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 1, "labels": {"app": "db"}})
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/properties", {"max_snapshots": 1, "rebuild_rate_bytes_per_s": MiB})
    assert doc["max_snapshots"] == 1 and doc["rebuild_rate_bytes_per_s"] == MiB and doc["labels"] == {"app": "db"}
    assert cl.rest.ok("PUT", f"/v1/volumes/{v}/properties", {"labels": {"app": "queue"}})["labels"] == {"app": "queue"}
    problem(cl.rest.put(f"/v1/volumes/{v}/properties", {"rebuild_rate_bytes_per_s": 1000}), 400, "at least 1 MiB/s")
    problem(cl.rest.put(f"/v1/volumes/{v}/properties", {"max_snaphots": 2}), 400, "'max_snaphots' is not a field")
    problem(cl.rest.put(f"/v1/volumes/{vol_id()}/properties", {"max_snapshots": 2}), 404, "does not exist")
    s1 = vol_id()
    cl.rest.ok("PUT", f"/v1/volumes/{v}/snapshots/{s1}", {})
    problem(cl.rest.put(f"/v1/volumes/{v}/snapshots/{vol_id()}", {}), 409, "max_snapshots")
    # The rate reaches the nexus at publish; a change reaches its running rebuild at once.
    et = engine(cl, cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})["target"]["node"])
    write_pattern(et, pb, v, 81, 0, 16 * MiB)
    new = next(r for r in cl.rest.ok("PUT", f"/v1/volumes/{v}/replica_count/2")["replica_details"] if r["node"] != et.name)
    c = cl.wait("the rebuild running", lambda: (lambda ch: ch if ch is not None and ch.HasField("rebuild") and
                                                 ch.rebuild.state == pb.nexus_pb2.REBUILD_STATE_RUNNING else None)(child(et, v, new["uuid"])))
    assert c.rebuild.rate_limit == MiB, c.rebuild
    cl.rest.ok("PUT", f"/v1/volumes/{v}/properties", {"rebuild_rate_bytes_per_s": 0})
    c = child(et, v, new["uuid"])
    assert c.synced or c.rebuild.rate_limit == 0, c.rebuild
    cl.wait("rebuilt", lambda: rebuilt(et, v, new["uuid"]), timeout=60)
    assert verify_pattern(engine(cl, new["node"]), pb, new["uuid"], 81, 0, 16 * MiB).ok
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
    cl.rest.ok("DELETE", f"/v1/snapshots/{s1}")


def test_an_engine_killed_during_create_and_publish(cl):
    """kill -9 of an engine the agent still counts online: a create that placed a replica there fails and is
    undone (nothing left on the other engines); a publish whose nexus was to go there fails and is undone;
    once the node is seen offline the publish goes elsewhere, degraded, and the replica rejoins when the
    engine returns."""
    from io_engine import stubs
    from nexus_util import verify_pattern, write_pattern
    pb = stubs()
    e2 = engine(cl, "node2")
    before = replicas_by_node(cl)
    v = vol_id()
    e2.kill()
    st, doc = cl.rest.put(f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    assert st in (503, 507), (st, doc)  # mid-create (the engine refused the call) or already seen offline
    assert "node2" in doc["detail"], doc
    assert cl.rest.get(f"/v1/volumes/{v}")[0] == 404
    assert {n: r for n, r in replicas_by_node(cl).items()} == {n: before[n] for n in ["node0", "node1"]}
    e2.start()
    cl.wait("node2 online", lambda: cl.node_status("node2") == "online")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}", {"size": 16 * MiB, "replicas": 3})
    e2.kill()
    st, doc = cl.rest.put(f"/v1/volumes/{v}/target", {"node": "node2"})
    assert st in (409, 503), (st, doc)
    assert "target" not in cl.rest.ok("GET", f"/v1/volumes/{v}")
    cl.wait("node2 offline", lambda: cl.node_status("node2") == "offline")
    doc = cl.rest.ok("PUT", f"/v1/volumes/{v}/target", {})
    et = engine(cl, doc["target"]["node"])
    assert et.name != "node2"
    write_pattern(et, pb, v, 91, 0, 16 * MiB)
    r2 = next(r["uuid"] for r in doc["replica_details"] if r["node"] == "node2")
    e2.start()
    cl.wait("node2's replica rejoined and rebuilt", lambda: rebuilt(et, v, r2), timeout=60)
    assert verify_pattern(e2, pb, r2, 91, 0, 16 * MiB).ok
    cl.rest.ok("DELETE", f"/v1/volumes/{v}")
