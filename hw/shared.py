"""One datapath for several sites of a program, with every site's weights in ROM (issue 18, the shared design).

    m = build_shared([read_bundle(p) for p in onnx_paths], HwConfig(), "build/rtl-shared")

The other multi-site design (``hw.multisite``) folds each site's weights into its own core and multiplexes
the cores. Here the sites share ONE pipelined datapath that computes ``quant.intref._forward`` with the
weights as variables: per layer, a ROM (``rom_<layer>.mem``, read with ``$readmemh``, one word per site
id) holds every site's weights (times the input code of 1 for the layers that take the 0/1 features), biases
and 0/1 aggregation matrix K on the union of the sites' structural supports (a site lacking a weight has 0).
The site id travels with the data down a shift register and addresses each ROM in the pipeline stage that
uses its words (an asynchronous read: each ROM bit is a small LUT of the site-id bits, which synthesis merges
into the AND gates of the partial products; a registered read would cost one flip-flop per weight bit).
Per-site exponents (requantization shifts, exponent alignment of additions, the output format) are
multiplexed by the site id where the sites differ. Products: 0/1 features and 0/1 K entries gate the other
operand; other products are AND-gated partial products (no ``*``, so no DSPs are inferred). Adder trees are
balanced and get a register every ``levels`` adder levels (``int(HwConfig.cutoff)``, da4ml's cutoff).

Messages exist per edge, and the sites' graphs differ: message rows are grouped by their source-node
support, and each group gets as many slots as the site with most such messages needs (K's columns follow).

Interface and manifest as ``hw.multisite`` (module ``ncf_core_wrapper`` behind ``ncf_predictor``; in_data
= {site id, feature bits}), except that feature bit j means the same flat input for every site: the union
of the sites' live inputs (``sites[k].live_inputs``). ``multisite.design`` is "shared-rom". The sites must
share one model shape (GNN config, bit widths, quantizer types, input count); scales may differ.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict

import numpy as np

from ncf.io import UsageError

from .generate import (TOP, WRAPPER, HwConfig, _fresh_dir, bundle_inputs, bundle_site, class_width, finish_rtl,
                       rtl_manifest)
from .multisite import check_sites

CORE = "ncf_shared"
SHAPE = ("n_nodes", "f_dyn", "g_dim", "hidden", "steps", "gate", "readout_hidden", "delta_classes")


def _bits(lo: int, hi: int) -> int:
    """Width of the signed two's-complement range [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


class Sig:
    """A signed value in the pipeline: Verilog name, integer range over every site, the stage it is valid in
    and the adder levels since that stage's registers."""

    def __init__(self, name: str, lo: int, hi: int, stage: int, depth: int = 0):
        self.name, self.lo, self.hi, self.stage, self.depth = name, int(lo), int(hi), stage, depth
        self.w = _bits(lo, hi)


class Vec:
    """Elements (Sig, or None for a constant 0) with one exponent per site: value = code * 2**exps[s]."""

    def __init__(self, sigs: list, exps: list[int]):
        self.sigs, self.exps = sigs, [int(e) for e in exps]


def _dense(w: dict) -> tuple[np.ndarray, np.ndarray]:
    """A weight in row-group form -> (dense int64 matrix, structural support)."""
    m, sup = np.zeros(w["shape"], np.int64), np.zeros(w["shape"], bool)
    for rows, cols, wb in w["blocks"]:
        m[np.ix_(rows, cols)], sup[np.ix_(rows, cols)] = wb, True
    return m, sup


