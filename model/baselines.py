"""Learned, history-only baselines the GNN has to beat.

Both models see only a *history* (no code, no register values), which is what separates them from
the GNN:

* :class:`BranchNet` — BranchNet (Zangeneh et al., MICRO 2020) at its Big-BranchNet shape: per-slice
  convolutional nets over geometric lengths of the global branch history, trained offline for one
  hard-to-predict branch.
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


# Big-BranchNet (Zangeneh et al., MICRO 2020, and its public code's configs/big.yaml): five slices of
# (history length, sum-pooling width), each pooled into 12 windows of its convolution's outputs.
BIG_SLICES = ((42, 3), (78, 6), (150, 12), (294, 24), (582, 48))
# The published shapes (configs/big.yaml and configs/mini_1k.yaml, the latter without its quantization
# and with ReLU activations): `ncf train --set branchnet=mini`.
BRANCHNET_SHAPES = {
    "big": {"slices": BIG_SLICES, "pc_bits": 12, "embed": 32, "channels": 32, "conv_width": 7, "hidden": (128, 128)},
    "mini": {"slices": ((37, 7), (77, 15), (152, 30), (302, 60), (602, 120)), "pc_bits": 6, "embed": 32,
             "channels": (3, 3, 4, 4, 3), "conv_width": 3, "hidden": (16,), "lut": True},
}
TOKEN_PC_BITS = 12     # the pc hash in a branch token (dataset.branch_tokens)


class BranchNet(nn.Module):
    """BranchNet for one hard branch, at the published Big-BranchNet shape.

    Input: ``tokens`` [B, L] — the last L = max slice length branches before the predicted one,
    oldest first, each ``pc_hash << 1 | taken`` (``dataset.branch_tokens``; 0 before the window's
    first branch; the 12-bit hash is folded by XOR to ``pc_bits``). Output: one logit [B].

    Per slice s = (ℓ_s, w_s), on the most recent ℓ_s tokens, with its own weights:
      1. e_t = Embedding_s(token_t mod 2^(pc_bits+1)) ∈ R^embed;
      2. c_j = ReLU(norm(Conv1d_s(e)_j)) ∈ R^channels, a valid convolution of width K: each c_j
         detects a pattern of K consecutive branches;
      3. sum-pooling of c in non-overlapping windows of w_s (from the oldest, the newest remainder
         dropped, as the reference code's AvgPool1d(w) · w), then norm: p_s ∈ R^(channels · n_s),
         n_s = ⌊(ℓ_s − K + 1)/w_s⌋ (12 for every slice of the default shape).
    Then concat_s p_s → Linear → norm → ReLU, twice (``hidden``) → Linear → logit. Sums count a
    pattern wherever it falls inside a window, so the model tolerates the branch of interest moving
    by up to w_s positions (varying loop trip counts), while long slices with wide windows reach
    deep history.

    ``lut``: the convolution as per-position lookup tables (token -> channels for each of the K
    kernel positions, summed), as Mini-BranchNet's inference engine computes it; the same functions
    as embedding + convolution when K · channels <= embed (Mini-BranchNet's case), and cheaper to
    train.

    One departure from the reference: its batch-norms are per-sample layer norms (``norm``), so a
    prediction never depends on the rest of the batch and data-parallel training equals
    single-process training (tests/model/test_ddp.py).

    ``BRANCHNET_SHAPES``: "big" (the defaults) and "mini" (Mini-BranchNet's 1 KB shape: 3-4 channels
    of width 3 per slice, 5 windows each, a 6-bit pc hash, one hidden layer of 16; about 60x cheaper
    to train). Size of "big" (pc_bits 12, embed 32, channels 32, K 7, hidden (128, 128)): per slice an
    8,192 x 32 embedding (262,144) and a convolution (7,200), plus norms; the MLP 1,920 x 128 +
    128 x 128 + 128 x 1 with biases and norms; 1,610,401 parameters per branch.
    """

    def __init__(self, slices=BIG_SLICES, pc_bits: int = 12, embed: int = 32, channels=32,
                 conv_width: int = 7, hidden=(128, 128), lut: bool = False):
        super().__init__()
        slices = tuple(tuple(x) for x in slices)
        channels = (channels,) * len(slices) if isinstance(channels, int) else tuple(channels)
        if len(channels) != len(slices) or not 1 <= pc_bits <= TOKEN_PC_BITS:
            raise ValueError(f"channels {channels} for {len(slices)} slices, pc_bits {pc_bits} (1..{TOKEN_PC_BITS})")
        for length, width in slices:
            if length < conv_width or width < 1 or (length - conv_width + 1) < width:
                raise ValueError(f"bad slice (length={length}, width={width}) for conv_width={conv_width}")
        self.slices, self.pc_bits, self.conv_width = slices, pc_bits, conv_width
        self.history = max(length for length, _ in slices)
        self.windows = tuple((length - conv_width + 1) // width for length, width in slices)
        self.lut, self.channels = lut, channels
        if lut:   # convolution tables: position k of the kernel looks up token -> channels (no embedding)
            self.embeddings = nn.ModuleList(nn.Embedding(2 ** (pc_bits + 1), conv_width * c) for c in channels)
            self.convs = nn.ModuleList(nn.Identity() for _ in channels)
        else:
            self.embeddings = nn.ModuleList(nn.Embedding(2 ** (pc_bits + 1), embed) for _ in slices)
            self.convs = nn.ModuleList(nn.Conv1d(embed, c, conv_width) for c in channels)
        self.conv_norms = nn.ModuleList(nn.GroupNorm(1, c) for c in channels)
        self.pool_norms = nn.ModuleList(nn.GroupNorm(1, c) for c in channels)
        layers, width = [], sum(c * n for c, n in zip(channels, self.windows))
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def pooled_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Steps 1–3 of every slice, concatenated: [B, Σ channels_s · n_s]."""
        if tokens.shape[1] < self.history:
            raise ValueError(f"history of {tokens.shape[1]} branches, model wants {self.history}")
        tokens, pc = tokens.long(), torch.zeros_like(tokens, dtype=torch.long)
        for shift in range(0, TOKEN_PC_BITS, self.pc_bits):                      # fold the hash to pc_bits
            pc ^= (tokens >> (1 + shift)) & ((1 << self.pc_bits) - 1)
        tokens = pc << 1 | (tokens & 1)
        out = []
        for (length, width), n, emb, conv, cn, pn in zip(self.slices, self.windows, self.embeddings, self.convs,
                                                         self.conv_norms, self.pool_norms):
            x = emb(tokens[:, tokens.shape[1] - length:])                      # [B, ℓ, embed or K·channels]
            if self.lut:
                k, m = self.conv_width, length - self.conv_width + 1
                x = x.view(x.shape[0], length, k, -1)
                x = sum(x[:, j:j + m, j] for j in range(k)).transpose(1, 2)      # [B, channels, ℓ-K+1]
            else:
                x = conv(x.transpose(1, 2))
            c = F.relu(cn(x))
            p = c[:, :, :n * width].reshape(c.shape[0], c.shape[1], n, width).sum(-1)
            out.append(pn(p).flatten(1))
        return torch.cat(out, dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pooled_features(tokens)).squeeze(1)


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


def time_split(n: int) -> int:
    """Index of the first validation sample: samples [0, k) train, [k, n) validate (the last,
    latest ``VAL_FRACTION`` of them — never shuffled across time). At least one of each when n ≥ 2."""
    from .loop import VAL_FRACTION

    return n if n < 2 else n - min(n - 1, max(1, round(n * VAL_FRACTION)))


def train_classifier(model: nn.Module, inputs: Sequence[np.ndarray], labels: np.ndarray, epochs: int = 20,
                     batch: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True, *,
                     val_start: int | None = None, patience: int = 3, world=None) -> dict:
    """Train ``model`` in place with Adam (model/train.py's ``fit``); return the per-epoch history.

    ``inputs`` are the model's forward arguments as arrays with the sample axis first (e.g.
    ``(tokens,)`` or ``(dhist, site)``), in time order; ``labels`` [M] are 0/1 for a
    one-logit model (BCE-with-logits) or class ids for a C-logit model (cross-entropy).

    The samples from ``val_start`` on are held out for validation (default: the last 10% by time, i.e. by
    index, ``time_split``; from ncf datasets: their validation split, model.loop.split_rows);
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
    k = time_split(n) if val_start is None else val_start
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
