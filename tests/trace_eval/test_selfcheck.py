"""The compiled self-check (native/selfcheck.c) against its numpy reference, on recorded traces."""
from __future__ import annotations

import numpy as np
import pytest
from capstone import x86
from ncf.trace_eval import native_lib, selfcheck
from ncf.trace_eval.capture import record
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.selfcheck import KIND_CHECKED, Decoder, check_trace, formula
from ncf.trace_eval.workloads import prepare
from ncf.trace_eval.x86 import decode, decode_each

from ..helpers import rewrite_trace

FS = 16  # the fs_base column of the register rows


@pytest.fixture(scope="module")
def traces(bzip2_trace, native, inputs_dir, tmp_path_factory) -> dict:
    """bzip2 (conftest), xz from its first instruction (the dynamic loader and libc start-up: fs:
    TLS accesses, xsave) and the list_walk kernel; all recorded with the self-check."""
    out = {"bzip2": bzip2_trace}
    for w in ("xz", "list_walk"):
        out[w] = tmp_path_factory.mktemp("selfcheck") / f"{w}.ncft"
        record(prepare(w, 0, inputs_dir), out[w], count=300_000, progress=False)
    return out


def both(path) -> dict:
    """The result of the self-check on ``path``; the two engines must give exactly the same."""
    c, ref = (check_trace(TraceReader(path, require_sidecar=False), engine=e).as_dict() for e in ("c", "numpy"))
    assert c == ref
    return c


def first_chunk(path):
    """The first chunk of ``path``, its sids and their decoded formulas."""
    r = TraceReader(path, require_sidecar=False)
    ch = next(r.chunks())
    dec = Decoder()
    dec.ensure(ch.insn["sid"], r.static)
    return ch, ch.insn["sid"], dec


@pytest.mark.parametrize("workload", ["bzip2", "xz", "list_walk"])
def test_the_engines_agree_on_recorded_traces(traces, workload, tmp_path):
    s = both(traces[workload])
    assert s["ok"] and s["addr_checked"] > 10_000 and s["value_checked"] > 1_000
    assert s == TraceReader(traces[workload]).meta["selfcheck"]  # what capture recorded (the C engine)
    # many chunks: the registers restart at each chunk, loads in a chunk's last row are not checked
    many = both(rewrite_trace(traces[workload], tmp_path / "many.ncft", chunk_insns=30_011))
    assert many["ok"] and many["insns"] == s["insns"] and many["addr_checked"] == s["addr_checked"]


def test_xz_start_up_has_fs_accesses_and_xsave(traces):
    ch, sid, dec = first_chunk(traces["xz"])
    assert ((dec.seg[sid] == FS).any(1) & (ch.insn["nmem"] > 0)).sum() > 100
    assert dec.region[sid].any()


def test_static_instructions_decode_alike_in_a_batch_and_alone(traces):
    r = TraceReader(traces["xz"])
    sid = np.unique(next(r.chunks()).insn["sid"])
    codes = list(dict.fromkeys(r.static.code(int(s))[1] for s in sid))
    codes[100:100] = [b"\x06", b"\x48\x8b", b""]  # undecodable in 64-bit mode, cut short, empty
    batch = decode_each(codes)
    assert len(batch) == len(codes) > 1000 and batch[100] is None and batch[101] is None
    assert [formula(c, d) for c, d in zip(codes, batch)] == [formula(c, decode(c, 0)) for c in codes]
    for d in filter(None, batch):  # formula() relies on it: memory operands are printed with [..]
        assert ("[" in d.op_str) == any(o.type == x86.X86_OP_MEM for o in d.operands), d


def test_the_engines_report_the_same_planted_errors(traces, tmp_path):
    ch, sid, dec = first_chunk(traces["bzip2"])
    one = (ch.insn["nmem"] == 1) & (np.arange(len(sid)) > 2000)
    store = np.flatnonzero(one & (dec.vkind[sid] == 2))[100]  # mov [mem] <- reg
    access = np.flatnonzero(one & (dec.kind[sid] == KIND_CHECKED) & ~dec.region[sid])[200]
    assert store != access

    def corrupt(ch, regs, vals):
        regs[1000:1010, :16] += np.uint64(8)  # every GPR off by 8 for ten instructions
        vals[ch.insn["mem0"][store]] ^= np.uint64(1)
        ch.mem["addr"][ch.insn["mem0"][access]] += np.uint64(64)

    s = both(rewrite_trace(traces["bzip2"], tmp_path / "bad.ncft", corrupt))
    assert not s["ok"] and s["addr_mismatch"] >= 3 and s["value_checked"] - s["value_match"] >= 2
    bad = s["most_frequent_failures"]
    assert f"value: {dec.mnem[int(sid[store])]}" in bad and f"address: {dec.mnem[int(sid[access])]}" in bad


def test_a_wrong_fs_base_fails_every_fs_access_in_both_engines(traces, tmp_path):
    ch, sid, dec = first_chunk(traces["xz"])
    fs_rows = int(((dec.seg[sid] == FS).any(1) & (ch.insn["nmem"] > 0)).sum())

    def shift_fs(ch, regs, vals):
        regs[:, FS] += np.uint64(0x1000)

    s = both(rewrite_trace(traces["xz"], tmp_path / "fs.ncft", shift_fs))
    assert s["addr_mismatch"] == fs_rows and s["value_match"] == s["value_checked"]


def test_a_missing_library_says_to_run_make_native(traces, monkeypatch, tmp_path):
    monkeypatch.setattr(native_lib, "NATIVE", tmp_path)
    monkeypatch.setattr(selfcheck, "_lib", None)
    with pytest.raises(RuntimeError, match=r"libselfcheck.so is missing: run `make native`"):
        check_trace(TraceReader(traces["list_walk"]))
    with pytest.raises(ValueError, match="unknown self-check engine"):
        check_trace(TraceReader(traces["list_walk"]), engine="fortran")


def test_rep_movs_with_rcx_zero_makes_no_access_and_passes_in_both_engines(tmp_path):
    """`rep movsq` with rcx = 0 runs no iteration: QEMU records no access (seen in perl's start-up) and
    the check counts it with lea & co.; with rcx = 1 and no access it is still a failure."""
    from ncf.trace_eval.format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, NREG, TraceWriter

    def trace(rcx: int, path):
        regs = np.zeros((3, NREG), np.uint64)
        regs[:, 1], regs[:, 6], regs[:, 7] = rcx, 0x10000, 0x20000      # rcx, rsi, rdi
        with TraceWriter(path, FLAG_REGS | FLAG_VALUES | FLAG_BYTES) as w:
            w.define(0, 0x401000, bytes.fromhex("f348a5"))               # rep movsq
            w.define(1, 0x401003, bytes.fromhex("488b06"))               # mov rax, [rsi]
            w.add(np.array([0, 1, 1], np.uint32), np.array([0, 1, 1], np.uint16),
                  np.array([0x10000, 0x10000], np.uint64), np.array([3, 3], np.uint8), regs=regs,
                  mval=np.zeros(2, np.uint64))
        return path

    assert formula(bytes.fromhex("f348a5"), decode(bytes.fromhex("f348a5"), 0x401000)).rep
    ok = both(trace(0, tmp_path / "rcx0.ncft"))
    assert ok["ok"] and ok["skipped_no_access_ops"] == 1 and ok["addr_checked"] == 2
    bad = both(trace(1, tmp_path / "rcx1.ncft"))
    assert not bad["ok"] and bad["most_frequent_failures"] == {"no access: rep movsq": 1}
