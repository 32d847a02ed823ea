"""Integer reference of the quantized compact (one-site) GNN, in plain numpy.

    p = extract_int_params(qcompact)          # integer weights / biases, po2 exponents (value = int * 2**e)
    x_int = quantize_input(x, p)              # input codes (or take them from the Brevitas input quantizer)
    y_int, e = intref(x_int, p)               # int64 [S, 1+C] output accumulators, value = y_int * 2**e
    y_int, e = intref_bits(p, features)       # the same for 0/1 features (what the hardware takes)

The forward pass uses only int64 arrays: integer matrix products over the structurally nonzero
blocks of each weight (the kron / padding zeros are skipped), additions
after aligning exponents with left shifts, and requantization = shift right with round half to
even (torch.round / RND_CONV) then clipping to the quantizer's integer range. It mirrors
``CompactGNN.forward`` with the hooks of ``quant/qat.py``:

    x  = q_in(x)                     h = act_in(inp(x))
    per step: m = q_msg(h W_m^T)     a = q_agg(m K^T)
              c = act(h W_ch^T + b_ch + a W_ca^T)
              z = clip01(h W_zh^T + b_z + a W_za^T)
              h = q_state(c + q_prod(z * q_diff(h - c)))       (gate=False: h = c)
    out = head(act_read(h W_rh^T + b_rh + x W_rx^T))

Extraction (not the forward pass) reads Brevitas' integer weights and computes the integer
biases with float64 arithmetic. ``stats`` of ``intref`` reports the largest accumulator magnitude
(in units of its LSB): Brevitas fake-quant runs in float32 and is exact only below 2^24.
"""
from __future__ import annotations

import numpy as np
import torch
from brevitas.nn import QuantReLU


def po2(scale) -> int:
    s = float(scale.detach() if torch.is_tensor(scale) else scale)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"quantizer scale {s}: the quantized model diverged or a layer is dead (all zero)")
    e = float(np.log2(s))
    if e != round(e):
        raise ValueError(f"scale {s} is not a power of two")
    return round(e)


def row_blocks(w: np.ndarray, support: np.ndarray | None = None) -> dict:
    """int64 W [out, in] -> row groups sharing one column support: [(rows, cols, W[rows][:, cols])].
    ``support`` (default W != 0) is the structural nonzero pattern (e.g. the float weight's, so a
    weight quantized to 0 does not split the kron blocks)."""
    support = (w != 0) if support is None else np.asarray(support, bool)
    groups: dict[bytes, list[int]] = {}
    for r in range(w.shape[0]):
        groups.setdefault(np.flatnonzero(support[r]).astype(np.int64).tobytes(), []).append(r)
    blocks = []
    for key, rows in groups.items():
        cols = np.frombuffer(key, np.int64)
        if len(cols):
            rows = np.asarray(rows, np.int64)
            blocks.append((rows, cols, np.ascontiguousarray(w[np.ix_(rows, cols)])))
    assert not np.any(w[~support]), "a nonzero weight outside the support"
    return {"blocks": blocks, "shape": w.shape}


def spmm(x: np.ndarray, m: dict) -> np.ndarray:
    """x int64 [S, in] @ W.T for W in row-group form -> int64 [S, out] (exact integer sums)."""
    out = np.zeros((x.shape[0], m["shape"][0]), np.int64)
    for rows, cols, wb in m["blocks"]:
        if cols[-1] - cols[0] == len(cols) - 1:           # a contiguous column range: a view
            xs = x[:, cols[0]:cols[-1] + 1]
        else:
            xs = x[:, cols]
        out[:, rows] = xs @ wb.T
    return out


def _quantizer(mod) -> dict:
    aq = mod.act_quant
    return {"e": po2(aq.scale()), "bits": int(aq.bit_width()), "signed": bool(aq.is_signed),
            "narrow": bool(aq.is_narrow_range), "relu": isinstance(mod, QuantReLU)}


def _bias_int(lin, e_in: int, e_w: int) -> np.ndarray:
    """Brevitas' own integer bias for the input scale 2**e_in (scale = 2**(e_in + e_w))."""
    scale = torch.tensor([2.0 ** (e_in + e_w)])
    out, out_scale, _, _ = lin.bias_quant.tensor_quant(lin.bias, scale)
    if po2(out_scale.reshape(-1)[0]) != e_in + e_w:
        raise ValueError("bias scale is not input scale x weight scale")
    b = out.detach().double().numpy() * 2.0 ** -(e_in + e_w)
    if not np.all(b == np.round(b)):
        raise ValueError("bias is not on its grid")
    return b.astype(np.int64)


def _linear(lin, e_in: int | None) -> dict:
    qw = lin.quant_weight()
    d = {"w": row_blocks(qw.int().detach().numpy().astype(np.int64), lin.weight.detach().numpy() != 0),
         "ew": po2(qw.scale)}
    if lin.bias is not None:
        d["b"] = _bias_int(lin, e_in, d["ew"])
    return d


