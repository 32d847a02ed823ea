"""The main study: per workload, train on the training inputs, test on the held-out input 1, every
model, one table; and the lead sweep.

    r = run_experiment(ExperimentConfig(workloads=["bzip2", "xz"]))             # ncf experiment
    s = run_lead_sweep(ExperimentConfig(workloads=["bzip2"], leads=[0, 10, 100]))
    r = run_experiment(ExperimentConfig(**PRESETS["large"]))                     # ncf experiment --preset large

For each workload: traces of every training input (``train_inputs``) in ``windows`` windows spread
over the run (``skip``, ``skip + window_stride``, ...; the C kernels once, from their start) and of
the held-out input 1 (its first window); sites (hard branches, delinquent loads), the delta
vocabulary and the loads' prefetch distances from the first training trace; one dataset per training
trace at lead D (``train_cap`` samples per site in all, shared evenly between the traces, evenly
spaced in time), merged into the training set, and the full held-out dataset; the GNN variants and
the history-only baselines trained with the same budget; all scored on the held-out input through
the harness (model/evaluate.py), the hybrids' policies chosen on every hard-branch instance of the training
traces' validation stretch (``validation_data``). Every step goes through the stage cache (``cache``), so a re-run redoes only
what changed; traces, datasets and the per-workload training run as Ray tasks (``workers``,
``ray_address``; ncf/studies/parallel.py), which gives the same tables as a serial run. The tables
(markdown + JSON) go to ``out``, and all of them on one page to ``out``/index.md, index.html and
screenshot.png (ncf/studies/report.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ncf.io import UsageError, at_least, check_output, figure, read_json, save_figure, save_table, write_json
from ncf.model.dataset import Dataset, DatasetConfig, check_lead, check_share
from ncf.model.evaluate import evaluate_branches, evaluate_prefetch, hybrid_policy, override
from ncf.model.train import GNN_MODELS, MODELS, TrainConfig, predict, split_rows
from ncf.trace_eval.workloads import KERNELS, N_INPUTS, TEST_INPUT, UserWorkload, load_workloads, names, prepare

from . import steps
from .cache import StageCache
from .parallel import Engine, settings
from .report import chromium, write_report

PROGRAMS = ("bzip2", "xz", "hmmer", "gnugo")
LEADS = [0, 10, 30, 100, 300, 1000]   # the lead sweep


@dataclass
class ExperimentConfig:
    workloads: list | None = None  # None: the workload files' workloads if any are given, else the four programs
    workload_files: list = field(default_factory=list)   # user workloads (YAML; trace_eval.workloads.load_workload)
    champsim_dir: str | None = None   # a directory of ChampSim traces instead of workloads (studies.champsim_dir)
    test_trace: str | None = None     # its trace file held out (default: the first by name)
    models: list = field(default_factory=lambda: list(MODELS))
    instructions: int = 10_000_000     # per window
    skip: int = 100_000_000        # where the first window starts: past the programs' start-up
    windows: int = 1               # windows per training input, window_stride apart (kernels: one, from the start)
    window_stride: int = 250_000_000
    train_inputs: list = field(default_factory=lambda: [0])   # input 1 is held out (TEST_INPUT)
    lead: int = DatasetConfig.lead
    prefetch_distance: int = DatasetConfig.prefetch_distance   # k of the prefetch label; 0 = per load, for timeliness
    max_branches: int = 6          # hard branches per workload (TAGE-SC-L's worst, up to 50% of its misses)
    max_loads: int = 4             # delinquent loads per workload: at most this many ...
    load_share: float = 0.5        # ... the fewest holding this share of the training input's L1D load misses
    train_cap: int = 1500          # training samples per site, over all training traces
    epochs: int = 8
    hidden: int = TrainConfig.hidden
    batch: int = 64
    lr: float = TrainConfig.lr
    seed: int = TrainConfig.seed
    branchnet: str = TrainConfig.branchnet   # BranchNet's published shape: big or mini (model.baselines)
    seeds: int = 1                 # models per workload with seeds seed, seed + 1, ...: tables give means (+ sd)
    threads: int = TrainConfig.threads
    drop: list = field(default_factory=list)   # inputs the GNN models do not see (TrainConfig.drop)
    ablations: list = field(default_factory=list)   # more fused GNNs, each without one input: "fused-no-<name>"
    leads: list = field(default_factory=list)   # the lead sweep: one fused GNN (seed ``seed``) per workload and lead
    out: str = "reports/experiment"
    cache: str = "work/cache"
    workers: int = 0               # Ray tasks at once on this machine: 0 = every CPU, 1 = serial without Ray
    ray_address: str | None = None  # a Ray cluster to run on instead ("auto", "ray://head:10001"; or RAY_ADDRESS)

    def __post_init__(self):
        self.user = load_workloads(self.workload_files)   # name -> UserWorkload (not a field: the files are)
        if self.workloads is None:
            self.workloads = list(self.user) or list(PROGRAMS)
        for what, given, known in (("workloads", self.workloads, (*names(), *self.user)),
                                   ("models", self.models, MODELS)):
            unknown = [x for x in given if x not in known]
            if unknown or not given:
                raise UsageError(f"{what} {given}: give one or more of {', '.join(known)}")
        at_least(self, instructions=1, skip=0, windows=1, window_stride=1, max_branches=0, max_loads=0,
                 train_cap=1, workers=0, seeds=1)
        bad = [i for i in self.train_inputs if not 0 <= int(i) < N_INPUTS or int(i) == TEST_INPUT]
        if bad or not self.train_inputs or len(set(self.train_inputs)) != len(self.train_inputs):
            raise UsageError(f"train_inputs {self.train_inputs}: give distinct inputs of 0..{N_INPUTS - 1} other "
                             f"than {TEST_INPUT}, which is held out")
        # the checks of the stages these settings go to, before any work
        check_share(load_share=self.load_share)
        DatasetConfig(lead=self.lead, max_per_site=self.train_cap, prefetch_distance=self.prefetch_distance)
        for d in self.leads:
            check_lead(d)
        for name in ["", *self.ablations]:
            self.train_config("fused", drop=[name] if name else [])

    def variants(self, models: list) -> list[tuple[str, str, list]]:
        """(name in the tables, model, inputs it does not see besides ``drop``) of every model trained."""
        return [(m, m, []) for m in models] + [(f"fused-no-{a}", "fused", [a]) for a in self.ablations
                                               if "fused" in models]

    def train_config(self, model: str, seed: int | None = None, drop: list = ()) -> TrainConfig:
        return TrainConfig(model=model, hidden=self.hidden, epochs=self.epochs, batch=self.batch, lr=self.lr,
                           seed=self.seed if seed is None else seed, threads=self.threads, branchnet=self.branchnet,
                           drop=[*self.drop, *drop] if model in GNN_MODELS else [])

    def engine(self) -> Engine:
        return Engine(self.workers, self.ray_address)

    def workload(self, name: str) -> str | UserWorkload:
        """What ``prepare`` takes for workload ``name``: a built-in's name or the user workload."""
        return self.user.get(name, name)


