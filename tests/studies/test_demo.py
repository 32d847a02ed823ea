"""`ncf demo`: its presets, and the whole pipeline as a user runs it (the tiny preset, in CI)."""
from __future__ import annotations

import json
import re

from ncf.io import load_config
from ncf.studies import demo

from ..helpers import png_size, render_check


def test_presets_name_existing_hardware_points():
    for p in demo.PRESETS.values():
        assert list(p.hw_default) in p.hw_points and list(p.hw_small) in p.hw_points


def test_tiny_demo_runs_every_stage_from_a_clone_with_the_default_relative_out(tmp_path):
    """`ncf demo` as a user runs it: from a fresh clone, with the default (relative) --out, through
    every stage including the simulators (which run in their own build directories) and synthesis."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    ncf = Path(sys.executable).with_name("ncf")
    r = subprocess.run([str(ncf), "demo", "--preset", "tiny"], cwd=clone, capture_output=True, text=True,
                       timeout=3000)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    report = clone / "reports" / "demo"
    md = (report / "index.md").read_text()
    shown = render_check(report / "index.html")              # every figure shown, every table with its rows
    assert shown["images"] == shown["images_loaded"] == shown["images_whole"] == md.count("![") >= 5
    assert [len(t["rows"]) for t in shown["tables"]] == [len(b.splitlines()) - 2
                                                          for b in re.findall(r"(?m)(?:^\|.*\n?)+", md)]
    assert shown["leftover_markdown"] == 0
    assert png_size(report / "screenshot.png") == (1280, 900)
    times = json.loads((report / "times.json").read_text())
    for name in ("traces", "baselines", "study", "lead_sweep", "quantize", "hw_sweep", "hls", "verify", "classify"):
        assert name in times, name
    assert any(k.startswith("synth") for k in times)
    ver = json.loads((report / "hw" / "verify.json").read_text())
    for sim in ("verilator", "icarus"):
        assert ver[sim]["predictions_compared"] > 0 and ver[sim]["mismatches"] == 0 and ver[sim]["tests_failed"] == 0
    assert ver["verilator"]["harness"]["equal"]
    sweep = json.loads((report / "hw" / "sweep" / "sweep.json").read_text())["rows"]
    lut = [r for r in sweep if r["model"].startswith("LUT")]       # the LUT-native point beside the GNN's
    assert len(lut) == 1 and lut[0]["ladder_exact"] and lut[0]["LUT"] > 0 and lut[0]["latency_cycles"] == 4
    assert lut[0]["tage_acc"] == sweep[0]["tage_acc"]
    syn = json.loads((report / "hw" / "synthesis.json").read_text())
    assert {row["target"] for row in syn["rows"]} >= {"ecp5 (P&R)", "ice40 (P&R)"}
    # the report's tables (ncf.io.save_table: markdown + JSON with a title and rows) hold results
    # only: nothing that depends on where the clone is
    tables = [p for p in report.rglob("*.json")
              if (lambda d: isinstance(d, dict) and {"title", "rows"} <= set(d))(json.loads(p.read_text()))]
    assert len(tables) >= 10
    for table in tables:
        assert str(tmp_path) not in table.read_text(), table
    # the report reproduces itself: every command it lists parses, and the configurations it names are
    # the ones the studies ran with
    import shlex

    from ncf.cli import build_parser
    from ncf.studies.classify import ClassifyConfig
    from ncf.studies.experiment import ExperimentConfig
    from ncf.studies.parallel import settings

    prov = json.loads((report / "provenance.json").read_text())
    for command in prov["commands"]:
        argv = shlex.split(command)
        assert argv[0] == "ncf"
        build_parser().parse_args(argv[1:])
    configs = report / "configs"
    ran = json.loads((report / "experiment" / "experiment.json").read_text())["config"]
    assert settings(load_config(ExperimentConfig, clone / configs.relative_to(clone) / "experiment.yaml")) == ran
    ran = json.loads((report / "classify" / "classify.json").read_text())["config"]
    assert settings(load_config(ClassifyConfig, configs / "classify.yaml")) == ran
    # and a command it lists, re-run as a reader would, gives the table the report holds
    study = next(c for c in prov["commands"] if c.startswith("ncf experiment --config") and "--leads" not in c)
    before = {t: (report / "experiment" / f"{t}.json").read_text() for t in ("branch", "prefetch", "summary")}
    r = subprocess.run([str(ncf), *shlex.split(study)[1:]], cwd=clone, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {t: (report / "experiment" / f"{t}.json").read_text() for t in before} == before
