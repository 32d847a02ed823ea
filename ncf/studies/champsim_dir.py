"""`ncf experiment --champsim-dir DIR`: a directory of ChampSim traces through the baselines, split by
trace file (one held out, ``--test-trace``; the others are the training traces), in one MPKI table
(champsim_mpki.md/.json, champsim.json, and index.html with its screenshot: studies.report).

    r = run_champsim(ExperimentConfig(champsim_dir="traces/champsim", test_trace="gcc-1.champsim.xz"))

Every file of the directory (``.xz``, ``.gz`` or raw ``input_instr`` records; trace_eval.champsim) is
imported into an ncf trace through the stage cache (keyed by the file's sha256) and scored by the
evaluation harness (trace_eval.baseline.evaluate: every branch predictor and prefetcher), as
`ncf baseline` scores an ncf trace. ChampSim records no registers, memory values or instruction bytes:
the models that read them (the fused, static and history GNNs, whose site graphs are built from the
instruction bytes) refuse with a message saying they need an ncf trace; BranchNet and the delta-LSTM
read only branch and address histories, but their datasets are built by model.dataset.build_dataset,
which needs instruction bytes today, so they are not run on ChampSim traces yet (the report says so).
"""
from __future__ import annotations

from pathlib import Path

from ncf.io import UsageError, check_output, file_sha256, save_table, write_json
from ncf.model.train import HISTORY_MODELS, MODELS

from . import steps
from .cache import StageCache
from .parallel import settings
from .report import chromium, write_report

NEEDS_NCF_TRACE = ("fused", "static", "history")


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
    history = [m for m in models if m in HISTORY_MODELS]
    if unknown:
        raise UsageError(f"models {unknown}: give one or more of {', '.join(MODELS)}")
    if fused:
        raise UsageError(f"models {', '.join(fused)} need an ncf trace (registers, memory values and instruction "
                         "bytes, which ChampSim traces do not record): trace the program with `ncf trace`")
    if history:
        raise UsageError(f"models {', '.join(history)} on ChampSim traces: not available yet (their datasets are "
                         "built from instruction bytes); the ChampSim run scores the baselines")


def imported(cache: StageCache, src: Path) -> Path:
    """ChampSim file ``src`` as an ncf trace (trace_eval.champsim.import_champsim), through the cache."""
    from ncf.trace_eval.champsim import import_champsim

    name = src.name.split(".")[0] + ".ncft"
    entry = cache.run("champsim", {"file": file_sha256(src)}, lambda d: {"trace": str(import_champsim(src, d / name))},
                      code=("trace_eval",), label=src.name.split(".")[0])
    return entry.path / name


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
    not_run = {m: ("needs an ncf trace (registers, memory values, instruction bytes)" if m in NEEDS_NCF_TRACE
                   else "not available on ChampSim traces yet (dataset built from instruction bytes)")
               for m in MODELS}
    table = save_table(out / "champsim_mpki", rows, f"ChampSim traces of {cfg.champsim_dir}: conditional-branch MPKI "
                       "of each baseline and L1D demand-miss MPKI without and with each prefetcher (the same harness "
                       f"as `ncf baseline`); held out: {test}, training: the others",
                       extra={"config": settings(cfg), "models_not_run": not_run})
    write_json(out / "champsim.json", {"config": settings(cfg), "test_trace": test, "traces": per_trace,
                                       "models_not_run": not_run})
    pages = write_report(out, f"# ncf experiment: ChampSim traces of {cfg.champsim_dir}\n\n{table}")
    return {"rows": rows, "tables": [table], "test_trace": test, "pages": pages}
