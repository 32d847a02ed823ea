"""Speed of the compiled branch predictors on a synthetic, realistic branch stream.

``synthetic_stream(n, seed)`` mixes loops (fixed and variable trip counts, backward branches),
correlated branches (an outcome repeated by a later branch), biased branches, an if-chain
depending on a data value, calls/returns and indirect jumps. ``bench_branch_predictors(n)``
times ``run`` of each C predictor on it and returns, per predictor, branches/s and accuracy.
"""
from __future__ import annotations

import time

import numpy as np

from . import branch_predictors as bp


def synthetic_stream(n: int = 100_000, seed: int = 0):
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


def bench_branch_predictors(n: int = 2_000_000, seed: int = 0) -> list[dict]:
    """Time each C predictor's run() on synthetic_stream(n); returns branches/s (all branches)."""
    stream = synthetic_stream(n, seed)
    cond = stream[3] == bp.COND
    out = []
    for name in ("bimodal", "gshare", "perceptron", "tage-sc-l"):
        p = bp.make_predictor(name)
        t0 = time.perf_counter()
        pred, _ = p.run(*stream)
        dt = time.perf_counter() - t0
        acc = float((pred[cond] == stream[2][cond]).mean())
        out.append(dict(predictor=name, branches=n, seconds=dt, branches_per_s=n / dt,
                        accuracy=acc, storage_bits=p.storage_bits()))
    return out


if __name__ == "__main__":
    for row in bench_branch_predictors():
        print(f"{row['predictor']:11s} {row['branches_per_s'] / 1e6:7.2f} M branches/s  "
              f"accuracy {row['accuracy']:.4f}  storage {row['storage_bits']} bits")
    print(bp.tage_sc_l_storage())
