"""Score learned models on a held-out input through the trace_eval harness.

Branches: every model's predictions replace TAGE-SC-L's on the hard branches of the test trace
(an override, as BranchNet does); where a model has no prediction (a site it was not trained on,
or the first ``lead`` instructions), TAGE-SC-L's stands. MPKI is computed by
``harness.score_branches`` over the whole trace, exactly as for the baselines. The hybrid overrides
only where a policy chosen on the training inputs (``hybrid_policy``: a threshold on the model's
confidence per site and TAGE-SC-L confidence level) says the model gains. The three-way hybrid
"fused+branchnet" chooses per site and confidence level among the fused GNN, BranchNet and their mean
(the override-all row is their mean), the same way.

Prefetching: the delta class a model predicts for access j of a delinquent load (the delta from
access j-1 to access j-1+k, k the site's prefetch distance, model/dataset.py) becomes a prefetch of
``line(j-1) + delta``, issued at the first memory access at or after both access j-1 and the snapshot
``i_j - lead`` (never earlier than the model could know it), and only if that is before access
j-1+k. The cache model then gives coverage, accuracy and the late fraction as for the baselines:
BOP and Berti with their own offsets and timeliness, and IP-stride with each delinquent load's
distance k (its other loads at distance 1). Predicting the "other" class means no prefetch.
"""
from __future__ import annotations

import numpy as np

from ncf.trace_eval.branch_predictors import COND, TageScL
from ncf.trace_eval.cache import CacheConfig, coverage, simulate
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.harness import LINE, score_branches
from ncf.trace_eval.streams import branch_stream, memory_stream

from .dataset import Dataset

MAX_PREFETCH_COLUMNS = 4


def hybrid_policy(candidates: dict[str, np.ndarray], taken: np.ndarray, tage_pred: np.ndarray,
                  tage_conf: np.ndarray, site_pc: np.ndarray) -> dict:
    """When the model overrides TAGE-SC-L, and with which of the ``candidates`` (p_taken per row, NaN = no
    prediction: one model, or several and their mean), chosen on labelled rows (the training inputs'
    validation split): per (site, TAGE-SC-L confidence level), the candidate and the lowest confidence
    |2p - 1| from which overriding gains the most there (the candidate right where TAGE-SC-L is wrong, minus
    the reverse; ties go to the first candidate), or no override when none gains. On those rows the hybrid
    is never worse than TAGE-SC-L.

    Returns {"thresholds": {"<pc hex>/<conf>": {"model": name, "threshold": t}}, "validation": counts of
    mispredictions}."""
    taken = np.asarray(taken).astype(bool)
    tage_pred, tage_conf = np.asarray(tage_pred).astype(bool), np.asarray(tage_conf, np.int64)
    site_pc = np.asarray(site_pc, np.uint64)
    cand = {m: np.asarray(p, np.float64) for m, p in candidates.items()}
    cells = sorted({(int(a), int(b)) for a, b in zip(site_pc, tage_conf)})
    thresholds, gained = {}, 0
    for pc, c in cells:
        best = None
        for m, p in cand.items():
            idx = np.nonzero(~np.isnan(p) & (site_pc == np.uint64(pc)) & (tage_conf == c))[0]
            if not len(idx):
                continue
            conf = np.abs(2 * p[idx] - 1)
            gain_row = ((p[idx] > 0.5) == taken[idx]).astype(np.int64) - (tage_pred[idx] == taken[idx])
            order = np.argsort(-conf, kind="stable")
            cs, gs = conf[order], np.cumsum(gain_row[order])
            last = np.r_[cs[1:] != cs[:-1], True]           # override every row with conf >= cs[k]
            k = np.nonzero(last)[0][np.argmax(gs[last])]
            if gs[k] > 0 and (best is None or gs[k] > best[2]):
                best = (m, float(cs[k]), int(gs[k]))
        if best:
            thresholds[f"{pc:#x}/{c}"] = {"model": best[0], "threshold": best[1]}
            gained += best[2]
    tage_misp = int((tage_pred != taken).sum())
    return {"thresholds": thresholds, "validation": {"samples": len(taken), "tage_mispredictions": tage_misp,
                                                     "hybrid_mispredictions": tage_misp - gained}}


