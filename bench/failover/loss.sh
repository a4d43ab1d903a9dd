#!/usr/bin/env bash
# False failovers on a lossy path: hamon against keepalived, side by side for
# the same minutes, each pair on a bridge of its own, at the 10 ms budget of
# run.sh (keep-alives every 10 ms; keepalived 3 x advert + skew = 36.09 ms,
# hamon 3 missed + a 6 ms probe = 36 ms), with the switch dropping a random
# share of the frames between the two servers, each way (nftables in the
# bridge's namespace: this kernel has no netem). No server fails: every
# takeover counted is a false failover.
#
#   sudo bench/failover/loss.sh [SECONDS] [LOSS_PCT]   (default 600 s, 10 %)
#
# Needs root, iproute2, nftables, keepalived and a release build of hamon.
set -euo pipefail
SECS=${1:-600}
LOSS=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
HAMON=${HAMON:-$TOP/target/release/hamon}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
KA=hmlk
HM=hmlh
WORK=$(mktemp -d /tmp/hamon-loss.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    for f in "$WORK"/ka/*.pid; do [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
    bed_down $KA
    bed_down $HM
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v keepalived >/dev/null || { echo "install keepalived (apt-get install keepalived)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "build hamon first: cargo build --release" >&2; exit 1; }

bed_up $KA
bed_up $HM
mkdir -p "$WORK/ka" "$WORK/hm"
keepalived_conf "$WORK/ka/k0.conf" MASTER 0.01
keepalived_conf "$WORK/ka/k1.conf" BACKUP 0.01
PIDS+=("$(keepalived_start ${KA}p "$WORK/ka/k0.conf")")
PIDS+=("$(keepalived_start ${KA}s "$WORK/ka/k1.conf")")
read -r -a hm_pids <<<"$(hamon_pair $HM "$WORK/hm" 10)"
PIDS+=("${hm_pids[@]}")
wait_vip ${KA}p
wait_vip ${HM}p
sleep 2

count() { # file pattern
    grep -c "$2" "$1" 2>/dev/null || true
}
ka_before=$(count "$WORK/ka/k1.log" 'Entering MASTER STATE')
hm_before=$(count "$WORK/hm/secondary.log" 'takeover: virtual IP claimed')
for p in $KA $HM; do
    ip netns exec "${p}br" nft -f - <<NFT
table bridge hamon_loss {
    chain lose {
        type filter hook forward priority 0; policy accept;
        iifname "v0" oifname "v1" numgen random mod 100 < $LOSS drop
        iifname "v1" oifname "v0" numgen random mod 100 < $LOSS drop
    }
}
NFT
done
echo "$LOSS % of the frames between the servers lost, each way, for $SECS s; keep-alives every 10 ms"
sleep "$SECS"
for p in $KA $HM; do ip netns exec "${p}br" nft delete table bridge hamon_loss; done

ka=$(( $(count "$WORK/ka/k1.log" 'Entering MASTER STATE') - ka_before ))
hm=$(( $(count "$WORK/hm/secondary.log" 'takeover: virtual IP claimed') - hm_before ))
suspected=$(count "$WORK/hm/secondary.log" 'heartbeats_missed')
stretched=$(grep -o '[0-9]* consecutive heartbeats' "$WORK/hm/secondary.log" | awk '{print $1}' \
    | sort -n | uniq -c | awk '{printf "%s after %s windows; ", $1, $2}')
printf 'false failovers in %s s:  keepalived %d  hamon %d\n' "$SECS" "$ka" "$hm"
printf 'hamon suspected the peer %s times (%s) and asked it for a heartbeat\n' \
    "$suspected" "${stretched%; }"
"$HAMON" --config "$WORK/hm/secondary.toml" status 2>/dev/null | grep -i 'heartbeat' || true
[ "$hm" -le "$ka" ]
