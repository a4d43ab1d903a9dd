#!/usr/bin/env bash
# Large files: hamon's delta transfer against rsync's, over the same veth link between
# two network namespaces, in the same run. Four cases, each from a file the replica
# already holds:
#
#   byte    a 2 GiB file with 1 byte changed
#   append  1 MiB appended to a 1 GiB log
#   rewrite 10 % of the 64 KiB blocks of a 1 GiB file rewritten at random
#   insert  100 MiB (and 1000 bytes) inserted in the middle of a 1 GiB file
#
#   sudo bench/sync/large.sh [RUNS]        (default 3 runs, medians reported)
#   BENCH_MIB=64 sudo bench/sync/large.sh 1    (a quick look: every size / 16 ... / 32)
#   FS=xfs sudo bench/sync/large.sh            (every file on a new XFS, see below)
#   CASES="rewrite insert" sudo bench/sync/large.sh   (some of the cases)
#
# Each run times, for every case: one hamon pass (hinted, until the standby's log shows
# it done: the active rescans the changed file, the standby fetches the block list and
# the missing blocks, writes, verifies, fsyncs and renames), one `rsync -a` pass and one
# `rsync -a --inplace` pass from an rsync daemon into a copy of the old file; and the
# bytes each put on the link (both directions, from the veth counters). hamon runs with
# TLS on (its default), the rsync daemon over plain TCP, neither with compression.
# FS=xfs puts the sources and both tools' replicas on an XFS made for the run (mkfs
# defaults, reflinks on; a sparse image under /tmp on a loop device with direct I/O),
# as an appliance that keeps its synced data on XFS or btrfs would: hamon's deltas then
# share the old file's unchanged extents. Without FS, everything is on /tmp's own file
# system. Needs root, iproute2, python3, rsync (xfsprogs for FS=xfs) and a release
# build of hamon (HAMON_BIN, or the
# script runs `cargo build --release`). Documentation addresses only (192.0.2.21/.22),
# in namespaces it creates and removes; its data lives under /tmp/hamon-bench-large-*.
set -euo pipefail
RUNS=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
if [ -z "${HAMON_BIN:-}" ]; then
    (cd "$TOP" && cargo build --release --quiet)
    HAMON_BIN=$TOP/target/release/hamon
fi
HAMON=$HAMON_BIN
NS=(hmblp hmbls)
V4=(192.0.2.21 192.0.2.22)
NAMES=(primary secondary)
KEY=Bench-Key-1
HPID=(0 0)
RSPID=0
WORK=
LOOP=
FS=${FS:-}
# Sizes in MiB: the issue's, or all scaled from BENCH_MIB (the 2 GiB file's size).
BIG=${BENCH_MIB:-2048}
GIG=$((BIG / 2))
APPEND=1
INSERT=$((GIG * 100 / 1024)); [ "$INSERT" -ge 1 ] || INSERT=1

cleanup() {
    for p in "${HPID[@]}" "$RSPID"; do [ "$p" != 0 ] && kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ -n "$WORK" ] && { umount "$WORK/fs" 2>/dev/null || true; }
    [ -n "$LOOP" ] && { losetup -d "$LOOP" 2>/dev/null || true; }
    [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v rsync >/dev/null || { echo "install rsync (apt-get install rsync)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "no hamon binary at $HAMON" >&2; exit 1; }
WORK=$(mktemp -d /tmp/hamon-bench-large-XXXXXX)
HM=$WORK/hm
DATA=$WORK
case "$FS" in
    "") ;;
    xfs)
        command -v mkfs.xfs >/dev/null || { echo "install xfsprogs" >&2; exit 1; }
        truncate -s $(( BIG * 6 + 4096 ))M "$WORK/fs.img"
        LOOP=$(losetup --find --show --direct-io=on "$WORK/fs.img")
        mkfs.xfs -q "$LOOP"
        mkdir -p "$WORK/fs"; mount "$LOOP" "$WORK/fs"
        DATA=$WORK/fs ;;
    *) echo "FS is xfs or unset" >&2; exit 1 ;;
