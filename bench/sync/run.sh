#!/usr/bin/env bash
# File sync: hamon against rsync, over the same veth link between two network
# namespaces, on the same deterministic tree (10 000 files, about 1 GiB:
# 9 975 files of 1-64 KiB in 200 nested directories, 24 files of 30 MiB and
# one 4 KiB file that the change test rewrites).
#
#   sudo bench/sync/run.sh [RUNS]            (default 3 runs, medians reported)
#
# Measures, each RUNS times:
#   1. initial copy into an empty directory: hamon `ha register` (it returns
#      once the secondary has pulled the set; the registration of an empty
#      set, timed in the same run, is subtracted) against `rsync -a` (and
#      `rsync -a --fsync`, since hamon fsyncs every file) from an rsync daemon;
#   2. one 4 KiB file rewritten on the source: hamon change-to-replica latency
#      (inotify hint, hint_delay_ms 200, 50 and 0) against one `rsync -a` pass;
#   3. nothing changed: one hamon pass (hint to the standby until its log
#      shows the pass done) against one `rsync -a` pass;
#   4. the first hamon pass after the primary restarts (twice, not RUNS
#      times): its scanner starts empty, so it hashes the whole tree again
#      before it answers the manifest.
#
# hamon runs with TLS on (its default); the rsync daemon is plain TCP.
#
# FRESH_FS=1: every copy, hamon's and rsync's, goes into an ext4 made for it
# (mkfs defaults, with its journal, as an appliance's data partition) on a
# loop device with direct I/O over a file of the root disk. Without it the
# copies share the root file system, where each pays for the inodes the
# previous copy freed (ext4 without a journal skips recently freed inodes).
# Needs root, iproute2, python3, rsync (apt-get install rsync) and a release
# build of hamon: set HAMON_BIN, or the script runs `cargo build --release`.
# Uses documentation addresses only (192.0.2.21/.22), in namespaces it creates
# and removes; its data lives under /tmp/hamon-bench-sync-* and is removed.
set -euo pipefail
RUNS=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
if [ -z "${HAMON_BIN:-}" ]; then
    (cd "$TOP" && cargo build --release --quiet)
    HAMON_BIN=$TOP/target/release/hamon
fi
HAMON=$HAMON_BIN
NS=(hmbsp hmbss)
V4=(192.0.2.21 192.0.2.22)
NAMES=(primary secondary)
KEY=Bench-Key-1
HPID=(0 0)   # the two hamon agents, 0 when not running
RSPID=0      # the rsync daemon
WORK=
FRESH_FS=${FRESH_FS:-0}

