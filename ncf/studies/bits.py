"""Accuracy against bit width, and `ncf quantize`: the fused GNN quantized (QAT) at several bit
widths, scored on the held-out input; at ``export_bits`` every site exported as a hardware bundle.

    rows = bits_rows(model, "fused", train_ds, test_ds, BitsConfig(bits=[2, 4, 8]), engine=Engine())
    write_bits(rows, "reports/quant/bits")                       # table .md/.json + .png
    quantize_run("runs/bzip2/fused", "data/bzip2-0", "data/bzip2-1", "reports/quant", BitsConfig())

For each bit width b (weights and activations; biases keep QuantConfig.bias_bits): quantize the
float model, calibrate and QAT fine-tune it briefly on the training input (weight-shared form,
``quant.qat.finetune``; each width a Ray task under an ``Engine``), then score the branch head
(accuracy on branch samples) and the prefetch head (delta-class accuracy on load samples) on the
held-out input. Storage: weights x b bits +
biases x bias bits. At ``export_bits``, each site's flat one-site form goes to QONNX with the
exactness ladder checked on its held-out samples (``quant.quantize.ladder``): a site bundle that
``ncf hls`` / ``ncf rtl`` start from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import UsageError, check_output, figure, save_figure, save_table, write_json
from ncf.model.train import head_accuracy
from ncf.quant.qat import QuantConfig, finetune, quantize_model, storage

from .parallel import Engine


@dataclass
class BitsConfig:
    bits: list = field(default_factory=lambda: [2, 3, 4, 6, 8])
    steps: int = 200                 # QAT steps per bit width
    export_bits: int = 8             # the width exported as site bundles (ncf quantize)
    max_rows: int | None = 30_000    # held-out samples scored (evenly spaced in time); None = all
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for b in {*self.bits, self.export_bits}:
            QuantConfig.at(b)        # the quantizer's check of the bit width, before any work
        if self.steps < 0:
            raise UsageError(f"QAT steps {self.steps}: must be >= 0")


def bits_rows(model, kind: str, train_ds, test_ds, cfg: BitsConfig, progress: bool = True,
              engine: Engine | None = None, known: list[dict] = ()) -> list[dict]:
    """Rows {bits, branch_acc, prefetch_acc, storage_bits, storage_kib, qat_steps}, one per bit width
    (each a Ray task under ``engine``; ``known``: rows already scored), the float model last."""
    model = model.eval()
    todo = sorted(set(cfg.bits) - {int(r["bits"]) for r in known})
    rows = (engine or Engine(workers=1)).map(bit_row, [(model, kind, train_ds.path, test_ds.path, b, cfg)
                                                       for b in todo], desc="bit widths", progress=progress)
    rows = sorted([*rows, *known], key=lambda r: int(r["bits"]))
    rows.append({"bits": "float", **head_accuracy(model, test_ds, kind, cfg.max_rows),
                 "storage_bits": storage(model, None, None), "qat_steps": 0})
    for r in rows:
        r["storage_kib"] = round(r["storage_bits"] / 8192, 2)
    return rows


def quantized(model, kind: str, train_ds, b: int, cfg: BitsConfig, rows: np.ndarray | None = None):
    """The model quantized at ``b`` bits and fine-tuned (QAT) on ``rows`` of ``train_ds`` (default: its
    training part), with its QuantConfig and the steps run."""
    qcfg = QuantConfig.at(b)
    q = quantize_model(model.eval(), qcfg)
    ft = finetune(q, train_ds, qcfg, max_steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed, kind=kind,
                  rows=rows)
    return q, qcfg, ft["steps"]


def bit_row(model, kind: str, train_dir, test_dir, b: int, cfg: BitsConfig) -> dict:
    from ncf.model.dataset import Dataset

    return scored(*quantized(model, kind, Dataset(train_dir), b, cfg), kind, Dataset(test_dir), cfg)


def scored(q, qcfg: QuantConfig, steps: int, kind: str, test_ds, cfg: BitsConfig) -> dict:
    """The bit-width row of a quantized model."""
    return {"bits": str(qcfg.weight_bits), **head_accuracy(q, test_ds, kind, cfg.max_rows),
            "storage_bits": storage(q, qcfg.weight_bits, qcfg.bias_bits), "qat_steps": steps}


def write_bits(rows: list[dict], out: str | Path, extra: dict | None = None) -> str:
    """``out``.md / ``out``.json and ``out``.png (accuracy of both heads against bits)."""
    out = Path(out)
    text = save_table(out, rows, "Accuracy against bit width (held-out input)",
                      ["bits", "branch_acc", "prefetch_acc", "storage_bits", "storage_kib", "qat_steps"], extra)
    q = [r for r in rows if r["bits"] != "float"]
    fl = [r for r in rows if r["bits"] == "float"]
    xs = [int(r["bits"]) for r in q]
    fig, ax = figure(figsize=(5, 3.5))
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
    save_figure(fig, out.with_suffix(".png"), dpi=120)
    return text


def quantize_run(run_dir, train_dir, test_dir, out, cfg: BitsConfig, progress: bool = True,
                 engine: Engine | None = None) -> dict:
    """`ncf quantize`: the bit-width table and plot, and at ``cfg.export_bits`` a site bundle per site
    of the held-out dataset with its ladder (fake-quant == intref == QONNX) in ``ladder.json``."""
    from ncf.model.dataset import Dataset
    from ncf.model.train import load_model
    from ncf.quant.quantize import ladder

    out = check_output(out, directory=True)
    model, tcfg = load_model(run_dir)
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    qmodel, qcfg, qsteps = quantized(model, tcfg.model, train_ds, cfg.export_bits, cfg)   # the exported width
    rows = bits_rows(model, tcfg.model, train_ds, test_ds, cfg, progress, engine,
                     known=[scored(qmodel, qcfg, qsteps, tcfg.model, test_ds, cfg)])
    write_bits(rows, out / "bits", {"config": asdict(cfg), "model": tcfg.model})
    links = [ladder(qmodel, qcfg, test_ds, s, out / f"site{s}_{cfg.export_bits}bit.onnx", cfg.max_rows)
             for s in range(len(test_ds.site_pc))]
    write_json(out / "ladder.json", {"bits": cfg.export_bits, "sites": links})
    return {"rows": rows, "ladder": links}
