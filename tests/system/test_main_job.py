"""The README's main job (scripts/main-job.sh -> scripts/demo.py) on the release build: the cluster demo
must pass and say what it showed."""
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_main_job_on_the_release_build(release_dir):
    p = subprocess.run([str(ROOT / "scripts/main-job.sh"), str(release_dir)], capture_output=True, text=True,
                       timeout=600)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "main job: PASS" in out
    # A partial rebuild that copied a small part of the volume, a switch-over, every file intact.
    m = re.search(r"replica back after kill -9: partial rebuild, ([0-9.]+) MiB copied of 256 MiB", out)
    assert m and float(m.group(1)) < 64, out
    assert re.search(r"volume republished on another node in [0-9.]+ s", out), out
    m = re.search(r"files: (\d+)/(\d+) intact, e2fsck clean; teardown clean", out)
    assert m and m.group(1) == m.group(2) == "48", out
    assert "Traceback" not in out + p.stderr
