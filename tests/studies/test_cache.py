"""The stage cache: a step is reused only for the same key and code; a failed or killed step leaves
nothing that is used; --fresh redoes each step once; concurrent processes share an entry."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from ncf.studies.cache import StageCache, code_version


def counting(calls: list):
    def fn(d: Path) -> dict:
        calls.append(d)
        (d / "out.txt").write_text(f"call {len(calls)}\\n")
        return {"n": len(calls)}
    return fn


def test_same_key_reuses_and_another_key_or_code_recomputes(tmp_path):
    cache, calls = StageCache(tmp_path, log=None), []
    a = cache.run("step", {"x": 1}, counting(calls), code=("model",), label="lab")
    b = cache.run("step", {"x": 1}, counting(calls), code=("model",), label="lab")
    assert (a.result, a.reused, b.result, b.reused) == ({"n": 1}, False, {"n": 1}, True) and a.path == b.path
    assert a.path.name.startswith("lab-") and (a.path / "out.txt").read_text() == "call 1\\n"
    c = cache.run("step", {"x": 2}, counting(calls), code=("model",), label="lab")
    d = cache.run("step", {"x": 1}, counting(calls), code=("quant",), label="lab")   # other code version
    assert (c.result, d.result) == ({"n": 2}, {"n": 3}) and len({a.path, c.path, d.path}) == 3
    rec = json.loads((a.path / "stage.json").read_text())
    assert rec["key"] == {"x": 1} and rec["result"] == {"n": 1} and rec["step"] == "step"


def test_code_version_covers_the_upstream_stages():
    assert code_version("trace_eval") != code_version("model") != code_version("hw")
    assert code_version("model") == code_version("trace_eval", "model")


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
