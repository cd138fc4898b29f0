#!/usr/bin/env python3
"""Instructions a proxied request costs in user space: tripwire in proxy mode with the shipped
rules against the bare hyper reverse proxy (`benches/bare_proxy.rs`, the floor of tripwire's
HTTP stack), both in front of the repo's echo server.

    python3 benches/scripts/proxy_instructions.py [--requests 2000] [--candidate ./other-tripwire]

Each proxy runs under `valgrind --tool=callgrind`; after 600 warm-up requests its counters are
zeroed (`callgrind_control -z`), the load generator sends `--requests` more at 200 a second over
32 keep-alive connections, and the counters are dumped (`callgrind_control -d`). Instructions
are counted in every thread of the proxy process, kernel excluded; unlike time on this shared
machine they repeat within a fraction of a percent. `--candidate` adds a second tripwire binary,
to compare two builds. Needs valgrind.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, pinned, start, stop, wait_port  # noqa: E402

UPSTREAM, PROXY, ADMIN = 19100, 19101, 19102
RATE = 200


def total_instructions(out_file):
    """The Ir total of a callgrind dump (its `summary:` or `totals:` line)."""
    for line in open(out_file):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"no total in {out_file}")


def measure(paths, argv, requests, tmp, name):
    out_file = os.path.join(tmp, f"callgrind.{name}")
    proxy = subprocess.Popen(
        pinned("0", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"] + argv),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(PROXY, timeout=120)
        loadgen(paths, "1", PROXY, "/pay", RATE, 3, warmup=0)
        subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
        res = loadgen(paths, "1", PROXY, "/pay", RATE, max(1, requests // RATE), warmup=0, offset=5000)
        subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
    finally:
        stop(proxy)
    answered = sum(res["statuses"].values())
    if res["errors"] or answered == 0:
        sys.exit(f"{name}: {res['errors']} errors, {answered} answered")
    dumps = sorted(glob.glob(out_file + ".*"))
    if not dumps:
        sys.exit(f"{name}: callgrind wrote no dump")
    per = total_instructions(dumps[0]) / answered
    log(f"{name}: {per:,.0f} instructions a request ({answered} requests)")
    return per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--candidate", help="a second tripwire binary")
    a = ap.parse_args()
    paths = build()
    rules = os.path.join(ROOT, "rules.yaml")

    def tripwire(binary):
        return [binary, "serve", "--rules", rules, "--listen", f"127.0.0.1:{PROXY}",
                "--admin-listen", f"127.0.0.1:{ADMIN}", "--workers", "1",
                "--upstream", f"http://127.0.0.1:{UPSTREAM}"]

    targets = [("hyper", [paths["bare_proxy"], "--listen", f"127.0.0.1:{PROXY}",
                          "--upstream", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]),
               ("tripwire", tripwire(paths["tripwire"]))]
    if a.candidate:
        targets.append(("candidate", tripwire(a.candidate)))
    upstream = start(pinned("0", [paths["echo"], "--listen", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]), UPSTREAM)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            counts = {name: measure(paths, argv, a.requests, tmp, name) for name, argv in targets}
    finally:
        stop(upstream)
    time.sleep(0.1)
    print(f"instructions a proxied request: bare hyper proxy {counts['hyper']:,.0f}, "
          f"tripwire {counts['tripwire']:,.0f} ({counts['tripwire'] / counts['hyper']:.2f} x the bare proxy)")
    if a.candidate:
        print(f"candidate {counts['candidate']:,.0f} ({counts['candidate'] / counts['tripwire']:.3f} x tripwire)")


if __name__ == "__main__":
    main()
