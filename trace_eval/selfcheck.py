"""Self-check of a recorded trace: does what the tracer recorded agree with itself?

Each static instruction is decoded once with capstone (:class:`Decoder`); the per-instruction checks
run in C (native/selfcheck.c, at recording speed) or, as the reference, vectorised in numpy.

1. Address check. For every instruction with a memory operand, the effective address recomputed
   from the recorded registers (base + index*scale + disp; RIP-relative = next pc + disp; fs:/gs:
   add the recorded segment base; 32-bit addressing masked) must be one of its recorded access
   addresses. Implicit stack accesses too: push/call -> rsp-8, pop/ret -> rsp, leave -> rbp.
   xsave/xrstor & co. may skip state components: all their accesses must lie in [EA, EA+4096).
   Not checked (reported): lea/nop/prefetch (operand, no access) and VSIB gathers; a rep-prefixed
   string instruction (rep movs, repe cmps, ...) whose count register (rcx, or ecx with 32-bit
   addressing) is 0 runs no iteration and makes no access (reported with lea & co.).
2. Value check. mov/movzx reg <- [mem] and pop reg: the loaded value equals the destination
   register recorded before the *next* instruction; mov [mem] <- reg/imm and push: the stored value
   equals the source register or the immediate.

Together these prove the register reading, the value reading and the attribution of accesses to
instructions. The recorder is trusted only at 100%.
"""
from __future__ import annotations

import collections
import ctypes
from dataclasses import dataclass, field

import numpy as np
from capstone import x86

from .format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, NREG, TraceReader
from .native_lib import load_library
from .x86 import GPR, decode_each

Z = NREG  # index of an all-zero register column appended to the register matrix
NSLOT = 3  # up to 2 explicit memory operands + 1 implicit stack slot
NO_ACCESS = ("lea", "nop", "prefetch")  # memory operand but no access
REGION = ("xsave", "xrstor", "fxsave", "fxrstor")
REP = ("rep ", "repe ", "repne ", "repz ", "repnz ")   # string instructions repeated rcx times (maybe 0)
RCX = GPR["rcx"][0]   # the count register's column (selfcheck.c: RCX)
STACK = {"push": (4, -8), "pushfq": (4, -8), "call": (4, -8), "pop": (4, 0), "popfq": (4, 0),
         "ret": (4, 0), "leave": (5, 0)}

KIND_NONE, KIND_CHECKED, KIND_NO_ACCESS, KIND_UNSUPPORTED = 0, 1, 2, 3
M64 = 2**64 - 1


def _grown(a: np.ndarray, size: int, fill) -> np.ndarray:
    new = np.full((size,) + a.shape[1:], fill, a.dtype)
    new[: len(a)] = a
    return new


@dataclass(frozen=True)
class Formula:
    """What an instruction's bytes say, wherever it sits. ``slots``: (base, index, seg, scale, disp,
    RIP-relative, 32-bit addressing) per memory slot (register columns, Z for none); ``value``:
    (vkind, (column, bits, shift) of the register, immediate) or None."""

    mnem: str
    kind: int
    size: int = 0
    slots: tuple = ()
    region: bool = False
    value: tuple | None = None
    rep: bool = False      # a rep-prefixed string instruction: no access when its count register is 0


def formula(code: bytes, d) -> Formula:
    """The formula of an instruction's bytes ``code``, decoded by capstone as ``d`` (None: undecodable)."""
    if d is None:
        return Formula(f"(undecodable {code.hex()})", KIND_UNSUPPORTED)
    m = d.mnemonic
    stack = STACK.get(m.split()[-1])
    if "[" not in d.op_str and not stack:  # no memory operand (capstone prints each one as [..]):
        return Formula(m, KIND_NONE)       # no need for the operand details, the slow part of decoding
    mem = [o for o in d.operands if o.type == x86.X86_OP_MEM]
    if m.startswith(NO_ACCESS) or (not mem and not stack):
        return Formula(m, KIND_NO_ACCESS if mem else KIND_NONE)
    if len(mem) > 2:
        return Formula(m, KIND_UNSUPPORTED)
    slots = []
    for o in mem:
        b = d.reg_name(o.mem.base) if o.mem.base else None
        x = d.reg_name(o.mem.index) if o.mem.index else None
        s = d.reg_name(o.mem.segment) if o.mem.segment else None
        if (b not in GPR and b not in (None, "rip")) or (x is not None and x not in GPR):
            return Formula(m, KIND_UNSUPPORTED)  # VSIB (vector index) or 16-bit addressing
        a32 = 32 in {GPR[r][1] for r in (b, x) if r in GPR}
        seg = {"fs": 16, "gs": 17}.get(s, Z)
        slots.append((GPR[b][0] if b in GPR else Z, GPR[x][0] if x else Z, seg, o.mem.scale if x else 0,
                      o.mem.disp, b == "rip", a32))
    if stack:
        slots.append((stack[0], Z, Z, 0, stack[1], False, False))
    return Formula(m, KIND_CHECKED, d.size, tuple(slots), m.startswith(REGION), _value_formula(d, m),
                   m.startswith(REP))


