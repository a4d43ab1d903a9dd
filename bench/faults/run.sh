#!/usr/bin/env bash
# The full fault suite (issue 13): every fault of tests/faults.rs, RUNS times each, for
# hamon and for keepalived (the baseline, where the fault applies), then the long loss
# runs: 30 % loss for 10 minutes (5 runs) and 60 % loss for 60 s (5 runs). Writes the
# figures to docs/reliability.md (between its "results" markers) and keeps the raw runs
# in bench/faults/results.jsonl.
#
#   sudo bench/faults/run.sh [RUNS]        (default 3; about an hour in all)
#   sudo bench/faults/run.sh --table       (only rewrite the table from results.jsonl)
#
# Needs root, iproute2, nftables, iptables, python3, libfaketime and keepalived (Debian
# packages). Builds hamon in release mode. Uses documentation addresses only, in
# namespaces it creates and removes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
OUT=$HERE/results.jsonl
cd "$TOP"

table() { python3 "$HERE/table.py" "$OUT" "$TOP/docs/reliability.md"; }
if [ "${1:-}" = --table ]; then table; exit 0; fi
RUNS=${1:-3}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v keepalived >/dev/null || { echo "install keepalived (apt-get install keepalived)" >&2; exit 1; }

: >"$OUT"
suite() { # peer runs hold-seconds test-name-filter...
    local peer=$1 runs=$2 hold=$3
    shift 3
    local env=(HAMON_FAULTS_PEER="$peer" HAMON_FAULTS_RUNS="$runs" HAMON_FAULTS_OUT="$OUT")
    [ -n "$hold" ] && env+=(HAMON_FAULTS_HOLD_S="$hold")
    # One fault at a time: the figures are timings.
    env "${env[@]}" "$BIN" --test-threads=1 "$@" ||
        echo "bench/faults: some $peer runs failed their invariants (see above)" >&2
}

# The test binary itself, so that the suites below can run side by side.
BIN=$(cargo test --release --locked --test faults --no-run 2>&1 |
    grep -o 'target/release/deps/faults-[0-9a-f]*' | head -1)
[ -x "$BIN" ] || { echo "bench/faults: no test binary" >&2; exit 1; }
# The long loss runs, hamon and keepalived side by side (separate namespaces), in the
# background: they are mostly waiting, and take most of the time.
long() {
    for spec in "thirty_percent_loss 600" "sixty_percent_loss 60" "kill_under_thirty_percent_loss 20"; do
        set -- $spec
        suite hamon 5 "$2" --exact "$1" &
        suite keepalived 5 "$2" --exact "$1" &
        wait
    done
}
long &
LONG=$!
for peer in hamon keepalived; do
    suite "$peer" "$RUNS" "" --skip thirty_percent_loss --skip sixty_percent_loss \
        --skip kill_under_thirty_percent_loss
done
wait "$LONG"
table
