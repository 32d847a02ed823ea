"""The evaluation harness: drive any branch predictor or prefetcher over a trace and score it.

Every predictor in ncf -- the classical baselines here and the learned models later -- is scored
by these functions, so that MPKI and coverage always mean the same thing.

Branches (conditional branches are predicted; every branch updates history):
    MPKI = 1000 * mispredicted conditional branches / instructions in the trace
    accuracy = correct / conditional branches
    per static branch: executions, mispredictions
    hard branches: the static branches that cause the most mispredictions under TAGE-SC-L, taken
    in order until they cover ``share`` of all mispredictions (at most ``max_n``)

Prefetching (``cache.py`` has the cache model and the definitions of its counters):
    demand-miss MPKI without / with the prefetcher (L1D and L2, loads)
    accuracy = useful / issued prefetches; coverage = L1D load misses removed / misses without
    timeliness = share of useful prefetches that arrived in time (not late)
    delinquent loads: static loads with the most L1D misses without prefetching, covering ``share``

Next-delta prediction (the metric of Hashemi et al. 2018 and of the NCF paper): for each dynamic
load of a delinquent pc, the target is the delta in cache lines to the next access of the same pc;
a predictor may predict one delta or abstain. precision = correct / predicted, recall = correct /
all. ``next_line_deltas`` and ``stride_deltas`` give the baselines' predictions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cache import CacheConfig, coverage, simulate
from .streams import BranchStream, MemoryStream

NO_PREDICTION = np.iinfo(np.int64).min
LINE = 64


# --------------------------------------------------------------------------------------- branches
@dataclass
class BranchResult:
    predictor: str
    n_insn: int
    n_cond: int
    mispredictions: int
    pred: np.ndarray = field(repr=False)   # per conditional branch, in stream order
    conf: np.ndarray = field(repr=False)
    static_pc: np.ndarray = field(repr=False)
    static_exec: np.ndarray = field(repr=False)
    static_misp: np.ndarray = field(repr=False)

    @property
    def mpki(self) -> float:
        return 1000.0 * self.mispredictions / max(self.n_insn, 1)

    @property
    def accuracy(self) -> float:
        return 1.0 - self.mispredictions / max(self.n_cond, 1)

    def summary(self) -> dict:
        return {"predictor": self.predictor, "instructions": self.n_insn, "conditional_branches": self.n_cond,
                "mispredictions": self.mispredictions, "mpki": self.mpki, "accuracy": self.accuracy}


def score_branches(name: str, stream: BranchStream, pred: np.ndarray, conf: np.ndarray | None = None) -> BranchResult:
    """Score predictions for the conditional branches of ``stream`` (``pred`` in stream order,
    one per conditional branch). Learned models call this with their own predictions."""
    cond = stream.cond
    taken = stream.taken[cond]
    pred = np.asarray(pred, bool)
    if len(pred) != len(taken):
        raise ValueError(f"{name}: {len(pred)} predictions for {len(taken)} conditional branches")
    wrong = pred != taken
    pcs, inv = np.unique(stream.pc[cond], return_inverse=True)
    return BranchResult(name, stream.n_insn, len(taken), int(wrong.sum()), pred,
                        np.zeros(len(pred), np.uint8) if conf is None else np.asarray(conf, np.uint8), pcs,
                        np.bincount(inv, minlength=len(pcs)), np.bincount(inv, weights=wrong, minlength=len(pcs)).astype(np.int64))


def run_branch_predictor(predictor, stream: BranchStream) -> BranchResult:
    """Drive ``predictor`` (see branch_predictors.py) over every branch of ``stream``."""
    pred, conf = predictor.run(stream.pc, stream.target, stream.taken, stream.kind)
    cond = stream.cond
    return score_branches(predictor.name, stream, pred[cond], conf[cond])


def hard_branches(result: BranchResult, share: float = 0.5, max_n: int = 32) -> list[dict]:
    """Static branches with the most mispredictions, in order, until ``share`` is covered."""
    total = max(result.mispredictions, 1)
    out, covered = [], 0
    for i in top_sites(result.static_misp, share, max_n):
        covered += int(result.static_misp[i])
        out.append({"pc": int(result.static_pc[i]), "executions": int(result.static_exec[i]),
                    "mispredictions": int(result.static_misp[i]),
                    "accuracy": 1 - result.static_misp[i] / result.static_exec[i],
                    "share": result.static_misp[i] / total, "cumulative_share": covered / total})
    return out


def top_sites(events: np.ndarray, share: float, max_n: int) -> list[int]:
    """Indices of the (at most ``max_n``) entries with the most ``events`` (mispredictions, misses),
    most first, taken until they cover ``share`` of all events."""
    total = max(int(events.sum()), 1)
    out, covered = [], 0
    for i in np.argsort(-events, kind="stable")[:max_n]:
        if covered >= share * total or events[i] == 0:
            break
        covered += int(events[i])
        out.append(int(i))
    return out


class Tally:
    """Counts per key (a pc, a delta), summed chunk by chunk: ``keys`` sorted, ``counts`` [keys, columns]."""

    def __init__(self, dtype, columns: int = 1):
        self.keys = np.zeros(0, dtype)
        self.counts = np.zeros((0, columns), np.int64)

    def add(self, keys: np.ndarray, *columns: np.ndarray) -> None:
        """Add ``columns`` (one amount per key occurrence) to the counts; without columns, count occurrences."""
        cols = np.stack(columns or (np.ones(len(keys), np.int64),), 1).astype(np.int64)
        self.keys, inv = np.unique(np.concatenate([self.keys, keys]), return_inverse=True)
        both = np.concatenate([self.counts, cols])
        self.counts = np.stack([np.bincount(inv, both[:, c], len(self.keys)).astype(np.int64)
                                for c in range(both.shape[1])], 1)


# --------------------------------------------------------------------------------------- prefetch
@dataclass
class PrefetchResult:
    prefetcher: str
    n_insn: int
    stats: dict
    base_stats: dict
    coverage: float

    def summary(self) -> dict:
        s, b, n = self.stats, self.base_stats, max(self.n_insn, 1)
        useful = s["pf_useful"]
        return {"prefetcher": self.prefetcher, "instructions": self.n_insn, "loads": s["loads"],
                "l1_mpki_without": 1000 * b["l1_load_misses"] / n, "l1_mpki_with": 1000 * s["l1_load_misses"] / n,
                "l2_mpki_without": 1000 * b["l2_load_misses"] / n, "l2_mpki_with": 1000 * s["l2_load_misses"] / n,
                "issued": s["pf_issued"], "useful": useful,
                "accuracy": useful / s["pf_issued"] if s["pf_issued"] else float("nan"),
                "coverage": self.coverage,
                "timeliness": (useful - s["pf_late"]) / useful if useful else float("nan")}


def _cache_args(mem: MemoryStream):
    return mem.pc, mem.addr, mem.is_store, mem.idx


def run_prefetcher(name: str, mem: MemoryStream, config: CacheConfig = CacheConfig(), base=None, **params) -> PrefetchResult:
    """Run the cache model without and with prefetcher ``name``; ``base`` reuses a no-prefetch run."""
    base = base or simulate(*_cache_args(mem), prefetcher="none", config=config, n_insn=mem.n_insn)
    res = simulate(*_cache_args(mem), prefetcher=name, config=config, n_insn=mem.n_insn, **params)
    return PrefetchResult(name, mem.n_insn, res.stats(), base.stats(), coverage(base, res))


def delinquent_loads(mem: MemoryStream, base, share: float = 0.5, max_n: int = 32) -> list[dict]:
    """Static loads with the most L1D demand misses (no prefetching), until ``share`` is covered."""
    load = ~mem.is_store
    miss = load & ~base.l1_hit
    pcs, inv = np.unique(mem.pc[load], return_inverse=True)
    execs = np.bincount(inv, minlength=len(pcs))
    misses = np.bincount(inv, weights=miss[load], minlength=len(pcs)).astype(np.int64)
    total = max(int(miss.sum()), 1)
    out, covered = [], 0
    for i in top_sites(misses, share, max_n):
        covered += int(misses[i])
        out.append({"pc": int(pcs[i]), "executions": int(execs[i]), "l1_misses": int(misses[i]),
                    "miss_rate": misses[i] / execs[i], "share": misses[i] / total, "cumulative_share": covered / total})
    return out


# --------------------------------------------------------------------------------------- deltas
def next_deltas(mem: MemoryStream, pcs) -> tuple[np.ndarray, np.ndarray]:
    """For the loads of ``pcs``: (positions in ``mem``, delta in lines to the same pc's next access;
    NO_PREDICTION where there is no next access)."""
    sel = np.nonzero(~mem.is_store & np.isin(mem.pc, np.asarray(list(pcs), np.uint64)))[0]
    line = (mem.addr[sel] // LINE).astype(np.int64)
    pc = mem.pc[sel]
    delta = np.full(len(sel), NO_PREDICTION, np.int64)
    order = np.lexsort((sel, pc))  # by pc, then time
    same = pc[order][1:] == pc[order][:-1]
    d = line[order][1:] - line[order][:-1]
    delta[order[:-1][same]] = d[same]
    return sel, delta


def stride_deltas(mem: MemoryStream, sel: np.ndarray) -> np.ndarray:
    """IP-stride's rule: predict the last delta of this pc when it repeated the one before."""
    line = (mem.addr[sel] // LINE).astype(np.int64)
    pc = mem.pc[sel]
    pred = np.full(len(sel), NO_PREDICTION, np.int64)
    order = np.lexsort((sel, pc))
    lo, pco = line[order], pc[order]
    d = np.diff(lo)
    same = pco[1:] == pco[:-1]
    # at position k (k >= 2 within a pc): last delta d[k-1], the one before d[k-2]
    ok = same[1:] & same[:-1] & (d[1:] == d[:-1])
    pred[order[2:][ok]] = d[1:][ok]
    return pred


def next_line_deltas(sel: np.ndarray) -> np.ndarray:
    return np.ones(len(sel), np.int64)


def delta_scores(target: np.ndarray, pred: np.ndarray) -> dict:
    """Precision and recall of next-delta predictions (entries with no next access are left out)."""
    has = target != NO_PREDICTION
    t, p = target[has], pred[has]
    made = p != NO_PREDICTION
    correct = made & (p == t)
    return {"loads": int(has.sum()), "predicted": int(made.sum()), "correct": int(correct.sum()),
            "precision": correct.sum() / made.sum() if made.any() else float("nan"),
            "recall": correct.sum() / len(t) if len(t) else float("nan")}
