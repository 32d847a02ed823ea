"""Speed of the cache model: accesses/s of :func:`ncf.trace_eval.cache.simulate` per prefetcher.

Target: >= 2 M accesses/s for every built-in prefetcher with the default configuration (L1D
48 KiB/12-way, L2 2 MiB/16-way). The stream (:func:`synthetic_stream`) imitates a program's
data accesses: 60 % from 16 strided loops (per-IP strides of -2..+8 lines or small byte strides,
each sweeping its own array and wrapping: 4 MiB for half of them, 64 KiB for the other half, so
there is reuse at L2 scale), 15 % random
accesses over 64 MiB (pointer chasing / hashing), 25 % to a hot 16 KiB region (stack, locals);
25 % of all accesses are stores; about 2.5 instructions per access. The time includes the
wrapper's conversions (whole :func:`simulate` call), not the one-time library build.
"""
from __future__ import annotations

import time

import numpy as np

from .cache import CacheConfig, coverage, simulate

TARGET = 2e6


def synthetic_stream(n: int, seed: int = 0):
    """(pc, addr, is_store, insn_idx) arrays of a mixed, program-like access stream."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.60, 0.15, 0.25])
    pc = np.empty(n, dtype=np.uint64)
    addr = np.empty(n, dtype=np.uint64)

    idx = np.nonzero(kind == 0)[0]
    loop = rng.integers(0, 16, size=len(idx))
    strides = np.array([64, 128, 192, -64, 8, 16, 256, 512, 64, -128, 4, 320, 64, 128, 8, 448])
    for k in range(16):
        j = idx[loop == k]
        region = 4 << 20 if k % 2 == 0 else 64 << 10
        off = (np.arange(len(j), dtype=np.int64) * strides[k]) % region
        addr[j] = (0x10000000 + k * region + off).astype(np.uint64)
        pc[j] = 0x401000 + 0x13 * k

    j = np.nonzero(kind == 1)[0]
    addr[j] = (0x80000000 + rng.integers(0, 64 << 20, size=len(j)) & ~7).astype(np.uint64)
    pc[j] = 0x402000 + 7 * rng.integers(0, 8, size=len(j)).astype(np.uint64)

    j = np.nonzero(kind == 2)[0]
    addr[j] = (0x7FFF0000 + rng.integers(0, 16 << 10, size=len(j)) & ~7).astype(np.uint64)
    pc[j] = 0x403000 + 5 * rng.integers(0, 32, size=len(j)).astype(np.uint64)

    is_store = (rng.random(n) < 0.25).astype(np.uint8)
    insn_idx = np.cumsum(rng.integers(1, 5, size=n)).astype(np.uint64)
    return pc, addr, is_store, insn_idx


def bench_cache(n: int = 5_000_000, config: CacheConfig = CacheConfig(), seed: int = 0,
                prefetchers=("none", "next-line", "ip-stride", "bop")) -> list[dict]:
    pc, addr, is_store, insn_idx = synthetic_stream(n, seed)
    n_insn = int(insn_idx[-1]) + 1
    simulate(pc[:1000], addr[:1000], is_store[:1000], insn_idx[:1000])  # build + load the library
    rows, base = [], None
    for pf in prefetchers:
        t0 = time.perf_counter()
        r = simulate(pc, addr, is_store, insn_idx, pf, config, n_insn=n_insn)
        dt = time.perf_counter() - t0
        if pf == "none":
            base = r
        rows.append({"prefetcher": pf, "accesses": n, "seconds": round(dt, 3),
                     "M_accesses_s": round(n / dt / 1e6, 2), "x_target": round(n / dt / TARGET, 2),
                     "l1_mpki": round(r.l1_mpki, 2), "l2_mpki": round(r.l2_mpki, 2),
                     "accuracy": round(r.accuracy, 3),
                     "coverage": round(coverage(base, r), 3) if base is not None else None,
                     "late_fraction": round(r.late_fraction, 3)})
    return rows


if __name__ == "__main__":
    for row in bench_cache():
        print(row)
