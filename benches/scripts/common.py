"""Shared helpers of the bench scripts: build the binaries, find them, pin processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(message):
    print(message, file=sys.stderr, flush=True)


def build():
    """Builds tripwire and the bench binaries in release mode; returns their paths."""
    log("building release binaries ...")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tripwire"], cwd=ROOT, check=True)
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--no-run", "--message-format=json",
         "--bench", "echo", "--bench", "loadgen", "--bench", "bare_proxy"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    paths = {"tripwire": os.path.join(ROOT, "target", "release", "tripwire")}
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            paths[msg["target"]["name"]] = msg["executable"]
    for name in ("tripwire", "echo", "loadgen", "bare_proxy"):
        if name not in paths:
            sys.exit(f"could not find the {name} binary")
    return paths


def bench_binary(name, root=ROOT, target_dir=None):
    """Builds the criterion bench `name` of the tree at `root` (in `target_dir`, when given);
    returns the path of its binary. Cargo's own messages go to the terminal."""
    env = dict(os.environ)
    if target_dir:
        env["CARGO_TARGET_DIR"] = target_dir
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--no-run", "--message-format=json", "--bench", name],
        cwd=root, env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and msg["target"]["name"] == name):
            return msg["executable"]
    sys.exit(f"could not find the {name} bench binary built in {root}")


def pinned(cpus, argv):
    """argv run on the given CPUs (taskset), or as is when taskset is missing."""
    if shutil.which("taskset"):
        return ["taskset", "-c", cpus] + argv
    return argv


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def start(argv, port, **kw):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    wait_port(port)
    return proc


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs):
    """Stops every process in `procs` (see `stop`)."""
    for proc in procs:
        stop(proc)


def rss_kib(pid):
    """The resident set of a live process, KiB, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def loadgen(paths, cpus, port, path, rate, duration, warmup=2, connections=32, customers=1000, offset=0):
    argv = pinned(cpus, [paths["loadgen"], "--target", f"127.0.0.1:{port}", "--path", path,
                         "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
                         "--connections", str(connections), "--customers", str(customers),
                         "--customer-offset", str(offset)])
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median(values):
    values = sorted(values)
    return values[len(values) // 2]
