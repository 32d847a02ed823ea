"""The HLS C++ project of a quantized site model, written by hls4ml from its QONNX graph.

    hm = convert(bundle, "build/hls")        # hls4ml ONNX frontend, Vitis backend, io_parallel
    hm.compile()
    r = csim_check(hm, bundle, n=10_000)     # predict(): C simulation == intref, exactly
    tb = testbench("build/hls", bundle)      # hls4ml's own C testbench, built and run with plain g++

hls4ml takes the layer precisions from the QONNX quantizers (``config_from_onnx_model`` with
``granularity='name'``), except the input layer, which must be set to the input quantizer's type
(``hls4ml_input_precision`` in the bundle's sidecar; left at hls4ml's default the C simulation is
silently wrong, see shared/TOOLCHAIN.md). The vendor synthesis step (``build()``) needs Vitis HLS,
which this machine does not have; the project is written ready for it (``vitis-run`` / ``build_prj.tcl``).
"""
from __future__ import annotations

import contextlib
import io
import resource
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from ncf.quant.intref import input_value, intref_bits

PROJECT = "ncf_site"          # hls4ml project name (top function and file names)
CSIM_STACK = 1 << 30          # io_parallel keeps whole layers on the stack: run predict() on a big one


def hls_config(model, bundle: dict) -> dict:
    import hls4ml

    cfg = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend="Vitis")
    first = next(iter(cfg["LayerName"]))
    cfg["LayerName"][first]["Precision"]["result"] = bundle["hls4ml_input_precision"]
    return cfg


def convert(bundle: dict, out_dir, part: str = "xcvu13p-flga2577-2-e", clock_ns: float = 5.0,
            tb_rows: int = 100):
    """hls4ml model of the bundle's QONNX graph, project written to ``out_dir`` (with C testbench
    data: the first ``tb_rows`` held-out samples and their intref outputs)."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    out_dir = Path(out_dir).resolve()   # hls4ml compiles in it
    tb = out_dir / "tb_source"          # hls4ml re-reads these whenever it re-writes the project
    tb.mkdir(parents=True, exist_ok=True)
    x = input_value(bundle["params"], bundle["features"][:tb_rows])
    y, e = intref_bits(bundle["params"], bundle["features"][:tb_rows])
    np.save(tb / "input.npy", x)
    np.save(tb / "output.npy", y.astype(np.float64) * 2.0 ** e)
    model = ModelWrapper(str(bundle["paths"]["onnx"]))
    with contextlib.redirect_stdout(io.StringIO()) as log:      # hls4ml prints every layer
        hm = hls4ml.converters.convert_from_onnx_model(
            model, output_dir=str(out_dir), project_name=PROJECT, backend="Vitis", io_type="io_parallel",
            part=part, clock_period=clock_ns, hls_config=hls_config(model, bundle),
            input_data_tb=str(tb / "input.npy"), output_data_tb=str(tb / "output.npy"))
        hm.write()
    (out_dir / "hls4ml_convert.log").write_text(log.getvalue())
    return hm


def _big_stack(fn, *args):
    """Run fn(*args) in a thread with a CSIM_STACK-byte stack; return its result or raise its error."""
    box = {}

    def run():
        try:
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    old = threading.stack_size(CSIM_STACK)
    try:
        t = threading.Thread(target=run, name="hls4ml-csim")
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    if "err" in box:
        raise box["err"]
    return box["out"]


def csim(hm, x: np.ndarray, batch: int = 2000) -> np.ndarray:
    """hls4ml C simulation (``predict()`` of a compiled model) on x [S, n_in] -> float64 [S, n_out]."""
    outs = [_big_stack(hm.predict, np.ascontiguousarray(x[s:s + batch], np.float64))
            for s in range(0, len(x), batch)]
    return np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in outs])


def csim_check(hm, bundle: dict, n: int | None = 10_000) -> dict:
    """C simulation of the compiled model ``hm`` against intref on the bundle's first ``n`` held-out
    samples (all if None)."""
    feats = bundle["features"][:n]
    t0 = time.monotonic()
    y_c = csim(hm, input_value(bundle["params"], feats))
    secs = time.monotonic() - t0
    y, e = intref_bits(bundle["params"], feats)
    y_ref = y.astype(np.float64) * 2.0 ** e
    same = np.all(y_c == y_ref, axis=1)
    bad = np.flatnonzero(~same)
    return {"samples": len(feats), "outputs": int(y.shape[1]), "exact": int(same.sum()),
            "mismatches": len(bad), "first_mismatch": None if not len(bad) else {
                "sample": int(bad[0]), "csim": y_c[bad[0]].tolist(), "intref": y_ref[bad[0]].tolist()},
            "seconds": round(secs, 2), "samples_per_s": round(len(feats) / max(secs, 1e-9), 1)}


def testbench(project_dir, bundle: dict, cxx: str = "g++") -> dict:
    """Build hls4ml's C testbench (``<project>_test.cpp``) with plain g++ and run it on the
    testbench data written by ``convert``; compare its printed outputs with intref (the log prints
    6 significant digits, so values are rounded to the output LSB before comparing)."""
    d = Path(project_dir).resolve()
    exe = d / "tb_ncf"
    cmd = [cxx, "-std=c++14", "-O1", "-I", "firmware", "-I", "firmware/ap_types",
           '-DWEIGHTS_DIR="firmware/weights"', "-o", exe.name, f"{PROJECT}_test.cpp", f"firmware/{PROJECT}.cpp"]
    b = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    if b.returncode:
        raise RuntimeError(f"the hls4ml C testbench does not build:\n{' '.join(cmd)}\n{b.stderr[-3000:]}")
    r = subprocess.run([f"./{exe.name}"], cwd=d, capture_output=True, text=True,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_STACK, (CSIM_STACK, CSIM_STACK)))
    if r.returncode:
        raise RuntimeError(f"the hls4ml C testbench failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    log = d / "tb_data" / "csim_results.log"
    got = np.array([[float(v) for v in line.split()] for line in log.read_text().splitlines() if line.strip()])
    n = len(got)
    y, e = intref_bits(bundle["params"], bundle["features"][:n])
    lsb = 2.0 ** e
    same = np.all(np.round(got / lsb) == y, axis=1)
    return {"command": " ".join(cmd), "rows": n, "exact": int(same.sum()), "mismatches": int((~same).sum())}