def _value_formula(d, m: str) -> tuple | None:
    ops = d.operands
    if not ops:
        return None
    dst, src = ops[0], ops[-1]

    def reg(o):
        return GPR.get(d.reg_name(o.reg)) if o.type == x86.X86_OP_REG else None

    if m in ("mov", "movzx") and reg(dst) and src.type == x86.X86_OP_MEM:
        return 1, reg(dst), 0
    if m == "pop" and reg(dst) and reg(dst)[1] == 64 and reg(dst)[0] != 4:
        return 1, reg(dst), 0
    if (m == "mov" and dst.type == x86.X86_OP_MEM) or m == "push":
        if reg(src) and (m == "mov" or reg(src)[1] == 64):
            return 2, reg(src), 0
        if src.type == x86.X86_OP_IMM:
            return 3, (Z, 64 if m == "push" else src.size * 8, 0), src.imm
    return None


class Decoder:
    """Per-static-instruction address and value formulas, indexed by sid, filled on first sight."""

    def __init__(self):
        self.mnem: dict[int, str] = {}
        self._formulas: dict[bytes, Formula] = {}
        e = np.zeros(0)
        self.done = e.astype(bool)
        self.kind = e.astype(np.int8)
        self.base = self.index = self.seg = np.zeros((0, NSLOT), np.int64)
        self.scale = self.const = np.zeros((0, NSLOT), np.uint64)
        self.amask = np.zeros((0, NSLOT), np.uint64)
        self.valid = np.zeros((0, NSLOT), bool)
        self.region = e.astype(bool)
        self.rep = e.astype(bool)
        self.vkind = e.astype(np.int8)  # 1 load -> next regs, 2 store <- reg, 3 store <- imm
        self.vreg = e.astype(np.int64)
        self.vshift = self.vmask = self.vimm = e.astype(np.uint64)

    _FILL = {"done": False, "kind": 0, "base": Z, "index": Z, "seg": Z, "scale": 0, "const": 0,
             "amask": M64, "valid": False, "region": False, "rep": False, "vkind": 0, "vreg": Z, "vshift": 0,
             "vmask": 0, "vimm": 0}

    def ensure(self, sids: np.ndarray, static) -> None:
        """Decode every sid in ``sids`` not seen yet (``static``: a format.StaticTable)."""
        top = int(sids.max()) + 1 if len(sids) else 0
        if top > len(self.done):
            size = max(top, 2 * len(self.done), 1024)
            for name, fill in self._FILL.items():
                setattr(self, name, _grown(getattr(self, name), size, fill))
        seen = np.zeros(len(self.done), bool)
        seen[sids] = True
        new = [(int(sid), *static.code(int(sid))) for sid in np.flatnonzero(seen & ~self.done)]
        # the same bytes elsewhere (another pc, a retranslation) have the same formula
        todo = list(dict.fromkeys(code for _, _, code in new if code not in self._formulas))
        self._formulas.update(zip(todo, map(formula, todo, decode_each(todo))))
        for sid, pc, code in new:
            self._fill(sid, pc, self._formulas[code])

    def _fill(self, sid: int, pc: int, f: Formula) -> None:
        self.done[sid], self.mnem[sid], self.kind[sid], self.region[sid] = True, f.mnem, f.kind, f.region
        self.rep[sid] = f.rep
        for k, (b, x, seg, sc, disp, rip, a32) in enumerate(f.slots):
            self.base[sid, k], self.index[sid, k], self.seg[sid, k] = b, x, seg
            self.scale[sid, k], self.const[sid, k] = sc, (disp + (pc + f.size if rip else 0)) & M64
            self.amask[sid, k] = 0xFFFFFFFF if a32 else M64
            self.valid[sid, k] = True
        if f.value:
            vkind, (col, bits, shift), imm = f.value
            self.vkind[sid], self.vreg[sid], self.vshift[sid] = vkind, col, shift
            self.vmask[sid], self.vimm[sid] = (1 << bits) - 1, imm & M64

    def effective_addresses(self, sid: np.ndarray, regs: np.ndarray) -> np.ndarray:
        """(n, NSLOT) effective addresses of each instruction's memory slots from ``regs`` (n, NREG)
        taken before the instruction; meaningful where ``self.valid[sid]``."""
        n = len(sid)
        R = np.zeros((n, NREG + 1), np.uint64)
        R[:, :NREG] = regs
        rows = np.arange(n)[:, None]
        return (R[rows, self.base[sid]] + R[rows, self.index[sid]] * self.scale[sid]
                + R[rows, self.seg[sid]] + self.const[sid]) & self.amask[sid]


