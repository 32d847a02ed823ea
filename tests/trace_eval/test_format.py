"""Tests for the ncf trace format v1 (``ncf.trace_eval.format``): round trip, missing parts, bad input,
atomic writing and chunk-by-chunk reading. Traces are small and synthetic, written with TraceWriter."""
from __future__ import annotations

import inspect
import json
import os
import tracemalloc
import zlib

import numpy as np
import pytest
from ncf.trace_eval.format import (
    CHUNK_HDR,
    END_REC,
    FILE_HDR,
    FLAG_BRANCH,
    FLAG_BYTES,
    FLAG_CSREGS,
    FLAG_REGS,
    FLAG_VALUES,
    NREG,
    VERSION,
    TraceError,
    TraceReader,
    TraceWriter,
    file_info,
    sidecar_path,
)

from ncf.io import write_json

FULL = FLAG_REGS | FLAG_VALUES | FLAG_BYTES
CHAMPSIM = FLAG_BRANCH | FLAG_CSREGS


# ------------------------------------------------------------------------------------- helpers
def synth(n: int, flags: int, seed: int = 0, n_static: int = 40) -> dict:
    """Columns of a plausible program run: a few hot static instructions, sparse register changes,
    memory records of sizes 1/2/4/8 (loads and stores) with values that fit their size."""
    rng = np.random.default_rng(seed)
    # sparse, unordered static ids so the reader's static table has to grow and index by id
    sids = rng.choice(5000, n_static, replace=False).astype(np.uint32)
    pcs = 0x400000 + np.sort(rng.choice(1 << 20, n_static, replace=False)).astype(np.uint64)
    pcs[-1] = 0xFFFF_FFFF_FF60_0000  # a kernel-half address: the full u64 range survives
    codes = {int(s): rng.integers(0, 256, rng.integers(1, 17), dtype=np.uint8).tobytes() for s in sids}
    static = {int(s): (int(p), codes[int(s)]) for s, p in zip(sids, pcs)}
    sid = sids[rng.integers(0, n_static, n)]
    nmem = rng.choice(np.array([0, 0, 0, 1, 1, 2, 3], np.uint16), n)
    if n > 5:
        nmem[5] = 70  # one rep-movs-like instruction with many records
    nm = int(nmem.sum())
    log2 = rng.integers(0, 4, nm).astype(np.uint8)
    store = rng.random(nm) < 0.3
    minfo = (log2 | (store.astype(np.uint8) << 7)).astype(np.uint8)
    maddr = rng.integers(0, 1 << 63, nm, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, nm).astype(np.uint64)
    size = (1 << log2.astype(np.uint64)).astype(np.uint64)
    bits = size * np.uint64(8)
    full = rng.integers(0, 1 << 63, nm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    mval = np.where(bits == 64, full, full & ((np.uint64(1) << np.minimum(bits, np.uint64(63))) - np.uint64(1)))
    cols = dict(sid=sid, nmem=nmem, maddr=maddr, minfo=minfo, size=size.astype(np.uint8), store=store,
                static=static)
    if flags & FLAG_REGS:
        # registers before each instruction: ~10% change per instruction, rsp more often; some
        # "changes" rewrite the same value (the delta must not depend on that)
        vals = rng.integers(0, 1 << 63, (n, NREG), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        changed = rng.random((n, NREG)) < 0.1
        changed[:, 4] |= rng.random(n) < 0.5
        if n:
            changed[0] = True
        last = np.maximum.accumulate(np.where(changed, np.arange(n)[:, None], 0), axis=0)
        regs = vals[last, np.arange(NREG)]
        cols["regs"] = regs
    if flags & FLAG_VALUES:
        cols["mval"] = mval
    if flags & FLAG_BRANCH:
        is_br = rng.random(n) < 0.2
        cols["br"] = (is_br | ((is_br & (rng.random(n) < 0.6)) << 1)).astype(np.uint8)
    if flags & FLAG_CSREGS:
        cols["csregs"] = rng.integers(0, 64, (n, 6), dtype=np.uint8)
    return cols


def write_sidecar(path, **extra) -> None:
    """The sidecar a real recording writes beside its trace."""
    write_json(sidecar_path(path), {"format_version": VERSION, "file": file_info(path),
                                    "source": "synthetic test program", **extra})


def write_trace(path, cols: dict, flags: int, chunk_insns: int = 1000, executed: int = 0,
                sidecar: bool = True):
    w = TraceWriter(path, flags, chunk_insns=chunk_insns)
    for s, (pc, code) in cols["static"].items():
        w.define(s, pc, code)
    w.add(cols["sid"], cols["nmem"], cols["maddr"], cols["minfo"], regs=cols.get("regs"),
          mval=cols.get("mval"), br=cols.get("br"), csregs=cols.get("csregs"))
    w.close(executed=executed)
    if sidecar:
        write_sidecar(path)
    return path


def make(tmp_path, n=3500, flags=FULL, seed=0, chunk_insns=1000, name="t.ncft"):
    cols = synth(n, flags, seed)
    return write_trace(tmp_path / name, cols, flags, chunk_insns), cols


def read_all(reader: TraceReader):
    chunks = list(reader.chunks())
    return chunks, np.concatenate([c.insn for c in chunks]), np.concatenate([c.mem for c in chunks])


def layout(path) -> list[tuple[int, int]]:
    """(header offset, payload size) of each chunk, walked from the raw bytes."""
    data = path.read_bytes()
    out, pos = [], FILE_HDR.itemsize
    while data[pos:pos + 4] == b"NCFC":
        hdr = np.frombuffer(data, CHUNK_HDR, 1, pos)[0]
        out.append((pos, int(hdr["comp_size"])))
        pos += CHUNK_HDR.itemsize + int(hdr["comp_size"])
    assert data[pos:pos + 4] == b"NCFE" and pos + END_REC.itemsize == len(data)
    return out


def patch(path, offset: int, new: bytes | None = None, xor: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    if xor is not None:
        data[offset] ^= xor
    else:
        data[offset:offset + len(new)] = new
    path.write_bytes(bytes(data))


def assert_matches(insn, mem, cols, flags, n_upto=None):
    """Columns read back equal the written ones (for the first ``n_upto`` instructions)."""
    n = len(cols["sid"]) if n_upto is None else n_upto
    nm = int(cols["nmem"][:n].sum(dtype=np.int64))
    assert len(insn) == n and len(mem) == nm
    np.testing.assert_array_equal(insn["idx"], np.arange(n))
    np.testing.assert_array_equal(insn["sid"], cols["sid"][:n])
    np.testing.assert_array_equal(insn["nmem"], cols["nmem"][:n])
    np.testing.assert_array_equal(insn["pc"], [cols["static"][int(s)][0] for s in cols["sid"][:n]])
    np.testing.assert_array_equal(mem["insn"], np.repeat(np.arange(n), cols["nmem"][:n].astype(np.int64)))
    np.testing.assert_array_equal(mem["addr"], cols["maddr"][:nm])
    np.testing.assert_array_equal(mem["size"], cols["size"][:nm])
    np.testing.assert_array_equal(mem["store"], cols["store"][:nm])
    np.testing.assert_array_equal(mem["val"], cols["mval"][:nm] if flags & FLAG_VALUES else 0)
    assert ("regs" in insn.dtype.names) == bool(flags & FLAG_REGS)
    if flags & FLAG_REGS:
        np.testing.assert_array_equal(insn["regs"], cols["regs"][:n])
    assert ("br" in insn.dtype.names) == bool(flags & FLAG_BRANCH)
    if flags & FLAG_BRANCH:
        np.testing.assert_array_equal(insn["br"], cols["br"][:n])
    assert ("csregs" in insn.dtype.names) == bool(flags & FLAG_CSREGS)
    if flags & FLAG_CSREGS:
        np.testing.assert_array_equal(insn["csregs"], cols["csregs"][:n])


def raises(match_all: list[str], fn, *a, **kw) -> str:
    """Call fn, expect a TraceError whose message contains every string of ``match_all``."""
    with pytest.raises(TraceError) as ei:
        r = fn(*a, **kw)
        if isinstance(r, TraceReader):
            list(r.chunks())
    msg = str(ei.value)
    words = msg
    for s in match_all:
        assert s.lower() in msg.lower(), f"{s!r} not in {msg!r}"
        if os.sep in s:
            words = words.replace(s, "")  # the test's tmp path names the test: check words without it
    for s in match_all:
        assert s.lower() in words.lower() or os.sep in s, f"{s!r} not in {msg!r} (outside the path)"
    return words


# ------------------------------------------------------------------------------------- round trip
def test_round_trip_every_column_across_chunk_boundaries(tmp_path):
    path, cols = make(tmp_path, n=3500, flags=FULL | FLAG_BRANCH, chunk_insns=1000)
    r = TraceReader(path)
    chunks, insn, mem = read_all(r)
    assert [c.first for c in chunks] == [0, 1000, 2000, 3000]
    assert [len(c.insn) for c in chunks] == [1000, 1000, 1000, 500]
    assert_matches(insn, mem, cols, FULL | FLAG_BRANCH)


def test_registers_are_rebuilt_from_deltas_at_each_chunk_start(tmp_path):
    # registers that never change after the first instruction: each chunk must still carry them
    cols = synth(2500, FULL, seed=3)
    cols["regs"][:] = cols["regs"][0]
    path = write_trace(tmp_path / "flat.ncft", cols, FULL, chunk_insns=1000)
    chunks, insn, mem = read_all(TraceReader(path))
    assert len(chunks) == 3
    assert_matches(insn, mem, cols, FULL)


def test_mem0_indexes_the_chunks_own_mem_array(tmp_path):
    path, cols = make(tmp_path, n=3200, chunk_insns=1000)
    mem_base = 0
    for ch in TraceReader(path).chunks():
        assert ch.insn["mem0"][0] == 0
        for i in np.flatnonzero(ch.insn["nmem"]):
            a, k = int(ch.insn["mem0"][i]), int(ch.insn["nmem"][i])
            recs = ch.mem[a:a + k]
            assert (recs["insn"] == ch.insn["idx"][i]).all()
            np.testing.assert_array_equal(recs["addr"], cols["maddr"][mem_base + a:mem_base + a + k])
        last = len(ch.insn) - 1
        assert int(ch.insn["mem0"][last]) + int(ch.insn["nmem"][last]) == len(ch.mem)
        mem_base += len(ch.mem)
    assert mem_base == int(cols["nmem"].sum())


def test_static_table_returns_pc_and_bytes(tmp_path):
    path, cols = make(tmp_path, n=2000)
    r = TraceReader(path)
    read_all(r)
    used = {int(s) for s in cols["sid"]}
    assert len(r.static) == len(used) == int(r.end["n_static"])
    for s in used:
        assert r.static.code(s) == cols["static"][s]


def test_end_record_and_file_info_count_what_was_written(tmp_path):
    cols = synth(2100, FULL, seed=4)
    path = write_trace(tmp_path / "t.ncft", cols, FULL, chunk_insns=1000, executed=123456)
    r = TraceReader(path)
    info = file_info(path)
    assert r.n_insn == info["n_insn"] == 2100
    assert info["n_chunks"] == 3 and info["n_mem"] == int(cols["nmem"].sum())
    assert info["executed"] == 123456 and info["dropped_mem_records"] == 0
    assert info["size"] == path.stat().st_size
    assert set(info["flags"]) == {"registers", "memory values", "instruction bytes"}
    assert r.meta["file"] == info and r.chunk_insns == 1000


def test_writer_splits_each_add_call_into_chunks(tmp_path):
    cols = synth(2300, FULL, seed=5)
    w = TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=1000)
    for s, (pc, code) in cols["static"].items():
        w.define(s, pc, code)
    m0 = np.concatenate([[0], np.cumsum(cols["nmem"], dtype=np.int64)])
    for a, b in ((0, 700), (700, 2300)):
        w.add(cols["sid"][a:b], cols["nmem"][a:b], cols["maddr"][m0[a]:m0[b]], cols["minfo"][m0[a]:m0[b]],
              regs=cols["regs"][a:b], mval=cols["mval"][m0[a]:m0[b]])
    path = w.close()
    write_sidecar(path)
    _, insn, mem = read_all(TraceReader(path))
    assert_matches(insn, mem, cols, FULL)


def test_empty_trace_reads_as_no_chunks(tmp_path):
    path, cols = make(tmp_path, n=0)
    r = TraceReader(path)
    assert r.n_insn == 0 and list(r.chunks()) == []


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_random_traces_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    chunk_insns = int(rng.choice([1, 7, 64, 1000]))
    n = int(rng.choice([1, chunk_insns, 3 * chunk_insns, int(rng.integers(1, 4000))]))
    flags = int(rng.integers(0, 32))
    cols = synth(n, flags, seed=seed, n_static=int(rng.integers(1, 60)))
    path = write_trace(tmp_path / f"r{seed}.ncft", cols, flags, chunk_insns=chunk_insns)
    r = TraceReader(path)
    assert r.flags == flags
    chunks, insn, mem = read_all(r)
    assert len(chunks) == -(-n // chunk_insns)
    assert all(len(c.insn) == chunk_insns for c in chunks[:-1])
    assert_matches(insn, mem, cols, flags)


# ------------------------------------------------------------------------------------- missing parts
def test_champsim_like_trace_without_regs_or_values_reads(tmp_path):
    cols = synth(2500, CHAMPSIM, seed=7)
    path = tmp_path / "cs.ncft"
    write_trace(path, cols, CHAMPSIM, sidecar=False)
    write_sidecar(path, source="ChampSim trace 600.perlbench_s-210B.champsimtrace.xz")
    r = TraceReader(path)
    assert not r.has(FLAG_REGS) and not r.has(FLAG_VALUES) and r.has(FLAG_BRANCH)
    _, insn, mem = read_all(r)
    assert_matches(insn, mem, cols, CHAMPSIM)
    r.require(FLAG_BRANCH, "branch model")  # present: no error
    msg = raises([str(path), "dataset", "registers", "ChampSim trace 600"], r.require, FLAG_REGS, "dataset")
    assert "ncf trace" in msg
    raises([str(path), "prefetch labels", "memory values"], r.require, FLAG_VALUES, "prefetch labels")
    raises([str(path), "instruction bytes"], r.require, FLAG_BYTES, "tokenizer")


# ------------------------------------------------------------------------------------- bad input
def cut_points(path) -> dict[str, int]:
    chunks = layout(path)
    size = path.stat().st_size
    return {"in file magic": 5, "in file header": 30, "in chunk header": chunks[2][0] + 20,
            "in payload": chunks[2][0] + CHUNK_HDR.itemsize + chunks[2][1] // 2,
            "before end record": size - END_REC.itemsize, "in end record": size - 20}


CUTS = ["in file magic", "in file header", "in chunk header", "in payload", "before end record",
        "in end record"]


@pytest.mark.parametrize("where", CUTS)
def test_truncated_file_is_a_clear_error(tmp_path, where):
    path, _ = make(tmp_path, n=3500)
    cut = cut_points(path)[where]
    path.write_bytes(path.read_bytes()[:cut])
    raises([str(path), "truncated"], TraceReader, path)
    raises([str(path), "truncated"], TraceReader, path, require_sidecar=False)


@pytest.mark.parametrize("where", ["in chunk header", "in payload", "before end record", "in end record"])
def test_allow_truncated_reads_the_complete_chunks_before_the_cut(tmp_path, where):
    path, cols = make(tmp_path, n=3500)
    complete = {"in chunk header": 2, "in payload": 2, "before end record": 4, "in end record": 4}[where]
    cut = cut_points(path)[where]
    path.write_bytes(path.read_bytes()[:cut])
    os.unlink(sidecar_path(path))  # a recording cut short has no sidecar
    msg = raises([f"{complete} complete chunks"], TraceReader, path)
    assert "allow_truncated" in msg
    r = TraceReader(path, allow_truncated=True, require_sidecar=False)
    assert r.end is None and r.n_insn == min(1000 * complete, 3500)
    chunks, insn, mem = read_all(r)
    assert len(chunks) == complete
    assert_matches(insn, mem, cols, FULL, n_upto=min(1000 * complete, 3500))


def test_allow_truncated_still_reports_a_corrupt_chunk(tmp_path):
    path, _ = make(tmp_path, n=3500)
    pos, comp = layout(path)[1]
    data = bytearray(path.read_bytes()[:layout(path)[3][0] + 30])
    data[pos + CHUNK_HDR.itemsize + comp // 2] ^= 0x10
    path.write_bytes(bytes(data))
    os.unlink(sidecar_path(path))
    r = TraceReader(path, allow_truncated=True, require_sidecar=False)
    raises([str(path), "chunk 1", "checksum"], lambda: list(r.chunks()))


def test_flipped_payload_byte_fails_the_checksum(tmp_path):
    path, _ = make(tmp_path, n=3500)
    pos, comp = layout(path)[1]
    patch(path, pos + CHUNK_HDR.itemsize + comp // 2, xor=0x04)
    write_sidecar(path)  # sidecar of the damaged file: the chunk checksum must catch it by itself
    r = TraceReader(path)
    it = r.chunks()
    assert len(next(it).insn) == 1000  # chunk 0 is intact and still read
    raises([str(path), "chunk 1", "checksum"], lambda: next(it))


@pytest.mark.parametrize("offset,what", [(0, "magic"), (4, "checksum"), (9, "checksum"), (20, "checksum"),
                                         (28, "checksum"), (32, "checksum"), (40, ""), (41, ""), (42, "past the end"),
                                         (46, "impossible")])
def test_flipped_chunk_header_byte_is_a_corrupt_chunk(tmp_path, offset, what):
    path, _ = make(tmp_path, n=3500)
    for k in (0, 3):  # the first and the last chunk
        p = tmp_path / f"c{k}.ncft"
        p.write_bytes(path.read_bytes())
        patch(p, layout(p)[k][0] + offset, xor=0x40)
        write_sidecar(p)
        msg = raises([str(p), f"corrupt chunk {k}", what], TraceReader, p)
        assert "truncated" not in msg  # the file is whole; its chunk is damaged


def test_unknown_version_names_both_versions(tmp_path):
    path, _ = make(tmp_path, n=100)
    patch(path, 8, np.uint16(7).tobytes())
    msg = raises([str(path), "version 7", f"version {VERSION}"], TraceReader, path)
    assert "not supported" in msg


def test_corrupt_file_header_fields(tmp_path):
    path, _ = make(tmp_path, n=100)
    patch(path, 16, np.uint32(17).tobytes())  # nreg
    raises([str(path), "corrupt file header"], TraceReader, path)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a trace\n" * 10, b"\x28\xb5\x2f\xfd" + bytes(200),
                                     b"NCFTRAC"])
def test_not_a_trace_file(tmp_path, content):
    path = tmp_path / "x.ncft"
    path.write_bytes(content)
    msg = raises([str(path)], TraceReader, path, require_sidecar=False)
    if content[:7] == b"NCFTRAC"[:len(content[:7])]:
        assert "truncated" in msg or "empty" in msg
    else:
        assert "not an ncf trace" in msg


def test_missing_file(tmp_path):
    raises([str(tmp_path / "nope.ncft"), "no such"], TraceReader, tmp_path / "nope.ncft")


@pytest.mark.parametrize("field,value,words", [
    ("sha256", "0" * 64, ["sha256"]), ("size", 12, ["size", "12"]), ("n_insn", 9999, ["instructions", "9999"])])
def test_sidecar_that_does_not_match_the_file(tmp_path, field, value, words):
    path, _ = make(tmp_path, n=1500)
    sc = sidecar_path(path)
    meta = json.loads(sc.read_text())
    meta["file"][field] = value
    sc.write_text(json.dumps(meta))
    raises([str(sc), path.name, "does not match", *words], TraceReader, path)
    TraceReader(path, verify=False)  # opening without verification still works


def test_sidecar_of_another_format_version(tmp_path):
    path, _ = make(tmp_path, n=100)
    sc = sidecar_path(path)
    meta = json.loads(sc.read_text())
    meta["format_version"] = 2
    sc.write_text(json.dumps(meta))
    raises([str(sc), "version 2"], TraceReader, path)


def test_sidecar_of_a_modified_file_same_size(tmp_path):
    path, _ = make(tmp_path, n=1500)
    pos, comp = layout(path)[0]
    patch(path, pos + CHUNK_HDR.itemsize + 3, xor=1)
    raises([str(sidecar_path(path)), "sha256"], TraceReader, path)


def test_missing_sidecar(tmp_path):
    path, cols = make(tmp_path, n=1500)
    os.unlink(sidecar_path(path))
    raises([str(path), sidecar_path(path).name, "missing"], TraceReader, path)
    _, insn, mem = read_all(TraceReader(path, require_sidecar=False))
    assert_matches(insn, mem, cols, FULL)


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe garbage", "", "[1, 2, 3]", "null", '"a string"'])
def test_sidecar_that_is_not_json_object(tmp_path, text):
    path, _ = make(tmp_path, n=100)
    sc = sidecar_path(path)
    sc.write_bytes(text.encode("latin-1"))
    raises([str(sc), "sidecar"], TraceReader, path)


def test_corrupt_end_record(tmp_path):
    path, _ = make(tmp_path, n=2500)
    size = path.stat().st_size
    patch(path, size - END_REC.itemsize + 8, xor=0x01)  # n_insn
    raises([str(path), "end record", "checksum"], TraceReader, path, require_sidecar=False)


def test_end_record_with_valid_checksum_but_wrong_counts(tmp_path):
    path, _ = make(tmp_path, n=2500)
    data = bytearray(path.read_bytes())
    end = np.frombuffer(bytes(data[-END_REC.itemsize:]), END_REC).copy()
    end["n_chunks"] = 2
    end["crc"] = 0
    end["crc"] = zlib.crc32(end.tobytes())
    data[-END_REC.itemsize:] = end.tobytes()
    path.write_bytes(bytes(data))
    write_sidecar(path)
    raises([str(path), "end record says 2"], TraceReader, path)


# ------------------------------------------------------------------------------------- atomic writer
def _fill(w, cols):
    for s, (pc, code) in cols["static"].items():
        w.define(s, pc, code)
    w.add(cols["sid"], cols["nmem"], cols["maddr"], cols["minfo"], regs=cols["regs"], mval=cols["mval"])


def test_writer_file_appears_only_after_close(tmp_path):
    cols = synth(2500, FULL, seed=8)
    path = tmp_path / "t.ncft"
    w = TraceWriter(path, FULL, chunk_insns=1000)
    _fill(w, cols)
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] != []  # only the temporary so far
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert w.close() == path
    assert [p.name for p in tmp_path.iterdir()] == ["t.ncft"]


def test_writer_abort_leaves_nothing(tmp_path):
    cols = synth(2500, FULL, seed=8)
    w = TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=1000)
    _fill(w, cols)
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_inside_with_block_leaves_nothing(tmp_path):
    cols = synth(2500, FULL, seed=8)
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=1000) as w:
            _fill(w, cols)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_with_block_closes_on_success(tmp_path):
    cols = synth(1500, FULL, seed=8)
    with TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=1000) as w:
        _fill(w, cols)
    assert [p.name for p in tmp_path.iterdir()] == ["t.ncft"]
    write_sidecar(tmp_path / "t.ncft")
    _, insn, mem = read_all(TraceReader(tmp_path / "t.ncft"))
    assert_matches(insn, mem, cols, FULL)


