"""Import and export of ChampSim traces.

A ChampSim trace is a stream of 64-byte little-endian ``input_instr`` records (ChampSim
``inc/trace_instruction.h``; its Pin tracer ``tracer/pin/champsim_tracer.cpp`` writes them)::

    u64 ip; u8 is_branch; u8 branch_taken; u8 destination_registers[2]; u8 source_registers[4];
    u64 destination_memory[2]; u64 source_memory[4]

Empty register / memory slots are 0. Files are usually ``.xz``; ``.gz`` and uncompressed files are
read too (recognised by their magic bytes, whatever their name).

**Import** (:func:`import_champsim`) makes an ncf trace with flags BRANCH|CSREGS only: one static id
per distinct ip (no instruction bytes), the ``br`` column (bit0 is_branch, bit1 branch_taken) and
the ``csregs`` column (dst[2] then src[4]) as they are, and as memory records the nonzero
destination_memory slots (stores) then the nonzero source_memory slots (loads), in slot order.
ChampSim records no access sizes, so every access is recorded as 8 bytes (log2 size 3); no values.
is_branch and branch_taken are kept as booleans (the Pin tracer writes 0 or 1).

**Export** (:func:`export_champsim`) writes ChampSim records from any ncf trace:

* a trace with BRANCH and CSREGS columns (an import) is written back as it is: import -> export
  reproduces the original bytes whenever the original's slots are packed (nonzero slots first,
  which is how the Pin tracer writes them);
* otherwise the trace needs instruction bytes: each static instruction is decoded once with
  capstone. ``is_branch`` is set for every jump, conditional jump, loop, call and return (ChampSim
  sets it anyway for any record writing IP, see below);
  ``branch_taken`` for unconditional ones and for those whose next recorded instruction is not at
  ``pc + length`` (the trace's last instruction: taken only if unconditional). Stores fill
  destination_memory (at most 2), loads source_memory (at most 4), distinct addresses in access
  order as the Pin tracer does; further accesses, and registers beyond 2 dst / 4 src, are dropped
  and counted in the returned statistics.

Register ids are Pin ``REG`` enum values (Pin 3.x, Intel64; the ChampSim Pin tracer writes
``INS_RegR``/``INS_RegW`` unchanged). ChampSim itself only gives meaning to 6, 25 and 26. Partial
registers (eax, al, r8d, ...) are written as their full 64-bit register, so that ChampSim's
dependency tracking sees ``mov eax, ..`` -> ``add rax, ..`` (Pin would write REG_EAX = 56 etc.):

    =================  =========  =================================================
    Pin REG            id         capstone names mapped to it
    =================  =========  =================================================
    REG_RDI            3          rdi edi di dil
    REG_RSI            4          rsi esi si sil
    REG_RBP            5          rbp ebp bp bpl
    REG_RSP            6          rsp esp sp spl   (champsim::REG_STACK_POINTER)
    REG_RBX            7          rbx ebx bx bl bh
    REG_RDX            8          rdx edx dx dl dh
    REG_RCX            9          rcx ecx cx cl ch
    REG_RAX            10         rax eax ax al ah
    REG_R8..REG_R15    11..18     rN rNd rNw rNb
    REG_SEG_CS..GS     19..24     cs ss ds es fs gs
    REG_RFLAGS         25         rflags eflags flags  (champsim::REG_FLAGS)
    REG_RIP            26         rip eip ip  (champsim::REG_INSTRUCTION_POINTER)
    REG_MM0..7         83..90     mm0..mm7
    REG_XMM0..31       91..122    xmm0..xmm31
    REG_YMM0..31       123..154   ymm0..ymm31
    REG_ZMM0..31       155..186   zmm0..zmm31
    REG_K0..7          187..194   k0..k7
    =================  =========  =================================================

Other registers (x87 stack and status, mxcsr, control registers) are left out.

Branch registers are written so that ChampSim's branch-type inference (``inc/instruction.h``,
mirrored by :func:`champsim_branch_type`) recovers the capstone class:

    ================  ===========================  ==========================  ====================
    instruction       destination                  source                      ChampSim infers
    ================  ===========================  ==========================  ====================
    jcc/jrcxz/loop    IP (+ rcx for loop)          IP, FLAGS or rcx            BRANCH_CONDITIONAL
    jmp rel           IP                           IP                          BRANCH_DIRECT_JUMP
    jmp reg/mem       IP                           address registers           BRANCH_INDIRECT
    call rel          RSP, IP                      RSP, IP                     BRANCH_DIRECT_CALL
    call reg/mem      RSP, IP                      RSP, IP, address registers  BRANCH_INDIRECT_CALL
    ret / iret        RSP, IP                      RSP                         BRANCH_RETURN
    ================  ===========================  ==========================  ====================

Non-branches get capstone's registers read / written (FLAGS as a destination for cmp, test and
arithmetic) and never IP as a destination. A jump or call through a rip-relative memory operand
(``jmp *x(%rip)``, PLT stubs) has no address register, so ChampSim classifies it as a *direct*
jump / call -- exactly as it does for traces made with its Pin tracer.
"""
from __future__ import annotations

