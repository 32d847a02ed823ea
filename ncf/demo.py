"""`ncf demo` / `make demo`: the pipeline end to end on the built-in workloads, with a report.

Stages so far: trace every built-in workload on a training and a held-out input (self-checked);
the classical baselines on every trace; the main study (fused GNN, ablations, learned baselines)
on the SPEC-like programs; the snapshot-lead sweep on bzip2. Work already done with the same
inputs and settings (traces, datasets, trained models) is reused.
"""
from __future__ import annotations

import time
from pathlib import Path

from ncf.io import atomic_path
from ncf.report import save_table
from ncf.model.experiment import ExperimentConfig, run_experiment, run_lead_sweep
from ncf.trace_eval.baseline import evaluate_all
from ncf.trace_eval.capture import record_builtins, trace_row

INPUTS = (0, 1)  # train on input 0, test on input 1


def run(out: Path, instructions: int, skip: int, sweep_workloads=("bzip2",)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metas = record_builtins(Path("traces/demo"), instructions, skip, INPUTS)
    sections = [save_table(out / "traces", [trace_row(m) for m in metas],
                           "Traces (train input 0, held-out input 1; self-checked)")]
    base = evaluate_all([Path(m["path"]) for m in metas], out / "baselines")
    sections += base["tables"]
    sections.append("## Baselines per workload\n\n" + "\n".join(
        f"![{p.stem}](baselines/{p.name})" for p in base["plots"]) + "\n")
    cfg = ExperimentConfig(trace_dir="traces/demo", instructions=instructions, skip=skip,
                           out=str(out / "experiment"))
    t0 = time.monotonic()
    exp = run_experiment(cfg)
    sections += exp["tables"]
    sweep = run_lead_sweep(cfg, workloads=list(sweep_workloads))
    sections += [sweep["table"], "![accuracy against snapshot lead](experiment/lead_sweep.png)\n",
                 f"Study and sweep: {time.monotonic() - t0:.0f} s, of which training "
                 f"{sum(sum(w['train_seconds'].values()) for w in exp['per_workload']):.0f} s (main study).\n"]
    text = "# ncf demo report\n\n" + "\n".join(sections)
    with atomic_path(out / "index.md") as tmp:
        tmp.write_text(text)
    print(text)
    print(f"report: {out / 'index.md'}")
