"""The main study: per workload, train on input 0, test on input 1, every model, one table; and the
lead sweep.

    r = run_experiment(ExperimentConfig(workloads=["bzip2", "xz"]))             # ncf experiment
    s = run_lead_sweep(ExperimentConfig(workloads=["bzip2"]), leads=(0, 10, 100))

For each workload: sites (hard branches, delinquent loads) from the training trace; a capped
training dataset (``train_cap`` samples per site, evenly spaced in time) and the full test dataset
at lead D; the GNN variants and the history-only baselines trained with the same budget; all
scored on the held-out input through the harness (model/evaluate.py). Every step goes through the
stage cache (``cache``), so a re-run redoes only what changed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import UsageError, at_least, check_output, figure, save_figure, save_table, write_json
from ncf.model.dataset import Dataset, DatasetConfig, check_lead
from ncf.model.evaluate import evaluate_branches, evaluate_prefetch
from ncf.model.train import MODELS, TrainConfig, predict, split_by_time
from ncf.trace_eval.workloads import KERNELS, names, prepare

from . import steps
from .cache import StageCache

PROGRAMS = ("bzip2", "xz", "hmmer", "gnugo")
LEADS = (0, 1, 10, 32, 100, 320, 1000)
INPUTS = (0, 1)                # train on input 0, test on input 1


@dataclass
class ExperimentConfig:
    workloads: list = field(default_factory=lambda: list(PROGRAMS))
    models: list = field(default_factory=lambda: list(MODELS))
    instructions: int = 10_000_000
    skip: int = 100_000_000        # past the programs' start-up (the C kernels are traced from their start)
    lead: int = DatasetConfig.lead
    max_branches: int = 6          # hard branches per workload (TAGE-SC-L's worst, up to 50% of its misses)
    max_loads: int = 4             # delinquent loads per workload
    train_cap: int = 1500          # training samples per site
    epochs: int = 8
    hidden: int = TrainConfig.hidden
    batch: int = 64
    lr: float = TrainConfig.lr
    seed: int = TrainConfig.seed
    threads: int = TrainConfig.threads
    out: str = "reports/experiment"
    cache: str = "work/cache"

    def __post_init__(self):
        for what, given, known in (("workloads", self.workloads, names()), ("models", self.models, MODELS)):
            unknown = [x for x in given if x not in known]
            if unknown or not given:
                raise UsageError(f"{what} {given}: give one or more of {', '.join(known)}")
        at_least(self, instructions=1, skip=0, max_branches=0, max_loads=0, train_cap=1)
        # the checks of the stages these settings go to, before any work
        DatasetConfig(lead=self.lead, max_per_site=self.train_cap)
        self.train_config("fused")

    def train_config(self, model: str) -> TrainConfig:
        return TrainConfig(model=model, hidden=self.hidden, epochs=self.epochs, batch=self.batch, lr=self.lr,
                           seed=self.seed, threads=self.threads)


def workload_traces(cache: StageCache, cfg: ExperimentConfig, workload: str, inputs=INPUTS) -> list[Path]:
    """The traces of ``workload`` on ``inputs`` (the C kernels from their start, whole if shorter)."""
    skip = 0 if workload in KERNELS else cfg.skip
    return [steps.trace(cache, prepare(workload, i), skip, cfg.instructions) for i in inputs]


def better_than_tage(train_ds: Dataset, p_taken: np.ndarray) -> list[int]:
    """Hard branches (pcs) where the model beat TAGE-SC-L on the training input's validation
    split (its last 10% in time): the only ones it overrides in the selective mode."""
    a = train_ds.arrays
    _, val = split_by_time(len(train_ds))
    taken, tage, site = (np.asarray(a[k])[val] for k in ("taken", "tage_pred", "site"))
    p = np.asarray(p_taken)[val]
    keep = []
    for k in np.unique(site[(taken >= 0) & ~np.isnan(p)]):
        m = (site == k) & (taken >= 0) & ~np.isnan(p)
        if ((p[m] > 0.5) == taken[m]).sum() > (tage[m] == taken[m]).sum():
            keep.append(int(train_ds.site_pc[k]))
    return keep


def run_baselines(cfg: ExperimentConfig, out, cache: StageCache | None = None) -> dict:
    """Every classical baseline on the traces of ``cfg.workloads`` (inputs 0 and 1): `ncf baseline --all`."""
    from ncf.trace_eval.baseline import write_report

    cache = cache or StageCache(Path(cfg.cache))
    traces = [t for w in cfg.workloads for t in workload_traces(cache, cfg, w)]
    return write_report([steps.baselines(cache, t) for t in traces], out)


def workload_data(cfg: ExperimentConfig, cache: StageCache, workload: str, lead: int | None = None) -> tuple[Path, Path]:
    """The training dataset (input 0, ``train_cap`` samples per site) and the held-out dataset (input 1,
    every sample) of ``workload`` at ``lead``, for the sites of the training trace."""
    lead = cfg.lead if lead is None else lead
    train_trace, test_trace = workload_traces(cache, cfg, workload)
    site_list = steps.sites(cache, train_trace, cfg.max_branches, cfg.max_loads)
    train_ds = steps.dataset(cache, train_trace, site_list, DatasetConfig(lead=lead, max_per_site=cfg.train_cap),
                             label=f"{workload}-0")
    test_ds = steps.dataset(cache, test_trace, site_list, DatasetConfig(lead=lead),
                            vocab=Dataset(train_ds).meta["delta_vocabulary"], label=f"{workload}-1")
    return train_ds, test_ds


def run_workload(cfg: ExperimentConfig, cache: StageCache, workload: str, lead: int | None = None,
                 models=None) -> dict:
    lead = cfg.lead if lead is None else lead
    train_dir, test_dir = workload_data(cfg, cache, workload, lead)
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    branch_models, load_models, selected = {}, {}, {}
    for m in models or cfg.models:
        run = steps.train(cache, cfg.train_config(m), train_ds.path, test_ds.path, label=f"{workload}-{m}")
        pred = predict(run, test_ds.path)
        if m != "delta-lstm":
            branch_models[m] = pred["p_taken"]
            selected[m] = better_than_tage(train_ds, predict(run, train_ds.path)["p_taken"])
        if m != "branchnet":
            load_models[m] = pred["delta_class"]
    has_branch = (np.asarray(test_ds.arrays["taken"]) >= 0).any()
    has_load = (np.asarray(test_ds.arrays["delta"]) >= 0).any()
    return {"workload": workload, "lead": lead,
            "branch": evaluate_branches(test_ds, branch_models, selected) if has_branch else [],
            "prefetch": evaluate_prefetch(test_ds, load_models) if has_load else [],
            "train_samples": len(train_ds), "test_samples": len(test_ds)}


def run_experiment(cfg: ExperimentConfig, cache: StageCache | None = None) -> dict:
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    per = [run_workload(cfg, cache, w) for w in cfg.workloads]
    branch_rows = [{"workload": r["workload"], **b} for r in per for b in r["branch"]]
    pf_rows = [{"workload": r["workload"], **p} for r in per for p in r["prefetch"]]
    summary = summarise(per)
    tables = [
        save_table(out / "branch", branch_rows, f"Hard branches and overall MPKI on the held-out input (lead D = "
                   f"{cfg.lead}); learned models override TAGE-SC-L on the hard branches",
                   columns=["workload", "model", "hard_branch_instances", "hard_mispredictions", "vs_tage_hard",
                            "hard_mpki", "mpki", "sites_selected", "hard_mispredictions_selective",
                            "vs_tage_hard_selective", "mpki_selective"]),
        save_table(out / "prefetch", pf_rows, "Delinquent loads on the held-out input: next-delta accuracy and "
                   "cache-model coverage (BOP for scale)",
                   columns=["workload", "model", "delta_accuracy", "delta_precision", "delta_recall", "coverage",
                            "delinquent_coverage", "accuracy", "l1_mpki_with", "l1_mpki_without"]),
        save_table(out / "summary", summary, "Goals: fused GNN against the best history-only learned baseline, "
                   "TAGE-SC-L and BOP"),
    ]
    write_json(out / "experiment.json", {"config": asdict(cfg), "workloads": per, "summary": summary})
    return {"per_workload": per, "tables": tables, "summary": summary}


def summarise(per: list[dict]) -> list[dict]:
    """One row per workload with the issue's goals as ratios."""
    rows = []
    for r in per:
        b = {x["model"]: x for x in r["branch"]}
        p = {x["model"]: x for x in r["prefetch"]}
        row = {"workload": r["workload"]}
        if "fused" in b:
            row["fused_vs_branchnet_hard"] = (b["fused"]["hard_mispredictions"] / b["branchnet"]["hard_mispredictions"]
                                              - 1) if b.get("branchnet", {}).get("hard_mispredictions") else None
            row["fused_vs_tage_hard"] = b["fused"]["vs_tage_hard"]
            row["fused_vs_tage_hard_selective"] = b["fused"]["vs_tage_hard_selective"]
            row["mpki_tage"], row["mpki_fused_override"] = b["tage-sc-l"]["mpki"], b["fused"]["mpki"]
            row["mpki_fused_selective"] = b["fused"]["mpki_selective"]
        if "fused" in p:
            lstm = p.get("delta-lstm", {}).get("delta_accuracy")
            row["delta_acc_fused"], row["delta_acc_lstm"] = p["fused"]["delta_accuracy"], lstm
            row["fused_over_lstm"] = p["fused"]["delta_accuracy"] / lstm if lstm else None
            row["coverage_fused"], row["coverage_bop"] = p["fused"]["coverage"], p.get("bop", {}).get("coverage")
        rows.append(row)
    return rows


