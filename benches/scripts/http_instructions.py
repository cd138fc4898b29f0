#!/usr/bin/env python3
"""Instructions a request over HTTP costs in user space, tripwire against the floor of its HTTP
stack, with the shipped rules:

  decide  POST /v1/decide to `tripwire serve` against the bare hyper echo server
          (`benches/echo.rs`), which reads the body and answers a small JSON
  proxy   tripwire in proxy mode against the bare hyper reverse proxy (`benches/bare_proxy.rs`),
          both in front of the echo server

    python3 benches/scripts/http_instructions.py [--scenario decide|proxy] [--requests 2000]
                                                 [--candidate ./other-tripwire]

Each server runs under `valgrind --tool=callgrind`; after 600 warm-up requests its counters are
zeroed (`callgrind_control -z`), the load generator sends `--requests` more at 200 a second over
32 keep-alive connections, and the counters are dumped (`callgrind_control -d`). Instructions
are counted in every thread of the server process, kernel excluded; unlike time on this shared
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

UPSTREAM, SERVER, ADMIN = 19100, 19101, 19102
RATE = 200


def total_instructions(out_file):
    """The Ir total of a callgrind dump (its `summary:` or `totals:` line)."""
    for line in open(out_file):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"no total in {out_file}")


def measure(paths, argv, path, requests, tmp, name):
    out_file = os.path.join(tmp, f"callgrind.{name}")
    proxy = subprocess.Popen(
        pinned("0", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"] + argv),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(SERVER, timeout=120)
        loadgen(paths, "1", SERVER, path, RATE, 3, warmup=0)
        subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
        res = loadgen(paths, "1", SERVER, path, RATE, max(1, requests // RATE), warmup=0, offset=5000)
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
    ap.add_argument("--scenario", choices=["decide", "proxy"], action="append",
                    help="decide, proxy, or both when not given")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--candidate", help="a second tripwire binary")
    a = ap.parse_args()
    paths = build()
    rules = os.path.join(ROOT, "rules.yaml")

    def tripwire(binary, proxy):
        argv = [binary, "serve", "--rules", rules, "--listen", f"127.0.0.1:{SERVER}",
                "--admin-listen", f"127.0.0.1:{ADMIN}", "--workers", "1"]
        return argv + ["--upstream", f"http://127.0.0.1:{UPSTREAM}"] if proxy else argv

    floors = {
        "decide": ("bare hyper echo", [paths["echo"], "--listen", f"127.0.0.1:{SERVER}", "--workers", "1"]),
        "proxy": ("bare hyper proxy", [paths["bare_proxy"], "--listen", f"127.0.0.1:{SERVER}",
                                       "--upstream", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]),
    }
    upstream = start(pinned("0", [paths["echo"], "--listen", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]), UPSTREAM)
    lines = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for scenario in a.scenario or ["decide", "proxy"]:
                proxy = scenario == "proxy"
                path = "/pay" if proxy else "/v1/decide"
                floor_name, floor_argv = floors[scenario]
                counts = {"floor": measure(paths, floor_argv, path, a.requests, tmp, f"{scenario}-floor"),
                          "tripwire": measure(paths, tripwire(paths["tripwire"], proxy), path, a.requests,
                                              tmp, f"{scenario}-tripwire")}
                if a.candidate:
                    counts["candidate"] = measure(paths, tripwire(a.candidate, proxy), path, a.requests,
                                                  tmp, f"{scenario}-candidate")
                line = (f"{scenario}: instructions a request: {floor_name} {counts['floor']:,.0f}, "
                        f"tripwire {counts['tripwire']:,.0f} ({counts['tripwire'] / counts['floor']:.2f} x)")
                if a.candidate:
                    line += (f", candidate {counts['candidate']:,.0f} "
                             f"({counts['candidate'] / counts['tripwire']:.3f} x tripwire)")
                lines.append(line)
    finally:
        stop(upstream)
    time.sleep(0.1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
