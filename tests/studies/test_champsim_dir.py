"""`ncf experiment --champsim-dir`: a directory of ChampSim traces through the baselines. The three
traces are made with the project's exporter (`ncf champsim export`) from ncf traces of three
different programs, as ChampSim's public trace sets cannot be downloaded here."""
from __future__ import annotations

import json

import pytest

from ncf.cli import main
from ncf.trace_eval.capture import record
from ncf.trace_eval.champsim import export_champsim
from ncf.trace_eval.workloads import prepare


@pytest.fixture(scope="module")
def champsim_dir(native, inputs_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("champsim")
    for w in ("quicksort", "hash_table", "bst"):
        trace = d.parent / f"{d.name}-{w}.ncft"
        record(prepare(w, 0, inputs_dir), trace, count=200_000, progress=False)
        export_champsim(trace, d / f"{w}.champsim.xz")
    return d


def test_a_directory_of_champsim_traces_gets_an_mpki_table_per_trace(champsim_dir, tmp_path, capsys):
    argv = ["experiment", "--champsim-dir", str(champsim_dir), "--test-trace", "hash_table.champsim.xz",
            "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "| hash_table.champsim.xz | test |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "out" / "champsim_mpki.json").read_text())["rows"]
    assert [r["trace"] for r in rows] == ["bst.champsim.xz", "hash_table.champsim.xz", "quicksort.champsim.xz"]
    assert [r["split"] for r in rows] == ["train", "test", "train"]
    for r in rows:
        assert r["instructions"] == 200_000 and r["tage-sc-l"] >= 0 and r["l1_mpki_without"] >= 0
    assert len({r["tage-sc-l"] for r in rows}) == 3          # three programs, three different figures
    full = json.loads((tmp_path / "out" / "champsim.json").read_text())
    assert full["test_trace"] == "hash_table.champsim.xz" and "fused" in full["models_not_run"]
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "screenshot.png").exists()


@pytest.mark.parametrize("models, words", [(["fused"], ["fused", "need an ncf trace"]),
                                           (["static", "history"], ["static, history", "need an ncf trace"])])
def test_models_that_read_registers_refuse_champsim_traces_plainly(champsim_dir, tmp_path, capsys, models, words):
    argv = ["experiment", "--champsim-dir", str(champsim_dir), "--models", *models, "--out", str(tmp_path / "o"),
            "--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and not (tmp_path / "o").exists()


def test_an_unknown_test_trace_names_the_directorys_files(champsim_dir, tmp_path, capsys):
    argv = ["experiment", "--champsim-dir", str(champsim_dir), "--test-trace", "gcc.xz", "--out", str(tmp_path / "o"),
            "--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "gcc.xz: not a file of" in capsys.readouterr().err and not (tmp_path / "o").exists()
