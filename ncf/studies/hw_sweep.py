"""Hardware size against accuracy: the compact GNN at several widths and bit widths, each trained,
quantized (QAT), lowered to RTL and synthesized; accuracy against LUTs is the Pareto plot.

    r = hw_sweep("work/data/train", "work/data/test", "reports/hw/sweep", HwSweepConfig())

The exported block serves one site (the branch site TAGE-SC-L mispredicts most on the held-out input,
or ``site``, a branch or a load), so each model is that site's: for every point (H, T, b) — hidden width H,
message-passing steps T (a float model trained once per (H, T), no gate, on the site's training samples
only: its task) and bit width b: QAT at b bits on the same samples, the accuracy on the site's held-out
samples (``ACCURACY``: a branch site's direction against TAGE-SC-L's on the same samples, a load site's
delta class against its last known delta class repeated, as a stride prefetcher does; a load's block takes
its delta-class history as input), the site exported as a bundle
and lowered to Verilog (``build_rtl``, with the point's da4ml latency cutoff), and yosys ``synth_xilinx``
LUT/FF counts (optional; the da4ml cost estimate is always there). With ``pnr`` (ecp5 or ice40) each point is
also placed and routed by nextpnr: its Fmax, its latency in ns and the largest host clock at which the
dataset's snapshot lead covers it (``hw.synth.lead_budget``), and the plot gains accuracy against latency in
ns. The weight storage is compared with TAGE-SC-L's 64 KB budget. ``lutnets`` adds LUT-native networks of the
same site (``LAYERS/FAN_IN/BITS``, e.g. ``36-6-1/6/1``: ``ncf.studies.lutnet.lutnet_site``, truth tables as weight
storage) as points of the same table and plot, lowered, synthesized and placed like the GNN points. Training,
bundles, RTL and synthesis go through the stage cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ncf.io import DataError, UsageError, at_least, check_output, figure, save_figure, save_table
from ncf.model.dataset import Dataset
from ncf.model.train import TrainConfig
from ncf.quant.lutnet import LutNetConfig
from ncf.quant.qat import QuantConfig

from . import steps
from .cache import StageCache
from .parallel import Engine, settings
from .site_eval import hardest_site, label_agreement, reference_accuracy, site_rows, training_site

TAGE_BITS = 523_374          # TAGE-SC-L storage (trace_eval/branch_predictors.py)
PNR_TARGETS = ("ecp5", "ice40")
# per site task: the rows' accuracy column, the reference's column and the reference's name (site_eval)
ACCURACY = {"branch": ("branch_acc", "tage_acc", "TAGE-SC-L"),
            "load": ("delta_acc", "last_delta_acc", "the last delta class repeated (stride)")}


@dataclass
class HwSweepConfig:
    points: list = field(default_factory=lambda: [[1, 1, 3], [2, 2, 3], [2, 2, 4], [4, 2, 4]])  # [H, T, bits(, cutoff)]
    lutnets: list = field(default_factory=list)   # LUT-native nets of the site: "LAYERS/FAN_IN/BITS", e.g. 36-6-1/6/1
    epochs: int = 20               # a site's model sees only its site's samples (~1/10 of the training set)
    qat_steps: int = 100
    site: int | None = None        # the held-out dataset's site index (default: the branch site TAGE-SC-L mispredicts
                                   # most on the held-out input); a branch or a load
    max_rows: int = 4000           # held-out samples of the site per exported bundle
    cutoff: float = 2.0            # da4ml latency_cutoff of the points that do not give their own
    synth: bool = True             # yosys synth_xilinx per point (else: da4ml cost only)
    pnr: str = ""                  # also place and route each point on this nextpnr target (ecp5, ice40; "" = no)
    seed: int = TrainConfig.seed
    cache: str = "work/cache"
    workers: int = 0               # Ray tasks at once on this machine: 0 = every CPU, 1 = serial without Ray
    ray_address: str | None = None  # a Ray cluster to run on instead (or RAY_ADDRESS)

    def __post_init__(self):
        Engine(self.workers, self.ray_address)
        if not self.points:
            raise UsageError("points: give at least one H,T,BITS")
        for point in self.points:
            if len(point) not in (3, 4) or any(v != int(v) for v in point[:3]):
                raise UsageError(f"point {point}: a point is H,T,BITS or H,T,BITS,CUTOFF (hidden width, steps, bit "
                                 "width, da4ml latency cutoff)")
            try:
                self.train_config(*point[:2], site=0)     # the training's check of H and T
                QuantConfig.at(point[2])          # the quantizer's check of the bit width
            except UsageError as e:
                raise UsageError(f"point {point}: {e}") from None
            if not self.point_cutoff(point) > 0:
                raise UsageError(f"point {point}: the cutoff must be > 0")
        for spec in self.lutnets:
            lutnet_config(spec)
        at_least(self, epochs=1, qat_steps=0, max_rows=1)
        if not self.cutoff > 0:
            raise UsageError(f"cutoff {self.cutoff}: must be > 0")
        if self.pnr and self.pnr not in PNR_TARGETS:
            raise UsageError(f"pnr {self.pnr!r}: one of {', '.join(PNR_TARGETS)}, or '' for none")

    def point_cutoff(self, point: list) -> float:
        return float(point[3]) if len(point) == 4 else self.cutoff

    def train_config(self, hidden: int, steps_: int, site: int) -> TrainConfig:
        """The float model of one point: trained on ``site``'s samples only."""
        return TrainConfig(hidden=hidden, steps=steps_, gate=False, epochs=self.epochs, batch=64, seed=self.seed,
                           sites=[site])


