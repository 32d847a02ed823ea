"""Recording real programs: the trace, its sidecar, the self-check and the failure paths."""
from __future__ import annotations

import hashlib
import subprocess

import numpy as np
import pytest
from ncf.trace_eval import capture
from ncf.trace_eval.capture import CaptureError, record
from ncf.trace_eval.format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, NREG, TraceReader, sidecar_path
from ncf.trace_eval.selfcheck import check_trace
from ncf.trace_eval.workloads import KERNELS, PROGRAMS, prepare

from ..helpers import rewrite_trace


def test_bzip2_trace_has_registers_values_and_a_matching_sidecar(bzip2_trace):
    r = TraceReader(bzip2_trace)
    assert r.n_insn == 300_000
    assert r.flags == FLAG_REGS | FLAG_VALUES | FLAG_BYTES
    m = r.meta
    assert m["window"] == {"skip": 10**6, "instructions_requested": 300_000, "recorded": 300_000,
                           "executed_total": 10**6 + 300_000, "complete": True}
    assert m["selfcheck"]["ok"] and m["selfcheck"]["addr_checked"] > 50_000
    assert m["file"]["bytes_per_insn"] < 4
    assert m["input"]["seed"] and m["input"]["files"]["data.bin"]
    chunk = next(r.chunks())
    assert chunk.insn["regs"].shape[1] == NREG and chunk.insn["idx"][0] == 0
    assert (chunk.insn["regs"][:, 4] != 0).all()  # rsp is never 0
    assert chunk.mem["val"].any()


@pytest.mark.parametrize("workload", PROGRAMS + KERNELS)
def test_every_builtin_workload_records_with_a_perfect_selfcheck(workload, native, inputs_dir, tmp_path):
    out = tmp_path / f"{workload}.ncft"
    meta = record(prepare(workload, 1, inputs_dir), out, skip=200_000, count=100_000, progress=False)
    s = meta["selfcheck"]
    assert s["ok"], s
    assert s["addr_match"] == s["addr_checked"] > 5_000
    assert s["value_match"] == s["value_checked"] > 1_000
    assert meta["window"]["recorded"] == 100_000


def test_selfcheck_catches_a_wrong_register_and_a_wrong_value(bzip2_trace, tmp_path):
    def corrupt(ch, regs, vals):
        regs[1000:1010, :16] += np.uint64(8)  # every GPR off by 8 for ten instructions
        vals[5000] ^= np.uint64(1)

    bad = rewrite_trace(bzip2_trace, tmp_path / "bad.ncft", corrupt)
    res = check_trace(TraceReader(bad, require_sidecar=False))
    assert not res.ok
    assert res.counts["addr_mismatch"] >= 1
    assert res.counts["value_checked"] - res.counts["value_match"] >= 1 or res.counts["addr_mismatch"] >= 2


def test_program_output_is_identical_under_the_tracer(native, inputs_dir, tmp_path):
    inv = prepare("quicksort", 0, inputs_dir)
    native_out = subprocess.run(inv.argv, cwd=inv.cwd, capture_output=True, check=True).stdout
    meta = record(inv, tmp_path / "q.ncft", count=50_000, run_to_end=True, progress=False)
    assert meta["program_output_sha256"] == hashlib.sha256(native_out).hexdigest()


def test_a_window_past_the_end_of_the_program_fails_clearly(native, inputs_dir, tmp_path):
    with pytest.raises(CaptureError, match="ended after .* use a smaller --skip"):
        record(prepare("bst", 0, inputs_dir), tmp_path / "x.ncft", skip=10**12, count=10, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_qemu_names_the_package(monkeypatch, inputs_dir, native, tmp_path):
    monkeypatch.setattr(capture.shutil, "which", lambda name: None)
    with pytest.raises(CaptureError, match="apt-get install qemu-user"):
        record(prepare("bst", 0, inputs_dir), tmp_path / "x.ncft", count=10, progress=False)


def test_an_interrupted_capture_leaves_no_files(monkeypatch, native, inputs_dir, tmp_path):
    def interrupt(fd, total, desc, enabled):
        raise KeyboardInterrupt

    monkeypatch.setattr(capture, "_follow_progress", interrupt)
    with pytest.raises(KeyboardInterrupt):
        record(prepare("matmul", 0, inputs_dir), tmp_path / "m.ncft", count=10**6, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_is_written_with_the_trace(bzip2_trace):
    assert sidecar_path(bzip2_trace).exists()
    assert not list(bzip2_trace.parent.glob("*.tmp"))


def test_registers_of_a_few_rows_equal_the_expanded_registers(bzip2_trace):
    rng = np.random.default_rng(0)
    for ch in TraceReader(bzip2_trace).chunks():
        rows = np.sort(rng.integers(0, len(ch.insn), 3000))
        assert np.array_equal(ch.regs_at(rows), ch.insn["regs"][rows])
        assert np.array_equal(ch.regs_at(np.arange(len(ch.insn))), ch.insn["regs"])


def test_the_same_window_gives_the_same_trace_whatever_the_environment(native, inputs_dir, tmp_path, monkeypatch):
    inv = prepare("bzip2", 0, inputs_dir)
    a = record(inv, tmp_path / "a" / "t.ncft", skip=10**6, count=200_000, progress=False)
    monkeypatch.setenv("NCF_SOME_LONG_VARIABLE", "x" * 3000)
    monkeypatch.chdir(tmp_path)
    b = record(inv, tmp_path / "b" / "deeper" / "t.ncft", skip=10**6, count=200_000, progress=False)
    assert a["file"]["sha256"] == b["file"]["sha256"]