def test_writer_error_mid_write_leaves_nothing(tmp_path):
    cols = synth(2500, FULL, seed=8)
    with pytest.raises(ValueError, match="define"):
        with TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=1000) as w:
            w.add(cols["sid"], cols["nmem"], cols["maddr"], cols["minfo"], regs=cols["regs"], mval=cols["mval"])
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_columns_that_do_not_match_flags(tmp_path):
    cols = synth(100, FULL, seed=8)
    w = TraceWriter(tmp_path / "t.ncft", FULL)
    for s, (pc, code) in cols["static"].items():
        w.define(s, pc, code)
    with pytest.raises(ValueError, match="registers"):
        w.add(cols["sid"], cols["nmem"], cols["maddr"], cols["minfo"], mval=cols["mval"])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_overwriting_keeps_the_old_file_until_close(tmp_path):
    path, _ = make(tmp_path, n=1500)
    old = path.read_bytes()
    w = TraceWriter(path, FULL, chunk_insns=1000)
    _fill(w, synth(500, FULL, seed=9))
    assert path.read_bytes() == old
    w.abort()
    assert path.read_bytes() == old


# ------------------------------------------------------------------------------------- bounded memory
def test_chunks_is_a_lazy_generator_of_chunk_sized_pieces(tmp_path):
    path, _ = make(tmp_path, n=5500, chunk_insns=1000)
    r = TraceReader(path)
    gen = r.chunks()
    assert inspect.isgenerator(gen)
    sizes = [len(c.insn) for c in gen]
    assert sizes == [1000] * 5 + [500]


