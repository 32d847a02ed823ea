"""The learned history-only baselines (ncf.model.baselines) on synthetic histories with a known answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ncf.model.baselines import BIG_SLICES, BranchNet, DeltaLSTM, predict, train_classifier

PC_BITS = 8          # small pc-hash space keeps the embedding (and the test) small
HISTORY = 128
X = 77               # the pc hash of the branch whose direction decides the outcome


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster than two, and immune to other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def deep_correlation(m: int, seed: int, depth=(95, 106)):
    """Branch samples whose outcome is the direction of branch X, found 95..105 positions back.

    Every other history slot holds a random other branch with a random direction, so nothing
    within the last ~95 branches carries any information."""
    rng = np.random.default_rng(seed)
    pc = rng.integers(0, 2 ** PC_BITS - 1, size=(m, HISTORY))
    pc[pc >= X] += 1                                          # X appears only where planted
    d = rng.integers(0, 2, size=(m, HISTORY)).astype(np.uint8)
    back = rng.integers(*depth, size=m)
    rows = np.arange(m)
    pc[rows, HISTORY - 1 - back] = X
    return pc, d, d[rows, HISTORY - 1 - back].astype(np.int64)


def gshare_accuracy(pc, d, taken, history_bits=16, table_bits=12) -> float:
    """A tiny gshare (2-bit counters indexed by pc ⊕ the last 16 directions), run over the samples
    in order: what a classic table predictor makes of the same branch."""
    table = np.full(1 << table_bits, 2)
    mask = (1 << table_bits) - 1
    weights = 1 << np.arange(history_bits)
    right = 0
    for i in range(len(taken)):
        ghr = int(d[i, -history_bits:] @ weights[::-1])
        j = (ghr ^ 0x5A5) & mask            # one static branch: a fixed pc folded in
        right += int((table[j] >= 2) == taken[i])
        table[j] = min(3, table[j] + 1) if taken[i] else max(0, table[j] - 1)
    return right / len(taken)


def fit_and_score(model, inputs, labels, held_out: int, **kw) -> float:
    """Train on all but the last ``held_out`` samples, return accuracy on those later samples."""
    train = tuple(a[:-held_out] for a in inputs)
    train_classifier(model, train, labels[:-held_out], progress=False, **kw)
    return float((predict(model, tuple(a[-held_out:] for a in inputs)) == labels[-held_out:]).mean())


def tokens(pc, d):
    return (pc << 1 | d).astype(np.int16)


def small_branchnet() -> BranchNet:
    """The published shape's structure (geometric slices, 12 pooled windows each) at test size."""
    return BranchNet(slices=((32, 2), (64, 4), (128, 8)), pc_bits=PC_BITS, embed=16, channels=16, hidden=(32,))


def test_branchnet_has_the_published_shape():
    m = BranchNet()
    assert m.slices == BIG_SLICES and m.history == 582 and m.windows == (12,) * 5
    assert len(m.embeddings) == len(m.convs) == 5                 # per-slice embedding and convolution
    n = sum(p.numel() for p in m.parameters())
    assert 1.6e6 < n < 1.62e6
    x = torch.randint(0, 2 ** 13, (3, 582))
    assert m(x).shape == (3,)
    y = x.clone()
    y[1, 0] = (x[1, 0] + 1) % 2 ** 13                              # the oldest branch of sample 1 changes ...
    m.eval()
    out_x, out_y = m(x), m(y)
    assert out_x[0] == out_y[0] and out_x[2] == out_y[2]          # ... and no other sample's prediction
    with pytest.raises(ValueError, match="wants 582"):
        m(x[:, :100])


def test_branchnet_learns_a_correlation_deep_in_history():
    pc, d, taken = deep_correlation(3000, seed=1)
    assert 0.45 < gshare_accuracy(pc, d, taken) < 0.55       # out of reach of a 16-branch history
    torch.manual_seed(0)
    model = small_branchnet()
    acc = fit_and_score(model, (tokens(pc, d),), taken, held_out=500, epochs=12, batch=64, lr=3e-3, patience=4)
    assert acc > 0.95


def test_branchnet_is_at_chance_on_random_outcomes():
    pc, d, _ = deep_correlation(2000, seed=2)
    taken = np.random.default_rng(3).integers(0, 2, size=len(pc))
    torch.manual_seed(0)
    model = small_branchnet()
    acc = fit_and_score(model, (tokens(pc, d),), taken, held_out=600, epochs=6, batch=64, lr=3e-3)
    assert 0.42 < acc < 0.58


