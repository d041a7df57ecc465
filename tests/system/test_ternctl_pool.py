"""`ternctl offline pool create` and `check` on real files: what an operator sees for a clean pool,
for damage that import repairs by itself, for damage it refuses, and when the check cannot run. Exit
codes follow fsck: 0 clean, 1 repairable, 4 damaged or no pool, 8 operational error."""
import json
import os
import subprocess

import pytest

from conftest import make_file

MiB = 1 << 20


@pytest.fixture
def ternctl(build_dir):
    binary = build_dir / "tools/ternctl/ternctl"
    if not binary.exists():
        pytest.fail(f"ternctl is not built in {build_dir}")

    def run(*args):
        p = subprocess.run([str(binary), "offline", "pool", *args], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr
    return run


def corrupt(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def check_json(ternctl, uri):
    rc, out, err = ternctl("check", uri, "-o", "json")
    return rc, json.loads(out), err


def test_create_and_check_a_clean_pool(ternctl, scratch):
    img = make_file(scratch / "pool.img", 256 * MiB)
    uri = f"uring://{img}"
    rc, out, err = ternctl("check", uri)
    assert rc == 4 and "no pool on this device" in out, (rc, out, err)
    rc, out, err = ternctl("create", uri, "--name", "p1")
    assert rc == 0, err
    assert "created pool 'p1'" in out and "clusters of 4 MiB" in out
    rc, out, err = ternctl("create", uri, "--name", "p2")
    assert rc == 1 and "already holds pool 'p1'" in err, (rc, out, err)
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 0, err
    assert rep["state"] == "clean" and rep["pool"] == "p1" and rep["exported_cleanly"] is True
    assert rep["cluster_size"] == 4 * MiB and rep["used_clusters"] == 0 and rep["replicas"] == []
    rc, out, err = ternctl("check", uri)
    assert rc == 0 and "every checksum and invariant holds" in out


def test_label_damage_is_repairable_and_both_labels_damaged_is_not(ternctl, scratch):
    img = make_file(scratch / "pool.img", 256 * MiB)
    uri = f"uring://{img}"
    assert ternctl("create", uri, "--name", "p1")[0] == 0
    corrupt(img, 0, b"\0" * 4096)  # wipefs over the start
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 1, err
    assert rep["state"] == "repairable" and "rewriting it from the backup" in rep["note"]
    corrupt(img, 256 * MiB - 4096 + 40, b"\xff")  # and the backup's name: checksum mismatch
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 4, (rep, err)
    assert rep["state"] == "damaged" and "checksum mismatch" in rep["error"]


def test_metadata_damage_is_reported_with_its_place(ternctl, scratch):
    img = make_file(scratch / "pool.img", 256 * MiB)
    uri = f"uring://{img}"
    assert ternctl("create", uri, "--name", "p1")[0] == 0
    corrupt(img, 1 * MiB + 30, b"\x7f")  # checkpoint A's header (generation field)
    rc, out, err = ternctl("check", uri)
    assert rc == 4, (out, err)
    assert "checkpoint" in out and "damaged" in out, out


def test_check_that_cannot_run(ternctl, scratch):
    rc, out, err = ternctl("check", f"uring://{scratch}/missing.img")
    assert rc == 8 and "No such file or directory" in err, (rc, out, err)
    rc, out, err = ternctl("check", "floppy:///x")
    assert rc == 8 and "unknown scheme" in err, (rc, out, err)


def test_replicas_snapshots_and_clones_driven_by_ioperf(ternctl, ioperf, scratch):
    """Objects made offline, then verified I/O through ioperf on a thin replica (allocating as it goes), a
    thick one, a snapshot (read-only) and a clone; the pool checks clean after each step."""
    def io(*args):
        p = ioperf.run(*args)
        return p.returncode, p.stdout, p.stderr

    img = make_file(scratch / "pool.img", 512 * MiB)
    uri = f"uring://{img}"
    assert ternctl("create", uri, "--name", "p1")[0] == 0
    rc, out, err = ternctl("add-replica", uri, "--name", "thin1", "--size", "64m", "--thin")
    assert rc == 0 and "created thin replica 'thin1'" in out, (rc, out, err)
    rc, out, err = ternctl("add-replica", uri, "--name", "thick1", "--size", "32m")
    assert rc == 0 and "created thick replica 'thick1'" in out, (rc, out, err)
    rc, out, err = ternctl("add-replica", uri, "--name", "thin1", "--size", "4m")
    assert rc == 1 and "already has a replica named 'thin1'" in err, (rc, out, err)
    rc, out, err = ternctl("add-replica", uri, "--name", "huge", "--size", "2g")
    assert rc == 1 and "cannot hold thick replica 'huge'" in err, (rc, out, err)
    dev = ["--dev", uri, "--pool", str(img)]
    for name in ("thin1", "thick1"):
        rc, out, err = io(*dev, "--replica", name, "--rw", "randrw", "--verify", "--time", "2s", "--qd", "8",
                              "--cores", "0")
        assert rc == 0 and "no mismatches" in out, (name, rc, out, err)
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 0, err
    kinds = {r["name"]: r for r in rep["replicas"]}
    assert kinds["thin1"]["allocated_clusters"] > 0 and kinds["thick1"]["allocated_clusters"] == 8
    assert ternctl("snapshot", uri, "--of", "thin1", "--name", "snap1")[0] == 0
    rc, out, err = ternctl("clone", uri, "--of", "snap1", "--name", "clone1")
    assert rc == 0 and "created clone 'clone1'" in out, (rc, out, err)
    rc, out, err = ternctl("clone", uri, "--of", "thin1", "--name", "clone2")
    assert rc == 1 and "is not a snapshot" in err, (rc, out, err)
    # The snapshot reads, refuses writes; the clone takes verified writes (copy-on-write).
    rc, out, err = io(*dev, "--replica", "snap1", "--rw", "randread", "--time", "1s")
    assert rc == 0, (rc, out, err)
    rc, out, err = io(*dev, "--replica", "snap1", "--rw", "randwrite", "--time", "1s")
    assert rc != 0, (rc, out, err)
    rc, out, err = io(*dev, "--replica", "clone1", "--rw", "randrw", "--verify", "--time", "2s", "--qd", "4")
    assert rc == 0 and "no mismatches" in out, (rc, out, err)
    # Removing the snapshot while the replica and the clone read from it keeps it, discarded.
    rc, out, err = ternctl("remove", uri, "--name", "snap1")
    assert rc == 0 and "stays in use" in out, (rc, out, err)
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 0, err
    kinds = {r["name"]: r for r in rep["replicas"]}
    assert kinds["snap1"]["discarded"] is True and kinds["clone1"]["kind"] == "clone"
    # The snapshot holds what thin1 had written; thin1 and clone1 read through it.
    assert kinds["snap1"]["allocated_bytes"] > 0 and kinds["snap1"]["source"] == kinds["thin1"]["uuid"]
    assert kinds["thin1"]["referenced_bytes"] >= kinds["snap1"]["allocated_bytes"] - kinds["snap1"]["exclusive_bytes"]
    assert kinds["snap1"]["created_ns"] > 0
    # The clone goes: the snapshot merges into the replica and disappears.
    assert ternctl("remove", uri, "--name", "clone1")[0] == 0
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 0, err
    assert sorted(r["name"] for r in rep["replicas"]) == ["thick1", "thin1"]
    assert all(r["parent"] == "" for r in rep["replicas"])
    rc, out, err = io(*dev, "--replica", "nosuch", "--rw", "randread", "--time", "1s")
    assert rc == 2 and "has no replica or snapshot 'nosuch'" in err, (rc, out, err)


def test_grow_takes_the_new_space_of_a_grown_file(ternctl, scratch):
    img = make_file(scratch / "pool.img", 128 * MiB)
    uri = f"uring://{img}"
    assert ternctl("create", uri, "--name", "p1")[0] == 0
    assert ternctl("add-replica", uri, "--name", "r1", "--size", "64m")[0] == 0
    rc, rep, err = check_json(ternctl, uri)
    before = rep["clusters"]
    rc, out, err = ternctl("grow", uri)
    assert rc == 0 and "already uses the whole device" in out, (rc, out, err)
    os.truncate(img, 256 * MiB)
    rc, out, err = ternctl("grow", uri)
    assert rc == 0 and "grew from" in out, (rc, out, err)
    rc, rep, err = check_json(ternctl, uri)
    assert rc == 0 and rep["clusters"] == before + 32, rep
    assert [r["name"] for r in rep["replicas"]] == ["r1"]
    rc, out, err = ternctl("add-replica", uri, "--name", "r2", "--size", "150m")
    assert rc == 0, (rc, out, err)
