"""ncf classify: the corpus builds and runs deterministically (natively and under the tracer), the
splits never put a held-out implementation or level into training, the linear probe learns the
algorithm from real traces, and the command writes its table, JSON and confusion-matrix PNG and
reuses its work on a second run."""
from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pytest

from ncf.model.classify import fit_probe, probe_predict
from ncf.studies.classify import (
    LEVELS,
    ClassifyConfig,
    Program,
    corpus_implementations,
    corpus_programs,
    make_splits,
    run_classify,
)

# classes whose implementations all solve the same problem (so print the same checksum); the
# dynamic-programming class holds three different problems (LCS, edit distance, knapsack)
SAME_PROBLEM = {"sort", "search", "graph", "hash", "strmatch", "matrix", "primes"}


def _run(p: Program, *args: str) -> bytes:
    return subprocess.run([str(p.binary), *args], capture_output=True, check=True, timeout=20).stdout


def test_corpus_has_eight_classes_and_every_program_agrees_across_levels_and_implementations(native):
    impls = corpus_implementations()
    assert len(impls) >= 8 and min(len(v) for v in impls.values()) >= 3
    for cls, names in impls.items():
        outs = {(impl, lvl): _run(Program(cls, impl, lvl, 5), "5", "3") for impl in names for lvl in LEVELS}
        for impl in names:   # one implementation: the same result at -O0, -O1 and -O2
            assert len({outs[impl, lvl] for lvl in LEVELS}) == 1, (cls, impl, outs)
        if cls in SAME_PROBLEM:   # one problem: every implementation computes the same result
            assert len(set(outs.values())) == 1, (cls, outs)
        for impl in names:   # the input seed matters
            assert _run(Program(cls, impl, 2, 6), "6", "3") != outs[impl, 2]
            assert outs[impl, 2].strip().isdigit()


def test_corpus_trace_is_deterministic_and_the_traced_run_prints_the_native_result(native, tmp_path):
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import custom

    p = Program("strmatch", "kmp", 1, 3)
    inv = custom([str(p.binary), "3", "12"])
    a = record(inv, tmp_path / "a.ncft", count=10**7, run_to_end=True, progress=False)
    b = record(inv, tmp_path / "b.ncft", count=10**7, run_to_end=True, progress=False)
    assert a["selfcheck"]["ok"] and a["window"]["recorded"] == a["window"]["executed_total"] > 10**5
    assert a["file"]["sha256"] == b["file"]["sha256"]   # same instructions, registers and values
    assert a["program_output_sha256"] == hashlib.sha256(_run(p, "3", "12")).hexdigest()


def test_splits_never_train_on_a_held_out_implementation_or_level():
    cfg = ClassifyConfig(impl_folds=4, seeds=[1, 2])
    programs = corpus_programs(cfg)
    splits = make_splits(programs, cfg)
    impl_splits = [s for s in splits if s["split"] == "unseen implementation"]
    assert len(impl_splits) == 4
    held_ever = set()
    for sp in impl_splits:
        train = {(p.cls, p.impl) for p in sp["train"]}
        test = {(p.cls, p.impl) for p in sp["test"]}
        assert train.isdisjoint(test)
        assert set(sp["train"]) | set(sp["test"]) == set(programs) and set(sp["train"]).isdisjoint(sp["test"])
        assert {c for c, _ in test} == {c for c, _ in train} == set(corpus_implementations())
        assert len(test) == len(corpus_implementations())   # exactly one implementation per class
        held_ever |= test
    assert held_ever == {(p.cls, p.impl) for p in programs}   # 4 folds hold out every implementation
    (lvl,) = [s for s in splits if s["split"] == "unseen optimisation level"]
    assert {p.level for p in lvl["test"]} == {cfg.test_level}
    assert cfg.test_level not in {p.level for p in lvl["train"]}
    assert {(p.cls, p.impl) for p in lvl["test"]} == {(p.cls, p.impl) for p in lvl["train"]}


def test_probe_separates_classes_and_is_deterministic():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 3
    y = np.repeat(np.arange(3), 20)
    X = centers[y] + rng.normal(size=(60, 5))
    a, b = fit_probe(X, y, 3), fit_probe(X, y, 3)
    assert np.array_equal(a["W"], b["W"])
    assert (probe_predict(a, X) == y).mean() > 0.9


def test_bag_of_opcodes_probe_beats_chance_on_real_traces(native, tmp_path):
    cfg = ClassifyConfig(classes=["sort", "search", "primes"], max_impls=2, levels=[1, 2], impl_folds=2,
                         instructions=150_000, methods=["opcodes"], cache=str(tmp_path / "cache"),
                         out=str(tmp_path / "out"))
    r = run_classify(cfg, progress=False)
    rows = {row["split"]: row for row in r["rows"]}
    assert rows["unseen implementation"]["test_programs"] == 3 * 2 * 2   # 2 folds x 3 classes x 2 levels
    assert rows["unseen optimisation level"]["test_programs"] == 3 * 2
    for row in rows.values():
        assert row["accuracy"] > row["chance"] == pytest.approx(1 / 3)


def test_cli_writes_table_json_confusion_png_and_reuses_its_work(native, tmp_path, capsys):
    from ncf.cli import main

    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["classify", "--classes", "sort", "hash", "--max-impls", "2", "--levels", "1", "2",
            "--instructions", "120k", "--per-site", "24", "--epochs", "1", "--scratch-epochs", "1",
            "--cache", str(cache), "--out", str(out), "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| unseen implementation | fused |" in printed and "confusion, fused, unseen implementation" in printed
    table = json.loads((out / "accuracy.json").read_text())
    assert {(r["split"], r["method"]) for r in table["rows"]} == {
        (s, m) for s in ("unseen implementation", "unseen optimisation level")
        for m in ("fused", "static", "opcodes", "scratch")}
    assert (out / "accuracy.md").read_text().startswith("## Algorithm classification")
    conf = json.loads((out / "confusion.json").read_text())
    assert conf["classes"] == ["hash", "sort"]
    for row in table["rows"]:
        c = np.array(conf["rows_true_columns_predicted"][row["split"]][row["method"]])
        assert c.sum() == row["test_programs"] and np.trace(c) == row["correct"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the samples obey the lead: every dataset was built with D = 100
    assert {json.loads(p.read_text())["config"]["lead"] for p in cache.glob("dataset/*/data/dataset.json")} == {100}
    stamps = {p: p.stat().st_mtime_ns for p in list(cache.rglob("*.ncft")) + list(cache.rglob("*.pt"))}
    assert len(list(cache.glob("train/*/run/checkpoint.pt"))) == len(list(cache.glob("scratch/*/scratch.pt"))) == 3
    before = table["rows"]
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps        # nothing traced or trained again
    assert json.loads((out / "accuracy.json").read_text())["rows"] == before
