"""Fixtures for system tests: the built binaries and disk-backed scratch space.

The binaries come from TERN_BUILD_DIR (the sanitizer build when run by scripts/test.sh) and the
release build from TERN_RELEASE_DIR. Every subprocess gets a timeout, so nothing here can hang.
"""
import json
import os
import pathlib
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _build_dir(var, default):
    return pathlib.Path(os.environ.get(var, ROOT / "build" / default))


@pytest.fixture(scope="session")
def build_dir():
    d = _build_dir("TERN_BUILD_DIR", "asan")
    if not (d / "tools/ioperf/ioperf").exists():
        pytest.fail(f"ioperf is not built in {d}; run scripts/build.sh first")
    return d


@pytest.fixture(scope="session")
def release_dir():
    d = _build_dir("TERN_RELEASE_DIR", "release")
    if not (d / "tools/ioperf/ioperf").exists():
        pytest.fail(f"ioperf is not built in {d}; run scripts/build.sh release first")
    return d


@pytest.fixture
def scratch():
    """A directory on a disk-backed file system (O_DIRECT needs one)."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") else None
    with tempfile.TemporaryDirectory(prefix="tern-sys-", dir=base) as d:
        yield pathlib.Path(d)


def make_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def usable_cores(n=2):
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:n])


class Ioperf:
    def __init__(self, binary):
        self.binary = str(binary)

    def run(self, *args, timeout=120):
        p = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout)
        return p

    def json(self, *args, timeout=120):
        p = self.run(*args, "--json", timeout=timeout)
        out = p.stdout.strip().splitlines()
        assert out, f"no output; rc={p.returncode} stderr={p.stderr}"
        return p.returncode, json.loads(out[-1]), p.stderr


@pytest.fixture
def ioperf(build_dir):
    return Ioperf(build_dir / "tools/ioperf/ioperf")


class TargetFactory:
    """Starts nvmf_tgt processes and stops every one of them at the end, checking each exited cleanly."""

    def __init__(self, build_dir, workdir):
        self.binary = build_dir / "tools/nvmf_tgt/nvmf_tgt"
        if not self.binary.exists():
            pytest.fail(f"nvmf_tgt is not built in {build_dir}; run scripts/build.sh first")
        self.workdir = workdir
        self.targets = []

    def __call__(self, config, cores=None):
        from nvmf_target import Target
        t = Target(self.binary, self.workdir, config, cores=cores or usable_cores(), name=f"tgt{len(self.targets)}")
        self.targets.append(t)
        return t.start()

    def stop_all(self):
        errors = []
        for t in self.targets:
            try:
                t.stop()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            pytest.fail("\n\n".join(errors))


@pytest.fixture
def nvmf_target(build_dir, scratch):
    """nvmf_target(config_dict) starts a target; all are stopped (and checked) when the test ends."""
    f = TargetFactory(build_dir, scratch)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture(scope="module")
def nvmf_module_target(build_dir, tmp_path_factory):
    """Like nvmf_target, for targets shared by the tests of a module."""
    f = TargetFactory(build_dir, tmp_path_factory.mktemp("nvmf"))
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def engines(build_dir, scratch):
    """engines(pools=[("p0", "uring:///...")], ...) starts an io-engine on free ports; every engine is
    stopped with SIGTERM at the end and must exit 0 with a clean log."""
    from io_engine import EngineFactory
    f = EngineFactory(build_dir, scratch)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture(scope="session")
def pb():
    """The engine API's generated Python modules (pool_pb2, replica_pb2, common_pb2, ...)."""
    from io_engine import stubs
    return stubs()


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: the Linux kernel in a QEMU guest is the peer (run alone: pytest -m kernel)")


class GuestFactory:
    """Boots kernel guests (tests/system/kernel_guest.py) and powers every one of them off at the end."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.guests = []

    def __call__(self, **kw):
        from kernel_guest import Guest
        g = Guest(self.workdir / f"guest{len(self.guests)}", **kw)
        self.guests.append(g)
        return g

    def close_all(self):
        for g in self.guests:
            g.close()


@pytest.fixture(scope="module")
def kernel_guest(tmp_path_factory):
    """kernel_guest(forwards=N, expose=(ports...), cmdline="...") boots a Linux guest for this module's tests
    (see kernel_guest.Guest); all are powered off when the module ends."""
    f = GuestFactory(tmp_path_factory.mktemp("guest"))
    try:
        yield f
    finally:
        f.close_all()
