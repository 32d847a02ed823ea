"""Transfer: which algorithm does a program run? Classified from its execution with the learned
representation of the branch/prefetch GNN.

    r = run_classify(ClassifyConfig())          # ncf classify; writes reports/classify/

The corpus (``trace_eval/corpus/CLASS_IMPL.c``, built by ``make native`` at -O0, -O1, -O2) holds
several implementations of each algorithm class: sorting, searching, graph traversal, dynamic
programming, hashing, string matching, matrix kernels, prime counting. Every (implementation,
level, seed) is one *program*: traced with the repo's QEMU recorder (``skip`` instructions past the
start-up, then ``instructions`` recorded, self-checked), its sites are its hard branches and
delinquent loads filled up with its most executed branches and loads, and its fused samples are
built by ``model/dataset.py`` at lead D (the snapshot is taken at least D instructions before the
predicted instruction; nothing of that instruction or later).

Splits (a program's label is never seen by a model of a split whose test set holds it):
  * unseen implementation: fold f holds out implementation f (mod the class's count) of every
    class, at every level; training sees the other implementations;
  * unseen optimisation level: the programs built at ``test_level`` are held out; training sees
    the same implementations at the other levels.
Per split (and fold), on the training programs only:
  fused     the multi-task fused GNN (model/train.py, branch + next-delta heads) is trained on the
            branch/prefetch samples of the training programs, then frozen; a program's embedding
            is [readout vector r; mean node state] averaged over each site's samples, then over
            its branch sites and over its load sites (two halves);
  static    the same frozen GNN and pooling with the dynamic inputs zeroed (register/memory values
            and the history/TAGE vector g): what the static code alone gives;
  opcodes   bag of executed opcodes: the share of each mnemonic in the traced window;
  scratch   the same GNN architecture with a class head, trained from scratch on the class of
            each training sample; a program's class is the argmax of its samples' mean log-prob.
The first three go through one linear probe (multinomial logistic regression, L2, standardised
features, full-batch L-BFGS in float64: deterministic). Accuracy is per program. Every trace,
dataset, merged training set and trained model goes through the stage cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import ncf.trace_eval
from ncf.io import UsageError, at_least, check_output, figure, save_figure, save_table, write_json
from ncf.model.classify import (DELTA_VOCAB, fill_sites, fit_probe, gnn_features, merge_datasets, opcode_histogram,
                                opcode_matrix, pool_program, probe_predict, scratch_model, scratch_predict,
                                train_scratch)
from ncf.model.dataset import Dataset, DatasetConfig
from ncf.model.train import TrainConfig, load_model

from . import steps
from .cache import StageCache
from .parallel import Engine, settings

CORPUS_SRC = Path(ncf.trace_eval.__file__).parent / "corpus"
LEVELS = (0, 1, 2)
METHODS = ("fused", "static", "opcodes", "scratch")
METHOD_NAMES = {"fused": "fused GNN, frozen (branch/prefetch-trained)",
                "static": "same GNN, dynamic inputs zeroed",
                "opcodes": "bag of executed opcodes",
                "scratch": "GNN trained from scratch on the classes"}
SPLITS = ("unseen implementation", "unseen optimisation level")


@dataclass
class ClassifyConfig:
    classes: list | None = None      # algorithm classes to use (default: all in the corpus)
    max_impls: int | None = None     # at most this many implementations per class (default: all)
    levels: list = field(default_factory=lambda: list(LEVELS))   # gcc -O levels
    seeds: list = field(default_factory=lambda: [1])             # input seeds per program
    test_level: int = 2              # the level held out by the "unseen optimisation level" split
    impl_folds: int = 2              # folds of the "unseen implementation" split (fold f holds out impl f)
    instructions: int = 400_000      # recorded per program
    skip: int = 150_000              # past the input set-up of every program (< 115k at -O0)
    lead: int = DatasetConfig.lead   # snapshot lead D
    max_branches: int = 4            # sites per program: hard branches, then the most executed
    max_loads: int = 4               # ... delinquent loads, then the most executed
    per_site: int = 48               # samples per site (evenly spaced in time)
    epochs: int = 3                  # multi-task GNN pretraining
    scratch_epochs: int = 3          # from-scratch class GNN
    hidden: int = TrainConfig.hidden
    batch: int = 64
    lr: float = TrainConfig.lr
    probe_l2: float = 1e-2           # L2 penalty of the linear probe
    seed: int = TrainConfig.seed
    methods: list = field(default_factory=lambda: list(METHODS))
    out: str = "reports/classify"
    cache: str = "work/cache"
    workers: int = 0                 # Ray tasks at once on this machine: 0 = every CPU, 1 = serial without Ray
    ray_address: str | None = None   # a Ray cluster to run on instead (or RAY_ADDRESS)

    def __post_init__(self):
        Engine(self.workers, self.ray_address)
        bad = set(self.methods) - set(METHODS)
        if bad:
            raise UsageError(f"unknown methods {sorted(bad)}; known: {', '.join(METHODS)}")
        if self.test_level not in self.levels or len(self.levels) < 2 or not set(self.levels) <= set(LEVELS):
            raise UsageError(f"test_level {self.test_level} must be one of at least two levels {self.levels} "
                             f"(levels of the corpus: {', '.join(map(str, LEVELS))})")
        at_least(self, instructions=1, skip=0, impl_folds=1, scratch_epochs=1, max_branches=0, max_loads=0,
                 per_site=1)
        if not self.seeds or (self.max_impls is not None and self.max_impls < 2):
            raise UsageError(f"seeds {self.seeds}, max_impls {self.max_impls}: give one or more seeds and at least "
                             "2 implementations per class (the unseen-implementation split holds one out)")
        # the checks of the stages these settings go to, before any work
        self.dataset_config()
        self.train_config(self.epochs)

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(lead=self.lead, max_per_site=self.per_site)

    def train_config(self, epochs: int) -> TrainConfig:
        return TrainConfig(model="fused", hidden=self.hidden, epochs=epochs, batch=self.batch, lr=self.lr,
                           seed=self.seed, threads=1)


PRESETS = {
    "default": {},
    "tiny": {"classes": ["matrix", "search", "sort"], "max_impls": 2, "levels": [0, 2], "instructions": 200_000,
             "per_site": 16, "epochs": 1, "scratch_epochs": 1},
    "full": {"impl_folds": 4, "seeds": [1, 2], "instructions": 1_000_000, "per_site": 96, "epochs": 6,
             "scratch_epochs": 6},
}


# ------------------------------------------------------------------------------------ corpus
@dataclass(frozen=True)
class Program:
    cls: str
    impl: str
    level: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.cls}_{self.impl}"

    @property
    def key(self) -> str:
        return f"{self.name}-O{self.level}-s{self.seed}"

    @property
    def binary(self) -> Path:
        from ncf.trace_eval.native_lib import NATIVE
        return NATIVE / "corpus" / f"O{self.level}" / self.name


def corpus_implementations() -> dict[str, list[str]]:
    """class -> its implementations, from the sources ``trace_eval/corpus/CLASS_IMPL.c``."""
    out: dict[str, list[str]] = {}
    for src in sorted(CORPUS_SRC.glob("*_*.c")):
        cls, _, impl = src.stem.partition("_")
        out.setdefault(cls, []).append(impl)
    return out


def corpus_programs(cfg: ClassifyConfig) -> list[Program]:
    impls = corpus_implementations()
    classes = cfg.classes or sorted(impls)
    unknown = set(classes) - set(impls)
    if unknown:
        raise UsageError(f"unknown classes {sorted(unknown)}; the corpus has {', '.join(sorted(impls))}")
    return [Program(c, i, lvl, s) for c in classes for i in impls[c][:cfg.max_impls]
            for lvl in cfg.levels for s in cfg.seeds]


def make_splits(programs: list[Program], cfg: ClassifyConfig) -> list[dict]:
    """The (split, fold, train, test) sets; a test program's implementation (impl split) or level
    (level split) never occurs among the training programs of its fold."""
    impls: dict[str, list[str]] = {}
    for p in programs:
        impls.setdefault(p.cls, [])
        if p.impl not in impls[p.cls]:
            impls[p.cls].append(p.impl)
    if min(len(v) for v in impls.values()) < 2:
        raise UsageError("the unseen-implementation split needs at least two implementations per class")
    splits = []
    for f in range(cfg.impl_folds):
        held = {c: v[f % len(v)] for c, v in impls.items()}
        test = [p for p in programs if held[p.cls] == p.impl]
        splits.append({"split": SPLITS[0], "fold": f, "tag": f"impl-f{f}", "held_out": held,
                       "train": [p for p in programs if held[p.cls] != p.impl], "test": test})
    splits.append({"split": SPLITS[1], "fold": 0, "tag": f"level-O{cfg.test_level}",
                   "held_out": {"level": cfg.test_level},
                   "train": [p for p in programs if p.level != cfg.test_level],
                   "test": [p for p in programs if p.level == cfg.test_level]})
    return splits


def prepare_program(cache: StageCache, p: Program, cfg: ClassifyConfig, samples: bool) -> dict:
    """A program's trace, opcode histogram and (``samples``) fused dataset, through the cache."""
    from ncf.trace_eval.workloads import WorkloadError, custom

    if not p.binary.exists():
        raise WorkloadError(f"corpus program {p.binary} is not built: run `make native`")
    inv = replace(custom([str(p.binary), str(p.seed)]), workload=p.key, input=p.seed)
    trace = steps.trace(cache, inv, cfg.skip, cfg.instructions, progress=False)
    sha = steps.trace_sha(trace)
    opcodes = cache.run("opcodes", {"trace": sha}, lambda d: opcode_histogram(trace), code=("ncf.model.classify",),
                        label=p.key).result
    data = {"trace": trace, "opcodes": opcodes, "ds": None}
    if samples:
        site_list = cache.run("sites", {"trace": sha, "limits": [cfg.max_branches, cfg.max_loads], "fill": True},
                              lambda d: fill_sites(trace, cfg.max_branches, cfg.max_loads),
                              code=("ncf.model.classify",),
                              label=p.key).result
        data["ds"] = Dataset(steps.dataset(cache, trace, site_list, cfg.dataset_config(), vocab=list(DELTA_VOCAB),
                                           label=p.key))
    return data


