#!/usr/bin/env bash
# The cost of a crash of the active agent under systemd, as a client sees it:
# two appliances booted from image/build's tree (tests/appliance_pair.rs), a
# release build of hamon inside, five `systemctl kill --kill-whom=main -s
# SIGKILL hamon` on the active primary, the observer pinging the VIP every
# 10 ms. Prints each outage and the median against the 500 ms target, and
# exits non-zero when the median misses it.
#
#   sudo bench/crash/run.sh
#
# Needs what .ci/run installs (bash image/deps among it). Builds hamon in
# release mode; uses documentation addresses only, in namespaces the test
# creates and removes.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
cargo build --release --locked
export HAMON_APPLIANCE_BINARY=$TOP/target/release/hamon
export HAMON_IMAGE_OUT=${HAMON_IMAGE_OUT:-$TOP/target/image-bench}
LOG=$(mktemp /tmp/hamon-crash.XXXXXX)
trap 'rm -f "$LOG"' EXIT
cargo test --locked --test appliance_pair -- --nocapture 2>&1 | tee "$LOG" \
    | grep -E 'SIGKILL|systemctl stop|power cut|READY|booted in|test result'
python3 - "$LOG" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
runs = [float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
        for m in re.finditer(r"SIGKILL run \d+: client outage ([0-9.]+)(ms|s)\b", text)]
if len(runs) != 5:
    sys.exit(f"expected 5 SIGKILL runs, found {len(runs)}")
med = statistics.median(runs)
print(f"crash of the active agent: outages {' '.join(f'{r:.0f}' for r in runs)} ms; "
      f"median {med:.0f} ms (target < 500 ms)")
sys.exit(0 if med < 500 else 1)
PY
