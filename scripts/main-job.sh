#!/usr/bin/env bash
# The main job, on an already built tree: make a file-backed device, drive it with ioperf in verify
# mode from every core we may use (up to two), measure it briefly, and print a short report.
# Usage: scripts/main-job.sh [build-dir] [seconds]   (defaults: build/release, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${2:-10}
ioperf="$build/tools/ioperf/ioperf"
[ -x "$ioperf" ] || { echo "main-job: $ioperf is not built (run scripts/build.sh release)" >&2; exit 2; }

# A disk-backed directory: O_DIRECT needs a real file system (tmpfs refuses it on older kernels).
work=$(mktemp -d "${TERN_WORK_DIR:-/var/tmp}/tern-main.XXXXXX")
trap 'rm -rf "$work"' EXIT
disk="$work/disk.img"
size_mb=512
fallocate -l ${size_mb}M "$disk" 2>/dev/null || truncate -s ${size_mb}M "$disk"

cores=$(python3 -c 'import os; c=sorted(os.sched_getaffinity(0)); print(",".join(map(str, c[:2])))')
echo "== tern main job: a ${size_mb} MiB file-backed device at $disk, reactors on cores $cores"
echo
echo "-- 1. random read/write with verification (${secs}s, 4 KiB, QD 16 per core)"
"$ioperf" --uri "uring://$disk" --rw randrw --mix 50 --bs 4k --qd 16 --cores "$cores" --time "${secs}s" --verify
echo
echo "-- 2. sequential write then full read-back verification (128 KiB, QD 8)"
"$ioperf" --uri "uring://$disk" --rw write --bs 128k --qd 8 --cores "$cores" --ios 4096 --time 0 --verify
echo
echo "-- 3. speed: 4 KiB random read, QD 32, one core (3 s)"
"$ioperf" --uri "uring://$disk" --rw randread --bs 4k --qd 32 --cores "${cores%%,*}" --time 3s
echo
echo "== main job: PASS (every read matched what was written; see the tables above)"