def evaluate_split(cache: StageCache, sp: dict, data: dict, classes: list[str], cfg: ClassifyConfig) -> dict:
    """Train every method on ``sp['train']`` and predict ``sp['test']``; per method, predictions."""
    import torch

    train_p, test_p = sp["train"], sp["test"]
    y_train = np.array([classes.index(p.cls) for p in train_p])
    preds = {}
    if {"fused", "static", "scratch"} & set(cfg.methods):
        parts = [data[p]["ds"] for p in train_p]
        key = {"datasets": [steps.entry_key(ds.path) for ds in parts], "labels": y_train, "seed": cfg.seed}

        def merge(d):
            merge_datasets(parts, list(y_train), d / "data", cfg.seed)
        merged = cache.run("merged", key, merge, code=("ncf.model.classify",), label=sp["tag"]).path / "data"
    if {"fused", "static"} & set(cfg.methods):
        run = steps.train(cache, cfg.train_config(cfg.epochs), merged, label="classify-pretrain",
                          progress=False)
        model, _ = load_model(run)
        for method, dynamic in (("fused", True), ("static", False)):
            if method in cfg.methods:
                emb = {p: pool_program(data[p]["ds"], gnn_features(model, data[p]["ds"], dynamic))
                       for p in train_p + test_p}
                probe = fit_probe(np.stack([emb[p] for p in train_p]), y_train, len(classes), cfg.probe_l2)
                preds[method] = probe_predict(probe, np.stack([emb[p] for p in test_p]))
    if "opcodes" in cfg.methods:
        vocab = sorted({m for p in train_p for m in data[p]["opcodes"]})   # training programs only
        probe = fit_probe(opcode_matrix([data[p]["opcodes"] for p in train_p], vocab), y_train, len(classes),
                          cfg.probe_l2)
        preds["opcodes"] = probe_predict(probe, opcode_matrix([data[p]["opcodes"] for p in test_p], vocab))
    if "scratch" in cfg.methods:
        tcfg = cfg.train_config(cfg.scratch_epochs)
        key = {"train": steps.entry_key(merged), "classes": len(classes), "config": asdict(tcfg)}

        def fit_scratch(d):
            torch.save(train_scratch(merged, len(classes), tcfg, progress=False).state_dict(), d / "scratch.pt")
        entry = cache.run("scratch", key, fit_scratch, code=("ncf.model.classify",), label=sp["tag"])
        model = scratch_model(Dataset(merged), len(classes), tcfg)
        model.load_state_dict(torch.load(entry.path / "scratch.pt", weights_only=True))
        preds["scratch"] = np.array([int(np.argmax(scratch_predict(model, data[p]["ds"]))) for p in test_p])
    return preds


