#!/usr/bin/env bash
# Configures and builds one flavour into build/<flavour>:
#   release  optimised, with debug info (main job, benchmarks)
#   asan     debug with AddressSanitizer + UndefinedBehaviorSanitizer (the test suite)
#   debug    plain debug build (for gdb)
# Usage: scripts/build.sh [release|asan|debug] [extra ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-release}
shift || true
case "$flavour" in
  release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
  asan) args=(-DCMAKE_BUILD_TYPE=Debug -DTERN_SANITIZE=address,undefined) ;;
  debug) args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  *) echo "build.sh: unknown flavour '$flavour' (release, asan or debug)" >&2; exit 2 ;;
esac
dir=build/$flavour
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja "${args[@]}" >/dev/null
fi
# Two compilers at once on two cores; more only where there are more cores.
jobs=$(nproc)
ninja -C "$dir" -j "$jobs" "$@"
