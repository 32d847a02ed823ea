"""Accuracy against bit width: the fused GNN at 2, 3, 4, 6, 8 bits (QAT) and in float.

    rows, models = sweep(model, train_ds, test_ds, out="reports/quant/bits")   # table .md/.json + .png
    (ncf quantize runs it; see quantize.py)

For each bit width b (weights and activations; biases keep QuantConfig.bias_bits): quantize the
float model, calibrate and QAT fine-tune it briefly on the training input (weight-shared form,
``finetune``), then score the branch head (accuracy on branch samples) and the prefetch head
(delta-class accuracy on load samples) on the held-out input. Storage: weights x b bits + biases x
bias bits (the weight-shared model; the flat per-site form stores the same distinct values).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .qat import QuantConfig, finetune, quantize_model

BITS = (2, 3, 4, 6, 8)


def storage(model, weight_bits: int | None, bias_bits: int | None) -> int:
    """Bits of weight and bias storage (float: 32 bits each)."""
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * (weight_bits or 32)
            if m.bias is not None:
                total += m.bias.numel() * (bias_bits or 32)
    return total


def score(model, ds, kind: str = "fused", max_rows: int | None = None) -> dict:
    """Accuracy of both heads on ``ds`` (at most ``max_rows`` samples, evenly spaced in time)."""
    from ncf.model.train import GraphBatches, evaluate_rows

    dev = torch.device("cpu")
    rows = np.arange(len(ds))
    if max_rows and len(rows) > max_rows:
        rows = np.unique(np.linspace(0, len(ds) - 1, max_rows).astype(np.int64))
    r = evaluate_rows(model, ds, GraphBatches(ds, kind, dev), rows, dev)
    return {"branch_acc": r["val_branch_acc"], "prefetch_acc": r["val_delta_acc"]}


def sweep(model, train_ds, test_ds, out: str | Path | None = None, bits=BITS, steps: int = 200,
          batch: int = 256, lr: float = 1e-3, seed: int = 0, kind: str = "fused", progress: bool = True,
          max_rows: int | None = None):
    """Rows {bits, branch_acc, prefetch_acc, storage_bits, storage_kib, qat_steps} (float last) and
    the quantized models by bit width (with their QuantConfig)."""
    model = model.eval()
    rows, models = [], {}
    for b in bits:
        qcfg = QuantConfig(weight_bits=b, act_bits=b)
        q = quantize_model(model, qcfg)
        ft = finetune(q, train_ds, qcfg, max_steps=steps, batch=batch, lr=lr, seed=seed, kind=kind)
        rows.append({"bits": str(b), **score(q, test_ds, kind, max_rows), "storage_bits": storage(q, b, qcfg.bias_bits),
                     "qat_steps": ft["steps"]})
        models[b] = (q, qcfg)
        if progress:
            print(rows[-1], flush=True)
    rows.append({"bits": "float", **score(model, test_ds, kind, max_rows), "storage_bits": storage(model, None, None),
                 "qat_steps": 0})
    for r in rows:
        r["storage_kib"] = round(r["storage_bits"] / 8192, 2)
    if out is not None:
        write(rows, out, {"train": str(train_ds.path), "test": str(test_ds.path), "qat_steps": steps,
                          "batch": batch, "lr": lr, "seed": seed, "model": kind})
    return rows, models


def write(rows: list[dict], out: str | Path, extra: dict | None = None) -> str:
    """``out``.md / ``out``.json (ncf.report.save_table) and ``out``.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ncf.io import atomic_path
    from ncf.report import save_table

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = save_table(out, rows, "Accuracy against bit width (held-out input)",
                      ["bits", "branch_acc", "prefetch_acc", "storage_bits", "storage_kib", "qat_steps"],
                      extra)
    q = [r for r in rows if r["bits"] != "float"]
    fl = [r for r in rows if r["bits"] == "float"]
    xs = [int(r["bits"]) for r in q]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label, color in (("branch_acc", "branch (taken)", "C0"), ("prefetch_acc", "prefetch (delta class)", "C1")):
        ys = [r[key] for r in q]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", color=color, label=label)
        if fl and fl[0][key] is not None:
            ax.axhline(fl[0][key], color=color, ls="--", lw=1, label=f"{label}, float")
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return text