# Presets (`ncf experiment --preset NAME`): settings over the defaults; options given on top win.
# ``study`` is issue 17's study sized for about an hour on a 2-core machine: 3 training inputs x 2 windows
# x 10M instructions per program, up to 8,000 training samples per site (8 epochs: at this size 8 beat 4 on the hard
# branches of all four programs, README "The study"), the loads holding three quarters
# of the training input's L1D misses (at most 8: a learned prefetcher on the few loads holding half of them leaves
# the rest to the baselines, README "Where the prefetch goal's coverage lies"), 3 seeds of every model, the four
# feature ablations and the lead sweep. ``large`` runs the same study on issue 16's data at scale (3 training
# inputs x 4 windows x 25M instructions, up to 64,000 samples per site: >= 50,000 where a site runs that
# often, since some windows run a site less than its share) with Big-BranchNet, 8 epochs as well (at 64,000 per
# site too 8 epochs beat 4 on the hard branches of all four programs: README, "The study"): a Ray cluster or a GPU.
STUDY = {"train_inputs": [0, 2, 3], "windows": 2, "window_stride": 100_000_000, "instructions": 10_000_000,
         "max_loads": 8, "load_share": 0.75, "train_cap": 8_000, "epochs": 8, "batch": 256, "seeds": 3,
         "models": ["fused", "branchnet", "delta-lstm"], "branchnet": "mini",
         "ablations": ["frontend", "memory", "tage-internals", "snapshot"], "leads": LEADS}
# ``tiny`` checks that a workload runs through the whole study in about a minute (what CI runs on the example
# user workload): 400k-instruction windows, 2 hard branches, 1 delinquent load, 300 samples per site, 1 epoch.
PRESETS = {
    "default": {},
    "tiny": {"instructions": 400_000, "skip": 1_000_000, "max_branches": 2, "max_loads": 1, "train_cap": 300,
             "epochs": 1, "models": ["fused", "branchnet", "delta-lstm"], "branchnet": "mini"},
    "study": STUDY,
    "large": {**STUDY, "windows": 4, "instructions": 25_000_000, "train_cap": 64_000, "branchnet": "big"},
}


def trace_plan(cfg: ExperimentConfig, workload: str) -> list[tuple[int, int]]:
    """(input, skip) of ``workload``'s traces: every training input's windows, then the held-out input's
    first window. The C kernels are short: traced once per input, from their start; a user workload's
    windows start at its file's ``skip``."""
    if workload in KERNELS:
        return [(i, 0) for i in cfg.train_inputs] + [(TEST_INPUT, 0)]
    first = cfg.user[workload].skip if workload in cfg.user else cfg.skip
    starts = [first + k * cfg.window_stride for k in range(cfg.windows)]
    return [(i, s) for i in cfg.train_inputs for s in starts] + [(TEST_INPUT, first)]


