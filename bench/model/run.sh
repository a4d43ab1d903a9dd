#!/bin/sh
# The deep run of the model checker (tests/model_check.rs, test `deep`), in release mode.
# Prints every model's figures and appends nothing: it rewrites bench/model/results.txt.
#
#   bench/model/run.sh                        # the default deep bounds
#   HAMON_MODEL_DEPTH=12 bench/model/run.sh   # override a bound for every model
#   HAMON_MODEL_ONLY=arbiter bench/model/run.sh
#
# Bounds (each overrides the value of every model): HAMON_MODEL_DEPTH, _MAX_STATES,
# _DROPS, _DUPS, _CRASHES, _CUTS, _COMMANDS, _IN_FLIGHT, _NET_DELAY, _COPY_DELAY,
# _LIVENESS_EVERY, _SETTLE_MS, _RUN_MS. Set CARGO_TARGET_DIR to keep its build apart.
set -eu
cd "$(dirname "$0")/../.."
out=bench/model/results.txt
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || rev="$rev+uncommitted"
cargo test --release --test model_check --no-run >/dev/null 2>&1 ||
    cargo test --release --test model_check --no-run
timer=""
[ -x /usr/bin/time ] && timer="/usr/bin/time -f peak_rss_kb=%M,wall=%e"
{
    echo "# hamon model check, deep run"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), revision $rev, $(nproc) cores, $(rustc --version)"
    env | grep '^HAMON_MODEL_' | sed 's/^/# /' || true
    # shellcheck disable=SC2086
    $timer cargo test -q --release --test model_check -- --ignored --nocapture \
        --test-threads 1 deep 2>&1 | grep -v '^running\|^$\|^test result\|^\.$'
} 2>&1 | tee "$out"