def lutnet_config(spec: str) -> LutNetConfig:
    """A sweep's LUT-net point ``LAYERS/FAN_IN/BITS`` (neurons per layer, fan-in: one or one per layer, activation
    bits; e.g. ``36-6-1/6/1`` or ``27-9-3-1/6-3-3-3/2``) as the LUT net's own config (which checks it)."""
    parts = str(spec).split("/")
    try:
        layers, fan_in, bits = ([int(v) for v in parts[0].split("-")], [int(v) for v in parts[1].split("-")],
                                int(parts[2]))
    except (ValueError, IndexError):
        raise UsageError(f"LUT-net point {spec!r}: LAYERS/FAN_IN/BITS, e.g. 36-6-1/6/1 or 27-9-3-1/6-3-3-3/2") \
            from None
    if len(parts) != 3:
        raise UsageError(f"LUT-net point {spec!r}: LAYERS/FAN_IN/BITS, e.g. 36-6-1/6/1 (three parts)")
    try:
        return LutNetConfig(layers=layers, fan_in=fan_in, bits=bits)
    except UsageError as e:
        raise UsageError(f"LUT-net point {spec!r}: {e}") from None


def site_accuracy(model, ds, rows, task: str) -> float:
    """Accuracy of ``model`` on dataset ``rows`` (one site's): its direction (branch) or delta class (load)."""
    import torch
    from ncf.model.train import GraphBatches, predict_gnn

    dev = torch.device("cpu")
    with torch.no_grad():
        p, cls = predict_gnn(model, ds, GraphBatches(ds, "fused", dev), rows, dev)
    return label_agreement(p > 0.5 if task == "branch" else cls, ds, rows, task)


def bundle(cache: StageCache, run: Path, train_dir: Path, test_dir: Path, site: int, train_index: int, bits: int,
           cfg: HwSweepConfig, rows_eval: np.ndarray) -> tuple[Path, dict]:
    """QAT at ``bits`` of the run's model on the site's training samples, its accuracy on ``rows_eval``,
    and the site's bundle (``quant.quantize.ladder``); returns the bundle's QONNX path and the figures.
    ``site`` is the held-out dataset's index, ``train_index`` the training dataset's (``training_site``)."""
    from ncf.model.train import load_model, split_rows
    from ncf.quant.qat import storage
    from ncf.quant.quantize import ladder

    from .bits import BitsConfig, quantized

    def make(d):
        train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
        model, tcfg = load_model(run)
        q, qcfg, _ = quantized(model, tcfg.model, train_ds, bits, BitsConfig(steps=cfg.qat_steps, seed=cfg.seed),
                               rows=split_rows(train_ds, [train_index])[0])
        lad = ladder(q, qcfg, test_ds, site, d / f"site{site}_{bits}bit.onnx", cfg.max_rows)
        return {"acc": site_accuracy(q, test_ds, rows_eval, test_ds.task(site)),
                "weight_storage_bits": storage(q, bits, qcfg.bias_bits),
                "ladder_exact": lad["fake_quant==intref"] == lad["samples"] == lad["intref==qonnx"]}
    key = {"run": steps.entry_key(run), "train": steps.entry_key(train_dir), "test": steps.entry_key(test_dir),
           "site": site, "bits": bits, "qat_steps": cfg.qat_steps, "seed": cfg.seed, "rows": cfg.max_rows}
    e = cache.run("bundle", key, make, code=("ncf.studies.bits", "ncf.model.train", "ncf.quant.quantize",
                                             "ncf.studies.hw_sweep", "ncf.studies.site_eval"),
                  label=f"site{site}-b{bits}")
    return e.path / f"site{site}_{bits}bit.onnx", e.result