def trace_task(cache: StageCache, workload: str | UserWorkload, inp: int, skip: int, count: int) -> Path:
    return steps.trace(cache, prepare(workload, inp), skip, count)


def validation_data(cache: StageCache, train_ds: Dataset, label: str = "") -> list[Dataset]:
    """The hybrids' validation split of ``train_ds``: for each of its parts (one training trace each), every
    instance of its hard branches from the part's first validation sample on (its last 10% in time,
    model.loop.split_rows, on which no model trained), a branch dataset built as the part's but with no cap
    (``DatasetConfig.since``). Models are selected on the validation samples themselves; a hybrid's policy makes
    one choice per site, TAGE-SC-L confidence level and threshold, which the few hundred capped samples of a
    site leave to noise, so it is chosen on every instance of the same stretch of the training traces."""
    va = split_rows(train_ds)[1]
    bounds = np.cumsum([0, *train_ds.part_rows])
    idx = np.asarray(train_ds.arrays["idx"])
    parts = [p["path"] for p in train_ds.meta.get("parts", [])] or [train_ds.path]
    sites = {"branch": [int(pc) for k, pc in enumerate(train_ds.site_pc) if train_ds.task(k) == "branch"],
             "load": [], "from_trace": train_ds.meta["sites_from"]}
    out = []
    for k, (path, lo, hi) in enumerate(zip(parts, bounds[:-1], bounds[1:])):
        rows = va[(va >= lo) & (va < hi)]
        if not len(rows) or not sites["branch"]:
            continue
        meta = Dataset(path).meta
        dcfg = replace(DatasetConfig(**meta["config"]), task="branch", max_per_site=None, since=int(idx[rows].min()))
        d = steps.dataset(cache, Path(meta["trace"]), sites, dcfg, vocab=meta["delta_vocabulary"],
                          distance=meta["prefetch_distance"], label=f"{label or 'train'}-val{k}", may_be_empty=True)
        if d is not None:
            out.append(Dataset(d))
    return out


def validation_predictions(run: Path, val: list[Dataset]) -> np.ndarray:
    """A trained run's p_taken on every row of the validation split ``val`` (``validation_data``), in order."""
    return np.concatenate([np.asarray(predict(run, d.path)["p_taken"], np.float64) for d in val] or [np.zeros(0)])


def validation_branches(val: list[Dataset]) -> dict:
    """The taken, TAGE-SC-L prediction and confidence level and site pc of every row of ``val``
    (``validation_data``: hard-branch samples only), in order."""
    def cat(values):
        return np.concatenate(values or [np.zeros(0, np.int64)])
    cols = {k: cat([np.asarray(d.arrays[k]) for d in val]) for k in ("taken", "tage_pred", "tage_conf")}
    cols["pc"] = cat([np.asarray(d.site_pc, np.uint64)[np.asarray(d.arrays["site"], np.int64)] for d in val])
    return {k: v.astype(np.uint64 if k == "pc" else np.int64) for k, v in cols.items()}


def policy_of(val: list[Dataset], candidates: dict[str, np.ndarray]) -> dict:
    """The hybrid's override policy over ``candidates`` (p_taken per row of ``val``, ``validation_data``;
    model.evaluate.hybrid_policy), chosen on the training inputs' validation split only."""
    v = validation_branches(val)
    return hybrid_policy(candidates, v["taken"], v["tage_pred"], v["tage_conf"], v["pc"])


def validation_mispredictions(val: list[Dataset], candidates: dict[str, np.ndarray],
                              site_pc: np.ndarray) -> dict[str, list[int]]:
    """The hard-branch mispredictions on the training inputs' validation split (``validation_data``) of
    TAGE-SC-L and of each of ``candidates`` (p_taken per row of ``val``) overriding it on every hard branch,
    per site of ``site_pc`` (the held-out dataset's sites in its order: it lacks a training site that its
    window never ran), then one entry for the training sites it lacks. Beside the held-out input's figures
    this separates what a model cannot learn from the inputs it was trained on from what does not carry
    over to another input."""
    v = validation_branches(val)
    taken, tage = v["taken"].astype(bool), v["tage_pred"].astype(bool)
    where = {int(pc): k for k, pc in enumerate(np.asarray(site_pc, np.uint64))}
    site, n = np.array([where.get(int(pc), len(site_pc)) for pc in v["pc"]], np.int64), len(site_pc) + 1

    def per_site(wrong):
        return np.bincount(site[wrong], minlength=n).tolist()
    out = {"tage-sc-l": per_site(tage != taken)}
    for m, p in candidates.items():
        out[m] = per_site(override(np.asarray(p, np.float64), tage) != taken)
    return out


