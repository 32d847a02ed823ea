"""Synthetic, program-like streams for the baselines' tests and benchmarks (no trace needed).

``branch_stream(n, seed)`` mixes loops (fixed and variable trip counts, backward branches),
correlated branches (an outcome repeated by a later branch), biased branches, an if-chain
depending on a data value, calls/returns and indirect jumps.

``memory_stream(n, seed)`` imitates a program's data accesses: 60 % from 16 strided loops (per-IP
strides of -2..+8 lines or small byte strides, each sweeping its own array and wrapping: 4 MiB for
half of them, 64 KiB for the other half, so there is reuse at L2 scale), 15 % random accesses over
64 MiB (pointer chasing / hashing), 25 % to a hot 16 KiB region (stack, locals); 25 % of all
accesses are stores; about 2.5 instructions per access.
"""
from __future__ import annotations

import numpy as np

from . import branch_predictors as bp


def branch_stream(n: int = 100_000, seed: int = 0):
    """(pc u64, target u64, taken bool, kind u8) arrays of length n."""
    rng = np.random.default_rng(seed)
    pc: list[int] = []
    tg: list[int] = []
    tk: list[bool] = []
    kd: list[int] = []

    def br(p, t, taken, kind=bp.COND):
        pc.append(p)
        tg.append(t)
        tk.append(bool(taken))
        kd.append(kind)

    fn = 0x401000
    rnd = rng.random(n)            # pre-drawn randoms (cheap)
    ints = rng.integers(0, 1 << 16, n)
    k = 0
    while len(pc) < n:
        r, v = rnd[k % n], int(ints[k % n])
        k += 1
        if r < 0.25:      # call a function with a fixed-trip inner loop
            site = 0x400100 + 0x40 * (v % 8)
            br(site, fn, 1, bp.CALL)
            trip = 6 + (v % 3) * 5
            for j in range(trip):
                br(fn + 0x10, fn + 0x30, j % 3 == 0)                          # periodic if
                if v & 0x100:
                    br(fn + 0x20, fn + 0x30, (v >> 9) & 1)                    # per-call value
                br(fn + 0x40, fn + 0x8, j < trip - 1)                         # loop back-edge
            br(fn + 0x50, site + 5, 1, bp.RET)
        elif r < 0.45:    # correlated pair: the second branch repeats the first one's outcome
            b = v & 1
            base = 0x410000 + 0x100 * (v % 16)
            br(base, base + 0x40, b)
            br(base + 0x10, base + 0x80, v >> 1 & 1)
            br(base + 0x20, base + 0x90, b)
        elif r < 0.75:    # biased branches
            s = v % 64
            br(0x420000 + 8 * s, 0x430000, rnd[(k * 7) % n] < (0.97 if s % 2 else 0.05))
        elif r < 0.85:    # if-chain on a small value
            x = v % 4
            for c in range(4):
                br(0x440000 + 0x10 * c, 0x440100, x == c)
                if x == c:
                    break
        elif r < 0.93:    # indirect jump (switch) then a direct jump
            br(0x450000, 0x451000 + 0x40 * (v % 5), 1, bp.IND_JUMP)
            br(0x451000 + 0x40 * (v % 5) + 0x20, 0x452000, 1, bp.JUMP)
        else:             # unpredictable branch
            br(0x460000, 0x460100, v & 1)
    return (np.array(pc[:n], dtype=np.uint64), np.array(tg[:n], dtype=np.uint64),
            np.array(tk[:n], dtype=bool), np.array(kd[:n], dtype=np.uint8))


def memory_stream(n: int, seed: int = 0):
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
