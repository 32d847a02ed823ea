"""What the predictors see: the branch stream and the memory stream of a trace.

A branch's outcome comes from the trace itself: the instruction that executed next. For a trace
recorded by ncf the branch kind comes from decoding its bytes; for a ChampSim import, from the
record's branch flags and register lists, the way ChampSim infers it.

    br = branch_stream(TraceReader("traces/bzip2-0.ncft"))
    br.pc, br.target, br.taken, br.kind, br.idx     # one entry per executed branch
    mem = memory_stream(TraceReader(...))           # one entry per memory access
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import capstone
import numpy as np
from capstone import x86

from .branch_predictors import CALL, COND, IND_CALL, IND_JUMP, JUMP, RET
from .format import FLAG_BRANCH, FLAG_BYTES, Chunk, TraceError, TraceReader

NOT_BRANCH = 255
UNKNOWN = 254  # not decoded yet
KIND_NAMES = {COND: "conditional", JUMP: "jump", CALL: "call", RET: "return", IND_JUMP: "indirect jump",
              IND_CALL: "indirect call"}


@dataclass
class BranchStream:
    """Executed branches in order. ``idx`` is the instruction index of each branch in the trace."""

    idx: np.ndarray     # u8
    pc: np.ndarray      # u8
    target: np.ndarray  # u8: the pc that executed next
    taken: np.ndarray   # bool
    kind: np.ndarray    # u1
    n_insn: int         # instructions in the trace (the MPKI denominator)

    def __len__(self) -> int:
        return len(self.pc)

    @property
    def cond(self) -> np.ndarray:
        return self.kind == COND


@dataclass
class MemoryStream:
    """Memory accesses in order (loads and stores), with the pc and index of their instruction."""

    idx: np.ndarray       # u8 instruction index
    pc: np.ndarray        # u8
    addr: np.ndarray      # u8
    size: np.ndarray      # u1
    is_store: np.ndarray  # bool
    n_insn: int

    def __len__(self) -> int:
        return len(self.pc)


def classify(code: bytes, pc: int, md: capstone.Cs) -> tuple[int, int]:
    """(branch kind, instruction length) of one x86-64 instruction."""
    d = next(md.disasm(code, pc), None)
    if d is None:
        raise TraceError(f"undecodable instruction at {pc:#x}: {code.hex()}")
    if d.group(capstone.CS_GRP_RET) or d.mnemonic.startswith("iret"):
        return RET, d.size
    indirect = any(o.type in (x86.X86_OP_REG, x86.X86_OP_MEM) for o in d.operands)
    if d.group(capstone.CS_GRP_CALL):
        return (IND_CALL if indirect else CALL), d.size
    if d.group(capstone.CS_GRP_JUMP):
        if d.mnemonic == "jmp":
            return (IND_JUMP if indirect else JUMP), d.size
        return COND, d.size  # jcc, jrcxz/jecxz, loop/loope/loopne
    return NOT_BRANCH, d.size


def branch_stream(reader: TraceReader) -> BranchStream:
    """All executed branches of the trace (the last instruction is dropped: its successor is unknown)."""
    parts = [br for _, br in branch_chunks(reader)]
    if not parts:
        return BranchStream(*(np.zeros(0, t) for t in (np.uint64, np.uint64, np.uint64, bool, np.uint8)), n_insn=0)
    return BranchStream(*(np.concatenate([getattr(b, k) for b in parts]) for k in ("idx", "pc", "target", "taken",
                                                                                    "kind")),
                        n_insn=sum(b.n_insn for b in parts))


def branch_chunks(reader: TraceReader) -> Iterator[tuple[Chunk, BranchStream]]:
    """The trace chunk by chunk (without expanded registers), each with the branches whose successor
    is known by then: a chunk's last instruction, when it is a branch, comes with the next chunk
    (the trace's last instruction is dropped). ``n_insn`` of each part = its chunk's instructions."""
    held = None   # the previous chunk's last instruction, a branch waiting for its successor
    for ch, kind, fall, taken in _branch_kinds(reader):
        pc = ch.insn["pc"]
        is_br = kind != NOT_BRANCH
        nxt = np.zeros(len(pc), np.uint64)
        nxt[:-1] = pc[1:]
        cols = {"idx": ch.insn["idx"][is_br], "pc": pc[is_br], "target": nxt[is_br], "kind": kind[is_br],
                "fall": None if fall is None else fall[is_br], "taken": None if taken is None else taken[is_br]}
        if held is not None and len(pc):
            held["target"][:] = pc[0]
            cols = {k: None if v is None else np.concatenate([held[k], v]) for k, v in cols.items()}
            held = None
        if len(pc) and is_br[-1]:
            held = {k: None if v is None else v[-1:].copy() for k, v in cols.items()}
            cols = {k: None if v is None else v[:-1] for k, v in cols.items()}
        taken = cols["target"] != cols["fall"] if cols["taken"] is None else cols["taken"]
        yield ch, BranchStream(cols["idx"], cols["pc"], cols["target"], taken.astype(bool),
                               cols["kind"].astype(np.uint8), len(pc))


def _branch_kinds(reader: TraceReader):
    """Per chunk: (chunk, branch kind of each instruction, fall-through pc or None, taken or None)."""
    if reader.has(FLAG_BYTES):
        return _from_bytes(reader)
    if reader.has(FLAG_BRANCH):
        return _from_champsim(reader)
    reader.require(FLAG_BYTES, "the branch stream")
    raise AssertionError("unreachable")


def _from_bytes(reader: TraceReader):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    kind_of = np.zeros(0, np.uint8)
    for ch in reader.chunks(registers=False):
        sid = ch.insn["sid"].astype(np.int64)
        if len(sid) and sid.max() >= len(kind_of):
            grown = np.full(max(int(sid.max()) + 1, 2 * len(kind_of)), UNKNOWN, np.uint8)
            grown[: len(kind_of)] = kind_of
            kind_of = grown
        for s in np.unique(sid[kind_of[sid] == UNKNOWN]):
            pc, code = reader.static.code(int(s))
            kind_of[s] = classify(code, pc, md)[0]
        yield ch, kind_of[sid], ch.insn["pc"] + reader.static.len[sid].astype(np.uint64), None


def _from_champsim(reader: TraceReader):
    from .champsim import BranchType, champsim_branch_type

    to_kind = {BranchType.BRANCH_CONDITIONAL: COND, BranchType.BRANCH_DIRECT_JUMP: JUMP,
               BranchType.BRANCH_DIRECT_CALL: CALL, BranchType.BRANCH_RETURN: RET,
               BranchType.BRANCH_INDIRECT: IND_JUMP, BranchType.BRANCH_INDIRECT_CALL: IND_CALL}
    for ch in reader.chunks(registers=False):
        ins = ch.insn
        kind = np.full(len(ins), NOT_BRANCH, np.uint8)
        for i in np.nonzero(ins["br"] & 1)[0]:
            rec = {"dst_regs": ins["csregs"][i][:2], "src_regs": ins["csregs"][i][2:]}
            kind[i] = to_kind.get(champsim_branch_type(rec), NOT_BRANCH)
        yield ch, kind, None, (ins["br"] & 2) != 0


def memory_stream(reader: TraceReader) -> MemoryStream:
    """Every memory access in order, with its instruction's pc (works for ChampSim imports too)."""
    parts, n_insn = [], 0
    for ch in reader.chunks(registers=False):
        local = (ch.mem["insn"] - np.uint64(ch.first)).astype(np.int64)
        parts.append((ch.mem["insn"], ch.insn["pc"][local], ch.mem["addr"], ch.mem["size"], ch.mem["store"]))
        n_insn += len(ch.insn)
    empty = [np.zeros(0, t) for t in (np.uint64, np.uint64, np.uint64, np.uint8, bool)]  # a trace without accesses
    cols = [np.concatenate([p[k] for p in parts]) for k in range(5)] if parts else empty
    return MemoryStream(*cols, n_insn=n_insn)
