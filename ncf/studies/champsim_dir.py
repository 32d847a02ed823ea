"""`ncf experiment --champsim-dir DIR`: a directory of ChampSim traces through the baselines, split by
trace file (one held out, ``--test-trace``; the others are the training traces), in one MPKI table
(champsim_mpki.md/.json, champsim.json, and index.html with its screenshot: studies.report).

    r = run_champsim(ExperimentConfig(champsim_dir="traces/champsim", test_trace="gcc-1.champsim.xz"))

Every file of the directory (``.xz``, ``.gz`` or raw ``input_instr`` records; trace_eval.champsim) is
imported into an ncf trace through the stage cache (keyed by the file's sha256) and scored by the
evaluation harness (trace_eval.baseline.evaluate: every branch predictor and prefetcher), as
`ncf baseline` scores an ncf trace. ChampSim records no registers, memory values or instruction bytes:
the models that read them (the fused and static GNNs, whose site graphs are built from the instruction
bytes) refuse with a message saying they need an ncf trace. BranchNet, the delta-LSTM and the history GNN
(blank graphs) read only branch and address histories: asked for (``models``), they are trained on history-only
datasets (model.dataset, ``history_only``) of the training traces, for the hard branches and delinquent
loads of each training trace (the delta vocabulary and prefetch distances of the one with the most L1D
demand misses), and scored on
the held-out trace's dataset as `ncf experiment` scores a held-out input (experiment.score_models:
model.evaluate, with the hybrid with TAGE-SC-L), in two more tables (champsim_branch, champsim_prefetch).
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from ncf.io import UsageError, check_output, file_sha256, save_table, write_json
from ncf.model.dataset import DatasetConfig
from ncf.model.train import MODELS

from . import steps
from .cache import StageCache
from .experiment import BRANCH_COLUMNS, PREFETCH_COLUMNS, labels_of, score_models, with_sd
from .parallel import settings
from .report import chromium, write_report

NEEDS_NCF_TRACE = ("fused", "static")   # their site graphs are built from the instruction bytes


def champsim_files(directory) -> list[Path]:
    """The ChampSim trace files of ``directory`` (every regular file not hidden), by name."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"--champsim-dir {d}: not a directory")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < 2:
        raise UsageError(f"--champsim-dir {d}: {len(files)} trace file(s); give two or more (one is held out, "
                         "the others are the training traces)")
    return files


def check_models(models: list) -> None:
    """Refuse, plainly, the models a ChampSim trace cannot feed."""
    unknown = [m for m in models if m not in MODELS]
    fused = [m for m in models if m in NEEDS_NCF_TRACE]
    if unknown:
        raise UsageError(f"models {unknown}: give one or more of {', '.join(MODELS)}")
    if fused:
        raise UsageError(f"models {', '.join(fused)} need an ncf trace (registers, memory values and instruction "
                         "bytes, which ChampSim traces do not record): trace the program with `ncf trace`")


def imported(cache: StageCache, src: Path) -> Path:
    """ChampSim file ``src`` as an ncf trace (trace_eval.champsim.import_champsim), through the cache."""
    from ncf.trace_eval.champsim import import_champsim

    name = src.name.split(".")[0] + ".ncft"
    entry = cache.run("champsim", {"file": file_sha256(src)}, lambda d: {"trace": str(import_champsim(src, d / name))},
                      code=("ncf.trace_eval.champsim",), label=src.name.split(".")[0])
    return entry.path / name


def model_data(cfg, cache: StageCache, train: list[Path], test: Path) -> tuple[Path, Path | None]:
    """History-only datasets (experiment.part_data's, ``history_only``): the training traces' merged
    (``train_cap`` samples per site in all) and the held-out trace's (every sample; None when none of the
    training sites runs in it), for the sites of every training trace. The delta vocabulary and prefetch
    distances are those of ``train[0]``'s dataset (the reference, as the first training window is for ncf)."""
    lists = [steps.sites(cache, t, cfg.max_branches, cfg.max_loads, cfg.load_share) for t in train]
    site_list = {task: list(dict.fromkeys(pc for s in lists for pc in s[task])) for task in ("branch", "load")}
    site_list["from_trace"] = ", ".join(s["from_trace"] for s in lists)
    dcfg = DatasetConfig(lead=cfg.lead, max_per_site=math.ceil(cfg.train_cap / len(train)),
                         prefetch_distance=cfg.prefetch_distance, history_only=True)
    first = steps.dataset(cache, train[0], site_list, dcfg)
    parts = [first] + [steps.dataset(cache, t, site_list, dcfg, **labels_of(first), may_be_empty=True)
                       for t in train[1:]]
    parts = [p for p in parts if p is not None]
    test_ds = steps.dataset(cache, test, site_list, replace(dcfg, max_per_site=None), **labels_of(first),
                            may_be_empty=True)
    return (steps.merged(cache, parts, label="champsim-train") if len(parts) > 1 else first), test_ds


