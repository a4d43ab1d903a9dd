#!/usr/bin/env bash
# Split brain prevented (issue 14): the fault suite's arbiter, witness and fencing runs,
# RUNS times each (default 5), beside the same partitions without them for hamon and
# keepalived. Writes the table between docs/reliability.md's "split-brain" markers and
# keeps the raw runs in bench/faults/split-brain.jsonl.
#
#   sudo bench/faults/split-brain.sh [RUNS]
#
# Needs what bench/faults/run.sh needs, and etcd-server, etcd-client, openipmi and
# ipmitool (Debian packages).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
OUT=$HERE/split-brain.jsonl
cd "$TOP"
RUNS=${1:-5}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

BIN=$(cargo test --release --locked --test faults --no-run 2>&1 |
    grep -o 'target/release/deps/faults-[0-9a-f]*' | head -1)
[ -x "$BIN" ] || { echo "bench/faults: no test binary" >&2; exit 1; }
: >"$OUT"
suite() { # peer test-name...
    local peer=$1
    shift
    env HAMON_FAULTS_PEER="$peer" HAMON_FAULTS_RUNS="$RUNS" HAMON_FAULTS_OUT="$OUT" \
        "$BIN" --test-threads=1 --exact "$@" ||
        echo "bench/faults: some $peer runs failed their invariants (see above)" >&2
}
# Without a third party: hamon and keepalived.
for peer in hamon keepalived; do
    suite "$peer" symmetric_partition primary_isolated one_way_primary_to_secondary
done
# With one (hamon only).
suite hamon partition_with_an_arbiter isolated_primary_with_an_arbiter \
    one_way_loss_with_an_arbiter arbiter_killed_demote arbiter_killed_hold \
    partition_with_a_witness_only primary_isolated_with_a_witness \
    frozen_primary_fenced_before_the_takeover frozen_primary_whose_fencing_fails_is_not_taken_over
python3 "$HERE/table.py" "$OUT" "$TOP/docs/reliability.md" split-brain
