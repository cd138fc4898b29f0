#!/usr/bin/env python3
"""Proxy overhead at a fixed rate: the upstream called directly, behind nginx as a plain
reverse proxy (proxy_pass, keep-alive upstream, no rules), and behind tripwire in proxy mode
with the shipped rules.

    python3 benches/scripts/proxy_vs_nginx.py [--rate 2000] [--duration 8] [--rounds 5]

The upstream (the repo's echo server) and the proxy under test share core 0; the load generator
runs on core 1; the placement is the same for nginx and tripwire. Rounds alternate direct,
nginx, tripwire; each round's added latency is the proxied figure minus that round's direct
figure. Prints a table and the median over rounds of tripwire's added latency against nginx's.
Needs nginx (installed with apt-get when missing and run as root).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, median, pinned, start, stop  # noqa: E402

UPSTREAM, NGINX, TRIPWIRE, ADMIN = 19000, 19001, 19002, 19003

NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream payments {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://payments;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_binary():
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("nginx is not installed; install it (apt-get install nginx) and run again")
    log("installing nginx ...")
    subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=False,
                   stdout=subprocess.DEVNULL)
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    paths = build()
    nginx = nginx_binary()
    work = tempfile.mkdtemp(prefix="tripwire-proxy-bench-")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=work, upstream=UPSTREAM, port=NGINX))

    procs = []
    try:
        procs.append(start(pinned("0", [paths["echo"], "--listen", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]), UPSTREAM))
        procs.append(start(pinned("0", [nginx, "-c", conf, "-p", work, "-g", "daemon off;"]), NGINX))
        procs.append(start(pinned("0", [paths["tripwire"], "serve", "--rules", os.path.join(ROOT, "rules.yaml"),
                                        "--listen", f"127.0.0.1:{TRIPWIRE}", "--admin-listen", f"127.0.0.1:{ADMIN}",
                                        "--workers", "1", "--upstream", f"http://127.0.0.1:{UPSTREAM}"]),
                           TRIPWIRE, env={**os.environ, "RUST_LOG": "warn"}))
        rows = []
        for r in range(a.rounds):
            row = {}
            for name, port in (("direct", UPSTREAM), ("nginx", NGINX), ("tripwire", TRIPWIRE)):
                res = loadgen(paths, "1", port, "/pay", a.rate, a.duration, offset=r * 100_000)
                row[name] = res
                log(f"round {r}: {name:8} p50 {res['p50_us']:>6} us  p99 {res['p99_us']:>6} us  "
                    f"errors {res['errors']}  non-2xx {res['non_2xx']}  {res['throughput_rps']:.0f} req/s")
            rows.append(row)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    def added(row, name, q):
        return row[name][q] - row["direct"][q]

    summary = {}
    for q in ("p50_us", "p99_us"):
        nginx_added = [added(row, "nginx", q) for row in rows]
        tripwire_added = [added(row, "tripwire", q) for row in rows]
        summary[q] = {
            "direct": median([row["direct"][q] for row in rows]),
            "nginx": median([row["nginx"][q] for row in rows]),
            "tripwire": median([row["tripwire"][q] for row in rows]),
            "nginx_added": median(nginx_added),
            "tripwire_added": median(tripwire_added),
            "added_ratio_tripwire_over_nginx": median(
                [t / n if n > 0 else float("inf") for t, n in zip(tripwire_added, nginx_added)]),
        }
    print(f"rate {a.rate} req/s, {a.duration} s per run, {a.rounds} rounds; medians over rounds")
    print(f"{'':6} {'direct':>8} {'nginx':>8} {'tripwire':>9} {'nginx +':>8} {'tripwire +':>11} {'ratio':>6}")
    for q, s in summary.items():
        print(f"{q[:-3]:6} {s['direct']:>6}us {s['nginx']:>6}us {s['tripwire']:>7}us "
              f"{s['nginx_added']:>6}us {s['tripwire_added']:>9}us {s['added_ratio_tripwire_over_nginx']:>5.2f}x")
    print(json.dumps({"rate": a.rate, "duration_s": a.duration, "rounds": a.rounds, "summary": summary}))


if __name__ == "__main__":
    main()
