"""The stage cache: a step is reused only for the same key and code; a failed or killed step leaves
nothing that is used; --fresh redoes each step once; concurrent processes share an entry."""
from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

import ncf.studies.cache as cache_mod
from ncf.studies.cache import StageCache, code_sources, code_version


def counting(calls: list):
    def fn(d: Path) -> dict:
        calls.append(d)
        (d / "out.txt").write_text(f"call {len(calls)}\\n")
        return {"n": len(calls)}
    return fn


def test_same_key_reuses_and_another_key_or_code_recomputes(tmp_path):
    cache, calls = StageCache(tmp_path, log=None), []
    a = cache.run("step", {"x": 1}, counting(calls), code=("ncf.model.dataset",), label="lab")
    b = cache.run("step", {"x": 1}, counting(calls), code=("ncf.model.dataset",), label="lab")
    assert (a.result, a.reused, b.result, b.reused) == ({"n": 1}, False, {"n": 1}, True) and a.path == b.path
    assert a.path.name.startswith("lab-") and (a.path / "out.txt").read_text() == "call 1\\n"
    c = cache.run("step", {"x": 2}, counting(calls), code=("ncf.model.dataset",), label="lab")
    d = cache.run("step", {"x": 1}, counting(calls), code=("ncf.model.train",), label="lab")   # other code version
    assert (c.result, d.result) == ({"n": 2}, {"n": 3}) and len({a.path, c.path, d.path}) == 3
    rec = json.loads((a.path / "stage.json").read_text())
    assert rec["key"] == {"x": 1} and rec["result"] == {"n": 1} and rec["step"] == "step"


def test_the_label_only_names_the_directory(tmp_path):
    """A finished entry is reused under another label (the lead sweep's model at the study's lead is the main
    table's seed 0, labelled with its seed); another key under that label is not."""
    cache, calls = StageCache(tmp_path, log=None), []
    a = cache.run("step", {"x": 1}, counting(calls), label="bzip2-fused-s0")
    b = cache.run("step", {"x": 1}, counting(calls), label="bzip2-fused")
    assert b.reused and b.path == a.path and b.result == {"n": 1} and len(calls) == 1
    c = cache.run("step", {"x": 2}, counting(calls), label="bzip2-fused-s0")
    other_step = cache.run("other", {"x": 1}, counting(calls), label="bzip2-fused")
    assert not c.reused and not other_step.reused and len(calls) == 3
    (a.path / "stage.json").unlink()     # a killed entry is not reused under any label
    assert not cache.run("step", {"x": 1}, counting(calls), label="bzip2-fused").reused and len(calls) == 4


def test_a_gnn_trained_beside_either_branchnet_shape_is_one_entry(train_ds, tmp_path):
    """BranchNet's shape keys BranchNet's runs only: the fused GNN of a Big-BranchNet study is the Mini one's."""
    from ncf.model.train import TrainConfig
    from ncf.studies import steps

    cache = StageCache(tmp_path, log=None)
    cfg = TrainConfig(model="fused", epochs=1, branchnet="mini")
    mini = steps.train(cache, cfg, train_ds.path, progress=False)
    stamp = (mini / "checkpoint.pt").stat().st_mtime_ns
    assert steps.train(cache, replace(cfg, branchnet="big"), train_ds.path, progress=False) == mini
    assert "branchnet" not in json.loads((mini.parent / "stage.json").read_text())["key"]["config"]
    assert (mini / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "train").glob("*/stage.json"))) == 1
    assert steps.train(cache, replace(cfg, epochs=2, branchnet="big"), train_ds.path, progress=False) != mini


def _rel(module: str) -> set[str]:
    return {str(f.relative_to(cache_mod.REPO)) for f in code_sources(module)}


