"""Training and prediction of the history-only learned baselines on ncf datasets.

branchnet:  one BranchNet per hard branch (as BranchNet trains and deploys it: it predicts only the
            branches it was trained for), at a published shape (``TrainConfig.branchnet``: Big- or
            Mini-BranchNet), on the last 582 / 602 branches before each instance
            (``Dataset.branch_history``).
delta-lstm: one delta-LSTM for all delinquent loads of a workload, on the last ``delta_history``
            delta classes of the same load and the load's identity.

Sites are matched between the training and the test dataset by pc. A run directory holds
``checkpoint.pt`` (one state dict per trained site; ``--resume`` skips sites already done),
``config.yaml`` and ``train.json``.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ncf.io import atomic_path, check_output, write_json

from .baselines import BRANCHNET_SHAPES, BranchNet, DeltaLSTM, predict, train_classifier
from .dataset import Dataset
from .loop import CHECKPOINT_VERSION, World, checkpoint_path, load_checkpoint, split_rows


def _rows(ds: Dataset, task: int, site: int | None = None) -> np.ndarray:
    a = ds.arrays
    sel = (a["taken"] >= 0) if task == 0 else (a["delta"] >= 0)
    if site is not None:
        sel = sel & (a["site"] == site)
    return np.nonzero(sel)[0]


def _split(rows: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, int]:
    """``rows`` (sorted) reordered as their training rows, then their validation rows (in ``val``, the
    dataset's validation split: model.loop.split_rows, as for the GNNs), and where the latter start."""
    is_val = np.isin(rows, val)
    return np.concatenate([rows[~is_val], rows[is_val]]), int((~is_val).sum())


def _site_pc(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.site_pc, np.uint64)


def train_history_model(cfg, resume: bool = False, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    world = World.join()
    ds = Dataset(cfg.train)
    out = check_output(cfg.out, directory=True)
    out.mkdir(parents=True, exist_ok=True)
    if world.main:
        cfg.save(out / "config.yaml")
    a = ds.arrays
    ckpt = out / "checkpoint.pt"
    saved = load_checkpoint(ckpt) if resume and ckpt.exists() else {
        "format_version": CHECKPOINT_VERSION, "sites": {}, "seconds": 0.0, "history": {}}
    pcs = _site_pc(ds)
    val = split_rows(ds)[1]
    if cfg.model == "branchnet":
        jobs = [(int(pcs[k]), *_split(_rows(ds, 0, k), val)) for k in range(len(pcs)) if ds.site_task[k] == 0]
    else:
        jobs = [("all", *_split(_rows(ds, 1), val))]
    for key, rows, val_start in jobs:
        if str(key) in saved["sites"] or len(rows) < 20 or val_start == 0:
            continue
        t0 = time.monotonic()
        if cfg.model == "branchnet":
            model = BranchNet(**BRANCHNET_SHAPES[cfg.branchnet])
            inputs = (ds.branch_history(rows, model.history),)
            y = np.asarray(a["taken"][rows], np.float32)
        else:
            model = DeltaLSTM(n_sites=len(pcs), n_classes=ds.meta["config"]["delta_classes"])
            inputs = (np.asarray(a["dhist"][rows], np.int64), np.asarray(a["site"][rows], np.int64))
            y = np.asarray(a["delta"][rows], np.int64)
        hist = train_classifier(model, inputs, y, epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed,
                                val_start=val_start, progress=progress and world.main, world=world)
        saved["sites"][str(key)] = model.state_dict()
        saved["history"][str(key)] = {k: v for k, v in hist.items() if k in ("best_epoch", "epochs_run", "n_train",
                                                                               "n_val", "val_acc")}
        saved["seconds"] += time.monotonic() - t0
        saved["config"], saved["site_pc"] = asdict(cfg), [int(p) for p in pcs]
        if world.main:
            with atomic_path(ckpt) as tmp:
                torch.save(saved, tmp)
    summary = {"format_version": CHECKPOINT_VERSION, "model": cfg.model, "config": asdict(cfg),
               "train_seconds": saved["seconds"],
               "sites": saved["history"], "processes": world.size}
    if world.main:
        write_json(out / "train.json", summary)
    return summary


def predict_history(run_dir: str | Path, ds_dir: str | Path, wanted: np.ndarray | None = None) -> dict:
    """Per-sample predictions on a (test) dataset's rows ``wanted`` (default: all): p_taken for branch
    samples of trained hard branches (NaN elsewhere), delta class for load samples (-1 elsewhere)."""
    saved = load_checkpoint(checkpoint_path(run_dir))
    model_name = saved["config"]["model"]
    ds = Dataset(ds_dir)
    a = ds.arrays
    wanted = np.arange(len(ds)) if wanted is None else np.asarray(wanted, np.int64)
    keep = np.zeros(len(ds), bool)
    keep[wanted] = True
    p_taken = np.full(len(ds), np.nan)
    cls = np.full(len(ds), -1, np.int64)
    pcs = _site_pc(ds)
    if model_name == "branchnet":
        for k, pc in enumerate(pcs):
            state = saved["sites"].get(str(int(pc)))
            rows = _rows(ds, 0, k)
            rows = rows[keep[rows]]
            if state is None or not len(rows):
                continue
            model = BranchNet(**BRANCHNET_SHAPES[saved["config"].get("branchnet", "big")])
            model.load_state_dict(state)
            logit = predict(model, (ds.branch_history(rows, model.history),), logits=True)
            p_taken[rows] = 1 / (1 + np.exp(-logit))
    else:
        train_pcs = saved["site_pc"]
        model = DeltaLSTM(n_sites=len(train_pcs), n_classes=ds.meta["config"]["delta_classes"])
        model.load_state_dict(saved["sites"]["all"])
        rows = _rows(ds, 1)
        rows = rows[keep[rows]]
        to_train = {pc: k for k, pc in enumerate(train_pcs)}
        site = np.array([to_train.get(int(pcs[s]), -1) for s in np.asarray(a["site"][rows])], np.int64)
        ok = site >= 0
        cls[rows[ok]] = predict(model, (np.asarray(a["dhist"][rows[ok]], np.int64), site[ok]))
    return {"p_taken": p_taken[wanted], "delta_class": cls[wanted]}
