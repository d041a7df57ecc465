"""A throw-away Linux guest for interoperability tests: the Debian 12 kernel (its nvme-tcp host, its
nvmet-tcp target, its nbd client) in a QEMU virtual machine, driven from pytest.

Why: the kernel that runs the test suite may lack these modules (containers, CI machines), and our
target and initiator checked only against each other can share a misreading of the specification. A real
distribution kernel boots in about ten seconds under software emulation.

The guest kit (kernel + initramfs) is built once from Debian packages and cached outside the tree
($TERN_GUEST_CACHE, default /var/cache/tern/guest-kit/<kernel>-<hash>); the hash covers everything that
goes into it, so a change here rebuilds it. Building needs root (apt-get download, depmod).

Inside the guest: busybox, nvme-cli, fio, e2fsprogs (with resize2fs), xfsprogs (with xfs_growfs), nbd-client
and util-linux tools, the modules nvme-tcp, nvmet-tcp, nbd, brd, loop, ext4, xfs; configfs mounted. The guest's network is
restricted (user-mode, no route out):
  - `forward(slot)`: the guest reaches a port of this machine at 10.0.2.100:<4420+slot>; which host port
    that is can change at any time (`route(slot, port)`), so a target restarted on a new port, or gone
    (port 0), looks to the guest like one address coming back or going away;
  - `expose`: guest ports reachable here at 127.0.0.1:<host port> (`guest.exposed[gport]`).
Commands run through a small agent (busybox nc on a guest port, exposed here): `guest.run(cmd, timeout)`
returns (rc, output) and many commands share one boot. `guest.put(path)` copies a file into /share.
Power-off is guaranteed: `close()` asks the guest, then kills QEMU.
"""
import contextlib
import fcntl
import hashlib
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time

AGENT_PORT = 7777          # guest port of the command agent
FORWARD_BASE = 4420        # guest-visible port of forward slot 0 at 10.0.2.100
HOST_ADDR = "10.0.2.100"   # this machine, as the guest sees it

HOST_PACKAGES = ["qemu-system-x86", "socat", "kmod", "cpio", "busybox-static", "nvme-cli", "e2fsprogs",
                 "xfsprogs", "fio", "nbd-client", "util-linux"]
GUEST_BINARIES = ["/usr/sbin/nvme", "/sbin/mkfs.ext4", "/sbin/e2fsck", "/sbin/mkfs.xfs", "/sbin/xfs_repair",
                  "/usr/bin/fio", "/usr/sbin/nbd-client", "/sbin/blkid", "/usr/bin/lsblk", "/sbin/blkdiscard",
                  "/sbin/resize2fs", "/usr/sbin/xfs_growfs"]
MODULES = ["virtio_pci", "virtio_net", "crc32c_generic", "nvme-tcp", "nvmet-tcp", "nbd", "loop", "brd", "ext4",
           "xfs", "9pnet_virtio", "9p"]
GUEST_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:7e4d0a52-2f57-4d1c-9a51-1c0ffee00001"
GUEST_HOSTID = "7e4d0a52-2f57-4d1c-9a51-1c0ffee00001"

# The guest's /init. Module parameters come from the kernel command line as <module>.<param>=<value>
# (busybox insmod does not read it, so this does). The agent runs each connection's script under a
# time limit and ends the output with an exit-status marker.
INIT = r"""#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
mkdir -p /dev/pts; mount -t devpts pts /dev/pts
while read f; do
  m=$(basename "$f" .ko); m=$(echo "$m" | tr - _)
  args=$(tr ' ' '\n' < /proc/cmdline | grep "^$m\." | sed "s/^$m\.//")
  insmod "$f" $args 2>/dev/null
done < /load.list
mount -t configfs none /sys/kernel/config 2>/dev/null
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /share || echo "=== tern guest: no share"
echo "=== tern guest up: Linux $(uname -r)"
nc -ll -p 7777 -e /agent.sh &
echo "=== tern guest ready"
while true; do sleep 3600; done
"""

AGENT = r"""#!/bin/sh
# One connection = one command: a first line with the time limit in seconds, then the script until EOF.
export PATH=/bin:/sbin HOME=/root
read -r tmo
f=$(mktemp /tmp/cmd.XXXXXX)
cat > "$f"
cd /share 2>/dev/null || cd /
timeout -s KILL "$tmo" sh "$f" </dev/null 2>&1
rc=$?
rm -f "$f"
echo "__TERN_RC=$rc"
"""

FORWARD = """#!/bin/sh
# Run by QEMU for each guest connection to a forwarded address: connects it to the host port that slot
# currently routes to (a file, so tests can move it); none -> the connection closes.
p=$(cat "$(dirname "$0")/route.$1" 2>/dev/null)
[ -n "$p" ] && [ "$p" != 0 ] || exit 1
# socat's stdout is the guest's connection: its diagnostics must not go there (an error message in the
# byte stream is a malformed PDU to the guest's kernel), so they go to a log beside this script.
exec socat - TCP:127.0.0.1:"$p" 2>>"$(dirname "$0")/relay.log"
"""


class GuestError(AssertionError):
    pass


