#!/usr/bin/env bash
# A keyless flood against the Health Monitor of the active primary: 1,000 idle
# connections from 20 source addresses plus 200 stalled TLS handshakes, held
# (and reopened as the server closes them) for SECONDS, while the peer probes
# /healthz from its own address every 250 ms and a logged-in operator loads
# the page every second. The same probe on a quiet pair first gives the
# baseline; the flood's figures are reported beside it, with how the pair
# fared (missed heartbeats and failovers must be zero).
#
#   bench/web/flood.sh [SECONDS]
#
# HAMON picks the binary (default target/release/hamon), so an older build can
# be measured in the same way. Needs python3; loopback 127.0.91.0/24 only, no
# root.
set -euo pipefail
SECS=${1:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pair.sh
BENCH=webflood . "$HERE/pair.sh"
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_pair

flood() { # idle-per-address stalled-per-address
    python3 "$HERE/flood.py" "${ADDR[0]}" 18082 "${ADDR[1]}" 127.0.91.90 Bench-Key-1 \
        "$SECS" 127.0.91. 20 "$1" "$2"
}
echo "quiet:  $(flood 0 0)"
read -r p_sent0 _ _ <<<"$(counts "$WORK/primary.toml")"
read -r _ s_acc0 _ <<<"$(counts "$WORK/secondary.toml")"
echo "flood:  $(flood 50 10)"
pair_verdict "$p_sent0" "$s_acc0"
