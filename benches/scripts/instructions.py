#!/usr/bin/env python3
"""Instruction count of one in-process decision, against a committed baseline.

    python3 benches/scripts/instructions.py            # check: fails on a regression over 5%
    python3 benches/scripts/instructions.py --update   # write the current counts as the baseline

Runs benches/instructions.rs under `valgrind --tool=callgrind` with collection on only inside
its `measured` function (2,000 decisions over 100 customers with full rings, a seeded store),
and divides the instructions by the decisions. Two workloads, each with its own baseline: the
decisions naming no merchant, and the same decisions at a merchant active every hour of the
35 days the shipped rules read back. Needs valgrind.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, bench_binary, log  # noqa: E402

BASELINE = os.path.join(ROOT, "benches", "instructions-baseline.json")
TOLERANCE = 0.05


# (baseline key, extra arguments of the bench binary, what it is)
WORKLOADS = [
    ("instructions_per_decision", [], "decision"),
    ("busy_merchant_instructions_per_decision", ["--busy-merchant"], "decision at a busy merchant"),
]


def count(binary, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
             "--collect-atstart=no", "--toggle-collect=*instructions::measured*", binary, "--count",
             *extra],
            capture_output=True, text=True, check=True,
        )
        decisions = int(run.stdout.strip().splitlines()[-1])
        total = None
        with open(out_file) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
        if not total:
            sys.exit("callgrind counted nothing: was `measured` inlined or renamed?")
    return total / decisions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--update", action="store_true")
    a = ap.parse_args()
    binary = bench_binary("instructions")
    counts = {key: count(binary, extra) for key, extra, _ in WORKLOADS}
    if a.update or not os.path.exists(BASELINE):
        # Keeps the written reason for the change; edit it to say why the baseline moved.
        reason = ""
        if os.path.exists(BASELINE):
            with open(BASELINE) as f:
                reason = json.load(f).get("reason", "")
        with open(BASELINE, "w") as f:
            json.dump({**{key: round(n) for key, n in counts.items()}, "tolerance": TOLERANCE,
                       "reason": reason}, f, indent=2)
            f.write("\n")
        for key, _, what in WORKLOADS:
            print(f"baseline written: {counts[key]:.0f} instructions per {what}")
        return
    with open(BASELINE) as f:
        baselines = json.load(f)
    failures = []
    for key, _, what in WORKLOADS:
        per_decision, baseline = counts[key], baselines.get(key)
        if baseline is None:
            failures.append(f"{key} has no baseline; run with --update and commit the baseline")
            continue
        ratio = per_decision / baseline
        print(f"{per_decision:.0f} instructions per {what}; baseline {baseline}; ratio {ratio:.3f}")
        if ratio > 1 + TOLERANCE:
            failures.append(
                f"regression: {100 * (ratio - 1):.1f}% more instructions per {what} than the baseline "
                f"(limit {100 * TOLERANCE:.0f}%); if intended, run with --update and commit the baseline")
        if ratio < 1 - TOLERANCE:
            log(f"note: {100 * (1 - ratio):.1f}% fewer instructions per {what} than the baseline; "
                "consider --update")
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