def test_a_damaged_last_chunk_does_not_stop_reading_the_first_ones(tmp_path):
    path, _ = make(tmp_path, n=5500, chunk_insns=1000)
    pos, comp = layout(path)[-1]
    patch(path, pos + CHUNK_HDR.itemsize + comp - 1, xor=0xFF)
    write_sidecar(path)
    it = TraceReader(path).chunks()
    firsts = [next(it).first for _ in range(5)]  # read before the bad chunk is even looked at
    assert firsts == [0, 1000, 2000, 3000, 4000]
    raises(["chunk 5", "checksum"], lambda: next(it))


def test_iterating_holds_one_chunk_at_a_time(tmp_path):
    cols = synth(40_000, FULL, seed=10)
    path = write_trace(tmp_path / "big.ncft", cols, FULL, chunk_insns=1000)
    r = TraceReader(path)
    one = None
    tracemalloc.start()
    try:
        for ch in r.chunks():
            one = one or ch.insn.nbytes + ch.mem.nbytes
            del ch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the whole decoded trace is 40 chunks; a reader holding them all would peak far above this
    assert 0 < peak < 6 * one, (peak, one)


def test_chunks_can_be_iterated_again(tmp_path):
    path, cols = make(tmp_path, n=2500)
    r = TraceReader(path)
    _, insn1, mem1 = read_all(r)
    _, insn2, mem2 = read_all(r)
    np.testing.assert_array_equal(insn1, insn2)
    np.testing.assert_array_equal(mem1, mem2)