def hybrid_prediction(policy: dict, candidates: dict[str, np.ndarray], tage_conf: np.ndarray,
                      site_pc: np.ndarray) -> np.ndarray:
    """The hybrid's p_taken per row (``hybrid_policy``): the chosen candidate's where it overrides
    TAGE-SC-L, NaN where TAGE-SC-L's prediction stands."""
    chosen = [policy["thresholds"].get(f"{int(a):#x}/{int(b)}") for a, b in zip(site_pc, tage_conf)]
    out = np.full(len(chosen), np.nan)
    for m, p in candidates.items():
        p = np.asarray(p, np.float64)
        t = np.array([r["threshold"] if r and r["model"] == m else np.inf for r in chosen], np.float64)
        use = ~np.isnan(p) & (np.abs(2 * p - 1) >= t)
        out[use] = p[use]
    return out


def override(p: np.ndarray, tage: np.ndarray) -> np.ndarray:
    """A model overriding TAGE-SC-L (``tage``: its directions): taken where ``p`` (p_taken) > 0.5, TAGE-SC-L's
    direction where the model makes no prediction (NaN)."""
    return np.where(np.isnan(p), tage, p > 0.5)


def evaluate_branches(ds: Dataset, predictions: dict[str, np.ndarray], policies: dict | None = None) -> list[dict]:
    """Rows: TAGE-SC-L alone, then each model overriding it on the hard branches: on all of them
    (as BranchNet is deployed), and (``*_hybrid``) where ``policies[name]`` (``hybrid_policy``, chosen
    on the training inputs, over the candidates of ``predictions`` it names) says so, with how often the
    hybrid's prediction differs from TAGE-SC-L's (``hybrid_changed``, a share of the hard-branch
    instances) and how often it is right then. Per site
    index (lists): ``site_instances``, ``site_mispredictions`` (``_hybrid``) and ``site_both_wrong`` (the
    model's override and TAGE-SC-L both wrong: what no choice between the two can recover).

    ``predictions[name]`` = p_taken per dataset row (NaN = no prediction)."""
    br = branch_stream(TraceReader(ds.meta["trace"]))
    tage_pred, _ = TageScL().run(br.pc, br.target, br.taken, br.kind)
    cond = br.kind == COND
    cond_idx = br.idx[cond].astype(np.int64)
    base = tage_pred[cond].astype(bool)
    a = ds.arrays
    rows = np.nonzero(np.asarray(a["taken"]) >= 0)[0]
    pos = np.searchsorted(cond_idx, np.asarray(a["idx"][rows], np.int64))
    if len(pos) and (pos.max() >= len(cond_idx) or not (cond_idx[pos] == np.asarray(a["idx"][rows])).all()):
        raise ValueError(f"{ds.path}: dataset rows do not match the branches of {ds.meta['trace']}")
    taken = np.asarray(a["taken"][rows]).astype(bool)
    tage_conf = np.asarray(a["tage_conf"][rows])
    site = np.asarray(a["site"][rows], np.int64)
    row_pc = np.asarray(ds.site_pc, np.uint64)[site]
    per_site = lambda m: np.bincount(site[m], minlength=len(ds.site_pc)).tolist()  # noqa: E731
    policies = policies or {}

    def score(name, p):
        final = base.copy()
        if p is not None:
            final[pos] = override(p, base[pos])
        wrong = final[pos] != taken
        return score_branches(name, br, final).mpki, int(wrong.sum()), wrong

    out = []
    for name, p in {"tage-sc-l": None, **predictions}.items():
        p = None if p is None else np.asarray(p, np.float64)[rows]
        mpki, hard_misp, wrong = score(name, p)
        row = {"model": name, "hard_branch_instances": len(rows), "hard_mispredictions": hard_misp,
               "hard_mpki": 1000 * hard_misp / br.n_insn, "hard_accuracy": 1 - hard_misp / max(len(rows), 1),
               "mpki": mpki, "site_instances": per_site(np.ones(len(rows), bool)),
               "site_mispredictions": per_site(wrong), "site_both_wrong": per_site(wrong & (base[pos] != taken))}
        if p is not None and name in policies:
            ph = hybrid_prediction(policies[name], {m: np.asarray(q, np.float64)[rows] for m, q in predictions.items()},
                                   tage_conf, row_pc)
            changed = override(ph, base[pos]) != base[pos]
            row["mpki_hybrid"], row["hard_mispredictions_hybrid"], wrong = score(name, ph)
            row["site_mispredictions_hybrid"] = per_site(wrong)
            row["hard_accuracy_hybrid"] = 1 - row["hard_mispredictions_hybrid"] / max(len(rows), 1)
            row["hybrid_changed"] = changed.sum() / max(len(rows), 1)
            row["hybrid_changed_right"] = float(((ph > 0.5) == taken)[changed].mean()) if changed.any() else None
        out.append(row)
    tage_hard = out[0]["hard_mispredictions"]
    for r in out:
        for key in ("", "_hybrid"):
            if f"hard_mispredictions{key}" in r:
                r[f"vs_tage_hard{key}"] = r[f"hard_mispredictions{key}"] / tage_hard - 1 if tage_hard else float("nan")
    return out


