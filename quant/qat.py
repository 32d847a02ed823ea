"""Quantization-aware versions of the fused GNN (Brevitas, power-of-two scales only).

    qcfg = QuantConfig(weight_bits=8, act_bits=8)
    qmodel = quantize_model(model, qcfg)          # a FusedGNN with QuantLinear layers and po2 quantizers
    finetune(qmodel, train_ds, qcfg)              # calibration + a short QAT fine-tune (weight-shared form)
    qcompact = quantize_compact(qmodel, static, adj, qcfg)   # the flat one-site export form (CompactGNN)

Every scale is a power of two (``*FixedPoint`` quantizers), so the quantized model is an integer
network: ``quant/intref.py`` reproduces ``qcompact`` bit for bit and ``quant/export.py`` exports it to
QONNX (see shared/TOOLCHAIN.md, "Brevitas -> hls4ml").

Hook modules of ``model/gnn.py`` and what replaces them (b = act_bits):
    q_in, q_static          QuantIdentity, signed, learned po2 scale (the inputs)
    act_in, act_read, act   QuantReLU, unsigned, learned po2 scale
    q_msg, q_agg            QuantIdentity, signed (requantize after the message Linear / aggregation)
    clip01                  QuantIdentity, unsigned, CONSTANT scale 2^-b: a saturating clamp to
                            [0, 1 - 2^-b] (no Hardtanh op, no lookup table)
    q_diff, q_prod          QuantIdentity, signed (requantize after h - c and z * (h - c))
    q_state                 QuantIdentity, unsigned (h' = c + z (h - c) >= 0 in the float model)
Linears: QuantLinear with Int8WeightPerTensorFixedPoint (weight_bits) and an IntBias of bias_bits
whose scale is input scale x weight scale (adds exactly into the accumulator). The compact form's
input layer carries the folded static embedding as its bias (``W_s static + b`` quantized at the
scale of x times W_d's scale), which needs more range: ``fold_bias_bits``. ``QFusedGNN.embed``
rounds the static embedding to that same grid and range (straight-through), so the weight-shared
training form and the flat export form stay bit-exact with each other.

The padding mask (``mask * h`` in FusedGNN.nodes) would turn Brevitas QuantTensors into plain
tensors (losing the scale the next layer's bias needs); ``QFusedGNN`` re-wraps the masked value
with the same quantization metadata (0/1 multiplication keeps every value on its grid).
Brevitas refuses to add QuantTensors of different scales, so only the hooks that feed a biased
QuantLinear return QuantTensors (q_in, q_static, act_in, act_read, q_agg, q_state, and act when
gate=False); the others return plain tensors (the next quantizer requantizes the value).
Messages are computed per edge (``FusedGNN.aggregate``) with the message QuantLinear's
fake-quantized weight; sums of on-grid values are exact in float32, so the edge-list aggregation of
this form and the dense constant ``K`` of the compact form give the same bits.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    IntBias,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant_tensor import QuantTensor
from ncf.io import UsageError
from ncf.model.gnn import STEP_HOOKS, CompactGNN, FusedGNN


@dataclass
class QuantConfig:
    weight_bits: int = 8          # per-tensor po2 weight quantizers
    act_bits: int = 8             # every activation / requantization point
    bias_bits: int = 16           # biases (scale = input scale x weight scale)
    fold_bias_bits: int = 24      # the compact input layer's bias (folded static embedding)
    in_bits: int | None = None    # the input quantizer q_in / q_static (default: act_bits)
    calib_batches: int = 32       # forward passes that initialise the learned activation scales

    def __post_init__(self):
        for name in ("weight_bits", "act_bits") + (("in_bits",) if self.in_bits is not None else ()):
            v = getattr(self, name)
            if not 2 <= v <= 8:
                raise UsageError(f"{name} must be in 2..8, not {v}")
        for name in ("bias_bits", "fold_bias_bits"):
            if not 8 <= getattr(self, name) <= 24:     # float32 fake-quant is exact below 2^24
                raise UsageError(f"{name} must be in 8..24, not {getattr(self, name)}")

    @classmethod
    def at(cls, bits: int, **kw) -> QuantConfig:
        """Weights and activations at ``bits`` (the hardware's one bit-width knob)."""
        return cls(weight_bits=bits, act_bits=bits, **kw)

    @property
    def input_bits(self) -> int:
        return self.in_bits or self.act_bits

    def as_dict(self) -> dict:
        return asdict(self)


def storage(model, weight_bits: int | None, bias_bits: int | None) -> int:
    """Bits of weight and bias storage (float: 32 bits each); the weight-shared model stores the
    same distinct values as the flat per-site form."""
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * (weight_bits or 32)
            if m.bias is not None:
                total += m.bias.numel() * (bias_bits or 32)
    return total


# ------------------------------------------------------------------------------------ building blocks
# The smallest learned activation scale, a power of two: a layer that calibration saw only at 0 (a dead
# ReLU of a small model) keeps a po2 scale instead of Brevitas's 1e-10 floor, which is not one.
MIN_SCALE = 2.0 ** -16

def quant_linear(qcfg: QuantConfig, bias_bits: int | None = None):
    """A ``linear(in, out, bias=...)`` factory of po2 QuantLinears."""
    def make(i, o, bias=True):
        return QuantLinear(i, o, bias=bias, weight_quant=Int8WeightPerTensorFixedPoint,
                           weight_bit_width=qcfg.weight_bits, bias_quant=IntBias,
                           bias_bit_width=bias_bits or qcfg.bias_bits, return_quant_tensor=False)
    return make


def qidentity(bits: int, signed: bool = True, qt: bool = True):
    """po2 requantizer; ``qt``: return a QuantTensor (needed where a biased QuantLinear consumes it)."""
    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return QuantIdentity(act_quant=quant, bit_width=bits, return_quant_tensor=qt, scaling_min_val=MIN_SCALE)


def qrelu(bits: int, qt: bool = True):
    return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=qt,
                     scaling_min_val=MIN_SCALE)