def test_a_step_depends_on_the_code_it_runs_and_nothing_else():
    """The sources a step's modules import (also inside functions), name as a module in a string (cocotb's
    testbench) or as a native library ("libbp.so"), and the non-Python sources of their stage folders."""
    trace = _rel("ncf.trace_eval.capture")
    assert {"trace_eval/capture.py", "trace_eval/selfcheck.py", "trace_eval/native/qtrace.c",
            "trace_eval/native/qemu-plugin-min.h", "trace_eval/native/selfcheck.c", "ncf/io.py"} <= trace
    assert not trace & {"trace_eval/branch_predictors.py", "trace_eval/cache.py", "trace_eval/native/bp.c",
                        "trace_eval/native/cache.c"} and not any(f.startswith("model/") for f in trace)
    data = _rel("ncf.model.dataset")
    assert {"model/dataset.py", "model/graph.py", "trace_eval/branch_predictors.py", "trace_eval/native/bp.c"} <= data
    assert not data & {"model/gnn.py", "model/train.py", "trace_eval/capture.py", "trace_eval/native/qtrace.c"}
    assert {"rtl_tests/predictor_tb.py", "rtl_tests/hdl/ncf_tb_top.v", "hw/verilog/ncf_predictor.v",
            "model/gnn.py"} <= _rel("ncf.rtl_tests.sim")
    with pytest.raises(ValueError, match="ncf.model.nothing is not a module"):
        code_version("ncf.model.nothing")


def test_a_change_redoes_the_steps_that_run_it_and_only_those(tmp_path, monkeypatch):
    """On a copy of the sources: a baseline predictor's change keeps the trace step's version and
    changes the dataset step's; the tracer plugin's change does the opposite."""
    repo = tmp_path / "repo"
    for d in ("ncf", *cache_mod.STAGES):
        shutil.copytree(cache_mod.REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_mod, "REPO", repo)
    monkeypatch.setattr(cache_mod, "NATIVE", repo / "trace_eval" / "native")

    def versions() -> tuple[str, str]:
        code_version.cache_clear()
        code_sources.cache_clear()
        return code_version("ncf.trace_eval.capture"), code_version("ncf.model.dataset")
    trace0, data0 = versions()
    with open(repo / "trace_eval" / "branch_predictors.py", "a") as f:
        f.write("# a change to TAGE-SC-L\n")
    trace1, data1 = versions()
    with open(repo / "trace_eval" / "native" / "qtrace.c", "a") as f:
        f.write("/* a change to the tracer */\n")
    trace2, data2 = versions()
    code_version.cache_clear()
    code_sources.cache_clear()
    assert trace1 == trace0 and data1 != data0 and trace2 != trace1 and data2 == data1


def test_a_failed_step_leaves_nothing_and_is_redone(tmp_path):
    cache = StageCache(tmp_path, log=None)

    def boom(d):
        (d / "half.txt").write_text("half")
        raise RuntimeError("tool crashed")
    with pytest.raises(RuntimeError, match="tool crashed"):
        cache.run("step", {"x": 1}, boom)
    assert list((tmp_path / "step").glob("*/half.txt")) == []
    assert cache.run("step", {"x": 1}, counting([])).result == {"n": 1}


def test_an_entry_without_its_record_is_never_used(tmp_path):
    """A step killed before writing stage.json (a power cut): its directory is removed and redone."""
    cache, calls = StageCache(tmp_path, log=None), []
    e = cache.run("step", {"x": 1}, counting(calls))
    (e.path / "stage.json").unlink()
    (e.path / "stale.txt").write_text("from the killed run")
    again = cache.run("step", {"x": 1}, counting(calls))
    assert not again.reused and len(calls) == 2 and not (again.path / "stale.txt").exists()


def test_fresh_redoes_each_step_once_per_run(tmp_path):
    calls = []
    StageCache(tmp_path, log=None).run("step", {"x": 1}, counting(calls))
    fresh = StageCache(tmp_path, fresh=True, log=None)
    assert not fresh.run("step", {"x": 1}, counting(calls)).reused
    assert fresh.run("step", {"x": 1}, counting(calls)).reused and len(calls) == 2


def _slow_step(root: str, q) -> None:
    def fn(d):
        time.sleep(1.0)
        (d / "pid").write_text("x")
        return {"made_by": multiprocessing.current_process().name}
    e = StageCache(Path(root), log=None).run("step", {"x": 1}, fn)
    q.put((e.result["made_by"], e.reused))


def test_two_processes_share_one_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_slow_step, args=(str(tmp_path), q), name=f"p{k}") for k in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert len({made for made, _ in got}) == 1 and sorted(reused for _, reused in got) == [False, True]
