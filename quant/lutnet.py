"""LUT-native networks for one branch site (the LogicNets / PolyLUT line): sparse layers of few-bit neurons,
trained with Brevitas and enumerated into truth tables, so that the hardware is one table lookup per layer.

    cfg = LutNetConfig(layers=[36, 6, 1], fan_in=[6], bits=1)
    net = train_lutnet(x_train, y_train, cfg)       # Brevitas QAT on the site's training split, CPU, seeded
    tables = enumerate_tables(net)                  # every neuron's truth table: the integer reference
    logit = table_forward(tables, x)[:, 0]          # numpy lookups only; taken = logit > 0

Neuron j of layer l reads ``fan_in[l]`` outputs of the layer below (``idx[j]``; layer 0 reads input bits)::

    y_j = act(BN(sum_k w_jk x[idx_jk] + b_j))

act: hidden layers a Brevitas QuantReLU of ``bits`` bits (unsigned, constant scale 2^-bits: codes
0 .. 2^bits - 1); the last layer (one neuron, the branch logit) a signed QuantIdentity of ``out_bits``
bits on [-2, 2) (codes -2^(out_bits-1) .. 2^(out_bits-1) - 1, value = code * 2^-(out_bits-2)). A neuron is
a function of fan_in * (input bits) bits, so it is a table of 2^(fan_in * input bits) codes (BatchNorm, the
weights and the quantizer all fold into it): ``enumerate_tables`` runs every input combination through the
trained neuron in eval mode. Row r of a table holds the code for input k's code = (r >> (ib * k)) &
(2^ib - 1), ib = the input bits (1 for layer 0, ``bits`` after).

Layer 0's inputs: the ``inputs`` feature bits (0/1, of the flat input [dyn (N*Fd), g (G)]) with the highest
mutual information with the label on the training rows (``rank_inputs``); each neuron of every layer draws
its fan-in at random (seeded) from the layer below, the least read first (``draw``). Only the bits some neuron
reads stay (``LutNet.inputs``). With one output, a layer wider than the next layer's neurons x fan-in cannot reach
the logit (synthesis removes what does not): [36, 6, 1] at fan-in 6 is full, so is [216, 36, 6, 1].

Bundle (``write_lutnet_bundle``; what hw/lutnet.py starts from):
    site<k>_lutnet.npz          inputs, per layer l: idx<l> [out, fan_in], table<l> [out, 2^(fan_in * ib)], ib, ob
    site<k>_lutnet.samples.npz  the held-out samples' 0/1 features and dataset rows (quant/quantize.py's format)
    site<k>_lutnet.json         sidecar: site, config, figures, files
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity, QuantReLU
from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

from ncf.io import DataError, UsageError, at_least, atomic_path, read_json, write_json

MAX_TABLE_BITS = 12        # a neuron's inputs in bits: its table has 2^this rows at most
LOGIT_RANGE = 2.0          # the logit's codes cover [-LOGIT_RANGE, LOGIT_RANGE)


@dataclass
class LutNetConfig:
    layers: list = field(default_factory=lambda: [36, 6, 1])    # neurons per layer; the last is the branch logit
    fan_in: list = field(default_factory=lambda: [6])   # inputs per neuron: one for every layer, or one per layer
    bits: int = 1                  # hidden activations (unsigned); the first layer's inputs are 1 bit
    out_bits: int = 3              # the branch logit (signed, on [-2, 2))
    inputs: int = 96               # feature bits the first layer draws from (most informative on the training rows)
    train_rows: int = 20_000       # at most this many training samples (evenly spaced in time)
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self):
        self.layers, self.fan_in = [int(v) for v in self.layers], [int(v) for v in self.fan_in]
        if not self.layers or min(self.layers) < 1 or self.layers[-1] != 1:
            raise UsageError(f"layers {self.layers}: neurons per layer, each >= 1, the last 1 (the branch logit)")
        if len(self.fan_in) not in (1, len(self.layers)) or min(self.fan_in) < 1:
            raise UsageError(f"fan_in {self.fan_in}: one value >= 1, or one per layer ({len(self.layers)})")
        if not 1 <= self.bits <= 4 or not 2 <= self.out_bits <= 8:
            raise UsageError(f"bits {self.bits}, out_bits {self.out_bits}: bits in 1..4, out_bits in 2..8")
        at_least(self, inputs=1, train_rows=1, epochs=1, batch=2)
        if not self.lr > 0:
            raise UsageError(f"lr {self.lr}: must be > 0")
        for layer, (f, ib) in enumerate(zip(self.fan_ins, self.in_bits)):
            if f * ib > MAX_TABLE_BITS:
                raise UsageError(f"layer {layer}: fan-in {f} x {ib} input bits = {f * ib} bits per neuron, at most "
                                 f"{MAX_TABLE_BITS} (a table of 2^{f * ib} rows)")
            below = self.inputs if layer == 0 else self.layers[layer - 1]
            if f > below:
                raise UsageError(f"layer {layer}: fan-in {f} > the {below} {'inputs' if layer == 0 else 'neurons'} "
                                 "below it")

    @property
    def fan_ins(self) -> list[int]:
        return self.fan_in * len(self.layers) if len(self.fan_in) == 1 else self.fan_in

    @property
    def in_bits(self) -> list[int]:
        return [1] + [self.bits] * (len(self.layers) - 1)

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ inputs
def mutual_information(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """I(x_i; y) in bits for every column of 0/1 ``x`` [S, F] against 0/1 labels ``y`` [S]."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(y)
    mi = np.zeros(x.shape[1])
    for a in (0, 1):
        xa = x if a else 1 - x
        for b in (0, 1):
            yb = y if b else 1 - y
            joint = (xa * yb[:, None]).sum(0) / n
            px, py = xa.sum(0) / n, yb.sum() / n
            with np.errstate(divide="ignore", invalid="ignore"):
                mi += np.where(joint > 0, joint * np.log2(joint / (px * py)), 0.0)
    return mi