def evaluate_prefetch(ds: Dataset, predictions: dict[str, np.ndarray], config: CacheConfig = CacheConfig(),
                      baselines=("ip-stride", "bop", "berti"), beside=("bop", "berti"),
                      paired=None) -> list[dict]:
    """Rows: k-step delta accuracy/precision/recall on the delinquent loads, and coverage, accuracy and
    late fraction of each model driving the cache model, with the built-in ``baselines`` for scale
    (``distance``: the loads' k, for the models and IP-stride); then each model of ``paired`` (default:
    all) deployed beside each prefetcher of ``beside`` ("<model>+<prefetcher>"): the model's requests
    for its delinquent loads after the built-in's own for every access, as a learned branch predictor
    overrides TAGE-SC-L only on its hard branches.

    ``predictions[name]`` = delta class per dataset row (-1 = none)."""
    mem = memory_stream(TraceReader(ds.meta["trace"]))
    vocab = ds.meta["delta_vocabulary"]
    other = ds.meta["config"]["delta_classes"] - 1
    lead = ds.meta["config"]["lead"]
    a = ds.arrays
    rows = np.nonzero(np.asarray(a["delta"]) >= 0)[0]
    label = np.asarray(a["delta"][rows], np.int64)
    site_pc = np.asarray(ds.site_pc, np.uint64)[np.asarray(a["site"][rows], np.int64)]
    idx = np.asarray(a["idx"][rows], np.int64)
    distance = {int(pc, 16): k for pc, k in ds.meta["prefetch_distance"].items()}
    base = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, config=config, n_insn=mem.n_insn)
    loads = _loads(np.unique(site_pc), mem, distance, base)
    shown = "/".join(map(str, loads["distance"]))   # the distances of the scored loads
    prev_pos, target_pos = _access_positions(mem, loads, site_pc, idx)
    issue = np.maximum(prev_pos, np.searchsorted(mem.idx, idx - lead))
    out, composite = [], []
    for name in baselines:
        params = {"ip_distance": distance} if name == "ip-stride" else {}
        res = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, prefetcher=name, config=config, n_insn=mem.n_insn,
                       **params)
        out.append(_prefetch_row(name, shown if params else None, None, label, other, base, res, loads))
    for name, cls in predictions.items():
        cls = np.asarray(cls, np.int64)[rows]
        made = (cls >= 0) & (cls != other)
        ok = made & (issue < target_pos)
        delta = np.array([vocab[c] if 0 <= c < len(vocab) else 0 for c in cls], np.int64)
        target = ((mem.addr[prev_pos] // LINE).astype(np.int64) + delta) * LINE
        pf = np.zeros((len(mem), MAX_PREFETCH_COLUMNS), np.uint64)
        fill = np.zeros(len(mem), np.int64)
        for p, t in zip(issue[ok], target[ok]):
            if fill[p] < MAX_PREFETCH_COLUMNS and t > 0:
                pf[p, fill[p]] = t
                fill[p] += 1
        for kind in ("external", *(beside if paired is None or name in paired else ())):
            res = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, prefetcher=kind, prefetch_addr=pf,
                           config=config, n_insn=mem.n_insn)
            if kind == "external":
                out.append(_prefetch_row(name, shown, cls, label, other, base, res, loads))
            else:
                composite.append(_prefetch_row(f"{name}+{kind}", shown, None, label, other, base, res, loads))
    return out + composite


def _access_positions(mem, loads: dict, site_pc: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``mem`` of the access before each sample's (j-1) and of the one its load's distance k
    after that (j-1+k)."""
    prev, target = np.zeros(len(idx), np.int64), np.zeros(len(idx), np.int64)
    for n, (pc, k) in enumerate(zip(loads["pc"], loads["distance"])):
        q = np.nonzero(loads["of"] == n)[0]
        sel = np.nonzero(site_pc == np.uint64(int(pc, 16)))[0]
        j = np.searchsorted(mem.idx[q], idx[sel])
        prev[sel], target[sel] = q[j - 1], q[j - 1 + k]
    return prev, target


def _loads(pcs: np.ndarray, mem, distance: dict[int, int], base) -> dict:
    """The delinquent loads ``pcs`` (pc, prefetch distance k), per access of ``mem`` its load's index
    (``len(pcs)``: any other load; -1: a store), and the L1D misses per load without prefetching (``base``)."""
    of = np.where(mem.is_store, -1, len(pcs)).astype(np.int64)
    for k, pc in enumerate(pcs):
        of[(mem.pc == pc) & ~mem.is_store] = k
    loads = {"pc": [f"{int(pc):#x}" for pc in pcs], "distance": [distance[int(pc)] for pc in pcs], "of": of}
    return {**loads, "misses_without": _load_misses(base, loads)}


def _load_misses(res, loads: dict) -> np.ndarray:
    """L1D misses per delinquent load, then of all other loads (late prefetches are not misses)."""
    of = loads["of"]
    return np.bincount(of[(res.l1 == 0) & (of >= 0)], minlength=len(loads["pc"]) + 1)


def _prefetch_row(name, distance, cls, label, other, base, res, loads) -> dict:
    """Coverage, accuracy and lateness of one prefetcher (``res``) against no prefetching (``base``); per
    load (``load_misses``, ``load_misses_without``: each delinquent load of ``load_pc`` at its distance
    ``load_distance``, then all other loads) the L1D misses with and without it: where coverage is won and
    where it is not; with ``cls``, the delta accuracy on the delinquent loads' samples."""
    with_pf, without = _load_misses(res, loads), loads["misses_without"]
    row = {"model": name, "distance": distance, "coverage": coverage(base, res), "accuracy": res.accuracy,
           "late_fraction": res.late_fraction,
           "delinquent_coverage": 1 - with_pf[:-1].sum() / max(without[:-1].sum(), 1),
           "l1_mpki_with": res.l1_mpki, "l1_mpki_without": base.l1_mpki, "issued": res.pf_issued,
           "load_pc": loads["pc"], "load_distance": loads["distance"], "load_misses": with_pf.tolist(),
           "load_misses_without": without.tolist()}
    if cls is not None:
        made = (cls >= 0) & (cls != other)
        correct = made & (cls == label)
        row.update({"delta_accuracy": float((cls == label).mean()) if len(label) else float("nan"),
                    "delta_precision": correct.sum() / made.sum() if made.any() else float("nan"),
                    "delta_recall": correct.sum() / len(label) if len(label) else float("nan")})
    return row