def run_lead_sweep(cfg: ExperimentConfig, leads=LEADS, cache: StageCache | None = None) -> dict:
    """Accuracy of the fused GNN against the snapshot lead D, with TAGE-SC-L (which does not
    depend on D) for reference; writes a table and ``lead_sweep.png``."""
    for d in leads:
        check_lead(d)
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    rows = []
    for w in cfg.workloads:
        for d in leads:
            r = run_workload(cfg, cache, w, lead=d, models=["fused"])
            b = {x["model"]: x for x in r["branch"]}
            p = {x["model"]: x for x in r["prefetch"]}
            rows.append({"workload": w, "lead": d,
                         "hard_acc_fused": b.get("fused", {}).get("hard_accuracy"),
                         "hard_acc_tage": b.get("tage-sc-l", {}).get("hard_accuracy"),
                         "delta_acc_fused": p.get("fused", {}).get("delta_accuracy")})
    table = save_table(out / "lead_sweep", rows, "Accuracy against the snapshot lead D (held-out input)")
    return {"rows": rows, "table": table, "plot": plot_lead_sweep(rows, out / "lead_sweep.png")}


def plot_lead_sweep(rows: list[dict], path: Path) -> Path:
    fig, axes = figure(1, 2, figsize=(10, 3.8))
    for w in dict.fromkeys(r["workload"] for r in rows):
        rs = [r for r in rows if r["workload"] == w]
        x = [max(r["lead"], 0.5) for r in rs]
        for ax, key in ((axes[0], "hard_acc"), (axes[1], "delta_acc")):
            ys = [r[f"{key}_fused"] for r in rs]
            if all(y is None for y in ys):
                continue
            line, = ax.plot(x, ys, "o-", label=f"{w} fused GNN")
            if key == "hard_acc":
                ax.plot(x, [r["hard_acc_tage"] for r in rs], ":", color=line.get_color(), alpha=0.6,
                        label=f"{w} TAGE-SC-L")
    axes[0].set_ylabel("accuracy on hard branches")
    axes[1].set_ylabel("next-delta accuracy (delinquent loads)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("snapshot lead D (instructions; 0 plotted at 0.5)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
