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
