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
features, full-batch L-BFGS in float64: deterministic). Accuracy is per program.

Everything under ``work_dir`` is reused when its inputs are unchanged: traces (same binary, same
window), sites and datasets (same trace, same settings), merged training data and trained models
(same programs' datasets, same training settings).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import UsageError, at_least, atomic_path, check_output, write_json

REPO = Path(__file__).resolve().parent.parent
CORPUS_SRC = REPO / "trace_eval" / "corpus"
LEVELS = (0, 1, 2)
# Line deltas of the next-delta head: one fixed vocabulary for every program (no program's data
# chooses it), the 15 smallest |delta| + "other".
DELTA_VOCAB = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7]
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
    lead: int = 100                  # snapshot lead D
    max_branches: int = 4            # sites per program: hard branches, then the most executed
    max_loads: int = 4               # ... delinquent loads, then the most executed
    per_site: int = 48               # samples per site (evenly spaced in time)
    epochs: int = 3                  # multi-task GNN pretraining
    scratch_epochs: int = 3          # from-scratch class GNN
    hidden: int = 16
    batch: int = 64
    lr: float = 3e-3
    probe_l2: float = 1e-2           # L2 penalty of the linear probe
    seed: int = 0
    methods: list = field(default_factory=lambda: list(METHODS))
    work_dir: str = "work/classify"
    out: str = "reports/classify"
    progress: bool = True

    def __post_init__(self):
        from .dataset import DatasetConfig
        from .train import TrainConfig

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
        DatasetConfig(lead=self.lead, max_per_site=self.per_site)
        TrainConfig(hidden=self.hidden, epochs=self.epochs, batch=self.batch, lr=self.lr)


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
        splits.append({"split": SPLITS[0], "fold": f, "held_out": held,
                       "train": [p for p in programs if held[p.cls] != p.impl], "test": test})
    splits.append({"split": SPLITS[1], "fold": 0, "held_out": {"level": cfg.test_level},
                   "train": [p for p in programs if p.level != cfg.test_level],
                   "test": [p for p in programs if p.level == cfg.test_level]})
    return splits


# ------------------------------------------------------------------------------------ per program
def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def trace_program(p: Program, cfg: ClassifyConfig) -> Path:
    """Trace ``p`` (or reuse the trace of the same binary and window)."""
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.format import TraceError, TraceReader
    from ncf.trace_eval.workloads import WorkloadError, custom

    if not p.binary.exists():
        raise WorkloadError(f"corpus program {p.binary} is not built: run `make native`")
    out = Path(cfg.work_dir) / "traces" / f"{p.key}.ncft"
    stamp = out.with_suffix(".program.json")
    want = {"binary_sha256": _sha256(p.binary), "argv": [p.name, str(p.seed)], "skip": cfg.skip,
            "instructions": cfg.instructions}
    if out.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        try:
            if TraceReader(out).meta.get("selfcheck", {}).get("ok"):
                return out
        except TraceError:
            pass
    record(custom([str(p.binary), str(p.seed)]), out, skip=cfg.skip, count=cfg.instructions, progress=False)
    write_json(stamp, want)
    return out


def program_sites(trace: Path, max_branches: int, max_loads: int) -> dict:
    """The program's hard branches and delinquent loads (``find_sites``), filled up to the limits
    with its most executed conditional branches and loads."""
    from ncf.trace_eval.branch_predictors import COND
    from ncf.trace_eval.format import TraceReader
    from ncf.trace_eval.streams import branch_stream, memory_stream

    from .dataset import find_sites

    sites = find_sites(trace, max_branches=max_branches, max_loads=max_loads)
    br = branch_stream(TraceReader(trace, verify=False))
    mem = memory_stream(TraceReader(trace, verify=False))
    for task, pcs, limit in (("branch", br.pc[br.kind == COND], max_branches),
                             ("load", mem.pc[~mem.is_store], max_loads)):
        vals, counts = np.unique(pcs, return_counts=True)
        for pc in vals[np.argsort(-counts, kind="stable")]:
            if len(sites[task]) >= limit:
                break
            if int(pc) not in sites[task]:
                sites[task].append(int(pc))
    return sites