def _sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 600), **kw)


def ensure_host_packages():
    missing = [p for p in HOST_PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout.find("install ok installed") < 0]
    if missing:
        raise GuestError(f"missing packages for the kernel guest: {' '.join(missing)} "
                         "(scripts/install-deps.sh installs them)")


def _kernel_package():
    def find():
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True,
                             timeout=120).stdout
        m = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
        return m.group(1) if m else None
    pkg = find()
    if pkg is None:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        pkg = find()
    if pkg is None:
        raise GuestError("cannot find the Debian kernel package behind linux-image-amd64 (apt-cache depends)")
    return pkg


def _package_versions():
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}=${Version}\n", *HOST_PACKAGES], capture_output=True,
                         text=True, timeout=60).stdout
    return out


def kit_dir():
    """Builds the kit if needed (under a lock) and returns its directory (vmlinuz, initrd.gz, VERSIONS)."""
    ensure_host_packages()
    kpkg = _kernel_package()
    kver = kpkg[len("linux-image-"):]
    h = hashlib.sha256("\n".join([INIT, AGENT, *GUEST_BINARIES, *MODULES, GUEST_HOSTNQN, kpkg,
                                  _package_versions()]).encode()).hexdigest()[:12]
    cache = pathlib.Path(os.environ.get("TERN_GUEST_CACHE", "/var/cache/tern/guest-kit"))
    kit = cache / f"{kver}-{h}"
    if (kit / "initrd.gz").exists():
        return kit
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (kit / "initrd.gz").exists():
            _build_kit(kit, kpkg, kver)
    return kit


