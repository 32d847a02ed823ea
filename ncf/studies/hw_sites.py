"""One folded block per site against one multi-site block for the same sites: cells, Fmax and latency.

    r = hw_sites(["reports/quant/bzip2/site0_4bit.onnx", "reports/quant/bzip2/site1_4bit.onnx"],
                 "reports/hw/sites", HwSitesConfig())
    print(r["text"])           # also reports/hw/sites/sites.md and .json

For the site bundles given (site id k = the k-th bundle): each site's folded block (``hw.generate.build_rtl``,
one ``ncf_predictor`` per site) and the two multi-site blocks, folded-mux (``hw.multisite.build_multisite``)
and shared-ROM (``hw.shared.build_shared``), every one synthesized and placed and routed (``hw.synth``), and
both multi-site blocks verified in a real simulator on every site's held-out samples, interleaved
(``rtl_tests.sim.verify``: 0 mismatches expected). Per target,
the folded design's row adds up its blocks' cells and takes the lowest Fmax and the largest latency: the
cost of serving the same sites with one block each. FF leaves out the P&R harness's input shift register
(``hw.synth``'s FF_without_harness). ns = cycles / Fmax. accuracy: the hardware's branch decisions against the
outcomes, beside TAGE-SC-L's, on the same held-out samples (every design computes the integer reference).
RTL, synthesis and verification go through the stage cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ncf.io import UsageError, check_output, save_table

from . import steps
from .cache import StageCache

COUNTS = ("LUT", "FF", "CARRY", "BRAM", "DSP")
MULTI = {"folded-mux": "folded", "shared-ROM": "shared"}    # the multi-site designs: table name -> steps design


@dataclass
class HwSitesConfig:
    targets: list = field(default_factory=lambda: ["ecp5", "ice40"])   # of hw.synth.TARGETS
    cutoff: float = 2.0                # da4ml latency_cutoff of every core
    freq_mhz: float = 200              # nextpnr clock target
    timeout_s: float | None = 1800     # per design and target
    simulator: str = "verilator"       # verification of the multi-site block ("" = none)
    verify_samples: int | None = None  # held-out samples in all (shared evenly by the sites); None = every one
    cache: str = "work/cache"

    def __post_init__(self):
        from ncf.hw.synth import TARGETS
        from ncf.rtl_tests.sim import SIMULATORS

        if not self.targets or set(self.targets) - set(TARGETS):
            raise UsageError(f"targets {self.targets}: give some of {', '.join(TARGETS)}")
        if self.simulator and self.simulator not in SIMULATORS:
            raise UsageError(f"simulator {self.simulator!r}: one of {', '.join(SIMULATORS)}, or '' for none")
        if not self.cutoff > 0 or not self.freq_mhz > 0 or (self.timeout_s is not None and not self.timeout_s > 0):
            raise UsageError(f"cutoff {self.cutoff}, freq_mhz {self.freq_mhz}, timeout_s {self.timeout_s}: "
                             "each must be > 0")
        if self.verify_samples is not None and self.verify_samples < 1:
            raise UsageError(f"verify_samples {self.verify_samples}: must be >= 1")


def configuration(onnxs: list) -> str:
    """``H2 T1 3b x 3 sites`` from the bundles' sidecars (their model and bit widths)."""
    from ncf.io import read_json
    from ncf.quant.quantize import bundle_paths

    metas = [read_json(bundle_paths(o)["sidecar"]) for o in onnxs]
    kinds = sorted({f"H{m['gnn']['hidden']} T{m['gnn']['steps']} {m['quant']['weight_bits']}b" for m in metas})
    return f"{' / '.join(kinds)} x {len(onnxs)} sites"


def count(res: dict, key: str) -> int:
    """A cell count of one synthesized block; flip-flops without the P&R harness's input shift register."""
    c = res["counts"]
    return (c.get("FF_without_harness", c["FF"]) if key == "FF" else c.get(key)) or 0


def design_row(target: str, summaries: list[dict], latency: int) -> dict:
    """One design on one target: cells added up over its blocks, the lowest Fmax, ``latency`` cycles."""
    from ncf.hw.synth import latency_ns

    res = [s["targets"][target] for s in summaries]
    status = "ok" if all(r["status"] == "ok" for r in res) else "; ".join(sorted({r["status"] for r in res}))
    row = {k: sum(count(r, k) for r in res) if all("counts" in r for r in res) else None for k in COUNTS}
    fmax = [r.get("fmax_mhz") for r in res]
    row["Fmax MHz"] = min(fmax) if all(f is not None for f in fmax) and target != "xilinx" else None
    row["cycles"] = latency
    row["ns"] = latency_ns(latency, row["Fmax MHz"])
    return {"status": status, **row}


