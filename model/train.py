"""Training: one config, one loop, checkpoints every epoch, resumable, deterministic.

    cfg = TrainConfig(train="data/bzip2-0", test="data/bzip2-1", model="fused", out="runs/bzip2/fused")
    train(cfg)            # or: ncf train --config cfg.yaml [--resume]

Models (``TrainConfig.model``):
  fused      the GNN on the fused graph: static code + dynamic snapshot + front-end counts + g (history,
             TAGE-SC-L, the load's deltas, the comparisons of the predicted memory values, the delta-class history)
  static     the same GNN without dynamic node features (ablation: static graph + history)
  history    the same network with blank graphs (ablation: g only: history, TAGE-SC-L, the load's deltas
             and delta-class history)
  branchnet  a BranchNet-style CNN per hard branch over the last 200 branches (learned baseline)
  delta-lstm the delta-LSTM of Hashemi et al. 2018 over the last 16 deltas of each load (baseline)

The three GNN variants share one network and one budget (epochs, batch, learning rate); only
their inputs differ, and ``TrainConfig.drop`` blanks more inputs of a GNN at training and prediction
time (``DROPS``: "frontend" the front-end counts, "snapshot" the register/memory values, "tage"
TAGE-SC-L's prediction, confidence and internals in g, "tage-internals" its internals only, "memory"
memory at the memory slots' predicted addresses and the comparisons of those values, ``value_relations``).
Validation is the last 10% of the training input's samples in time; the test set is another
program input. Evaluation (``predict``) returns per-sample predictions that ``model/evaluate.py``
scores through the trace_eval harness.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ncf.io import UsageError, at_least, atomic_path, check_output, load_config, save_config, write_json

from .dataset import G_DELTAS, G_DIM, G_TAGE, G_TAGE_DETAIL, HIST_BITS, TASKS, Dataset
from .graph import DYN_COUNT, DYN_MEMORY, DYN_VALUE, F_DYN, MAX_MEM_SLOTS, N_VALUE_BITS, encode_counts, encode_values
from .history_models import predict_history, train_history_model
from .loop import CHECKPOINT_VERSION, World, checkpoint_path, epoch_batches, fit, load_checkpoint, split_rows

GNN_MODELS = ("fused", "static", "history")
HISTORY_MODELS = ("branchnet", "delta-lstm")
MODELS = GNN_MODELS + HISTORY_MODELS


SLOT_PAIRS = tuple((s, t) for s in range(MAX_MEM_SLOTS) for t in range(s + 1, MAX_MEM_SLOTS))
RELATIONS = ("equal", "less", "less_signed")
G_RELATIONS = slice(G_DIM, G_DIM + len(RELATIONS) * len(SLOT_PAIRS))   # the GNNs' g: after the dataset's g


def value_relations(mem: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The comparisons of a sample's predicted memory values (``mem_pred`` [n, MAX_MEM_SLOTS] u64, where
    ``mem_pred_ok``), uint8 [n, len(RELATIONS) * len(SLOT_PAIRS)]: for every pair of slots (s, t), s < t, with
    both values, v_s == v_t, then v_s < v_t unsigned, then signed (relation-major); 0 where a value is missing.
    What a branch on two loaded values tests (bzip2's ``block[i1] != block[i2]``), given as such instead of
    left to be learnt from the values' encodings (``encode_values``, 16 low bits). A function of ``mem_pred``
    only: as honest as it is."""
    s, t = (np.array(x, np.int64) for x in zip(*SLOT_PAIRS))
    mem, ok = np.asarray(mem, np.uint64), np.asarray(ok).astype(bool)
    a, b, both = mem[:, s], mem[:, t], ok[:, s] & ok[:, t]
    return np.concatenate([both & (a == b), both & (a < b), both & (a.view(np.int64) < b.view(np.int64))],
                          1).astype(np.uint8)


def _zero(dyn_part: slice | None = None, *g_parts: slice):
    """A drop that zeroes this slice of every node's dynamic features and these slices of g."""
    def drop(dyn: torch.Tensor, g: torch.Tensor) -> None:
        if dyn_part is not None:
            dyn[..., dyn_part] = 0
        for p in g_parts:
            g[:, p] = 0
    return drop