def program_dataset(p: Program, trace: Path, cfg: ClassifyConfig):
    """The fused samples of ``p`` at lead D (reused when trace and settings are unchanged)."""
    from .dataset import Dataset, DatasetConfig, build_dataset

    out = Path(cfg.work_dir) / "data" / p.key
    dcfg = DatasetConfig(lead=cfg.lead, max_per_site=cfg.per_site)
    sha = json.loads(Path(str(trace) + ".json").read_text())["file"]["sha256"]
    meta_path = out / "dataset.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (meta.get("config") == asdict(dcfg) and meta.get("trace_sha256") == sha
                and meta.get("delta_vocabulary") == DELTA_VOCAB
                and meta.get("site_limits") == [cfg.max_branches, cfg.max_loads]):
            return Dataset(out)
    sites = program_sites(trace, cfg.max_branches, cfg.max_loads)
    build_dataset(trace, sites, out, dcfg, vocab=list(DELTA_VOCAB), progress=False)
    meta = json.loads(meta_path.read_text())
    meta["site_limits"] = [cfg.max_branches, cfg.max_loads]
    write_json(meta_path, meta)
    return Dataset(out)


def opcode_histogram(trace: Path) -> dict[str, int]:
    """Executed instructions of the trace per mnemonic."""
    import capstone
    from ncf.trace_eval.format import TraceReader

    r = TraceReader(trace, verify=False)
    counts = np.zeros(0, np.int64)
    for ch in r.chunks(registers=False):
        c = np.bincount(ch.insn["sid"].astype(np.int64))
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), np.int64)])
        counts[:len(c)] += c
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    hist: dict[str, int] = {}
    for sid in np.nonzero(counts)[0]:
        pc, code = r.static.code(int(sid))
        d = next(md.disasm(code, pc), None)
        name = d.mnemonic if d else "(undecodable)"
        hist[name] = hist.get(name, 0) + int(counts[sid])
    return dict(sorted(hist.items()))


def program_opcodes(p: Program, trace: Path, cfg: ClassifyConfig) -> dict[str, int]:
    path = Path(cfg.work_dir) / "opcodes" / f"{p.key}.json"
    sha = json.loads(Path(str(trace) + ".json").read_text())["file"]["sha256"]
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("trace_sha256") == sha:
            return saved["counts"]
    counts = opcode_histogram(trace)
    write_json(path, {"trace_sha256": sha, "counts": counts})
    return counts


# ------------------------------------------------------------------------------------ GNN parts
def merge_datasets(parts: list, labels: list[int], out: Path, seed: int) -> Path:
    """One training dataset from several programs' datasets (sites renumbered, rows shuffled with
    ``seed`` so that the validation tail is a random 10%); ``label.npy`` holds each row's class.
    Reused when the same datasets are merged again."""
    from .dataset import FORMAT_VERSION

    manifest = [[str(ds.path), ds.meta["trace_sha256"], ds.meta["samples"], int(lab)] for ds, lab in zip(parts, labels)]
    meta_path = out / "dataset.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("merged_from") == manifest:
        return out
    keys = ("site", "idx", "g", "taken", "delta", "dynval")
    cols = {k: [] for k in keys + ("label", "program")}
    statics, adjs, slots, pcs, tasks = [], [], [], [], []
    offset = 0
    for k, (ds, lab) in enumerate(zip(parts, labels)):
        for key in keys:
            v = np.asarray(ds.arrays[key])
            cols[key].append(v.astype(np.int64) + offset if key == "site" else v)
        n = len(ds)
        cols["label"].append(np.full(n, lab, np.int64))
        cols["program"].append(np.full(n, k, np.int64))
        statics.append(ds.static), adjs.append(ds.adj), slots.append(ds.dyn_slot)
        pcs.append(ds.site_pc), tasks.append(ds.site_task)
        offset += len(ds.static)
    order = np.random.default_rng(seed).permutation(sum(len(ds) for ds in parts))
    out.mkdir(parents=True, exist_ok=True)
    for key, v in cols.items():
        arr = np.concatenate(v)[order]
        if key == "site":
            arr = arr.astype(np.int32)
        with atomic_path(out / f"{key}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    with atomic_path(out / "sites.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, static=np.concatenate(statics), adj=np.concatenate(adjs), dyn_slot=np.concatenate(slots),
                 pc=np.concatenate(pcs), task=np.concatenate(tasks))
    first = parts[0].meta
    write_json(meta_path, {"format_version": FORMAT_VERSION, "config": first["config"], "g_dim": first["g_dim"],
                           "n_slots": first["n_slots"], "delta_vocabulary": DELTA_VOCAB,
                           "samples": len(order), "merged_from": manifest})
    return out