esac
SRC=$DATA/src
OLD=$DATA/old

now() { echo "${EPOCHREALTIME/,/.}"; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", (b-a)*1000}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.2f", b/1048576}'; }
settle() {
    sync
    for _ in $(seq 1 600); do
        awk '/^(Dirty|Writeback):/ {s += $2} END {exit !(s < 8192)}' /proc/meminfo && break
        sleep 0.1
    done
}
# Bytes through the primary's end of the link, both ways.
wire() {
    ip netns exec "${NS[0]}" sh -c \
        'echo $(( $(cat /sys/class/net/eth0/statistics/rx_bytes) + $(cat /sys/class/net/eth0/statistics/tx_bytes) ))'
}

bed() {
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
    ip -n "${NS[0]}" link add eth0 type veth peer name eth0 netns "${NS[1]}"
    for i in 0 1; do
        ip -n "${NS[$i]}" link set eth0 up
        ip -n "${NS[$i]}" addr add "${V4[$i]}/24" dev eth0
    done
}

# --- hamon: a pair whose standby holds the old file --------------------------

write_config() { # index path
    local i=$1 n=${NAMES[$1]}
    cat > "$HM/$n.toml" <<CFG
[node]
name = "$n"
role = "$n"
address = "${V4[$i]}"
interface = "eth0"
state_dir = "$HM/$n/state"
run_dir = "$HM/$n/run"
[heartbeat]
interval_ms = 1000
[log]
level = "trace"
[replication]
frequent_interval_ms = 3600000
batch_interval_ms = 3600000
hint_delay_ms = 60000
[[sync]]
name = "bench"
path = "$2"
class = "frequent"
CFG
}

start_agent() {
    local n=${NAMES[$1]}
    ip netns exec "${NS[$1]}" "$HAMON" agent --config "$HM/$n.toml" 2>>"$HM/$n.log" &
    HPID[$1]=$!
    for _ in $(seq 1 250); do "$HAMON" --config "$HM/$n.toml" ha status >/dev/null 2>&1 && return 0; sleep 0.02; done
    echo "$n agent did not start" >&2; cat "$HM/$n.log" >&2; return 1
}

stop_agent() {
    [ "${HPID[$1]}" = 0 ] && return 0
    kill "${HPID[$1]}" 2>/dev/null || true
    wait "${HPID[$1]}" 2>/dev/null || true
    HPID[$1]=0
}

wait_pulling() {
    local s p
    for _ in $(seq 1 600); do
        s=$(python3 "$HERE/peer.py" state "$HM/secondary/run/hamon.sock" 2>/dev/null || true)
        p=$(python3 "$HERE/peer.py" state "$HM/primary/run/hamon.sock" 2>/dev/null || true)
        case "$s|$p" in "standby PrimaryActive true|active "*" true") return 0 ;; esac
        sleep 0.05
    done
    echo "pair not settled: secondary [$s] primary [$p]" >&2; return 1
}

