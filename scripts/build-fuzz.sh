#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + coverage) into build/fuzz:
#   parsers_fuzz      text parsers (URIs, error rules, sizes, durations, UUIDs), the block-status reply
#   nvmf_target_fuzz  the NVMe/TCP target: PDU parser, state machines, command handling
#   metrics_http_fuzz the metrics HTTP parser and session, exposition escaping and number formatting
#   nbd_fuzz          the NBD server: client flags, options and their answers, request headers and verdicts
#   store_http_fuzz   the etcd client's HTTP response parser (split invariance), etcd JSON replies, base64
#   kube_fuzz         the Kubernetes watch stream (lines, events) and DiskPool objects, their status and patches
# Usage: scripts/build-fuzz.sh [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/fuzz
cxx=$(command -v clang++-14 || command -v clang++)
if [ ! -f "$out/build.ninja" ]; then
  rm -rf "$out"
  cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER="$cxx" -DTERN_FUZZ=ON \
    -DTERN_SANITIZE=address,undefined >/dev/null
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parsers_fuzz nvmf_target_fuzz metrics_http_fuzz nbd_fuzz store_http_fuzz kube_fuzz)
ninja -C "$out" -j "$(nproc)" "${targets[@]}"