def test_writer_rejects_columns_of_the_wrong_length(tmp_path):
    cols = synth(300, FULL, seed=8)
    w = TraceWriter(tmp_path / "t.ncft", FULL, chunk_insns=100)
    for s, (pc, code) in cols["static"].items():
        w.define(s, pc, code)
    with pytest.raises(ValueError, match="maddr"):
        w.add(cols["sid"], cols["nmem"], cols["maddr"][:-1], cols["minfo"], regs=cols["regs"], mval=cols["mval"])
    with pytest.raises(ValueError, match="regs"):
        w.add(cols["sid"], cols["nmem"], cols["maddr"], cols["minfo"], regs=cols["regs"][:-1], mval=cols["mval"])
    w.abort()


# ------------------------------------------------------------------------------------- damaged content
def rewrite_chunk(path, k: int, edit) -> None:
    """Replace chunk k's payload by edit(header, raw payload) -> (header, raw), with a valid checksum,
    so that only the reader's consistency checks can find the damage."""
    import zstandard
    data = bytearray(path.read_bytes())
    pos, comp = layout(path)[k]
    hdr = np.frombuffer(bytes(data[pos:pos + CHUNK_HDR.itemsize]), CHUNK_HDR).copy()
    raw = zstandard.ZstdDecompressor().decompress(bytes(data[pos + CHUNK_HDR.itemsize:pos + CHUNK_HDR.itemsize + comp]))
    hdr, raw = edit(hdr, bytearray(raw))
    new = zstandard.ZstdCompressor().compress(bytes(raw))
    hdr["raw_size"], hdr["comp_size"], hdr["crc"] = len(raw), len(new), 0
    hdr["crc"] = zlib.crc32(new, zlib.crc32(hdr.tobytes()))
    data[pos:pos + CHUNK_HDR.itemsize + comp] = hdr.tobytes() + new
    path.write_bytes(bytes(data))
    write_sidecar(path)


