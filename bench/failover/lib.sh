# Shared by bench/failover/run.sh and loss.sh (sourced, not run): a test bed
# of three network namespaces (primary, secondary, observer) on one bridge,
# and keepalived and hamon set to the same detection budget. Documentation
# addresses only; every name derives from a bed prefix P: namespaces Pp, Ps,
# Po and the bridge's namespace Pbr.

V4=(192.0.2.11 192.0.2.12 192.0.2.100)
MAC=(02:00:00:00:00:11 02:00:00:00:00:12 02:00:00:00:00:64)
VIP=192.0.2.10
HB_PORT=8083
NAMES=(primary secondary)

bed_ns() { # prefix -> the four namespace names
    echo "${1}p ${1}s ${1}o ${1}br"
}

bed_up() { # prefix
    local ns br i
    read -r -a ns <<<"$(bed_ns "$1")"
    br=${ns[3]}
    for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for i in 0 1 2; do
        ip -n "$br" link add "v$i" type veth peer name eth0 netns "${ns[$i]}"
        ip -n "$br" link set "v$i" master br0 up
        ip -n "${ns[$i]}" link set eth0 address "${MAC[$i]}"
        ip -n "${ns[$i]}" link set eth0 up
        ip -n "${ns[$i]}" addr add "${V4[$i]}/24" dev eth0
    done
}

bed_down() { # prefix
    local n
    for n in $(bed_ns "$1"); do ip netns del "$n" 2>/dev/null || true; done
}

# keepalived's skew for the backup's priority 100, (256 - 100) / 256 of the
# advert interval, to the nearest ms: hamon's probe timeout at the same budget.
skew_ms() { # advert_ms
    echo $(( (156 * $1 + 128) / 256 ))
}

keepalived_conf() { # file MASTER|BACKUP advert_s
    local prio=100
    [ "$2" = MASTER ] && prio=150
    cat > "$1" <<KA
global_defs {
    vrrp_version 3
    script_user root
}
vrrp_instance VI_1 {
    state $2
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int $3
    virtual_ipaddress {
        $VIP/24
    }
}
KA
}

# keepalived in namespace ns, config file conf; logs, pid files beside conf.
keepalived_start() { # ns conf
    local base=${2%.conf}
    ip netns exec "$1" keepalived -n -l -D --vrrp -f "$2" \
        -p "$base.pid" -r "$base.vrrp.pid" >"$base.log" 2>&1 &
    echo $!
}

hamon_conf() { # file index dir interval_ms
    cat > "$1" <<CFG
[node]
name = "${NAMES[$2]}"
role = "${NAMES[$2]}"
address = "${V4[$2]}"
interface = "eth0"
state_dir = "$3/${NAMES[$2]}/state"
run_dir = "$3/${NAMES[$2]}/run"
[heartbeat]
port = $HB_PORT
interval_ms = $4
missed = 3
grace_ms = 0
probe_timeout_ms = $(skew_ms "$4")
[health_monitor]
tls = false
CFG
}

# A registered hamon pair in bed prefix, under dir, heartbeats every
# interval_ms; prints the two agents' PIDs once both are up and registered.
hamon_pair() { # prefix dir interval_ms
    local ns i pids=()
    read -r -a ns <<<"$(bed_ns "$1")"
    for i in 0 1; do hamon_conf "$2/${NAMES[$i]}.toml" "$i" "$2" "$3"; done
    echo Bench-Key-1 | "$HAMON" --config "$2/secondary.toml" ha authkey >/dev/null
    for i in 0 1; do
        ip netns exec "${ns[$i]}" "$HAMON" agent --config "$2/${NAMES[$i]}.toml" >/dev/null 2>"$2/${NAMES[$i]}.log" &
        pids+=($!)
    done
    for i in 0 1; do
        for _ in $(seq 1 250); do "$HAMON" --config "$2/${NAMES[$i]}.toml" ha status >/dev/null 2>&1 && break; sleep 0.02; done
    done
    echo Bench-Key-1 | "$HAMON" --config "$2/primary.toml" ha register --secondary "${V4[1]}" \
        --failover-type automatic --vip $VIP/24 >"$2/register.out" 2>&1 || cat "$2/register.out" >&2
    echo "${pids[*]}"
}

wait_vip() { # namespace
    for _ in $(seq 1 500); do
        ip -n "$1" -o addr show dev eth0 | grep -q " $VIP/" && return 0
        sleep 0.02
    done
    echo "VIP never appeared on $1" >&2
    return 1
}