def hw_point(cache: StageCache, cfg: HwSweepConfig, train_dir: Path, test_dir: Path, site: int, train_index: int,
             rows_eval, ref: float, point: list) -> dict:
    """One point [H, T, bits(, cutoff)] of the sweep: train, quantize, RTL, (synthesis, place and route); its row."""
    h, t, b = (int(v) for v in point[:3])
    cutoff = cfg.point_cutoff(point)
    test_ds = Dataset(test_dir)
    run = steps.train(cache, cfg.train_config(h, t, train_index), train_dir, label=f"hw-site{site}-h{h}-t{t}",
                      progress=False)
    onnx, fig = bundle(cache, run, train_dir, test_dir, site, train_index, b, cfg, rows_eval)
    rtl = steps.rtl(cache, onnx, cutoff, check_samples=cfg.max_rows)
    m = steps.manifest(rtl)
    acc_key, ref_key, _ = ACCURACY[test_ds.task(site)]
    row = {"model": f"GNN H{h}T{t}/{b}b" + (f" c{cutoff:g}" if cutoff != 2.0 else ""), "hidden": h, "steps": t,
           "bits": b, "cutoff": cutoff, "site_pc": f"{int(test_ds.site_pc[site]):#x}",
           acc_key: fig["acc"], ref_key: ref, "weight_storage_bits": fig["weight_storage_bits"],
           "da4ml_cost": m["da4ml"]["cost"], "latency_cycles": m["latency"]["top_cycles"],
           "input_bits": m["parameters"]["IN_W"], "ladder_exact": fig["ladder_exact"], "rtl": str(rtl)}
    return hw_figures(cache, cfg, rtl, row, test_ds.meta["config"]["lead"])


def lut_point(cache: StageCache, cfg: HwSweepConfig, train_dir: Path, test_dir: Path, site: int, tage: float,
              spec: str) -> dict:
    """One LUT-net point ``spec`` of the sweep (the same site and held-out samples as the GNN points): train,
    tabulate, RTL (``lutnet_site``), then synthesis and place and route as for a GNN point; its row."""
    from .lutnet import lutnet_site

    lcfg = lutnet_config(spec)
    key = {"train": steps.entry_key(train_dir), "test": steps.entry_key(test_dir), "site": site,
           "lutnet": lcfg.as_dict(), "rows": cfg.max_rows}

    def make(d):
        r = lutnet_site(train_dir, test_dir, d, lcfg, site=site, max_rows=cfg.max_rows, progress=False)
        return {k: v for k, v in r.items() if k not in ("text", "bundle", "rtl")}
    e = cache.run("lutnet", key, make, code=("ncf.studies.lutnet",), label=f"site{site}-lut-{spec.replace('/', '_')}")
    r, rtl = e.result, e.path / "rtl"
    if abs(r["tage_acc"] - tage) > 1e-12:
        raise RuntimeError(f"LUT-net point {spec}: scored on other samples than the sweep's GNN points")
    row = {"model": f"LUT {spec}", "hidden": None, "steps": None, "bits": lcfg.bits, "cutoff": None,
           "site_pc": r["site_pc"], "branch_acc": r["branch_acc"], "tage_acc": tage,
           "weight_storage_bits": r["table_bits"], "da4ml_cost": None, "latency_cycles": r["latency_cycles"],
           "input_bits": r["input_bits"], "ladder_exact": r["tables_equal_brevitas"] == r["heldout_samples"],
           "rtl": str(rtl)}
    return hw_figures(cache, cfg, rtl, row, Dataset(test_dir).meta["config"]["lead"])


def hw_figures(cache: StageCache, cfg: HwSweepConfig, rtl: Path, row: dict, lead: int) -> dict:
    """``row`` with the point's synthesis counts (yosys synth_xilinx) and, with ``cfg.pnr``, its Fmax, latency
    in ns and the largest host clock whose snapshot ``lead`` covers it."""
    from ncf.hw.synth import lead_budget

    if cfg.synth:
        s = steps.synth(cache, rtl, ("xilinx",))["targets"]["xilinx"]
        row.update({"LUT": s.get("counts", {}).get("LUT"), "FF": s.get("counts", {}).get("FF"),
                    "synth_status": s["status"]})
    if cfg.pnr:
        s = steps.synth(cache, rtl, (cfg.pnr,))["targets"][cfg.pnr]
        budget = lead_budget(row["latency_cycles"], s.get("fmax_mhz"), lead)
        row.update({"pnr_status": s["status"], "fmax_mhz": s.get("fmax_mhz"), "latency_ns": budget.get("latency_ns"),
                    "host_ghz_max": budget.get("host_ghz_max")})
    return row


