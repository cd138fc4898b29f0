#!/usr/bin/env python3
"""Instruction count of one in-process decision, against a committed baseline.

    python3 benches/scripts/instructions.py            # check: fails on a regression over 5%
    python3 benches/scripts/instructions.py --update   # write the current count as the baseline

Runs benches/instructions.rs under `valgrind --tool=callgrind` with collection on only inside
its `measured` function (2,000 decisions over 100 customers with full rings, a seeded store),
and divides the instructions by the decisions. Needs valgrind.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, log  # noqa: E402

BASELINE = os.path.join(ROOT, "benches", "instructions-baseline.json")
TOLERANCE = 0.05


def bench_binary():
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--no-run", "--message-format=json", "--bench", "instructions"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "instructions":
            return msg["executable"]
    sys.exit("could not find the instructions bench binary")


def count():
    binary = bench_binary()
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
             "--collect-atstart=no", "--toggle-collect=*instructions::measured*", binary, "--count"],
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
    per_decision = count()
    if a.update or not os.path.exists(BASELINE):
        # Keeps the written reason for the change; edit it to say why the baseline moved.
        reason = ""
        if os.path.exists(BASELINE):
            with open(BASELINE) as f:
                reason = json.load(f).get("reason", "")
        with open(BASELINE, "w") as f:
            json.dump({"instructions_per_decision": round(per_decision), "tolerance": TOLERANCE,
                       "reason": reason}, f, indent=2)
            f.write("\n")
        print(f"baseline written: {per_decision:.0f} instructions per decision")
        return
    with open(BASELINE) as f:
        baseline = json.load(f)["instructions_per_decision"]
    ratio = per_decision / baseline
    print(f"{per_decision:.0f} instructions per decision; baseline {baseline}; ratio {ratio:.3f}")
    if ratio > 1 + TOLERANCE:
        sys.exit(f"regression: {100 * (ratio - 1):.1f}% more instructions per decision than the baseline "
                 f"(limit {100 * TOLERANCE:.0f}%); if intended, run with --update and commit the baseline")
    if ratio < 1 - TOLERANCE:
        log(f"note: {100 * (1 - ratio):.1f}% fewer instructions than the baseline; consider --update")


if __name__ == "__main__":
    main()