cleanup() {
    for p in "${HPID[@]}" "$RSPID"; do [ "$p" != 0 ] && kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$WORK" ] && for d in "$WORK"/dst-*; do [ -d "$d" ] && drop_dir "$d"; done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v rsync >/dev/null || { echo "install rsync (apt-get install rsync)" >&2; exit 1; }
[ -x "$HAMON" ] || { echo "no hamon binary at $HAMON" >&2; exit 1; }
WORK=$(mktemp -d /tmp/hamon-bench-sync-XXXXXX)
SRC=$WORK/src          # the active's tree (hamon primary, rsync daemon module)
EMPTY=$WORK/empty      # the source of the empty-set registration
HOT=d07/e03/hot.conf   # the file the change test rewrites

now() { echo "${EPOCHREALTIME/,/.}"; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", (b-a)*1000}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
sec() { awk -v m="$1" 'BEGIN{printf "%.2f", m/1000}'; }
mibs() { awk -v m="$1" -v b="$BYTES" 'BEGIN{printf "%.1f", b/1048576/(m/1000)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

# Flush dirty pages and let writeback finish, so one measurement does not pay
# for the previous one's writes.
settle() {
    sync
    for _ in $(seq 1 300); do
        awk '/^(Dirty|Writeback):/ {s += $2} END {exit !(s < 8192)}' /proc/meminfo && break
        sleep 0.1
    done
}

# An empty destination directory: with FRESH_FS=1, the root of a new ext4.
fresh_dir() { # dir
    mkdir -p "$1"
    [ "$FRESH_FS" = 1 ] || return 0
    local img dev
    img=$WORK/$(basename "$1").img
    truncate -s 4G "$img"
    mkfs.ext4 -q -F "$img"
    dev=$(losetup --direct-io=on -f --show "$img")
    mount "$dev" "$1"
    rmdir "$1/lost+found"
}

drop_dir() { # dir
    if mountpoint -q "$1"; then
        local dev
        dev=$(findmnt -n -o SOURCE "$1")
        umount "$1"
        losetup -d "$dev"
        rm -f "$WORK/$(basename "$1").img"
    fi
    rm -rf "$1"
}

bed() {
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
    ip -n "${NS[0]}" link add eth0 type veth peer name eth0 netns "${NS[1]}"
    for i in 0 1; do
        ip -n "${NS[$i]}" link set eth0 up
        ip -n "${NS[$i]}" addr add "${V4[$i]}/24" dev eth0
    done
}

# --- hamon -----------------------------------------------------------------

HM=$WORK/hm

write_config() { # index src-or-dst hint_delay_ms
    local i=$1 path=$2 delay=$3 n=${NAMES[$1]}
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
hint_delay_ms = $delay
[[sync]]
name = "bench"
path = "$path"
class = "frequent"
CFG
}

start_agent() { # index
    local n=${NAMES[$1]}
    ip netns exec "${NS[$1]}" "$HAMON" agent --config "$HM/$n.toml" 2>>"$HM/$n.log" &
    HPID[$1]=$!
    for _ in $(seq 1 250); do "$HAMON" --config "$HM/$n.toml" ha status >/dev/null 2>&1 && return 0; sleep 0.02; done
    echo "$n agent did not start" >&2; cat "$HM/$n.log" >&2; return 1
}

stop_agent() { # index
    [ "${HPID[$1]}" = 0 ] && return 0
    kill "${HPID[$1]}" 2>/dev/null || true
    wait "${HPID[$1]}" 2>/dev/null || true
    HPID[$1]=0
}

# A fresh pair: primary serving $1, secondary replicating into $2.
pair_up() { # src dst hint_delay_ms
    rm -rf "$HM"; mkdir -p "$HM" "$2"
    write_config 0 "$1" "$3"
    write_config 1 "$2" "$3"
    echo "$KEY" | "$HAMON" --config "$HM/secondary.toml" ha authkey >/dev/null
    start_agent 0; start_agent 1
}

pair_down() { stop_agent 1; stop_agent 0; }

register() { # -> ms
    local t0
    settle
    t0=$(now)
    echo "$KEY" | "$HAMON" --config "$HM/primary.toml" ha register --secondary "${V4[1]}" \
        --failover-type manual >"$HM/register.out" 2>&1 || { cat "$HM/register.out" "$HM"/*.log >&2; return 1; }
    ms_since "$t0"
}

# The pair is up, the primary active and the secondary pulling from it.
wait_pulling() {
    local s
    for _ in $(seq 1 200); do
        s=$(python3 "$HERE/peer.py" state "$HM/secondary/run/hamon.sock" 2>/dev/null || true)
        p=$(python3 "$HERE/peer.py" state "$HM/primary/run/hamon.sock" 2>/dev/null || true)
        case "$s|$p" in "standby PrimaryActive true|active "*" true") return 0 ;; esac
        sleep 0.05
    done
    echo "pair not settled: secondary [$s] primary [$p]" >&2; return 1
}

hamon_pass() { ip netns exec "${NS[0]}" python3 "$HERE/peer.py" pass "$HM/secondary/state/secret" "${V4[1]}" 8082 "$HM/secondary.log"; }
hamon_change() { python3 "$HERE/peer.py" change "$SRC/$HOT" "$1/$HOT"; }

# --- rsync -----------------------------------------------------------------

RS=$WORK/rsyncd
rsyncd_up() {
    mkdir -p "$RS"
    cat > "$RS/rsyncd.conf" <<CFG
pid file = $RS/rsyncd.pid
address = ${V4[0]}
port = 873
use chroot = no
[bench]
path = $SRC
read only = yes
uid = root
gid = root
CFG
    ip netns exec "${NS[0]}" rsync --daemon --no-detach --config="$RS/rsyncd.conf" \
        --log-file="$RS/rsyncd.log" &
    RSPID=$!
    for _ in $(seq 1 250); do
        ip netns exec "${NS[1]}" rsync "rsync://${V4[0]}/" >/dev/null 2>&1 && return 0
        sleep 0.02
    done
    echo "rsync daemon did not start" >&2; return 1
}

rsync_pass() { # dst [options] -> ms
    local dst=$1 t0; shift
    settle
    t0=$(now)
    ip netns exec "${NS[1]}" rsync -a "$@" "rsync://${V4[0]}/bench/" "$dst/"
    ms_since "$t0"
}

rsync_change() { # dst -> ms for one pass carrying one rewritten 4 KiB file
    python3 -c 'import os,sys; open(sys.argv[1],"wb").write(os.urandom(2048).hex().encode())' "$SRC/$HOT"
    rsync_pass "$1"
}

# --- the run ---------------------------------------------------------------

echo "generating the tree under $SRC ..."
read -r FILES BYTES <<<"$(python3 "$HERE/gen.py" "$SRC" ${BENCH_TREE:-})"
mkdir -p "$EMPTY"
sync
bed
rsyncd_up
echo "tree: $FILES files, $BYTES bytes ($(awk -v b="$BYTES" 'BEGIN{printf "%.2f", b/1073741824}') GiB); hamon over HTTPS, rsync daemon over plain TCP"

declare -a R_EMPTY R_REG R_COPYLOG R_FIRST R_NOCH R_MANI R_CH200 RS_INIT RS_FSYNC RS_NOCH RS_CH
for r in $(seq 1 "$RUNS"); do
    # rsync: a full copy into an empty directory, nothing to do, one change.
    fresh_dir "$WORK/dst-rsync"
    RS_INIT+=("$(rsync_pass "$WORK/dst-rsync")")
    if [ "$r" = 1 ]; then
        diff -r "$SRC" "$WORK/dst-rsync" >/dev/null || { echo "rsync's copy differs from the source" >&2; exit 1; }
    fi
    RS_NOCH+=("$(rsync_pass "$WORK/dst-rsync")")
    RS_CH+=("$(rsync_change "$WORK/dst-rsync")")
    drop_dir "$WORK/dst-rsync"; fresh_dir "$WORK/dst-rsync"
    RS_FSYNC+=("$(rsync_pass "$WORK/dst-rsync" --fsync)")
    drop_dir "$WORK/dst-rsync"
    # hamon: the registration of an empty set, then of the tree.
    pair_up "$EMPTY" "$WORK/dst-empty" 200
    R_EMPTY+=("$(register)")
    pair_down; rm -rf "$WORK/dst-empty"

    fresh_dir "$WORK/dst-hamon"
    pair_up "$SRC" "$WORK/dst-hamon" 200
    R_REG+=("$(register)")
    R_COPYLOG+=("$(grep -o 'initial copy complete after [0-9]* ms' "$HM/primary.log" | awk '{print $5}' | tail -1)")
    if [ "$r" = 1 ]; then
        diff -r "$SRC" "$WORK/dst-hamon" >/dev/null || { echo "hamon's copy differs from the source" >&2; exit 1; }
    fi
    wait_pulling
    # The standby's first pass after the copy hashes what the copy wrote.
    R_FIRST+=("$(hamon_pass)")
    R_NOCH+=("$(hamon_pass)")
    R_MANI+=("$(ip netns exec "${NS[1]}" python3 "$HERE/peer.py" manifest "$HM/secondary/state/secret" "${V4[0]}" 8082 | awk '{print $1}')")
    R_CH200+=("$(hamon_change "$WORK/dst-hamon")")
    if [ "$r" != "$RUNS" ]; then pair_down; drop_dir "$WORK/dst-hamon"; fi

    echo "run $r: hamon register empty ${R_EMPTY[-1]} ms, tree ${R_REG[-1]} ms (copy ${R_COPYLOG[-1]} ms in the log);" \
        "first pass ${R_FIRST[-1]} ms, no-change pass ${R_NOCH[-1]} ms, manifest ${R_MANI[-1]} ms, change ${R_CH200[-1]} ms |" \
        "rsync copy ${RS_INIT[-1]} ms, --fsync ${RS_FSYNC[-1]} ms, no-change ${RS_NOCH[-1]} ms, change ${RS_CH[-1]} ms"
done

# Change latency with shorter hint delays: restart the primary of the last pair.
declare -A LAT
declare -a R_RESTART
LAT[200]="${R_CH200[*]}"
for d in 50 0; do
    stop_agent 0
    write_config 0 "$SRC" "$d"
    start_agent 0
    wait_pulling
    # The restarted primary hashes its whole tree again for this pass's manifest.
    R_RESTART+=("$(hamon_pass)")
    v=()
    for _ in $(seq 1 "$RUNS"); do v+=("$(hamon_change "$WORK/dst-hamon")"); sleep 0.3; done
    LAT[$d]="${v[*]}"
done
pair_down

# --- report ----------------------------------------------------------------

m_empty=$(median "${R_EMPTY[@]}")
m_reg=$(median "${R_REG[@]}")
m_copy=$(awk -v a="$m_reg" -v b="$m_empty" 'BEGIN{printf "%.1f", a-b}')
m_rs=$(median "${RS_INIT[@]}")
m_rsf=$(median "${RS_FSYNC[@]}")
m_noch=$(median "${R_NOCH[@]}")
m_rsnoch=$(median "${RS_NOCH[@]}")
m_rsch=$(median "${RS_CH[@]}")
echo
echo "File sync, hamon vs rsync: $FILES files, $BYTES bytes, $RUNS runs, medians"
printf '1. initial copy   hamon %s s (%s MiB/s; register %s s less empty-set register %s s)\n' \
    "$(sec "$m_copy")" "$(mibs "$m_copy")" "$(sec "$m_reg")" "$(sec "$m_empty")"
printf '                  rsync -a %s s (%s MiB/s), rsync -a --fsync %s s (%s MiB/s)\n' \
    "$(sec "$m_rs")" "$(mibs "$m_rs")" "$(sec "$m_rsf")" "$(mibs "$m_rsf")"
printf '                  hamon/rsync %s, hamon/rsync --fsync %s\n' "$(ratio "$m_copy" "$m_rs")" "$(ratio "$m_copy" "$m_rsf")"
printf '2. one change     rsync -a pass %s ms\n' "$m_rsch"
for d in 200 50 0; do
    # shellcheck disable=SC2086
    m=$(median ${LAT[$d]})
    printf '                  hamon hint_delay_ms %-3s latency %s ms (hamon/rsync pass %s)\n' "$d" "$m" "$(ratio "$m" "$m_rsch")"
done
printf '3. no change      hamon pass %s ms (manifest fetch alone %s ms), rsync -a %s ms, hamon/rsync %s\n' \
    "$m_noch" "$(median "${R_MANI[@]}")" "$m_rsnoch" "$(ratio "$m_noch" "$m_rsnoch")"
printf '   first hamon pass after the copy (standby hashes the copied tree): %s ms\n' "$(median "${R_FIRST[@]}")"
printf '4. active restart first hamon pass after the primary restarts (it hashes its whole tree again): %s ms\n' \
    "$(median "${R_RESTART[@]}")"
echo "raw (ms): register-empty ${R_EMPTY[*]} | register ${R_REG[*]} | copy-log ${R_COPYLOG[*]} | rsync ${RS_INIT[*]} |" \
    "rsync-fsync ${RS_FSYNC[*]} | first-pass ${R_FIRST[*]} | no-change ${R_NOCH[*]} | manifest ${R_MANI[*]} |" \
    "rsync-no-change ${RS_NOCH[*]} | rsync-change ${RS_CH[*]} | latency-200 ${LAT[200]} | latency-50 ${LAT[50]} | latency-0 ${LAT[0]} | restart ${R_RESTART[*]}"