import gzip
import lzma
import os
import zlib
from enum import IntEnum
from pathlib import Path
from typing import Iterator, NamedTuple

import capstone
import numpy as np
from capstone import x86 as cx86
from ncf.trace_eval.format import (
    FLAG_BRANCH,
    FLAG_BYTES,
    FLAG_CSREGS,
    Chunk,
    StaticTable,
    NoTraceFile,
    TraceError,
    TraceReader,
    TraceWriter,
    file_info,
    sidecar_path,
)

from ncf.io import UsageError, atomic_path, check_output, file_sha256, write_json

RECORD = np.dtype([("ip", "<u8"), ("is_branch", "u1"), ("branch_taken", "u1"), ("dst_regs", "u1", 2),
                   ("src_regs", "u1", 4), ("dst_mem", "<u8", 2), ("src_mem", "<u8", 4)])
assert RECORD.itemsize == 64

REG_STACK_POINTER, REG_FLAGS, REG_INSTRUCTION_POINTER = 6, 25, 26
LOG2_SIZE = 3  # ChampSim has no access sizes: imports record every access as 8 bytes
XZ_MAGIC, GZ_MAGIC = b"\xfd7zXZ\x00", b"\x1f\x8b"


class BranchType(IntEnum):
    """ChampSim's ``enum branch_type`` (inc/instruction.h), same names and values."""
    BRANCH_DIRECT_JUMP = 0
    BRANCH_INDIRECT = 1
    BRANCH_CONDITIONAL = 2
    BRANCH_DIRECT_CALL = 3
    BRANCH_INDIRECT_CALL = 4
    BRANCH_RETURN = 5
    BRANCH_OTHER = 6
    NOT_BRANCH = 7


def champsim_branch_type(record) -> BranchType:
    """The branch type ChampSim infers for one record from its register lists alone
    (``ooo_model_instr``'s constructor in ChampSim's inc/instruction.h), first match wins."""
    dst = [int(r) for r in record["dst_regs"] if r]
    src = [int(r) for r in record["src_regs"] if r]
    writes_sp, writes_ip = REG_STACK_POINTER in dst, REG_INSTRUCTION_POINTER in dst
    reads_sp, reads_flags, reads_ip = (r in src for r in (REG_STACK_POINTER, REG_FLAGS, REG_INSTRUCTION_POINTER))
    reads_other = any(r not in (REG_STACK_POINTER, REG_FLAGS, REG_INSTRUCTION_POINTER) for r in src)
    B = BranchType
    if not reads_sp and not reads_flags and writes_ip and not reads_other:
        return B.BRANCH_DIRECT_JUMP
    if not reads_sp and not reads_ip and not reads_flags and writes_ip and reads_other:
        return B.BRANCH_INDIRECT
    if not reads_sp and reads_ip and not writes_sp and writes_ip and (reads_flags or reads_other):
        return B.BRANCH_CONDITIONAL
    if reads_sp and reads_ip and writes_sp and writes_ip and not reads_flags and not reads_other:
        return B.BRANCH_DIRECT_CALL
    if reads_sp and reads_ip and writes_sp and writes_ip and not reads_flags and reads_other:
        return B.BRANCH_INDIRECT_CALL
    if reads_sp and not reads_ip and writes_sp and writes_ip:
        return B.BRANCH_RETURN
    if writes_ip:
        return B.BRANCH_OTHER
    return B.NOT_BRANCH


