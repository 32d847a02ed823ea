"""The demo's stage cache: a stage whose inputs (content hashes, settings) are unchanged is reused,
a changed input or --fresh reruns it, and the record on disk says what it was run from."""
from __future__ import annotations

import json

from ncf import demo


def test_stage_reuses_only_identical_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "WORK", tmp_path)
    calls = []

    def work():
        calls.append(1)
        return {"value": len(calls)}

    key = {"trace": "ab" * 32, "config": {"lead": 100}}
    assert demo.stage("s", key, work, log=lambda *_: None) == ({"value": 1}, False)
    assert demo.stage("s", key, work, log=lambda *_: None) == ({"value": 1}, True)
    assert demo.stage("s", {**key, "config": {"lead": 10}}, work, log=lambda *_: None) == ({"value": 2}, False)
    assert demo.stage("s", {**key, "config": {"lead": 10}}, work, fresh=True, log=lambda *_: None) == ({"value": 3}, False)
    record = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert record["inputs"]["config"] == {"lead": 10} and record["result"] == {"value": 3}


def test_presets_name_existing_hardware_points():
    for p in demo.PRESETS.values():
        assert list(p.hw_default) in p.hw_points and list(p.hw_small) in p.hw_points


def test_tiny_demo_runs_every_stage_from_a_clone_with_the_default_relative_out(tmp_path):
    """`ncf demo` as a user runs it: from a fresh clone, with the default (relative) --out, through
    every stage including the simulators (which run in their own build directories) and synthesis."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    ncf = Path(sys.executable).with_name("ncf")
    r = subprocess.run([str(ncf), "demo", "--preset", "tiny"], cwd=clone, capture_output=True, text=True,
                       timeout=3000)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    report = clone / "reports" / "demo"
    assert (report / "index.md").exists()
    times = json.loads((report / "times.json").read_text())
    for name in ("traces", "baselines", "study", "lead_sweep", "quantize", "hw_sweep", "hls", "verify", "classify"):
        assert name in times, name
    assert any(k.startswith("synth") for k in times)
    ver = json.loads((report / "hw" / "verify.json").read_text())
    for sim in ("verilator", "icarus"):
        assert ver[sim]["predictions_compared"] > 0 and ver[sim]["mismatches"] == 0 and ver[sim]["tests_failed"] == 0
    assert ver["verilator"]["harness"]["equal"]
    syn = json.loads((report / "hw" / "synthesis.json").read_text())
    assert {row["target"] for row in syn["rows"]} >= {"ecp5 (P&R)", "ice40 (P&R)"}
    # the report's tables (ncf.report.save_table: markdown + JSON with a title and rows) hold results
    # only: nothing that depends on where the clone is
    tables = [p for p in report.rglob("*.json")
              if (lambda d: isinstance(d, dict) and {"title", "rows"} <= set(d))(json.loads(p.read_text()))]
    assert len(tables) >= 10
    for table in tables:
        assert str(tmp_path) not in table.read_text(), table