class Datapath:
    """Writes the pipelined Verilog of the integer forward pass, op by op (see the module docstring)."""

    def __init__(self, n_sites: int, site_w: int, levels: int):
        self.n_sites, self.site_w, self.levels = n_sites, site_w, levels
        self.body, self.roms, self.n = [], {}, 0
        self.delayed = {}
        self.max_site_stage = 1

    def wire(self, expr: str, lo: int, hi: int, stage: int, reg: bool = False, depth: int = 0) -> Sig:
        """``expr`` as a new signal, ``depth`` adder levels after the registers; ``reg``: registered (valid one
        stage later)."""
        self.n += 1
        s = Sig(f"{'r' if reg else 'w'}{self.n}", lo, hi, stage + reg, 0 if reg else depth)
        if reg:
            self.body.append(f"    reg signed [{s.w - 1}:0] {s.name}; always @(posedge clk) {s.name} <= {expr};")
        else:
            self.body.append(f"    wire signed [{s.w - 1}:0] {s.name} = {expr};")
        return s

    def site(self, stage: int) -> str:
        self.max_site_stage = max(self.max_site_stage, stage)
        return f"site_d[{stage}]"

    def at(self, s: Sig | None, stage: int) -> Sig | None:
        """``s`` delayed by registers to ``stage``."""
        if s is None or s.stage == stage:
            return s
        assert s.stage < stage, (s.name, s.stage, stage)
        key = (s.name, stage)
        if key not in self.delayed:
            prev = self.at(s, stage - 1)
            self.delayed[key] = self.wire(prev.name, s.lo, s.hi, prev.stage, reg=True)
        return self.delayed[key]

    def align(self, sigs: list, need: int, not_before: int = 0) -> tuple[list, int, int]:
        """The inputs of an op of ``need`` adder levels, delayed to one stage (``not_before`` at the earliest),
        and registered first where the levels since the last registers would exceed ``levels``: (inputs,
        stage, depth)."""
        live = [s for s in sigs if s is not None]
        stage = max([s.stage for s in live] + [not_before])
        if max([s.depth for s in live if s.stage == stage] + [0]) + need > self.levels:
            stage += 1
        out = [self.at(s, stage) for s in sigs]
        return out, stage, max(s.depth for s in out if s is not None)

    def by_site(self, exprs: list[str], stage: int) -> str:
        """The expression of the site at ``stage`` (exprs[k] for site k; equal ones share one arm)."""
        arms: dict[str, list[int]] = {}
        for k, e in enumerate(exprs):
            arms.setdefault(e, []).append(k)
        items = list(arms.items())
        out = items[-1][0]
        for e, ks in reversed(items[:-1]):
            cond = " || ".join(f"{self.site(stage)} == {self.site_w}'d{k}" for k in ks)
            out = f"(({cond}) ? {e} : {out})"
        return out

    def rom(self, name: str, fields: list[list[int]], stage: int) -> list[tuple[str, str, int, int]]:
        """A ROM of per-site integer fields (fields[f][k] = field f of site k), read at ``stage``:
        [(Verilog slice, its lowest bit, lo, hi)] per field."""
        widths = [_bits(min(f), max(f)) for f in fields]
        total = sum(widths)
        words = [0] * (1 << self.site_w)
        off = 0
        for f, w in zip(fields, widths):
            for k, v in enumerate(f):
                words[k] |= (int(v) & ((1 << w) - 1)) << off
            off += w
        self.roms[name] = {"width": total, "words": words}
        self.body.append(f"    reg [{total - 1}:0] {name} [0:{len(words) - 1}];")
        self.body.append(f'    initial $readmemh("{name}.mem", {name});')
        self.body.append(f"    wire [{total - 1}:0] {name}_q = {name}[{self.site(stage)}];")
        out, off = [], 0
        for f, w in zip(fields, widths):
            out.append((f"{name}_q[{off + w - 1}:{off}]", f"{name}_q[{off}]", min(f), max(f)))
            off += w
        return out

    def product(self, w: tuple[str, str, int, int], a: Sig) -> tuple[str, int, int, int]:
        """``w`` (a ROM field or a signal: its bits, its lowest bit, lo, hi) times ``a``, without ``*``: (expr,
        lo, hi, adder levels)."""
        bits, bit0, wl, wh = w
        ws = f"$signed({bits})"
        corners = [x * y for x in (wl, wh) for y in (a.lo, a.hi)]
        lo, hi = min(corners), max(corners)
        pw = _bits(lo, hi)
        if (a.lo, a.hi) == (0, 1):
            return f"({a.name}[0] ? {ws} : {pw}'sd0)", lo, hi, 0
        if (wl, wh) == (0, 1):
            return f"({bit0} ? {a.name} : {pw}'sd0)", lo, hi, 0
        terms = [f"({a.name}[{i}] ? ({ws} <<< {i}) : {pw}'sd0)" for i in range(a.w - 1)]
        expr = " + ".join(terms) if terms else f"{pw}'sd0"
        if a.lo < 0:
            expr = f"{expr} - ({a.name}[{a.w - 1}] ? ({ws} <<< {a.w - 1}) : {pw}'sd0)"
        return f"({expr})", lo, hi, int(np.ceil(np.log2(max(a.w, 2))))

    def tree(self, rows: list[list[tuple[str, int, int]]], stage: int, depth: int) -> list[Sig | None]:
        """Balanced sums of each row's terms (expr, lo, hi) valid in ``stage``, ``depth`` adder levels
        already spent there; registered every ``levels`` levels and at the end."""
        rows = [[self.wire(e, lo, hi, stage, depth=depth) for e, lo, hi in r] for r in rows]
        while any(len(r) > 1 for r in rows):
            if depth >= self.levels:
                rows = [[self.wire(t.name, t.lo, t.hi, stage, reg=True) for t in r] for r in rows]
                stage, depth = stage + 1, 0
            depth += 1
            rows = [[self.wire(f"{r[i].name} + {r[i + 1].name}", r[i].lo + r[i + 1].lo, r[i].hi + r[i + 1].hi, stage,
                               depth=depth) if i + 1 < len(r) else r[i] for i in range(0, len(r), 2)] for r in rows]
        return [r[0] if r else None for r in rows]

    def linear(self, name: str, v: Vec, ws: list[np.ndarray], sup: np.ndarray, bs: list | None,
               ews: list[int], not_before: int = 0) -> Vec:
        """v @ W_k.T (+ b_k) for site k, W on the support ``sup`` (union of the sites'), weights from a ROM;
        ``not_before``: the stage to start in at the earliest (delaying the inputs rather than the sums)."""
        vin, stage, depth0 = self.align(v.sigs, 1, not_before)
        slots = [(r, c) for r, c in zip(*np.nonzero(sup)) if vin[c] is not None]
        fields = [[int(w[r, c]) for w in ws] for r, c in slots]
        if bs is not None:
            fields += [[int(b[r]) for b in bs] for r in range(sup.shape[0])]
        rom = self.rom(f"rom_{name}", fields, stage) if fields else []
        rows, depth = [[] for _ in range(sup.shape[0])], depth0
        for (r, c), w in zip(slots, rom):
            expr, lo, hi, d = self.product(w, vin[c])
            rows[r].append((expr, lo, hi))
            depth = max(depth, depth0 + d)
        if bs is not None:
            for r, (b, _, lo, hi) in enumerate(rom[len(slots):]):
                rows[r].append((f"$signed({b})", lo, hi))
        return Vec(self.tree(rows, stage, depth), [e + ew for e, ew in zip(v.exps, ews)])

    def per_site(self, v: Vec, fn, lo: int, hi: int, out_exps: list[int]) -> Vec:
        """Elementwise ``fn(sig, k) -> expr`` (k = site; 2 adder levels), multiplexed where the sites differ;
        result range [lo, hi]."""
        sigs, stage, depth = self.align(v.sigs, 2)
        out = []
        for s in sigs:
            out.append(None if s is None else
                       self.wire(self.by_site([fn(s, k) for k in range(self.n_sites)], stage), lo, hi, stage,
                                 depth=depth + 2))
        return Vec(out, out_exps)

    def requant(self, v: Vec, qs: list[dict]) -> Vec:
        """``quant.intref.requant`` for site k's quantizer qs[k] (relu, shift-round half to even, clip)."""
        q = qs[0]
        if q["signed"]:
            lo, hi = -2 ** (q["bits"] - 1) + q["narrow"], 2 ** (q["bits"] - 1) - 1
        else:
            lo, hi = 0, 2 ** q["bits"] - 1 - q["narrow"]
        lo = max(lo, 0) if q["relu"] else lo       # relu, shift-round and clip commute into one clip
        shifted = {}

        def fn(s: Sig, k: int) -> str:
            sh = qs[k]["e"] - v.exps[k]
            if (s.name, sh) not in shifted:
                if sh <= 0:
                    t = self.wire(f"{s.name} <<< {-sh}", s.lo << -sh, s.hi << -sh, s.stage)
                else:           # v + half - 1 + bit k of v, shifted: carries exactly when round half to even does
                    c = (1 << (sh - 1)) - 1
                    t0 = self.wire(f"{s.name} + $signed({{1'b0, {s.name}[{min(sh, s.w - 1)}]}}) + {c}",
                                   s.lo, s.hi + c + 1, s.stage)
                    t = self.wire(f"{t0.name} >>> {sh}", t0.lo >> sh, t0.hi >> sh, s.stage)
                shifted[(s.name, sh)] = t.name
            t = shifted[(s.name, sh)]
            return f"(({t} < {lo}) ? {lo} : ({t} > {hi}) ? {hi} : {t})"
        return self.per_site(v, fn, lo, hi, [qk["e"] for qk in qs])

    def add(self, a: Vec, b: Vec, sign: int = 1) -> Vec:
        """a + sign * b elementwise, exponents aligned per site (``quant.intref.add``)."""
        es = [min(x, y) for x, y in zip(a.exps, b.exps)]
        sa, sb = [x - e for x, e in zip(a.exps, es)], [y - e for y, e in zip(b.exps, es)]
        sigs, stage, depth = self.align(a.sigs + b.sigs, 1)
        op = "+" if sign > 0 else "-"
        out = []
        for x, y in zip(sigs[:len(a.sigs)], sigs[len(a.sigs):]):
            xe = [f"({x.name} <<< {s})" if x else "0" for s in sa]
            ye = [f"({y.name} <<< {s})" if y else "0" for s in sb]
            xl, xh = (x.lo << max(sa), x.hi << max(sa)) if x else (0, 0)
            yl, yh = (y.lo << max(sb), y.hi << max(sb)) if y else (0, 0)
            if sign < 0:
                yl, yh = -yh, -yl
            lo, hi = min(xl, 0) + min(yl, 0), max(xh, 0) + max(yh, 0)
            exprs = [f"({p} {op} {q})" for p, q in zip(xe, ye)]     # evaluated at the result's width
            out.append(self.wire(self.by_site(exprs, stage), lo, hi, stage, depth=depth + 1) if x or y else None)
        return Vec(out, es)

    def mul(self, a: Vec, b: Vec) -> Vec:
        """a * b elementwise (the gate's z * (h - c)), as gated partial products of b's bits."""
        sigs, stage, depth = self.align(a.sigs + b.sigs, 2)
        out = []
        for x, y in zip(sigs[:len(a.sigs)], sigs[len(a.sigs):]):
            if x is None or y is None:
                out.append(None)
                continue
            expr, lo, hi, d = self.product((x.name, f"{x.name}[0]", x.lo, x.hi), y)
            out.append(self.wire(expr, lo, hi, stage, depth=depth + d))
        return Vec(out, [p + q for p, q in zip(a.exps, b.exps)])

    def argmax(self, v: list[Sig]) -> Sig:
        """Index of the first largest element (np.argmax): a tournament, registered every ``levels`` levels."""
        v, stage, depth = self.align(v, 1)
        items = [(s, self.wire(f"{k}", k, k, stage)) for k, s in enumerate(v)]
        while len(items) > 1:
            if depth >= self.levels:
                items = [tuple(self.wire(t.name, t.lo, t.hi, stage, reg=True) for t in pair) for pair in items]
                stage, depth = stage + 1, 0
            nxt = []
            for j in range(0, len(items), 2):
                if j + 1 == len(items):
                    nxt.append(items[j])
                    continue
                (a, ia), (b, ib) = items[j], items[j + 1]
                c = f"({a.name} >= {b.name})"
                nxt.append((self.wire(f"{c} ? {a.name} : {b.name}", min(a.lo, b.lo), max(a.hi, b.hi), stage),
                            self.wire(f"{c} ? {ia.name} : {ib.name}", 0, max(ia.hi, ib.hi), stage)))
            items, depth = nxt, depth + 1
        return items[0][1]


