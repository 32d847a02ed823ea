"""Learned, history-only baselines the GNN has to beat.

Both models see only a *history* (no code, no register values), which is what separates them from
the GNN:

* :class:`BranchNetCNN` — BranchNet (Zangeneh et al., MICRO 2020): a convolutional net over the
  global branch history, trained offline for one hard-to-predict branch.
* :class:`DeltaLSTM` — the embedding LSTM of Hashemi et al., "Learning Memory Access Patterns"
  (ICML 2018): next-delta classification from the (pc, delta) history of a static load.

:func:`train_classifier` and :func:`predict` are the one training / inference loop shared by both
(Adam; BCE-with-logits for a model with one logit, cross-entropy for a model with C logits; early
stopping on a validation split taken by *time*).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def geometric_pool_slices(history: int, slices: int = 4, windows: int = 12) -> tuple[tuple[int, int], ...]:
    """BranchNet-style slices for a history of ``history`` branches.

    Slice i covers the most recent ``history / 2**i`` branches and is sum-pooled in windows of
    ``max(1, length // windows)`` convolution outputs, so every slice yields about ``windows``
    pooled values: recent history gets fine positional resolution, old history coarse. Slices
    shorter than 8 branches are dropped. Returned oldest-reaching (longest) first; e.g. for 200:
    ``((200, 16), (100, 8), (50, 4), (25, 2))``.
    """
    out = []
    for i in range(slices):
        length = history >> i
        if length < 8:
            break
        out.append((length, max(1, length // windows)))
    return tuple(out)


class BranchNetCNN(nn.Module):
    """BranchNet for one hard branch: embedding → 1-D convolution → ReLU → sliced sum-pooling → linear.

    Input: the last ``history`` = L branches before the predicted one, most recent last —
    ``bhist_pc`` [B, L] (pc hash, only its low ``pc_bits`` bits are used) and ``bhist_dir`` [B, L]
    (taken = 1). Output: one logit [B] (P(taken) = sigmoid(logit)).

    1. token_t = (pc_t mod 2^pc_bits) << 1 | dir_t, t = 0..L-1, a vocabulary of 2^(pc_bits+1).
    2. e_t = Embedding(token_t) ∈ R^embed.
    3. c_j = ReLU(b + Σ_{k<K} W_k e_{j+k}) ∈ R^channels, j = 0..L-K (valid convolution of width
       K = ``conv_width``: each c_j detects a pattern of K consecutive branches).
    4. Sliced sum-pooling (BranchNet's geometric slices). Slice s = (ℓ_s, w_s) keeps the
       convolution outputs that lie inside the most recent ℓ_s branches (j ≥ L-ℓ_s, that is
       ℓ_s-K+1 of them), and sums them in n_s = ⌊(ℓ_s-K+1)/w_s⌋ non-overlapping windows of w_s
       counted back from the most recent (the oldest remainder is dropped):
       p_{s,i} = Σ_{j in window i} c_j ∈ R^channels.
       Sums, not maxima: a pattern is counted wherever it falls inside a window, so the model
       tolerates the branch of interest moving around by up to w_s positions (the usual case
       when loop trip counts vary), while long slices with wide windows still reach deep history.
    5. logit = v · concat_{s,i} p_{s,i} + b₀.

    Simplifications versus the paper's Big-BranchNet (histories 42..582, one embedding and
    convolution *per slice*, batch-norm after pooling, two hidden layers of 128): a single shared
    embedding and convolution (slices are suffixes of the same convolution output), no
    batch-norm, and a single linear layer on the pooled features, so the baseline stays small
    and its decision is a weighted count of detected patterns.

    Size at the defaults (L=200, pc_bits=12, embed=32, channels=32, K=7, slices
    ((200,16),(100,8),(50,4),(25,2)) → 12+11+11+9 = 43 windows): embedding 8192·32 = 262,144;
    convolution 32·32·7+32 = 7,200; linear 43·32+1 = 1,377; total 270,721 parameters.
    """

    def __init__(self, history: int = 200, pc_bits: int = 12, embed: int = 32, channels: int = 32,
                 conv_width: int = 7, pool_slices: Sequence[tuple[int, int]] | None = None):
        super().__init__()
        pool_slices = tuple(pool_slices) if pool_slices is not None else geometric_pool_slices(history)
        if not pool_slices:
            raise ValueError("need at least one pooling slice")
        for length, width in pool_slices:
            if not (conv_width <= length <= history) or width < 1 or (length - conv_width + 1) < width:
                raise ValueError(f"bad slice (length={length}, width={width}) for history={history}, "
                                 f"conv_width={conv_width}")
        self.history, self.pc_bits, self.conv_width = history, pc_bits, conv_width
        self.pool_slices = pool_slices
        # n_s windows per slice
        self.windows = tuple((length - conv_width + 1) // width for length, width in pool_slices)
        self.embedding = nn.Embedding(2 ** (pc_bits + 1), embed)
        self.conv = nn.Conv1d(embed, channels, conv_width)
        self.out = nn.Linear(channels * sum(self.windows), 1)

    def pooled_features(self, bhist_pc: torch.Tensor, bhist_dir: torch.Tensor) -> torch.Tensor:
        """Steps 1–4: the concatenated sum-pooled convolution outputs, [B, channels · Σ n_s]."""
        pc = bhist_pc[:, -self.history:].long() & ((1 << self.pc_bits) - 1)
        d = bhist_dir[:, -self.history:].long() & 1
        if pc.shape[1] != self.history:
            raise ValueError(f"history of {pc.shape[1]} branches, model wants {self.history}")
        x = self.embedding((pc << 1) | d).transpose(1, 2)          # [B, embed, L]
        c = F.relu(self.conv(x))                                    # [B, channels, L-K+1]
        pooled = []
        for (_, width), n in zip(self.pool_slices, self.windows):
            recent = c[:, :, c.shape[2] - n * width:]               # the n·w most recent outputs
            pooled.append(recent.reshape(c.shape[0], c.shape[1], n, width).sum(-1).flatten(1))
        return torch.cat(pooled, dim=1)

    def forward(self, bhist_pc: torch.Tensor, bhist_dir: torch.Tensor) -> torch.Tensor:
        return self.out(self.pooled_features(bhist_pc, bhist_dir)).squeeze(1)


class DeltaLSTM(nn.Module):
    """Hashemi et al.'s embedding LSTM: next-delta class of a static load from its delta history.

    Input: ``dhist`` [B, T] — delta classes of the last T accesses of the load, most recent last,
    values 0..C-1 (C-1 = "other"), C = padding ("no access yet"); ``site`` [B] — the load's pc id
    (0..n_sites-1). Output: C logits [B, C] over the next delta class.

        x_t = E_site[site] ⊕ E_delta[dhist_t]               ∈ R^(2·embed)   (E_delta[C] = 0, padding)
        h_t, c_t = LSTM(x_t, h_{t-1}, c_{t-1}),  t = 1..T,   h_0 = c_0 = 0   ∈ R^hidden
        logits = W h_T + b                                   ∈ R^C

    As in the paper the pc and delta embeddings are concatenated at every step and the output is
    a softmax over the delta vocabulary (here the C classes of the dataset builder). The paper
    uses two 128-unit layers and a 50k-delta vocabulary; ``layers`` and ``hidden`` are knobs.

    Size at the defaults (embed=32, hidden=64, one layer, C=16): site embedding n_sites·32;
    delta embedding 17·32 = 544; LSTM 4·64·(64+64) + 2·4·64 = 33,280; output 64·16+16 = 1,040;
    total 34,864 + 32·n_sites (36,912 for 64 sites).
    """

    def __init__(self, n_sites: int, n_classes: int, embed: int = 32, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.n_sites, self.n_classes = n_sites, n_classes
        self.site_embedding = nn.Embedding(n_sites, embed)
        self.delta_embedding = nn.Embedding(n_classes + 1, embed, padding_idx=n_classes)
        self.lstm = nn.LSTM(2 * embed, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, dhist: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        d = self.delta_embedding(dhist.long())                                  # [B, T, embed]
        s = self.site_embedding(site.long())[:, None, :].expand(-1, d.shape[1], -1)
        h, _ = self.lstm(torch.cat([s, d], dim=2))                              # [B, T, hidden]
        return self.out(h[:, -1])


# ---------------------------------------------------------------------------------------------
# training and inference


def _tensors(inputs: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]


def _loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, number correct). One logit per sample → BCE-with-logits; C logits → cross-entropy."""
    if logits.ndim == 1:
        loss = F.binary_cross_entropy_with_logits(logits, y.float())
        correct = ((logits > 0).long() == y.long()).sum()
    else:
        loss = F.cross_entropy(logits, y.long())
        correct = (logits.argmax(1) == y.long()).sum()
    return loss, correct


@torch.no_grad()
def _evaluate(model: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, batch: int) -> tuple[float, float]:
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(y), batch):
        loss, c = _loss(model(*(x[i:i + batch] for x in xs)), y[i:i + batch])
        total += loss.item() * len(y[i:i + batch])
        correct += int(c)
    return total / len(y), correct / len(y)


