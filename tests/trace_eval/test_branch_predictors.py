"""Branch-predictor baselines: the C core equals the Python references, and each predictor
learns what it should (and nothing on random outcomes)."""
from __future__ import annotations

import numpy as np
import pytest
from ncf.trace_eval import branch_predictors as bp
from ncf.trace_eval.synthetic import branch_stream as synthetic_stream

pytestmark = pytest.mark.usefixtures("native")

C_AND_REF = {"bimodal": (bp.Bimodal, bp.BimodalRef), "gshare": (bp.Gshare, bp.GshareRef),
             "perceptron": (bp.HashedPerceptron, bp.HashedPerceptronRef),
             "tage-sc-l": (bp.TageScL, bp.TageScLRef)}


def cond_stream(pcs, outcomes, targets=None):
    """Arrays for a stream of conditional branches (forward targets unless given)."""
    pcs = np.asarray(pcs, dtype=np.uint64)
    tg = pcs + np.uint64(0x40) if targets is None else np.asarray(targets, dtype=np.uint64)
    return pcs, tg, np.asarray(outcomes, dtype=bool), np.zeros(len(pcs), dtype=np.uint8)


def mixed_stream(n, seed=3):
    """Patterns + noise + calls/returns/indirect jumps (the bench's stream) with extra
    random-outcome branches mixed in."""
    pc, tg, tk, kd = synthetic_stream(n, seed)
    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < 0.05
    tk = np.where(noisy & (kd == bp.COND), rng.random(n) < 0.5, tk)
    return pc, tg, tk, kd


@pytest.mark.parametrize("name", list(C_AND_REF))
def test_c_core_matches_python_reference(name):
    n = 20_000
    stream = mixed_stream(n)
    c, ref = C_AND_REF[name][0](), C_AND_REF[name][1]()
    p1, c1 = c.run(*stream)
    p2, c2 = ref.run(*stream)
    cond = stream[3] == bp.COND
    assert cond.sum() > 0.7 * n and (stream[3] == bp.CALL).any() and (stream[3] == bp.IND_JUMP).any()
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)
    assert set(np.unique(c1[cond])) <= {0, 1, 2}
    assert not p1[~cond].any() and not c1[~cond].any()
    assert c.storage_bits() == ref.storage_bits()


def loop_stream(iterations=200, trip=30, seed=4):
    """A backward loop branch with ``trip`` iterations and 1-3 random unrelated branches per iteration."""
    rng = np.random.default_rng(seed)
    pcs, tgs, out = [], [], []
    for _ in range(iterations):
        for it in range(trip):
            for _ in range(int(rng.integers(1, 4))):
                pcs.append(0x500000 + 0x10 * int(rng.integers(0, 8)))
                tgs.append(0x500400)
                out.append(bool(rng.random() < 0.5))
            pcs.append(0x501000)
            tgs.append(0x500000)            # backward
            out.append(it < trip - 1)
    return cond_stream(pcs, out, tgs)


def check_tage_internals(stream) -> np.ndarray:
    """C == Python reference for TAGE-SC-L's internals (and for pred/conf, equal to ``run``'s) on
    ``stream``; each column means what its name says, checked against the predictions. The internals."""
    p1, c1, d1 = bp.TageScL().run_detail(*stream)
    p2, c2, d2 = bp.TageScLRef().run_detail(*stream)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)
    p0, c0 = bp.TageScL().run(*stream)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(c0, c1)
    cond = stream[3] == bp.COND
    assert not d1[~cond].any()
    d = {name: d1[cond, k] for k, name in enumerate(bp.TAGE_DETAIL_COLUMNS)}
    pred = p1[cond]
    bimodal = d["provider_bank"] == 0
    assert (d["provider_pred"] == (d["provider_ctr"] >= 0)).all()
    assert (d["provider_ctr"][bimodal] >= -2).all() and (d["provider_ctr"][bimodal] <= 1).all()
    assert (d["alt_pred"][bimodal] == d["provider_pred"][bimodal]).all() and not d["used_alt"][bimodal].any()
    assert ((d["alt_bank"] < d["provider_bank"]) | bimodal).all()
    assert (d["tage_pred"] == np.where(d["used_alt"] == 1, d["alt_pred"], d["provider_pred"])).all()
    assert (d["used_alt"] <= (np.abs(2 * d["provider_ctr"] + 1) == 1)).all()
    given = np.where(d["loop_used"] == 1, d["loop_pred"], d["tage_pred"])     # what SC is given
    assert (d["sc_flip"] == (pred != given)).all()
    assert (d["sc_flip"] <= (given != (d["sc_sum"] >= 0))).all()               # SC flips only towards its sign
    assert (d["loop_used"] <= d["loop_valid"]).all() and (d["loop_valid"] <= d["loop_hit"]).all()
    return d1[cond]