# ablations: name -> blanks that input of a batch (dyn, g) in place
DROPS = {"frontend": _zero(DYN_COUNT), "snapshot": _zero(DYN_VALUE),
         "tage": _zero(None, G_TAGE, G_TAGE_DETAIL),      # all of TAGE-SC-L: prediction, confidence, internals
         "tage-internals": _zero(None, G_TAGE_DETAIL),    # its internals only
         "memory": _zero(DYN_MEMORY, G_RELATIONS)}        # memory at the predicted addresses, and its comparisons


@dataclass
class TrainConfig:
    train: str = ""                  # dataset directory (training input)
    test: str = ""                   # dataset directory (held-out input)
    out: str = "runs/model"
    model: str = "fused"
    hidden: int = 16
    steps: int = 2
    gate: bool = True
    epochs: int = 6
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 0
    threads: int = 1                 # torch threads; on a shared machine a 2nd thread waits for busy cores
    device: str = "auto"             # auto = cuda if present, else cpu
    branchnet: str = "big"           # the BranchNet shape (model.baselines.BRANCHNET_SHAPES): big or mini
    drop: list = field(default_factory=list)   # inputs a GNN does not see (names of DROPS), e.g. ["tage"]
    sites: list = field(default_factory=list)  # train on these sites' samples only (dataset site indices); [] = all

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if not isinstance(self.drop, list) or any(d not in DROPS for d in self.drop):
            raise UsageError(f"drop {self.drop!r}: give a list of input names among {', '.join(DROPS)}")
        if self.drop and self.model in HISTORY_MODELS:
            raise UsageError(f"drop {self.drop}: the ablations apply to the GNN models ({', '.join(GNN_MODELS)}), "
                             f"not to {self.model}")
        if not isinstance(self.sites, list) or any(type(k) is not int or k < 0 for k in self.sites):
            raise UsageError(f"sites {self.sites!r}: give a list of site indices (integers >= 0)")
        at_least(self, hidden=1, steps=0, epochs=1, batch=1, threads=1, weight_decay=0)
        from .baselines import BRANCHNET_SHAPES

        if self.branchnet not in BRANCHNET_SHAPES:
            raise UsageError(f"branchnet must be one of {', '.join(BRANCHNET_SHAPES)}, not {self.branchnet!r}")
        if not self.lr > 0:
            raise UsageError(f"lr {self.lr}: must be > 0")

    # round trip: YAML or JSON files
    def save(self, path: str | Path) -> Path:
        return save_config(self, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return load_config(cls, path)


def device_of(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


# --------------------------------------------------------------------------------------- GNN inputs
def class_history(dhist: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The delta classes of a load's last accesses before i (``dhist`` [B, T], the delta-LSTM's input; a
    branch sample's and a missing access's entry is ``n_classes``) one-hot [B, T * n_classes], zeros where none."""
    return F.one_hot(dhist.long(), n_classes + 1)[..., :n_classes].flatten(1).float()


def g_width(ds: Dataset) -> int:
    """The width of the g the GNNs read (``GraphBatches``): the dataset's g, ``value_relations``, then
    ``class_history``."""
    return G_RELATIONS.stop + ds.meta["config"]["delta_history"] * ds.meta["config"]["delta_classes"]


def g_columns(ds: Dataset, task: str, slots: int = MAX_MEM_SLOTS) -> np.ndarray:
    """Which columns of the GNNs' g a sample of ``task`` at a site with ``slots`` memory slots can set (bool
    [g_width]): the task bit and the branch history, the relations of its slots' values, then TAGE-SC-L's
    prediction, confidence and internals (branch) or the load's deltas and class history (load); the others
    are 0 for every such sample."""
    can = np.zeros(g_width(ds), bool)
    can[TASKS.index(task)] = True
    can[2:2 + HIST_BITS] = True
    pairs = np.array([t < slots for _, t in SLOT_PAIRS])
    can[G_RELATIONS] = np.tile(pairs, len(RELATIONS))
    for part in (G_TAGE, G_TAGE_DETAIL) if task == "branch" else (G_DELTAS, slice(G_RELATIONS.stop, None)):
        can[part] = True
    return can


class GraphBatches:
    """Turns dataset rows into the GNN's inputs (graph, dyn, g); the ablations (``model``, ``drop``)
    blank out what they must not see. dyn per node: [value bits | front-end count bits | predicted-memory
    value bits, ok] (graph.F_DYN); g: the dataset's g, the comparisons of the predicted-memory values
    (``value_relations``; 0 for the static and history GNNs, which see no values), then the load's
    delta-class history (``class_history``). The value encodings of every row are computed once, here, not
    per batch; the comparisons per batch."""

    def __init__(self, ds: Dataset, model: str, device: torch.device, chunk: int = 1 << 16, drop=()):
        from .gnn import SiteGraphs

        check_graphs(ds, model)
        self.model, self.device, self.drop = model, device, [DROPS[d] for d in drop]
        a = ds.arrays
        static, adj = torch.tensor(ds.static, dtype=torch.float32), torch.tensor(ds.adj)
        if model == "history":
            static, adj = torch.zeros_like(static), torch.zeros_like(adj)
        self.graphs = SiteGraphs(static, adj)
        self.site = torch.from_numpy(np.asarray(a["site"], np.int64))
        self.g = torch.tensor(np.asarray(a["g"]))
        self.dhist, self.n_classes = torch.tensor(np.asarray(a["dhist"])), ds.meta["config"]["delta_classes"]
        self.n_nodes = ds.static.shape[1]
        self.mem_val = None
        if model in ("static", "history"):   # their dyn is blank: no value encodings (a history-only dataset has none)
            return
        self.mem_val, self.mem_ok = np.asarray(a["mem_pred"]), np.asarray(a["mem_pred_ok"])
        n, slots = a["dynval"].shape
        self.enc = torch.zeros(n, slots + 1, N_VALUE_BITS, dtype=torch.uint8)      # slot ``slots``: no value
        for k in range(0, n, chunk):
            self.enc[k:k + chunk, :slots] = torch.from_numpy(encode_values(np.asarray(a["dynval"][k:k + chunk])))
        self.slot = torch.from_numpy(np.where(ds.dyn_slot >= 0, ds.dyn_slot, slots).astype(np.int64))   # [S, N]
        self.count = np.asarray(a["fe_count"])                                       # [n, N] u16
        n_mem = a["mem_pred"].shape[1]
        self.mem = torch.zeros(n, n_mem + 1, N_VALUE_BITS + 1, dtype=torch.uint8)   # slot ``n_mem``: none
        for k in range(0, n, chunk):
            ok = np.asarray(a["mem_pred_ok"][k:k + chunk])[..., None]
            self.mem[k:k + chunk, :n_mem] = torch.from_numpy(
                np.concatenate([encode_values(np.asarray(a["mem_pred"][k:k + chunk])) * ok, ok], -1))
        mem_slot = ds.dyn_slot.astype(np.int64) - (slots - n_mem)                    # memory slot k: 16 + k
        self.mem_slot = torch.from_numpy(np.where(mem_slot >= 0, mem_slot, n_mem))   # [S, N]

    def __call__(self, rows: np.ndarray) -> tuple:
        r = torch.from_numpy(np.asarray(rows, np.int64))
        site = self.site[r]
        if self.mem_val is None:
            rel = torch.zeros(len(r), G_RELATIONS.stop - G_RELATIONS.start)
        else:
            rel = torch.from_numpy(value_relations(self.mem_val[r.numpy()], self.mem_ok[r.numpy()])).float()
        g = torch.cat([self.g[r].float(), rel, class_history(self.dhist[r], self.n_classes)], 1)
        if self.model in ("static", "history"):
            dyn = torch.zeros(len(r), self.n_nodes, F_DYN)
        else:
            counts = torch.from_numpy(encode_counts(self.count[r.numpy()]))
            dyn = torch.cat([self.enc[r[:, None], self.slot[site]], counts,
                             self.mem[r[:, None], self.mem_slot[site]]], -1).float()            # [B, N, Fd]
        for blank in self.drop:
            blank(dyn, g)
        return self.graphs(site).to(self.device), dyn.to(self.device), g.to(self.device)


def labels(ds: Dataset, rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    a = ds.arrays
    return (torch.tensor(np.asarray(a["taken"][rows]), dtype=torch.float32, device=device),
            torch.tensor(np.asarray(a["delta"][rows]), dtype=torch.int64, device=device))


def multitask_loss(branch_logit, delta_logits, taken, delta, counts: tuple[int, int] | None = None) -> torch.Tensor:
    """BCE on branch samples (taken >= 0) + cross-entropy on load samples (delta >= 0), each averaged
    over its samples. ``counts``: these rows are one process's share of a global batch with that many
    (branch, load) samples; each term is then its share of the batch's mean, and both terms always
    enter (zero-weighted where the share has none), so that every parameter takes part in DDP's
    gradient reduction."""
    b, m = taken >= 0, delta >= 0
    if counts is not None:
        bce = F.binary_cross_entropy_with_logits(branch_logit, taken.clamp(min=0), reduction="none")
        ce = F.cross_entropy(delta_logits, delta.clamp(min=0), reduction="none")
        return (bce * b).sum() / max(counts[0], 1) + (ce * m).sum() / max(counts[1], 1)
    loss = branch_logit.new_zeros(())
    if b.any():
        loss = loss + F.binary_cross_entropy_with_logits(branch_logit[b], taken[b])
    if m.any():
        loss = loss + F.cross_entropy(delta_logits[m], delta[m])
    return loss


def graph_dataset(path, model: str) -> Dataset:
    """The dataset at ``path`` for GNN ``model`` (``check_graphs``)."""
    ds = Dataset(path)
    check_graphs(ds, model)
    return ds


def check_graphs(ds: Dataset, model: str) -> None:
    """Refuse plainly a history-only dataset (no site graphs) for a GNN that reads the graphs (all but the
    history GNN, which reads them blank)."""
    if ds.history_only and model != "history":
        raise UsageError(f"{ds.path}: a history-only dataset (its trace has no registers, memory values or instruction "
                         f"bytes, e.g. a ChampSim trace); the {model} GNN reads site graphs: it needs an ncf trace "
                         f"(`ncf trace`). BranchNet, the delta-LSTM and the history GNN run on it")


def build_gnn(cfg: TrainConfig, ds: Dataset):
    from .gnn import FusedGNN, GNNConfig

    gcfg = GNNConfig(n_nodes=ds.static.shape[1], f_static=ds.static.shape[2], f_dyn=F_DYN,
                     g_dim=g_width(ds), hidden=cfg.hidden, steps=cfg.steps, edge_types=ds.adj.shape[1],
                     delta_classes=ds.meta["config"]["delta_classes"], gate=cfg.gate, seed=cfg.seed)
    return FusedGNN(gcfg)


# --------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.model`` on ``cfg.train``; checkpoint every epoch in ``cfg.out``; return the summary."""
    if cfg.model in HISTORY_MODELS:
        return train_history_model(cfg, resume=resume, progress=progress)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    ds = graph_dataset(cfg.train, cfg.model)
    out = check_output(cfg.out, directory=True)
    out.mkdir(parents=True, exist_ok=True)
    dev = device_of(cfg)
    world = World.join(dev.type == "cuda")
    dev = world.device(dev)
    if world.main:
        cfg.save(out / "config.yaml")
    model = build_gnn(cfg, ds).to(dev)
    net = world.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = GraphBatches(ds, cfg.model, dev, drop=cfg.drop)
    tr, va = split_rows(ds, cfg.sites)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * len(epoch_batches(tr, cfg.batch, cfg.seed, 0)))
    state = {"epoch": 0, "history": [], "seconds": 0.0}
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        saved = load_checkpoint(ckpt, dev)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = saved["state"]
        torch.set_rng_state(saved["torch_rng"])
    t0 = [time.monotonic()]

    def checkpoint(history):
        state["epoch"] = history[-1]["epoch"]
        state["seconds"] += time.monotonic() - t0[0]
        state["history"].append(history[-1])
        t0[0] = time.monotonic()
        if not world.main:
            return
        with atomic_path(ckpt) as tmp:
            torch.save({"format_version": CHECKPOINT_VERSION, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "state": state, "torch_rng": torch.get_rng_state(),
                        "config": asdict(cfg), "gnn_config": asdict(model.cfg)}, tmp)

    taken, delta = np.asarray(ds.arrays["taken"]), np.asarray(ds.arrays["delta"])

    def loss_of(rows):   # this process's share of the global batch ``rows`` (all of it in one process)
        part = world.share(rows)
        counts = (int((taken[rows] >= 0).sum()), int((delta[rows] >= 0).sum())) if world.size > 1 else None
        return multitask_loss(*net(*batches(part)), *labels(ds, part, dev), counts=counts) * world.size

    fit(model, loss_of, tr, epochs=cfg.epochs, batch=cfg.batch, opt=opt, sched=sched, seed=cfg.seed, start_epoch=state["epoch"],
        validate=lambda: evaluate_rows(model, ds, batches, va, dev), on_epoch=checkpoint, progress=progress and world.main,
        desc=cfg.model)
    summary = {"format_version": CHECKPOINT_VERSION, "model": cfg.model, "config": asdict(cfg),
               "train_seconds": state["seconds"], "epochs": state["history"],
               "parameters": sum(p.numel() for p in model.parameters()), "processes": world.size}
    if world.main:
        write_json(out / "train.json", summary)
    return summary


