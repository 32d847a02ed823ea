"""Helpers shared by the tests."""
from __future__ import annotations

import numpy as np

from ncf.io import write_json
from ncf.trace_eval.format import MAX_CHUNK_INSNS, TraceReader, TraceWriter, file_info, sidecar_path

LEAD = 100  # the snapshot lead of the test datasets


def rewrite_trace(src, dst, edit=None, chunk_insns: int = MAX_CHUNK_INSNS, sidecar: bool = False):
    """Copy a recorded trace through TraceWriter. ``edit(chunk, regs, vals)`` may change the
    registers, memory values, access addresses (``chunk.mem["addr"]``) and which static instruction
    runs (``chunk.insn["sid"]``, any of the trace's) in place; the rest stays as recorded."""
    static = TraceReader(src)
    for _ in static.chunks(registers=False):   # the whole static table: an edit may use any instruction
        pass
    r = TraceReader(src)
    with TraceWriter(dst, r.flags, chunk_insns=chunk_insns) as w:
        for ch in r.chunks():
            regs, vals = ch.insn["regs"].copy(), ch.mem["val"].copy()
            if edit:
                edit(ch, regs, vals)
            for sid in np.unique(ch.insn["sid"]):
                w.define(int(sid), *static.static.code(int(sid)))
            minfo = np.log2(ch.mem["size"]).astype(np.uint8) | (ch.mem["store"].astype(np.uint8) << 7)
            w.add(ch.insn["sid"], ch.insn["nmem"], ch.mem["addr"], minfo, regs=regs, mval=vals)
    if sidecar:
        write_json(sidecar_path(dst), {"format_version": 1, "file": file_info(dst)})
    return dst


def train_until_epoch_two(cfg, monkeypatch) -> None:
    """Train ``cfg`` (a GNN) and let the run die in its second epoch, after epoch 1's checkpoint."""
    import pytest

    import ncf.model.train as train_mod

    real, calls = train_mod.evaluate_rows, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "evaluate_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, progress=False)
    monkeypatch.setattr(train_mod, "evaluate_rows", real)
