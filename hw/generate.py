"""QONNX site bundle -> HLS C++ project (hls4ml) + synthesizable Verilog (da4ml), from one IR.

    art = generate("reports/quant/bzip2/site0_4bit_clean.onnx", HwConfig(cutoff=2), "build/hw")
    art["manifest"]          # build/hw/rtl/manifest.json: interface, latency, widths, input hashes

``build_hls`` writes the hls4ml project (Vitis backend, io_parallel), runs its C simulation against
the integer reference and builds hls4ml's C testbench with plain g++. ``build_rtl`` converts the same
QONNX graph with the same hls4ml configuration, translates the model graph to da4ml (hw/rtl.py),
checks da4ml's own interpreter against the integer reference on the bundle's samples, writes the
pipelined core and the streaming top ``ncf_predictor`` (hw/verilog/ncf_predictor.v) and a manifest.
Both are plain functions of (bundle, HwConfig, directory) that return what they wrote.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ncf.io import DataError, UsageError, check_output, file_sha256, load_config, read_json, save_config, write_json
from ncf.quant.intref import input_value, intref_bits

TOP = "ncf_predictor"
WRAPPER = Path(__file__).parent / "verilog" / f"{TOP}.v"
LIVE_INPUT_BITS = "bit k: live feature live_inputs[k] of the flat input [dyn (N*Fd), g (G)]"


@dataclass
class HwConfig:
    cutoff: float = 2.0          # da4ml latency_cutoff: adder delays per pipeline stage (lower = more stages, faster clock)
    clock_ns: float = 5.0        # target clock period (200 MHz), for hls4ml and da4ml's timing model
    part: str = "xcvu13p-flga2577-2-e"   # Xilinx part of the HLS project (for the vendor tool)
    csim_samples: int = 10_000   # held-out samples the HLS C simulation is checked on
    check_samples: int = 20_000  # held-out samples da4ml's interpreter is checked on
    tb_rows: int = 100           # rows of hls4ml's C testbench data

    def __post_init__(self):
        for name in ("cutoff", "clock_ns", "csim_samples", "check_samples", "tb_rows"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} {getattr(self, name)}: must be > 0")

    def save(self, path) -> Path:
        return save_config(self, path)

    @classmethod
    def load(cls, path) -> HwConfig:
        return load_config(cls, path)


def _fresh_dir(path: Path, marker: str) -> Path:
    """An empty directory beside ``path``, renamed onto it when the build succeeds (see _commit).
    ``path`` is replaced, so it must be new, empty, or an earlier build (it holds ``marker``)."""
    check_output(path, directory=True)
    if not path.name or path.name == "..":
        raise UsageError(f"{path}: name the output directory (it is replaced by the build)")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise UsageError(f"{path}: not empty and not an earlier build (no {marker}); the build replaces its "
                         "output directory, so give a new or empty one")
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish_rtl(tmp: Path, out_dir: Path, manifest: dict, what: str, detail: str, progress: bool) -> dict:
    """The end of every ``ncf_predictor`` build: write the manifest, move the directory onto ``out_dir``
    (_commit), say what was written; returns the manifest."""
    write_json(tmp / "manifest.json", manifest)
    _commit(tmp, out_dir)
    if progress:
        print(f"{what} written to {out_dir}: latency {manifest['latency']['top_cycles']} cycles, II 1, {detail}",
              flush=True)
    return manifest


def _commit(tmp: Path, path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def build_hls(bundle: dict, cfg: HwConfig, out_dir, progress: bool = True) -> dict:
    """hls4ml project in ``out_dir`` + C simulation check + C testbench; returns (and writes
    ``hls.json``) the summary."""
    from . import hls

    out_dir = Path(out_dir)
    tmp = _fresh_dir(out_dir, "hls.json")
    t0 = time.monotonic()
    hm = hls.convert(bundle, tmp, part=cfg.part, clock_ns=cfg.clock_ns, tb_rows=cfg.tb_rows)
    if progress:
        print(f"hls4ml project written ({time.monotonic() - t0:.1f} s); C simulation on "
              f"{min(cfg.csim_samples, len(bundle['features'])):,} held-out samples ...", flush=True)
    t1 = time.monotonic()
    hm.compile()
    compile_s = time.monotonic() - t1
    check = hls.csim_check(hm, bundle, cfg.csim_samples)
    tb = hls.testbench(tmp, bundle)
    summary = {"project": str(out_dir), "top": hls.PROJECT, "backend": "Vitis", "io_type": "io_parallel",
               "part": cfg.part, "clock_ns": cfg.clock_ns, "compile_seconds": round(compile_s, 1),
               "csim": check, "c_testbench": tb,
               "vendor_synthesis": "not run: needs AMD Vitis HLS (vitis-run / build_prj.tcl), which is not "
                                   "installed here; the project is ready for it (cd into it and run "
                                   "`vitis-run --tcl build_prj.tcl` or hls4ml's `build()`)"}
    write_json(tmp / "hls.json", summary)
    _commit(tmp, out_dir)
    return summary


def lower_site(bundle: dict, cfg: HwConfig, core_dir: Path, name: str | None = None) -> dict:
    """One site bundle's hls4ml graph -> da4ml graph, checked against the integer reference on the bundle's
    samples (da4ml's interpreter, before any Verilog is written), then written as a pipelined core in
    ``core_dir`` (module ``<name>_wrapper``). Returns {core, n_logits, one, output_exponent, check}."""
    from . import hls, rtl

    ir = core_dir.with_name(f"{core_dir.name}_hls4ml_ir")
    hm = hls.convert(bundle, ir, part=cfg.part, clock_ns=cfg.clock_ns, tb_rows=1)
    one = float(input_value(bundle["params"], np.ones((1, 1), np.uint8))[0, 0])
    comb, io = rtl.trace(hm, bundle["live_inputs"], one)
    shutil.rmtree(ir)
    feats = bundle["features"][:cfg.check_samples]
    got = comb.predict(feats[:, bundle["live_inputs"]].astype(np.float64))
    y, e = intref_bits(bundle["params"], feats)
    want = np.column_stack([y[:, 0] > 0, y[:, 1:].argmax(1), y * 2.0 ** e])      # taken, delta class, logits
    exact = int(np.all(got == want, axis=1).sum())
    if exact != len(feats):
        raise RuntimeError(f"da4ml's trace of the hls4ml graph of site {bundle['site']} differs from intref (taken, "
                           f"delta class or logits) on {len(feats) - exact} of {len(feats)} samples: "
                           "not writing Verilog")
    core = rtl.write_core(comb, core_dir, cfg.cutoff, cfg.clock_ns, name or rtl.CORE)
    return {"core": core, "n_logits": io["n_logits"], "one": one, "output_exponent": int(e),
            "check": {"samples": len(feats), "exact": exact}}


def bundle_inputs(bundle: dict, keys=("onnx", "intref", "samples")) -> dict:
    """The files a build started from, with their hashes (the manifest's ``inputs``)."""
    files = bundle["paths"]
    return {k: {"file": str(Path(files[k]).resolve()), "sha256": file_sha256(files[k])} for k in keys}


def bundle_site(bundle: dict) -> dict:
    return {**{k: bundle[k] for k in ("site", "site_pc", "task")}, "dataset": str(Path(bundle["dataset"]).resolve())}


def class_width(n_logits: int) -> int:
    """Bits of the delta class index (1 when there are no delta classes: a branch-only block)."""
    return max(1, int(np.ceil(np.log2(max(n_logits - 1, 1)))))


def rtl_manifest(params: dict, input_bits: str, sources: list[str], memfiles: list[str] = (), **fields) -> dict:
    """The manifest of an ``ncf_predictor`` build (kind ncf-rtl): the top's parameters, its latency (the
    core's CORE_LAT + the FIFO cycle), interface and sources (the top first), plus the build's own ``fields``."""
    return {"format_version": 1, "kind": "ncf-rtl", "top": TOP, **fields, "parameters": params,
            "latency": {"core_cycles": params["CORE_LAT"], "top_cycles": params["CORE_LAT"] + 1,
                        "initiation_interval": 1},
            "interface": interface(params, input_bits), "sources": [f"{TOP}.v", *sources], "memfiles": list(memfiles)}


def build_rtl(bundle: dict, cfg: HwConfig, out_dir, progress: bool = True) -> dict:
    """Pipelined core + ``ncf_predictor`` top in ``out_dir``; returns the manifest (also written as
    ``manifest.json``)."""
    out_dir = Path(out_dir)
    tmp = _fresh_dir(out_dir, "manifest.json")
    t0 = time.monotonic()
    low = lower_site(bundle, cfg, tmp / "core")
    core, n_logits = low["core"], low["n_logits"]
    shutil.copy(WRAPPER, tmp / f"{TOP}.v")
    class_w = class_width(n_logits)
    params = {"IN_W": len(bundle["live_inputs"]), "ELEM_W": core["out"]["width"], "OUT_F": core["out"]["f"],
              "N_LOGITS": n_logits, "CLASS_W": class_w, "CORE_LAT": core["core_latency"]}
    manifest = rtl_manifest(
        params, LIVE_INPUT_BITS, [f"core/{s}" for s in core["sources"]], [f"core/{s}" for s in core["memfiles"]],
        config=asdict(cfg), inputs=bundle_inputs(bundle), site=bundle_site(bundle), reference="intref",
        bits={"weights": bundle["quant"]["weight_bits"], "activations": bundle["quant"]["act_bits"],
              "input": "1 bit per live feature", "logit": core["out"]},
        live_inputs=bundle["live_inputs"].tolist(), one=low["one"], output_exponent=low["output_exponent"],
        da4ml={"cost": core["da4ml_cost"], "latency_cutoff": cfg.cutoff, "interpreter_check": low["check"]},
        seconds=round(time.monotonic() - t0, 1))
    return finish_rtl(tmp, out_dir, manifest, "RTL",
                      f"{params['IN_W']} input bits, da4ml cost {core['da4ml_cost']:,.0f}", progress)


def interface(params: dict, input_bits: str) -> dict:
    """The manifest's description of the ``ncf_predictor`` ports."""
    return {
        "clock": "clk (rising edge)", "reset": "rst: synchronous, active high, drops everything in flight",
        "input": {"handshake": "in_valid / in_ready", "data": f"in_data[{params['IN_W'] - 1}:0]",
                  "bits": input_bits},
        "output": {"handshake": "out_valid / out_ready", "out_taken": "branch logit > 0",
                   "out_class": f"delta class, {params['CLASS_W']} bits (first largest delta logit)",
                   "out_logits": f"{params['N_LOGITS']} x {params['ELEM_W']}-bit signed, value = code * "
                                 f"2^-{params['OUT_F']} (logit 0 = branch, 1.. = delta classes)"}}


def generate(qonnx, cfg: HwConfig, out_dir, hls: bool = True, rtl: bool = True, progress: bool = True) -> dict:
    """Both outputs of one site bundle: ``out_dir/hls`` and ``out_dir/rtl``. Returns
    {"hls": summary, "rtl": manifest, "paths": {...}}."""
    from ncf.quant.quantize import read_bundle

    bundle = read_bundle(qonnx)
    out_dir = Path(out_dir)
    art = {"paths": {}}
    if hls:
        art["hls"] = build_hls(bundle, cfg, out_dir / "hls", progress)
        art["paths"]["hls"] = out_dir / "hls"
    if rtl:
        art["rtl"] = build_rtl(bundle, cfg, out_dir / "rtl", progress)
        art["paths"]["rtl"] = out_dir / "rtl"
        art["paths"]["manifest"] = out_dir / "rtl" / "manifest.json"
    return art


def load_manifest(rtl_dir) -> dict:
    """The manifest of a directory written by ``build_rtl`` or ``hw.multisite.build_multisite``."""
    path = Path(rtl_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not an RTL directory written by `ncf rtl`")
    m = read_json(path)
    if m.get("kind") != "ncf-rtl" or m.get("format_version") != 1:
        raise DataError(f"{path}: not a version-1 ncf RTL manifest")
    return m
