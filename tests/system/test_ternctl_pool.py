"""`ternctl pool create` and `ternctl pool check` on real files: what an operator sees for a clean pool,
for damage that import repairs by itself, for damage it refuses, and when the check cannot run. Exit
codes follow fsck: 0 clean, 1 repairable, 4 damaged or no pool, 8 operational error."""
import json
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
        p = subprocess.run([str(binary), "pool", *args], capture_output=True, text=True, timeout=60)
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
