"""High availability with the Linux kernel as the host of our target: native NVMe multipath following our
ANA states (and surviving the loss of a path), reservations between two hosts, namespaces added and grown
at run time (asynchronous events), reconnect after the target restarts, and a clean removal when it stays
away longer than ctrl-loss-tmo. The kernel runs in a QEMU guest (kernel_guest.py); our nvmf_tgt runs here."""
import json
import os
import time

import pytest

from conftest import usable_cores
from kernel_guest import GuestError
from kernel_nvme import blockdev, connect, controller_state, disconnect, fio_ok, fio_verify_cmd, wait_guest
from nvmf_target import Target, config, subsystem

pytestmark = pytest.mark.kernel

NQN_MP = "nqn.2026-11.io.tern:kernel-multipath"
NQN_RESV = "nqn.2026-11.io.tern:kernel-resv"
NQN_AEN = "nqn.2026-11.io.tern:kernel-aen"
NQN_HA = "nqn.2026-11.io.tern:kernel-restart"
HOST_B = "nqn.2026-11.io.tern:second-host"
HOSTID_B = "b0b0b0b0-1111-4222-8333-444455556666"
UUID_MP = "0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3"
UUID_AEN = "1a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3"
UUID_HA = "2a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3"


class Env:
    pass


def sparse(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def env(build_dir, kernel_guest, tmp_path_factory):
    """Target 1 (two listeners: slots 0 and 1) serves the multipath, reservation and event subsystems;
    target 2 (slot 2) is the one killed and restarted."""
    e = Env()
    wd = tmp_path_factory.mktemp("kha")
    tag = f"/var/tmp/tern-kha-{os.getpid()}"
    e.mp_img, e.aen_img, e.ha_img = sparse(f"{tag}-mp.img", 64 << 20), sparse(f"{tag}-aen.img", 32 << 20), \
        sparse(f"{tag}-ha.img", 64 << 20)
    cfg1 = config([f"uring://{e.mp_img}?uuid={UUID_MP}", f"uring://{e.aen_img}?uuid={UUID_AEN}",
                   "malloc:///resv?size_mb=8"],
                  [subsystem(NQN_MP, [e.mp_img], listeners=["@0", "@1"], serial="TERNKMP",
                             ana=[{"listener": "@1", "group": 1, "state": "non_optimized"}]),
                   subsystem(NQN_RESV, ["resv"], listeners=["@0", "@1"], serial="TERNKRESV"),
                   subsystem(NQN_AEN, [e.aen_img], serial="TERNKAEN")],
                  listeners=["127.0.0.1:0", "127.0.0.1:0"])
    cfg2 = config([f"uring://{e.ha_img}?uuid={UUID_HA}"], [subsystem(NQN_HA, [e.ha_img], serial="TERNKHA")])
    binary = build_dir / "tools/nvmf_tgt/nvmf_tgt"
    e.t1 = Target(binary, wd, cfg1, cores=usable_cores(2), name="t1")
    e.t2 = Target(binary, wd, cfg2, cores=usable_cores(1), name="t2")
    e.t1.start()
    e.t2.start()
    e.g = kernel_guest(forwards=3)
    e.g.route(0, e.t1.ports[0])
    e.g.route(1, e.t1.ports[1])
    e.g.route(2, e.t2.port)
    try:
        yield e
        e.t1.stop()
        e.t2.stop()
    finally:
        e.t1.kill()
        e.t2.kill()
        for p in (e.mp_img, e.aen_img, e.ha_img):
            os.unlink(p)


def wait_no_controllers(t, nqn):
    t.wait_for(f"no controllers on {nqn}", lambda: not t.controllers(nqn), timeout=30)


def background(guest, name, cmd):
    """Starts `cmd` in the guest detached from the agent; its output goes to /tmp/<name>.log and its exit
    status to /tmp/<name>.rc."""
    guest.run_ok(f"rm -f /tmp/{name}.rc; (sh -c '{cmd}' > /tmp/{name}.log 2>&1; echo $? > /tmp/{name}.rc) "
                 "</dev/null >/dev/null 2>&1 &")


def wait_background(guest, name, timeout):
    wait_guest(guest, f"{name} to finish", f"test -s /tmp/{name}.rc", timeout=timeout)
    return int(guest.run_ok(f"cat /tmp/{name}.rc")), guest.run_ok(f"cat /tmp/{name}.log")


# --- reservations ----------------------------------------------------------------------------------

def resv(guest, ctrl, what, args, ok=True):
    rc, out = guest.run(f"nvme resv-{what} /dev/{ctrl} -n 1 {args}", timeout=30)
    if ok:
        assert rc == 0, f"resv-{what} {args} on {ctrl}: {out}"
    return rc, out


def write_block(guest, ctrl):
    return guest.run(f"nvme write /dev/{ctrl} -n 1 -s 0 -c 0 -z 512 -d /dev/zero", timeout=30)


def test_reservations_between_two_hosts(env):
    """Two hosts (host NQN and 128-bit host ID each) on two connections: both register, A takes Write
    Exclusive, B's writes are refused with Reservation Conflict while its reads work; the report (extended
    format: fabrics use 128-bit host IDs) names A as holder; B preempts A, then A's writes are refused;
    B releases and unregisters, and writes work for everyone again."""
    g = env.g
    a = connect(g, NQN_RESV)
    # nvme-cli 2.3 refuses a second connection to the same address and NQN, even for another host NQN
    # (--duplicate-connect notwithstanding): host B comes in through the second listener.
    b = connect(g, NQN_RESV, f"--hostnqn={HOST_B}", f"--hostid={HOSTID_B}", slot=1)
    try:
        assert {c["hostnqn"] for c in env.t1.controllers(NQN_RESV)} == {HOST_B, g.run_ok("cat /etc/nvme/hostnqn").strip()}
        resv(g, a, "register", "--nrkey=0xa1 --rrega=0")
        resv(g, b, "register", "--nrkey=0xb2 --rrega=0")
        resv(g, a, "acquire", "--crkey=0xa1 --rtype=1 --racqa=0")
        rc, out = write_block(g, b)
        assert rc != 0 and "Reservation Conflict" in out, out
        assert g.run(f"nvme read /dev/{b} -n 1 -s 0 -c 0 -z 512 -d /dev/null", timeout=30)[0] == 0
        assert write_block(g, a)[0] == 0

        rep = json.loads(resv(g, a, "report", "--eds -o json")[1])
        assert rep["rtype"] == 1 and rep["regctl"] == 2, rep
        holders = [r for r in rep["regctlext"] if r["rcsts"] == 1]
        assert len(holders) == 1 and holders[0]["hostid"].replace("-", "") == \
            g.run_ok("cat /etc/nvme/hostid").strip().replace("-", ""), rep
        # Without the extended format the 64-bit host IDs cannot represent a fabrics host: refused.
        rc, out = resv(g, a, "report", "", ok=False)
        assert rc != 0 and "Host Identifier Inconsistent Format" in out, out

        resv(g, b, "acquire", "--crkey=0xb2 --prkey=0xa1 --rtype=1 --racqa=1")  # preempt A
        rc, out = write_block(g, a)
        assert rc != 0 and "Reservation Conflict" in out, out
        assert write_block(g, b)[0] == 0
        rep = json.loads(resv(g, b, "report", "--eds -o json")[1])
        assert rep["regctl"] == 1 and rep["regctlext"][0]["rkey"] == 0xb2, rep

        resv(g, b, "release", "--crkey=0xb2 --rtype=1 --rrela=0")
        resv(g, b, "register", "--crkey=0xb2 --rrega=1")  # unregister
        assert write_block(g, a)[0] == 0 and write_block(g, b)[0] == 0
        rep = json.loads(resv(g, a, "report", "--eds -o json")[1])
        assert rep["rtype"] == 0 and rep["regctl"] == 0, rep
    finally:
        disconnect(g, NQN_RESV)
    wait_no_controllers(env.t1, NQN_RESV)


# --- multipath and ANA -----------------------------------------------------------------------------

def path_counters(t):
    """I/O commands per listener (= per path) of the multipath subsystem, from the target's list."""
    out = {}
    for c in t.controllers(NQN_MP):
        out[c["listener"]] = out.get(c["listener"], 0) + c["io_commands"]
    return out


def ana_states(guest, ctrls):
    """The kernel's view: ANA state of namespace 1 through each controller (path)."""
    out = {}
    for c in ctrls:
        rc, s = guest.run(f"cat /sys/block/nvme*c{c[4:]}n1/ana_state", timeout=20)
        out[c] = s.strip() if rc == 0 else None
    return out


def test_multipath_follows_ana_and_survives_a_lost_path(env):
    """One subsystem through two listeners: the kernel joins both paths under one device, sends I/O only
    to the optimized one (the non-optimized path's counter stays still), moves it when the states are
    flipped at run time (ANA change event), and when the optimized path's listener is stopped during a
    fio verify (our target closes its connections), the I/O goes on over the other path and the verify
    passes."""
    g, t = env.g, env.t1
    l0, l1 = t.listeners
    c0 = connect(g, NQN_MP, slot=0)
    c1 = connect(g, NQN_MP, slot=1)
    try:
        dev = blockdev(g, NQN_MP)
        subs = json.loads(g.run_ok("nvme list-subsys -o json"))
        [sub] = [s for h in subs for s in h["Subsystems"] if s["NQN"] == NQN_MP]
        assert sorted(p["Name"] for p in sub["Paths"]) == sorted([c0, c1])
        assert ana_states(g, [c0, c1]) == {c0: "optimized", c1: "non-optimized"}

        before = path_counters(t)
        fio_ok(g.run_ok(fio_verify_cmd(dev, size="2M", iodepth=8), timeout=180))
        after = path_counters(t)
        assert after[l0] - before[l0] >= 1024 and after[l1] == before[l1], (before, after)

        t.ctl("ana_set", nqn=NQN_MP, listener=l0, group=1, state="non_optimized")
        t.ctl("ana_set", nqn=NQN_MP, listener=l1, group=1, state="optimized")
        wait_guest(g, "the kernel to see the flipped ANA states",
                   f"grep -q '^non-optimized' /sys/block/nvme*c{c0[4:]}n1/ana_state && "
                   f"grep -q '^optimized' /sys/block/nvme*c{c1[4:]}n1/ana_state", timeout=30)
        before = path_counters(t)
        fio_ok(g.run_ok(fio_verify_cmd(dev, size="2M", iodepth=8), timeout=180))
        after = path_counters(t)
        assert after[l1] - before[l1] >= 1024 and after[l0] == before[l0], (before, after)

        # Cut the optimized path (slot 1) in the middle of a verify run.
        background(g, "mpfio", fio_verify_cmd(dev, size="16M", bs="16k", iodepth=8))
        t.wait_for("fio to be writing on the optimized path",
                   lambda: path_counters(t).get(l1, 0) - after[l1] > 200, timeout=60)
        # The listener goes: our target closes the connections it accepted (the kernel sees the path
        # fail) and nothing more can connect there.
        t.ctl("stop_listening", listener=l1)
        g.route(1, 0)
        rc, out = wait_background(g, "mpfio", timeout=240)
        assert rc == 0, out
        fio_ok(out)
        end = path_counters(t)
        assert end[l0] - after[l0] > 0, (after, end)
        assert controller_state(g, c1) in ("connecting", "resetting"), controller_state(g, c1)
        assert controller_state(g, c0) == "live"
    finally:
        disconnect(g, NQN_MP)
        if l1 not in t.ctl("listeners")["listeners"]:
            t.ctl("listen", listener=l1)
        g.route(1, t.ports[1])
    wait_no_controllers(t, NQN_MP)


# --- asynchronous events ---------------------------------------------------------------------------

def test_namespace_added_and_grown_at_run_time(env):
    """A namespace added to a connected subsystem appears in the guest, one removed disappears, and one
    whose file grew (ns_rescan) shows the new size: the kernel learns all of it from our Namespace
    Attribute Changed events and the changed-namespace log."""
    g, t = env.g, env.t1
    connect(g, NQN_AEN)
    try:
        dev1 = blockdev(g, NQN_AEN, 1)
        assert int(g.run_ok(f"cat /sys/block/{dev1[5:]}/size")) == (32 << 20) // 512
        name = t.ctl("device_create", uri="malloc:///aen2?size_mb=8")["name"]
        assert t.ctl("ns_add", nqn=NQN_AEN, device=name, nsid=2)["nsid"] == 2
        dev2 = blockdev(g, NQN_AEN, 2, timeout=30)
        assert int(g.run_ok(f"cat /sys/block/{dev2[5:]}/size")) == (8 << 20) // 512
        g.run_ok(f"dd if=/dev/urandom of={dev2} bs=4k count=16 oflag=direct 2>/dev/null")

        os.truncate(env.aen_img, 48 << 20)
        assert t.ctl("ns_rescan", nqn=NQN_AEN, nsid=1)["size"] == 48 << 20
        wait_guest(g, "the kernel to see namespace 1 grow",
                   f"test $(cat /sys/block/{dev1[5:]}/size) -eq {(48 << 20) // 512}", timeout=30)
        g.run_ok(f"dd if=/dev/urandom of={dev1} bs=4k count=1 seek={(40 << 20) // 4096} oflag=direct 2>/dev/null")

        t.ctl("ns_remove", nqn=NQN_AEN, nsid=2)
        wait_guest(g, "namespace 2 to disappear", f"! test -e {dev2}", timeout=30)
    finally:
        disconnect(g, NQN_AEN)
    wait_no_controllers(t, NQN_AEN)


# --- target restart and controller loss ------------------------------------------------------------

def test_kernel_reconnects_after_target_restart(env):
    """Our target is killed (SIGKILL) in the middle of a fio verify and started again on another port
    behind the same address: the kernel reconnects (reconnect-delay 1 s, ctrl-loss-tmo 60 s), the I/O it
    held is retried, and the verify passes."""
    g, t = env.g, env.t2
    ctrl = connect(g, NQN_HA, "--reconnect-delay=1", "--ctrl-loss-tmo=60", slot=2)
    try:
        dev = blockdev(g, NQN_HA)
        background(g, "hafio", fio_verify_cmd(dev, size="16M", bs="16k", iodepth=8))
        t.wait_for("fio to be writing", lambda: t.ctl("stats")["devices"][env.ha_img]["writes"] > 200, timeout=60)
        t.kill()
        time.sleep(2)
        t.start()
        g.route(2, t.port)
        rc, out = wait_background(g, "hafio", timeout=240)
        assert rc == 0, out + g.dmesg(20)
        fio_ok(out)
        assert controller_state(g, ctrl) == "live"
        assert "Successfully reconnected" in g.dmesg(40)
    finally:
        disconnect(g, NQN_HA)
    wait_no_controllers(t, NQN_HA)


def test_target_gone_past_ctrl_loss_tmo_removes_the_device(env):
    """With ctrl-loss-tmo 3 s, a target that stays away makes the kernel give up: a read waiting on the
    device fails (it does not hang), and the controller, namespace and subsystem disappear cleanly."""
    g, t = env.g, env.t2
    ctrl = connect(g, NQN_HA, "--reconnect-delay=1", "--ctrl-loss-tmo=3", slot=2)
    dev = blockdev(g, NQN_HA)
    t.kill()
    g.route(2, 0)
    start = time.monotonic()
    rc, out = g.run(f"dd if={dev} of=/dev/null bs=4k count=1 iflag=direct", timeout=60)
    assert rc != 0, out
    assert time.monotonic() - start < 40
    wait_guest(g, "the controller to be removed", f"! test -e /sys/class/nvme/{ctrl} && ! test -e {dev}", timeout=40)
    assert NQN_HA not in g.run_ok("cat /sys/class/nvme-subsystem/*/subsysnqn 2>/dev/null; true")
    assert "Removing ctrl" in g.dmesg(30) or "removing ctrl" in g.dmesg(30).lower()
