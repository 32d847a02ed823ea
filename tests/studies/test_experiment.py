"""The whole study on one small workload, end to end: every model is trained, scored on the other
input through the harness, and the second run reuses datasets and trained models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ncf.io import markdown_table
from ncf.model.train import split_rows
from ncf.studies.cache import StageCache
from ncf.studies.experiment import (ExperimentConfig, mean_rows, prefetch_goal, run_experiment, validation_branches,
                                    validation_data, validation_mispredictions)

from ..helpers import png_size, render_check


@pytest.mark.slow
def test_experiment_end_to_end_and_reuse(native, tmp_path):
    cfg = ExperimentConfig(workloads=["bzip2"], instructions=300_000, skip=1_000_000, cache=str(tmp_path / "cache"),
                           out=str(tmp_path / "out"), epochs=1, train_cap=300, max_branches=3, max_loads=2, threads=1,
                           ablations=["frontend"], branchnet="mini", leads=[0, 100])
    r = run_experiment(cfg)
    (w,) = r["per_workload"]
    models = {row["model"] for row in w["branch"]}
    assert models == {"tage-sc-l", "fused", "static", "history", "branchnet", "fused-no-frontend", "fused+branchnet"}
    learned = ("fused", "static", "history", "delta-lstm")    # each also beside BOP and Berti; ablations not
    assert {row["model"] for row in w["prefetch"]} == {"ip-stride", "bop", "berti", *learned, "fused-no-frontend",
                                                       *(f"{m}+{b}" for m in learned for b in ("bop", "berti"))}
    tage = next(row for row in w["branch"] if row["model"] == "tage-sc-l")
    for row in w["branch"]:
        assert row["hard_branch_instances"] == tage["hard_branch_instances"] > 0
        if row["model"] != "tage-sc-l":
            assert 0 <= row["hybrid_changed"] <= 1
    val = {m: p["validation"] for m, p in w["seeds"][0]["hybrid_policies"].items()}
    for v in val.values():                                    # on the training inputs: never worse by construction
        assert v["hybrid_mispredictions"] <= v["tage_mispredictions"]
    assert val["fused+branchnet"]["hybrid_mispredictions"] <= min(val[m]["hybrid_mispredictions"]
                                                                   for m in ("fused", "branchnet"))
    # each model overriding all on that split: counted apart from the policy, which may always override there
    assert (tage["hard_mispredictions_val"] == sum(tage["site_mispredictions_val"])
            == val["fused"]["tage_mispredictions"])
    for m, v in val.items():
        row = next(row for row in w["seeds"][0]["branch"] if row["model"] == m)
        assert v["hybrid_mispredictions"] <= row["hard_mispredictions_val"] == sum(row["site_mispredictions_val"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"][0]
    assert {"fused_vs_branchnet_hard", "fused_vs_tage_hard", "fused_over_lstm", "coverage_ip_stride",
            "coverage_bop", "coverage_berti", "three_way_vs_tage_hard_hybrid", "coverage_fused_berti",
            "accuracy_fused_bop", "prefetch_goal_met_by"} <= set(summary)
    assert summary["branch_goal_met"] == (summary["fused_vs_tage_hard_hybrid"] <= -0.05
                                          and summary["mpki_fused_hybrid"] < summary["mpki_tage"])
    assert summary["branchnet_goal_met"] == (summary["fused_vs_branchnet_hard"] <= -0.26)
    sites = json.loads((tmp_path / "out" / "sites.json").read_text())["rows"]
    assert sum(r["tage-sc-l"] for r in sites) == tage["hard_mispredictions"]
    assert all(r["fused and tage-sc-l wrong"] <= min(r["fused"], r["tage-sc-l"]) for r in sites)
    assert all(isinstance(r[c], int) for r in sites for c in r if c not in ("workload", "site_pc"))   # counts
    assert sum(r["tage-sc-l val"] for r in sites) == tage["hard_mispredictions_val"]
    loads = json.loads((tmp_path / "out" / "loads.json").read_text())["rows"]   # each load once, then the rest
    pf = {row["model"]: row for row in w["prefetch"]}
    assert [r["load"] for r in loads] == [*sorted(pf["bop"]["load_pc"], key=lambda pc: -dict(
        zip(pf["bop"]["load_pc"], pf["bop"]["load_misses_without"]))[pc]), "other loads"]
    for m in ("bop", "fused", "fused+berti"):
        assert sum(r[m] for r in loads) * 1000 / sum(r["misses without"] for r in loads) == pytest.approx(
            1000 * pf[m]["l1_mpki_with"] / pf[m]["l1_mpki_without"])
    sweep = json.loads((tmp_path / "out" / "lead_sweep.json").read_text())["rows"]
    assert [r["lead"] for r in sweep] == [0, 100] and (tmp_path / "out" / "lead_sweep.png").exists()
    shown = render_check(r["pages"]["html"])                  # the page: every table with its rows, the figure
    assert shown["images"] == shown["images_loaded"] == shown["images_whole"] == 1
    assert [len(t["rows"]) for t in shown["tables"]] == [
        len(json.loads((tmp_path / "out" / f"{t}.json").read_text())["rows"])
        for t in ("branch", "prefetch", "summary", "sites", "loads", "lead_sweep")]
    assert png_size(r["pages"]["screenshot"]) == (1280, 900)
    (ckpt,) = (tmp_path / "cache" / "train").glob("bzip2-fused-no-frontend-*/run/checkpoint.pt")
    stamp = ckpt.stat().st_mtime_ns
    run_experiment(cfg)
    assert ckpt.stat().st_mtime_ns == stamp                   # the second run reuses the cached steps


def test_the_validation_split_is_every_hard_branch_instance_from_the_first_validation_sample_on(train_ds, tmp_path):
    """The hybrids' validation split (built with ``since``) holds, sample for sample and feature for feature, the
    hard-branch rows of an uncapped dataset of the same trace from its first validation row on, and none before."""
    (val,) = validation_data(StageCache(tmp_path / "cache"), train_ds)
    a = train_ds.arrays
    first = int(a["idx"][split_rows(train_ds)[1][0]])
    want = np.nonzero((np.asarray(a["idx"]) >= first) & (np.asarray(a["taken"]) >= 0))[0]
    assert 0 < len(want) == len(val) and first > int(a["idx"][0])
    pcs = np.asarray(train_ds.site_pc)[np.asarray(a["site"])[want]]
    assert (np.asarray(val.site_pc)[np.asarray(val.arrays["site"])] == pcs).all()
    for col in ("idx", "taken", "tage_pred", "tage_conf", "g", "dynval", "fe_count", "mem_pred", "bpos"):
        got, exp = np.asarray(val.arrays[col]), np.asarray(a[col])[want]
        if col == "bpos":     # into each dataset's own branch stream
            got, exp = np.asarray(val.branches)[got - 1], np.asarray(train_ds.branches)[exp - 1]
        assert (got == exp).all(), col


def test_validation_mispredictions_count_overriding_all_on_the_validation_split(train_ds, tmp_path):
    """Per site, on the validation split's rows: no prediction or TAGE-SC-L's own leaves TAGE-SC-L's count, the
    outcome itself none, its opposite every row."""
    val = validation_data(StageCache(tmp_path / "cache"), train_ds)
    v = validation_branches(val)
    n_val = len(v["taken"])
    cands = {"none": np.full(n_val, np.nan), "tage": v["tage_pred"].astype(float), "oracle": v["taken"].astype(float),
             "wrong": 1.0 - v["taken"]}
    got = validation_mispredictions(val, cands, train_ds.site_pc)
    where = {int(pc): k for k, pc in enumerate(train_ds.site_pc)}
    rows = np.bincount([where[int(pc)] for pc in v["pc"]], minlength=len(train_ds.site_pc)).tolist()
    assert got["none"] == got["tage"] == got["tage-sc-l"] and sum(got["tage-sc-l"]) > 0
    assert got["oracle"] == [0] * (len(rows) + 1) and got["wrong"] == rows + [0] and sum(rows) == n_val > 0
    # a held-out dataset without the first site (its window never ran it), the others in reverse order: the
    # counts follow the held-out sites, the missing site's go to the last entry, and the total stays
    held_out = np.asarray(train_ds.site_pc)[1:][::-1]
    moved = validation_mispredictions(val, cands, held_out)
    assert moved["wrong"] == rows[1:][::-1] + [rows[0]] and rows[0] > 0


def test_the_example_user_workload_runs_through_the_tiny_experiment(native, tmp_path, capsys, monkeypatch):
    """`ncf experiment --preset tiny --workload-file examples/workloads/perl_sort.yaml`, as the README says:
    the workload file's workload alone, trained on input 0 and scored on the held-out input 1; its
    config, written back, names the file and gives the same config."""
    from ncf.cli import main
    from ncf.io import load_config, save_config
    from ncf.studies.experiment import PRESETS
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    example = str(REPO / "examples" / "workloads" / "perl_sort.yaml")
    assert main(["experiment", "--preset", "tiny", "--workload-file", example, "--workers", "1", "--set", "threads=1",
                 "--cache", "cache", "--out", "out"]) == 0
    assert "| perl_sort | tage-sc-l |" in capsys.readouterr().out
    r = json.loads((tmp_path / "out" / "experiment.json").read_text())
    (w,) = r["workloads"]
    assert w["workload"] == "perl_sort" and w["test_samples"] > 0
    assert {row["model"] for row in w["branch"]} == {"tage-sc-l", "fused", "branchnet", "fused+branchnet"}
    assert r["config"]["workload_files"] == [example] and r["config"]["workloads"] == ["perl_sort"]
    held_out = (tmp_path / "cache" / "dataset").glob("perl_sort-1-*/data/dataset.json")
    assert [json.loads(p.read_text())["input"] for p in held_out] == [1]                # the held-out input, recorded as such
    cfg = ExperimentConfig(**{**PRESETS["tiny"], "workload_files": [example], "cache": "cache", "out": "out"})
    assert load_config(ExperimentConfig, save_config(cfg, tmp_path / "exp.yaml")) == cfg


def test_the_prefetch_goal_asks_for_more_coverage_than_both_baselines_at_no_lower_accuracy():
    r = lambda cov, acc: {"coverage": cov, "accuracy": acc}  # noqa: E731
    rows = {"bop": r(0.536, 0.9636), "berti": r(0.571, 0.9348), "fused": r(0.268, 0.9995),
            "fused+bop": r(0.593, 0.9639), "fused+berti": r(0.591, 0.9350)}
    assert prefetch_goal(rows) == "fused+bop"                 # beside Berti: less accurate than BOP alone
    assert prefetch_goal({**rows, "fused+bop": r(0.593, 0.9600)}) == "none"
    assert prefetch_goal({**rows, "fused": r(0.6, 0.97)}) == "fused, fused+bop"
    assert prefetch_goal({"fused": r(0.6, 0.97)}) == ""


def test_the_seeds_mean_of_a_count_is_a_count_and_prints_in_full():
    seeds = [[{"model": "fused", "hard_mispredictions": n, "mpki": m, "hybrid_changed_right": None}]
             for n, m in ((15_831, 3.25), (15_902, 3.5), (15_798, 3.0))]
    row = mean_rows(seeds)[0]
    assert (row["hard_mispredictions"], row["mpki"], row["hybrid_changed_right"]) == (15_844, 3.25, None)
    assert row["hard_mispredictions_sd"] == pytest.approx(np.std([15_831, 15_902, 15_798]))
    assert "| fused | 15,844 | 3.25 |" in markdown_table([row], ["model", "hard_mispredictions", "mpki"])
    assert mean_rows(seeds[:1])[0] == seeds[0][0]
