#!/usr/bin/env python3
"""Memory under a customer flood.

    python3 benches/scripts/memory.py [--cap 1000000] [--ring 32] [--http-cap 20000]

1. The bytes-per-customer bound, in process: `cargo bench --bench memory` fills the store
   (tripwire's own Store) to the cap with full rings, feeds as many customers again, and reads
   the resident set size.
2. The same flood through HTTP: `tripwire serve --max-customers HTTP_CAP --ring-capacity RING`
   fed twice as many distinct customers by the load generator; prints the server's resident
   set size and the eviction count from its /metrics.
"""

import argparse
import json
import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, pinned, start, stop  # noqa: E402

PORT, ADMIN = 19010, 19011


def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=1_000_000)
    ap.add_argument("--ring", type=int, default=32)
    ap.add_argument("--http-cap", type=int, default=20_000)
    a = ap.parse_args()

    log("in process: filling the store ...")
    out = subprocess.run(["cargo", "bench", "--locked", "--bench", "memory", "--",
                          "--customers", str(a.cap), "--ring", str(a.ring)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    in_process = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"in_process": in_process}))

    paths = build()
    server = start(pinned("0", [paths["tripwire"], "serve", "--rules", os.path.join(ROOT, "rules.yaml"),
                                "--listen", f"127.0.0.1:{PORT}", "--admin-listen", f"127.0.0.1:{ADMIN}",
                                "--max-customers", str(a.http_cap), "--ring-capacity", str(a.ring)]),
                   PORT, env={**os.environ, "RUST_LOG": "warn"})
    try:
        idle = rss_of(server.pid)
        customers = 2 * a.http_cap
        rate = 5000
        duration = max(2, (customers + rate - 1) // rate + 1)
        res = loadgen(paths, "1", PORT, "/v1/decide", rate, duration, warmup=0, customers=customers)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics").read().decode()
        values = {}
        for line in metrics.splitlines():
            for name in ("tripwire_customers", "tripwire_events", "tripwire_customer_evictions_total"):
                if line.startswith(name + " "):
                    values[name] = float(line.split()[1])
        report = {"cap": a.http_cap, "fed_customers": customers, "requests": res["completed"],
                  "errors": res["errors"], "rss_idle": idle, "rss_after": rss_of(server.pid), **values}
        print(json.dumps({"http": report}))
    finally:
        stop(server)


if __name__ == "__main__":
    main()
