#!/usr/bin/env bash
# Installs dependencies, builds (release) and runs the main job. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release io-engine ternctl tern-agent ioperf
exec scripts/main-job.sh build/release "$@"
