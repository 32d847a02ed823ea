"""Branch and memory streams: two independent derivations (decoded bytes vs ChampSim records)
agree, and chunk boundaries change nothing."""
from __future__ import annotations

import numpy as np

from ncf.trace_eval.branch_predictors import CALL, COND, IND_CALL, IND_JUMP, JUMP, RET
from ncf.trace_eval.champsim import export_champsim, import_champsim
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.streams import branch_stream, memory_stream

from ..helpers import rewrite_trace


def test_branch_outcomes_follow_the_next_pc(bzip2_trace):
    r = TraceReader(bzip2_trace)
    br = branch_stream(r)
    assert br.n_insn == 300_000 and len(br) > 10_000
    assert (br.kind == COND).sum() > 0.5 * len(br)
    pcs = np.concatenate([c.insn["pc"] for c in TraceReader(bzip2_trace).chunks(registers=False)])
    assert (pcs[br.idx.astype(np.int64) + 1] == br.target).all()
    # unconditional branches are always taken
    assert br.taken[br.kind != COND].all()


def test_chunk_boundaries_do_not_change_the_streams(bzip2_trace, tmp_path):
    small = rewrite_trace(bzip2_trace, tmp_path / "small.ncft", chunk_insns=777)
    a, b = branch_stream(TraceReader(bzip2_trace)), branch_stream(TraceReader(small, require_sidecar=False))
    for f in ("idx", "pc", "target", "taken", "kind"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    ma, mb = memory_stream(TraceReader(bzip2_trace)), memory_stream(TraceReader(small, require_sidecar=False))
    for f in ("idx", "pc", "addr", "size", "is_store"):
        assert np.array_equal(getattr(ma, f), getattr(mb, f)), f


def test_champsim_round_trip_gives_the_same_branch_stream(bzip2_trace, tmp_path):
    """Kinds inferred by ChampSim's rules from exported records equal those decoded by capstone,
    except the one case ChampSim cannot see: a jump or call through [rip+x] (PLT stubs) reads no
    register but the ip, so ChampSim calls it direct."""
    export_champsim(bzip2_trace, tmp_path / "b.champsim.xz")
    imported = import_champsim(tmp_path / "b.champsim.xz", tmp_path / "b.ncft")
    a, b = branch_stream(TraceReader(bzip2_trace)), branch_stream(TraceReader(imported))
    assert np.array_equal(a.pc, b.pc) and np.array_equal(a.taken, b.taken)
    differ = a.kind != b.kind
    pairs = {(int(x), int(y)) for x, y in zip(a.kind[differ], b.kind[differ])}
    assert pairs <= {(IND_JUMP, JUMP), (IND_CALL, CALL)}, pairs
    assert differ.mean() < 0.01
    assert {int(k) for k in np.unique(a.kind)} >= {COND, CALL, RET}


def test_memory_stream_lists_every_access_with_its_pc(bzip2_trace):
    mem = memory_stream(TraceReader(bzip2_trace))
    r = TraceReader(bzip2_trace)
    assert len(mem) == int(r.end["n_mem"])
    assert 0.1 < mem.is_store.mean() < 0.7
    assert set(np.unique(mem.size)) <= {1, 2, 4, 8}