# ------------------------------------------------------------------------------ register mapping
def _pin_register_ids() -> dict[str, int]:
    """capstone register name -> Pin REG id (the table in the module docstring)."""
    ids = {}
    legacy = {"rdi": "edi di dil", "rsi": "esi si sil", "rbp": "ebp bp bpl", "rsp": "esp sp spl",
              "rbx": "ebx bx bl bh", "rdx": "edx dx dl dh", "rcx": "ecx cx cl ch", "rax": "eax ax al ah"}
    for k, (full, parts) in enumerate(legacy.items()):
        for name in [full] + parts.split():
            ids[name] = 3 + k
    for k in range(8, 16):
        for suffix in ("", "d", "w", "b"):
            ids[f"r{k}{suffix}"] = 11 + k - 8
    for k, seg in enumerate("cs ss ds es fs gs".split()):
        ids[seg] = 19 + k
    ids.update(rflags=REG_FLAGS, eflags=REG_FLAGS, flags=REG_FLAGS, rip=26, eip=26, ip=26)
    for base, prefix, count in ((83, "mm", 8), (91, "xmm", 32), (123, "ymm", 32), (155, "zmm", 32), (187, "k", 8)):
        ids.update({f"{prefix}{k}": base + k for k in range(count)})
    return ids


class _Static(NamedTuple):
    kind: str | None      # None (not a branch), "cond", "jump", "ijump", "call", "icall", "ret"
    regs: tuple           # 6 register ids: dst[2] + src[4], zero-padded
    dropped_dst: int
    dropped_src: int
    ok: bool              # capstone could decode it


_UNCOND = ("jump", "ijump", "call", "icall", "ret")


class _Decoder:
    """Decodes static instructions with capstone once each (cached by sid)."""

    def __init__(self):
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.md.detail = True
        self.ids = _pin_register_ids()
        self.cache: dict[int, _Static] = {}

    def get(self, sid: int, static: StaticTable) -> _Static:
        s = self.cache.get(sid)
        if s is None:
            s = self.cache[sid] = self.decode(*static.code(sid))
        return s

    def decode(self, pc: int, code: bytes) -> _Static:
        insn = next(self.md.disasm(code, pc, 1), None)
        if insn is None:
            return _Static(None, (0,) * 6, 0, 0, False)
        reads, writes = insn.regs_access()
        rd = [self.ids.get(insn.reg_name(r)) for r in reads]
        wr = [self.ids.get(insn.reg_name(r)) for r in writes]
        groups = set(insn.groups)
        direct = any(op.type == cx86.X86_OP_IMM for op in insn.operands)
        SP, IP = REG_STACK_POINTER, REG_INSTRUCTION_POINTER
        addr_regs = [r for r in rd if r not in (SP, IP)]
        if groups & {capstone.CS_GRP_RET, capstone.CS_GRP_IRET}:
            kind, dst, src = "ret", [SP, IP], [SP]
        elif capstone.CS_GRP_CALL in groups:
            kind = "call" if direct else "icall"
            dst, src = [SP, IP], [SP, IP] + ([] if direct else addr_regs)
        elif groups & {capstone.CS_GRP_JUMP, capstone.CS_GRP_BRANCH_RELATIVE}:
            if insn.id in (cx86.X86_INS_JMP, cx86.X86_INS_LJMP):
                kind = "jump" if direct else "ijump"
                dst, src = [IP], [IP] if direct else addr_regs
            else:  # jcc, jrcxz, loop*: read FLAGS and/or rcx
                kind, dst, src = "cond", [IP] + wr, [IP] + rd
        else:
            kind, dst, src = None, [r for r in wr if r != IP], rd
        dst = list(dict.fromkeys(r for r in dst if r))
        src = list(dict.fromkeys(r for r in src if r))
        regs = (dst[:2] + [0] * 2)[:2] + (src[:4] + [0] * 4)[:4]
        return _Static(kind, tuple(regs), max(0, len(dst) - 2), max(0, len(src) - 4), True)