THREE_WAY = "fused+branchnet"
# the branch table's columns (model.evaluate.evaluate_branches, with_validation)
BRANCH_COLUMNS = ["model", "hard_branch_instances", "hard_mispredictions", "vs_tage_hard", "vs_tage_hard_val",
                  "hard_mpki", "mpki", "hard_mispredictions_hybrid", "vs_tage_hard_hybrid", "mpki_hybrid",
                  "hybrid_changed", "hybrid_changed_right"]
PREFETCH_COLUMNS = ["model", "distance", "delta_accuracy", "delta_precision", "delta_recall", "coverage",
                    "delinquent_coverage", "accuracy", "late_fraction", "l1_mpki_with", "l1_mpki_without"]


def with_three_way(test_p: dict, train_p: dict) -> tuple[dict, dict]:
    """The three-way hybrid's candidates when both the fused GNN and BranchNet ran: each, and their mean
    (the mean is also its override-all prediction), on the test rows and on the training set's validation rows."""
    if not {"fused", "branchnet"} <= test_p.keys():
        return test_p, train_p
    mean = lambda d: (np.asarray(d["fused"], np.float64) + np.asarray(d["branchnet"], np.float64)) / 2  # noqa: E731
    return {**test_p, THREE_WAY: mean(test_p)}, {**train_p, THREE_WAY: mean(train_p)}


def run_baselines(cfg: ExperimentConfig, out, cache: StageCache | None = None) -> dict:
    """Every classical baseline on the traces of ``cfg.workloads`` (training and held-out), as Ray
    tasks: `ncf baseline --all`."""
    from ncf.trace_eval.baseline import write_report

    cache = cache or StageCache(Path(cfg.cache))
    engine = cfg.engine()
    jobs = [(cache, cfg.workload(w), i, s, cfg.instructions) for w in cfg.workloads for i, s in trace_plan(cfg, w)]
    traces = engine.map(trace_task, jobs, desc="traces")
    return write_report(engine.map(steps.baselines, [(cache, t) for t in traces], desc="baselines"), out)


def reference_data(cfg: ExperimentConfig, cache: StageCache, workload: str, lead: int) -> tuple[dict, Path]:
    """The sites of ``workload`` and the dataset of its first training trace (whose delta vocabulary and
    prefetch distances every other dataset of the workload uses: ``labels_of``)."""
    first = trace_task(cache, cfg.workload(workload), *trace_plan(cfg, workload)[0], cfg.instructions)
    site_list = steps.sites(cache, first, cfg.max_branches, cfg.max_loads, cfg.load_share)
    return site_list, part_data(cfg, cache, workload, 0, lead, site_list, {})


def labels_of(first: Path) -> dict:
    """What the other datasets of a workload take from its first: the delta vocabulary and prefetch distances."""
    meta = Dataset(first).meta
    return {"vocab": meta["delta_vocabulary"], "distance": meta["prefetch_distance"]}


def part_data(cfg: ExperimentConfig, cache: StageCache, workload: str, k: int, lead: int, site_list: dict,
              labels: dict) -> Path | None:
    """The dataset of ``workload``'s k-th trace (training traces, then the held-out one: all samples);
    None for a training window in which none of the sites runs (another phase of the program)."""
    plan = trace_plan(cfg, workload)
    inp, skip = plan[k]
    trace = trace_task(cache, cfg.workload(workload), inp, skip, cfg.instructions)
    held_out = k == len(plan) - 1
    cap = None if held_out else math.ceil(cfg.train_cap / (len(plan) - 1))
    dcfg = DatasetConfig(lead=lead, max_per_site=cap, prefetch_distance=cfg.prefetch_distance)
    return steps.dataset(cache, trace, site_list, dcfg, **labels,
                         label=f"{workload}-{inp}" + (f"-{skip // 1_000_000}M" if skip else ""),
                         may_be_empty=0 < k < len(plan) - 1)


def workload_parts(cfg: ExperimentConfig, cache: StageCache, workload: str,
                   lead: int | None = None) -> tuple[list[Path | None], Path, Path]:
    """Every dataset of ``workload`` at ``lead`` (one per trace of ``trace_plan``; None for a training
    window without samples), the training dataset (every training part, ``train_cap`` samples per site
    in all) and the held-out dataset (input 1, every sample), for the sites of the first training trace."""
    lead = cfg.lead if lead is None else lead
    site_list, first = reference_data(cfg, cache, workload, lead)
    n = len(trace_plan(cfg, workload))
    parts = [first] + [part_data(cfg, cache, workload, k, lead, site_list, labels_of(first)) for k in range(1, n)]
    train_parts = [p for p in parts[:-1] if p is not None]
    train_ds = steps.merged(cache, train_parts, label=f"{workload}-train") if len(train_parts) > 1 else first
    return parts, train_ds, parts[-1]


