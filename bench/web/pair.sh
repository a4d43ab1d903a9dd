# Shared by bench/web/*.sh: the binary (HAMON, default target/release/hamon), a work
# folder removed on exit with the agents started (killed by PID), a registered pair on
# loopback with 200 ms heartbeats and an HTTPS Health Monitor, and the control-socket
# counters. Source it with BENCH set to a name for the work folder, after HERE; set
# HM_LIMITS (extra [health_monitor] lines) before calling start_pair.

TOP=$(cd "$HERE/../.." && pwd)
HAMON=${HAMON:-$TOP/target/release/hamon}
WORK=$(mktemp -d "/tmp/hamon-${BENCH:-bench}.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ -x "$HAMON" ] || { echo "build hamon first: cargo build --release" >&2; exit 1; }

ADDR=(127.0.91.2 127.0.91.3)
NAMES=(primary secondary)

start_pair() {
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
${HM_LIMITS:-}
CFG
        chmod 600 "$WORK/${NAMES[$i]}.toml"
    done
    echo Bench-Key-1 | "$HAMON" --config "$WORK/secondary.toml" ha authkey >/dev/null
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
}

counts() { # config -> "sent accepted state"
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

# How the pair fared between two readings of `counts`: prints one line, and fails if a
# heartbeat event or failover happened or the states moved.
pair_verdict() { # p_sent0 s_acc0
    local p_sent1 s_acc1 p_state s_state
    read -r p_sent1 _ p_state <<<"$(counts "$WORK/primary.toml")"
    read -r _ s_acc1 s_state <<<"$(counts "$WORK/secondary.toml")"
    local sent=$((p_sent1 - $1)) accepted=$((s_acc1 - $2))
    local missed failovers
    missed=$( (grep -h "heartbeats_missed" "$WORK/secondary.log" "$WORK/primary.log" || true) | wc -l)
    failovers=$( (grep -h "failover_complete\|split_brain" "$WORK/secondary.log" "$WORK/primary.log" || true) | wc -l)
    echo "heartbeats (200 ms): primary sent $sent, secondary accepted $accepted (lost $((sent - accepted)))"
    echo "  missed-heartbeat events: $missed   failovers: $failovers   states after: $p_state / $s_state"
    [ "$missed" = 0 ] && [ "$failovers" = 0 ] && [ "$p_state" = PrimaryActive ] && [ "$s_state" = SecondarySyncing ]
}
