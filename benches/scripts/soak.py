#!/usr/bin/env python3
"""Soak: tripwire under steady load for minutes, with a rules reload every second and a kill -9
and restart in the middle. Not a CI test: it takes as long as you ask.

    python3 benches/scripts/soak.py                      # 10 minutes at 2,000 decisions/s
    python3 benches/scripts/soak.py --minutes 2 --rate 500

The release server runs with --state-dir on a copy of rules.yaml. Load comes from the repo's
open-loop generator (benches/loadgen.rs) in two halves, before and after the kill. Alongside:

- a reloader PUTs /admin/rules every second, alternating two texts (both valid, so each PUT
  installs a new version);
- a sampler reads the server's RSS from /proc every 2 s;
- a probe sends one decision every 10 ms for a customer of its own and notes when each was
  acknowledged; after the kill -9 and restart it sends each acknowledged probe transaction
  again: an answer with "duplicate": true means the first was kept, false means it was lost.

Reports failed requests in each half (the restart window itself is not under load), failed
reloads, RSS after warm-up against RSS at the end of each half, the restart time, and the
acknowledged decisions lost at the kill with how long before the kill they were acknowledged
(the README promises at most the last second; the journal is written every 100 ms).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, rss_kib, wait_port  # noqa: E402

PAYMENT, ADMIN = 18480, 18481
# Few enough probe transactions per customer that every one stays in its 64-event ring.
PROBE_CUSTOMERS = 2000


def free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def request(method, port, path, body=None, timeout=5):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method,
        headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


class Server:
    def __init__(self, binary, rules, state):
        self.argv = [binary, "serve", "--rules", rules, "--state-dir", state, "--no-watch",
                     "--listen", f"127.0.0.1:{PAYMENT}", "--admin-listen", f"127.0.0.1:{ADMIN}"]
        self.proc = None

    def start(self):
        started = time.time()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "RUST_LOG": "warn"})
        wait_port(PAYMENT, timeout=120)
        wait_port(ADMIN, timeout=120)
        return time.time() - started

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000)
    # Few enough customers that every ring is full (64 events) within the warm-up, so that what
    # grows after it is a leak, not state filling up.
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds before RSS counts")
    args = parser.parse_args()
    for port in (PAYMENT, ADMIN):
        if not free(port):
            sys.exit(f"port {port} is taken")

    paths = build()
    work = tempfile.mkdtemp(prefix="tripwire-soak-")
    rules = os.path.join(work, "rules.yaml")
    shutil.copy(os.path.join(ROOT, "rules.yaml"), rules)
    texts = [open(rules, "rb").read(), open(rules, "rb").read() + b"\n# soak reload\n"]
    server = Server(paths["tripwire"], rules, os.path.join(work, "state"))
    half = int(args.minutes * 60 / 2)
    stop = threading.Event()
    samples = []  # (seconds since start, phase, RSS KiB)
    reloads = {"ok": 0, "failed": 0}
    acked = []  # (transaction id, ack time)
    t0 = time.time()
    phase = ["first"]

    def sampler():
        while not stop.is_set():
            kib = rss_kib(server.proc.pid) if server.proc else None
            if kib:
                samples.append((time.time() - t0, phase[0], kib))
            time.sleep(2)

    def reloader():
        i = 0
        while not stop.is_set():
            status, _ = request("PUT", ADMIN, "/admin/rules", texts[i % 2])
            if status == 200:
                reloads["ok"] += 1
            elif phase[0] != "restart":
                reloads["failed"] += 1
            i += 1
            time.sleep(1)

    probing = threading.Event()
    probing.set()

    def probe():
        n = 0
        while probing.is_set() and not stop.is_set():
            n += 1
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1772330400 + n))
            body = json.dumps({"transaction_id": f"probe-{n}", "customer_id": f"probe-{n % PROBE_CUSTOMERS}",
                               "timestamp": ts, "amount": "1.00"}).encode()
            status, _ = request("POST", PAYMENT, "/v1/decide", body, timeout=1)
            if status == 200:
                acked.append((f"probe-{n}", n, time.time()))
            time.sleep(0.01)

    log(f"soak: {args.minutes} min at {args.rate}/s, {args.customers} customers, state in {work}")
    server.start()
    threads = [threading.Thread(target=f, daemon=True) for f in (sampler, reloader, probe)]
    for t in threads:
        t.start()
    first = loadgen(paths, "0-1", PAYMENT, "/v1/decide", args.rate, half, warmup=0,
                    customers=args.customers)
    probing.clear()
    time.sleep(0.02)
    phase[0] = "restart"
    killed_at = time.time()
    server.kill9()
    restart_seconds = server.start()
    phase[0] = "second"
    lost = []
    # Every acknowledgement of the last 30 s before the kill, and one in 100 before that.
    checked = [(txn, n, at) for i, (txn, n, at) in enumerate(acked)
               if killed_at - at <= 30 or i % 100 == 0]
    for txn, n, at in checked:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1772330400 + n))
        body = json.dumps({"transaction_id": txn, "customer_id": f"probe-{n % PROBE_CUSTOMERS}",
                           "timestamp": ts, "amount": "1.00"}).encode()
        status, answer = request("POST", PAYMENT, "/v1/decide", body)
        if status != 200 or not json.loads(answer).get("duplicate"):
            lost.append(killed_at - at)
    # New customers (the generator's transaction ids restart with each run): their rings fill
    # during this half's warm-up, after which RSS should hold.
    second = loadgen(paths, "0-1", PAYMENT, "/v1/decide", args.rate, half, warmup=0,
                     customers=args.customers, offset=args.customers)
    stop.set()
    server.stop()
    for t in threads:
        t.join(timeout=5)

    def growth(name):
        points = [(t, kib) for t, p, kib in samples if p == name]
        if not points:
            return None
        start = points[0][0]
        after = [kib for t, kib in points if t - start >= args.warmup] or [points[-1][1]]
        return {"after_warmup_kib": after[0], "end_kib": after[-1],
                "growth_pct": round(100.0 * (after[-1] - after[0]) / after[0], 2),
                "max_kib": max(kib for _, kib in points)}

    report = {
        "minutes": args.minutes, "rate": args.rate, "customers": args.customers,
        "first_half": {k: first.get(k) for k in ("sent", "completed", "errors", "non_2xx", "p50_us", "p99_us", "p999_us")},
        "second_half": {k: second.get(k) for k in ("sent", "completed", "errors", "non_2xx", "p50_us", "p99_us", "p999_us")},
        "reloads": reloads,
        "restart_seconds": round(restart_seconds, 2),
        "rss_first_half": growth("first"),
        "rss_second_half": growth("second"),
        "probe_acknowledged": len(acked),
        "probe_checked": len(checked),
        "probe_lost": len(lost),
        "probe_lost_oldest_ms_before_kill": round(1000 * max(lost), 1) if lost else 0,
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
