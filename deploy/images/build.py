#!/usr/bin/env python3
"""Builds tern's container images from Debian packages, without any registry image.

    deploy/images/build.py [--build-dir build/release] [--tag 0.1.0] [--mirror URL] [IMAGE...]

IMAGE: io-engine, agent, csi (the chart's), etcd (Debian's etcd, for local deployments and tests; the
chart runs etcd's own image). Default: all four.

How: one base file system made by debootstrap (Debian 12 "minbase") with the shared libraries our
binaries load (found with ldd and dpkg -S on the build, so the list cannot drift from what is linked)
and the node plugin's tools (nvme-cli, e2fsprogs, xfsprogs, util-linux); apt's lists, documentation and
locales removed; a user 65532 ("nonroot") added. It is cached in $TERN_IMAGE_CACHE (default
/var/cache/tern/images/base-<hash>: the hash covers the package list, the suite and the mirror) and
imported once as localhost/tern/base:<hash>. Each image is that base plus our binaries in
/usr/local/bin (buildah copy, config, commit: no container is run), so all images share one base layer
on a node. Needs root, debootstrap, podman and buildah (scripts/install-deps.sh installs them).

Our binaries go in without debug sections (objcopy --strip-debug). Images (localhost/tern/<name>:<tag>;
push them to your registry and set the chart's image.registry):
  io-engine  io-engine, ternctl; runs as root (block devices, io_uring, hugepage-free; the chart names
             its capabilities or runs it privileged)
  agent      tern-agent, ternctl; user 65532, works on a read-only root file system
  csi        tern-csi, tern-ha-node and the node plugin's tools; root (the node plugin mounts and
             connects; the chart runs the controller as 65532)
  etcd       /usr/bin/etcd from this machine's etcd-server package (Debian's 3.4); user 65532
"""
import argparse
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUITE = "bookworm"
TOOLS = ["nvme-cli", "e2fsprogs", "xfsprogs", "util-linux", "mount", "kmod", "ca-certificates"]
BINARIES = {"io-engine": ["io-engine", "ternctl"], "agent": ["tern-agent", "ternctl"],
            "csi": ["tern-csi", "tern-ha-node"], "etcd": []}
USERS = {"io-engine": "0:0", "agent": "65532:65532", "csi": "0:0", "etcd": "65532:65532"}
ENTRY = {"io-engine": "io-engine", "agent": "tern-agent", "csi": "tern-csi", "etcd": "etcd"}


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"build.py: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout


