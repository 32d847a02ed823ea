"""Hardware size against accuracy: the compact GNN at several widths and bit widths, each trained,
quantized (QAT), lowered to RTL and synthesized; accuracy against LUTs is the Pareto plot.

    rows = hw_sweep("work/data/train", "work/data/test", "reports/hw/sweep", HwSweepConfig())

For every point (H, T, b) — hidden width H, message-passing steps T (a float model trained once per
(H, T), no gate, the study's training set) and bit width b: QAT at b bits, the branch accuracy on the chosen site's held-out samples
(TAGE-SC-L's accuracy on the same samples for scale), the site exported and lowered to Verilog
(``build_rtl``), and yosys ``synth_xilinx`` LUT/FF counts (``synth``; optional, the da4ml cost
estimate is always there). The weight storage is compared with TAGE-SC-L's 64 KB budget.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import UsageError, at_least, atomic_path, check_output
from ncf.report import save_table

TAGE_BITS = 523_374          # TAGE-SC-L storage (trace_eval/branch_predictors.py)


@dataclass
class HwSweepConfig:
    points: list = field(default_factory=lambda: [[1, 1, 3], [2, 2, 3], [2, 2, 4], [4, 2, 4]])  # [H, T, bits]
    epochs: int = 4
    qat_steps: int = 100
    site: int | None = None        # default: the branch site TAGE-SC-L mispredicts most on the held-out input
    max_rows: int = 4000           # held-out samples of the site per exported bundle
    cutoff: float = 2.0            # da4ml latency_cutoff
    synth: bool = True             # yosys synth_xilinx per point (else: da4ml cost only)
    seed: int = 0

    def __post_init__(self):
        from ncf.model.train import TrainConfig
        from ncf.quant.qat import QuantConfig

        if not self.points:
            raise UsageError("points: give at least one H,T,BITS")
        for point in self.points:
            if len(point) != 3:
                raise UsageError(f"point {point}: a point is H,T,BITS (hidden width, steps, bit width)")
            h, t, b = point
            try:
                TrainConfig(hidden=h, steps=t)          # the training's check of H and T
                QuantConfig(weight_bits=b, act_bits=b)  # the quantizer's check of the bit width
            except UsageError as e:
                raise UsageError(f"point {point}: {e}") from None
        at_least(self, epochs=1, qat_steps=0, max_rows=1)
        if not self.cutoff > 0:
            raise UsageError(f"cutoff {self.cutoff}: must be > 0")


def _site(test_ds, cfg: HwSweepConfig) -> int:
    """The branch site where TAGE-SC-L mispredicts most often on the held-out input (the hardest)."""
    if cfg.site is not None:
        return cfg.site
    a = test_ds.arrays
    site, taken = np.asarray(a["site"]), np.asarray(a["taken"])
    miss = (taken >= 0) & (np.asarray(a["tage_pred"]) != taken)
    return int(np.bincount(site[miss], minlength=len(test_ds.site_pc)).argmax())


def point_name(h: int, t: int, b: int) -> str:
    return f"h{h}_t{t}_b{b}"


def _train(train_dir, test_dir, out: Path, hidden: int, steps: int, cfg: HwSweepConfig):
    from ncf.model.train import TrainConfig, load_model, train

    run = out / f"runs/h{hidden}_t{steps}"
    tcfg = TrainConfig(train=str(train_dir), test=str(test_dir), out=str(run), hidden=hidden, steps=steps,
                       gate=False, epochs=cfg.epochs, batch=64, seed=cfg.seed, threads=2)
    if not ((run / "train.json").exists() and TrainConfig.load(run / "config.yaml") == tcfg):
        train(tcfg, progress=False)
    return load_model(run)[0]


def site_accuracy(model, ds, rows) -> float:
    """Branch accuracy of ``model`` on dataset ``rows`` (one site)."""
    import torch
    from ncf.model.train import GraphBatches, predict_gnn

    dev = torch.device("cpu")
    with torch.no_grad():
        p, _ = predict_gnn(model, ds, GraphBatches(ds, "fused", dev), rows, dev)
    taken = np.asarray(ds.arrays["taken"][rows]).astype(bool)
    return float(((p > 0.5) == taken).mean())


def hw_sweep(train_dir, test_dir, out, cfg: HwSweepConfig | None = None, progress: bool = True) -> dict:
    """Rows (one per point) + the plot; written to ``out``/sweep.md/.json/.png."""
    cfg = cfg or HwSweepConfig()
    from ncf.model.dataset import Dataset
    from ncf.quant.qat import QuantConfig, finetune, quantize_model
    from ncf.quant.quantize import ladder, read_bundle
    from ncf.quant.sweep import storage

    from .generate import HwConfig, build_rtl
    from .synth import synth

    out = check_output(out, directory=True)
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    site = _site(test_ds, cfg)
    rows_all = np.flatnonzero(np.asarray(test_ds.arrays["site"]) == site)
    rows_eval = rows_all[np.unique(np.linspace(0, len(rows_all) - 1, min(cfg.max_rows, len(rows_all))).astype(np.int64))]
    tage = float((np.asarray(test_ds.arrays["tage_pred"][rows_eval]) == np.asarray(test_ds.arrays["taken"][rows_eval])).mean())
    rows, models = [], {}
    for h, t, b in cfg.points:
        if (h, t) not in models:
            models[(h, t)] = _train(train_dir, test_dir, out, h, t, cfg)
        model = models[(h, t)]
        qcfg = QuantConfig(weight_bits=b, act_bits=b)
        q = quantize_model(model, qcfg)
        finetune(q, train_ds, qcfg, max_steps=cfg.qat_steps, seed=cfg.seed)
        point = out / point_name(h, t, b)
        onnx = point / f"site{site}_{b}bit.onnx"
        lad = ladder(q, qcfg, test_ds, site, onnx, cfg.max_rows)
        m = build_rtl(read_bundle(onnx), HwConfig(cutoff=cfg.cutoff, check_samples=cfg.max_rows), point / "rtl",
                      progress=False)
        row = {"hidden": h, "steps": t, "bits": b, "site_pc": f"{int(test_ds.site_pc[site]):#x}",
               "branch_acc": site_accuracy(q, test_ds, rows_eval), "tage_acc": tage,
               "weight_storage_bits": storage(q, b, qcfg.bias_bits), "da4ml_cost": m["da4ml"]["cost"],
               "latency_cycles": m["latency"]["top_cycles"], "input_bits": m["parameters"]["IN_W"],
               "ladder_exact": lad["fake_quant==intref"] == lad["samples"] == lad["intref==qonnx"]}
        if cfg.synth:
            s = synth(point / "rtl", targets=("xilinx",), progress=False)["targets"]["xilinx"]
            row.update({"LUT": s.get("counts", {}).get("LUT"), "FF": s.get("counts", {}).get("FF"),
                        "synth_status": s["status"]})
        rows.append(row)
        if progress:
            print(row, flush=True)
    text = save_table(out / "sweep", rows, "Hardware size against accuracy (one site's held-out samples)",
                      extra={"config": asdict(cfg), "site": site, "samples": len(rows_eval), "train": str(train_dir),
                             "test": str(test_dir), "tage_sc_l_bits": TAGE_BITS})
    plot(rows, out / "sweep.png", tage, "LUT" if cfg.synth else "da4ml_cost")
    return {"rows": rows, "text": text, "plot": out / "sweep.png", "site": site}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (fewer LUTs and at least the accuracy), by LUTs."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], -points[k][1]))
    front, best = [], -np.inf
    for k in order:
        if points[k][1] > best:
            front.append(k)
            best = points[k][1]
    return front


def plot(rows: list[dict], path: Path, tage_acc: float, cost_key: str = "LUT") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get(cost_key)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    pts = [(r[cost_key], r["branch_acc"]) for r in ok]
    for r in ok:
        a1.scatter(r[cost_key], r["branch_acc"], color="C0")
        a1.annotate(f"H{r['hidden']}T{r['steps']}/{r['bits']}b", (r[cost_key], r["branch_acc"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
        a2.scatter(r["weight_storage_bits"], r["branch_acc"], color="C0")
    front = [ok[k] for k in pareto(pts)]
    a1.plot([r[cost_key] for r in front], [r["branch_acc"] for r in front], "o-", color="C2", ms=11, mfc="none",
            mew=2, label="Pareto front (no point is smaller and more accurate)")
    for ax in (a1, a2):
        ax.axhline(tage_acc, color="C3", ls="--", lw=1, label="TAGE-SC-L on the same samples")
        ax.set_ylabel("branch accuracy (site, held-out)")
        ax.grid(alpha=0.3)
    a1.set_xlabel("Xilinx LUTs (yosys synth_xilinx)" if cost_key == "LUT" else "da4ml cost (LUT estimate)")
    a1.set_xscale("log")
    a2.axvline(TAGE_BITS, color="C3", lw=1, label="TAGE-SC-L storage (523,374 bits)")
    a2.set_xscale("log")
    a2.set_xlabel("weight + bias storage (bits)")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