def delta_stream(pattern, length: int, history: int, n_classes: int, site: int):
    """Samples of one static load whose deltas repeat ``pattern``: the history of the last
    ``history`` delta classes (padding id ``n_classes`` before the first access) → next class."""
    deltas = np.array([pattern[t % len(pattern)] for t in range(length)])
    padded = np.concatenate([np.full(history, n_classes), deltas])
    dhist = np.stack([padded[t:t + history] for t in range(length)])
    return dhist, np.full(length, site), deltas


def interleave(*streams):
    """Merge per-site streams of equal length into one time-ordered sample set (round robin)."""
    return tuple(np.stack(parts, axis=1).reshape(-1, *parts[0].shape[1:]) for parts in zip(*streams))


def test_delta_lstm_learns_a_repeating_delta_pattern():
    # period 3 with a repeated delta: after a 1 comes either 1 or 5, so one step of history is
    # not enough — the LSTM has to count where in the period it is.
    C = 16
    dh, site, y = delta_stream((1, 1, 5), 1500, history=16, n_classes=C, site=0)
    torch.manual_seed(0)
    model = DeltaLSTM(n_sites=1, n_classes=C)
    assert fit_and_score(model, (dh, site), y, held_out=300, epochs=15, batch=64, lr=1e-2) > 0.95


def test_delta_lstm_separates_sites():
    # With one step of history the two loads look identical (1 → 2 in one, 1 → 3 in the other):
    # only the site embedding tells them apart; a site-blind model is capped at 50%.
    C = 16
    dh, site, y = interleave(delta_stream((1, 2, 3), 900, history=1, n_classes=C, site=0),
                             delta_stream((1, 3, 2), 900, history=1, n_classes=C, site=1))
    torch.manual_seed(0)
    model = DeltaLSTM(n_sites=2, n_classes=C)
    held = 400
    train_classifier(model, (dh[:-held], site[:-held]), y[:-held], epochs=15, batch=64, lr=1e-2, progress=False)
    pred = predict(model, (dh[-held:], site[-held:]))
    for s in (0, 1):
        mine = site[-held:] == s
        assert (pred[mine] == y[-held:][mine]).mean() > 0.95
    same_history = np.array([[1], [1]])
    assert list(predict(model, (same_history, np.array([0, 1])))) == [2, 3]


def test_training_is_deterministic_with_a_seed():
    dh, site, y = delta_stream((1, 1, 5), 400, history=8, n_classes=8, site=0)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(0)                                  # same initial weights every time
        model = DeltaLSTM(n_sites=1, n_classes=8, embed=8, hidden=16)
        hist = train_classifier(model, (dh, site), y, epochs=3, batch=32, lr=1e-2, seed=seed, progress=False)
        runs.append((hist, [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2), (h3, _) = runs
    assert h1 == h2
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert h1["train_loss"] != h3["train_loss"]               # the seed does drive the shuffle


def test_validation_split_is_by_time():
    # Uninformative inputs; the first 90% of the samples are class 0, the last 10% class 1. With a
    # split by time the model only ever sees class 0 and scores 0 on validation; any shuffled
    # split would put class 0 in validation and score ~90%.
    n = 1000
    rng = np.random.default_rng(0)
    pc = rng.integers(0, 16, size=(n, 16))
    d = rng.integers(0, 2, size=(n, 16)).astype(np.uint8)
    y = (np.arange(n) >= 900).astype(np.int64)
    torch.manual_seed(0)
    model = BranchNet(slices=((16, 2),), pc_bits=4, embed=4, channels=4, conv_width=3, hidden=(8,))
    hist = train_classifier(model, (tokens(pc, d),), y, epochs=3, batch=100, lr=1e-2, progress=False)
    assert (hist["val_start"], hist["n_train"], hist["n_val"]) == (900, 900, 100)
    assert max(hist["val_acc"]) < 0.05


def test_lookup_table_convolution_equals_embedding_and_convolution():
    """Mini-BranchNet's tables: the kernel position k's table is the embedding times W_k (+ the bias
    once), so the lut form computes exactly the embedding + convolution model."""
    torch.manual_seed(0)
    kw = dict(slices=((16, 2), (32, 4)), pc_bits=5, embed=12, channels=(3, 4), conv_width=3, hidden=(8,))
    ref, lut = BranchNet(**kw), BranchNet(**kw, lut=True)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(("embeddings", "convs"))}
    for s, (emb, conv) in enumerate(zip(ref.embeddings, ref.convs)):
        tables = torch.einsum("ve,cek->vkc", emb.weight, conv.weight)     # [V, K, C]
        tables[:, 0] += conv.bias
        state[f"embeddings.{s}.weight"] = tables.reshape(len(tables), -1)
    lut.load_state_dict(state)
    x = torch.randint(0, 2 ** 13, (5, 32))
    ref.eval(), lut.eval()
    assert torch.allclose(ref(x), lut(x), atol=1e-5)
