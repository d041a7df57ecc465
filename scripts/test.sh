#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite:
#   unit tests (gtest, under AddressSanitizer + UBSan, via ctest) and
#   system tests (pytest: real binaries, files, loop devices, the main job on the release build,
#   time-boxed libFuzzer runs of the parsers, and the Linux kernel as a peer in QEMU guests —
#   `pytest -m kernel` runs those alone; their guest kit is cached in /var/cache/tern/guest-kit).
# Run as root on Debian 12. Exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1
scripts/build.sh asan || exit 1
# The release flavour serves the main-job test only: its programs, not the unit tests or benches.
scripts/build.sh release io-engine ternctl tern-agent tern-csi tern-ha-node ioperf || exit 1
scripts/build-fuzz.sh || exit 1

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== unit tests (build/asan)"
(cd build/asan && ctest -j "$(nproc)" --timeout 300 --output-on-failure) 2>&1 | tee build/unit-tests.log
unit_rc=${PIPESTATUS[0]}

echo "== system tests"
TERN_BUILD_DIR="$PWD/build/asan" TERN_RELEASE_DIR="$PWD/build/release" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=15 tests/system 2>&1 | tee build/system-tests.log
sys_rc=${PIPESTATUS[0]}

unit_line=$(grep -E "tests passed|tests failed" build/unit-tests.log | tail -1)
sys_line=$(grep -E "^[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s" build/system-tests.log | tail -1)
echo
echo "== summary"
echo "unit:   ${unit_line:-no result (ctest did not run)}"
echo "system: ${sys_line:-no result (pytest did not run)}"
if [ "$unit_rc" -ne 0 ] || [ "$sys_rc" -ne 0 ]; then
  echo "RESULT: FAIL"
  exit 1
fi
echo "RESULT: PASS"