def test_tage_internals_of_the_c_core_equal_the_reference_on_synthetic_streams():
    mixed = check_tage_internals(mixed_stream(20_000, seed=11))
    loop = check_tage_internals(loop_stream())
    col = {name: k for k, name in enumerate(bp.TAGE_DETAIL_COLUMNS)}
    for name in ("used_alt", "sc_flip"):
        assert mixed[:, col[name]].any(), name
    assert len(np.unique(mixed[:, col["provider_bank"]])) > 5
    assert loop[:, col["loop_used"]].any()


def test_tage_internals_of_the_c_core_equal_the_reference_on_a_real_trace(bzip2_trace):
    from ncf.trace_eval.format import TraceReader
    from ncf.trace_eval.streams import branch_stream

    br = branch_stream(TraceReader(bzip2_trace))
    n = 25_000
    d = check_tage_internals((br.pc[:n], br.target[:n], br.taken[:n], br.kind[:n]))
    assert len(d) > 10_000 and len(np.unique(d[:, bp.TAGE_DETAIL_COLUMNS.index("provider_bank")])) > 5


def test_only_tage_sc_l_records_internals():
    stream = mixed_stream(100)
    for pred in (bp.Gshare(), bp.GshareRef()):
        with pytest.raises(ValueError, match="TAGE-SC-L|TageScL"):
            pred.run_detail(*stream)


@pytest.mark.parametrize("name", list(C_AND_REF))
def test_predict_update_one_at_a_time_equals_run_batch(name):
    stream = mixed_stream(4000, seed=5)
    batch, single = bp.make_predictor(name), bp.make_predictor(name)
    p1, c1 = batch.run(*stream)
    p2, c2 = bp.BranchPredictor.run(single, *stream)   # the generic predict/update loop
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)


def test_update_without_predict_predicts_internally():
    stream = mixed_stream(3000, seed=7)
    a, b = bp.TageScL(), bp.TageScL()
    for p, t, k, kind in zip(*stream):
        a.update(int(p), int(t), bool(k), int(kind))
        b.update(int(p), int(t), bool(k), int(kind))
    assert a.predict(0x401040) == b.predict(0x401040)


def test_bimodal_learns_biased_branch():
    rng = np.random.default_rng(0)
    out = rng.random(5000) < 0.95
    pred, conf = bp.Bimodal().run(*cond_stream([0x400100] * 5000, out))
    assert (pred[100:] == out[100:]).mean() > 0.93
    assert (conf[100:][out[100:]] == 2).mean() > 0.9


def test_gshare_learns_alternating_pattern():
    out = np.arange(4000) % 2 == 0
    stream = cond_stream([0x400200] * 4000, out)
    pred, _ = bp.Gshare().run(*stream)
    assert (pred[200:] == out[200:]).mean() > 0.99
    pred_b, _ = bp.Bimodal().run(*stream)
    assert (pred_b[200:] == out[200:]).mean() < 0.6