def pretrain(train_dir: Path, run: Path, cfg: ClassifyConfig, progress: bool) -> Path:
    """The multi-task fused GNN (branch + next-delta) on the training programs' samples; reused
    when the training data and settings are unchanged."""
    from .train import TrainConfig, train

    tcfg = TrainConfig(train=str(train_dir), test="", out=str(run), model="fused", hidden=cfg.hidden,
                       epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed, threads=1)
    done = run / "train.json"
    if not (done.exists() and json.loads(done.read_text()).get("config") == asdict(tcfg)
            and (run / "checkpoint.pt").stat().st_mtime >= (train_dir / "dataset.json").stat().st_mtime):
        train(tcfg, progress=progress)
    return run


def gnn_features(model, ds, dynamic: bool = True, batch: int = 512) -> np.ndarray:
    """Per-sample [r; mean node state] of a frozen FusedGNN, [M, R + H]; ``dynamic=False`` zeroes
    the register/memory values and the history/TAGE vector g (the static code only)."""
    import torch

    from .train import GraphBatches

    batches = GraphBatches(ds, "fused", torch.device("cpu"))
    site = np.asarray(ds.arrays["site"])
    out = np.zeros((len(ds), model.cfg.readout_hidden + model.cfg.hidden), np.float64)
    model.eval()
    with torch.no_grad():
        for s in np.unique(site):
            at = np.flatnonzero(site == s)
            if not dynamic:   # every sample of a site then has the same input: compute one, copy it
                at = at[:1]
            for k in range(0, len(at), batch):
                rows = at[k:k + batch]
                static, dyn, adj, g = batches(rows, shared_site=True)
                if not dynamic:
                    dyn, g = torch.zeros_like(dyn), torch.zeros_like(g)
                h = model.nodes(static, dyn, adj)
                mask = model.mask(static).unsqueeze(-1)
                hbar = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
                r = model.act_read(model.read_h(h.flatten(1)) + model.read_g(model.q_in(g)))
                out[rows] = torch.cat([r, hbar], 1).double().numpy()
            if not dynamic:
                out[site == s] = out[at[0]]
    return out


