#!/usr/bin/env bash
# A long fuzzing run (the test suite runs each target for 20 s). Keeps the grown corpus in
# build/fuzz/corpus/<target>, writes crashes to build/fuzz/artifacts/, and stops at the first finding.
# Usage: scripts/fuzz-long.sh [seconds per target, default 600] [targets..., default all]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parsers_fuzz nvmf_target_fuzz metrics_http_fuzz nbd_fuzz store_http_fuzz kube_fuzz)
scripts/build-fuzz.sh "${targets[@]}"
mkdir -p build/fuzz/artifacts
for t in "${targets[@]}"; do
  seeds=tests/fuzz/corpus/${t%_fuzz}
  corpus=build/fuzz/corpus/$t
  mkdir -p "$corpus"
  echo "== $t for ${secs}s (corpus $corpus, seeds $seeds)"
  build/fuzz/$t -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/ \
    "$corpus" "$seeds"
done
