#!/usr/bin/env python3
"""Fleet mode figures: replication lag across three replicas under load, and decide latency with
fleet mode on against off, in the same run.

    python3 benches/scripts/fleet.py                       # 3,000 decisions/s, 6 A/B pairs
    python3 benches/scripts/fleet.py --rate 1500 --pairs 3

Needs nats-server on PATH (Debian: apt-get install nats-server). Everything listens on
loopback.

1. Lag: a `nats-server -js` and three release replicas. Three load generators (the repo's
   open-loop `loadgen`) send `rate / 3` decisions a second each, one per replica, for disjoint
   customers. Every replica applies the other two replicas' changes. Each replica's
   `tripwire_fleet_replication_lag_seconds` histogram (JetStream publication to application on
   this replica) is read from `/metrics`, and p50/p99 are given as the bucket bounds they fall
   in.
2. On against off: one replica of the fleet against a standalone tripwire, A B A B, at the same
   rate, with `loadgen` on the same core. Medians of the per-pair p50 and p99 ratios.
3. The publish queue at its bound (`--queue-memory`): a replica whose NATS is gone receives more
   decisions than its queue holds, and a standalone server the same decisions; the difference
   of their RSS is what the full queue costs.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, median, rss_kib, stop_all, wait_port  # noqa: E402

NATS = 14222
BASE = 18600


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def wait_ready(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if get(port, "/readyz")[0] == 200:
            return
        time.sleep(0.1)
    sys.exit(f"the replica on admin port {port} never became ready")


def lag_quantiles(metrics_text):
    """p50 and p99 of the lag histogram, as the upper bounds of the buckets they fall in."""
    buckets = []
    for m in re.finditer(r'tripwire_fleet_replication_lag_seconds_bucket\{le="([^"]+)"\} (\d+)', metrics_text):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, int(m.group(2))))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    def q(p):
        for le, count in buckets:
            if count >= p * total:
                return le
        return float("inf")
    return {"count": total, "p50_le_ms": q(0.5) * 1000, "p99_le_ms": q(0.99) * 1000}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--pair-rate", type=int, default=1000)
    parser.add_argument("--pair-duration", type=int, default=8)
    parser.add_argument("--queue-memory", action="store_true",
                        help="only measure the publish queue's memory at its bound")
    args = parser.parse_args()
    if not shutil.which("nats-server"):
        sys.exit("nats-server is not on PATH (apt-get install nats-server)")
    paths = build()
    work = tempfile.mkdtemp(prefix="tripwire-fleet-")
    procs = []

    def spawn(argv):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "RUST_LOG": "warn"})
        procs.append(p)
        return p

    if args.queue_memory:
        return queue_memory(paths, work, spawn, procs)
    try:
        spawn(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(NATS), "-sd", os.path.join(work, "nats")])
        wait_port(NATS)
        rules = os.path.join(ROOT, "rules.yaml")
        replicas = []
        for i in range(3):
            pay, adm = BASE + 2 * i, BASE + 2 * i + 1
            spawn([paths["tripwire"], "serve", "--rules", rules, "--no-watch",
                   "--nats", f"nats://127.0.0.1:{NATS}", "--replica", f"r{i}",
                   "--listen", f"127.0.0.1:{pay}", "--admin-listen", f"127.0.0.1:{adm}"])
            replicas.append((pay, adm))
        for _, adm in replicas:
            wait_ready(adm)

        log(f"lag: {args.rate}/s over three replicas for {args.duration} s")
        results = [None] * 3
        customers = 1000

        def drive(i):
            results[i] = loadgen(paths, "0-1", replicas[i][0], "/v1/decide", args.rate // 3,
                                 args.duration, warmup=0, customers=customers,
                                 offset=i * customers)

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)
        lag = [lag_quantiles(get(adm, "/metrics")[1]) for _, adm in replicas]
        errors = sum(r["errors"] + r["non_2xx"] for r in results)

        log(f"on against off: {args.pairs} pairs at {args.pair_rate}/s")
        alone_pay, alone_adm = BASE + 10, BASE + 11
        spawn([paths["tripwire"], "serve", "--rules", rules, "--no-watch",
               "--listen", f"127.0.0.1:{alone_pay}", "--admin-listen", f"127.0.0.1:{alone_adm}"])
        wait_ready(alone_adm)
        p50s, p99s = [], []
        for pair in range(args.pairs):
            offset = 100_000 + pair * 2 * customers
            on = loadgen(paths, "0-1", replicas[0][0], "/v1/decide", args.pair_rate,
                         args.pair_duration, warmup=1, customers=customers, offset=offset)
            off = loadgen(paths, "0-1", alone_pay, "/v1/decide", args.pair_rate,
                          args.pair_duration, warmup=1, customers=customers, offset=offset + customers)
            p50s.append(on["p50_us"] / max(off["p50_us"], 1))
            p99s.append(on["p99_us"] / max(off["p99_us"], 1))
            log(f"  pair {pair + 1}: on p50 {on['p50_us']} p99 {on['p99_us']} | off p50 {off['p50_us']} p99 {off['p99_us']}")
        print({
            "rate": args.rate,
            "duration_s": args.duration,
            "load_errors": errors,
            "lag_per_replica": lag,
            "on_vs_off_p50_median": round(median(p50s), 3),
            "on_vs_off_p99_median": round(median(p99s), 3),
            "on_vs_off_p50_pairs": [round(r, 3) for r in p50s],
            "on_vs_off_p99_pairs": [round(r, 3) for r in p99s],
        })
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


def queue_memory(paths, work, spawn, procs, queue=65536, decisions=80000):
    """RSS of a replica cut off from NATS with its queue full, against a standalone server
    given the same decisions."""
    rules = os.path.join(ROOT, "rules.yaml")
    try:
        nats = spawn(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(NATS), "-sd",
                      os.path.join(work, "nats")])
        wait_port(NATS)
        fleet = spawn([paths["tripwire"], "serve", "--rules", rules, "--no-watch",
                       "--nats", f"nats://127.0.0.1:{NATS}", "--replica", "q0",
                       "--fleet-queue", str(queue),
                       "--listen", f"127.0.0.1:{BASE}", "--admin-listen", f"127.0.0.1:{BASE + 1}"])
        alone = spawn([paths["tripwire"], "serve", "--rules", rules, "--no-watch",
                       "--listen", f"127.0.0.1:{BASE + 2}", "--admin-listen", f"127.0.0.1:{BASE + 3}"])
        wait_ready(BASE + 1)
        wait_ready(BASE + 3)
        nats.send_signal(signal.SIGKILL)
        nats.wait()
        time.sleep(1)
        rate, seconds = 5000, decisions // 5000
        for port in (BASE, BASE + 2):
            loadgen(paths, "0-1", port, "/v1/decide", rate, seconds, warmup=0, customers=1000)
        time.sleep(1)
        metrics = get(BASE + 1, "/metrics")[1]
        depth = re.search(r"^tripwire_fleet_queue_depth (\d+)", metrics, re.M)
        dropped = re.search(r"^tripwire_fleet_dropped_total (\d+)", metrics, re.M)
        on, off = rss_kib(fleet.pid), rss_kib(alone.pid)
        print({
            "queue_bound": queue,
            "decisions": rate * seconds,
            "queue_depth": int(depth.group(1)) if depth else None,
            "dropped": int(dropped.group(1)) if dropped else None,
            "rss_fleet_kib": on,
            "rss_alone_kib": off,
            "queue_kib": on - off,
            "bytes_per_queued_change": round((on - off) * 1024 / max(queue, 1), 1),
        })
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
