#!/usr/bin/env python3
"""One line from an `ioperf --json` result (used by the main job). Exit 1 on errors or a mismatch."""
import json
import sys

d = json.load(open(sys.argv[1]))
t = d["total"]
mismatch = d["verify"]["mismatch"]
print(f"   {t['iops']:,.0f} IOPS, {t['mib_s']:,.0f} MiB/s, latency mean {t['lat_us']['mean']:.0f} us, "
      f"p99 {t['lat_us']['p99']:.0f} us, errors {t['errors']}, verified {d['verify']['checked_bytes'] / 2**20:,.0f} MiB: "
      + ("no mismatch" if mismatch is None else f"MISMATCH {mismatch}"))
sys.exit(0 if d["ok"] and mismatch is None and t["errors"] == 0 else 1)