@torch.no_grad()
def predict_gnn(model, ds: Dataset, batches: GraphBatches, rows: np.ndarray, dev, batch: int = 1024):
    """(branch probability, delta class) for ``rows``."""
    model.eval()
    p_taken, cls = np.zeros(len(rows)), np.zeros(len(rows), np.int64)
    for k in range(0, len(rows), batch):
        bl, dl = model(*batches(rows[k:k + batch]))
        p_taken[k:k + batch] = torch.sigmoid(bl).cpu().numpy()
        cls[k:k + batch] = dl.argmax(-1).cpu().numpy()
    return p_taken, cls


def head_accuracy(model, ds: Dataset, kind: str = "fused", max_rows: int | None = None) -> dict:
    """Accuracy of both heads of a GNN on ``ds`` (at most ``max_rows`` samples, evenly spaced in time):
    {"branch_acc", "prefetch_acc"} (None for a head without samples)."""
    dev = torch.device("cpu")
    rows = np.arange(len(ds))
    if max_rows and len(rows) > max_rows:
        rows = np.unique(np.linspace(0, len(ds) - 1, max_rows).astype(np.int64))
    r = evaluate_rows(model, ds, GraphBatches(ds, kind, dev), rows, dev)
    return {"branch_acc": r["val_branch_acc"], "prefetch_acc": r["val_delta_acc"]}