def accuracy(onnxs: list) -> dict:
    """Branch accuracy of the hardware (the integer reference's decision: every design is bit-exact with it)
    and of TAGE-SC-L, on the sites' held-out samples pooled."""
    from ncf.model.dataset import Dataset
    from ncf.quant.intref import intref_bits
    from ncf.quant.quantize import read_bundle

    from .site_eval import outcome_agreement, tage_accuracy

    hw = tage = n = 0
    for o in onnxs:
        b = read_bundle(o)
        ds, rows = Dataset(b["dataset"]), b["rows"]
        y, _ = intref_bits(b["params"], b["features"])
        hw += outcome_agreement(y[:, 0] > 0, ds, rows) * len(rows)
        tage += tage_accuracy(ds, rows) * len(rows)
        n += len(rows)
    return {"accuracy": round(hw / n, 4), "TAGE-SC-L": round(tage / n, 4), "samples": n}


def hw_sites(onnxs: list, out, cfg: HwSitesConfig | None = None, cache: StageCache | None = None,
             progress: bool = True) -> dict:
    """The comparison table of the sites ``onnxs`` (written to ``out``/sites.md and .json); returns
    {rows, text, verify: {design: summary}, rtl: {folded: [...], multisite, shared}}."""
    cfg = cfg or HwSitesConfig()
    cache = cache or StageCache(Path(cfg.cache))
    onnxs = [Path(o) for o in onnxs]
    if len(onnxs) < 2:
        raise UsageError(f"give at least 2 site bundles (--qonnx), not {len(onnxs)}")
    out = check_output(out, directory=True)
    say = print if progress else (lambda *a, **k: None)
    say(f"RTL of {len(onnxs)} folded blocks, the multi-site folded-mux block and the shared-ROM block ...", flush=True)
    folded = [steps.rtl(cache, o, cfg.cutoff) for o in onnxs]
    blocks = {name: steps.multisite_rtl(cache, onnxs, cfg.cutoff, design=d) for name, d in MULTI.items()}
    ver = {}
    if cfg.simulator:
        for name, d in blocks.items():
            say(f"verifying the {name} block ({cfg.simulator}) ...", flush=True)
            ver[name] = steps.verify(cache, d, cfg.simulator, n_stream=cfg.verify_samples, close_loop=False)
    syn = {}
    for name, d in [(f"site {k}", r) for k, r in enumerate(folded)] + list(blocks.items()):
        say(f"synthesis of {name}: {', '.join(cfg.targets)} ...", flush=True)
        syn[name] = steps.synth(cache, d, tuple(cfg.targets), cfg.timeout_s, cfg.freq_mhz)
    conf = configuration(onnxs)
    acc = accuracy(onnxs)
    lat_folded = max(steps.manifest(r)["latency"]["top_cycles"] for r in folded)
    rows = []
    for target in cfg.targets:
        rows.append({"configuration": conf, "design": f"folded per site ({len(onnxs)} blocks)", "target": target,
                     **design_row(target, [syn[f"site {k}"] for k in range(len(onnxs))], lat_folded)})
        for name, d in blocks.items():
            rows.append({"configuration": conf, "design": f"multi-site {name} (1 block)", "target": target,
                         **design_row(target, [syn[name]], steps.manifest(d)["latency"]["top_cycles"])})
    for r in rows:
        v = next((ver[name] for name in ver if r["design"].startswith(f"multi-site {name} ")), None)
        r["verified"] = f"{v['mismatches']} mismatches / {v['predictions_compared']:,}" if v else None
        r.update({k: acc[k] for k in ("accuracy", "TAGE-SC-L")})
    m = steps.manifest(blocks["folded-mux"])
    text = save_table(out / "sites", rows, "One folded block per site against one multi-site block, same sites: "
                      "folded-mux (the sites' folded cores behind a site-id multiplexer) and shared-ROM (one datapath, "
                      f"per-site weights in ROM) (yosys + nextpnr, clock target {cfg.freq_mhz:g} MHz; folded: cells "
                      "added up over the blocks, lowest Fmax; FF without the P&R input shift register; "
                      "ns = cycles / Fmax; accuracy: the hardware's branch decisions against the outcome, and "
                      f"TAGE-SC-L's, on the same {acc['samples']:,} held-out samples of the sites)",
                      extra={"sites": m["sites"], "verify": ver or None,
                             "rtl": {"folded": [str(r) for r in folded], **{k: str(d) for k, d in blocks.items()}},
                             "config": {k: v for k, v in vars(cfg).items() if k != "cache"}})
    return {"rows": rows, "text": text, "verify": ver, "rtl": {"folded": folded, **blocks}}