hamon_pair() { # dst: registered, the old file copied, one settling pass done
    rm -rf "$HM" "$1"; mkdir -p "$HM" "$1"
    write_config 0 "$SRC"
    write_config 1 "$1"
    echo "$KEY" | "$HAMON" --config "$HM/secondary.toml" ha authkey >/dev/null
    start_agent 0; start_agent 1
    echo "$KEY" | "$HAMON" --config "$HM/primary.toml" ha register --secondary "${V4[1]}" \
        --failover-type manual >"$HM/register.out" 2>&1 || { cat "$HM/register.out" "$HM"/*.log >&2; return 1; }
    wait_pulling
    hamon_pass >/dev/null
}
hamon_pass() { ip netns exec "${NS[0]}" python3 "$HERE/peer.py" pass "$HM/secondary/state/secret" "${V4[1]}" 8082 "$HM/secondary.log"; }

# --- rsync -------------------------------------------------------------------

rsyncd_up() {
    mkdir -p "$WORK/rsyncd"
    cat > "$WORK/rsyncd/rsyncd.conf" <<CFG
pid file = $WORK/rsyncd/rsyncd.pid
address = ${V4[0]}
port = 873
use chroot = no
[bench]
path = $SRC
read only = yes
uid = root
gid = root
CFG
    ip netns exec "${NS[0]}" rsync --daemon --no-detach --config="$WORK/rsyncd/rsyncd.conf" &
    RSPID=$!
    for _ in $(seq 1 250); do
        ip netns exec "${NS[1]}" rsync "rsync://${V4[0]}/" >/dev/null 2>&1 && return 0
        sleep 0.02
    done
    echo "rsync daemon did not start" >&2; return 1
}

rsync_case() { # dst options... -> "ms bytes"
    local dst=$1 t0 w0; shift
    rm -rf "$dst"; mkdir -p "$dst"; cp -a "$OLD/." "$dst/"
    settle
    w0=$(wire); t0=$(now)
    ip netns exec "${NS[1]}" rsync -a "$@" "rsync://${V4[0]}/bench/" "$dst/"
    echo "$(ms_since "$t0") $(( $(wire) - w0 ))"
}

# --- the cases ------------------------------------------------------------------

# The old file of a case, in $SRC and $OLD.
base() { # name MiB seed
    rm -rf "$SRC" "$OLD"; mkdir -p "$SRC" "$OLD"
    python3 - "$SRC/$1" "$2" "$3" <<'PY'
import random, sys
path, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(r.randbytes(1 << 20))
PY
    cp -a "$SRC/." "$OLD/"
}

# The edit of a case, in place on $SRC's file.
edit() { # case file
    python3 - "$1" "$SRC/$2" "$APPEND" "$INSERT" <<'PY'
import os, random, sys
case, path, append, insert = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = random.Random(7)
size = os.path.getsize(path)
if case == "byte":
    with open(path, "r+b") as f:
        f.seek(size // 3); b = f.read(1); f.seek(size // 3); f.write(bytes([b[0] ^ 0xff]))
elif case == "append":
    with open(path, "ab") as f:
        f.write(r.randbytes(append << 20))
elif case == "rewrite":
    blocks = size // 65536
    with open(path, "r+b") as f:
        for i in r.sample(range(blocks), blocks // 10):
            f.seek(i * 65536); f.write(r.randbytes(65536))
elif case == "insert":
    tmp = path + ".new"
    with open(path, "rb") as a, open(tmp, "wb") as b:
        half = size // 2
        left = half
        while left:
            n = min(left, 8 << 20); b.write(a.read(n)); left -= n
        for _ in range(insert):
            b.write(r.randbytes(1 << 20))
        # And a few bytes more, so that the shift is no multiple of any block size:
        # whole MiBs would leave fixed blocks (hamon's leaves, rsync's blocks) in step.
        b.write(r.randbytes(1000))
        while True:
            d = a.read(8 << 20)
            if not d: break
            b.write(d)
    os.replace(tmp, path)
PY
}

bed
declare -A H_MS H_B H_MAN R_MS R_B I_MS I_B
CASES=${CASES:-byte append rewrite insert}
echo "sizes (MiB): byte case $BIG, others $GIG; append $APPEND, insert $INSERT; $RUNS run(s); data on ${FS:-the file system of /tmp}"
for r in $(seq 1 "$RUNS"); do
    for c in $CASES; do
        if [ "$c" = byte ]; then base data.bin "$BIG" "$r"; else base data.bin "$GIG" "$r"; fi
        # hamon: the standby holds the old file; the edit; one pass.
        hamon_pair "$DATA/dst-hamon"
        edit "$c" data.bin
        settle
        w0=$(wire)
        ms=$(hamon_pass)
        H_MS[$c]+="$ms "; H_B[$c]+="$(( $(wire) - w0 )) "
        # The standby logs how long the active took to hand over its manifest: its rescan.
        H_MAN[$c]+="$(grep -o 'sync set bench from .*(manifest [0-9]* ms)' "$HM/secondary.log" | tail -1 |
            grep -o 'manifest [0-9]*' | awk '{print $2}') "
        cmp -s "$SRC/data.bin" "$DATA/dst-hamon/data.bin" || { echo "hamon's copy differs ($c)" >&2; tail -20 "$HM/secondary.log" >&2; exit 1; }
        stop_agent 1; stop_agent 0; rm -rf "$DATA/dst-hamon"
        # rsync, from the same edited file into copies of the old one.
        rsyncd_up
        read -r ms b <<<"$(rsync_case "$DATA/dst-rsync")"
        R_MS[$c]+="$ms "; R_B[$c]+="$b "
        cmp -s "$SRC/data.bin" "$DATA/dst-rsync/data.bin" || { echo "rsync's copy differs ($c)" >&2; exit 1; }
        read -r ms b <<<"$(rsync_case "$DATA/dst-rsync" --inplace)"
        I_MS[$c]+="$ms "; I_B[$c]+="$b "
        rm -rf "$DATA/dst-rsync"
        kill "$RSPID" 2>/dev/null || true; wait "$RSPID" 2>/dev/null || true; RSPID=0
        echo "run $r $c: hamon $(echo "${H_MS[$c]}" | awk '{print $NF}') ms $(echo "${H_B[$c]}" | awk '{print $NF}') B" \
            "(the active's manifest $(echo "${H_MAN[$c]}" | awk '{print $NF}') ms) |" \
            "rsync -a $(echo "${R_MS[$c]}" | awk '{print $NF}') ms $(echo "${R_B[$c]}" | awk '{print $NF}') B |" \
            "rsync -a --inplace $(echo "${I_MS[$c]}" | awk '{print $NF}') ms $(echo "${I_B[$c]}" | awk '{print $NF}') B"
    done
done

echo
echo "Large files, hamon delta vs rsync, $RUNS run(s), medians (time; MiB on the link)"
printf '%-8s %12s %12s %12s | %9s %9s %9s | %s\n' case hamon "rsync -a" "--inplace" hamon rsync inplace "hamon/rsync time, bytes"
for c in $CASES; do
    # shellcheck disable=SC2086
    hm=$(median ${H_MS[$c]}); rm_=$(median ${R_MS[$c]}); im=$(median ${I_MS[$c]})
    # shellcheck disable=SC2086
    hb=$(median ${H_B[$c]}); rb=$(median ${R_B[$c]}); ib=$(median ${I_B[$c]})
    best=$(awk -v a="$rm_" -v b="$im" 'BEGIN{print (a<b)?a:b}')
    printf '%-8s %10s ms %10s ms %10s ms | %9s %9s %9s | %s, %s (best rsync time %s)\n' "$c" "$hm" "$rm_" "$im" \
        "$(mib "$hb")" "$(mib "$rb")" "$(mib "$ib")" "$(ratio "$hm" "$rm_")" "$(ratio "$hb" "$rb")" "$(ratio "$hm" "$best")"
done
for c in $CASES; do
    # shellcheck disable=SC2086
    echo "$c: hamon's pass $(median ${H_MS[$c]}) ms, of which the active's manifest (its rescan) $(median ${H_MAN[$c]}) ms"
done
for c in $CASES; do
    echo "raw $c: hamon ms ${H_MS[$c]}| bytes ${H_B[$c]}| manifest ms ${H_MAN[$c]}| rsync ms ${R_MS[$c]}| bytes ${R_B[$c]}| inplace ms ${I_MS[$c]}| bytes ${I_B[$c]}"
done
