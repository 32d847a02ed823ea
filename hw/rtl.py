"""Synthesizable, pipelined Verilog from hls4ml's model graph (after its precision passes), via da4ml.

    comb, io = trace(hm, live_inputs, one)        # the hls4ml layers as a da4ml combinational graph
    files = write_core(comb, out_dir, cutoff)     # da4ml RTLModel: pipelined core, II = 1

One IR for both outputs: the HLS C++ project (hw/hls.py) and this Verilog are written from the same
hls4ml ``ModelGraph``. Each layer is translated with hls4ml's arithmetic: a Dense layer is the exact
constant matrix-vector product (da4ml shift-add trees; zero weights cost nothing) plus its bias, cast
to ``accum_t`` then ``result_t``; Merge add/subtract/multiply are exact, then cast; Activation
ReLU / linear cast their input. A cast to ``ap_fixed<W, I, Q, O>`` is reproduced exactly: Q = RND_CONV
(round half to even, da4ml has only TRN and RND, so the tie rule is built from the kept LSB), TRN or
RND; O = SAT or WRAP. Anything else is refused with a clear error, not approximated.

Hardware interface of the core (``ncf_core_wrapper``): input = the site's live feature bits (0/1, one
bit each; the input quantizer's code for 1 is a constant), output = [taken, delta class, logits...]:
taken = branch logit > 0, delta class = first index of the largest delta logit (np.argmax).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ncf.quant.intref import row_blocks

CORE = "ncf_core"


@dataclass(frozen=True)
class ApType:
    k: int          # sign bit
    i: int          # integer bits without the sign
    f: int          # fractional bits
    rounding: str   # TRN, RND, RND_CONV
    overflow: str   # WRAP, SAT, SAT_SYM

    @classmethod
    def of(cls, precision) -> ApType:
        """From an hls4ml precision type (``fixed<W,I,Q,O>`` / ``ufixed<...>``)."""
        w, i, s = int(precision.width), int(precision.integer), bool(precision.signed)
        rnd = getattr(precision.rounding_mode, "name", str(precision.rounding_mode or "TRN"))
        sat = getattr(precision.saturation_mode, "name", str(precision.saturation_mode or "WRAP"))
        return cls(int(s), i - int(s), w - i, rnd.upper(), sat.upper())


def cast_np(x: np.ndarray, t: ApType) -> np.ndarray:
    """ap_fixed cast of float64 values (for constants: weights and biases)."""
    v = np.asarray(x, np.float64) * 2.0 ** t.f
    v = {"TRN": np.floor, "RND": lambda a: np.floor(a + 0.5), "RND_CONV": np.round}[t.rounding](v)
    lo, hi = -(2 ** (t.k + t.i + t.f - 1)) if t.k else 0, 2 ** (t.i + t.f) - 1
    if t.overflow == "SAT_SYM" and t.k:
        lo = -hi
    if t.overflow.startswith("SAT"):
        v = np.clip(v, lo, hi)
    else:
        span = 2 ** (t.k + t.i + t.f)
        v = (v - lo) % span + lo
    return v * 2.0 ** -t.f


def cast(v, t: ApType):
    """ap_fixed cast of one da4ml FixedVariable, bit-exact with the C++ type conversion."""
    if t.overflow not in ("SAT", "WRAP") or t.rounding not in ("TRN", "RND", "RND_CONV"):
        raise NotImplementedError(f"cast to {t} is not translated (overflow SAT/WRAP, rounding TRN/RND/RND_CONV)")
    if v.low == v.high:                                   # a constant: cast its value
        return v.from_const(float(cast_np(np.array([float(v.low)]), t)[0]), hwconf=v.hwconf)
    rnd = t.rounding
    if rnd == "RND_CONV":                                 # da4ml has TRN and RND only: build ties-to-even
        f_in = int(v.kif[2])
        if f_in > t.f:
            # round half to even = truncate(v + half - lsb_in + lsb_in * kept LSB); kept LSB = bit 2^-f of v
            lsb_in = 2.0 ** -f_in
            bit = v.quantize(0, 1 - t.f, t.f, "WRAP", "TRN")                 # 0 or 2^-f
            v = v + (2.0 ** (-t.f - 1) - lsb_in) + bit * (lsb_in * 2.0 ** t.f)
        rnd = "TRN"
    return v.quantize(t.k, t.i, t.f, t.overflow, rnd)


def _array(vars_: list, like):
    from da4ml.trace import FixedVariableArray

    arr = np.empty(len(vars_), dtype=object)
    arr[:] = vars_
    return FixedVariableArray(arr, like.solver_options, hwconf=like.hwconf)


def _const(value: float, like):
    from da4ml.trace import FixedVariable

    return FixedVariable.from_const(float(value), hwconf=like.hwconf)


def _dense(x, layer):
    """hls4ml Dense: y = cast<result_t>(cast<accum_t>(x W + b)), exact products, zero weights skipped.
    Output columns sharing one input support (intref's row blocks of W^T) are one da4ml constant
    matrix-vector block."""
    w = cast_np(layer.weights["weight"].data, ApType.of(layer.types["weight_t"].precision))
    b = cast_np(layer.weights["bias"].data, ApType.of(layer.types["bias_t"].precision)) \
        if "bias" in layer.weights else np.zeros(w.shape[1])
    acc_t, res_t = ApType.of(layer.types["accum_t"].precision), ApType.of(layer.types["result_t"].precision)
    x_f = max(int(v.kif[2]) for v in x._vars)
    w_f = max(ApType.of(layer.types["weight_t"].precision).f, 0)
    if acc_t.f < x_f + w_f or acc_t.overflow != "WRAP":
        raise NotImplementedError(f"{layer.name}: accum_t {acc_t} would round the products; not translated")
    out = [_const(0.0, x) for _ in range(w.shape[1])]         # outputs without any input weight
    for outs, ins, wb in row_blocks(w.T)["blocks"]:        # outputs sharing one input support
        for j, v in zip(outs, (x[ins] @ wb.T)._vars):
            out[j] = v
    return _array([cast(cast(v + float(b[j]) if b[j] else v, acc_t), res_t) for j, v in enumerate(out)], x)


def _merge(a, b, layer):
    t = ApType.of(layer.types["result_t"].precision)
    op = layer.get_attr("op")
    fn = {"add": lambda p, q: p + q, "subtract": lambda p, q: p - q, "multiply": lambda p, q: p * q}.get(op)
    if fn is None:
        raise NotImplementedError(f"{layer.name}: Merge op {op!r} is not translated")
    return _array([cast(fn(p, q), t) for p, q in zip(a._vars, b._vars)], a)


def _activation(x, layer):
    t = ApType.of(layer.types["result_t"].precision)
    act = str(layer.get_attr("activation")).lower()
    if act == "relu":
        return _array([cast(v.relu(), t) for v in x._vars], x)
    if act == "linear":
        return _array([cast(v, t) for v in x._vars], x)
    raise NotImplementedError(f"{layer.name}: activation {act!r} has no exact hardware form (tables are not exact)")


def argmax(values: list):
    """Index of the first largest value (np.argmax), as a da4ml variable: a tournament in which the
    left (lower-index) operand wins ties. The choice is ``is_negative`` of the difference, which uses
    its value range (a known-positive or constant difference is not a sign bit: its MSB is a magnitude
    bit), then muxes on that 0/1 variable."""
    pool = [(v, _const(float(k), v)) for k, v in enumerate(values)]
    while len(pool) > 1:
        nxt = []
        for (va, ia), (vb, ib) in zip(pool[0::2], pool[1::2]):
            b_wins = (va - vb).is_negative()               # 1 <=> b strictly larger
            nxt.append((b_wins.msb_mux(vb, va), b_wins.msb_mux(ib, ia)))
        if len(pool) % 2:
            nxt.append(pool[-1])
        pool = nxt
    return pool[0][1]


def trace(hm, live: np.ndarray, one: float):
    """The hls4ml model ``hm`` as a da4ml combinational graph. Inputs: ``len(live)`` bits (feature
    ``live[k]`` of the model's flat input); the model input is bit * ``one`` (the quantized 1), 0 for
    the other features. Returns (CombLogic, io) with io = {n_logits, ...}."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    layers = list(hm.get_layers())
    first = layers[0]
    if first.class_name != "Input":
        raise ValueError("the model graph does not start with its Input layer")
    n_in = int(np.prod(first.get_output_variable().shape))
    inp = FixedVariableArrayInput((len(live),))
    bits = quantize(inp, 0, 1, 0)
    zero = _const(0.0, bits)
    full = [zero] * n_in
    for k, j in enumerate(live):
        full[int(j)] = bits._vars[k] * float(one)
    in_t = ApType.of(first.types["result_t"].precision)
    env = {first.outputs[0]: _array([cast(v, in_t) for v in full], bits)}
    for layer in layers[1:]:
        xs = [env[n] for n in layer.inputs]
        if layer.class_name == "Dense":
            y = _dense(xs[0], layer)
        elif layer.class_name == "Merge":
            y = _merge(xs[0], xs[1], layer)
        elif layer.class_name == "Activation":
            y = _activation(xs[0], layer)
        else:
            raise NotImplementedError(f"{layer.name}: hls4ml layer class {layer.class_name} is not translated")
        env[layer.outputs[0]] = y
    if len(hm.outputs) != 1:
        raise ValueError(f"expected one output tensor, not {hm.outputs}")
    logits = list(env[layers[-1].outputs[0]]._vars)
    taken = logits[0] > 0.0
    cls = argmax(logits[1:])
    outs = _array([taken, cls] + logits, bits)
    return comb_trace(inp, outs, keep_dead_inputs=True), {"n_logits": len(logits)}


def write_core(comb, out_dir, cutoff: float, clock_ns: float = 5.0, name: str = CORE) -> dict:
    """da4ml RTLModel: pipelined Verilog core ``<name>_wrapper`` in ``out_dir`` (src/*.v; every module name
    but the shared ones in src/static starts with ``name``); returns its metadata: latency (cycles from
    input to output register), formats, file list."""
    from da4ml.codegen import RTLModel

    out_dir = Path(out_dir)
    RTLModel(comb, name, out_dir, flavor="verilog", latency_cutoff=cutoff, clock_period=clock_ns,
             print_latency=False).write()
    lut = out_dir / "src" / "static" / "lookup_table.v"
    if lut.exists():        # yosys and Icarus reject the rom_style attribute (unused here)
        lut.write_text("".join(line for line in lut.read_text().splitlines(True) if "rom_style" not in line))
    meta = json.loads((out_dir / "metadata.json").read_text())
    ik, ii, if_ = (int(v) for v in comb.inp_kifs.max(axis=1))
    ok, oi, of = (int(v) for v in comb.out_kifs.max(axis=1))
    return {"core_latency": int(meta["latency"]) + 1, "da4ml_cost": float(meta["cost"]),
            "in": {"k": ik, "i": ii, "f": if_, "width": ik + ii + if_},
            "out": {"k": ok, "i": oi, "f": of, "width": ok + oi + of},
            "sources": sorted(str(p.relative_to(out_dir)) for p in (out_dir / "src").rglob("*.v")),
            "memfiles": sorted(str(p.relative_to(out_dir)) for p in (out_dir / "src").rglob("*.mem"))}
