"""Helpers for tests where the Linux kernel in a guest (kernel_guest.Guest) is the NVMe/TCP host of our
target: nvme-cli connect/disconnect, finding a namespace's block device, fio verify runs."""
import json
import time

from kernel_guest import HOST_ADDR, GuestError


def connect(guest, nqn, *opts, slot=0, ok=True):
    """`nvme connect` to 10.0.2.100:<port of slot>; returns the controller's name (nvmeN), or (rc, output)
    when ok=False."""
    cmd = f"nvme connect -t tcp -a {HOST_ADDR} -s {guest.forward_port(slot)} -n {nqn} {' '.join(opts)} -o json"
    rc, out = guest.run(cmd, timeout=60)
    if not ok:
        return rc, out
    if rc != 0:
        raise GuestError(f"{cmd} failed (rc {rc}): {out}\n{guest.dmesg(10)}")
    return json.loads(out[out.index("{"):])["device"]


def disconnect(guest, nqn):
    """Disconnects every controller of `nqn`; returns how many."""
    out = guest.run_ok(f"nvme disconnect -n {nqn}", timeout=60)
    return int(out.split("disconnected")[1].split()[0]) if "disconnected" in out else 0


def blockdev(guest, nqn, nsid=1, timeout=20):
    """The block device (/dev/nvmeXnY) of namespace `nsid` of subsystem `nqn`, waiting for it to appear."""
    script = f"""
for i in $(seq {int(timeout * 10)}); do
  for s in /sys/class/nvme-subsystem/nvme-subsys*; do
    [ "$(cat $s/subsysnqn 2>/dev/null)" = "{nqn}" ] || continue
    for n in $s/nvme*n{nsid}; do
      [ -e "$n" ] && [ -b /dev/$(basename $n) ] && {{ echo /dev/$(basename $n); exit 0; }}
    done
  done
  sleep 0.1
done
exit 1"""
    rc, out = guest.run(script, timeout=timeout + 10)
    if rc != 0:
        raise GuestError(f"no block device for {nqn} namespace {nsid} within {timeout} s\n{guest.dmesg(15)}")
    return out.strip()


def controller_state(guest, ctrl):
    return guest.run(f"cat /sys/class/nvme/{ctrl}/state", timeout=20)[1].strip()


def fio_verify_cmd(dev, size="16M", bs="4k", iodepth=16, rw="randwrite", extra=""):
    """A fio job that writes `size` of `dev` with crc32c headers and reads everything back (libaio, direct)."""
    return (f"fio --name=verify --filename={dev} --direct=1 --ioengine=libaio --rw={rw} --bs={bs} "
            f"--iodepth={iodepth} --size={size} --verify=crc32c --verify_fatal=1 --verify_state_save=0 "
            f"--do_verify=1 --output-format=terse --terse-version=3 {extra}")


def fio_ok(out):
    """Checks a terse fio run: one result line with no error (field 5 of terse v3 is the job's error)."""
    lines = [line for line in out.splitlines() if line.startswith("3;")]
    assert lines, f"no fio result:\n{out[-3000:]}"
    for line in lines:
        f = line.split(";")
        assert f[4] == "0", f"fio reported error {f[4]}:\n{out[-3000:]}"
    return lines


def wait_guest(guest, what, cond_cmd, timeout=30):
    """Runs `cond_cmd` in the guest until it succeeds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out = guest.run(cond_cmd, timeout=20)
        if rc == 0:
            return out
        if time.monotonic() > deadline:
            raise GuestError(f"timed out after {timeout} s waiting for {what}: {out[-1000:]}\n{guest.dmesg(15)}")
        time.sleep(0.3)