def workload_data(cfg: ExperimentConfig, cache: StageCache, workload: str,
                  lead: int | None = None) -> tuple[Path, Path]:
    """The training and held-out datasets of ``workload`` at ``lead`` (``workload_parts``)."""
    return workload_parts(cfg, cache, workload, lead)[1:]


def prepare_data(cfg: ExperimentConfig, cache: StageCache, pairs: list[tuple[str, int]]) -> None:
    """Every trace and dataset of the (workload, lead) ``pairs``, as Ray tasks in three waves (traces;
    sites and the first dataset; the other datasets); ``workload_data`` then finds them in the cache."""
    engine = cfg.engine()
    workloads = list(dict.fromkeys(w for w, _ in pairs))
    engine.map(trace_task, [(cache, cfg.workload(w), i, s, cfg.instructions)
                            for w in workloads for i, s in trace_plan(cfg, w)], desc="traces")
    refs = engine.map(reference_data, [(cfg, cache, w, d) for w, d in pairs], desc="sites")
    jobs = [(cfg, cache, w, k, d, site_list, labels_of(first))
            for (w, d), (site_list, first) in zip(pairs, refs) for k in range(1, len(trace_plan(cfg, w)))]
    engine.map(part_data, jobs, desc="datasets")


def tree_bytes(path: Path) -> int:
    """Bytes on disk of a file (with its sidecar) or of a directory's files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    side = Path(str(path) + ".json")
    return path.stat().st_size + (side.stat().st_size if side.exists() else 0)


def run_data(cfg: ExperimentConfig, cache: StageCache | None = None) -> dict:
    """The study's data without training (`ncf experiment --data-only`): every trace and dataset of
    ``cfg.workloads`` at ``cfg.lead``, then a table per workload of what they hold (traces,
    instructions, training samples per site, held-out samples) and their bytes on disk."""
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    pairs = [(w, cfg.lead) for w in cfg.workloads]
    prepare_data(cfg, cache, pairs)
    rows = []
    for w in cfg.workloads:
        plan = trace_plan(cfg, w)
        traces = [trace_task(cache, cfg.workload(w), i, s, cfg.instructions) for i, s in plan]
        parts, train_dir, test_dir = workload_parts(cfg, cache, w)
        train_ds = Dataset(train_dir)
        per_site = np.bincount(np.asarray(train_ds.arrays["site"]), minlength=len(train_ds.site_pc))
        recorded = [read_json(str(t) + ".json")["window"]["recorded"] for t in traces]
        rows.append({"workload": w, "train_traces": len(plan) - 1,
                     "train_windows_with_sites": sum(p is not None for p in parts[:-1]),
                     "train_instructions": sum(recorded[:-1]),
                     "sites": len(per_site), "train_samples": len(train_ds),
                     "samples_per_site_min": int(per_site.min()), "samples_per_site_max": int(per_site.max()),
                     "test_samples": len(Dataset(test_dir)),
                     "trace_mb": round(sum(tree_bytes(t) for t in traces) / 2**20, 1),
                     "dataset_mb": round(sum(tree_bytes(p) for p in parts if p is not None) / 2**20, 1),
                     "merged_mb": round(tree_bytes(train_dir) / 2**20, 1) if train_dir != parts[0] else 0.0})
    table = save_table(out / "data", rows, f"The study's data (lead D = {cfg.lead}): training traces, samples per "
                       "site after merging, bytes on disk", extra={"config": settings(cfg)})
    return {"rows": rows, "table": table}


def run_workload(cfg: ExperimentConfig, cache: StageCache, workload: str, lead: int | None = None,
                 models=None) -> dict:
    lead = cfg.lead if lead is None else lead
    train_dir, test_dir = workload_data(cfg, cache, workload, lead)
    return {"workload": workload, "lead": lead, **score_models(cfg, cache, train_dir, test_dir, workload, models)}


def score_models(cfg: ExperimentConfig, cache: StageCache, train_dir: Path, test_dir: Path, label: str,
                 models=None) -> dict:
    """Every model (``cfg.variants``, or ``models``) trained on ``train_dir`` and scored on ``test_dir`` by
    model.evaluate (branches with the hybrids, prefetching), for each seed; the tables are the seeds' means."""
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    has_branch = (np.asarray(test_ds.arrays["taken"]) >= 0).any()
    has_load = (np.asarray(test_ds.arrays["delta"]) >= 0).any()
    val = validation_data(cache, train_ds, label)
    per_seed = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        branch_models, train_p, load_models = {}, {}, {}
        for name, m, drop in (cfg.variants(cfg.models) if models is None else [(m, m, []) for m in models]):
            run = steps.train(cache, cfg.train_config(m, seed, drop), train_ds.path, test_ds.path,
                              label=f"{label}-{name}" + (f"-s{seed}" if cfg.seeds > 1 else ""))
            pred = predict(run, test_ds.path)
            if m != "delta-lstm":
                branch_models[name] = pred["p_taken"]
                train_p[name] = validation_predictions(run, val)
            if m != "branchnet":
                load_models[name] = pred["delta_class"]
        branch_models, train_p = with_three_way(branch_models, train_p)
        policies = {name: policy_of(val, {name: train_p[name]}) for name in branch_models}
        if THREE_WAY in branch_models:
            policies[THREE_WAY] = policy_of(val, {m: train_p[m] for m in ("fused", "branchnet", THREE_WAY)})
        per_seed.append({"seed": seed, "hybrid_policies": policies,
                         "branch": with_validation(evaluate_branches(test_ds, branch_models, policies),
                                                   validation_mispredictions(val, train_p, test_ds.site_pc))
                         if has_branch else [],
                         "prefetch": evaluate_prefetch(test_ds, load_models, paired=cfg.models if models is None
                                                       else models) if has_load else []})
    return {"branch": mean_rows([s["branch"] for s in per_seed]),
            "prefetch": mean_rows([s["prefetch"] for s in per_seed]), "seeds": per_seed,
            "train_samples": len(train_ds), "test_samples": len(test_ds),
            "site_pc": [f"{int(pc):#x}" for pc in test_ds.site_pc]}