def _build_kit(kit, kpkg, kver):
    work = pathlib.Path(tempfile.mkdtemp(prefix="tern-guest-kit-"))
    try:
        r = subprocess.run(["apt-get", "download", "-q", kpkg], cwd=work, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
            r = subprocess.run(["apt-get", "download", "-q", kpkg], cwd=work, capture_output=True, text=True,
                               timeout=900)
        if r.returncode != 0:
            raise GuestError(f"apt-get download {kpkg} failed:\n{r.stderr[-2000:]}")
        deb = next(work.glob(f"{kpkg}_*.deb"))
        k = work / "k"
        _sh(["dpkg-deb", "-x", str(deb), str(k)])
        ir = work / "ir"
        for d in ["bin", "sbin", "etc/nvme", "proc", "sys", "dev", "tmp", "mnt", "run", "share", "root",
                  f"lib/modules/{kver}"]:
            (ir / d).mkdir(parents=True, exist_ok=True)
        for b in GUEST_BINARIES:
            shutil.copy2(os.path.realpath(b), ir / "bin" / os.path.basename(b))
            for lib in re.findall(r"(/\S+)", _sh(["ldd", b]).stdout):
                if not os.path.exists(lib):
                    continue
                dst = ir / lib.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    shutil.copy2(os.path.realpath(lib), dst)
        shutil.copy2("/bin/busybox", ir / "bin/busybox")
        for applet in _sh([str(ir / "bin/busybox"), "--list"]).stdout.split():
            p = ir / "bin" / applet
            if not p.exists():
                p.symlink_to("busybox")
        _sh(["depmod", "-b", str(k), kver])
        seen, order = set(), []
        for m in MODULES:
            out = _sh(["modprobe", "-d", str(k), "-S", kver, "--show-depends", m]).stdout
            for line in out.splitlines():
                parts = line.split()
                if parts and parts[0] == "insmod" and parts[1] not in seen:
                    seen.add(parts[1])
                    order.append(parts[1])
        load = []
        for f in order:
            rel = os.path.relpath(f, k)
            (ir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, ir / rel)
            load.append("/" + rel)
        (ir / "load.list").write_text("\n".join(load) + "\n")
        (ir / "init").write_text(INIT)
        (ir / "agent.sh").write_text(AGENT)
        (ir / "init").chmod(0o755)
        (ir / "agent.sh").chmod(0o755)
        (ir / "etc/nvme/hostnqn").write_text(GUEST_HOSTNQN + "\n")
        (ir / "etc/nvme/hostid").write_text(GUEST_HOSTID + "\n")
        (ir / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        part = kit.with_name(kit.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        shutil.copy2(next((k / "boot").glob("vmlinuz-*")), part / "vmlinuz")
        _sh(f"cd '{ir}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '{part}/initrd.gz'")
        (part / "VERSIONS").write_text(f"{kpkg}\n{_package_versions()}")
        shutil.rmtree(kit, ignore_errors=True)
        part.rename(kit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """One booted guest. Use as a context manager or call close(); close() always powers it off."""

    def __init__(self, workdir, forwards=2, expose=(), mem=1024, cpus=2, cmdline="", boot_timeout=120):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.share = self.workdir / "share"
        self.share.mkdir(exist_ok=True)
        self.console = self.workdir / "console.log"
        self.kit = kit_dir()
        self.forwards = forwards
        self.proc = None
        fwd = self.workdir / "fwd.sh"
        fwd.write_text(FORWARD)
        fwd.chmod(0o755)
        for slot in range(forwards):
            self.route(slot, 0)
        self.exposed = {AGENT_PORT: free_port()}
        for gport in expose:
            self.exposed[gport] = free_port()
        net = "user,id=n0,restrict=on"
        for slot in range(forwards):
            net += f",guestfwd=tcp:{HOST_ADDR}:{FORWARD_BASE + slot}-cmd:/bin/sh {fwd} {slot}"
        for gport, hport in self.exposed.items():
            net += f",hostfwd=tcp:127.0.0.1:{hport}-:{gport}"
        append = f"console=ttyS0 quiet panic=-1 {cmdline}".strip()
        # TERN_GUEST_PCAP=1 records the guest's network traffic (what its kernel sent and received) in
        # <workdir>/guest.pcap, for comparing with a capture on this machine's side of the relays.
        dump = ["-object", f"filter-dump,id=dump0,netdev=n0,file={self.workdir / 'guest.pcap'}"] \
            if os.environ.get("TERN_GUEST_PCAP") else []
        self._log = open(self.console, "w")
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(mem), "-smp", str(cpus),
             "-nographic", "-no-reboot", "-kernel", str(self.kit / "vmlinuz"), "-initrd", str(self.kit / "initrd.gz"),
             "-append", append, "-netdev", net, "-device", "virtio-net-pci,netdev=n0", *dump,
             "-virtfs", f"local,path={self.share},mount_tag=share,security_model=none"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(boot_timeout)
        except BaseException:
            self.close()
            raise
        self.kernel = self.run_ok("uname -r").strip()

    # --- boot and power ---
    def console_tail(self, n=60):
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc|\r", "", text)
        return "\n".join(text.splitlines()[-n:])

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GuestError(f"QEMU exited with {self.proc.returncode} while booting; console:\n"
                                 f"{self.console_tail()}")
            if "=== tern guest ready" in self.console.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise GuestError(f"the guest did not boot within {timeout} s; console:\n{self.console_tail()}")
        while time.monotonic() < deadline:
            try:
                rc, out = self.run("echo pong", timeout=10)
                if rc == 0 and "pong" in out:
                    return
            except (OSError, GuestError):
                pass
            time.sleep(0.3)
        raise GuestError(f"the guest's command agent did not answer; console:\n{self.console_tail()}")

    def close(self):
        """Powers the guest off (politely, then by killing QEMU). Safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.run("sync; (sleep 0.2; poweroff -f) >/dev/null 2>&1 &", timeout=10)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- network ---
    def route(self, slot, host_port):
        """Forward slot `slot` (the guest's 10.0.2.100:<4420+slot>) now leads to 127.0.0.1:host_port (0: nowhere)."""
        assert 0 <= slot < self.forwards
        p = self.workdir / f"route.{slot}"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(str(host_port))
        tmp.rename(p)

    @staticmethod
    def forward_port(slot):
        return FORWARD_BASE + slot

    # --- commands and files ---
    def run(self, cmd, timeout=60):
        """Runs `cmd` with /bin/sh in the guest (cwd /share); returns (rc, stdout+stderr). rc 137: timed out."""
        if self.proc is None or self.proc.poll() is not None:
            raise GuestError(f"the guest is not running; console:\n{self.console_tail()}")
        with socket.create_connection(("127.0.0.1", self.exposed[AGENT_PORT]), timeout=10) as s:
            s.settimeout(timeout + 20)
            s.sendall(f"{int(timeout)}\n{cmd}\n".encode())
            s.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
            except socket.timeout:
                raise GuestError(f"no answer from the guest within {timeout + 20} s to: {cmd}\n"
                                 f"console:\n{self.console_tail()}")
        out = b"".join(chunks).decode(errors="replace")
        m = re.search(r"__TERN_RC=(\d+)\n?$", out)
        if not m:
            raise GuestError(f"the guest's agent closed without an exit status for: {cmd}\noutput: {out[-2000:]}\n"
                             f"console:\n{self.console_tail()}")
        return int(m.group(1)), out[:m.start()]

    def run_ok(self, cmd, timeout=60):
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise GuestError(f"guest command failed (rc {rc}): {cmd}\n{out[-4000:]}")
        return out

    def put(self, src, name=None):
        """Copies a file into the guest's /share; returns its path in the guest."""
        name = name or os.path.basename(src)
        shutil.copy2(src, self.share / name)
        return f"/share/{name}"

    def put_program(self, src, name=None):
        """Copies a program of this machine and the shared libraries it loads into the guest's /share
        (<name>-lib); returns the command that runs it there."""
        name = name or os.path.basename(src)
        lib = self.share / f"{name}-lib"
        lib.mkdir(exist_ok=True)
        for path in re.findall(r"=> (/\S+)", _sh(["ldd", str(src)]).stdout):
            dst = lib / os.path.basename(path)
            if not dst.exists():
                shutil.copy2(os.path.realpath(path), dst)
        self.put(src, name)
        return f"LD_LIBRARY_PATH=/share/{name}-lib /share/{name}"

    def dmesg(self, n=40):
        return self.run(f"dmesg | tail -n {n}", timeout=20)[1]
