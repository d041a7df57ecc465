"""`ternctl nvme` (discover, identify, list-subsystems) against our target: what a person or a script sees,
in readable and JSON form, including the access list, ANA states and errors."""
import json
import socket
import subprocess

import pytest

from nvmf_target import config, subsystem

OPEN = "nqn.2026-11.io.tern:open"
CLOSED = "nqn.2026-11.io.tern:closed"
ALLOWED_HOST = "nqn.2026-11.io.tern:allowed-host"


@pytest.fixture
def ternctl(build_dir):
    binary = build_dir / "tools/ternctl/ternctl"
    if not binary.exists():
        pytest.fail(f"ternctl is not built in {build_dir}")

    def run(*args, expect=0):
        p = subprocess.run([str(binary), "nvme", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == expect, f"ternctl {' '.join(args)}: rc {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p
    return run


@pytest.fixture
def target(nvmf_target):
    cfg = config(["malloc:///c0?size_mb=16", "malloc:///c1?size_mb=8&blk_size=4096"],
                 [subsystem(OPEN, ["c0", {"device": "c1", "ana_group": 2}], listeners=["@0", "@1"],
                            serial="SN-OPEN", model="tern test model",
                            ana=[{"listener": "@1", "group": 1, "state": "non_optimized"}]),
                  subsystem(CLOSED, ["c1"], allow_any_host=False, hosts=[ALLOWED_HOST])],
                 listeners=["127.0.0.1:0", "127.0.0.1:0"])
    return nvmf_target(cfg)


def test_discover_lists_what_the_host_may_use(target, ternctl):
    out = json.loads(ternctl("discover", "-s", str(target.port), "-o", "json").stdout)
    nqns = [r["subnqn"] for r in out["records"]]
    assert OPEN in nqns and CLOSED not in nqns
    assert nqns.count(OPEN) == 2  # one record per listener
    assert any(r["subtype"] == "current discovery subsystem" for r in out["records"])
    for r in out["records"]:
        assert r["trtype"] == "tcp" and r["adrfam"] == "ipv4" and r["traddr"] == "127.0.0.1"
    ports = sorted(int(r["trsvcid"]) for r in out["records"] if r["subnqn"] == OPEN)
    assert ports == sorted(target.ports)
    # The allowed host sees the closed subsystem too.
    out2 = json.loads(ternctl("discover", "-s", str(target.port), "-q", ALLOWED_HOST, "-o", "json").stdout)
    assert CLOSED in [r["subnqn"] for r in out2["records"]]
    # Readable form.
    text = ternctl("discover", "-s", str(target.port)).stdout
    assert f"Discovery Log Number of Records {len(out['records'])}" in text
    assert f"subnqn:  {OPEN}" in text and "trtype:  tcp" in text


def test_identify_controller_and_namespace(target, ternctl):
    port = str(target.port)
    c = json.loads(ternctl("identify", "-s", port, "-n", OPEN, "-o", "json").stdout)
    assert c["subnqn"] == OPEN and c["sn"] == "SN-OPEN" and c["mn"] == "tern test model"
    assert c["cntlid"] >= 1 and c["nn"] >= 2 and c["ioccsz"] >= 4 and c["kas"] > 0
    assert c["anacap"] != 0
    devices = {n["nsid"]: n for n in target.subsystem(OPEN)["namespaces"]}
    n2 = json.loads(ternctl("identify", "-s", port, "-n", OPEN, "--namespace", "2", "-o", "json").stdout)
    assert n2["nsze"] == devices[2]["size"] // 4096 and n2["lbafs"][n2["flbas"] & 0xF]["ds"] == 12
    assert n2["uuid"] == devices[2]["uuid"] and n2["nguid"] == devices[2]["uuid"].replace("-", "")
    assert n2["anagrpid"] == 2
    text = ternctl("identify", "-s", port, "-n", OPEN, "--namespace", "1").stdout
    assert "NVME Identify Namespace 1:" in text and "(in use)" in text
    text = ternctl("identify", "-s", port, "-n", OPEN).stdout
    assert "NVME Identify Controller:" in text and f"subnqn    : {OPEN}" in text


def test_list_subsystems_shows_paths_and_ana(target, ternctl):
    out = json.loads(ternctl("list-subsystems", "-s", str(target.port), "-o", "json").stdout)
    subs = {s["subnqn"]: s for s in out["subsystems"]}
    assert set(subs) == {OPEN}
    s = subs[OPEN]
    assert s["serial"] == "SN-OPEN" and [n["nsid"] for n in s["namespaces"]] == [1, 2]
    paths = {int(p["trsvcid"]): p for p in s["paths"]}
    assert set(paths) == set(target.ports)
    assert all(p["state"] == "live" for p in paths.values())
    assert paths[target.ports[0]]["ana_state"] == {"1": "optimized", "2": "optimized"}
    assert paths[target.ports[1]]["ana_state"] == {"1": "non-optimized", "2": "optimized"}
    target.ctl("ana_set", nqn=OPEN, listener=target.listeners[0], group=2, state="inaccessible")
    out = json.loads(ternctl("list-subsystems", "-s", str(target.port), "-o", "json").stdout)
    paths = {int(p["trsvcid"]): p for p in out["subsystems"][0]["paths"]}
    assert paths[target.ports[0]]["ana_state"]["2"] == "inaccessible"
    text = ternctl("list-subsystems", "-s", str(target.port)).stdout
    assert OPEN in text and "ns2=inaccessible" in text and "nsid 2: 8 MiB" in text


def test_errors_are_clear(target, ternctl):
    port = str(target.port)
    p = ternctl("identify", "-s", port, "-n", CLOSED, expect=1)
    assert "not allowed" in p.stderr
    p = ternctl("identify", "-s", port, "-n", "nqn.2026-11.io.tern:nope", expect=1)
    assert "nqn.2026-11.io.tern:nope" in p.stderr
    p = ternctl("identify", "-s", port, "-n", OPEN, "--namespace", "9", expect=1)
    assert "namespace 9" in p.stderr and "not active" in p.stderr
    # Nothing listens on a port we just freed.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    p = ternctl("discover", "-s", str(free), expect=1)
    assert "refused" in p.stderr.lower()
    p = subprocess.run([str(target.binary).replace("nvmf_tgt/nvmf_tgt", "ternctl/ternctl"), "nvme", "discover",
                        "-o", "yaml"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "yaml" in p.stderr