def run_champsim(cfg, models: list | None = None, cache: StageCache | None = None) -> dict:
    """The baselines on every trace of ``cfg.champsim_dir`` (``cfg.test_trace`` held out, default the
    first by name); ``models``: learned models asked for explicitly (checked by ``check_models``)."""
    check_models(models or [])
    files = champsim_files(cfg.champsim_dir)
    test = cfg.test_trace or files[0].name
    if test not in [f.name for f in files]:
        raise UsageError(f"--test-trace {test}: not a file of {cfg.champsim_dir} ({', '.join(f.name for f in files)})")
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    chromium()   # the report's screenshot needs it: say so before the work, not after
    engine = cfg.engine()
    traces = engine.map(imported, [(cache, f) for f in files], desc="import")
    results = engine.map(steps.baselines, [(cache, t) for t in traces], desc="baselines")
    rows, per_trace = [], []
    for f, r in zip(files, results):
        role = "test" if f.name == test else "train"
        mpki = {b["predictor"]: b["mpki"] for b in r["branch"]}
        pf = {p["prefetcher"]: p for p in r["prefetch"]}
        any_pf = next(iter(pf.values()), {})
        rows.append({"trace": f.name, "split": role, "instructions": r["instructions"], **mpki,
                     "hard_branches": len(r.get("hard_branches", [])),
                     "l1_mpki_without": any_pf.get("l1_mpki_without"),
                     **{f"l1_mpki_{name}": p["l1_mpki_with"] for name, p in pf.items()}})
        per_trace.append({"trace": f.name, "split": role, "result": r})
    not_run = {m: "needs an ncf trace (registers, memory values, instruction bytes)" if m in NEEDS_NCF_TRACE
               else "not asked for (--models)" for m in MODELS if m not in (models or [])}
    table = save_table(out / "champsim_mpki", rows, f"ChampSim traces of {cfg.champsim_dir}: conditional-branch MPKI "
                       "of each baseline and L1D demand-miss MPKI without and with each prefetcher (the same harness "
                       f"as `ncf baseline`); held out: {test}, training: the others",
                       extra={"config": settings(cfg), "models_not_run": not_run})
    tables, scored = [table], {}
    if models:
        # the reference training trace: the one with the most L1D demand misses (its loads' deltas)
        misses = {t: r["instructions"] * r["prefetch"][0]["l1_mpki_without"] for t, r in zip(traces, results)}
        train = sorted((t for f, t in zip(files, traces) if f.name != test), key=lambda t: -misses[t])
        train_dir, test_dir = model_data(cfg, cache, train, traces[[f.name for f in files].index(test)])
        if test_dir is None:
            not_run |= {m: "none of the training traces' sites runs in the held-out trace" for m in models}
        else:
            scored = score_models(cfg, cache, train_dir, test_dir, "champsim", models)
            tables += [save_table(out / "champsim_branch", scored["branch"], f"Hard branches of the training traces "
                                  f"on the held-out {test} (lead D = {cfg.lead}): the models override TAGE-SC-L on "
                                  "all of them, and as a hybrid where a policy chosen on the training traces' "
                                  "validation split says so", columns=with_sd(scored["branch"], BRANCH_COLUMNS)),
                       save_table(out / "champsim_prefetch", scored["prefetch"], f"Delinquent loads of the training "
                                  f"traces on the held-out {test}: k-step delta accuracy and cache-model coverage",
                                  columns=with_sd(scored["prefetch"], PREFETCH_COLUMNS))]
    write_json(out / "champsim.json", {"config": settings(cfg), "test_trace": test, "traces": per_trace,
                                       "models": scored, "models_not_run": not_run})
    pages = write_report(out, f"# ncf experiment: ChampSim traces of {cfg.champsim_dir}\n\n" + "\n".join(tables))
    return {"rows": rows, "tables": tables, "test_trace": test, "pages": pages, "models": scored}
