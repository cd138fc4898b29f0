#!/usr/bin/env python3
"""The in-process decide of two builds, taking turns: the A/B pairs BENCHMARKS.md reports.

    python3 benches/scripts/decide_pairs.py --baseline e7a2be5            # a git revision
    python3 benches/scripts/decide_pairs.py --baseline-bin /path/decide-x  # a built bench binary
    python3 benches/scripts/decide_pairs.py --baseline HEAD~1 --pairs 8 --cpu 0

Builds the `decide` bench (benches/decide.rs) of the working tree (B) and of the baseline (A:
a revision checked out in a temporary git worktree and built in target/decide-pairs, kept for
the next run's incremental build), then runs the two binaries in turn, pinned to one core, for
`--pairs` pairs, the order within a pair alternating (A B, B A, ...) so that a machine slowing
down or speeding up during the run weighs on both alike. Each run measures the typed serde_json
parse of a decide request (`baseline_json_parse_request`) and the whole decide
(`decide_in_process_full_ring`), so every ratio reads off one process.

Prints, per pair and as medians: B's decide time over A's, and each build's decide over its own
parse (the issue's "decide <= 3 x the parse"); last, one JSON object with every figure. On a
shared machine only the ratios mean anything: absolute times move by a third between minutes.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, bench_binary, log, pinned  # noqa: E402

PARSE = "decide/baseline_json_parse_request"
DECIDE = "decide/decide_in_process_full_ring"
LINE = re.compile(r"^test (\S+) \.\.\. bench:\s+([\d,]+) ns/iter")


def baseline_binary(rev, keep_dir):
    """The decide bench of revision `rev`, copied to `keep_dir` (the worktree goes away)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "tree")
        added = subprocess.run(["git", "worktree", "add", "--detach", tree, rev], cwd=ROOT,
                               capture_output=True, text=True)
        if added.returncode != 0:
            sys.exit(f"cannot check out {rev!r}: {added.stderr.strip()}")
        try:
            log(f"building the decide bench of {rev} ...")
            built = bench_binary("decide", tree, os.path.join(ROOT, "target", "decide-pairs"))
            kept = os.path.join(keep_dir, "decide-baseline")
            shutil.copy2(built, kept)
            return kept
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                           check=False, capture_output=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False,
                           capture_output=True)


def run(binary, cpu, warm_up, measure):
    """(parse ns, decide ns) of one run of `binary`."""
    out = subprocess.run(
        pinned(str(cpu), [binary, "--bench", f"^({PARSE}|{DECIDE})$",
                          "--warm-up-time", str(warm_up), "--measurement-time", str(measure),
                          "--output-format", "bencher"]),
        check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ).stdout
    times = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            times[m.group(1)] = int(m.group(2).replace(",", ""))
    if PARSE not in times or DECIDE not in times:
        sys.exit(f"{binary} printed no time for {PARSE} and {DECIDE}:\n{out}")
    return times[PARSE], times[DECIDE]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    base = parser.add_mutually_exclusive_group(required=True)
    base.add_argument("--baseline", metavar="REV", help="git revision to build as A")
    base.add_argument("--baseline-bin", metavar="PATH", help="a built decide bench binary as A")
    parser.add_argument("--candidate-bin", metavar="PATH",
                        help="a built decide bench binary as B (default: the working tree's)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--cpu", type=int, default=1, help="the core both run on")
    parser.add_argument("--warm-up", type=float, default=2.0, help="criterion warm-up, seconds")
    parser.add_argument("--measure", type=float, default=4.0, help="criterion measurement, s")
    args = parser.parse_args()
    if args.pairs < 1:
        sys.exit("--pairs must be at least 1")
    if args.warm_up <= 0 or args.measure <= 0:
        sys.exit("--warm-up and --measure must be more than 0 seconds")
    given = (("--baseline-bin", args.baseline_bin), ("--candidate-bin", args.candidate_bin))
    for flag, path in given:
        if path is not None and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.exit(f"{flag} {path}: not an executable file")
    # A path without a slash would be looked up on PATH by taskset.
    args.baseline_bin = args.baseline_bin and os.path.abspath(args.baseline_bin)
    args.candidate_bin = args.candidate_bin and os.path.abspath(args.candidate_bin)
    # A mistyped revision is refused before anything is built.
    if args.baseline is not None:
        known = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{args.baseline}^{{commit}}"],
            cwd=ROOT, capture_output=True, text=True)
        if known.returncode != 0:
            sys.exit(f"--baseline {args.baseline}: not a commit of this repository")
    # Stopped by a signal, the temporary worktree is still removed (the `finally` runs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit("stopped"))

    with tempfile.TemporaryDirectory() as keep:
        candidate = args.candidate_bin or bench_binary("decide")
        if args.candidate_bin is None:
            # The working tree's build is replaced by the next cargo bench: run a copy.
            shutil.copy2(candidate, os.path.join(keep, "decide-candidate"))
            candidate = os.path.join(keep, "decide-candidate")
        baseline = args.baseline_bin or baseline_binary(args.baseline, keep)
        builds = {"A": baseline, "B": candidate}

        pairs = []
        for i in range(args.pairs):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            pair = {}
            for name in order:
                pair[name] = run(builds[name], args.cpu, args.warm_up, args.measure)
            (pa, da), (pb, db) = pair["A"], pair["B"]
            row = {
                "A_parse_ns": pa, "A_decide_ns": da, "B_parse_ns": pb, "B_decide_ns": db,
                "decide_B_over_A": round(db / da, 3),
                "A_decide_over_parse": round(da / pa, 2),
                "B_decide_over_parse": round(db / pb, 2),
            }
            pairs.append(row)
            print(f"pair {i + 1} ({' '.join(order)}): parse {pa} / {pb} ns,"
                  f" decide {da} / {db} ns,"
                  f" B/A {row['decide_B_over_A']:.3f},"
                  f" decide/parse {row['A_decide_over_parse']:.2f}"
                  f" / {row['B_decide_over_parse']:.2f}", flush=True)

    # The mean of the middle two for an even count.
    def med(key):
        return statistics.median([p[key] for p in pairs])

    report = {
        "baseline": args.baseline or args.baseline_bin,
        "candidate": args.candidate_bin or "working tree",
        "pairs": pairs,
        "median_decide_B_over_A": round(med("decide_B_over_A"), 3),
        "median_A_decide_over_parse": round(med("A_decide_over_parse"), 2),
        "median_B_decide_over_parse": round(med("B_decide_over_parse"), 2),
        "median_A_decide_ns": med("A_decide_ns"),
        "median_B_decide_ns": med("B_decide_ns"),
        "median_parse_ns": statistics.median(
            [p[k] for p in pairs for k in ("A_parse_ns", "B_parse_ns")]),
    }
    print(f"medians of {args.pairs} pairs: decide B/A {report['median_decide_B_over_A']:.3f};"
          f" decide/parse A {report['median_A_decide_over_parse']:.2f},"
          f" B {report['median_B_decide_over_parse']:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