def hw_sweep(train_dir, test_dir, out, cfg: HwSweepConfig | None = None, cache: StageCache | None = None,
             progress: bool = True) -> dict:
    """Rows (one per point, with the RTL directory of each) + the plot; written to ``out``/sweep.md/.json/.png."""
    cfg = cfg or HwSweepConfig()
    cache = cache or StageCache(Path(cfg.cache))
    train_dir, test_dir = Path(train_dir), Path(test_dir)
    out = check_output(out, directory=True)
    test_ds = Dataset(test_dir)
    if cfg.site is not None and not 0 <= cfg.site < len(test_ds.site_pc):
        raise UsageError(f"site {cfg.site}: {test_dir} has {len(test_ds.site_pc)} sites (0..{len(test_ds.site_pc) - 1})")
    site = hardest_site(test_ds, cfg.site)
    train_index = training_site(Dataset(train_dir), test_ds, site)
    task = test_ds.task(site)
    if task != "branch" and cfg.lutnets:
        raise UsageError(f"site {site} is a load: a LUT net predicts a branch (drop lutnets or pick a branch site)")
    rows_eval = site_rows(test_ds, site, cfg.max_rows)
    if not len(rows_eval):
        raise DataError(f"site {site} has no labelled samples in {test_dir}")
    ref = reference_accuracy(test_ds, rows_eval, task)
    engine = Engine(cfg.workers, cfg.ray_address)
    rows = engine.map(hw_point, [(cache, cfg, train_dir, test_dir, site, train_index, rows_eval, ref, point)
                                 for point in cfg.points], desc="hardware points")
    rows += engine.map(lut_point, [(cache, cfg, train_dir, test_dir, site, ref, spec) for spec in cfg.lutnets],
                       desc="LUT-net points")
    if progress:
        for row in rows:
            print({k: v for k, v in row.items() if k != "rtl"}, flush=True)
    text = save_table(out / "sweep", [{k: v for k, v in r.items() if k != "rtl"} for r in rows],
                      f"Hardware size against accuracy (one {task} site's held-out samples, against "
                      f"{ACCURACY[task][2]} on the same samples)",
                      extra={"config": {k: v for k, v in settings(cfg).items() if k != "cache"}, "site": site,
                             "task": task, "samples": len(rows_eval), "tage_sc_l_bits": TAGE_BITS})
    plot(rows, out / "sweep.png", ref, "LUT" if cfg.synth else "da4ml_cost", cfg.pnr, task)
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


def plot(rows: list[dict], path: Path, ref_acc: float, cost_key: str = "LUT", pnr: str = "", task: str = "branch") -> Path:
    """Accuracy against LUTs (with the Pareto front) and against weight storage; with ``pnr``, also against
    latency in ns after place and route (each point labelled with its Fmax and cycles); the reference
    (``ACCURACY[task]``) on the same samples as a line."""
    acc, _, ref_name = ACCURACY[task]
    ok = [r for r in rows if r.get(cost_key)]
    placed = [r for r in rows if r.get("latency_ns")]
    color = {True: "C4", False: "C0"}          # LUT-net points, GNN points
    fig, axes = figure(1, 3 if pnr else 2, figsize=(13.5 if pnr else 9, 3.6))
    a1, a2 = axes[:2]
    pts = [(r[cost_key], r[acc]) for r in ok]
    for r in ok:
        c = color[r["model"].startswith("LUT")]
        a1.scatter(r[cost_key], r[acc], color=c)
        a1.annotate(r["model"], (r[cost_key], r[acc]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        a2.scatter(r["weight_storage_bits"], r[acc], color=c)
    front = [ok[k] for k in pareto(pts)]
    a1.plot([r[cost_key] for r in front], [r[acc] for r in front], "o-", color="C2", ms=11, mfc="none",
            mew=2, label="Pareto front (no point is smaller and more accurate)")
    if pnr:
        a3 = axes[2]
        for r in placed:
            a3.scatter(r["latency_ns"], r[acc], color=color[r["model"].startswith("LUT")])
            a3.annotate(f"{r['model']}: {r['fmax_mhz']:.0f} MHz x {r['latency_cycles']}", (r["latency_ns"],
                        r[acc]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        a3.set_xlabel(f"latency (ns) after {pnr} place and route")
        if not placed:
            a3.text(0.5, 0.5, "no point placed", ha="center", transform=a3.transAxes)
    for ax in axes:
        ax.axhline(ref_acc, color="C3", ls="--", lw=1, label=f"{ref_name} on the same samples")
        ax.set_ylabel(f"{'branch' if task == 'branch' else 'delta-class'} accuracy (site, held-out)")
        ax.grid(alpha=0.3)
    a1.set_xlabel("Xilinx LUTs (yosys synth_xilinx)" if cost_key == "LUT" else "da4ml cost (LUT estimate)")
    a1.set_xscale("log")
    a2.axvline(TAGE_BITS, color="C3", lw=1, label="TAGE-SC-L storage (523,374 bits)")
    a2.set_xscale("log")
    a2.set_xlabel("storage (bits): weights + biases, or a LUT net's truth tables")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)