def test_perceptron_learns_long_history_correlation():
    """Blocks R, N1..N19, X: X repeats R's random outcome 20 branches later; N are random."""
    rng = np.random.default_rng(1)
    blocks = 10_000
    pcs, out = [], []
    for _ in range(blocks):
        r = bool(rng.random() < 0.5)
        pcs.append(0x400000)
        out.append(r)
        for k in range(19):
            pcs.append(0x401000 + 4 * k)
            out.append(bool(rng.random() < 0.5))
        pcs.append(0x402000)
        out.append(r)
    stream = cond_stream(pcs, out)
    x = np.asarray(pcs) == 0x402000
    late = np.arange(len(pcs)) > len(pcs) // 2
    pred, _ = bp.HashedPerceptron().run(*stream)
    assert (pred[x & late] == np.asarray(out)[x & late]).mean() > 0.9
    pred_g, _ = bp.Gshare(hist_len=12).run(*stream)
    assert (pred_g[x & late] == np.asarray(out)[x & late]).mean() < 0.65


def test_tage_learns_long_period_pattern():
    rng = np.random.default_rng(2)
    pattern = rng.random(40) < 0.5
    out = np.tile(pattern, 500)
    stream = cond_stream([0x400300] * len(out), out)
    pred, _ = bp.TageScL().run(*stream)
    assert (pred[10_000:] != out[10_000:]).mean() < 0.005
    pred_b, _ = bp.Bimodal().run(*stream)
    assert (pred_b[10_000:] != out[10_000:]).mean() > 0.2


def test_tage_loop_predictor_catches_fixed_trip_count_loops():
    """A backward loop branch with 30 iterations, 1-3 random unrelated branches per iteration."""
    stream = loop_stream(600)
    pcs, out = stream[0], stream[2]
    exit_ = (pcs == 0x501000) & ~out
    late = np.arange(len(pcs)) > len(pcs) // 2
    pred, conf = bp.TageScL().run(*stream)
    sel = exit_ & late
    assert (pred[sel] == np.asarray(out)[sel]).mean() > 0.95     # exit predicted not-taken
    assert (conf[sel] == 2).mean() > 0.9                          # by the (confident) loop predictor
    loop_iter = (np.asarray(pcs) == 0x501000) & late & ~exit_
    assert (pred[loop_iter]).mean() > 0.99
    pred_g, _ = bp.Gshare().run(*stream)
    assert (pred_g[sel] == np.asarray(out)[sel]).mean() < 0.5


def test_tage_sc_l_storage_is_64KB():
    table = bp.tage_sc_l_storage()
    bits = bp.TageScL().storage_bits()
    assert bits == table["total"] == bp.TageScLRef().storage_bits()
    assert 0.99 * bp.TAGE_SC_L_BUDGET_BITS <= bits <= bp.TAGE_SC_L_BUDGET_BITS
    assert table["tagged 13-36 (20x1K x (3+1+12))"] == 327_680
    assert table["loop"] == 1248
    m = bp.tage_history_lengths()
    assert m[1] == 6 and m[NH := bp.NHIST] == 3000 and all(m[i] <= m[i + 1] for i in range(1, NH))
    assert sum(bp.tage_noskip()) == 21


@pytest.mark.parametrize("name", list(C_AND_REF))
def test_every_predictor_is_near_50_percent_on_random_stream(name):
    rng = np.random.default_rng(9)
    n = 20_000
    pcs = 0x400000 + 4 * rng.integers(0, 200, n)
    out = rng.random(n) < 0.5
    pred, _ = bp.make_predictor(name).run(*cond_stream(pcs, out))
    assert 0.46 < (pred == out).mean() < 0.54


def test_make_predictor_names_and_errors():
    for name in C_AND_REF:
        assert bp.make_predictor(name).name == name
    assert bp.make_predictor("gshare", hist_len=20, log_size=12).storage_bits() == 2 * 4096 + 20
    with pytest.raises(ValueError):
        bp.make_predictor("neural")


def test_missing_library_gives_make_hint(monkeypatch, tmp_path):
    from ncf.trace_eval import native_lib

    monkeypatch.setattr(native_lib, "NATIVE", tmp_path)
    monkeypatch.setattr(bp, "_lib", None)
    with pytest.raises(RuntimeError, match="make native"):
        bp.Bimodal()
