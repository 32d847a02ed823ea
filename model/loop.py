"""The one training loop of every model, the training / validation split, and the checkpoint format.

    hist = fit(model, loss_of, rows, epochs=8, batch=256, opt=opt, sched=sched, seed=0,
               validate=lambda: {...}, on_epoch=save_checkpoint)

Users: the GNNs (model/train.py), the history-only baselines (model/baselines.py), the
classification head (model/classify.py) and quantization-aware fine-tuning (quant/qat.py).

Data-parallel training (torch DDP under torchrun; ``World``): every process draws the same global
batches (same seed), takes its share of each (``world.share``: every size-th row, as
DistributedSampler deals them) and returns its share of the global batch's loss times the number
of processes; DDP averages the gradients, so the update is the one of the whole batch in one
process. The GNNs and the history baselines train this way.

The split (``split_rows``): of each trace a dataset was built from, its samples' last 10% in time
validate (early stopping, model selection, the hybrids' policies) and the rest train; every model of a
study trains on the same rows.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ncf.io import DataError, UsageError

CHECKPOINT_VERSION = 3          # of checkpoint.pt and train.json (2: the GNNs' g ends with the class history;
                                # 3: the comparisons of the predicted memory values before it)
VAL_FRACTION = 0.1              # of every part of a dataset: its validation tail (split_by_time)


@dataclass(frozen=True)
class World:
    """The processes training together: torchrun's RANK and WORLD_SIZE (one process without torchrun)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def join(cls, cuda: bool = False) -> World:
        """This process's place; under torchrun, joins the process group (NCCL on CUDA, else gloo)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return cls(dist.get_rank(), size, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        """The process that writes checkpoints and summaries."""
        return self.rank == 0

    def share(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.rank::self.size]

    def wrap(self, model):
        """``model`` under DistributedDataParallel (itself in one process)."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.local_rank] if next(model.parameters()).is_cuda
                                       else None)

    def device(self, dev: torch.device) -> torch.device:
        """This process's GPU under torchrun (cuda:LOCAL_RANK), else ``dev``."""
        return torch.device("cuda", self.local_rank) if dev.type == "cuda" and self.size > 1 else dev


def epoch_batches(rows: np.ndarray, batch: int, seed: int, epoch: int, drop_last: bool = True) -> list[np.ndarray]:
    """Epoch ``epoch``'s batches of ``rows``: a permutation seeded by (seed, epoch), so that a resumed
    run sees the same order, cut into sorted batches (the last partial one dropped unless it is the
    only one or ``drop_last`` is False)."""
    perm = np.random.default_rng([seed, epoch]).permutation(rows)
    cut = len(perm) - len(perm) % batch if drop_last and len(perm) >= batch else len(perm)
    return [np.sort(perm[k:k + batch]) for k in range(0, cut, batch)]


def split_by_time(part_rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and validation rows of a dataset of parts with ``part_rows`` rows each (one trace per
    part, its samples in time order): the last VAL_FRACTION of every part validates, so that each training
    trace (input and window) has its share of the validation split, after the part's training rows in time."""
    tr, va, start = [np.arange(0)], [np.arange(0)], 0
    for n in part_rows:
        cut = start + int(n * (1 - VAL_FRACTION))
        tr.append(np.arange(start, cut))
        va.append(np.arange(cut, start + n))
        start += n
    return np.concatenate(tr), np.concatenate(va)


def split_rows(ds, sites: list = ()) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of ``ds`` (``split_by_time`` over its parts), of ``sites`` only if any
    are given. Every model trains on the first and is selected on the second; the hybrids' policies too."""
    tr, va = split_by_time(ds.part_rows)
    if not sites:
        return tr, va
    if max(sites) >= len(ds.site_pc):
        raise UsageError(f"sites {list(sites)}: the dataset has {len(ds.site_pc)} sites (0..{len(ds.site_pc) - 1})")
    keep = np.isin(np.asarray(ds.arrays["site"]), sites)
    tr, va = tr[keep[tr]], va[keep[va]]
    if not len(tr):
        raise DataError(f"sites {list(sites)}: no training samples in {ds.path}")
    return tr, va


def fit(model, loss_of, rows: np.ndarray, *, epochs: int, batch: int, opt, sched=None, seed: int = 0,
        start_epoch: int = 0, max_steps: int | None = None, validate=None, patience: int | None = None,
        on_epoch=None, progress: bool = True, desc: str = "train") -> list[dict]:
    """The one training loop of every model (GNNs, history baselines, the classification head, QAT).

    Per epoch: the seeded batches of ``rows`` (``epoch_batches``); per batch ``loss_of(batch_rows)``,
    a backward pass, ``opt`` and ``sched`` steps. After each epoch ``validate()`` (a dict; its
    ``val_loss`` drives early stopping with ``patience``: training stops after that many epochs
    without improvement and the best epoch's weights are restored) and ``on_epoch(history)`` (for
    checkpoints). ``max_steps`` caps the optimizer steps over the whole run. Returns the per-epoch
    history: {"epoch", "train_loss", "steps", **validate()}.
    """
    from tqdm import tqdm

    history, steps, best, stale = [], 0, (float("inf"), None), 0
    for epoch in range(start_epoch, epochs):
        model.train()
        todo = epoch_batches(rows, batch, seed, epoch)
        if max_steps is not None:
            todo = todo[:max(0, max_steps - steps)]
        total = 0.0
        bar = tqdm(todo, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for k, b in enumerate(bar):
            loss = loss_of(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (k + 1):.4f}", refresh=False)
        steps += len(todo)
        model.eval()
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(todo), 1), "steps": len(todo),
                        **(validate() if validate else {})})
        if on_epoch:
            on_epoch(history)
        if patience is not None and "val_loss" in history[-1]:
            if history[-1]["val_loss"] < best[0]:
                best, stale = (history[-1]["val_loss"], copy.deepcopy(model.state_dict())), 0
            else:
                stale += 1
                if stale >= patience:
                    break
        if max_steps is not None and steps >= max_steps:
            break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return history


def checkpoint_path(run_dir: str | Path) -> Path:
    """The checkpoint of a trained run directory; a clear error when ``run_dir`` is not one."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise UsageError(f"{run_dir}: not a trained run (no checkpoint.pt); train one with `ncf train`")
    return path


def load_checkpoint(path: str | Path, dev=torch.device("cpu")) -> dict:
    """A checkpoint written by this version of ncf (a DataError names an older format)."""
    saved = torch.load(path, map_location=dev, weights_only=False)
    if saved.get("format_version") != CHECKPOINT_VERSION:
        raise DataError(f"{path}: checkpoint format {saved.get('format_version')} is not {CHECKPOINT_VERSION}; "
                        "train the run again")
    return saved