@dataclass
class CheckResult:
    counts: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)

    @property
    def addr_match_pct(self) -> float | None:
        """Percentage of checked addresses that match; None when there was nothing to check."""
        c = self.counts
        return round(100.0 * c["addr_match"] / c["addr_checked"], 6) if c["addr_checked"] else None

    @property
    def value_match_pct(self) -> float | None:
        c = self.counts
        return round(100.0 * c["value_match"] / c["value_checked"], 6) if c["value_checked"] else None

    @property
    def ok(self) -> bool:
        c = self.counts
        return (c["addr_checked"] > 0 and c["addr_match"] == c["addr_checked"]
                and c["value_match"] == c["value_checked"] and c["addr_no_access"] == 0)

    def as_dict(self) -> dict:
        return {**dict(self.counts), "addr_match_pct": self.addr_match_pct,
                "value_match_pct": self.value_match_pct, "ok": self.ok,
                "most_frequent_failures": dict(self.failures.most_common(8))}


def summary_text(s: dict) -> str:
    """A self-check result (``CheckResult.as_dict()``) in words; "no values to check" when none were."""
    def rate(what: str, checked: int, pct: float) -> str:
        return f"{what} {pct:.4f}% of {checked:,}" if checked else f"no {what} to check"

    return (f"{rate('addresses', s.get('addr_checked', 0), s.get('addr_match_pct'))}, "
            f"{rate('values', s.get('value_checked', 0), s.get('value_match_pct'))}"
            + (f", {s['unsupported']:,} unsupported" if s.get("unsupported") else ""))


COUNTS = ("insns", "mem_records", "addr_checked", "addr_match", "addr_no_access", "addr_mismatch",
          "skipped_no_access_ops", "unsupported", "value_checked", "value_match")
F_ADDRESS, F_NO_ACCESS, F_UNSUPPORTED, F_VALUE = 1, 2, 4, 8  # bits of an instruction's failures
FAILURES = ((F_ADDRESS, "address"), (F_NO_ACCESS, "no access"), (F_UNSUPPORTED, "unsupported"), (F_VALUE, "value"))


def check_trace(reader: TraceReader, progress=None, engine: str = "c") -> CheckResult:
    """Run both checks over every chunk of ``reader``. ``progress(n)`` is called per chunk.

    ``engine``: "c" (native/selfcheck.c, at recording speed) or "numpy" (the reference); both give
    the same result."""
    engines = {"c": _c_engine, "numpy": _numpy_engine}
    if engine not in engines:
        raise ValueError(f"unknown self-check engine {engine!r} (c or numpy)")
    for flag in (FLAG_REGS, FLAG_VALUES, FLAG_BYTES):
        reader.require(flag, "the self-check")
    reader.require_instructions("the self-check")
    dec = Decoder()
    res = CheckResult()
    for sid, counts, fail in engines[engine](reader, dec):
        for name, v in zip(COUNTS, counts):
            res.counts[name] += int(v)
        for bit, what in FAILURES:
            for x in sid[(fail & bit) != 0]:
                res.failures[f"{what}: {dec.mnem[int(x)]}"] += 1
        if progress:
            progress(len(sid))
    return res