def qclip01(bits: int):
    """Saturating [0, 1) quantizer with the constant scale 2^-bits: clamp(x, 0, 1 - 2^-bits) on the grid."""
    return QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits,
                         scaling_impl_type=ScalingImplType.CONST, max_val=1.0, return_quant_tensor=False)


def _rewrap(like, value):
    """``value`` with the quantization metadata of ``like`` (a QuantTensor) or plain."""
    return like.set(value=value) if isinstance(like, QuantTensor) else value


def _value(t):
    return t.value if isinstance(t, QuantTensor) else t


class QFusedGNN(FusedGNN):
    """FusedGNN whose padding mask and flatten keep Brevitas QuantTensors (see the module notes),
    and whose static embedding is quantized like the compact form's folded bias."""

    fold_bias_bits: int = 24

    def embed(self, graph, dyn):
        """h0 = act_in(fold(W_s q_static(static) + b) + W_d q_in(dyn)); fold() rounds the static
        embedding (half to even, straight-through gradient) to the grid of the compact input
        layer's bias, scale(q_in) * scale(W_d), and clips it to fold_bias_bits: exactly what
        CompactGNN.from_general + the IntBias of its input layer do, so both forms agree."""
        xd = self.q_in(dyn)
        b0 = self.embed_static(self.q_static(graph.static))                 # per site
        if isinstance(xd, QuantTensor):
            scale = xd.scale * self.embed_dyn.quant_weight().scale
            lim = 2.0 ** (self.fold_bias_bits - 1)
            q = torch.clamp(torch.round(b0 / scale), -lim, lim - 1) * scale
            b0 = b0 + (q - b0).detach()
        return self.act_in(b0[graph.site] + self.embed_dyn(xd))

    def message_weights(self, step):
        """The fake-quantized message weights (what the QuantLinear multiplies by), [E, H, H]."""
        return step.msg.quant_weight().value.view(self.cfg.edge_types, self.cfg.hidden, self.cfg.hidden)

    def nodes(self, graph, dyn):
        mask = self.sample_mask(graph)
        h = self.embed(graph, dyn)
        h = _rewrap(h, mask * _value(h))
        for step in self.steps:
            a = step.q_agg(self.aggregate(step, _value(h), graph))
            u = step.update(h, a)
            h = _rewrap(u, mask * _value(u))
        return h

    def readout(self, h, g):
        hf = _rewrap(h, _value(h).flatten(1))
        out = self.head(self.act_read(self.read_h(hf) + self.read_g(self.q_in(g))))
        return out[:, 0], out[:, 1:]


def quantize_model(model: FusedGNN, qcfg: QuantConfig) -> FusedGNN:
    """A quantized copy of ``model`` (float weights copied, hooks replaced by po2 quantizers).
    Its activation scales are learned: run ``calibrate`` or ``finetune`` before using it in eval mode."""
    cfg = copy.deepcopy(model.cfg)
    q = QFusedGNN(cfg, linear=quant_linear(qcfg))
    missing, unexpected = q.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not _is_quant_key(k) for k in missing):
        raise ValueError(f"state dicts do not line up: missing {missing}, unexpected {unexpected}")
    b, bi = qcfg.act_bits, qcfg.input_bits
    q.q_in, q.q_static = qidentity(bi), qidentity(bi)
    q.act_in, q.act_read = qrelu(b), qrelu(b)
    for step in q.steps:
        step.q_msg, step.q_agg = qidentity(b, qt=False), qidentity(b)
        step.act = qrelu(b, qt=not cfg.gate)          # with the gate, c only enters elementwise ops
        step.clip01 = qclip01(b)
        step.q_diff, step.q_prod = qidentity(b, qt=False), qidentity(b, qt=False)
        step.q_state = qidentity(b, signed=False)
    q.qcfg = qcfg
    q.fold_bias_bits = qcfg.fold_bias_bits
    return q