def program_embeddings(model, run: Path, programs: list, data: dict, dynamic: bool) -> dict:
    """Pooled embeddings of ``programs`` under the frozen model of ``run``, cached beside it and
    reused while the checkpoint and the programs' datasets are unchanged."""
    name = "embeddings-fused" if dynamic else "embeddings-static"
    stamp = {"checkpoint_sha256": _sha256(run / "checkpoint.pt"),
             "datasets": {p.key: [data[p]["ds"].meta["trace_sha256"], data[p]["ds"].meta["config"]]
                          for p in programs}}
    if (run / f"{name}.json").exists() and json.loads((run / f"{name}.json").read_text()) == stamp:
        saved = np.load(run / f"{name}.npz")
        return {p: saved[p.key] for p in programs}
    emb = {p: pool_program(data[p]["ds"], gnn_features(model, data[p]["ds"], dynamic)) for p in programs}
    with atomic_path(run / f"{name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{p.key: e for p, e in emb.items()})
    write_json(run / f"{name}.json", stamp)
    return emb


def pool_program(ds, feats: np.ndarray) -> np.ndarray:
    """Mean over each site's samples, then over the branch sites and over the load sites:
    [branch half; load half] (a half is 0 when the program has no site of that task)."""
    site = np.asarray(ds.arrays["site"])
    halves = []
    for task in (0, 1):   # dataset.TASKS = ("branch", "load")
        per_site = [feats[site == s].mean(0) for s in np.nonzero(ds.site_task == task)[0] if (site == s).any()]
        halves.append(np.mean(per_site, 0) if per_site else np.zeros(feats.shape[1]))
    return np.concatenate(halves)


def train_scratch(train_dir: Path, n_classes: int, run: Path, cfg: ClassifyConfig, progress: bool):
    """The same GNN architecture with a class head (Linear(R, classes) on the readout vector),
    trained from scratch on each training sample's class. Reused when data and settings match."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .dataset import Dataset
    from .train import GraphBatches, TrainConfig, build_gnn

    settings = {"hidden": cfg.hidden, "epochs": cfg.scratch_epochs, "batch": cfg.batch, "lr": cfg.lr,
                "seed": cfg.seed, "classes": n_classes, "data": str(train_dir)}
    ds = Dataset(train_dir)
    tcfg = TrainConfig(train=str(train_dir), model="fused", hidden=cfg.hidden, seed=cfg.seed)
    body = build_gnn(tcfg, ds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(body.cfg.readout_hidden, n_classes)
    model = torch.nn.ModuleDict({"body": body, "head": head})
    ckpt = run / "scratch.pt"
    if ckpt.exists() and ckpt.stat().st_mtime >= (train_dir / "dataset.json").stat().st_mtime:
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        if saved["settings"] == settings:
            model.load_state_dict(saved["model"])
            return model
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    batches = GraphBatches(ds, "fused", torch.device("cpu"))
    label = torch.tensor(np.asarray(ds.arrays["label"]), dtype=torch.int64)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    steps = max(1, len(ds) // cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.scratch_epochs * steps)
    t0 = time.monotonic()
    for epoch in range(cfg.scratch_epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(ds))
        total = 0.0
        bar = tqdm(range(steps), desc=f"scratch GNN epoch {epoch + 1}/{cfg.scratch_epochs}", leave=False,
                   disable=not progress)
        model.train()
        for k in bar:
            rows = np.sort(perm[k * cfg.batch:(k + 1) * cfg.batch])
            loss = F.cross_entropy(_class_logits(model, *batches(rows)), label[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (k + 1):.3f}", refresh=False)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt) as tmp:
        torch.save({"model": model.state_dict(), "settings": settings,
                    "train_seconds": time.monotonic() - t0}, tmp)
    return model


def _class_logits(model, static, dyn, adj, g):
    body = model["body"]
    h = body.nodes(static, dyn, adj)
    return model["head"](body.act_read(body.read_h(h.flatten(1)) + body.read_g(body.q_in(g))))


def scratch_predict(model, ds, batch: int = 512) -> np.ndarray:
    """Mean log-probability of each class over all samples of one program's dataset."""
    import torch

    from .train import GraphBatches

    batches = GraphBatches(ds, "fused", torch.device("cpu"))
    site = np.asarray(ds.arrays["site"])
    logp = []
    model.eval()
    with torch.no_grad():
        for s in np.unique(site):
            at = np.flatnonzero(site == s)
            for k in range(0, len(at), batch):
                logp.append(torch.log_softmax(_class_logits(model, *batches(at[k:k + batch], shared_site=True)), -1))
    return torch.cat(logp).mean(0).numpy()


# ------------------------------------------------------------------------------------ the probe
def fit_probe(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, iters: int = 300):
    """Multinomial logistic regression on standardised features: minimise mean cross-entropy +
    l2 * |W|^2 with full-batch L-BFGS in float64 from zero weights (deterministic)."""
    import torch

    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    Xt = torch.tensor((X - mu) / sd, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.int64)
    W = torch.zeros(X.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xt @ W + b, yt) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"mu": mu, "sd": sd, "W": W.detach().numpy(), "b": b.detach().numpy()}


def probe_predict(probe: dict, X: np.ndarray) -> np.ndarray:
    return np.argmax((X - probe["mu"]) / probe["sd"] @ probe["W"] + probe["b"], 1)


def opcode_matrix(hists: list[dict], vocab: list[str]) -> np.ndarray:
    """Share of each mnemonic of ``vocab`` among a program's executed instructions (others dropped)."""
    X = np.zeros((len(hists), len(vocab)))
    col = {m: k for k, m in enumerate(vocab)}
    for i, h in enumerate(hists):
        total = max(sum(h.values()), 1)
        for m, c in h.items():
            if m in col:
                X[i, col[m]] = c / total
    return X


# ------------------------------------------------------------------------------------ the study
def prepare_corpus(programs: list[Program], cfg: ClassifyConfig) -> dict:
    """Trace, datasets and opcode histograms of every program (reused when unchanged)."""
    from tqdm import tqdm

    data = {}
    samples = bool({"fused", "static", "scratch"} & set(cfg.methods))
    for p in tqdm(programs, desc="corpus: trace, sites, samples", unit="program", disable=not cfg.progress):
        trace = trace_program(p, cfg)
        data[p] = {"trace": trace, "opcodes": program_opcodes(p, trace, cfg),
                   "ds": program_dataset(p, trace, cfg) if samples else None}
    return data