def version():
    m = re.search(r"project\(tern [^)]*VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    return m.group(1) if m else "0.0.0"


def find_binary(build_dir, name):
    p = build_dir / "tools" / name / name
    if name == "ternctl":
        p = build_dir / "tools/ternctl/ternctl"
    if not p.exists():
        raise SystemExit(f"build.py: {p} is not built; run scripts/build.sh release {name}")
    return p


def runtime_packages(binaries):
    """The Debian packages holding every shared library the binaries load."""
    pkgs = set()
    for b in binaries:
        for lib in re.findall(r"=> (/\S+)", sh(["ldd", str(b)])):
            for cand in (lib, "/usr" + lib, lib.removeprefix("/usr")):
                r = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
                if r.returncode == 0:
                    pkgs.add(r.stdout.split(":")[0].strip())
                    break
            else:
                raise SystemExit(f"build.py: no Debian package holds {lib} (loaded by {b})")
    return pkgs


def base_rootfs(pkgs, mirror, cache):
    key = hashlib.sha256("\n".join([SUITE, mirror, *sorted(pkgs), "v1"]).encode()).hexdigest()[:12]
    d = cache / f"base-{key}"
    if (d / ".complete").exists():
        return key, d
    part = cache / f"base-{key}.part"
    shutil.rmtree(part, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"debootstrap {SUITE} with {len(pkgs)} packages into {d} ...", flush=True)
    sh(["debootstrap", "--variant=minbase", f"--include={','.join(sorted(pkgs))}", SUITE, str(part), mirror],
       timeout=1800)
    for junk in ["var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info",
                 "usr/share/locale", "var/log", "var/cache/debconf/templates.dat-old"]:
        p = part / junk
        if p.is_dir():
            shutil.rmtree(p)
            p.mkdir()
        elif p.exists():
            p.unlink()
    with open(part / "etc/passwd", "a") as f:
        f.write("nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin\n")
    with open(part / "etc/group", "a") as f:
        f.write("nonroot:x:65532:\n")
    (part / "home/nonroot").mkdir(parents=True, exist_ok=True)
    os.chown(part / "home/nonroot", 65532, 65532)
    (part / ".complete").write_text(key + "\n")
    shutil.rmtree(d, ignore_errors=True)
    part.rename(d)
    return key, d


def image_exists(ref):
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("images", nargs="*", default=list(BINARIES), help="io-engine, agent, csi, etcd (default: all)")
    ap.add_argument("--build-dir", default=str(ROOT / "build/release"), help="where the binaries are built")
    ap.add_argument("--tag", default=version(), help="image tag (default: the project's version)")
    ap.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for debootstrap")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("build.py: run as root (debootstrap, podman)")
    if a.tag == "latest":
        raise SystemExit("build.py: --tag latest is refused (the chart pins tags)")
    for name in a.images:
        if name not in BINARIES:
            raise SystemExit(f"build.py: unknown image '{name}' (io-engine, agent, csi, etcd)")
    build_dir = pathlib.Path(a.build_dir)
    bins = {n: [find_binary(build_dir, b) for b in BINARIES[n]] for n in a.images}
    etcd = shutil.which("etcd")
    if "etcd" in a.images and not etcd:
        raise SystemExit("build.py: etcd is not installed here (apt-get install etcd-server)")
    everything = [b for n in BINARIES for b in ([find_binary(build_dir, x) for x in BINARIES[n]])]
    pkgs = runtime_packages(everything) | set(TOOLS)
    key, rootfs = base_rootfs(pkgs, a.mirror, pathlib.Path(os.environ.get("TERN_IMAGE_CACHE", "/var/cache/tern/images")))
    base = f"localhost/tern/base:{key}"
    if not image_exists(base):
        print(f"importing {base} ...", flush=True)
        with subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./.complete", "-c", "."],
                              stdout=subprocess.PIPE) as tar:
            r = subprocess.run(["podman", "import", "-", base], stdin=tar.stdout, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"build.py: podman import failed:\n{r.stderr[-2000:]}")
    for name in a.images:
        ref = f"localhost/tern/{name}:{a.tag}"
        ctr = sh(["buildah", "from", "--pull-never", "--name", f"tern-build-{name}-{os.getpid()}", base]).strip()
        try:
            # Our binaries without their debug sections (the release build keeps them for profiling).
            with tempfile.TemporaryDirectory(prefix="tern-image-") as tmp:
                files = []
                for b in bins[name]:
                    out = pathlib.Path(tmp) / b.name
                    sh(["objcopy", "--strip-debug", str(b), str(out)])
                    files.append(str(out))
                if name == "etcd":
                    files.append(etcd)
                if files:
                    sh(["buildah", "copy", "--chmod", "0755", ctr, *files, "/usr/local/bin/"])
            sh(["buildah", "config", "--user", USERS[name], "--workingdir", "/",
                "--entrypoint", f'["/usr/local/bin/{ENTRY[name]}"]', "--cmd", "",
                "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--label", f"org.opencontainers.image.title=tern {name}",
                "--label", f"org.opencontainers.image.version={a.tag}",
                "--label", "org.opencontainers.image.source=https://github.com/tern-storage/tern",
                "--label", f"io.tern.base={key}", ctr])
            sh(["buildah", "commit", "--rm", "--quiet", ctr, ref])
        except BaseException:
            subprocess.run(["buildah", "rm", ctr], capture_output=True)
            raise
        size = sh(["podman", "image", "inspect", ref, "--format", "{{.Size}}"]).strip()
        print(f"{ref}  {int(size) / 1e6:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