def rank_inputs(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The (at most) ``k`` columns of ``x`` that vary, by mutual information with ``y``, highest first (ties: lower
    index first). Only the rows given (the training rows) are looked at."""
    varies = np.flatnonzero(x.min(0) != x.max(0))
    order = np.argsort(-mutual_information(x[:, varies], y), kind="stable")
    return varies[order[:k]]


# ------------------------------------------------------------------------------------ the network
def hidden_act(bits: int):
    """Unsigned ``bits``-bit activation with the constant scale 2^-bits: codes 0 .. 2^bits - 1."""
    return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, scaling_impl_type=ScalingImplType.CONST,
                     max_val=1.0, return_quant_tensor=False)


def logit_act(bits: int):
    """Signed ``bits``-bit logit on [-2, 2) (constant scale 2^-(bits-2))."""
    return QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits, scaling_impl_type=ScalingImplType.CONST,
                         min_val=-LOGIT_RANGE, max_val=LOGIT_RANGE, return_quant_tensor=False)


class SparseLayer(torch.nn.Module):
    """Neuron j: act(BN(sum_k w_jk x[:, idx_jk] + b_j)), computed on the gathered inputs [B, out, fan_in]."""

    def __init__(self, idx: np.ndarray, act: torch.nn.Module):
        super().__init__()
        out, f = idx.shape
        self.register_buffer("idx", torch.as_tensor(idx, dtype=torch.int64))
        self.w = torch.nn.Parameter(torch.randn(out, f) / f ** 0.5)
        self.b = torch.nn.Parameter(torch.zeros(out))
        self.bn = torch.nn.BatchNorm1d(out)
        self.act = act

    def neurons(self, xs: torch.Tensor) -> torch.Tensor:
        """The layer on gathered inputs ``xs`` [B, out, fan_in] (input k of neuron j at xs[:, j, k])."""
        return self.act(self.bn((xs * self.w).sum(-1) + self.b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neurons(x[:, self.idx])

    @property
    def scale(self) -> float:
        """The output quantizer's scale (a power of two): value = code * scale."""
        return float(self.act.act_quant.scale())


class LutNet(torch.nn.Module):
    """The sparse few-bit network; ``inputs``: the flat feature columns of its input bits, in order."""

    def __init__(self, cfg: LutNetConfig, inputs: np.ndarray, idx: list[np.ndarray]):
        super().__init__()
        self.cfg, self.inputs = cfg, np.asarray(inputs, np.int64)
        acts = [hidden_act(cfg.bits) for _ in idx[:-1]] + [logit_act(cfg.out_bits)]
        self.layers = torch.nn.ModuleList(SparseLayer(i, a) for i, a in zip(idx, acts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logit (its quantized value) [B] from the input bits x [B, len(inputs)]."""
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]


def draw(rng, n: int, out: int, f: int) -> np.ndarray:
    """[out, f]: each of ``out`` neurons reads ``f`` distinct of ``n`` inputs, at random among the least read so
    far (so every input is read once before any is read twice)."""
    used, idx = np.zeros(n, np.int64), []
    for _ in range(out):
        perm = rng.permutation(n)
        pick = perm[np.argsort(used[perm], kind="stable")[:f]]
        used[pick] += 1
        idx.append(pick)
    return np.stack(idx)


def connect(cfg: LutNetConfig, pool: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seeded random fan-in of every neuron (``draw``): layer 0 from ``pool`` (feature columns), then from the
    layer below. Returns (the input columns some neuron reads, in pool order; idx per layer)."""
    rng = np.random.default_rng(cfg.seed)
    below = [len(pool)] + cfg.layers[:-1]
    idx = [draw(rng, n, out, f) for out, f, n in zip(cfg.layers, cfg.fan_ins, below)]
    used = np.unique(idx[0])
    idx[0] = np.searchsorted(used, idx[0])
    return pool[used], idx


def train_lutnet(x: np.ndarray, y: np.ndarray, cfg: LutNetConfig, progress: bool = False) -> LutNet:
    """A LutNet trained (Brevitas QAT, BCE on the quantized logit, Adam) on 0/1 features ``x`` [S, F] and
    labels ``y`` [S] (the site's training rows only); deterministic for a seed; returned in eval mode."""
    pool = rank_inputs(x, y, cfg.inputs)
    if len(pool) < cfg.fan_ins[0]:
        raise DataError(f"{len(pool)} feature bits vary on the training rows: fewer than the first layer's fan-in "
                        f"{cfg.fan_ins[0]}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)               # the same numbers whatever the machine's thread count
    try:
        return _train(x, y, cfg, pool, progress)
    finally:
        torch.set_num_threads(threads)


def _train(x: np.ndarray, y: np.ndarray, cfg: LutNetConfig, pool: np.ndarray, progress: bool) -> LutNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = LutNet(cfg, *connect(cfg, pool))
        xt = torch.as_tensor(x[:, net.inputs], dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        n_batches = max(1, len(yt) // cfg.batch)         # each batch >= batch size: BatchNorm needs > 1 sample
        net.train()
        for epoch in range(cfg.epochs):
            for rows in torch.randperm(len(yt), generator=gen).tensor_split(n_batches):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[rows]), yt[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss.item():.4f}", flush=True)
    return net.eval()


@torch.no_grad()
def predict_codes(net: LutNet, x: np.ndarray) -> np.ndarray:
    """The trained (Brevitas) model's logit codes on 0/1 features ``x`` [S, F] (all feature columns)."""
    net.eval()
    v = net(torch.as_tensor(x[:, net.inputs], dtype=torch.float32)).double().numpy()
    return np.round(v / net.layers[-1].scale).astype(np.int64)


# ------------------------------------------------------------------------------------ truth tables
@torch.no_grad()
def enumerate_tables(net: LutNet) -> dict:
    """Every neuron's truth table: each input combination through the trained neuron (eval mode).
    Returns {"inputs", "layers": [{idx, table, ib, ob, signed}], "logit_scale"}."""
    net.eval()
    layers, in_scale = [], 1.0              # layer 0's inputs are the feature bits 0/1
    for k, (layer, ib) in enumerate(zip(net.layers, net.cfg.in_bits)):
        out, f = layer.idx.shape
        rows = np.arange(2 ** (f * ib))
        codes = (rows[:, None] >> (ib * np.arange(f))) & (2 ** ib - 1)          # [R, f]
        xs = torch.as_tensor(codes * in_scale, dtype=torch.float32)[:, None, :].expand(-1, out, -1)
        last = k == len(net.layers) - 1
        table = np.round(layer.neurons(xs.contiguous()).double().numpy() / layer.scale).astype(np.int64).T
        layers.append({"idx": layer.idx.numpy().copy(), "table": table, "ib": ib,
                       "ob": net.cfg.out_bits if last else net.cfg.bits, "signed": last})
        in_scale = layer.scale
    return {"inputs": net.inputs.copy(), "layers": layers, "logit_scale": net.layers[-1].scale}


def table_forward(tables: dict, bits: np.ndarray) -> np.ndarray:
    """The integer reference: lookups only. ``bits`` [S, len(inputs)] 0/1 input bits -> the last layer's
    codes [S, 1] (the branch logit's code; taken = code > 0)."""
    a = np.asarray(bits, np.int64)
    for t in tables["layers"]:
        r = sum(a[:, t["idx"][:, k]] << (t["ib"] * k) for k in range(t["idx"].shape[1]))
        a = t["table"][np.arange(len(t["table"])), r]
    return a


def lutnet_logits(tables: dict, features: np.ndarray) -> np.ndarray:
    """The logit codes [S] of the table network on 0/1 flat features [S, F] (it takes its own input columns)."""
    return table_forward(tables, features[:, tables["inputs"]])[:, 0]


# ------------------------------------------------------------------------------------ site data and bundles
def site_features(ds, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """0/1 flat features [len(rows), N*Fd + G] (uint8) of dataset rows, as the GNN's compact form reads them."""
    from ncf.model.gnn import flat_input
    from ncf.model.train import GraphBatches

    gb = GraphBatches(ds, "fused", torch.device("cpu"))
    parts = []
    for k in range(0, len(rows), chunk):
        _, dyn, g = gb(rows[k:k + chunk])
        parts.append(flat_input(dyn, g).numpy().astype(np.uint8))
    x = np.concatenate(parts)
    if not np.isin(x, (0, 1)).all():
        raise DataError(f"{ds.path}: a LUT net takes 0/1 features")
    return x


def bundle_paths(path) -> dict:
    """The files of a LUT-net bundle, from its tables file ``site<k>_lutnet.npz``."""
    path = Path(path)
    stem = path.name.removesuffix(".npz")
    return {"tables": path, "samples": path.with_name(f"{stem}.samples.npz"), "sidecar": path.with_name(f"{stem}.json")}


def save_tables(tables: dict, path) -> None:
    arrays = {"inputs": tables["inputs"], "logit_scale": tables["logit_scale"], "n_layers": len(tables["layers"])}
    for k, t in enumerate(tables["layers"]):
        arrays.update({f"idx{k}": t["idx"], f"table{k}": t["table"], f"ib{k}": t["ib"], f"ob{k}": t["ob"]})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_tables(path) -> dict:
    with np.load(path) as z:
        n = int(z["n_layers"])
        layers = [{"idx": z[f"idx{k}"], "table": z[f"table{k}"], "ib": int(z[f"ib{k}"]), "ob": int(z[f"ob{k}"]),
                   "signed": k == n - 1} for k in range(n)]
        return {"inputs": z["inputs"], "layers": layers, "logit_scale": float(z["logit_scale"])}


def write_lutnet_bundle(path, tables: dict, features: np.ndarray, rows: np.ndarray, meta: dict) -> dict:
    """The tables, the held-out samples and the sidecar (kind ncf-lutnet-bundle); returns the paths."""
    from .quantize import write_samples

    paths = bundle_paths(path)
    save_tables(tables, paths["tables"])
    write_samples(paths["samples"], features, rows)
    write_json(paths["sidecar"], {"format_version": 1, "kind": "ncf-lutnet-bundle", **meta,
                                  "n_inputs": int(features.shape[1]), "live_inputs": tables["inputs"],
                                  "samples": len(rows), "files": {k: v.name for k, v in paths.items()}})
    return paths


def read_lutnet_bundle(path) -> dict:
    """A LUT-net bundle: the sidecar with absolute paths, the tables, the samples' features and rows."""
    from .quantize import read_samples

    paths = bundle_paths(path)
    for k, v in paths.items():
        if not v.is_file():
            raise FileNotFoundError(f"{v} is missing: the {k} file of the LUT-net bundle written by `ncf lutnet`")
    meta = read_json(paths["sidecar"])
    if meta.get("kind") != "ncf-lutnet-bundle" or meta.get("format_version") != 1:
        raise DataError(f"{paths['sidecar']}: not a version-1 ncf LUT-net bundle")
    features, rows = read_samples(paths["samples"])
    return {**meta, "paths": paths, "tables": load_tables(paths["tables"]), "features": features, "rows": rows}
