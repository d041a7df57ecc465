#!/usr/bin/env bash
# The main job, on an already built tree: the cluster demo (scripts/demo.py) — a three-node cluster on this
# machine, a 3-replica volume with ext4 on it, a replica's engine killed and brought back (partial
# rebuild), the serving engine killed (the volume republished elsewhere), every file verified, teardown,
# a report ending in "main job: PASS".
# Usage: scripts/main-job.sh [build-dir]   (default: build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
for b in tools/io-engine/io-engine tools/ternctl/ternctl tools/tern-agent/tern-agent; do
  [ -x "$build/$b" ] || { echo "main-job: $build/$b is not built (run scripts/build.sh release)" >&2; exit 2; }
done
exec python3 scripts/demo.py --build "$build"
