#!/usr/bin/env bash
# The main job, on an already built tree: start an io-engine on a file-backed pool, create a thin
# replica through the CLI and share it over NVMe/TCP, drive it with ioperf (verified I/O through our
# NVMe/TCP initiator), show the engine's view, print a short report and shut the engine down cleanly.
# Usage: scripts/main-job.sh [build-dir] [seconds]   (defaults: build/release, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
secs=${2:-10}
engine="$build/tools/io-engine/io-engine"
ternctl="$build/tools/ternctl/ternctl"
ioperf="$build/tools/ioperf/ioperf"
for b in "$engine" "$ternctl" "$ioperf"; do
  [ -x "$b" ] || { echo "main-job: $b is not built (run scripts/build.sh release)" >&2; exit 2; }
done

# A disk-backed directory: O_DIRECT needs a real file system (tmpfs refuses it on older kernels).
work=$(mktemp -d "${TERN_WORK_DIR:-/var/tmp}/tern-main.XXXXXX")
engine_pid=""
cleanup() {
  if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
    kill -KILL "$engine_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
disk="$work/pool0.img"
truncate -s 1G "$disk"
read -r grpc_port nvmf_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
core=$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')
export TERN_ENGINE="127.0.0.1:$grpc_port"
step() { echo; echo "-- $*"; }

echo "== tern main job: one io-engine, a 1 GiB file-backed pool, a thin replica shared over NVMe/TCP"
step "1. start the io-engine (gRPC 127.0.0.1:$grpc_port, NVMe/TCP 127.0.0.1:$nvmf_port, reactor on core $core)"
"$engine" --node-name main-job --grpc-endpoint "$TERN_ENGINE" --nvmf-address 127.0.0.1 --nvmf-port "$nvmf_port" \
  --nbd-port 0 --metrics-port 0 --cores "$core" --state-dir "$work/state" >"$work/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 100); do
  "$ternctl" node info >/dev/null 2>&1 && break
  kill -0 "$engine_pid" 2>/dev/null || { echo "main-job: the engine exited:"; cat "$work/engine.log"; exit 1; }
  sleep 0.1
done
"$ternctl" node info

step "2. ternctl pool create p0 uring://$disk"
"$ternctl" pool create p0 "uring://$disk"

step "3. ternctl replica create vol1 --pool p0 --size 512MiB --thin --share nvmf"
"$ternctl" replica create vol1 --pool p0 --size 512MiB --thin --share nvmf
uri=$("$ternctl" replica list --name vol1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicas"][0]["share"]["uri"])')
echo "share URI: $uri"

step "4. ioperf through our NVMe/TCP initiator: random read/write, 4 KiB, QD 16, ${secs}s, every read verified"
"$ioperf" --uri "$uri" --rw randrw --mix 50 --bs 4k --qd 16 --cores "$core" --time "${secs}s" --verify --json >"$work/randrw.json"
python3 scripts/ioperf_summary.py "$work/randrw.json"
step "5. ioperf: sequential write of the whole replica, then full read-back verification (128 KiB, QD 8)"
"$ioperf" --uri "$uri" --rw write --bs 128k --qd 8 --cores "$core" --ios 4096 --time 0 --verify --json >"$work/seq.json"
python3 scripts/ioperf_summary.py "$work/seq.json"

step "6. what the engine sees"
"$ternctl" pool list
echo
"$ternctl" replica list
echo
"$ternctl" replica stats vol1
echo
"$ternctl" nvmf subsystems

step "7. stop the engine (SIGTERM: unshare, export the pool clean, exit 0)"
kill -TERM "$engine_pid"
rc=0
wait "$engine_pid" || rc=$?
engine_pid=""
tail -3 "$work/engine.log"
[ "$rc" -eq 0 ] || { echo "main-job: the engine exited with $rc"; cat "$work/engine.log"; exit 1; }

echo
python3 - "$work/randrw.json" "$work/seq.json" <<'PY'
import json, sys
r, s = (json.load(open(p)) for p in sys.argv[1:3])
def ok(d): return d["ok"] and d["verify"]["mismatch"] is None and d["total"]["errors"] == 0
t = r["total"]
print("== report")
print(f"random 4 KiB read/write, QD 16: {t['iops']:,.0f} IOPS (read {r['read']['iops']:,.0f}, write {r['write']['iops']:,.0f}), "
      f"latency mean {t['lat_us']['mean']:.0f} us, p99 {t['lat_us']['p99']:.0f} us")
print(f"sequential 128 KiB write: {s['write']['mib_s']:.0f} MiB/s")
print(f"verify: {(r['verify']['checked_bytes'] + s['verify']['checked_bytes']) / 2**20:,.0f} MiB read back and checked, "
      + ("no mismatch" if ok(r) and ok(s) else "MISMATCH OR ERRORS"))
sys.exit(0 if ok(r) and ok(s) else 1)
PY
echo "== main job: PASS"
