"""Coverage-guided fuzzing (libFuzzer + ASan + UBSan), time-boxed for the suite: the text parsers, the
NVMe/TCP target (PDU parser, state machines, command handling, over real loopback connections), the
metrics HTTP parser, session and exposition formatting, the NBD server's handshake and request parsers, and
the etcd client's HTTP response parser and JSON replies, and the Kubernetes watch stream and DiskPool objects.

A longer run: scripts/fuzz-long.sh [seconds] [target...]
"""
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import ROOT

FUZZ_SECONDS = int(os.environ.get("TERN_FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("target", ["parsers_fuzz", "nvmf_target_fuzz", "metrics_http_fuzz", "nbd_fuzz",
                                    "store_http_fuzz", "kube_fuzz"])
def test_fuzz_target_finds_nothing(target, tmp_path):
    binary = ROOT / "build/fuzz" / target
    if not binary.exists():
        pytest.fail(f"{binary} is not built; run scripts/build-fuzz.sh")
    seeds = ROOT / "tests/fuzz/corpus" / target.replace("_fuzz", "")
    corpus = tmp_path / "corpus"
    shutil.copytree(seeds, corpus)
    p = subprocess.run([str(binary), f"-max_total_time={FUZZ_SECONDS}", "-print_final_stats=1",
                        f"-artifact_prefix={tmp_path}/", str(corpus)],
                       capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    tail = "\n".join(p.stderr.splitlines()[-30:])
    assert p.returncode == 0, f"fuzzer found a problem:\n{tail}"
    runs = [l for l in p.stderr.splitlines() if "stat::number_of_executed_units" in l]
    assert runs and int(runs[0].split(":")[-1]) > 1000, tail
