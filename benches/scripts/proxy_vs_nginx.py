#!/usr/bin/env python3
"""Proxy overhead at a fixed rate: the upstream called directly, behind nginx as a plain
reverse proxy (proxy_pass, keep-alive upstream, no rules), behind a bare hyper reverse proxy
(`benches/bare_proxy.rs`: tripwire's HTTP stack doing nothing of its own, the floor of any
proxy built on it), and behind tripwire in proxy mode with the shipped rules.

    python3 benches/scripts/proxy_vs_nginx.py [--rate 2000] [--duration 8] [--rounds 5]

The upstream (the repo's echo server) and the proxy under test share core 0; the load generator
runs on core 1; the placement is the same for nginx and tripwire. Rounds alternate direct,
nginx, tripwire; each round's added latency is the proxied figure minus that round's direct
figure. Prints a table and the median over rounds of tripwire's added latency against nginx's,
and of the bare hyper proxy's against nginx's (what the stack costs) and tripwire's against the
bare hyper proxy's (what tripwire's own work costs).

Also the CPU time each proxy process spent per request (the scheduler's count from /proc:
nginx's worker, every thread of tripwire's), which a noisy machine disturbs far less than latency: the
proxies share core 0 with the upstream, so CPU a proxy spends on a request is time the request
waits.

    python3 benches/scripts/proxy_vs_nginx.py --candidate ./tripwire-other-build

adds a fourth target each round, a second tripwire binary in the same mode and placement, to
compare two builds A/B within the same rounds. Needs nginx (installed with apt-get when missing
and run as root).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, loadgen, log, median, pinned, start, stop  # noqa: E402

UPSTREAM, NGINX, TRIPWIRE, ADMIN, CANDIDATE, CANDIDATE_ADMIN, HYPER = 19000, 19001, 19002, 19003, 19004, 19005, 19006

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


def cpu_seconds(pid):
    """CPU seconds process `pid` has run, summed over its threads: the scheduler's own count
    (/proc/PID/task/*/schedstat, nanoseconds), exact, where /proc/PID/stat counts clock ticks."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def nginx_worker(master_pid):
    """The pid of the one nginx worker (worker_processes 1) under `master_pid`."""
    for _ in range(100):
        with open(f"/proc/{master_pid}/task/{master_pid}/children") as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    sys.exit("nginx started no worker")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--candidate", help="a second tripwire binary, measured after the first each round")
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
        procs.append(start(pinned("0", [paths["bare_proxy"], "--listen", f"127.0.0.1:{HYPER}",
                                        "--upstream", f"127.0.0.1:{UPSTREAM}", "--workers", "1"]), HYPER))
        targets = [("direct", UPSTREAM), ("nginx", NGINX), ("hyper", HYPER), ("tripwire", TRIPWIRE)]
        if a.candidate:
            procs.append(start(pinned("0", [a.candidate, "serve", "--rules", os.path.join(ROOT, "rules.yaml"),
                                            "--listen", f"127.0.0.1:{CANDIDATE}",
                                            "--admin-listen", f"127.0.0.1:{CANDIDATE_ADMIN}",
                                            "--workers", "1", "--upstream", f"http://127.0.0.1:{UPSTREAM}"]),
                               CANDIDATE, env={**os.environ, "RUST_LOG": "warn"}))
            targets.append(("candidate", CANDIDATE))
        # The process whose CPU each target's requests cost: the proxy's (the upstream's for
        # direct calls).
        spenders = {"direct": procs[0].pid, "nginx": nginx_worker(procs[1].pid), "tripwire": procs[2].pid,
                     "hyper": procs[3].pid}
        if a.candidate:
            spenders["candidate"] = procs[4].pid
        rows = []
        for r in range(a.rounds):
            row = {}
            order = targets
            if r % 2:
                # The proxies take turns going first.
                order = targets[:1] + targets[:0:-1]
            for name, port in order:
                before = cpu_seconds(spenders[name])
                res = loadgen(paths, "1", port, "/pay", a.rate, a.duration, offset=r * 100_000)
                answered = sum(res["statuses"].values())
                res["cpu_us_per_request"] = round(
                    (cpu_seconds(spenders[name]) - before) * 1e6 / max(answered, 1), 1)
                row[name] = res
                log(f"round {r}: {name:8} p50 {res['p50_us']:>6} us  p99 {res['p99_us']:>6} us  "
                    f"errors {res['errors']}  non-2xx {res['non_2xx']}  {res['throughput_rps']:.0f} req/s  "
                    f"cpu {res['cpu_us_per_request']} us/request")
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
        hyper_added = [added(row, "hyper", q) for row in rows]
        summary[q] = {
            "direct": median([row["direct"][q] for row in rows]),
            "nginx": median([row["nginx"][q] for row in rows]),
            "hyper": median([row["hyper"][q] for row in rows]),
            "tripwire": median([row["tripwire"][q] for row in rows]),
            "nginx_added": median(nginx_added),
            "hyper_added": median(hyper_added),
            "tripwire_added": median(tripwire_added),
            "added_ratio_tripwire_over_nginx": median(
                [t / n if n > 0 else float("inf") for t, n in zip(tripwire_added, nginx_added)]),
            "added_ratio_hyper_over_nginx": median(
                [h / n if n > 0 else float("inf") for h, n in zip(hyper_added, nginx_added)]),
            "added_ratio_tripwire_over_hyper": median(
                [t / h if h > 0 else float("inf") for t, h in zip(tripwire_added, hyper_added)]),
        }
    names = [name for name, _ in targets]
    if a.candidate:
        for q in ("p50_us", "p99_us"):
            summary[q]["candidate"] = median([row["candidate"][q] for row in rows])
            summary[q]["candidate_added"] = median([added(row, "candidate", q) for row in rows])
            summary[q]["added_ratio_candidate_over_tripwire"] = median(
                [c / t if t > 0 else float("inf")
                 for c, t in zip([added(row, "candidate", q) for row in rows],
                                 [added(row, "tripwire", q) for row in rows])])
    summary["cpu_us_per_request"] = {
        name: median([row[name]["cpu_us_per_request"] for row in rows]) for name in names
    }
    if a.candidate:
        summary["cpu_us_per_request"]["ratio_candidate_over_tripwire"] = median(
            [row["candidate"]["cpu_us_per_request"] / row["tripwire"]["cpu_us_per_request"] for row in rows])
    cpu_rows = summary["cpu_us_per_request"]
    for over, under in (("tripwire", "nginx"), ("hyper", "nginx"), ("tripwire", "hyper")):
        cpu_rows[f"ratio_{over}_over_{under}"] = median(
            [row[over]["cpu_us_per_request"] / row[under]["cpu_us_per_request"] for row in rows])
    print(f"rate {a.rate} req/s, {a.duration} s per run, {a.rounds} rounds; medians over rounds")
    print(f"{'':6} {'direct':>8} {'nginx':>8} {'hyper':>8} {'tripwire':>9} {'nginx +':>8} {'hyper +':>8} "
          f"{'tripwire +':>11} {'tw/nginx':>9} {'hyper/nginx':>12} {'tw/hyper':>9}")
    for q, s in summary.items():
        if q == "cpu_us_per_request":
            continue
        print(f"{q[:-3]:6} {s['direct']:>6}us {s['nginx']:>6}us {s['hyper']:>6}us {s['tripwire']:>7}us "
              f"{s['nginx_added']:>6}us {s['hyper_added']:>6}us {s['tripwire_added']:>9}us "
              f"{s['added_ratio_tripwire_over_nginx']:>8.2f}x {s['added_ratio_hyper_over_nginx']:>11.2f}x "
              f"{s['added_ratio_tripwire_over_hyper']:>8.2f}x")
    cpu = summary["cpu_us_per_request"]
    print(f"cpu per request: upstream {cpu['direct']} us (direct calls), nginx {cpu['nginx']} us, "
          f"bare hyper proxy {cpu['hyper']} us, tripwire {cpu['tripwire']} us; "
          f"tripwire/nginx {cpu['ratio_tripwire_over_nginx']:.2f}x, hyper/nginx {cpu['ratio_hyper_over_nginx']:.2f}x, "
          f"tripwire/hyper {cpu['ratio_tripwire_over_hyper']:.2f}x (medians of per-round ratios)")
    if a.candidate:
        print(f"candidate: p50 adds {summary['p50_us']['candidate_added']} us "
              f"({summary['p50_us']['added_ratio_candidate_over_tripwire']:.2f}x tripwire's), "
              f"cpu {cpu['candidate']} us a request "
              f"({cpu['ratio_candidate_over_tripwire']:.2f}x tripwire's); medians of per-round ratios")
    print(json.dumps({"rate": a.rate, "duration_s": a.duration, "rounds": a.rounds, "summary": summary}))


if __name__ == "__main__":
    main()
