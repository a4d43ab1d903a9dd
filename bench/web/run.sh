#!/usr/bin/env bash
# Web load against the heartbeat: wrk hammers the active primary's
# /healthz (HTTPS) with 500 connections for 30 s while the pair runs with
# 200 ms heartbeats. Reports requests/s and p99 latency, and how the pair
# fared: heartbeats the secondary accepted against the number sent, missed
# heartbeat events, and failovers. The last two must be zero.
#
#   bench/web/run.sh [SECONDS] [CONNECTIONS]
#
# Needs wrk (Debian package), python3 and a release build of hamon. Runs on
# loopback addresses 127.0.91.2 / 127.0.91.3 only; no root needed.
set -euo pipefail
SECS=${1:-30}
CONNS=${2:-500}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pair.sh
BENCH=webbench . "$HERE/pair.sh"
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }

HM_LIMITS=$'max_connections = 2000\nmax_connections_per_client = 2000'
start_pair

read -r p_sent0 _ _ <<<"$(counts "$WORK/primary.toml")"
read -r _ s_acc0 _ <<<"$(counts "$WORK/secondary.toml")"
wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "https://${ADDR[0]}:18082/healthz" > "$WORK/wrk.txt" 2>&1 || true
rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
errors=$( (grep -E "Socket errors|Non-2xx" "$WORK/wrk.txt" || true) | tr '\n' ' ')
echo "wrk: $CONNS connections, ${SECS} s, HTTPS /healthz on the active primary"
echo "  requests/s: $rps   p99 latency: $p99   ${errors:-no socket errors, no non-2xx}"
pair_verdict "$p_sent0" "$s_acc0"