def _sid_off(hdr):
    return 32 * int(hdr["n_static"][0])


@pytest.mark.parametrize("damage,words", [
    ("unknown sid", ["unknown static id"]),
    ("nmem", ["memory record counts"]),
    ("mask", ["register masks"]),
    ("trailing", ["after the last column"]),
    ("short", ["overrun"]),
])
def test_chunk_with_valid_checksum_but_inconsistent_columns(tmp_path, damage, words):
    path, _ = make(tmp_path, n=2500)
    n = 1000

    def edit(hdr, raw):
        so = _sid_off(hdr)
        if damage == "unknown sid":
            raw[so:so + 4] = np.uint32(999_999).tobytes()
        elif damage == "nmem":
            raw[so + 4 * n] ^= 1
        elif damage == "mask":
            raw[so + 6 * n:so + 6 * n + 4] = np.uint32(1).tobytes()  # first instruction must set all
        elif damage == "trailing":
            raw += b"xx"
        elif damage == "short":
            del raw[-3:]
        return hdr, raw

    rewrite_chunk(path, 1, edit)
    raises([str(path), "corrupt chunk 1", *words], TraceReader, path)


def test_chunk_out_of_place(tmp_path):
    path, _ = make(tmp_path, n=2500)

    def edit(hdr, raw):
        hdr["first"] = 5
        return hdr, raw

    rewrite_chunk(path, 1, edit)
    raises([str(path), "corrupt chunk 1", "position"], TraceReader, path)