# ------------------------------------------------------------------------------------- reading
def _read_full(f, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        b = f.read(size - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def iter_champsim(path: str | os.PathLike, block: int = 1 << 16) -> Iterator[np.ndarray]:
    """Yield the records of a ChampSim trace (xz, gz or raw) as RECORD arrays of up to ``block``."""
    path = Path(path)
    if not path.is_file():
        raise NoTraceFile(f"{path}: {'is a directory, not a' if path.is_dir() else 'no such'} ChampSim trace file")
    with open(path, "rb") as f:
        magic = f.read(len(XZ_MAGIC))
    kind, opener = ("xz", lzma.open) if magic == XZ_MAGIC else ("gzip", gzip.open) if magic[:2] == GZ_MAGIC \
        else ("raw", open)
    n = 0
    try:
        with opener(path, "rb") as f:
            while True:
                buf = _read_full(f, block * RECORD.itemsize)
                whole, extra = divmod(len(buf), RECORD.itemsize)
                if extra:
                    raise TraceError(
                        f"{path}: not a ChampSim trace of whole records: the {kind} data holds "
                        f"{n + whole} whole 64-byte records and {extra} leftover bytes (truncated?)")
                if whole:
                    yield np.frombuffer(buf, RECORD)
                    n += whole
                if len(buf) < block * RECORD.itemsize:
                    break
    except (lzma.LZMAError, gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise TraceError(f"{path}: corrupt {kind} stream after {n} records: {e}") from None
    if n == 0:
        raise TraceError(f"{path}: empty ChampSim trace (no records)")


# ------------------------------------------------------------------------------------- import
def import_champsim(src: str | os.PathLike, dst: str | os.PathLike, chunk_insns: int = 1 << 16) -> Path:
    """Convert ChampSim trace ``src`` into ncf trace ``dst`` (+ sidecar), streaming, one chunk per
    ``chunk_insns`` records. Raises TraceError for a truncated, corrupt or empty file."""
    src, dst = Path(src), check_output(dst)
    w = TraceWriter(dst, FLAG_BRANCH | FLAG_CSREGS, chunk_insns=chunk_insns)
    sids: dict[int, int] = {}
    slot_info = np.array([0x80 | LOG2_SIZE] * 2 + [LOG2_SIZE] * 4, np.uint8)
    n = 0
    try:
        for rec in iter_champsim(src, chunk_insns):
            uip, inv = np.unique(rec["ip"], return_inverse=True)
            ids = np.empty(len(uip), np.uint32)
            for k, ip in enumerate(uip.tolist()):
                if ip not in sids:
                    sids[ip] = len(sids)
                    w.define(sids[ip], ip, b"")
                ids[k] = sids[ip]
            mem = np.concatenate([rec["dst_mem"], rec["src_mem"]], axis=1)  # stores, then loads
            used = mem != 0
            br = (rec["is_branch"] != 0).astype(np.uint8) | ((rec["branch_taken"] != 0).astype(np.uint8) << 1)
            w.add(ids[inv.reshape(-1)], used.sum(1), mem[used], np.broadcast_to(slot_info, mem.shape)[used],
                  br=br, csregs=np.concatenate([rec["dst_regs"], rec["src_regs"]], axis=1))
            n += len(rec)
    except BaseException:
        w.abort()
        raise
    w.close()
    write_json(sidecar_path(dst), {
        "format_version": 1,
        "source": f"ChampSim trace {src.name}",
        "imported_from": {"path": str(src), "sha256": file_sha256(src), "records": n},
        "file": file_info(dst),
        "available": {"registers": False, "memory_values": False, "instruction_bytes": False},
    })
    return dst


# ------------------------------------------------------------------------------------- export
def export_champsim(src_trace: str | os.PathLike, dst: str | os.PathLike, limit: int | None = None) -> dict:
    """Write ncf trace ``src_trace`` (its first ``limit`` instructions) as ChampSim trace ``dst``:
    xz (preset 1) when ``dst`` ends with .xz, gzip with .gz, else raw. Atomic and streaming.

    Returns statistics: records written and what did not fit a record (dropped_stores,
    dropped_loads, dropped_dst_regs, dropped_src_regs) or could not be decoded (undecodable).
    """
    if limit is not None and limit < 1:
        raise UsageError(f"limit {limit}: export at least 1 instruction (or no limit)")
    dst = check_output(dst)
    reader = TraceReader(src_trace)
    reader.require_instructions("ChampSim export")
    passthrough = reader.has(FLAG_BRANCH) and reader.has(FLAG_CSREGS)
    if not passthrough:
        reader.require(FLAG_BYTES, "ChampSim export")
    stats = dict(records=0, dropped_stores=0, dropped_loads=0, dropped_dst_regs=0, dropped_src_regs=0,
                 undecodable=0)
    decoder = _Decoder()
    with atomic_path(dst) as tmp:
        if dst.name.endswith(".xz"):
            out = lzma.open(tmp, "wb", preset=1)
        elif dst.name.endswith(".gz"):
            out = gzip.open(tmp, "wb", compresslevel=1)
        else:
            out = open(tmp, "wb")
        with out:
            for chunk, next_pc in _with_next_pc(reader.chunks()):
                keep = len(chunk.insn) if limit is None else min(len(chunk.insn), limit - stats["records"])
                if keep <= 0:
                    break
                if passthrough:
                    rec = _passthrough(chunk, keep)
                else:
                    rec = _decoded(chunk, keep, next_pc, reader.static, decoder, stats)
                _place_memory(rec, chunk, dedupe=not passthrough, stats=stats)
                out.write(rec.tobytes())
                stats["records"] += keep
    stats["path"] = str(dst)
    return stats


def _with_next_pc(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, int | None]]:
    """Each chunk with the pc of the instruction after it (None after the last)."""
    prev = None
    for chunk in chunks:
        if prev is not None and len(chunk.insn):
            yield prev, int(chunk.insn["pc"][0])
            prev = None
        if len(chunk.insn):
            prev = chunk
    if prev is not None:
        yield prev, None


def _passthrough(chunk: Chunk, keep: int) -> np.ndarray:
    ins = chunk.insn[:keep]
    rec = np.zeros(keep, RECORD)
    rec["ip"] = ins["pc"]
    rec["is_branch"], rec["branch_taken"] = ins["br"] & 1, (ins["br"] >> 1) & 1
    rec["dst_regs"], rec["src_regs"] = ins["csregs"][:, :2], ins["csregs"][:, 2:]
    return rec


def _decoded(chunk: Chunk, keep: int, next_pc: int | None, static: StaticTable, decoder: _Decoder,
             stats: dict) -> np.ndarray:
    ins = chunk.insn
    usid, inv = np.unique(ins["sid"], return_inverse=True)
    inv = inv.reshape(-1)
    infos = [decoder.get(int(s), static) for s in usid]
    is_br = np.array([i.kind is not None for i in infos])[inv]
    uncond = np.array([i.kind in _UNCOND for i in infos])[inv]
    pc = ins["pc"]
    fall = pc + static.len[ins["sid"]].astype(np.uint64)
    nxt = np.empty_like(pc)
    nxt[:-1] = pc[1:]
    nxt[-1] = fall[-1] if next_pc is None else next_pc
    taken = is_br & (uncond | (nxt != fall))
    regs = np.array([i.regs for i in infos], np.uint8).reshape(-1, 6)[inv]
    counts = inv[:keep]
    stats["dropped_dst_regs"] += int(np.array([i.dropped_dst for i in infos])[counts].sum())
    stats["dropped_src_regs"] += int(np.array([i.dropped_src for i in infos])[counts].sum())
    stats["undecodable"] += int((~np.array([i.ok for i in infos]))[counts].sum())
    rec = np.zeros(keep, RECORD)
    rec["ip"] = pc[:keep]
    rec["is_branch"], rec["branch_taken"] = is_br[:keep], taken[:keep]
    rec["dst_regs"], rec["src_regs"] = regs[:keep, :2], regs[:keep, 2:]
    return rec


def _place_memory(rec: np.ndarray, chunk: Chunk, dedupe: bool, stats: dict) -> None:
    """Stores -> destination_memory, loads -> source_memory, in access order (distinct addresses
    when ``dedupe``); what does not fit is counted. Address 0 cannot be written (it means empty)."""
    m = chunk.mem
    row = (m["insn"] - np.uint64(chunk.first)).astype(np.int64)
    for store, field, cap, key in ((True, "dst_mem", 2, "dropped_stores"), (False, "src_mem", 4, "dropped_loads")):
        sel = np.flatnonzero((m["store"] == store) & (m["addr"] != 0) & (row < len(rec)))
        if dedupe and len(sel):
            pairs = np.stack([row[sel].astype(np.uint64), m["addr"][sel]], axis=1)
            sel = sel[np.sort(np.unique(pairs, axis=0, return_index=True)[1])]
        r = row[sel]
        idx = np.arange(len(r))
        start = np.r_[True, r[1:] != r[:-1]] if len(r) else np.zeros(0, bool)
        rank = idx - np.maximum.accumulate(np.where(start, idx, 0))
        fits = rank < cap
        stats[key] += int((~fits).sum())
        rec[field][r[fits], rank[fits]] = m["addr"][sel][fits]