@torch.no_grad()
def extract_int_params(qc) -> dict:
    """Integer parameters of a quantized CompactGNN (eval mode): quantizers as
    {e, bits, signed, narrow, relu}, linears as {w (padded-row int), ew, b (int, LSB 2**(e_in+ew))}."""
    qc.eval()
    p = {"q_in": _quantizer(qc.q_in), "act_in": _quantizer(qc.act_in), "act_read": _quantizer(qc.act_read),
         "gate": bool(qc.cfg.gate), "steps": []}
    e_x = p["q_in"]["e"]
    p["inp"] = _linear(qc.inp, e_x)
    e_h = p["act_in"]["e"]
    for step, kt in zip(qc.steps, qc.kt):
        st = {n: _quantizer(getattr(step, n)) for n in ("q_msg", "q_agg", "act")}
        st["msg"] = _linear(step.msg, e_h)
        k = kt.detach().numpy()
        if not np.all((k == 0) | (k == 1)):
            raise ValueError("the aggregation constant is not 0/1")
        st["K"] = row_blocks(k.T.astype(np.int64))
        e_a = st["q_agg"]["e"]
        st["cand_h"], st["cand_a"] = _linear(step.cand_h, e_h), _linear(step.cand_a, e_a)
        if qc.cfg.gate:
            st.update({n: _quantizer(getattr(step, n)) for n in ("clip01", "q_diff", "q_prod", "q_state")})
            st["gate_h"], st["gate_a"] = _linear(step.gate_h, e_h), _linear(step.gate_a, e_a)
            e_h = st["q_state"]["e"]
        else:
            e_h = st["act"]["e"]
        p["steps"].append(st)
    p["read_h"], p["read_x"] = _linear(qc.read_h, e_h), _linear(qc.read_x, e_x)
    p["head"] = _linear(qc.head, p["act_read"]["e"])
    return p


# ------------------------------------------------------------------------------------ integer ops
def shift_round(v: np.ndarray, k: int) -> np.ndarray:
    """v * 2**-k for int64 arrays, rounding half to even."""
    if k <= 0:
        return v << -k
    # v = q 2^k + r: adding half - 1 + (q & 1) carries into q exactly when r > half, or r == half and q is odd
    return (v + ((1 << (k - 1)) - 1) + ((v >> k) & 1)) >> k


def requant(v: np.ndarray, e_from: int, q: dict) -> np.ndarray:
    """Integer accumulator v (LSB 2**e_from) -> the codes of quantizer q (LSB 2**q['e'])."""
    if q["relu"]:
        v = np.maximum(v, 0)
    if q["signed"]:
        lo, hi = -2 ** (q["bits"] - 1) + q["narrow"], 2 ** (q["bits"] - 1) - 1
    else:
        lo, hi = 0, 2 ** q["bits"] - 1 - q["narrow"]
    return np.clip(shift_round(v, q["e"] - e_from), lo, hi)


def add(a: np.ndarray, ea: int, b: np.ndarray, eb: int):
    """Exact sum of a * 2**ea and b * 2**eb -> (int, exponent)."""
    e = min(ea, eb)
    return (a << (ea - e)) + (b << (eb - e)), e


def quantize_input(x: np.ndarray, p: dict) -> np.ndarray:
    """Codes of the input quantizer for float inputs (convenience; not part of the integer forward)."""
    q = dict(p["q_in"], relu=False)
    v = np.round(np.asarray(x, np.float64) * 2.0 ** -q["e"]).astype(np.int64)
    return requant(v, 0, dict(q, e=0))


def one_code(p: dict) -> int:
    """The input quantizer's code for a feature value of 1 (every model input is a 0/1 feature)."""
    return int(quantize_input(np.ones(1), p)[0])


def input_value(p: dict, features: np.ndarray) -> np.ndarray:
    """0/1 features -> the model's quantized input values (float64, exact)."""
    return features.astype(np.float64) * (one_code(p) * 2.0 ** p["q_in"]["e"])


def intref_bits(p: dict, features: np.ndarray) -> tuple[np.ndarray, int]:
    """intref outputs (int64 [S, 1+C]) and their exponent for 0/1 features."""
    return intref(features.astype(np.int64) * one_code(p), p)


