"""`ncf experiment --champsim-dir`: a directory of ChampSim traces through the baselines, BranchNet, the
delta-LSTM and the history GNN. The three traces are made with the project's exporter (`ncf champsim export`) from ncf traces
of two programs (bst; hash_table with two inputs, one held out, so that the held-out trace runs the
training traces' sites), as ChampSim's public trace sets cannot be downloaded here."""
from __future__ import annotations

import json

import pytest

from ncf.cli import main
from ncf.trace_eval.capture import record
from ncf.trace_eval.champsim import export_champsim, import_champsim
from ncf.trace_eval.workloads import prepare


@pytest.fixture(scope="module")
def champsim_dir(native, inputs_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("champsim")
    for w, inp, name in (("bst", 0, "bst"), ("hash_table", 0, "hash_table-0"), ("hash_table", 1, "hash_table-1")):
        trace = d.parent / f"{d.name}-{name}.ncft"
        record(prepare(w, inp, inputs_dir), trace, count=200_000, progress=False)
        export_champsim(trace, d / f"{name}.champsim.xz")
    return d


def test_a_directory_of_champsim_traces_gets_an_mpki_table_per_trace(champsim_dir, tmp_path, capsys):
    argv = ["experiment", "--champsim-dir", str(champsim_dir), "--test-trace", "hash_table-1.champsim.xz",
            "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "| hash_table-1.champsim.xz | test |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "out" / "champsim_mpki.json").read_text())["rows"]
    assert [r["trace"] for r in rows] == ["bst.champsim.xz", "hash_table-0.champsim.xz", "hash_table-1.champsim.xz"]
    assert [r["split"] for r in rows] == ["train", "train", "test"]
    for r in rows:
        assert r["instructions"] == 200_000 and r["tage-sc-l"] >= 0 and r["l1_mpki_without"] >= 0
    assert len({r["tage-sc-l"] for r in rows}) == 3          # three traces, three different figures
    full = json.loads((tmp_path / "out" / "champsim.json").read_text())
    assert full["test_trace"] == "hash_table-1.champsim.xz" and "fused" in full["models_not_run"]
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "screenshot.png").exists()


@pytest.mark.parametrize("models, words", [(["fused"], ["fused", "need an ncf trace"]),
                                           (["static", "branchnet"], ["static", "need an ncf trace"])])
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


def test_the_history_models_train_on_the_training_traces_and_score_the_held_out_one(champsim_dir, tmp_path):
    argv = ["experiment", "--champsim-dir", str(champsim_dir), "--test-trace", "hash_table-1.champsim.xz",
            "--models", "branchnet", "delta-lstm", "history", "--epochs", "1", "--train-cap", "200", "--branchnet", "mini",
            "--workers", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    branch = {r["model"]: r for r in json.loads((tmp_path / "out" / "champsim_branch.json").read_text())["rows"]}
    assert list(branch) == ["tage-sc-l", "branchnet", "history"]
    tage = branch["tage-sc-l"]
    for bn in (branch["branchnet"], branch["history"]):
        assert bn["hard_branch_instances"] == tage["hard_branch_instances"] > 1000   # hash_table's hard branch
        assert 0 < bn["hard_mispredictions"] < bn["hard_branch_instances"] and bn["mpki"] > 0
        assert bn["hard_mispredictions_hybrid"] >= 0 and bn["mpki_hybrid"] > 0      # the hybrid with TAGE-SC-L
    prefetch = {r["model"]: r for r in json.loads((tmp_path / "out" / "champsim_prefetch.json").read_text())["rows"]}
    assert list(prefetch) == ["ip-stride", "bop", "berti", "delta-lstm", "history",   # each learned model beside each
                              "delta-lstm+bop", "delta-lstm+berti", "history+bop", "history+berti"]
    for m in ("delta-lstm", "history"):
        assert 0 <= prefetch[m]["delta_accuracy"] <= 1 and prefetch[m]["l1_mpki_without"] > 30
        for base in ("bop", "berti"):       # its requests after the baseline's own, scored against the same baseline run
            beside = prefetch[f"{m}+{base}"]
            assert "delta_accuracy" not in beside and beside["l1_mpki_without"] == prefetch[m]["l1_mpki_without"]
            if prefetch[m]["issued"]:
                assert beside["issued"] > prefetch[base]["issued"]
            else:                           # a model that issues nothing of its own leaves the baseline's run as it is
                assert (beside["issued"], beside["coverage"]) == (prefetch[base]["issued"], prefetch[base]["coverage"])
            assert 0 <= beside["accuracy"] <= 1
    assert prefetch["delta-lstm"]["issued"] > 0
    full = json.loads((tmp_path / "out" / "champsim.json").read_text())
    assert set(full["models_not_run"]) == {"fused", "static"}
    assert full["models"]["train_samples"] > 0 and full["models"]["test_samples"] > 1000


def test_a_gnn_refuses_a_history_only_dataset_plainly(champsim_dir, tmp_path, capsys):
    trace = import_champsim(champsim_dir / "bst.champsim.xz", tmp_path / "bst.ncft")
    assert main(["dataset", "--trace", str(trace), "-o", str(tmp_path / "ds")]) == 1          # the fused dataset
    assert "--history-only" in capsys.readouterr().err
    assert main(["dataset", "--trace", str(trace), "-o", str(tmp_path / "ds"), "--history-only", "--task",
                 "branch", "--max-per-site", "50"]) == 0
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["history_only"] and meta["samples"] > 0 and not (tmp_path / "ds" / "dynval.npy").exists()
    (tmp_path / "fused.yaml").write_text(f"train: {tmp_path / 'ds'}\nmodel: fused\nout: {tmp_path / 'run'}\n")
    assert main(["train", "--config", str(tmp_path / "fused.yaml")]) == 2
    err = capsys.readouterr().err
    assert "history-only dataset" in err and "needs an ncf trace" in err and not (tmp_path / "run").exists()