def evaluate_rows(model, ds: Dataset, batches: GraphBatches, rows: np.ndarray, dev) -> dict:
    """Branch accuracy and delta accuracy on ``rows`` (validation during training)."""
    p, cls = predict_gnn(model, ds, batches, rows, dev)
    taken = np.asarray(ds.arrays["taken"][rows])
    delta = np.asarray(ds.arrays["delta"][rows])
    b, m = taken >= 0, delta >= 0
    return {"val_branch_acc": float(((p[b] > 0.5) == taken[b]).mean()) if b.any() else None,
            "val_delta_acc": float((cls[m] == delta[m]).mean()) if m.any() else None}


def load_model(run_dir: str | Path, dev=torch.device("cpu")):
    """The trained GNN of a run directory."""
    from .gnn import FusedGNN, GNNConfig

    saved = load_checkpoint(checkpoint_path(run_dir), dev)
    model = FusedGNN(GNNConfig(**saved["gnn_config"]))
    model.load_state_dict(saved["model"])
    known = {f.name for f in fields(TrainConfig)}
    return model.eval(), TrainConfig(**{k: v for k, v in saved["config"].items() if k in known})


def predict(run_dir: str | Path, ds_dir: str | Path, rows: np.ndarray | None = None) -> dict:
    """Per-sample predictions of a trained run (any model) on a dataset's ``rows`` (default: all): p_taken
    (NaN where the model makes none), delta class (-1 where none)."""
    if TrainConfig.load(Path(run_dir) / "config.yaml").model in HISTORY_MODELS:
        return predict_history(run_dir, ds_dir, rows)
    model, cfg = load_model(run_dir)
    ds = graph_dataset(ds_dir, cfg.model)
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows, np.int64)
    batches = GraphBatches(ds, cfg.model, torch.device("cpu"), drop=cfg.drop)
    p, cls = predict_gnn(model, ds, batches, rows, torch.device("cpu"))
    return {"p_taken": p, "delta_class": cls}