def intref(x_int: np.ndarray, p: dict, stats: dict | None = None, chunk: int = 1024):
    """Integer-only forward of the compact model. x_int: int64 [S, N*Fd+G] input codes (LSB
    2**p['q_in']['e']). Returns (int64 [S, 1+C] output accumulators, their exponent).
    Samples are independent; they are processed ``chunk`` at a time."""
    x_int = np.asarray(x_int)
    if x_int.dtype.kind not in "iu":
        raise TypeError(f"intref takes integer input codes, not {x_int.dtype}")
    outs, e_out = [], None
    for s0 in range(0, max(len(x_int), 1), chunk):
        part = {} if stats is not None else None
        y, e_out = _forward(x_int[s0:s0 + chunk], p, part)
        outs.append(y)
        if stats is not None:
            stats["max_abs_accumulator"] = max(stats.get("max_abs_accumulator", 0), part["max_abs_accumulator"])
    return np.concatenate(outs), e_out


def _forward(x_int: np.ndarray, p: dict, stats: dict | None):
    track = stats is not None
    peak = [0]

    def lin(v, e_v, L, bias=True):
        acc = spmm(v, L["w"])
        if bias and "b" in L:
            acc = acc + L["b"]
        if track:
            peak[0] = max(peak[0], int(np.abs(acc).max(initial=0)))
        return acc, e_v + L["ew"]

    def chk(v):
        if track:
            peak[0] = max(peak[0], int(np.abs(v).max(initial=0)))
        return v

    x, e_x = np.asarray(x_int, np.int64), p["q_in"]["e"]
    acc, e = lin(x, e_x, p["inp"])
    h, e_h = requant(acc, e, p["act_in"]), p["act_in"]["e"]
    for st in p["steps"]:
        acc, e = lin(h, e_h, st["msg"])
        m, e_m = requant(acc, e, st["q_msg"]), st["q_msg"]["e"]
        a, e_a = requant(chk(spmm(m, st["K"])), e_m, st["q_agg"]), st["q_agg"]["e"]
        s, es = lin(h, e_h, st["cand_h"])
        t, et = lin(a, e_a, st["cand_a"])
        v, ev = add(s, es, t, et)
        c, e_c = requant(chk(v), ev, st["act"]), st["act"]["e"]
        if not p["gate"]:
            h, e_h = c, e_c
            continue
        s, es = lin(h, e_h, st["gate_h"])
        t, et = lin(a, e_a, st["gate_a"])
        v, ev = add(s, es, t, et)
        z, e_z = requant(chk(v), ev, st["clip01"]), st["clip01"]["e"]
        v, ev = add(h, e_h, -c, e_c)
        d, e_d = requant(chk(v), ev, st["q_diff"]), st["q_diff"]["e"]
        pr, e_p = requant(chk(z * d), e_z + e_d, st["q_prod"]), st["q_prod"]["e"]
        v, ev = add(c, e_c, pr, e_p)
        h, e_h = requant(chk(v), ev, st["q_state"]), st["q_state"]["e"]
    s, es = lin(h, e_h, p["read_h"])
    t, et = lin(x, e_x, p["read_x"])
    v, ev = add(s, es, t, et)
    r, e_r = requant(chk(v), ev, p["act_read"]), p["act_read"]["e"]
    out, e_out = lin(r, e_r, p["head"])
    if track:
        stats["max_abs_accumulator"] = peak[0]
    return out, e_out


# ------------------------------------------------------------------------------------ files
def save_int_params(p: dict, path) -> None:
    """Write ``p`` (extract_int_params) to an .npz file (atomic): weights dense with their
    structural support, quantizers and exponents as JSON."""
    import json

    from ncf.io import atomic_path

    arrays, meta = {}, {}

    def put(prefix: str, d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and "blocks" in v:          # a weight in row-group form
                w, sup = np.zeros(v["shape"], np.int64), np.zeros(v["shape"], bool)
                for rows, cols, wb in v["blocks"]:
                    w[np.ix_(rows, cols)], sup[np.ix_(rows, cols)] = wb, True
                arrays[f"{prefix}{k}.w"], arrays[f"{prefix}{k}.support"] = w, sup
                out[k] = "weight"
            elif isinstance(v, np.ndarray):
                arrays[f"{prefix}{k}"] = v
                out[k] = "array"
            elif isinstance(v, dict):
                out[k] = put(f"{prefix}{k}.", v)
            else:
                out[k] = v
        return out

    meta = put("", {k: v for k, v in p.items() if k != "steps"})
    meta["steps"] = [put(f"steps.{i}.", st) for i, st in enumerate(p["steps"])]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def load_int_params(path) -> dict:
    """Read what ``save_int_params`` wrote."""
    import json

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())

    def get(prefix: str, d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if v == "weight":
                out[k] = row_blocks(arrays[f"{prefix}{k}.w"], arrays[f"{prefix}{k}.support"])
            elif v == "array":
                out[k] = arrays[f"{prefix}{k}"]
            elif isinstance(v, dict):
                out[k] = get(f"{prefix}{k}.", v)
            else:
                out[k] = v
        return out

    p = get("", {k: v for k, v in meta.items() if k != "steps"})
    p["steps"] = [get(f"steps.{i}.", st) for i, st in enumerate(meta["steps"])]
    return p
