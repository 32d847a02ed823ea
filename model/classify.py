"""Classifying programs from their execution (the transfer study, ncf/studies/classify.py): the
model-side pieces.

    merge_datasets([ds_a, ds_b], labels=[0, 3], out=d, seed=0)   # one labelled training set
    X = gnn_features(model, ds)        # frozen FusedGNN: [readout r; mean node state] per sample
    e = pool_program(ds, X)            # a program's embedding: site means, then task halves
    probe = fit_probe(E, y, n_classes)     # multinomial logistic regression (L-BFGS, float64)
    model = train_scratch(merged, n_classes, TrainConfig(...))   # the GNN with a class head
    hist = opcode_histogram(trace)     # executed instructions per mnemonic (the opcode baseline)

Programs' sites are their hard branches and delinquent loads filled up with their most executed
branches and loads (``fill_sites``); their samples use one delta vocabulary (``DELTA_VOCAB``) so
that no program's data chooses it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ncf.io import atomic_path, write_json

# Line deltas of the next-delta head: one fixed vocabulary for every program, the 15 smallest |delta| + "other".
DELTA_VOCAB = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7]


def fill_sites(trace: Path, max_branches: int, max_loads: int) -> dict:
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
    sites["from_trace"] = Path(trace).name
    return sites


def opcode_histogram(trace: Path) -> dict[str, int]:
    """Executed instructions of the trace per mnemonic."""
    from ncf.trace_eval import x86
    from ncf.trace_eval.format import TraceReader

    r = TraceReader(trace, verify=False)
    counts = np.zeros(0, np.int64)
    for ch in r.chunks(registers=False):
        c = np.bincount(ch.insn["sid"].astype(np.int64))
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), np.int64)])
        counts[:len(c)] += c
    hist: dict[str, int] = {}
    for sid in np.nonzero(counts)[0]:
        pc, code = r.static.code(int(sid))
        d = x86.decode(code, pc)
        name = d.mnemonic if d else "(undecodable)"
        hist[name] = hist.get(name, 0) + int(counts[sid])
    return dict(sorted(hist.items()))


def merge_datasets(parts: list, labels: list[int], out: Path, seed: int) -> Path:
    """One training dataset from several programs' datasets (sites renumbered, rows shuffled with
    ``seed`` so that the validation tail is a random 10%); ``label.npy`` holds each row's class."""
    from .dataset import FORMAT_VERSION

    keys = ("site", "idx", "g", "taken", "delta", "dhist", "dynval", "fe_count", "mem_pred", "mem_pred_ok")
    cols = {k: [] for k in keys + ("label", "program")}
    statics, adjs, slots, node_pcs, pcs, tasks = [], [], [], [], [], []
    offset = 0
    for k, (ds, lab) in enumerate(zip(parts, labels)):
        for key in keys:
            v = np.asarray(ds.arrays[key])
            cols[key].append(v.astype(np.int64) + offset if key == "site" else v)
        n = len(ds)
        cols["label"].append(np.full(n, lab, np.int64))
        cols["program"].append(np.full(n, k, np.int64))
        statics.append(ds.static), adjs.append(ds.adj), slots.append(ds.dyn_slot), node_pcs.append(ds.node_pc)
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
                 node_pc=np.concatenate(node_pcs),
                 pc=np.concatenate(pcs), task=np.concatenate(tasks))
    first = parts[0].meta
    write_json(out / "dataset.json", {
        "format_version": FORMAT_VERSION, "config": first["config"], "g_dim": first["g_dim"],
        "n_slots": first["n_slots"], "delta_vocabulary": DELTA_VOCAB, "samples": len(order),
        "merged_from": [[ds.meta["trace_sha256"], ds.meta["samples"], int(lab)] for ds, lab in zip(parts, labels)]})
    return out


def gnn_features(model, ds, dynamic: bool = True, batch: int = 512) -> np.ndarray:
    """Per-sample [r; mean node state] of a frozen FusedGNN, [M, R + H]; ``dynamic=False`` zeroes
    the dynamic node features (values, front-end counts) and the history/TAGE vector g (the static code only)."""
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
                graph, dyn, g = batches(rows)
                if not dynamic:
                    dyn, g = torch.zeros_like(dyn), torch.zeros_like(g)
                h = model.nodes(graph, dyn)
                mask = model.sample_mask(graph)
                hbar = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
                r = model.act_read(model.read_h(h.flatten(1)) + model.read_g(model.q_in(g)))
                out[rows] = torch.cat([r, hbar], 1).double().numpy()
            if not dynamic:
                out[site == s] = out[at[0]]
    return out


def pool_program(ds, feats: np.ndarray) -> np.ndarray:
    """Mean over each site's samples, then over the branch sites and over the load sites:
    [branch half; load half] (a half is 0 when the program has no site of that task)."""
    site = np.asarray(ds.arrays["site"])
    halves = []
    for task in (0, 1):   # dataset.TASKS = ("branch", "load")
        per_site = [feats[site == s].mean(0) for s in np.nonzero(ds.site_task == task)[0] if (site == s).any()]
        halves.append(np.mean(per_site, 0) if per_site else np.zeros(feats.shape[1]))
    return np.concatenate(halves)


def scratch_model(ds, n_classes: int, cfg):
    """The fused GNN architecture with a class head (Linear(R, classes) on the readout vector),
    initialised from ``cfg.seed`` (``cfg``: a TrainConfig)."""
    import torch

    from .train import build_gnn

    body = build_gnn(cfg, ds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(body.cfg.readout_hidden, n_classes)
    return torch.nn.ModuleDict({"body": body, "head": head})


def train_scratch(train_dir: Path, n_classes: int, cfg, progress: bool = True):
    """``scratch_model`` trained from scratch on each training sample's class (``label.npy``) with
    model/train.py's loop; ``cfg`` is a TrainConfig (hidden, epochs, batch, lr, seed)."""
    import torch
    import torch.nn.functional as F

    from .dataset import Dataset
    from .loop import epoch_batches, fit
    from .train import GraphBatches

    ds = Dataset(train_dir)
    model = scratch_model(ds, n_classes, cfg)
    torch.manual_seed(cfg.seed)
    batches = GraphBatches(ds, "fused", torch.device("cpu"))
    label = torch.tensor(np.asarray(ds.arrays["label"]), dtype=torch.int64)
    rows = np.arange(len(ds))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * len(epoch_batches(rows, cfg.batch, cfg.seed, 0)))
    fit(model, lambda r: F.cross_entropy(_class_logits(model, *batches(r)), label[r]), rows, epochs=cfg.epochs,
        batch=cfg.batch, opt=opt, sched=sched, seed=cfg.seed, progress=progress, desc="scratch GNN")
    return model


def _class_logits(model, graph, dyn, g):
    body = model["body"]
    h = body.nodes(graph, dyn)
    return model["head"](body.act_read(body.read_h(h.flatten(1)) + body.read_g(body.q_in(g))))


def scratch_predict(model, ds, batch: int = 512) -> np.ndarray:
    """Mean log-probability of each class over all samples of one program's dataset."""
    import torch

    from .train import GraphBatches

    batches = GraphBatches(ds, "fused", torch.device("cpu"))
    rows = np.arange(len(ds))
    model.eval()
    with torch.no_grad():
        logp = [torch.log_softmax(_class_logits(model, *batches(rows[k:k + batch])), -1)
                for k in range(0, len(rows), batch)]
    return torch.cat(logp).mean(0).numpy()


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
