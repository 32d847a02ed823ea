"""The ncf trace format (version 1): chunked, zstd-compressed, checksummed, read chunk by chunk.

A trace file ``X.ncft`` holds what a program executed; ``X.ncft.json`` beside it (the sidecar) says
what made it. The QEMU plugin (``native/qtrace.c``) writes this format from C; :class:`TraceWriter`
writes it from Python (ChampSim import, tests). Both sides follow this layout, little-endian, packed:

File header, 64 bytes::

    char magic[8] = "NCFTRACE"; u16 version = 1; u16 header_size = 64; u32 flags;
    u32 nreg = 18; u32 chunk_insns; u8 reserved[40]

Then chunks, each a 48-byte header followed by ``comp_size`` bytes of one zstd frame::

    char magic[4] = "NCFC"; u32 n_insn, n_mem, n_static, n_regval;
    u32 crc;           // crc32 of this header (crc field zeroed) followed by the compressed payload
    u64 first;         // index of the chunk's first instruction within the recording
    u64 raw_size, comp_size

The decompressed payload is a sequence of columns; a column exists only if its flag is set:

    ======================  ==================  ===========================================
    column                  type x count        flag
    ======================  ==================  ===========================================
    static                  STATIC x n_static   always: static instructions first seen here
    sid                     u32 x n_insn        always: static id of each instruction
    nmem                    u16 x n_insn        always: memory records of each instruction
    mask                    u32 x n_insn        REGS: bit r = register r changed (chunk's
                                                first instruction: all NREG bits)
    regval                  u64 x n_regval      REGS: the changed values, in order
    br                      u8  x n_insn        BRANCH: bit0 is-branch, bit1 taken
    csregs                  u8  x 6*n_insn      CSREGS: ChampSim dst[2] + src[4] register ids
    maddr                   u64 x n_mem         always: access address
    mval                    u64 x n_mem         VALUES: value loaded / stored (zero-extended)
    minfo                   u8  x n_mem         always: bits 0-3 log2(size), bit 7 store
    ======================  ==================  ===========================================

After the last chunk, a 64-byte end record; a file without it was cut short::

    char magic[4] = "NCFE"; u32 n_chunks; u64 n_insn, n_mem, n_static;
    u64 executed;      // instructions the program executed, skipped ones included (0: unknown)
    u64 dropped;       // memory records the recorder had to drop (must be 0)
    u32 crc;           // crc32 of the end record with this field zeroed
    u8 reserved[12]

Registers are the state *before* the instruction: rax rcx rdx rbx rsp rbp rsi rdi r8..r15 fs_base
gs_base. A static id (sid) names one translation of one pc; its bytes are what was executed.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zstandard

from ncf.io import DataError, UsageError, atomic_path, file_sha256

VERSION = 1
MAGIC = b"NCFTRACE"
CHUNK_MAGIC = b"NCFC"
END_MAGIC = b"NCFE"
SUFFIX = ".ncft"

FLAG_REGS, FLAG_VALUES, FLAG_BYTES, FLAG_BRANCH, FLAG_CSREGS = 1, 2, 4, 8, 16
FLAG_NAMES = {FLAG_REGS: "registers", FLAG_VALUES: "memory values", FLAG_BYTES: "instruction bytes",
              FLAG_BRANCH: "branch flags", FLAG_CSREGS: "ChampSim register ids"}

REGS = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15 fs_base gs_base".split()
NREG = len(REGS)

FILE_HDR = np.dtype([("magic", "S8"), ("version", "<u2"), ("header_size", "<u2"), ("flags", "<u4"),
                     ("nreg", "<u4"), ("chunk_insns", "<u4"), ("reserved", "u1", 40)])
CHUNK_HDR = np.dtype([("magic", "S4"), ("n_insn", "<u4"), ("n_mem", "<u4"), ("n_static", "<u4"),
                      ("n_regval", "<u4"), ("crc", "<u4"), ("first", "<u8"), ("raw_size", "<u8"),
                      ("comp_size", "<u8")])
END_REC = np.dtype([("magic", "S4"), ("n_chunks", "<u4"), ("n_insn", "<u8"), ("n_mem", "<u8"),
                    ("n_static", "<u8"), ("executed", "<u8"), ("dropped", "<u8"), ("crc", "<u4"),
                    ("reserved", "u1", 12)])
STATIC = np.dtype([("sid", "<u4"), ("len", "u1"), ("pad", "u1", 3), ("pc", "<u8"), ("bytes", "u1", 16)])
assert FILE_HDR.itemsize == 64 and CHUNK_HDR.itemsize == 48 and END_REC.itemsize == 64
assert STATIC.itemsize == 32

# Sidecar fields the stages read, and their JSON type
SIDECAR_FIELDS = {"file": dict, "input": dict, "window": dict, "argv": list, "selfcheck": dict}

MAX_CHUNK_INSNS = 1 << 20
MAX_RAW_SIZE = 1 << 30  # a chunk header asking for more than this is corrupt, not big


class TraceError(DataError):
    """A trace file (or its sidecar) cannot be read as it is; the message names file and problem."""


class NoTraceFile(TraceError, UsageError):
    """The path given as a trace names nothing, or a directory (a usage error, still a TraceError)."""


@dataclass
class Chunk:
    """One chunk, decoded.

    insn: structured array with idx (u8, global index), sid (u4), pc (u8), nmem (u2), mem0 (u8,
          index of the first memory record in ``mem``), and when present regs (u8 x NREG),
          br (u1), csregs (u1 x 6).
    mem:  structured array with insn (u8, global instruction index), addr, val (u8), size (u1),
          store (bool). ``val`` is 0 where the trace has no values.
    reg_mask, regval: the register-delta columns as stored (None without registers); with
          ``regs_at`` they give the registers of a few rows without expanding every row.
    """

    first: int
    insn: np.ndarray
    mem: np.ndarray
    reg_mask: np.ndarray | None = None
    regval: np.ndarray | None = None

    def regs_at(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), NREG) registers before the instructions at chunk rows ``rows``."""
        return regs_at(self.reg_mask, self.regval, np.asarray(rows, np.int64))