def evaluate_split(sp: dict, data: dict, classes: list[str], cfg: ClassifyConfig) -> dict:
    """Train every method on ``sp['train']`` and predict ``sp['test']``; per method, predictions."""
    from .train import load_model

    train_p, test_p = sp["train"], sp["test"]
    y_train = np.array([classes.index(p.cls) for p in train_p])
    tag = "impl-f{}".format(sp["fold"]) if sp["split"] == SPLITS[0] else f"level-O{cfg.test_level}"
    work = Path(cfg.work_dir) / "splits" / tag
    preds = {}
    need_gnn = {"fused", "static", "scratch"} & set(cfg.methods)
    if need_gnn:
        merged = merge_datasets([data[p]["ds"] for p in train_p], list(y_train), work / "train-data", cfg.seed)
    if {"fused", "static"} & set(cfg.methods):
        run = pretrain(merged, work / "pretrain", cfg, cfg.progress)
        model, _ = load_model(run)
        for method, dynamic in (("fused", True), ("static", False)):
            if method not in cfg.methods:
                continue
            emb = program_embeddings(model, run, train_p + test_p, data, dynamic)
            probe = fit_probe(np.stack([emb[p] for p in train_p]), y_train, len(classes), cfg.probe_l2)
            preds[method] = probe_predict(probe, np.stack([emb[p] for p in test_p]))
    if "opcodes" in cfg.methods:
        vocab = sorted({m for p in train_p for m in data[p]["opcodes"]})   # training programs only
        probe = fit_probe(opcode_matrix([data[p]["opcodes"] for p in train_p], vocab), y_train, len(classes),
                          cfg.probe_l2)
        preds["opcodes"] = probe_predict(probe, opcode_matrix([data[p]["opcodes"] for p in test_p], vocab))
    if "scratch" in cfg.methods:
        model = train_scratch(merged, len(classes), work / "scratch", cfg, cfg.progress)
        preds["scratch"] = np.array([int(np.argmax(scratch_predict(model, data[p]["ds"]))) for p in test_p])
    return preds


def run_classify(cfg: ClassifyConfig) -> dict:
    """The whole study; writes ``accuracy.md/.json``, ``confusion.json``, ``confusion.png`` and
    ``classify.json`` under ``cfg.out`` and returns the rows, confusion matrices and paths."""
    import torch

    from ncf.report import save_table

    torch.set_num_threads(1)   # one thread: deterministic, and the machine is shared
    t0 = time.monotonic()
    check_output(cfg.work_dir, directory=True)
    check_output(cfg.out, directory=True)
    programs = corpus_programs(cfg)
    classes = sorted({p.cls for p in programs})
    splits = make_splits(programs, cfg)
    data = prepare_corpus(programs, cfg)
    t_corpus = time.monotonic() - t0
    conf = {s: {m: np.zeros((len(classes), len(classes)), np.int64) for m in cfg.methods} for s in SPLITS}
    folds = []
    for sp in splits:
        preds = evaluate_split(sp, data, classes, cfg)
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
    out = Path(cfg.out)
    n_impl = len({(p.cls, p.impl) for p in programs})
    title = (f"Algorithm classification from execution: accuracy per held-out program ({len(classes)} classes, "
             f"{n_impl} implementations x -O{'/-O'.join(map(str, cfg.levels))}, {len(programs)} programs; "
             f"{cfg.impl_folds} implementation fold(s); lead D = {cfg.lead})")
    table = save_table(out / "accuracy", rows, title,
                       columns=["split", "method", "accuracy", "correct", "test_programs", "chance", "description"],
                       extra={"classes": classes, "config": asdict(cfg)})
    confusion = {s: {m: conf[s][m].tolist() for m in cfg.methods} for s in SPLITS}
    write_json(out / "confusion.json", {"classes": classes, "rows_true_columns_predicted": confusion})
    png = plot_confusion(conf, classes, out / "confusion.png")
    seconds = time.monotonic() - t0
    write_json(out / "classify.json", {"config": asdict(cfg), "classes": classes, "rows": rows, "folds": folds,
                                       "seconds": {"total": seconds, "corpus": t_corpus}})
    return {"rows": rows, "table": table, "classes": classes, "confusion": confusion, "folds": folds,
            "png": png, "seconds": seconds}