def time_split(n: int, val_fraction: float = 0.1) -> int:
    """Index of the first validation sample: samples [0, k) train, [k, n) validate (the last,
    latest ``val_fraction`` of them — never shuffled across time). At least one of each when n ≥ 2
    and val_fraction > 0."""
    if val_fraction <= 0 or n < 2:
        return n
    return n - min(n - 1, max(1, round(n * val_fraction)))


def train_classifier(model: nn.Module, inputs: Sequence[np.ndarray], labels: np.ndarray, epochs: int = 20,
                     batch: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True, *,
                     val_fraction: float = 0.1, patience: int = 3, world=None) -> dict:
    """Train ``model`` in place with Adam (model/train.py's ``fit``); return the per-epoch history.

    ``inputs`` are the model's forward arguments as arrays with the sample axis first (e.g.
    ``(bhist_pc, bhist_dir)`` or ``(dhist, site)``), in time order; ``labels`` [M] are 0/1 for a
    one-logit model (BCE-with-logits) or class ids for a C-logit model (cross-entropy).

    The last ``val_fraction`` of the samples (by time, i.e. by index) are held out for validation;
    training batches come from a seeded shuffle of the earlier samples only. Training stops once the
    validation loss has not improved for ``patience`` epochs, and the best epoch's weights are
    restored; without validation samples all ``epochs`` run. Deterministic for a given ``seed``,
    model initialisation and torch thread count. ``world`` (model/loop.py): data-parallel under
    torchrun, each process computing its share of every batch.

    Returns ``{"train_loss", "val_loss", "val_acc"}`` (lists, one entry per epoch run; the val lists
    are empty without validation), ``"best_epoch"`` (0-based), ``"epochs_run"``, ``"n_train"``,
    ``"n_val"`` and ``"val_start"`` (index of the first validation sample).
    """
    from .loop import World, fit

    world = world or World()
    net = world.wrap(model)

    xs, y = _tensors(inputs), torch.from_numpy(np.ascontiguousarray(labels))
    n = len(y)
    if any(len(x) != n for x in xs):
        raise ValueError("inputs and labels differ in length")
    k = time_split(n, val_fraction)
    if k == 0:
        raise ValueError("no training samples")
    torch.manual_seed(seed)

    def loss_of(rows):   # this process's share of the global batch ``rows`` (all of it in one process)
        idx = torch.from_numpy(world.share(rows))
        loss = _loss(net(*(x[idx] for x in xs)), y[idx])[0]
        return loss if world.size == 1 else loss * (len(idx) * world.size / len(rows))

    def validate():
        vloss, vacc = _evaluate(model, [x[k:] for x in xs], y[k:], batch)
        return {"val_loss": vloss, "val_acc": vacc}

    hist = fit(model, loss_of, np.arange(k), epochs=epochs, batch=batch, opt=torch.optim.Adam(model.parameters(), lr=lr),
               seed=seed, validate=validate if k < n else None, patience=patience, progress=progress,
               desc=type(model).__name__)
    val = [h["val_loss"] for h in hist if "val_loss" in h]
    return {"train_loss": [h["train_loss"] for h in hist], "val_loss": val,
            "val_acc": [h["val_acc"] for h in hist if "val_acc" in h],
            "best_epoch": int(np.argmin(val)) if val else len(hist) - 1, "epochs_run": len(hist), "n_train": k,
            "n_val": n - k, "val_start": k}


@torch.no_grad()
def predict(model: nn.Module, inputs: Sequence[np.ndarray], batch: int = 1024, logits: bool = False) -> np.ndarray:
    """Run ``model`` in eval mode over ``inputs`` (arrays, sample axis first).

    Returns the predicted labels (int64 [M]: ``logit > 0`` for a one-logit model, ``argmax`` for a
    C-logit model), or with ``logits=True`` the raw float32 logits ([M] or [M, C])."""
    model.eval()
    xs = _tensors(inputs)
    outs = [model(*(x[i:i + batch] for x in xs)) for i in range(0, len(xs[0]), batch)]
    out = torch.cat(outs) if outs else torch.empty(0)
    if logits:
        return out.float().numpy()
    return (out > 0).long().numpy() if out.ndim == 1 else out.argmax(1).numpy()