@dataclass
class Columns:
    """One chunk's columns as stored (see the table above), checked: sid, nmem, maddr and minfo
    always; mask, regval, br, csregs (n x 6) and mval are None where the trace has no such column."""

    first: int
    sid: np.ndarray
    nmem: np.ndarray
    mask: np.ndarray | None
    regval: np.ndarray | None
    br: np.ndarray | None
    csregs: np.ndarray | None
    maddr: np.ndarray
    mval: np.ndarray | None
    minfo: np.ndarray


def insn_dtype(flags: int) -> np.dtype:
    fields = [("idx", "<u8"), ("sid", "<u4"), ("pc", "<u8"), ("nmem", "<u2"), ("mem0", "<u8")]
    if flags & FLAG_REGS:
        fields.append(("regs", "<u8", NREG))
    if flags & FLAG_BRANCH:
        fields.append(("br", "u1"))
    if flags & FLAG_CSREGS:
        fields.append(("csregs", "u1", 6))
    return np.dtype(fields)


MEM = np.dtype([("insn", "<u8"), ("addr", "<u8"), ("val", "<u8"), ("size", "u1"), ("store", "?")])


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


# --------------------------------------------------------------------------------------- reading
class StaticTable:
    """sid -> (pc, bytes), grown as chunks introduce new static instructions."""

    def __init__(self):
        self.pc = np.zeros(0, np.uint64)
        self.len = np.zeros(0, np.uint8)
        self.bytes = np.zeros((0, 16), np.uint8)
        self.known = np.zeros(0, bool)

    def add(self, st: np.ndarray) -> None:
        if not len(st):
            return
        top = int(st["sid"].max()) + 1
        if top > len(self.pc):
            n = max(top, 2 * len(self.pc))
            for name, fill in (("pc", 0), ("len", 0), ("bytes", 0), ("known", False)):
                old = getattr(self, name)
                new = np.full((n,) + old.shape[1:], fill, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        sid = st["sid"].astype(np.int64)
        self.pc[sid], self.len[sid], self.bytes[sid], self.known[sid] = st["pc"], st["len"], st["bytes"], True

    def code(self, sid: int) -> tuple[int, bytes]:
        return int(self.pc[sid]), self.bytes[sid, : self.len[sid]].tobytes()

    def __len__(self) -> int:
        return int(self.known.sum())


class TraceReader:
    """Reads a trace chunk by chunk; memory use is bounded by one chunk whatever the trace length.

    Opening checks the header, the end record and (``verify=True``) the sidecar: the file's size
    and sha256 and the instruction count must be those the sidecar recorded. ``allow_truncated``
    reads the complete chunks of a file whose end record is missing (a recording cut short).
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True, allow_truncated: bool = False,
                 require_sidecar: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise NoTraceFile(f"{self.path}: {'is a directory, not a' if self.path.is_dir() else 'no such'} trace file")
        self.size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            raw = f.read(FILE_HDR.itemsize)
        if len(raw) < FILE_HDR.itemsize and MAGIC.startswith(raw[:8]):
            raise TraceError(f"{self.path}: truncated inside the file header ({len(raw)} of "
                             f"{FILE_HDR.itemsize} bytes)")
        if len(raw) < FILE_HDR.itemsize or raw[:8] != MAGIC:
            raise TraceError(f"{self.path}: not an ncf trace (bad magic {raw[:8]!r}; expected {MAGIC!r})")
        hdr = np.frombuffer(raw, FILE_HDR)[0]
        if int(hdr["version"]) != VERSION:
            raise TraceError(f"{self.path}: trace format version {int(hdr['version'])} is not supported "
                             f"(this ncf reads version {VERSION}); re-record it with this ncf")
        if int(hdr["header_size"]) != FILE_HDR.itemsize or int(hdr["nreg"]) != NREG:
            raise TraceError(f"{self.path}: corrupt file header (header_size {int(hdr['header_size'])}, "
                             f"nreg {int(hdr['nreg'])})")
        self.flags = int(hdr["flags"])
        self.chunk_insns = int(hdr["chunk_insns"])
        self.end = None  # until the end record is read: _count_good_chunks reads as if truncated
        self.end = self._read_end(allow_truncated)
        self.meta = self._read_sidecar(verify, require_sidecar)
        self.static = StaticTable()

    # -- opening checks
    def _read_end(self, allow_truncated: bool):
        if self.size >= FILE_HDR.itemsize + END_REC.itemsize:
            with open(self.path, "rb") as f:
                f.seek(self.size - END_REC.itemsize)
                raw = bytearray(f.read(END_REC.itemsize))
            if raw[:4] == END_MAGIC:
                end = np.frombuffer(bytes(raw), END_REC)[0]
                raw[48:52] = b"\0\0\0\0"
                if zlib.crc32(raw) != int(end["crc"]):
                    raise TraceError(f"{self.path}: corrupt end record (checksum mismatch)")
                return end
        if allow_truncated:
            return None
        good = self._count_good_chunks()
        raise TraceError(f"{self.path}: truncated: the file ends without its end record after "
                         f"{good[0]} complete chunks ({good[1]} instructions). The recording was cut "
                         "short; those chunks can still be read with allow_truncated=True "
                         "(`ncf inspect --allow-truncated`).")

    def _count_good_chunks(self) -> tuple[int, int]:
        n = insns = 0
        try:
            for hdr, _ in self._chunk_frames(check_crc=False):
                n, insns = n + 1, insns + int(hdr["n_insn"])
        except TraceError:
            pass
        return n, insns

    def _read_sidecar(self, verify: bool, required: bool) -> dict:
        sc = sidecar_path(self.path)
        if not sc.exists():
            if required:
                raise TraceError(f"{self.path}: sidecar {sc.name} is missing; every trace is written with "
                                 "one (pass require_sidecar=False to read a bare file)")
            return {}
        if not sc.is_file():
            raise TraceError(f"{sc}: the sidecar is a directory, not a JSON file")
        try:
            meta = json.loads(sc.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TraceError(f"{sc}: sidecar is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise TraceError(f"{sc}: sidecar is not a JSON object (found {type(meta).__name__})")
        for key, kind in SIDECAR_FIELDS.items():
            if key in meta and not isinstance(meta[key], kind):
                raise TraceError(f"{sc}: sidecar field {key!r} is not a JSON {'object' if kind is dict else 'array'}")
        if "workload" in meta:  # written by `ncf trace`: what was recorded
            missing = [k for k in ("input", "argv", "window") if k not in meta]
            if missing:
                raise TraceError(f"{sc}: sidecar of a {meta['workload']} recording lacks {', '.join(map(repr, missing))}")
        if not verify or self.end is None:  # a cut file (allow_truncated) cannot match its sidecar
            return meta
        want = meta.get("file", {})
        if meta.get("format_version") != VERSION:
            raise TraceError(f"{sc}: sidecar is for format version {meta.get('format_version')}, "
                             f"the file is version {VERSION}")
        if want.get("size") != self.size:
            raise TraceError(f"{sc}: sidecar does not match {self.path.name}: size {self.size} bytes, "
                             f"sidecar says {want.get('size')}")
        if self.end is not None and want.get("n_insn") != int(self.end["n_insn"]):
            raise TraceError(f"{sc}: sidecar does not match {self.path.name}: {int(self.end['n_insn'])} "
                             f"instructions, sidecar says {want.get('n_insn')}")
        sha = file_sha256(self.path)
        if want.get("sha256") != sha:
            raise TraceError(f"{sc}: sidecar does not match {self.path.name}: sha256 {sha[:16]}..., "
                             f"sidecar says {str(want.get('sha256'))[:16]}...")
        return meta

    # -- properties
    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def require(self, flag: int, stage: str) -> None:
        """Raise a clear error when ``stage`` needs a part of the trace this file does not have."""
        if not self.has(flag):
            src = self.meta.get("source", "this trace")
            why = (" (ChampSim traces carry no registers, values or instruction bytes)"
                   if str(src).startswith("ChampSim") else "")
            raise TraceError(f"{self.path}: {stage} needs {FLAG_NAMES[flag]}, which {src} does not "
                             f"record{why}; record the program with `ncf trace` instead")

    def require_instructions(self, stage: str) -> None:
        """Raise a clear error when ``stage`` is given a trace that holds no instructions."""
        if self.n_insn == 0:
            raise TraceError(f"{self.path}: the trace holds no instructions; {stage} needs at least one")

    @property
    def n_insn(self) -> int:
        return int(self.end["n_insn"]) if self.end is not None else self._count_good_chunks()[1]

    # -- chunk iteration
    def _chunk_frames(self, check_crc: bool = True) -> Iterator[tuple[np.void, bytes]]:
        """Yield (header, payload) of each chunk. Without an end record (allow_truncated) the
        frames stop at the first incomplete chunk: only complete chunks are yielded."""
        cut_short = self.end is None
        limit = self.size - (END_REC.itemsize if not cut_short else 0)
        with open(self.path, "rb") as f:
            f.seek(FILE_HDR.itemsize)
            k = 0
            while f.tell() < limit:
                pos = f.tell()
                raw = f.read(CHUNK_HDR.itemsize)
                if cut_short and (len(raw) < CHUNK_HDR.itemsize or raw[:4] == END_MAGIC):
                    return  # the cut (or a partial end record): the chunks before are all there is
                if len(raw) < CHUNK_HDR.itemsize:
                    raise TraceError(f"{self.path}: truncated inside the header of chunk {k} (byte {pos})")
                hdr = np.frombuffer(raw, CHUNK_HDR)[0]
                if hdr["magic"] != CHUNK_MAGIC:
                    raise TraceError(f"{self.path}: corrupt chunk {k} at byte {pos}: bad chunk magic "
                                     f"{bytes(hdr['magic'])!r}")
                comp = int(hdr["comp_size"])
                if comp > MAX_RAW_SIZE or int(hdr["raw_size"]) > MAX_RAW_SIZE or int(hdr["n_insn"]) > MAX_CHUNK_INSNS:
                    raise TraceError(f"{self.path}: corrupt chunk {k} at byte {pos}: impossible sizes")
                if not cut_short and pos + CHUNK_HDR.itemsize + comp > limit:
                    raise TraceError(f"{self.path}: corrupt chunk {k} at byte {pos}: its {comp} payload "
                                     "bytes run past the end record")
                payload = f.read(comp)
                if cut_short and len(payload) < comp:
                    return
                if len(payload) < comp:
                    raise TraceError(f"{self.path}: truncated inside chunk {k} (byte {pos}): "
                                     f"{len(payload)} of {comp} payload bytes")
                if check_crc:
                    zeroed = bytearray(raw)
                    zeroed[20:24] = b"\0\0\0\0"
                    if zlib.crc32(payload, zlib.crc32(zeroed)) != int(hdr["crc"]):
                        raise TraceError(f"{self.path}: corrupt chunk {k} at byte {pos} "
                                         f"(instructions {int(hdr['first'])}..): checksum mismatch")
                yield hdr, payload
                k += 1

    def chunks(self, registers: bool = True) -> Iterator[Chunk]:
        """Decode the chunks in order. The static table (``self.static``) grows as they are read.

        ``registers=False`` leaves out the register columns (faster, for stages that need none).
        """
        for cols in self.columns():
            yield self._expand(cols, registers)

    def columns(self) -> Iterator[Columns]:
        """The chunks' columns as stored, checked but not expanded (for compiled stages that read
        them as they are; ``chunks`` is this plus the expansion)."""
        self.static = StaticTable()
        dctx = zstandard.ZstdDecompressor()
        expect_first = 0
        n_chunks = 0
        for k, (hdr, payload) in enumerate(self._chunk_frames()):
            try:
                raw = dctx.decompress(payload, max_output_size=int(hdr["raw_size"]))
            except zstandard.ZstdError as e:
                raise TraceError(f"{self.path}: corrupt chunk {k}: zstd: {e}") from None
            if len(raw) != int(hdr["raw_size"]) or int(hdr["first"]) != expect_first:
                raise TraceError(f"{self.path}: corrupt chunk {k}: size or position does not match its header")
            cols = self._columns(hdr, raw, k)
            expect_first += len(cols.sid)
            n_chunks += 1
            yield cols
        if self.end is not None and (n_chunks != int(self.end["n_chunks"]) or expect_first != int(self.end["n_insn"])):
            raise TraceError(f"{self.path}: corrupt: {n_chunks} chunks / {expect_first} instructions read, "
                             f"end record says {int(self.end['n_chunks'])} / {int(self.end['n_insn'])}")

    def _columns(self, hdr, raw: bytes, k: int) -> Columns:
        n, nm, ns, nr = (int(hdr[f]) for f in ("n_insn", "n_mem", "n_static", "n_regval"))
        off = 0

        def take(dtype, count):
            nonlocal off
            size = np.dtype(dtype).itemsize * count
            if off + size > len(raw):
                raise TraceError(f"{self.path}: corrupt chunk {k}: columns overrun the payload")
            a = np.frombuffer(raw, dtype, count, off)
            off += size
            return a

        st = take(STATIC, ns)
        sid = take("<u4", n)
        nmem = take("<u2", n)
        mask = take("<u4", n) if self.flags & FLAG_REGS else None
        regval = take("<u8", nr) if self.flags & FLAG_REGS else None
        br = take("u1", n) if self.flags & FLAG_BRANCH else None
        csregs = take("u1", 6 * n).reshape(n, 6) if self.flags & FLAG_CSREGS else None
        maddr = take("<u8", nm)
        mval = take("<u8", nm) if self.flags & FLAG_VALUES else None
        minfo = take("u1", nm)
        if off != len(raw):
            raise TraceError(f"{self.path}: corrupt chunk {k}: {len(raw) - off} bytes after the last column")
        self.static.add(st)
        if n and (sid.max() >= len(self.static.known) or not self.static.known[sid].all()):
            raise TraceError(f"{self.path}: corrupt chunk {k}: instruction with an unknown static id")
        if int(nmem.sum(dtype=np.int64)) != nm:
            raise TraceError(f"{self.path}: corrupt chunk {k}: memory record counts do not add up")
        if mask is not None:
            check_reg_columns(mask, regval, self.path, k)
        return Columns(int(hdr["first"]), sid, nmem, mask, regval, br, csregs, maddr, mval, minfo)

    def _expand(self, c: Columns, registers: bool) -> Chunk:
        n = len(c.sid)
        ins = np.zeros(n, insn_dtype(self.flags if registers else self.flags & ~FLAG_REGS))
        ins["idx"] = np.arange(c.first, c.first + n, dtype=np.uint64)
        ins["sid"], ins["nmem"] = c.sid, c.nmem
        ins["pc"] = self.static.pc[c.sid]
        ins["mem0"][1:] = np.cumsum(c.nmem[:-1], dtype=np.uint64)
        if c.mask is not None and registers:
            ins["regs"] = expand_regs(c.mask, c.regval)
        if c.br is not None:
            ins["br"] = c.br
        if c.csregs is not None:
            ins["csregs"] = c.csregs
        mem = np.zeros(len(c.maddr), MEM)
        mem["insn"] = np.repeat(ins["idx"], c.nmem)
        mem["addr"] = c.maddr
        if c.mval is not None:
            mem["val"] = c.mval
        mem["size"] = np.left_shift(1, c.minfo & 0xF)
        mem["store"] = (c.minfo & 0x80) != 0
        return Chunk(c.first, ins, mem, c.mask, c.regval)


_POP16 = np.array([bin(i).count("1") for i in range(1 << 16)], np.int64)


def _value_offsets(mask: np.ndarray) -> np.ndarray:
    """Offset in ``regval`` of each row's first changed value."""
    counts = _POP16[mask & 0xFFFF] + _POP16[mask >> 16]
    offset = np.zeros(len(mask), np.int64)
    np.cumsum(counts[:-1], out=offset[1:])
    return offset


