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
TOP=$(cd "$HERE/../.." && pwd)
HAMON=${HAMON:-$TOP/target/release/hamon}
WORK=$(mktemp -d /tmp/hamon-webbench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "build hamon first: cargo build --release" >&2; exit 1; }

ADDR=(127.0.91.2 127.0.91.3)
NAMES=(primary secondary)
for i in 0 1; do
    cat > "$WORK/${NAMES[$i]}.toml" <<CFG
[node]
name = "${NAMES[$i]}"
role = "${NAMES[$i]}"
address = "${ADDR[$i]}"
state_dir = "$WORK/${NAMES[$i]}/state"
run_dir = "$WORK/${NAMES[$i]}/run"
[heartbeat]
interval_ms = 200
missed = 3
grace_ms = 400
probe_timeout_ms = 500
[health_monitor]
port = 18082
tls = true
max_connections = 2000
max_connections_per_client = 2000
CFG
done
"$HAMON" --config "$WORK/secondary.toml" ha authkey Bench-Key-1 >/dev/null
for i in 0 1; do
    "$HAMON" agent --config "$WORK/${NAMES[$i]}.toml" 2>"$WORK/${NAMES[$i]}.log" &
    PIDS+=($!)
done
for i in 0 1; do
    for _ in $(seq 1 250); do "$HAMON" --config "$WORK/${NAMES[$i]}.toml" ha status >/dev/null 2>&1 && break; sleep 0.02; done
done
echo Bench-Key-1 | "$HAMON" --config "$WORK/primary.toml" ha register --secondary "${ADDR[1]}" \
    --failover-type automatic >/dev/null
sleep 2

counts() { # config -> "sent accepted"
    python3 - "$1" <<'PY'
import json, socket, sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
s = socket.socket(socket.AF_UNIX)
s.connect(cfg["node"]["run_dir"] + "/hamon.sock")
s.sendall(b'{"cmd":"status"}\n')
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
r = json.loads(data)
print(r["heartbeats"]["sent"], r["heartbeats"]["accepted"], r["status"]["state"])
PY
}

read -r p_sent0 _ _ <<<"$(counts "$WORK/primary.toml")"
read -r _ s_acc0 _ <<<"$(counts "$WORK/secondary.toml")"
wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "https://${ADDR[0]}:18082/healthz" > "$WORK/wrk.txt" 2>&1 || true
read -r p_sent1 _ p_state <<<"$(counts "$WORK/primary.toml")"
read -r _ s_acc1 s_state <<<"$(counts "$WORK/secondary.toml")"

sent=$((p_sent1 - p_sent0))
accepted=$((s_acc1 - s_acc0))
missed_events=$( (grep -h "heartbeats_missed" "$WORK/secondary.log" "$WORK/primary.log" || true) | wc -l)
failovers=$( (grep -h "failover_complete\|split_brain" "$WORK/secondary.log" "$WORK/primary.log" || true) | wc -l)
rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
errors=$( (grep -E "Socket errors|Non-2xx" "$WORK/wrk.txt" || true) | tr '\n' ' ')
echo "wrk: $CONNS connections, ${SECS} s, HTTPS /healthz on the active primary"
echo "  requests/s: $rps   p99 latency: $p99   ${errors:-no socket errors, no non-2xx}"
echo "heartbeats (200 ms): primary sent $sent, secondary accepted $accepted (lost $((sent - accepted)))"
echo "  missed-heartbeat events: $missed_events   failovers: $failovers   states after: $p_state / $s_state"
[ "$missed_events" = 0 ] && [ "$failovers" = 0 ] && [ "$p_state" = PrimaryActive ] && [ "$s_state" = SecondarySyncing ]
