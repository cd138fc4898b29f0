#!/usr/bin/env python3
"""The HTTP latency harness: tripwire against the HTTP floor, in the same run.

    python3 benches/scripts/latency.py [--rounds 3] [--duration 5] [--quick]

The server under test is pinned to core 0, the load generator (benches/loadgen.rs: open loop,
latency from each request's planned send time, HdrHistogram) to core 1. Each scenario runs
tripwire (A) and its baseline (B) in turn, A B A B ..., and reports the median over rounds of the
per-pair ratios A/B for p50, p99 and p99.9:

  decide     POST /v1/decide to `tripwire serve` (shipped rules) vs the bare hyper echo server
             (benches/echo.rs), at 1k, 3k and 10k requests/s, with --workers 1 and the default
  proxy      tripwire --upstream echo vs the echo called directly, 3k requests/s
  storm      decide while rules are PUT to the admin API every 10 ms vs without, 3k requests/s
  customers  decide with 200k customers already held (1M with --customers 1000000) vs 1k
  max-rate   the highest rate each sustains (p99 under 10 ms, 99% of the rate delivered), one
             ladder for both in turn, a failed step retried once (--quick --max-rate: only this)

Prints a table per scenario and, last, one JSON object with every figure.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, median, pinned, start, stop  # noqa: E402

PORT, ADMIN, UPSTREAM = 19020, 19021, 19022
QUANTILES = ("p50_us", "p99_us", "p999_us")


def tripwire(paths, workers, extra=()):
    argv = [paths["tripwire"], "serve", "--rules", os.path.join(ROOT, "rules.yaml"),
            "--listen", f"127.0.0.1:{PORT}", "--admin-listen", f"127.0.0.1:{ADMIN}",
            "--max-customers", "2000000", "--no-watch", *extra]
    if workers:
        argv += ["--workers", str(workers)]
    return start(pinned("0", argv), PORT, env={**os.environ, "RUST_LOG": "warn"})


def echo(paths, workers, port=PORT):
    argv = [paths["echo"], "--listen", f"127.0.0.1:{port}"]
    if workers:
        argv += ["--workers", str(workers)]
    return start(pinned("0", argv), port)


def run(paths, start_server, path, rate, duration, customers=1000, offset=0, during=None):
    server = start_server()
    try:
        stop_flag = threading.Event()
        helper = None
        if during:
            helper = threading.Thread(target=during, args=(stop_flag,), daemon=True)
            helper.start()
        res = loadgen(paths, "1", PORT, path, rate, duration, warmup=1, customers=customers, offset=offset)
        stop_flag.set()
        if helper:
            helper.join()
        return res
    finally:
        for s in (server if isinstance(server, list) else [server]):
            stop(s)


def pairs(name, rounds, a, b):
    """Runs a() and b() alternately; returns per-quantile medians of the per-pair ratios."""
    rows = []
    for r in range(rounds):
        ra = a(r)
        rb = b(r)
        rows.append((ra, rb))
        log(f"{name} round {r}: A p50 {ra['p50_us']} p99 {ra['p99_us']} p99.9 {ra['p999_us']} us "
            f"({ra['errors']} errors, {ra['non_2xx']} non-2xx) | B p50 {rb['p50_us']} p99 {rb['p99_us']} "
            f"p99.9 {rb['p999_us']} us")
    out = {"rounds": rounds}
    for q in QUANTILES:
        out[q] = {
            "a": median([ra[q] for ra, _ in rows]),
            "b": median([rb[q] for _, rb in rows]),
            "ratio": round(median([ra[q] / max(rb[q], 1) for ra, rb in rows]), 2),
        }
    out["errors_a"] = sum(ra["errors"] + ra["non_2xx"] for ra, _ in rows)
    out["errors_b"] = sum(rb["errors"] + rb["non_2xx"] for _, rb in rows)
    return out


def storm(stop_flag):
    with open(os.path.join(ROOT, "rules.yaml"), "rb") as f:
        shipped = f.read()
    variant = shipped.replace(b"at_least: 5 }", b"at_least: 6 }")
    i = 0
    while not stop_flag.is_set():
        body = variant if i % 2 == 0 else shipped
        req = urllib.request.Request(f"http://127.0.0.1:{ADMIN}/admin/rules", data=body, method="PUT")
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except OSError:
            pass
        i += 1
        time.sleep(0.01)


def sustainable_pair(paths, servers, path, rates, duration):
    """The highest rate each server sustains (p99 under 10 ms, 99% of the rate delivered, no
    errors), climbing one ladder for both in turn, A then B at each step, so that drift in the
    machine's speed hits both alike. A failed step is tried once more before it counts: one
    burst of a noisy neighbour should not end the climb."""
    best = {name: 0 for name in servers}
    alive = set(servers)
    for rate in rates:
        for name in servers:
            if name not in alive:
                continue
            for attempt in (1, 2):
                res = run(paths, servers[name], path, rate, duration)
                ok = res["p99_us"] < 10_000 and res["throughput_rps"] >= 0.99 * rate and res["errors"] == 0
                log(f"  {name} {rate} req/s (try {attempt}): p99 {res['p99_us']} us, "
                    f"{res['throughput_rps']:.0f} req/s -> {'ok' if ok else 'no'}")
                if ok:
                    break
            if ok:
                best[name] = rate
            else:
                alive.discard(name)
        if not alive:
            break
    return best


def max_rate(paths, duration):
    rates = [2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000, 32000, 48000]
    log("highest sustainable rate, --workers 1, tripwire and echo in turn at each step:")
    best = sustainable_pair(paths, {"tripwire": lambda: tripwire(paths, 1), "echo": lambda: echo(paths, 1)},
                            "/v1/decide", rates, duration)
    t, e = best["tripwire"], best["echo"]
    return {"tripwire": t, "echo": e, "ratio": round(t / e, 2) if e else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--customers", type=int, default=200_000, help="customers held in the large case")
    ap.add_argument("--quick", action="store_true", help="only decide at 3k with --workers 1")
    ap.add_argument("--max-rate", action="store_true", help="with --quick: the highest sustainable rate too")
    a = ap.parse_args()
    paths = build()
    report = {}

    configs = [(3000, 1)] if a.quick else [(r, w) for w in (1, None) for r in (1000, 3000, 10000)]
    for rate, workers in configs:
        key = f"decide_{rate}_workers_{workers or 'default'}"
        report[key] = pairs(key, a.rounds,
                            lambda r: run(paths, lambda: tripwire(paths, workers), "/v1/decide", rate, a.duration, offset=r * 10_000),
                            lambda r: run(paths, lambda: echo(paths, workers), "/v1/decide", rate, a.duration))
    if not a.quick:
        def proxied():
            return [echo(paths, 1, UPSTREAM), tripwire(paths, 1, ["--upstream", f"http://127.0.0.1:{UPSTREAM}"])]
        report["proxy_3000"] = pairs("proxy", a.rounds,
                                     lambda r: run(paths, proxied, "/pay", 3000, a.duration, offset=r * 10_000),
                                     lambda r: run(paths, lambda: echo(paths, 1), "/pay", 3000, a.duration))
        report["storm_3000"] = pairs("storm", a.rounds,
                                     lambda r: run(paths, lambda: tripwire(paths, 1), "/v1/decide", 3000, a.duration, offset=r * 10_000, during=storm),
                                     lambda r: run(paths, lambda: tripwire(paths, 1), "/v1/decide", 3000, a.duration, offset=r * 10_000))

        def warmed(customers):
            def go(r):
                server = tripwire(paths, 1)
                try:
                    # Make every customer known first, then measure over all of them.
                    warm_rate = 20_000
                    loadgen(paths, "1", PORT, "/v1/decide", warm_rate, max(1, customers // warm_rate), warmup=0,
                            customers=customers, offset=1_000_000 * (r + 1))
                    return loadgen(paths, "1", PORT, "/v1/decide", 3000, a.duration, warmup=1,
                                   customers=customers, offset=1_000_000 * (r + 1))
                finally:
                    stop(server)
            return go
        report[f"customers_{a.customers}_vs_1000"] = pairs("customers", a.rounds, warmed(a.customers), warmed(1000))

    if not a.quick or a.max_rate:
        report["max_rate"] = max_rate(paths, a.duration)

    for key, r in report.items():
        if key == "max_rate":
            print(f"{key:34} tripwire {r['tripwire']} req/s, echo {r['echo']} req/s, ratio {r['ratio']}")
            continue
        cells = "  ".join(f"{q[:-3]} {r[q]['a']}/{r[q]['b']} us = {r[q]['ratio']:.2f}x" for q in QUANTILES)
        print(f"{key:34} {cells}  (errors {r['errors_a']}/{r['errors_b']})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