def regs_at(mask: np.ndarray, regval: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Registers of some rows of a chunk, straight from the delta columns (see expand_regs)."""
    offset = _value_offsets(mask)
    out = np.empty((len(rows), NREG), np.uint64)
    for r in range(NREG):
        changes = np.flatnonzero((mask >> r) & 1)               # row 0 is always among them
        last = changes[np.searchsorted(changes, rows, side="right") - 1]
        below = mask[last] & np.uint32((1 << r) - 1)
        out[:, r] = regval[offset[last] + _POP16[below & 0xFFFF] + _POP16[below >> 16]]
    return out


def check_reg_columns(mask: np.ndarray, regval: np.ndarray, path, k: int) -> None:
    """The delta columns are consistent: the first row sets every register, counts add up."""
    if len(mask) and (int(mask[0]) != (1 << NREG) - 1 or (mask >> NREG).any()):
        raise TraceError(f"{path}: corrupt chunk {k}: register masks are invalid")
    if int(np.bitwise_count(mask).sum(dtype=np.int64)) != len(regval):
        raise TraceError(f"{path}: corrupt chunk {k}: register values do not add up")


def expand_regs(mask: np.ndarray, regval: np.ndarray) -> np.ndarray:
    """Undo the register delta: (n,) change masks + packed changed values -> (n, NREG) registers.

    Values are packed row by row, ascending register within a row, so the value of register r
    changed at row i sits at offset[i] + popcount(mask[i] & (2**r - 1)).
    """
    n = len(mask)
    offset = _value_offsets(mask)
    rows = np.arange(n)
    out = np.empty((n, NREG), np.uint64)
    for r in range(NREG):
        changed = ((mask >> r) & 1).astype(bool)
        below = mask & np.uint32((1 << r) - 1)
        last = np.maximum.accumulate(np.where(changed, rows, 0))  # latest change at or before each row
        out[:, r] = regval[offset[last] + _POP16[below[last] & 0xFFFF] + _POP16[below[last] >> 16]]
    return out


# --------------------------------------------------------------------------------------- writing
@dataclass
class TraceWriter:
    """Writes a trace from Python, atomically: the file appears only when :meth:`close` succeeds.

    Used for imports (ChampSim) and tests; the QEMU plugin writes the same layout from C.
    Call :meth:`add` with columns for consecutive instructions, then :meth:`close`.
    """

    path: Path
    flags: int
    chunk_insns: int = MAX_CHUNK_INSNS
    level: int = 3
    _tmp_ctx: object = field(default=None, repr=False)
    _f: object = field(default=None, repr=False)
    _emitted: set = field(default_factory=set, repr=False)
    _static: dict = field(default_factory=dict, repr=False)
    n_insn: int = 0
    n_mem: int = 0
    n_chunks: int = 0

    def __post_init__(self):
        self.path = Path(self.path)
        self._tmp_ctx = atomic_path(self.path)
        tmp = self._tmp_ctx.__enter__()
        self._f = open(tmp, "wb")
        self._prev_regs = None
        hdr = np.zeros(1, FILE_HDR)
        hdr["magic"], hdr["version"], hdr["header_size"] = MAGIC, VERSION, FILE_HDR.itemsize
        hdr["flags"], hdr["nreg"], hdr["chunk_insns"] = self.flags, NREG, self.chunk_insns
        self._f.write(hdr.tobytes())
        self._cctx = zstandard.ZstdCompressor(level=self.level)

    def define(self, sid: int, pc: int, code: bytes = b"") -> None:
        """Declare static instruction ``sid``; it is written with the first chunk that uses it."""
        self._static[sid] = (pc, code[:16])

    def add(self, sid, nmem, maddr, minfo, regs=None, mval=None, br=None, csregs=None) -> None:
        """Append instructions (``regs``: (n, NREG) u64 before each instruction), split into chunks."""
        sid = np.asarray(sid, np.uint32)
        nmem = np.asarray(nmem, np.uint16)
        m0 = np.concatenate([[0], np.cumsum(nmem, dtype=np.int64)])
        for name, col, want in (("nmem", nmem, len(sid)), ("maddr", maddr, m0[-1]), ("minfo", minfo, m0[-1]),
                                ("regs", regs, len(sid)), ("mval", mval, m0[-1]), ("br", br, len(sid)),
                                ("csregs", csregs, len(sid))):
            if col is not None and len(col) != want:
                raise ValueError(f"{name} has {len(col)} rows, expected {int(want)} (from sid and nmem)")
        for a in range(0, len(sid), self.chunk_insns):
            b = min(a + self.chunk_insns, len(sid))
            sl = slice(int(m0[a]), int(m0[b]))
            self._chunk(sid[a:b], nmem[a:b], np.asarray(maddr, np.uint64)[sl], np.asarray(minfo, np.uint8)[sl],
                        None if regs is None else np.asarray(regs, np.uint64)[a:b],
                        None if mval is None else np.asarray(mval, np.uint64)[sl],
                        None if br is None else np.asarray(br, np.uint8)[a:b],
                        None if csregs is None else np.asarray(csregs, np.uint8)[a:b])

    def _chunk(self, sid, nmem, maddr, minfo, regs, mval, br, csregs):
        for flag, col in ((FLAG_REGS, regs), (FLAG_VALUES, mval), (FLAG_BRANCH, br), (FLAG_CSREGS, csregs)):
            if bool(self.flags & flag) != (col is not None):
                raise ValueError(f"column for {FLAG_NAMES[flag]} does not match the trace flags")
        new = [s for s in dict.fromkeys(sid.tolist()) if s not in self._emitted]
        missing = [s for s in new if s not in self._static]
        if missing:
            raise ValueError(f"static ids {missing[:5]} used before define()")
        st = np.zeros(len(new), STATIC)
        for i, s in enumerate(new):
            pc, code = self._static[s]
            st[i]["sid"], st[i]["pc"], st[i]["len"] = s, pc, len(code)
            st[i]["bytes"][: len(code)] = np.frombuffer(code, np.uint8)
        self._emitted.update(new)
        cols = [st.tobytes(), sid.tobytes(), nmem.tobytes()]
        n_regval = 0
        if regs is not None:
            prev = np.vstack([regs[:1] ^ np.uint64(1), regs[:-1]])  # first row: everything changes
            changed = regs != prev
            mask = (changed.astype(np.uint32) << np.arange(NREG, dtype=np.uint32)).sum(1).astype(np.uint32)
            vals = regs[changed]
            n_regval = len(vals)
            cols += [mask.tobytes(), vals.tobytes()]
        if br is not None:
            cols.append(br.tobytes())
        if csregs is not None:
            cols.append(csregs.reshape(-1).tobytes())
        cols.append(maddr.tobytes())
        if mval is not None:
            cols.append(mval.tobytes())
        cols.append(minfo.tobytes())
        raw = b"".join(cols)
        comp = self._cctx.compress(raw)
        hdr = np.zeros(1, CHUNK_HDR)
        hdr["magic"], hdr["n_insn"], hdr["n_mem"], hdr["n_static"], hdr["n_regval"] = (
            CHUNK_MAGIC, len(sid), len(maddr), len(st), n_regval)
        hdr["first"], hdr["raw_size"], hdr["comp_size"] = self.n_insn, len(raw), len(comp)
        hdr["crc"] = zlib.crc32(comp, zlib.crc32(hdr.tobytes()))
        self._f.write(hdr.tobytes())
        self._f.write(comp)
        self.n_insn += len(sid)
        self.n_mem += len(maddr)
        self.n_chunks += 1

    def close(self, executed: int = 0) -> Path:
        end = np.zeros(1, END_REC)
        end["magic"], end["n_chunks"], end["n_insn"], end["n_mem"] = END_MAGIC, self.n_chunks, self.n_insn, self.n_mem
        end["n_static"], end["executed"] = len(self._emitted), executed
        end["crc"] = zlib.crc32(end.tobytes())
        self._f.write(end.tobytes())
        self._f.close()
        self._tmp_ctx.__exit__(None, None, None)
        return self.path

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """``with TraceWriter(...) as w:`` closes on success and drops the file on any exception."""
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the half-written file."""
        self._f.close()
        try:
            raise RuntimeError("aborted")
        except RuntimeError as e:
            try:
                self._tmp_ctx.__exit__(type(e), e, e.__traceback__)
            except RuntimeError:
                pass


def zstd_levels() -> range:
    """The compression levels of the system's libzstd, which the QEMU plugin's ``level=`` accepts."""
    import ctypes

    lib = ctypes.CDLL("libzstd.so.1")
    return range(lib.ZSTD_minCLevel(), lib.ZSTD_maxCLevel() + 1)


def file_info(path: str | os.PathLike) -> dict:
    """What a sidecar records about the file itself (size, sha256, counts), read from the file."""
    r = TraceReader(path, verify=False, require_sidecar=False)
    end = r.end
    return {"size": r.size, "sha256": file_sha256(path), "n_insn": int(end["n_insn"]),
            "n_mem": int(end["n_mem"]), "n_chunks": int(end["n_chunks"]), "n_static": int(end["n_static"]),
            "executed": int(end["executed"]), "dropped_mem_records": int(end["dropped"]),
            "flags": [name for flag, name in FLAG_NAMES.items() if r.flags & flag]}
