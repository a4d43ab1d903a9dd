#!/usr/bin/env bash
# Failover time: hamon against keepalived, in the same namespace topology,
# with equal detection budgets. From the observer, time from a power cut of
# the active server (its switch port down and its daemon SIGKILLed in the same
# instant) until the VIP answers ARP from the other server's MAC.
#
#   sudo bench/failover/run.sh [RUNS] [BUDGETS]
#
# RUNS per budget (default 5); BUDGETS a list of advert intervals in ms
# (default "1000 100 10"). MODE=kill leaves the port up (the daemon alone
# dies, the dead node's kernel still refuses hamon's probe at once).
#
# keepalived (VRRPv3, backup priority 100) declares the master down after
# 3 x advert_int + skew, skew = (256 - 100) / 256 x advert_int. hamon gets the
# the same budget to the millisecond (its timers are whole milliseconds, so
# the skew is rounded to the nearest one: 609, 61 and 6 ms, hamon's budget
# within 0.4 ms of keepalived's either way): 3 missed intervals, no grace, and
# the skew as its probe timeout.
#
# Needs root, iproute2, python3, keepalived (Debian package) and a release
# build of hamon (cargo build --release). Uses documentation addresses only,
# in namespaces it creates and removes.
set -euo pipefail
RUNS=${1:-5}
BUDGETS=${2:-1000 100 10}
MODE=${MODE:-power}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
HAMON=${HAMON:-$TOP/target/release/hamon}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
WORK=$(mktemp -d /tmp/hamon-bench.XXXXXX)
read -r -a NS <<<"$(bed_ns hmbf)"
BR=${NS[3]}
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    bed_down hmbf
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v keepalived >/dev/null || { echo "install keepalived (apt-get install keepalived)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "build hamon first: cargo build --release" >&2; exit 1; }

probe() { # pids-to-kill keepalive-kind
    local cut=()
    [ "$MODE" = power ] && cut=(--power-cut "$BR:v0")
    ip netns exec "${NS[2]}" python3 "$HERE/probe.py" --vip $VIP --src-ip "${V4[2]}" \
        --new-mac "${MAC[1]}" --kill "$1" "${cut[@]}" --sync "$BR:v0:$2:$PHASE"
    ip -n "$BR" link set v0 up
}

unclaim() { # the VIP off both servers, for the next run
    ip -n "${NS[0]}" addr del $VIP/24 dev eth0 2>/dev/null || true
    ip -n "${NS[1]}" addr del $VIP/24 dev eth0 2>/dev/null || true
}

keepalived_run() { # advert_int
    local d=$WORK/ka
    mkdir -p "$d"
    keepalived_conf "$d/k0.conf" MASTER "$1"
    keepalived_conf "$d/k1.conf" BACKUP "$1"
    for i in 0 1; do PIDS+=("$(keepalived_start "${NS[$i]}" "$d/k$i.conf")"); done
    wait_vip "${NS[0]}" || { cat "$d/k0.log" "$d/k1.log" >&2; return 1; }
    sleep 1
    for _ in $(seq 1 100); do [ -s "$d/k0.vrrp.pid" ] && break; sleep 0.02; done
    local t
    # The VRRP child first: killed after its parent, it would get SIGTERM
    # (parent-death signal) and resign cleanly with a priority-0 advert.
    t=$(probe "$(cat "$d/k0.vrrp.pid"),$(cat "$d/k0.pid")" vrrp)
    for f in "$d"/k*.pid "$d"/k*.vrrp.pid; do kill -9 "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    unclaim
    rm -rf "$d"
    echo "$t"
}

hamon_run() { # interval_ms
    local d=$WORK/hm pids
    mkdir -p "$d"
    read -r -a pids <<<"$(hamon_pair hmbf "$d" "$1")"
    PIDS+=("${pids[@]}")
    wait_vip "${NS[0]}" || { cat "$d/primary.log" "$d/secondary.log" >&2; return 1; }
    sleep 1
    local t
    t=$(probe "${pids[0]}" udp:$HB_PORT)
    sleep 0.3
    local us
    us=$(grep -o 'first announcement [0-9]* us' "$d/secondary.log" | awk '{print $3}' | tail -1)
    # How many intervals of silence the detector waited for (more than 3: it read
    # the path as lossy).
    local win
    win=$(grep -o '[0-9]* consecutive heartbeats' "$d/secondary.log" | awk '{print $1}' | tail -1)
    kill -9 "${pids[1]}" 2>/dev/null || true
    unclaim
    rm -rf "$d"
    echo "$t ${us:-?} ${win:-?}"
}

stats() { # values... -> "min median max"
    printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f %.1f %.1f", a[1], m, a[NR]}'
}

bed_up hmbf
report() { # label ka_adv hamon_iv
    local ka=() hm=() takeover=() windows=()
    # Interleaved, so that a slow spell of the machine hits both alike. Run i
    # kills both daemons at the same point of their keep-alive cycle, (i - 1/2)
    # / RUNS of an interval after their last keep-alive: the points are spread
    # evenly over the cycle, as a power cut at a random moment would fall.
    for i in $(seq 1 "$RUNS"); do
        PHASE=$(awk -v i="$i" -v n="$RUNS" -v b="$3" 'BEGIN{printf "%.3f", (i - 0.5) / n * b}')
        ka+=("$(keepalived_run "$2")")
        read -r t us win <<<"$(hamon_run "$3")"
        hm+=("$t"); takeover+=("$us"); windows+=("$win")
    done
    read -r kmin kmed kmax <<<"$(stats "${ka[@]}")"
    read -r hmin hmed hmax <<<"$(stats "${hm[@]}")"
    read -r gmin gmed gmax <<<"$(stats "${takeover[@]}")"
    printf '%-30s keepalived  min %8.1f  median %8.1f  max %8.1f ms\n' "$1" "$kmin" "$kmed" "$kmax"
    printf '%-30s hamon       min %8.1f  median %8.1f  max %8.1f ms\n' "" "$hmin" "$hmed" "$hmax"
    printf '%-30s ratio hamon/keepalived (median) %.2f\n' "" \
        "$(awk -v a="$hmed" -v b="$kmed" 'BEGIN{print a/b}')"
    printf '%-30s hamon decision->first GARP  min %.0f  median %.0f  max %.0f us\n' "" "$gmin" "$gmed" "$gmax"
    echo "  runs: keepalived ${ka[*]} | hamon ${hm[*]} | takeover_us ${takeover[*]} | silent_windows ${windows[*]}"
}
case $MODE in
    power) what="a power cut of the active server (switch port down + SIGKILL)" ;;
    kill) what="SIGKILL of the active daemon" ;;
    *) echo "MODE is power or kill" >&2; exit 1 ;;
esac
echo "failover time from $what to the VIP answering from the other MAC ($RUNS runs each)"
for b in $BUDGETS; do
    adv=$(awk -v b="$b" 'BEGIN{printf "%g", b / 1000}')
    budget=$(awk -v b="$b" 'BEGIN{printf "%.2f", b * (3 + 156 / 256)}')
    hb=$(( 3 * b + (156 * b + 128) / 256 ))
    report "budget $budget / $hb ms (advert ${b} ms)" "$adv" "$b"
done