def with_validation(rows: list[dict], val: dict[str, list[int]]) -> list[dict]:
    """The branch rows with each model's override-all figures on the training inputs' validation split
    (``validation_mispredictions``): ``site_mispredictions_val``, ``hard_mispredictions_val``,
    ``vs_tage_hard_val``."""
    tage = sum(val["tage-sc-l"])
    for r in rows:
        if r["model"] in val:
            misp = sum(val[r["model"]])
            r.update(site_mispredictions_val=val[r["model"]], hard_mispredictions_val=misp,
                     vs_tage_hard_val=misp / tage - 1 if tage else float("nan"))
    return rows


SPREAD = ("hard_mispredictions", "vs_tage_hard", "vs_tage_hard_val", "hard_mispredictions_hybrid",
          "vs_tage_hard_hybrid", "mpki", "mpki_hybrid", "delta_accuracy", "coverage")


def with_sd(rows: list[dict], columns: list[str]) -> list[str]:
    """``columns``, each followed by its ``_sd`` column where the rows have one (several seeds)."""
    return [c for col in columns for c in (col, f"{col}_sd") if c == col or any(c in r for r in rows)]


def mean_count(counts: list[int]) -> int:
    """The seeds' mean of a count, to the nearest count (a table prints 15,844, not 1.584e+04)."""
    return int(round(float(np.mean(counts))))


def mean_rows(tables: list[list[dict]]) -> list[dict]:
    """One table of the seeds' tables (same models in the same order): each number their mean (of counts, to
    the nearest count; each seed's own in experiment.json) and, with more than one seed, the standard deviation
    of the ``SPREAD`` columns as ``<column>_sd``."""
    out = []
    for rows in zip(*tables):
        row = {}
        for key, v in rows[0].items():
            vs = [r[key] for r in rows]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and None not in vs:
                counts = all(isinstance(x, int) for x in vs)
                row[key] = v if len(vs) == 1 else mean_count(vs) if counts else float(np.mean(vs))
                if len(vs) > 1 and key in SPREAD:
                    row[f"{key}_sd"] = float(np.std(vs))
            else:
                row[key] = v
        out.append(row)
    return out


def run_workloads(cfg: ExperimentConfig, cache: StageCache, pairs: list[tuple[str, int]], models=None) -> list[dict]:
    """``run_workload`` for each (workload, lead) of ``pairs``: data first, then one Ray task per pair."""
    prepare_data(cfg, cache, pairs)
    return cfg.engine().map(run_workload, [(cfg, cache, w, d, models) for w, d in pairs], desc="training")


