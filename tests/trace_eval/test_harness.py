"""The harness: scoring, hard branches, delinquent loads and next-delta metrics on streams whose
answers are known, and the baseline report on a real trace."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ncf.cli import main
from ncf.trace_eval.baseline import evaluate
from ncf.trace_eval.branch_predictors import COND, JUMP
from ncf.trace_eval.harness import (NO_PREDICTION, delta_scores, hard_branches, next_deltas, score_branches,
                                    stride_deltas)
from ncf.trace_eval.streams import BranchStream, MemoryStream


def _stream(pcs, taken, kinds=None, n_insn=1000):
    n = len(pcs)
    kinds = np.full(n, COND, np.uint8) if kinds is None else np.asarray(kinds, np.uint8)
    return BranchStream(np.arange(n, dtype=np.uint64), np.asarray(pcs, np.uint64), np.zeros(n, np.uint64),
                        np.asarray(taken, bool), kinds, n_insn)


def test_mpki_counts_only_conditional_mispredictions():
    s = _stream([1, 2, 3, 4], [True, False, True, True], kinds=[COND, COND, JUMP, COND], n_insn=2000)
    r = score_branches("x", s, pred=[True, True, False])  # 2nd and 4th conditionals wrong
    assert (r.n_cond, r.mispredictions, r.mpki, r.accuracy) == (3, 2, 1.0, pytest.approx(1 / 3))
    with pytest.raises(ValueError, match="3 conditional branches"):
        score_branches("x", s, pred=[True])


def test_hard_branches_cover_the_stated_share_in_order():
    pcs = [10] * 50 + [20] * 30 + [30] * 20
    taken = [True] * 100
    r = score_branches("t", _stream(pcs, taken), pred=[False] * 100)  # 50, 30, 20 mispredictions
    hard = hard_branches(r, share=0.6)
    assert [h["pc"] for h in hard] == [10, 20]
    assert hard[-1]["cumulative_share"] == pytest.approx(0.8)
    assert hard_branches(r, share=0.5)[-1]["cumulative_share"] == pytest.approx(0.5)


def test_next_delta_metrics_on_a_strided_load():
    n = 200
    pc = np.full(n, 0x400, np.uint64)
    addr = (np.arange(n, dtype=np.uint64) * 3 * 64) + 0x10000   # stride of 3 lines
    mem = MemoryStream(np.arange(n, dtype=np.uint64), pc, addr, np.full(n, 8, np.uint8), np.zeros(n, bool), n)
    sel, target = next_deltas(mem, [0x400])
    assert (target[:-1] == 3).all() and target[-1] == NO_PREDICTION
    s = delta_scores(target, stride_deltas(mem, sel))
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx((n - 3) / (n - 1))
    assert delta_scores(target, np.ones(n, np.int64))["precision"] == 0.0


def test_baselines_on_a_real_trace(bzip2_trace):
    r = evaluate(bzip2_trace)
    mpki = {b["predictor"]: b["mpki"] for b in r["branch"]}
    assert mpki["tage-sc-l"] < mpki["bimodal"]
    assert r["hard_branch_share"] >= 0.5 and 1 <= len(r["hard_branches"]) <= 32
    assert {p["prefetcher"] for p in r["prefetch"]} == {"next-line", "ip-stride", "bop", "berti"}
    for p in r["prefetch"]:
        assert p["l1_mpki_without"] > 0 and -1 <= p["coverage"] <= 1
    assert r["delinquent_share"] >= 0.5
    assert [d["predictor"] for d in r["next_delta"]] == ["next-line", "ip-stride"]
    json.dumps(r)  # JSON-ready


def test_baseline_cli_prints_a_table_and_writes_json(bzip2_trace, tmp_path, capsys):
    assert main(["baseline", "--trace", str(bzip2_trace), "--predictor", "gshare", "tage-sc-l",
                 "--prefetcher", "ip-stride", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| tage-sc-l |" in out and "| ip-stride |" in out and "hard branches:" in out
    data = json.loads((tmp_path / "bzip2-0.json").read_text())
    assert [b["predictor"] for b in data["branch"]] == ["gshare", "tage-sc-l"]
