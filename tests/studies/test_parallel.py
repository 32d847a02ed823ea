"""Ray under the studies: a study run as Ray tasks gives the tables of a serial run, and a failed
task fails the run with its own message while the finished tasks' cache entries stay."""
from __future__ import annotations

import json

import pytest

from ncf.io import UsageError
from ncf.model.dataset import Dataset
from ncf.studies.cache import StageCache
from ncf.studies.experiment import ExperimentConfig, run_data, run_experiment, trace_plan, trace_task, workload_data
from ncf.studies.parallel import Engine
from ncf.trace_eval.workloads import WorkloadError


def test_engine_settings_are_checked():
    with pytest.raises(UsageError, match="workers -1"):
        Engine(workers=-1)
    assert Engine(workers=1).serial and not Engine(workers=1, address="auto").serial
    with pytest.raises(UsageError, match="train_inputs"):
        ExperimentConfig(train_inputs=[0, 1])          # input 1 is held out


def test_a_failed_task_fails_the_run_and_keeps_the_finished_ones(native, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                         # relative paths mean the same in every task
    cache = StageCache(tmp_path / "cache", log=None)
    good = [(cache, "list_walk", i, 0, 20_000) for i in (0, 2)]
    first = Engine(workers=2).map(trace_task, good)
    bad = (cache, "list_walk", 7, 0, 20_000)
    with pytest.raises(WorkloadError, match="input 7 does not exist"):
        Engine(workers=2).map(trace_task, [*good, bad])
    entries = sorted((tmp_path / "cache" / "trace").iterdir())
    assert [e.name.split("-")[1] for e in entries if e.is_dir()] == ["0", "2"]
    assert all((e / "stage.json").exists() for e in entries if e.is_dir())     # nothing half-written
    assert Engine(workers=1).map(trace_task, good) == first                   # the re-run reuses them


@pytest.mark.slow
def test_ray_gives_the_tables_of_a_serial_run(native, tmp_path):
    """Two training inputs x two windows, merged; Ray on 2 CPUs and serial give equal tables."""
    base = dict(workloads=["bzip2"], models=["fused", "delta-lstm"], instructions=300_000, skip=1_000_000,
                windows=2, window_stride=1_000_000, train_inputs=[0, 2], epochs=1, train_cap=400, max_branches=3,
                max_loads=2, threads=1, seeds=2)
    tables = {}
    for workers in (1, 2):
        cfg = ExperimentConfig(**base, workers=workers, cache=str(tmp_path / f"cache{workers}"),
                               out=str(tmp_path / f"out{workers}"))
        run_experiment(cfg)
        tables[workers] = {t: json.loads((tmp_path / f"out{workers}" / f"{t}.json").read_text())
                           for t in ("branch", "prefetch", "summary")}
    assert tables[1] == tables[2]
    fused = next(r for r in tables[2]["branch"]["rows"] if r["model"] == "fused")   # two seeds: mean and spread
    per_seed = [next(r for r in s["branch"] if r["model"] == "fused") for s in
                json.loads((tmp_path / "out2" / "experiment.json").read_text())["workloads"][0]["seeds"]]
    assert fused["mpki"] == pytest.approx(sum(r["mpki"] for r in per_seed) / 2)
    assert fused["mpki_sd"] == pytest.approx(abs(per_seed[0]["mpki"] - per_seed[1]["mpki"]) / 2)
    assert [(i, s) for i, s in trace_plan(cfg, "bzip2")] == [(0, 1_000_000), (0, 2_000_000), (2, 1_000_000),
                                                             (2, 2_000_000), (1, 1_000_000)]
    train, test = workload_data(cfg, StageCache(tmp_path / "cache2", log=None), "bzip2")
    meta = Dataset(train).meta
    assert [p["input"] for p in meta["parts"]] == [0, 0, 2, 2]
    assert Dataset(test).meta["input"] == 1
    assert Dataset(test).meta["prefetch_distance"] == meta["prefetch_distance"]   # chosen on the first training trace
    per_site = {}
    for s in Dataset(train).arrays["site"]:
        per_site[int(s)] = per_site.get(int(s), 0) + 1
    assert max(per_site.values()) <= 4 * 100          # train_cap shared between the four training traces
    (row,) = run_data(cfg)["rows"]                     # --data-only: what the cache holds, nothing rebuilt
    assert (row["train_traces"], row["train_instructions"], row["test_samples"]) == (4, 1_200_000, len(Dataset(test)))
    assert (row["samples_per_site_min"], row["samples_per_site_max"]) == (min(per_site.values()),
                                                                        max(per_site.values()))
    assert row["trace_mb"] > 0 and row["dataset_mb"] > row["merged_mb"] > 0
    assert json.loads((tmp_path / "out2" / "data.json").read_text())["rows"] == [row]


def test_a_training_window_without_samples_is_left_out_and_remembered(native, tmp_path, monkeypatch):
    """A window in another phase of the program runs none of the sites: the held-out set must have
    samples (an error), a training window is left out, and the cache remembers that it is empty."""
    from ncf.model.dataset import DatasetConfig, NoSamples
    from ncf.studies import steps

    monkeypatch.chdir(tmp_path)
    cache = StageCache(tmp_path / "cache", log=None)
    trace = trace_task(cache, "list_walk", 0, 0, 20_000)
    elsewhere = {"branch": [0x1234], "load": [], "from_trace": "another program"}
    with pytest.raises(NoSamples, match="no samples"):
        steps.dataset(cache, trace, elsewhere, DatasetConfig())
    assert steps.dataset(cache, trace, elsewhere, DatasetConfig(), may_be_empty=True) is None
    (entry,) = (tmp_path / "cache" / "dataset").glob("*/stage.json")
    assert json.loads(entry.read_text())["result"]["samples"] == 0
