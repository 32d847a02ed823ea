"""The main experiment: per workload, train on input 0, test on input 1, every model, one table.

    rows = run_experiment(ExperimentConfig(workloads=["bzip2", "xz"]))     # ncf experiment
    sweep = run_lead_sweep(ExperimentConfig(...), leads=(0, 1, 10, 32, 100, 320, 1000))

For each workload: sites (hard branches, delinquent loads) from the training trace; a capped
training dataset (``train_cap`` samples per site, evenly spaced in time) and the full test
dataset at lead D; the three GNN variants and the two history-only baselines trained with the same
budget; everything scored on the held-out input through the harness (model/evaluate.py).
Datasets and trained runs are reused when their inputs and settings are unchanged.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import UsageError, at_least, check_output, write_json
from ncf.report import save_table
from ncf.trace_eval.capture import record_builtins
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.workloads import names

from .dataset import Dataset, DatasetConfig, build_dataset, check_lead, find_sites
from .evaluate import evaluate_branches, evaluate_prefetch
from .train import MODELS, TrainConfig, predict, split_by_time, train

PROGRAMS = ("bzip2", "xz", "hmmer", "gnugo")
LEADS = (0, 1, 10, 32, 100, 320, 1000)


@dataclass
class ExperimentConfig:
    workloads: list = field(default_factory=lambda: list(PROGRAMS))
    models: list = field(default_factory=lambda: list(MODELS))
    trace_dir: str = "traces/demo"
    instructions: int = 10_000_000
    skip: int = 100_000_000      # past the programs' start-up (the C kernels are traced from their start)
    work_dir: str = "work/experiment"
    out: str = "reports/experiment"
    lead: int = 100
    max_branches: int = 6          # hard branches per workload (TAGE-SC-L's worst, up to 50% of its misses)
    max_loads: int = 4             # delinquent loads per workload
    train_cap: int = 1500          # training samples per site
    epochs: int = 8
    hidden: int = 16
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        for what, given, known in (("workloads", self.workloads, names()), ("models", self.models, MODELS)):
            unknown = [x for x in given if x not in known]
            if unknown or not given:
                raise UsageError(f"{what} {given}: give one or more of {', '.join(known)}")
        at_least(self, instructions=1, skip=0, max_branches=0, max_loads=0, train_cap=1)
        # the checks of the stages these settings go to, before any work
        DatasetConfig(lead=self.lead, max_per_site=self.train_cap)
        TrainConfig(hidden=self.hidden, epochs=self.epochs, batch=self.batch, lr=self.lr, threads=self.threads)


def _check_outputs(cfg: ExperimentConfig) -> None:
    for d in (cfg.trace_dir, cfg.work_dir, cfg.out):
        check_output(d, directory=True)


def _traces(cfg: ExperimentConfig, workload: str) -> tuple[Path, Path]:
    metas = record_builtins(Path(cfg.trace_dir), cfg.instructions, cfg.skip, (0, 1), only=[workload])
    return Path(metas[0]["path"]), Path(metas[1]["path"])


def _dataset(trace: Path, sites: dict, out: Path, dcfg: DatasetConfig, vocab=None) -> Dataset:
    """Build, or reuse when the trace, sites, settings and vocabulary are those of the last build."""
    meta_path = out / "dataset.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        sha = TraceReader(trace, verify=False).meta.get("file", {}).get("sha256")
        same = (meta.get("config") == asdict(dcfg) and meta.get("trace_sha256") == sha
                and meta.get("sites_from") == sites.get("from_trace")
                and (vocab is None or meta.get("delta_vocabulary") == vocab))
        if same:
            return Dataset(out)
    build_dataset(trace, sites, out, dcfg, vocab=vocab)
    return Dataset(out)


def _sites(cfg: ExperimentConfig, train_trace: Path, work: Path) -> dict:
    path = work / "sites.json"
    sha = TraceReader(train_trace, verify=False).meta.get("file", {}).get("sha256")
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("trace_sha256") == sha and saved.get("limits") == [cfg.max_branches, cfg.max_loads]:
            return saved
    sites = find_sites(train_trace, max_branches=cfg.max_branches, max_loads=cfg.max_loads)
    sites.update(trace_sha256=sha, limits=[cfg.max_branches, cfg.max_loads])
    write_json(path, sites)
    return sites


def _train_and_predict(cfg: ExperimentConfig, model: str, train_ds: Dataset, test_ds: Dataset, run: Path) -> dict:
    tcfg = TrainConfig(train=str(train_ds.path), test=str(test_ds.path), out=str(run), model=model,
                       hidden=cfg.hidden, epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed,
                       threads=cfg.threads)
    done = run / "train.json"
    if not (done.exists() and json.loads(done.read_text()).get("config") == asdict(tcfg)
            and (run / "checkpoint.pt").stat().st_mtime >= (train_ds.path / "dataset.json").stat().st_mtime):
        train(tcfg)
    summary = json.loads(done.read_text())
    if model in ("branchnet", "delta-lstm"):
        from .history_models import predict_history as predictor
    else:
        predictor = predict
    return {"pred": predictor(run, test_ds.path), "train_seconds": summary["train_seconds"],
            "sites": better_than_tage(train_ds, predictor(run, train_ds.path)["p_taken"])}


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


def run_workload(cfg: ExperimentConfig, workload: str, lead: int | None = None, models=None) -> dict:
    lead = cfg.lead if lead is None else lead
    models = models or cfg.models
    train_trace, test_trace = _traces(cfg, workload)
    work = Path(cfg.work_dir) / workload
    sites = _sites(cfg, train_trace, work)
    dcfg = DatasetConfig(lead=lead, max_per_site=cfg.train_cap)
    train_ds = _dataset(train_trace, sites, work / f"data-L{lead}" / "train", dcfg)
    test_ds = _dataset(test_trace, sites, work / f"data-L{lead}" / "test", DatasetConfig(lead=lead),
                       vocab=train_ds.meta["delta_vocabulary"])
    results = {m: _train_and_predict(cfg, m, train_ds, test_ds, work / f"runs-L{lead}" / m) for m in models}
    branch_models = {m: r["pred"]["p_taken"] for m, r in results.items() if m != "delta-lstm"}
    selected = {m: r["sites"] for m, r in results.items() if m != "delta-lstm"}
    load_models = {m: r["pred"]["delta_class"] for m, r in results.items() if m != "branchnet"}
    has_branch = (np.asarray(test_ds.arrays["taken"]) >= 0).any()
    has_load = (np.asarray(test_ds.arrays["delta"]) >= 0).any()
    return {"workload": workload, "lead": lead,
            "branch": evaluate_branches(test_ds, branch_models, selected) if has_branch else [],
            "prefetch": evaluate_prefetch(test_ds, load_models) if has_load else [],
            "train_seconds": {m: r["train_seconds"] for m, r in results.items()},
            "train_samples": len(train_ds), "test_samples": len(test_ds)}


def run_experiment(cfg: ExperimentConfig) -> dict:
    _check_outputs(cfg)
    out = Path(cfg.out)
    per = [run_workload(cfg, w) for w in cfg.workloads]
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


def run_lead_sweep(cfg: ExperimentConfig, leads=LEADS, workloads=None) -> dict:
    """Accuracy of the fused GNN against the snapshot lead D, with TAGE-SC-L (which does not
    depend on D) for reference; writes a table and ``lead_sweep.png``."""
    for d in leads:
        check_lead(d)
    _check_outputs(cfg)
    out = Path(cfg.out)
    rows = []
    for w in workloads or cfg.workloads:
        for d in leads:
            r = run_workload(cfg, w, lead=d, models=["fused"])
            b = {x["model"]: x for x in r["branch"]}
            p = {x["model"]: x for x in r["prefetch"]}
            rows.append({"workload": w, "lead": d,
                         "hard_acc_fused": b.get("fused", {}).get("hard_accuracy"),
                         "hard_acc_tage": b.get("tage-sc-l", {}).get("hard_accuracy"),
                         "delta_acc_fused": p.get("fused", {}).get("delta_accuracy")})
    table = save_table(out / "lead_sweep", rows, "Accuracy against the snapshot lead D (held-out input)")
    return {"rows": rows, "table": table, "plot": plot_lead_sweep(rows, out / "lead_sweep.png")}


def plot_lead_sweep(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ncf.io import atomic_path

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for w in workloads:
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