def shared_params(bundles: list[dict]) -> dict:
    """The sites' parameters in one layout: messages in common slots (K's columns with them), dense weights
    and their union support. Refuses sites of different model shapes."""
    ref = bundles[0]
    for b in bundles[1:]:
        for k in SHAPE:
            if b["gnn"][k] != ref["gnn"][k]:
                raise UsageError(f"sites {ref['site_pc']:#x} and {b['site_pc']:#x} differ in {k} ({ref['gnn'][k]} vs "
                                 f"{b['gnn'][k]}): the shared datapath serves sites of one model shape")
        for k in ("weight_bits", "act_bits"):
            if b["quant"][k] != ref["quant"][k]:
                raise UsageError(f"sites {ref['site_pc']:#x} and {b['site_pc']:#x} differ in {k}: the shared datapath "
                                 "serves sites of one bit width")
        if b["n_inputs"] != ref["n_inputs"] or b["task"] != ref["task"]:
            raise UsageError(f"sites {ref['site_pc']:#x} and {b['site_pc']:#x} differ in their inputs or task")
    ps = [b["params"] for b in bundles]
    for name, q in _quantizers(ps[0]).items():
        for p in ps[1:]:
            other = _quantizers(p)[name]
            if {k: v for k, v in other.items() if k != "e"} != {k: v for k, v in q.items() if k != "e"}:
                raise UsageError(f"the sites' quantizer {name} differs beyond its scale: {q} vs {other}")
    return ps