def confusion_text(matrix, classes: list[str]) -> str:
    """A confusion matrix as aligned text (rows: true class, columns: predicted)."""
    short = [c[:8] for c in classes]
    w = max(len(s) for s in short) + 1
    lines = [" " * w + "".join(f"{s:>{w}}" for s in short)]
    for s, row in zip(short, matrix):
        lines.append(f"{s:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    return "\n".join(lines)


def plot_confusion(conf: dict, classes: list[str], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(conf)
    methods = list(conf[splits[0]])
    fig, axes = plt.subplots(len(splits), len(methods), figsize=(3.3 * len(methods), 3.3 * len(splits)),
                             squeeze=False)
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ CLI
def cmd_classify(a) -> int:
    cfg = ClassifyConfig(**PRESETS[a.preset])
    for name in ("classes", "max_impls", "levels", "seeds", "test_level", "impl_folds", "instructions", "skip",
                 "lead", "per_site", "epochs", "scratch_epochs", "methods", "work_dir", "out", "seed"):
        if getattr(a, name, None) is not None:
            setattr(cfg, name, getattr(a, name))
    cfg.progress = not a.quiet
    cfg.__post_init__()
    r = run_classify(cfg)
    print(r["table"])
    for s in SPLITS:
        for m in cfg.methods:
            print(f"confusion, {m}, {s} (rows: true, columns: predicted):")
            print(confusion_text(r["confusion"][s][m], r["classes"]) + "\n")
    print(f"written to {cfg.out}/ (accuracy.md/.json, confusion.json, confusion.png, classify.json) "
          f"in {r['seconds']:.0f} s")
    return 0


def add_classify_parser(sub) -> None:
    """Register ``ncf classify`` on the subparsers of ncf's CLI."""
    import argparse

    from ncf.cli import count

    c = sub.add_parser(
        "classify", help="transfer: classify which algorithm a program runs from its execution",
        description="Trace the algorithm corpus (trace_eval/corpus: sorting, searching, graph traversal, dynamic "
        "programming, hashing, string matching, matrix kernels, prime counting; several implementations each, "
        "built at -O0/-O1/-O2 by `make native`), build each program's fused samples at lead D, and classify the "
        "algorithm of held-out programs with a linear probe on (1) the pooled embeddings of the fused GNN "
        "trained on the branch/prefetch task of the training programs and then frozen, (2) the same GNN with "
        "the dynamic inputs zeroed, (3) a bag of executed opcodes; and (4) with the same GNN trained from "
        "scratch on the classes. Two splits: unseen implementation (every fold holds out one implementation "
        "of each class) and unseen optimisation level (--test-level held out). Writes accuracy.md/.json, "
        "confusion.json, confusion.png. Traces, datasets and models are reused when unchanged.",
        epilog="examples:\n  ncf classify                               # default: ~4 min the first time\n"
        "  ncf classify --preset full                 # 4 folds, 2 seeds, 1M instructions (longer)\n"
        "  ncf classify --classes sort search --max-impls 2 --levels 1 2 --methods opcodes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="default: 2 folds, seed 1, 400k instructions; full: 4 folds, seeds 1 2, 1M")
    c.add_argument("--classes", nargs="+", help="algorithm classes (default: all of the corpus)")
    c.add_argument("--max-impls", dest="max_impls", type=int, help="at most this many implementations per class")
    c.add_argument("--levels", type=int, nargs="+", help="gcc -O levels to use (default 0 1 2)")
    c.add_argument("--seeds", type=int, nargs="+", help="input seeds per program (default 1)")
    c.add_argument("--test-level", dest="test_level", type=int, help="level held out (default 2)")
    c.add_argument("--impl-folds", dest="impl_folds", type=int,
                   help="folds of the unseen-implementation split (default 2)")
    c.add_argument("--instructions", type=count, help="instructions recorded per program (default 400k)")
    c.add_argument("--skip", type=count, help="instructions skipped first (default 150k: past the set-up)")
    c.add_argument("--lead", type=int, help="snapshot lead D (default 100)")
    c.add_argument("--per-site", dest="per_site", type=int, help="samples per site (default 48)")
    c.add_argument("--epochs", type=int, help="epochs of the branch/prefetch GNN (default 3)")
    c.add_argument("--scratch-epochs", dest="scratch_epochs", type=int, help="epochs of the scratch GNN (default 3)")
    c.add_argument("--methods", nargs="+", choices=METHODS, help="default: all four")
    c.add_argument("--seed", type=int, help="training and shuffling seed (default 0)")
    c.add_argument("--work-dir", dest="work_dir", help="traces, datasets, models (default work/classify)")
    c.add_argument("-o", "--out", help="report directory (default reports/classify)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_classify)