def run_experiment(cfg: ExperimentConfig, cache: StageCache | None = None) -> dict:
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    chromium()   # the report's screenshot needs it: say so before the work, not after
    per = run_workloads(cfg, cache, [(w, cfg.lead) for w in cfg.workloads])
    branch_rows = [{"workload": r["workload"], **b} for r in per for b in r["branch"]]
    pf_rows = [{"workload": r["workload"], **p} for r in per for p in r["prefetch"]]
    summary = summarise(per)
    tables = [
        save_table(out / "branch", branch_rows, f"Hard branches and overall MPKI on the held-out input (lead D = "
                   f"{cfg.lead}); learned models override TAGE-SC-L on all hard branches, and as a hybrid where a "
                   "policy chosen on the training inputs' validation split says so (vs_tage_hard_val: overriding "
                   "all on that split)",
                   columns=with_sd(branch_rows, ["workload", *BRANCH_COLUMNS])),
        save_table(out / "prefetch", pf_rows, "Delinquent loads on the held-out input: accuracy of the delta to "
                   "the k-th next access (k per load: distance) and cache-model coverage, accuracy and late fraction "
                   "(IP-stride at the same k; BOP and Berti with their own offsets)",
                   columns=with_sd(pf_rows, ["workload", *PREFETCH_COLUMNS])),
        save_table(out / "summary", summary, "Goals: fused GNN against the best history-only learned baseline, "
                   "TAGE-SC-L, IP-stride (same distance), BOP and Berti"),
        save_table(out / "sites", site_rows(per), "Hard branches one by one (held-out input): TAGE-SC-L's "
                   "mispredictions against the models' (override all, hybrid; means over seeds), and how often the "
                   "model and TAGE-SC-L are both wrong (what no choice between them recovers); *val*: TAGE-SC-L and "
                   "the models overriding all on the training inputs' validation split (the last 10% in time of each "
                   "training trace)"),
        save_table(out / "loads", load_rows(per), "Delinquent loads one by one (held-out input), then all other "
                   "loads: L1D misses without prefetching (share: of all L1D load misses) and with each prefetcher "
                   "(means over seeds), most misses first: which loads hold the coverage a model wins and which the "
                   "rest"),
    ]
    write_json(out / "experiment.json", {"config": settings(cfg), "workloads": per, "summary": summary})
    if cfg.leads:
        sweep = run_lead_sweep(cfg, cache)
        tables += [sweep["table"], f"![accuracy against snapshot lead]({sweep['plot'].name})\n"]
    pages = write_report(out, f"# ncf experiment: {', '.join(cfg.workloads)}\n\n" + "\n".join(tables))
    return {"per_workload": per, "tables": tables, "summary": summary, "pages": pages}


def site_rows(per: list[dict], models=("fused", "branchnet", THREE_WAY)) -> list[dict]:
    """Per workload and hard branch: mispredictions of TAGE-SC-L and of ``models`` (means over seeds, to the
    nearest misprediction; each seed's own in experiment.json), on the held-out input and (*val*) on the training
    inputs' validation split, most TAGE-SC-L mispredictions first: which sites hold the gain and which the
    remaining loss, and where a model's loss is the input's."""
    rows = []
    for r in per:
        seeds = [{x["model"]: x for x in s["branch"]} for s in r["seeds"] if s["branch"]]
        if not seeds:
            continue
        tage = seeds[0]["tage-sc-l"]
        val = tage.get("site_mispredictions_val")
        for k in np.argsort(-np.asarray(tage["site_mispredictions"]), kind="stable"):
            if not tage["site_instances"][k] and not (val and val[k]):
                continue   # nothing to show: no held-out instance, no misprediction on validation
            row = {"workload": r["workload"], "site_pc": r["site_pc"][k], "instances": tage["site_instances"][k],
                   "tage-sc-l": tage["site_mispredictions"][k]}
            if val:
                row["tage-sc-l val"] = val[k]
            for m in (m for m in models if m in seeds[0]):
                for key, col in (("site_mispredictions", m), ("site_mispredictions_hybrid", f"{m} hybrid"),
                                 ("site_both_wrong", f"{m} and tage-sc-l wrong"),
                                 ("site_mispredictions_val", f"{m} val")):
                    if key in seeds[0][m]:
                        row[col] = mean_count([s[m][key][k] for s in seeds])
            rows.append(row)
    return rows


def load_rows(per: list[dict], models=("ip-stride", "bop", "berti", "fused", "delta-lstm", "fused+bop",
                                         "fused+berti")) -> list[dict]:
    """Per workload, each delinquent load (its distance k) and then all other loads: L1D misses on the held-out
    input without prefetching and with each of ``models`` (means over seeds, to the nearest miss; model.evaluate
    ``load_misses``), delinquent loads with the most misses first."""
    rows = []
    for r in per:
        seeds = [{x["model"]: x for x in s["prefetch"]} for s in r["seeds"] if s["prefetch"]]
        if not seeds:
            continue
        first = next(iter(seeds[0].values()))
        without, total = first["load_misses_without"], sum(first["load_misses_without"])
        names, ks = [*first["load_pc"], "other loads"], [*first["load_distance"], None]
        for k in [*np.argsort(-np.asarray(without[:-1]), kind="stable"), len(without) - 1]:
            row = {"workload": r["workload"], "load": names[k], "distance": ks[k], "misses without": without[k],
                   "share": without[k] / total if total else float("nan")}
            for m in (m for m in models if m in seeds[0]):
                row[m] = mean_count([s[m]["load_misses"][k] for s in seeds])
            rows.append(row)
    return rows


GOAL_VS_TAGE = -0.05        # the fused hybrid's hard-branch mispredictions against TAGE-SC-L's (and a lower MPKI)
GOAL_VS_BRANCHNET = -0.26   # the fused GNN's against BranchNet's, both overriding TAGE-SC-L on the hard branches


