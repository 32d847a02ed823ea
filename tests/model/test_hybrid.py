"""The hybrid's override policy: chosen on labelled rows, it is never worse than TAGE-SC-L there, it
overrides where the model is confidently right, and never where the model has nothing to add; with
several candidates (the three-way hybrid) it takes, per site and confidence level, the one that gains
most, so it is never worse on those rows than the hybrid of any one of them."""
from __future__ import annotations

import numpy as np
import pytest

from ncf.model.evaluate import hybrid_policy, hybrid_prediction


def _misp(policy, p, taken, tage, conf, pcs) -> int:
    ph = hybrid_prediction(policy, p if isinstance(p, dict) else {"m": p}, conf, pcs)
    return int((np.where(np.isnan(ph), tage, ph > 0.5) != taken).sum())


def test_never_worse_than_tage_on_the_rows_it_was_chosen_on():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 400))
        taken = rng.random(n) < 0.6
        tage = np.where(rng.random(n) < 0.8, taken, ~taken)
        p = np.clip(np.where(rng.random(n) < rng.random(), taken, rng.random(n)) + rng.normal(0, 0.2, n), 0, 1)
        p[rng.random(n) < 0.1] = np.nan                        # rows without a prediction keep TAGE-SC-L's
        conf, pcs = rng.integers(0, 3, n), rng.choice(np.array([0x401000, 0x402000], np.uint64), n)
        pol = hybrid_policy({"m": p}, taken, tage, conf, pcs)
        got = _misp(pol, p, taken, tage, conf, pcs)
        assert got == pol["validation"]["hybrid_mispredictions"] <= pol["validation"]["tage_mispredictions"]
        assert pol["validation"]["tage_mispredictions"] == int((tage != taken).sum())


def test_overrides_where_the_model_is_confidently_right_and_tage_is_not():
    n = 1000
    taken = np.arange(n) % 3 == 0
    pcs = np.where(np.arange(n) < 500, 0x401000, 0x402000).astype(np.uint64)
    conf = np.zeros(n, np.int64)
    tage = np.where(pcs == 0x401000, ~taken, taken)            # TAGE-SC-L always wrong on site A, right on B
    p = np.where(taken, 0.95, 0.05)                            # the model is confidently right everywhere
    pol = hybrid_policy({"m": p}, taken, tage, conf, pcs)
    assert set(pol["thresholds"]) == {"0x401000/0"}            # nothing to gain on site B
    assert _misp(pol, p, taken, tage, conf, pcs) == 0
    echo = np.where(tage, 0.99, 0.01)                          # a model that adds nothing never overrides
    assert hybrid_policy({"m": echo}, taken, tage, conf, pcs)["thresholds"] == {}
    # low-confidence guesses are left to TAGE-SC-L when they would lose there
    p2 = np.where(np.arange(n) % 2 == 0, np.where(taken, 0.9, 0.1), np.where(taken, 0.45, 0.55))
    pol2 = hybrid_policy({"m": p2}, taken, tage, conf, pcs)
    assert pol2["thresholds"]["0x401000/0"] == {"model": "m", "threshold": pytest.approx(0.8)}


def test_several_candidates_take_the_best_per_cell_and_never_lose_to_one_of_them():
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(50, 600))
        taken = rng.random(n) < 0.5
        tage = np.where(rng.random(n) < 0.85, taken, ~taken)
        conf, pcs = rng.integers(0, 3, n), rng.choice(np.array([0x401000, 0x402000, 0x403000], np.uint64), n)
        cands = {}
        for m in ("a", "b"):
            good = rng.random(n) < rng.random()
            cands[m] = np.clip(np.where(good, taken, rng.random(n)) + rng.normal(0, 0.2, n), 0, 1)
            cands[m][rng.random(n) < 0.05] = np.nan
        cands["mean"] = (cands["a"] + cands["b"]) / 2
        pol = hybrid_policy(cands, taken, tage, conf, pcs)
        got = _misp(pol, cands, taken, tage, conf, pcs)
        assert got == pol["validation"]["hybrid_mispredictions"] <= pol["validation"]["tage_mispredictions"]
        for m, p in cands.items():
            assert got <= hybrid_policy({m: p}, taken, tage, conf, pcs)["validation"]["hybrid_mispredictions"]
    # each cell goes to the candidate that is right there
    taken = np.arange(400) % 2 == 0
    pcs = np.where(np.arange(400) < 200, 0x401000, 0x402000).astype(np.uint64)
    tage, conf = ~taken, np.zeros(400, np.int64)
    right, coin = np.where(taken, 0.9, 0.1), np.full(400, 0.5)
    cands = {"a": np.where(pcs == 0x401000, right, coin), "b": np.where(pcs == 0x402000, right, coin)}
    pol = hybrid_policy(cands, taken, tage, conf, pcs)
    assert {k: v["model"] for k, v in pol["thresholds"].items()} == {"0x401000/0": "a", "0x402000/0": "b"}
    assert _misp(pol, cands, taken, tage, conf, pcs) == 0
