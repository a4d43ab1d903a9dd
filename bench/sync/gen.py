#!/usr/bin/env python3
"""Deterministic test tree for bench/sync: many small files in nested
directories plus a few large ones, from a fixed seed.

    gen.py DIR [SMALL_FILES] [LARGE_FILES] [LARGE_MIB]

Defaults: 9975 small files of 1-64 KiB in 20 x 10 directories, and 24 files
of 30 MiB under big/: 10 000 files, about 1 GiB. Prints files and bytes."""
import os
import random
import sys

root = sys.argv[1]
small = int(sys.argv[2]) if len(sys.argv) > 2 else 9975
large = int(sys.argv[3]) if len(sys.argv) > 3 else 24
large_mib = int(sys.argv[4]) if len(sys.argv) > 4 else 30
rng = random.Random(20261128)
total = 0
for i in range(small):
    d = os.path.join(root, f"d{i % 20:02d}", f"e{(i // 20) % 10:02d}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(1, 64) * 1024
    with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
        f.write(rng.randbytes(n))
    total += n
os.makedirs(os.path.join(root, "big"), exist_ok=True)
for i in range(large):
    n = large_mib << 20
    with open(os.path.join(root, "big", f"b{i:02d}.bin"), "wb") as f:
        for _ in range(large_mib):
            f.write(rng.randbytes(1 << 20))
    total += n
# A fixed 4 KiB file for the single-change test.
with open(os.path.join(root, "d07", "e03", "hot.conf"), "wb") as f:
    f.write(b"x" * 4096)
total += 4096
print(small + large + 1, total)
