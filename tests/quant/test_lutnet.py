"""LUT nets (quant/lutnet.py): the truth tables are the trained Brevitas model, on real held-out samples; the
inputs come from the training rows only; bad configurations are refused plainly."""
from __future__ import annotations

import numpy as np
import pytest

from ncf.io import UsageError
from ncf.quant.lutnet import (LutNetConfig, enumerate_tables, lutnet_logits, predict_codes, rank_inputs,
                              site_features, table_forward, train_lutnet)

from ..conftest import LUTNET_HELDOUT, LUTNET_TEST


def test_truth_tables_equal_the_brevitas_model_on_heldout_samples(hw_lutnet):
    """Every neuron enumerated into its table: the lookups give the trained model's logit code on every
    held-out sample (and the tables are not trivial: the codes vary, and on the rows it learned from the net
    beats always predicting the majority direction). Held-out accuracy is the study's figure, not this
    test's: with this small a budget it varies with the seed and the CPU's rounding (0.544 to 0.736 over
    seeds 0-4 on quicksort, whose held-out majority rate is 0.577)."""
    from ncf.model.dataset import Dataset
    from ncf.studies.lutnet import site_split

    cfg = LutNetConfig(**LUTNET_TEST)
    train_ds, test_ds = Dataset(hw_lutnet["train"]), Dataset(hw_lutnet["test"])
    site, _, rows, held = site_split(train_ds, test_ds, hw_lutnet["site"], cfg, LUTNET_HELDOUT)
    net = train_lutnet(site_features(train_ds, rows), np.asarray(train_ds.arrays["taken"][rows]), cfg)
    tables = enumerate_tables(net)
    x = site_features(test_ds, held)
    model, table = predict_codes(net, x), lutnet_logits(tables, x)
    print(f"tables == Brevitas model on {int((model == table).sum())} / {len(held)} held-out samples")
    assert np.array_equal(model, table)
    assert len(np.unique(table)) > 1
    y = np.asarray(train_ds.arrays["taken"][rows])
    assert ((lutnet_logits(tables, site_features(train_ds, rows)) > 0) == y).mean() > max(y.mean(), 1 - y.mean())
    assert [t["table"].shape for t in tables["layers"]] == [(36, 64), (6, 64), (1, 64)]
    assert table_forward(tables, x[:, tables["inputs"]]).shape == (len(held), 1)


def test_inputs_are_ranked_on_the_rows_given():
    """The first layer's candidates: the columns that vary, by mutual information with the label on the given
    rows only (a column that predicts the label there ranks first; one that is constant there is left out)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.integers(0, 2, (400, 5))
    x[:, 3] = y
    x[:, 1] = 0
    assert rank_inputs(x, y, 2)[0] == 3
    assert 1 not in rank_inputs(x, y, 5)


@pytest.mark.parametrize("kw, words", [
    ({"layers": [8, 2]}, "the last 1"),
    ({"layers": [8, 4, 1], "fan_in": [6, 3]}, "one per layer"),
    ({"fan_in": [7], "bits": 2}, "at most 12"),
    ({"layers": [4, 1], "fan_in": [6]}, "fan-in 6 > the 4 neurons"),
    ({"bits": 0}, "bits in 1..4"),
    ({"inputs": 4}, "fan-in 6 > the 4 inputs"),
])
def test_bad_configurations_are_refused(kw, words):
    with pytest.raises(UsageError, match=words):
        LutNetConfig(**kw)