def summarise(per: list[dict]) -> list[dict]:
    """One row per workload with the issue's goals as ratios, and whether each is met."""
    rows = []
    for r in per:
        b = {x["model"]: x for x in r["branch"]}
        p = {x["model"]: x for x in r["prefetch"]}
        row = {"workload": r["workload"]}
        if "fused" in b:
            row["fused_vs_branchnet_hard"] = (b["fused"]["hard_mispredictions"] / b["branchnet"]["hard_mispredictions"]
                                              - 1) if b.get("branchnet", {}).get("hard_mispredictions") else None
            row["fused_vs_tage_hard"] = b["fused"]["vs_tage_hard"]
            row["fused_vs_tage_hard_hybrid"] = b["fused"]["vs_tage_hard_hybrid"]
            row["mpki_tage"], row["mpki_fused_override"] = b["tage-sc-l"]["mpki"], b["fused"]["mpki"]
            row["mpki_fused_hybrid"] = b["fused"]["mpki_hybrid"]
            row["branch_goal_met"] = bool(row["fused_vs_tage_hard_hybrid"] <= GOAL_VS_TAGE
                                          and row["mpki_fused_hybrid"] < row["mpki_tage"])
            row["branchnet_goal_met"] = (None if row["fused_vs_branchnet_hard"] is None
                                         else bool(row["fused_vs_branchnet_hard"] <= GOAL_VS_BRANCHNET))
            if THREE_WAY in b:
                row["three_way_vs_tage_hard_hybrid"] = b[THREE_WAY]["vs_tage_hard_hybrid"]
                row["mpki_three_way_hybrid"] = b[THREE_WAY]["mpki_hybrid"]
            val = [s["hybrid_policies"]["fused"]["validation"] for s in r["seeds"]]   # never worse there
            row["val_tage_misp"] = val[0]["tage_mispredictions"]
            row["val_hybrid_misp_worst_seed"] = max(v["hybrid_mispredictions"] for v in val)
        if "fused" in p:
            lstm = p.get("delta-lstm", {}).get("delta_accuracy")
            row["delta_acc_fused"], row["delta_acc_lstm"] = p["fused"]["delta_accuracy"], lstm
            row["fused_over_lstm"] = p["fused"]["delta_accuracy"] / lstm if lstm else None
            row["coverage_ip_stride"] = p.get("ip-stride", {}).get("coverage")
            for m in ("fused", "bop", "berti", "fused+bop", "fused+berti"):   # the goal: coverage at no lower accuracy
                for key in ("coverage", "accuracy"):
                    row[f"{key}_{m.replace('+', '_')}"] = p.get(m, {}).get(key)
            row["prefetch_goal_met_by"] = prefetch_goal(p)
        rows.append(row)
    return rows


def prefetch_goal(rows: dict) -> str:
    """The fused GNN's deployments (alone, beside BOP, beside Berti) whose L1D coverage is above both BOP's and
    Berti's at an accuracy no lower than either's ("none" if no deployment is; "" without BOP or Berti)."""
    if not {"bop", "berti"} <= rows.keys():
        return ""
    cov, acc = (max(rows[b][key] for b in ("bop", "berti")) for key in ("coverage", "accuracy"))
    met = [m for m in ("fused", "fused+bop", "fused+berti")
           if m in rows and rows[m]["coverage"] > cov and rows[m]["accuracy"] >= acc]
    return ", ".join(met) or "none"


def run_lead_sweep(cfg: ExperimentConfig, cache: StageCache | None = None) -> dict:
    """Accuracy of the fused GNN against the snapshot lead D (``cfg.leads``; one seed, ``cfg.seed``), with
    TAGE-SC-L (which does not depend on D) and the hybrid for reference; writes a table and
    ``lead_sweep.png``."""
    cfg = replace(cfg, seeds=1)
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    rows = []
    pairs = [(w, d) for w in cfg.workloads for d in cfg.leads]
    for (w, d), r in zip(pairs, run_workloads(cfg, cache, pairs, models=["fused"])):
        b = {x["model"]: x for x in r["branch"]}
        p = {x["model"]: x for x in r["prefetch"]}
        rows.append({"workload": w, "lead": d,
                     "hard_acc_fused": b.get("fused", {}).get("hard_accuracy"),
                     "hard_acc_tage": b.get("tage-sc-l", {}).get("hard_accuracy"),
                     "hard_acc_hybrid": b.get("fused", {}).get("hard_accuracy_hybrid"),
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
                ax.plot(x, [r["hard_acc_hybrid"] for r in rs], "s--", color=line.get_color(), alpha=0.8,
                        label=f"{w} hybrid")
                ax.plot(x, [r["hard_acc_tage"] for r in rs], ":", color=line.get_color(), alpha=0.6,
                        label=f"{w} TAGE-SC-L")
    axes[0].set_ylabel("accuracy on hard branches")
    axes[1].set_ylabel("k-step delta accuracy (delinquent loads)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("snapshot lead D (instructions; 0 plotted at 0.5)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
