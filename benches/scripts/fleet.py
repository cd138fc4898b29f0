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
4. Catch-up of a fresh replica (`--catch-up 1000000`): one replica receives one decision for
   each of N customers (the load generator, open loop); once the stream holds them all, a fresh
   replica (no state directory) joins from the stream alone and the time from its start to
   `/readyz` 200 is taken; then `POST /admin/fleet/snapshot` stores the fleet snapshot and a
   second fresh replica joins from it, timed the same way.

    python3 benches/scripts/fleet.py --catch-up 1000000

With `--pin`, the replica under test, the standalone server and the load generator share CPU 0,
and nats-server and the two other replicas run on CPU 1: the A/B pairs then compare the
replica's own cost, not the fleet's competition for the same cores.
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
from common import ROOT, build, loadgen, log, median, pinned, rss_kib, stop_all, wait_port  # noqa: E402

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
    parser.add_argument("--pin", action="store_true",
                        help="replica under test, standalone and load on CPU 0; NATS and the other replicas on CPU 1")
    parser.add_argument("--catch-up", type=int, default=0, metavar="CUSTOMERS",
                        help="only measure a fresh replica's catch-up over this many customers")
    parser.add_argument("--load-rate", type=int, default=10000,
                        help="with --catch-up: decisions a second while filling the stream")
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
    if args.catch_up:
        return catch_up(paths, work, spawn, procs, args.catch_up, args.load_rate)
    try:
        test_cpu, other_cpu = ("0", "1") if args.pin else ("0-1", "0-1")
        spawn(pinned(other_cpu, ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(NATS), "-sd",
                                 os.path.join(work, "nats")]))
        wait_port(NATS)
        rules = os.path.join(ROOT, "rules.yaml")
        replicas = []
        for i in range(3):
            pay, adm = BASE + 2 * i, BASE + 2 * i + 1
            spawn(pinned(test_cpu if i == 0 else other_cpu, [paths["tripwire"], "serve", "--rules", rules, "--no-watch",
                   "--nats", f"nats://127.0.0.1:{NATS}", "--replica", f"r{i}",
                   "--listen", f"127.0.0.1:{pay}", "--admin-listen", f"127.0.0.1:{adm}"]))
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
        spawn(pinned(test_cpu, [paths["tripwire"], "serve", "--rules", rules, "--no-watch",
               "--listen", f"127.0.0.1:{alone_pay}", "--admin-listen", f"127.0.0.1:{alone_adm}"]))
        wait_ready(alone_adm)
        p50s, p99s = [], []
        for pair in range(args.pairs):
            offset = 100_000 + pair * 2 * customers
            on = loadgen(paths, test_cpu, replicas[0][0], "/v1/decide", args.pair_rate,
                         args.pair_duration, warmup=1, customers=customers, offset=offset)
            off = loadgen(paths, test_cpu, alone_pay, "/v1/decide", args.pair_rate,
                          args.pair_duration, warmup=1, customers=customers, offset=offset + customers)
            p50s.append(on["p50_us"] / max(off["p50_us"], 1))
            p99s.append(on["p99_us"] / max(off["p99_us"], 1))
            log(f"  pair {pair + 1}: on p50 {on['p50_us']} p99 {on['p99_us']} | off p50 {off['p50_us']} p99 {off['p99_us']}")
        print({
            "pinned": args.pin,
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


def stream_last_sequence(adm):
    """The fleet's stream sequence a caught-up replica has applied (its `/admin/fleet`)."""
    import json
    status, body = get(adm, "/admin/fleet")
    return json.loads(body)["applied_sequence"] if status == 200 else 0


def catch_up(paths, work, spawn, procs, customers, rate):
    """Time from start to ready of a fresh replica, from the stream alone and from the fleet
    snapshot, with `customers` customers in the fleet."""
    import json
    rules = os.path.join(ROOT, "rules.yaml")
    # Shards are capped one by one: room enough that none evicts.
    cap = str(max(2 * customers, 1000))

    def replica(name, i):
        pay, adm = BASE + 2 * i, BASE + 2 * i + 1
        proc = spawn([paths["tripwire"], "serve", "--rules", rules, "--no-watch",
                      "--nats", f"nats://127.0.0.1:{NATS}", "--replica", name,
                      "--max-customers", cap, "--fleet-snapshot-every", "off",
                      "--listen", f"127.0.0.1:{pay}", "--admin-listen", f"127.0.0.1:{adm}"])
        return proc, pay, adm

    def join(name, i):
        started = time.time()
        proc, _, adm = replica(name, i)
        wait_ready(adm, timeout=600)
        seconds = time.time() - started
        joined = json.loads(get(adm, "/admin/fleet")[1])["joined"]
        rss = rss_kib(proc.pid)
        stop_all([proc])
        return seconds, joined, rss

    try:
        spawn(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(NATS), "-sd",
               os.path.join(work, "nats")])
        wait_port(NATS)
        source, pay, adm = replica("source", 0)
        wait_ready(adm)
        seconds = -(-customers // rate)
        log(f"filling: {rate * seconds} decisions over {customers} customers at {rate}/s")
        load = loadgen(paths, "0-1", pay, "/v1/decide", rate, seconds, warmup=0,
                       customers=customers, connections=64)
        held = load["completed"]
        deadline = time.time() + 300
        # Its own changes are skipped by its consumer but still advance its applied sequence.
        while stream_last_sequence(adm) < held and time.time() < deadline:
            time.sleep(0.5)
        log(f"stream holds {stream_last_sequence(adm)} changes; joining from the stream")
        from_stream = join("fresh-stream", 1)
        log(f"  {from_stream[0]:.1f} s; storing the fleet snapshot")
        started = time.time()
        status, body = post_admin(adm, "/admin/fleet/snapshot")
        snapshot_s = time.time() - started
        snapshot = json.loads(body)["snapshot"]
        log(f"  snapshot {snapshot} in {snapshot_s:.1f} s; joining from it")
        from_snapshot = join("fresh-snapshot", 2)
        print({
            "customers": customers,
            "decisions_sent": load["sent"],
            "decisions_completed": held,
            "load_errors": load["errors"] + load["non_2xx"],
            "source_rss_kib": rss_kib(source.pid),
            "join_from_stream_s": round(from_stream[0], 2),
            "join_from_stream": from_stream[1],
            "join_from_stream_rss_kib": from_stream[2],
            "snapshot_store_s": round(snapshot_s, 2),
            "snapshot": snapshot,
            "join_from_snapshot_s": round(from_snapshot[0], 2),
            "join_from_snapshot": from_snapshot[1],
            "join_from_snapshot_rss_kib": from_snapshot[2],
        })
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


def post_admin(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=600) as r:
        return r.status, r.read().decode()


if __name__ == "__main__":
    main()
