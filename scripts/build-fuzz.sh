#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build/fuzz. They compile only the parsers they test,
# so this is quick. Usage: scripts/build-fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/fuzz
mkdir -p "$out"
cxx=$(command -v clang++-14 || command -v clang++)
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc)
"$cxx" "${flags[@]}" tests/fuzz/parsers_fuzz.cc \
  src/common/status.cc src/common/uri.cc src/common/units.cc src/common/uuid.cc \
  src/bdev/error_rule.cc src/bdev/bdev_io.cc \
  -lfmt -o "$out/parsers_fuzz"
echo "built $out/parsers_fuzz"