def run_classify(cfg: ClassifyConfig, cache: StageCache | None = None, progress: bool = True) -> dict:
    """The whole study; writes ``accuracy.md/.json``, ``confusion.json``, ``confusion.png`` and
    ``classify.json`` under ``cfg.out`` and returns the rows and confusion matrices."""
    import torch

    torch.set_num_threads(1)   # one thread: deterministic, and the machine is shared
    cache = cache or StageCache(Path(cfg.cache))
    out = check_output(cfg.out, directory=True)
    programs = corpus_programs(cfg)
    classes = sorted({p.cls for p in programs})
    splits = make_splits(programs, cfg)
    samples = bool({"fused", "static", "scratch"} & set(cfg.methods))
    engine = Engine(cfg.workers, cfg.ray_address)
    data = dict(zip(programs, engine.map(prepare_program, [(cache, p, cfg, samples) for p in programs],
                                         desc="corpus: trace, sites, samples", progress=progress)))
    conf = {s: {m: np.zeros((len(classes), len(classes)), np.int64) for m in cfg.methods} for s in SPLITS}
    folds = []
    for sp, preds in zip(splits, engine.map(evaluate_split, [(cache, sp, data, classes, cfg) for sp in splits],
                                            desc="classification folds", progress=progress)):
        y = np.array([classes.index(p.cls) for p in sp["test"]])
        for m, pr in preds.items():
            np.add.at(conf[sp["split"]][m], (y, pr), 1)
        folds.append({"split": sp["split"], "fold": sp["fold"], "held_out": sp["held_out"],
                      "train_programs": [p.key for p in sp["train"]], "test_programs": [p.key for p in sp["test"]],
                      "predictions": {m: [classes[k] for k in pr] for m, pr in preds.items()},
                      "accuracy": {m: float((pr == y).mean()) for m, pr in preds.items()}})
    rows = []
    for s in SPLITS:
        for m in cfg.methods:
            c = conf[s][m]
            rows.append({"split": s, "method": m, "description": METHOD_NAMES[m],
                         "accuracy": float(np.trace(c) / max(c.sum(), 1)), "correct": int(np.trace(c)),
                         "test_programs": int(c.sum()), "chance": 1.0 / len(classes)})
    n_impl = len({(p.cls, p.impl) for p in programs})
    title = (f"Algorithm classification from execution: accuracy per held-out program ({len(classes)} classes, "
             f"{n_impl} implementations x -O{'/-O'.join(map(str, cfg.levels))}, {len(programs)} programs; "
             f"{cfg.impl_folds} implementation fold(s); lead D = {cfg.lead})")
    table = save_table(out / "accuracy", rows, title,
                       columns=["split", "method", "accuracy", "correct", "test_programs", "chance", "description"],
                       extra={"classes": classes, "config": settings(cfg)})
    confusion = {s: {m: conf[s][m].tolist() for m in cfg.methods} for s in SPLITS}
    write_json(out / "confusion.json", {"classes": classes, "rows_true_columns_predicted": confusion})
    png = plot_confusion(conf, classes, out / "confusion.png")
    write_json(out / "classify.json", {"config": settings(cfg), "classes": classes, "rows": rows, "folds": folds})
    return {"rows": rows, "table": table, "classes": classes, "confusion": confusion, "folds": folds, "png": png}


