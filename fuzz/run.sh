#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints the executions each ran.
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain RUSTC_BOOTSTRAP=1 lets it
# use the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
mkdir -p corpus
status=0
for target in rules_check decide_request differential; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    # Committed seeds (fuzz/seeds/TARGET, when present) are read as a second corpus.
    seeds=()
    if [ -d "seeds/$target" ]; then
        seeds=("seeds/$target")
    fi
    if cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
        runs="$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | grep -Eo '[0-9]+' || echo '?')"
        echo "$target: ok, $runs executions in ${seconds}s"
    else
        echo "$target: FAILED"
        tail -40 "$log"
        status=1
    fi
    rm -f "$log"
done
exit "$status"