def _quantizers(p: dict) -> dict:
    qs = {k: v for k, v in p.items() if isinstance(v, dict) and "bits" in v}
    for i, st in enumerate(p["steps"]):
        qs.update({f"steps.{i}.{k}": v for k, v in st.items() if isinstance(v, dict) and "bits" in v})
    return qs


def _message_slots(msgs: list[dict]) -> list[np.ndarray]:
    """Per site: slot -> message row (-1: none). Rows are grouped by their column support (the source node);
    a group gets as many slots as the site with most rows in it."""
    groups = []
    for lin in msgs:
        _, sup = _dense(lin["w"])
        g: dict[bytes, list[int]] = {}
        for r in range(sup.shape[0]):
            g.setdefault(np.flatnonzero(sup[r]).tobytes(), []).append(r)
        groups.append(g)
    keys = sorted({k for g in groups for k in g})
    size = {k: max(len(g.get(k, [])) for g in groups) for k in keys}
    return [np.asarray([r for k in keys for r in g.get(k, []) + [-1] * (size[k] - len(g.get(k, [])))], np.int64)
            for g in groups]


def _take(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``a``'s rows (axis 0) or columns (axis 1) in the order ``idx``; -1 gives zeros."""
    out = np.take(a, np.maximum(idx, 0), axis)
    out[(slice(None),) * axis + (idx < 0,)] = 0
    return out


def _layer(lins: list[dict], scale: list[int] | None = None, rows: list[np.ndarray] | None = None,
           cols: list[np.ndarray] | None = None):
    """Per-site dense weights (times ``scale[k]``; rows / columns picked by ``rows`` / ``cols``, -1 = zero),
    union support, biases (or None), weight exponents."""
    ws, sups, bs = [], [], []
    for k, lin in enumerate(lins):
        w, sup = _dense(lin["w"] if "w" in lin else lin)
        b = lin.get("b", np.zeros(w.shape[0], np.int64)) if "w" in lin else None
        if rows is not None:
            w, sup = _take(w, rows[k], 0), _take(sup, rows[k], 0)
            b = None if b is None else _take(b, rows[k], 0)
        if cols is not None:
            w, sup = _take(w, cols[k], 1), _take(sup, cols[k], 1)
        ws.append(w * (scale[k] if scale else 1))
        sups.append(sup.astype(bool))
        bs.append(b)
    has_b = any("b" in lin for lin in lins)
    return ws, np.logical_or.reduce(sups), (bs if has_b else None), [lin.get("ew", 0) for lin in lins]


def forward(dp: Datapath, ps: list[dict], feat_cols: np.ndarray, n_inputs: int) -> Vec:
    """``quant.intref._forward`` on the datapath: the feature bits (stage 1) -> the head's accumulators."""
    from ncf.quant.intref import one_code

    x_sigs = [None] * n_inputs
    for j, c in enumerate(feat_cols):
        x_sigs[c] = dp.wire(f"$signed({{1'b0, feat_d[{j}]}})", 0, 1, 1)
    x = Vec(x_sigs, [p["q_in"]["e"] for p in ps])
    codes = [one_code(p) for p in ps]          # x = feature * code of 1: the code goes into the ROM

    def lin(name, v, lins, scale=None, rows=None, cols=None, beside=None):
        """A linear layer; ``beside``: a vector it is added to, whose stage it starts in."""
        start = max(s.stage for s in beside.sigs if s is not None) if beside else 0
        return dp.linear(name, v, *_layer(lins, scale, rows, cols), not_before=start)

    h = dp.requant(lin("inp", x, [p["inp"] for p in ps], codes), [p["act_in"] for p in ps])
    for i in range(len(ps[0]["steps"])):
        q = lambda n: [p["steps"][i][n] for p in ps]
        slots = _message_slots(q("msg"))
        m = dp.requant(lin(f"msg{i}", h, q("msg"), rows=slots), q("q_msg"))
        a = dp.requant(lin(f"K{i}", m, q("K"), cols=slots), q("q_agg"))
        c = dp.requant(dp.add(lin(f"cand_h{i}", h, q("cand_h"), beside=a), lin(f"cand_a{i}", a, q("cand_a"))),
                       q("act"))
        if not ps[0]["gate"]:
            h = c
            continue
        z = dp.requant(dp.add(lin(f"gate_h{i}", h, q("gate_h"), beside=a), lin(f"gate_a{i}", a, q("gate_a"))),
                       q("clip01"))
        d = dp.requant(dp.add(h, c, sign=-1), q("q_diff"))
        pr = dp.requant(dp.mul(z, d), q("q_prod"))
        h = dp.requant(dp.add(c, pr), q("q_state"))
    s = dp.add(lin("read_h", h, [p["read_h"] for p in ps]), lin("read_x", x, [p["read_x"] for p in ps], codes,
                                                                  beside=h))
    return lin("head", dp.requant(s, [p["act_read"] for p in ps]), [p["head"] for p in ps])


def shared_verilog(bundles: list[dict], cfg: HwConfig, feat_cols: np.ndarray, site_w: int) -> dict:
    """``ncf_core_wrapper`` of the shared datapath: {verilog, roms, latency, out (format), n_logits}."""
    ps = shared_params(bundles)
    dp = Datapath(len(bundles), site_w, max(1, int(cfg.cutoff)))
    y = forward(dp, ps, feat_cols, bundles[0]["n_inputs"])
    n_logits = len(y.sigs)
    out_f = max(-e for e in y.exps)
    cls = dp.argmax(y.sigs[1:])
    last = cls.stage
    ys = [dp.at(s, last) for s in y.sigs]
    # logit codes with out_f fractional bits, shifted per site; taken and the class index at bit out_f
    shifted = [dp.by_site([f"({s.name} <<< {e + out_f})" for e in y.exps], last) for s in ys]
    ranges = [(s.lo << max(e + out_f for e in y.exps), s.hi << max(e + out_f for e in y.exps)) for s in ys]
    cw = class_width(n_logits)
    width = max(max(_bits(min(lo, 0), hi) for lo, hi in ranges), out_f + cw + 1)

    def at_bit(bits: str, w: int) -> str:           # ``bits`` (w wide) at bit out_f of a zero element
        return "{" + ", ".join([f"{width - out_f - w}'b0", bits] + ([f"{out_f}'b0"] if out_f else [])) + "}"
    elems = [at_bit(f"({ys[0].name} > 0)", 1), at_bit(f"{cls.name}[{cw - 1}:0]", cw)]
    body = list(dp.body)
    for k, s in enumerate(shifted):
        body.append(f"    wire signed [{width - 1}:0] out{k} = {s};")
    elems += [f"out{k}" for k in range(n_logits)]
    lat = last + 1
    feat_w = len(feat_cols)
    head = [
        "`timescale 1ns / 1ps",
        f"// Generated by ncf hw/shared.py: one datapath for {len(bundles)} sites, weights in ROM (see its docstring).",
        f"// model_inp = {{site id [{site_w}], features [{feat_w}]}}; model_out = {n_logits + 2} elements of "
        f"{width} bits, {out_f} fractional; latency {lat} cycles.",
        "module ncf_core_wrapper (",
        "    input clk,",
        f"    input [{feat_w + site_w - 1}:0] model_inp,",
        f"    output reg [{(n_logits + 2) * width - 1}:0] model_out",
        ");",
        f"    reg [{site_w - 1}:0] site_d [1:{max(dp.max_site_stage, last)}];   // the site id beside the data",
        f"    reg [{feat_w - 1}:0] feat_d;",
        "    integer s;",
        "    always @(posedge clk) begin",
        f"        site_d[1] <= model_inp[{feat_w + site_w - 1}:{feat_w}];",
        f"        feat_d <= model_inp[{feat_w - 1}:0];",
        f"        for (s = 2; s <= {max(dp.max_site_stage, last)}; s = s + 1) site_d[s] <= site_d[s - 1];",
        "    end",
    ]
    tail = [f"    always @(posedge clk) model_out <= {{{', '.join(reversed(elems))}}};", "endmodule", ""]
    return {"verilog": "\n".join(head + body + tail), "roms": dp.roms, "latency": lat, "n_logits": n_logits,
            "out": {"width": width, "f": out_f}}


def build_shared(bundles: list[dict], cfg: HwConfig, out_dir, progress: bool = True) -> dict:
    """The shared-datapath block of ``bundles`` (site id k = bundles[k]) in ``out_dir``; returns the manifest
    (also written as ``manifest.json``)."""
    from pathlib import Path

    from ncf.quant.intref import input_value

    check_sites(bundles)
    out_dir = Path(out_dir)
    tmp = _fresh_dir(out_dir, "manifest.json")
    t0 = time.monotonic()
    feat_cols = np.unique(np.concatenate([b["live_inputs"] for b in bundles]))
    site_w = max(1, (len(bundles) - 1).bit_length())
    v = shared_verilog(bundles, cfg, feat_cols, site_w)
    (tmp / f"{CORE}.v").write_text(v["verilog"])
    for name, r in v["roms"].items():
        digits = (r["width"] + 3) // 4
        (tmp / f"{name}.mem").write_text("".join(f"{w:0{digits}x}\n" for w in r["words"]))
    shutil.copy(WRAPPER, tmp / f"{TOP}.v")
    n_logits, fmt, lat = v["n_logits"], v["out"], v["latency"]
    feat_w = len(feat_cols)
    params = {"IN_W": feat_w + site_w, "ELEM_W": fmt["width"], "OUT_F": fmt["f"], "N_LOGITS": n_logits,
              "CLASS_W": class_width(n_logits), "CORE_LAT": lat}
    rom_bits = sum(r["width"] * len(bundles) for r in v["roms"].values())
    manifest = rtl_manifest(
        params, f"in_data[{feat_w + site_w - 1}:{feat_w}] = site id k (manifest sites[k]); in_data[j] for j < {feat_w} "
        "= flat input sites[k].live_inputs[j] (the same for every site)", [f"{CORE}.v"],
        [f"{name}.mem" for name in v["roms"]], config=asdict(cfg),
        multisite={"design": "shared-rom", "feature_bits": feat_w, "site_bits": site_w, "n_sites": len(bundles),
                   "core": f"{CORE}.v", "adder_levels_per_stage": max(1, int(cfg.cutoff)), "rom_bits": rom_bits},
        sites=[{"id": k, **bundle_site(b), "inputs": bundle_inputs(b), "live_inputs": feat_cols.tolist(),
                "feature_bits": feat_w, "core_cycles": lat, "logit": fmt,
                "one": float(input_value(b["params"], np.ones((1, 1), np.uint8))[0, 0]),
                "output_exponent": int(b["output_exponent"]),
                "bits": {"weights": b["quant"]["weight_bits"], "activations": b["quant"]["act_bits"]}}
               for k, b in enumerate(bundles)],
        bits={"input": f"site id ({site_w} bits) above the union of the sites' live feature bits ({feat_w} bits)",
              "logit": {"k": 1, "i": fmt["width"] - fmt["f"] - 1, "f": fmt["f"], "width": fmt["width"]}},
        seconds=round(time.monotonic() - t0, 1))
    return finish_rtl(tmp, out_dir, manifest, "shared-ROM RTL", f"{len(bundles)} sites, {feat_w} feature + "
                      f"{site_w} site-id bits, {rom_bits:,} ROM bits", progress)


DESIGNS = ("folded", "shared")


def build_sites(bundles: list[dict], cfg: HwConfig, out_dir, design: str = "folded", progress: bool = True) -> dict:
    """One multi-site block of ``bundles`` (site id k = bundles[k]): ``design`` "folded" (each site's weights
    folded into its own core behind a site-id multiplexer, ``hw.multisite.build_multisite``) or "shared"
    (one datapath, weights in ROM, ``build_shared``). Returns the manifest."""
    from .multisite import build_multisite

    if design not in DESIGNS:
        raise UsageError(f"unknown multi-site design {design!r}: choose one of {', '.join(DESIGNS)}")
    return (build_shared if design == "shared" else build_multisite)(bundles, cfg, out_dir, progress)