def _numpy_engine(reader: TraceReader, dec: Decoder):
    """Per chunk: the sids, the counts (in the order of COUNTS) and each instruction's failure bits."""
    for ch in reader.chunks():
        ins, mem = ch.insn, ch.mem
        n = len(ins)
        sid = ins["sid"].astype(np.int64)
        dec.ensure(sid, reader.static)
        ea = dec.effective_addresses(sid, ins["regs"])
        local = np.repeat(np.arange(n), ins["nmem"].astype(np.int64))  # mem record -> row
        ok = np.ones(n, bool)
        for k in range(NSLOT):
            hit = np.bincount(local[mem["addr"] == ea[local, k]], minlength=n) > 0
            if k == 0:  # xsave & co: every access inside [EA, EA + 4096)
                out = np.bincount(local[mem["addr"] - ea[local, 0] >= 4096], minlength=n) > 0
                hit = np.where(dec.region[sid], ~out, hit)
            ok &= hit | ~dec.valid[sid, k]
        kind = dec.kind[sid]
        zero_count = dec.rep[sid] & (ins["nmem"] == 0) & ((ins["regs"][:, RCX] & dec.amask[sid, 0]) == 0)
        kind = np.where(zero_count, KIND_NO_ACCESS, kind)   # rep with rcx = 0: no iteration, no access
        checked = kind == KIND_CHECKED
        noacc = checked & (ins["nmem"] == 0)
        mism = checked & ~ok & ~noacc
        unsupported = kind == KIND_UNSUPPORTED
        fail = (mism * F_ADDRESS | noacc * F_NO_ACCESS | unsupported * F_UNSUPPORTED).astype(np.uint8)
        # value checks: instructions with exactly one access, not the chunk's last
        rows = np.arange(n)
        vk = dec.vkind[sid]
        sel = np.nonzero((vk > 0) & (ins["nmem"] == 1) & (rows < n - 1))[0]
        s = sid[sel]
        got = mem["val"][ins["mem0"][sel].astype(np.int64)] & dec.vmask[s]
        R = np.zeros((n, NREG + 1), np.uint64)
        R[:, :NREG] = ins["regs"]
        src_row = np.where(vk[sel] == 1, sel + 1, sel)
        want = np.where(vk[sel] == 3, dec.vimm[s], R[src_row, dec.vreg[s]] >> dec.vshift[s]) & dec.vmask[s]
        fail[sel[got != want]] |= F_VALUE
        yield sid, [n, len(mem), checked.sum(), (checked & ok).sum(), noacc.sum(), mism.sum(),
                    (kind == KIND_NO_ACCESS).sum(), unsupported.sum(), len(sel), (got == want).sum()], fail


_TABLES = ("kind", "base", "index", "seg", "scale", "const", "amask", "valid", "region", "rep", "vkind", "vreg",
           "vshift", "vmask", "vimm")  # the Decoder arrays, in the order of selfcheck.c's Tables


class _Tables(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _TABLES]


_lib = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = load_library("libselfcheck.so")
        p = ctypes.c_void_p
        lib.selfcheck_chunk.argtypes = [ctypes.POINTER(_Tables), ctypes.c_int64, p, p, p, p, p, p, p, p]
        lib.selfcheck_chunk.restype = None
        _lib = lib
    return _lib


def _c_engine(reader: TraceReader, dec: Decoder):
    """As _numpy_engine, in C, from the chunks' columns as stored (registers as deltas)."""
    lib = _load()
    for c in reader.columns():
        dec.ensure(c.sid, reader.static)
        tables = _Tables(*(getattr(dec, name).ctypes.data for name in _TABLES))  # ensure may grow them
        fail = np.empty(len(c.sid), np.uint8)
        counts = np.zeros(len(COUNTS), np.int64)
        lib.selfcheck_chunk(ctypes.byref(tables), len(c.sid), *(a.ctypes.data for a in (
            c.sid, c.nmem, c.mask, c.regval, c.maddr, c.mval, fail, counts)))
        yield c.sid, counts, fail
