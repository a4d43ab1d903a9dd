#!/usr/bin/env bash
# Idle footprint: RSS, CPU seconds per idle hour and threads of both daemons of a pair
# that has nothing to do, for hamon (registered, default timers: no sync sets; one sync
# set; a database check) and keepalived (VRRP, default advert_int) in the same run and
# the same namespace topology. Both servers of each pair are measured for WINDOW seconds
# after a settling pause.
#
#   sudo bench/footprint/run.sh [WINDOW_S]      (default 60)
#
# Needs root, iproute2, keepalived (Debian package) and a release build of hamon
# (cargo build --release). Documentation addresses only, in namespaces it creates and
# removes; it stops only the processes it started.
set -euo pipefail
WINDOW=${1:-60}
SETTLE=${SETTLE:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
HAMON=${HAMON:-$TOP/target/release/hamon}
WORK=$(mktemp -d /tmp/hamon-footprint.XXXXXX)
NS=(hmfpp hmfps)
BR=hmfpbr
V4=(192.0.2.11 192.0.2.12)
VIP=192.0.2.10
PIDS=()
TCK=$(getconf CLK_TCK)

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    for n in "${NS[@]}" "$BR"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v keepalived >/dev/null || { echo "install keepalived (apt-get install keepalived)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "build hamon first: cargo build --release" >&2; exit 1; }

for n in "${NS[@]}" "$BR"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n $BR link add br0 type bridge; ip -n $BR link set br0 up
for i in 0 1; do
    ip -n $BR link add "v$i" type veth peer name eth0 netns "${NS[$i]}"
    ip -n $BR link set "v$i" master br0 up
    ip -n "${NS[$i]}" link set eth0 up
    ip -n "${NS[$i]}" addr add "${V4[$i]}/24" dev eth0
done

ticks() { # pid -> utime+stime in clock ticks
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}
field() { # pid name -> the number after "name:" in /proc/pid/status
    awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"
}

# measure LABEL PID... : the processes of one server, summed. Prints
# "LABEL rss_kib cpu_s_per_hour threads".
measure() {
    local label=$1; shift
    local before=() after=() rss=0 thr=0 used=0 i=0
    for p in "$@"; do before+=("$(ticks "$p")"); done
    sleep "$WINDOW"
    for p in "$@"; do
        after=$(ticks "$p")
        used=$((used + after - before[i])); i=$((i + 1))
        rss=$((rss + $(field "$p" VmRSS))); thr=$((thr + $(field "$p" Threads)))
    done
    awk -v l="$label" -v r="$rss" -v u="$used" -v t="$TCK" -v w="$WINDOW" -v n="$thr" \
        'BEGIN { printf "%-44s %8d KiB %10.2f CPU s/idle h %4d threads\n", l, r, u / t * 3600 / w, n }'
}

keepalived_pair() {
    local d=$WORK/ka pids=()
    mkdir -p "$d"
    for i in 0 1; do
        local state=BACKUP prio=100
        [ $i = 0 ] && state=MASTER prio=150
        cat > "$d/k$i.conf" <<KA
global_defs {
    vrrp_version 3
}
vrrp_instance VI_1 {
    state $state
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int 1
    virtual_ipaddress {
        $VIP/24
    }
}
KA
        ip netns exec "${NS[$i]}" keepalived -n -l -D --vrrp -f "$d/k$i.conf" \
            -p "$d/k$i.pid" -r "$d/k$i.vrrp.pid" >"$d/k$i.log" 2>&1 &
        PIDS+=($!)
    done
    sleep "$SETTLE"
    local m=()
    for i in 0 1; do
        local role=backup; [ $i = 0 ] && role=master
        measure "keepalived $role (parent + VRRP child)" "$(cat "$d/k$i.pid")" "$(cat "$d/k$i.vrrp.pid")" &
        m+=($!)
    done
    wait "${m[@]}"
    for f in "$d"/k*.pid "$d"/k*.vrrp.pid; do kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 1
    ip -n "${NS[0]}" addr del $VIP/24 dev eth0 2>/dev/null || true
    ip -n "${NS[1]}" addr del $VIP/24 dev eth0 2>/dev/null || true
}

hamon_pair() { # LABEL EXTRA_TOML
    local label=$1 extra=$2 d=$WORK/hm
    rm -rf "$d"; mkdir -p "$d/data"
    echo "an appliance's configuration" > "$d/data/app.conf"
    local names=(primary secondary) pids=()
    for i in 0 1; do
        cat > "$d/${names[$i]}.toml" <<CFG
[node]
name = "${names[$i]}"
role = "${names[$i]}"
address = "${V4[$i]}"
interface = "eth0"
state_dir = "$d/${names[$i]}/state"
run_dir = "$d/${names[$i]}/run"
[health_monitor]
tls = false
${extra//\{addr\}/${V4[$i]}}
CFG
        sed -i "s|{data}|$d/data-${names[$i]}|" "$d/${names[$i]}.toml"
        mkdir -p "$d/data-${names[$i]}"
    done
    cp "$d/data/app.conf" "$d/data-primary/"
    echo Bench-Key-1 | "$HAMON" --config "$d/secondary.toml" ha authkey >/dev/null
    for i in 0 1; do
        ip netns exec "${NS[$i]}" "$HAMON" agent --config "$d/${names[$i]}.toml" 2>"$d/${names[$i]}.log" &
        pids+=($!); PIDS+=($!)
    done
    for i in 0 1; do
        for _ in $(seq 1 1000); do "$HAMON" --config "$d/${names[$i]}.toml" ha status >/dev/null 2>&1 && break; sleep 0.02; done
    done
    echo Bench-Key-1 | "$HAMON" --config "$d/primary.toml" ha register --secondary "${V4[1]}" \
        --failover-type automatic --vip $VIP/24 >"$d/register.out" 2>&1 || { cat "$d/register.out" "$d/primary.log" >&2; return 1; }
    for _ in $(seq 1 500); do
        "$HAMON" --config "$d/secondary.toml" ha status 2>/dev/null | grep -q "Secondary Syncing" && break
        sleep 0.05
    done
    sleep "$SETTLE"
    local m=()
    measure "hamon primary, $label" "${pids[0]}" & m+=($!)
    measure "hamon secondary, $label" "${pids[1]}" & m+=($!)
    wait "${m[@]}"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    ip -n "${NS[0]}" addr del $VIP/24 dev eth0 2>/dev/null || true
    ip -n "${NS[1]}" addr del $VIP/24 dev eth0 2>/dev/null || true
}

echo "# idle footprint, ${WINDOW} s windows, $(nproc) cores, $(uname -r); hamon $("$HAMON" --version), $(keepalived --version 2>&1 | head -1)"
keepalived_pair
hamon_pair "no sync sets" ""
hamon_pair "one sync set" '[[sync]]
name = "conf"
path = "{data}"'
hamon_pair "a database check" '[database]
tcp = "{addr}:8082"'