def _is_quant_key(k: str) -> bool:
    return any(s in k for s in ("_quant", "tensor_quant", "scaling_impl"))


def quantize_compact(qmodel: FusedGNN, static: torch.Tensor, adj: torch.Tensor,
                     qcfg: QuantConfig | None = None) -> CompactGNN:
    """The flat one-site form of a quantized model (shares its quantizer modules), in eval mode."""
    qcfg = qcfg or qmodel.qcfg
    cfg = qmodel.cfg
    plain, folded = quant_linear(qcfg), quant_linear(qcfg, qcfg.fold_bias_bits)
    n_in, n_h = cfg.n_nodes * cfg.f_dyn + cfg.g_dim, cfg.n_nodes * cfg.hidden

    def linear(i, o, bias=True):       # CompactGNN.inp is the only biased (n_in -> N*H) layer
        return (folded if (i, o, bias) == (n_in, n_h, True) else plain)(i, o, bias)

    qmodel.eval()
    c = CompactGNN.from_general(qmodel, torch.as_tensor(static, dtype=torch.float32),
                                torch.as_tensor(adj, dtype=torch.float32), linear=linear)
    return c.eval()


def hook_modules(model) -> list[torch.nn.Module]:
    out = [model.q_in, model.act_in, model.act_read] + ([model.q_static] if hasattr(model, "q_static") else [])
    for s in model.steps:
        out += [getattr(s, n) for n in STEP_HOOKS]
    return out


# ------------------------------------------------------------------------------------ QAT
@torch.no_grad()
def calibrate(qmodel: FusedGNN, ds, rows: np.ndarray | None = None, batches: int | None = None,
              batch: int = 256, seed: int = 0, kind: str = "fused") -> None:
    """Initialise the learned activation scales from statistics (train-mode forward passes without
    gradients; weights are not changed), then turn the collected statistics into the learned po2
    scale parameters (Brevitas would otherwise keep collecting for 300 training steps, with
    per-batch, not power-of-two, scales) and leave the model in eval mode."""
    from brevitas.graph.calibrate import finalize_collect_stats
    from ncf.model.loop import epoch_batches
    from ncf.model.train import GraphBatches, split_rows

    batches = batches or getattr(qmodel, "qcfg", QuantConfig()).calib_batches
    rows = split_rows(ds)[0] if rows is None else rows
    gb = GraphBatches(ds, kind, torch.device("cpu"))
    qmodel.train()
    todo = epoch_batches(rows, batch, seed, 10**6)
    for k in range(batches):
        qmodel(*gb(todo[k % len(todo)]))
    qmodel.apply(finalize_collect_stats)
    qmodel.eval()


def finetune(qmodel: FusedGNN, train_ds, qcfg: QuantConfig | None = None, epochs: int = 1, batch: int = 256,
             lr: float = 1e-3, max_steps: int | None = None, seed: int = 0, kind: str = "fused",
             rows: np.ndarray | None = None, threads: int | None = None) -> dict:
    """Calibrate, then a short deterministic QAT fine-tune of the weight-shared form on the training
    part of ``train_ds`` (model/train.py's batches, loss and time split). Returns a small summary."""
    from ncf.model.loop import fit
    from ncf.model.train import GraphBatches, labels, multitask_loss, split_rows

    if threads:
        torch.set_num_threads(threads)
    qcfg = qcfg or getattr(qmodel, "qcfg", QuantConfig())
    rows = split_rows(train_ds)[0] if rows is None else rows
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        calibrate(qmodel, train_ds, rows, qcfg.calib_batches, batch, seed, kind)
        dev = torch.device("cpu")
        gb = GraphBatches(train_ds, kind, dev)
        opt = torch.optim.Adam([p for p in qmodel.parameters() if p.requires_grad], lr=lr)
        hist = fit(qmodel, lambda r: multitask_loss(*qmodel(*gb(r)), *labels(train_ds, r, dev)), rows, epochs=epochs,
                   batch=batch, opt=opt, seed=seed, max_steps=max_steps, progress=False, desc="QAT")
    return {"steps": sum(h["steps"] for h in hist), "epochs": hist}