def confusion_text(matrix, classes: list[str]) -> str:
    """A confusion matrix as aligned text (rows: true class, columns: predicted)."""
    short = [c[:8] for c in classes]
    w = max(len(s) for s in short) + 1
    lines = [" " * w + "".join(f"{s:>{w}}" for s in short)]
    for s, row in zip(short, matrix):
        lines.append(f"{s:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


def plot_confusion(conf: dict, classes: list[str], path: Path) -> Path:
    splits = list(conf)
    methods = list(conf[splits[0]])
    fig, axes = figure(len(splits), len(methods), figsize=(3.3 * len(methods), 3.3 * len(splits)), squeeze=False)
    for i, s in enumerate(splits):
        for j, m in enumerate(methods):
            c, ax = conf[s][m], axes[i][j]
            ax.imshow(c / np.maximum(c.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
            for (a, b), v in np.ndenumerate(c):
                if v:
                    ax.text(b, a, str(v), ha="center", va="center", fontsize=6)
            ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
            acc = np.trace(c) / max(c.sum(), 1)
            ax.set_title(f"{m} | {s}\naccuracy {acc:.2f}", fontsize=7)
            if j == 0:
                ax.set_ylabel("true class", fontsize=7)
            if i == len(splits) - 1:
                ax.set_xlabel("predicted", fontsize=7)
    return save_figure(fig, path)
