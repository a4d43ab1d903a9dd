#!/usr/bin/env bash
# What a large file's rescan costs per GiB, pass by pass (read, BLAKE3 over 16 KiB leaves,
# weak sums, BLAKE3 whole, SHA-256, and hamon's delta::index that runs them together): the figures
# behind "What the rescan costs" in docs/performance.md. No root, no network.
#
#   bench/sync/hashes.sh [MIB] [RUNS]      (default 1024 MiB of random bytes, 3 runs)
#
# The data file lives under /tmp/hamon-bench-hashes-* and is removed on exit.
set -euo pipefail
MIB=${1:-1024}
RUNS=${2:-3}
TOP=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/hamon-bench-hashes-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
head -c "$((MIB << 20))" /dev/urandom > "$WORK/data.bin"
cd "$TOP"
cargo build --release --locked --quiet --example hash-cost
echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
target/release/examples/hash-cost "$WORK/data.bin" "$RUNS"
