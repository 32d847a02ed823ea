"""Site bundles: a quantized GNN's one-site form exported to QONNX, with the exactness ladder
(fake-quant == integer reference == QONNX execution) checked on the site's held-out samples.

    r = ladder(qmodel, qcfg, test_ds, site, "out/site3_4bit.onnx")    # writes the bundle, returns counts
    bundle = read_bundle("out/site3_4bit.onnx")                       # what ncf hls / ncf rtl start from

(``ncf quantize``, ncf/studies/bits.py, exports every site at one bit width this way.)

Each exported site is a bundle the hardware stage (``ncf hls`` / ``ncf rtl``) starts from:
    site<k>_<b>bit_clean.onnx     the cleaned QONNX graph hls4ml converts
    site<k>_<b>bit.json           sidecar: site, bit widths, hls4ml input precision, live inputs, files
    site<k>_<b>bit.intref.npz     the integer reference's parameters (quant/intref.py)
    site<k>_<b>bit.samples.npz    the held-out samples' input features (0/1, bit-packed) and rows
The model's inputs are 0/1 features (value encodings, front-end count bits, history bits), so the
hardware takes them as bits; ``live`` lists the inputs that can be nonzero (value bits of operand
nodes that carry a value, count bits of instruction nodes, and the graph-level bits of the site's task) and have a
nonzero weight: the others are constant 0 for this site.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ncf.io import DataError, read_json, write_json

from .export import export_compact, input_precision, run_qonnx
from .intref import extract_int_params, intref, save_int_params
from .qat import QuantConfig, quantize_compact


def ladder(qmodel, qcfg: QuantConfig, ds, site: int, path: Path, max_rows: int | None = None) -> dict:
    """Exact matches of the three paths on the held-out samples of ``site`` (at most ``max_rows``,
    evenly spaced in time)."""
    from ncf.model.gnn import flat_input
    from ncf.model.graph import dyn_inputs
    from ncf.model.train import GraphBatches, g_columns

    rows = np.flatnonzero(np.asarray(ds.arrays["site"]) == site)
    if max_rows:
        rows = spaced(rows, max_rows)
    _, dyn, g = GraphBatches(ds, "fused", torch.device("cpu"))(rows)
    qc = quantize_compact(qmodel, ds.static[site], ds.adj[site], qcfg)
    with torch.no_grad():
        xq = qc.q_in(flat_input(dyn, g)).value
        y_fq = qc(xq).double().numpy()
    p = extract_int_params(qc)
    x_int = np.round(xq.double().numpy() * 2.0 ** -p["q_in"]["e"]).astype(np.int64)
    y_int, e_out = intref(x_int, p)
    y_ref = y_int.astype(np.float64) * 2.0 ** e_out
    y_qonnx = np.asarray(run_qonnx(export_compact(qc, path), xq.numpy()), np.float64)
    same = lambda a, b: int(np.all(a == b, axis=1).sum())
    features = flat_input(dyn, g).numpy()
    task = ds.task(site)
    slots = len(ds.meta["sites"][site]["mem_pcs"])
    live = live_inputs(p, dyn_inputs(ds.dyn_slot[site], ds.node_pc[site]), g_columns(ds, task, slots), qmodel.cfg)
    write_bundle(path, p, features, rows, live, {
        "site": site, "site_pc": int(ds.site_pc[site]), "task": task,
        "dataset": str(ds.path), "quant": qcfg.as_dict(), "gnn": asdict(qmodel.cfg),
        "hls4ml_input_precision": input_precision(p), "output_exponent": int(e_out)})
    return {"site_pc": int(ds.site_pc[site]), "samples": len(rows), "outputs": int(y_fq.shape[1]),
            "fake_quant==intref": same(y_fq, y_ref), "fake_quant==qonnx": same(y_fq, y_qonnx),
            "intref==qonnx": same(y_ref, y_qonnx), "output_exponent": int(e_out),
            "hls4ml_input_precision": input_precision(p), "qonnx": str(path)}


def spaced(rows: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``rows``, evenly spaced (in time)."""
    return rows if len(rows) <= n else rows[np.unique(np.linspace(0, len(rows) - 1, n).astype(np.int64))]


def live_inputs(p: dict, dyn_can: np.ndarray, g_can: np.ndarray, gcfg) -> np.ndarray:
    """Indices of the flat inputs [dyn (N*Fd), g (G)] that can change this site's outputs: the
    dynamic features a node can have (``dyn_can`` [N, Fd], model.graph.dyn_inputs), the graph-level
    bits the site's task can set (``g_can`` [G], model.train.g_columns), and only where some input weight
    (the input layer or the readout's direct path) is nonzero."""
    n_dyn = gcfg.n_nodes * gcfg.f_dyn
    can = np.concatenate([np.asarray(dyn_can, bool).reshape(n_dyn), np.asarray(g_can, bool)])
    used = np.zeros(n_dyn + gcfg.g_dim, bool)
    for name in ("inp", "read_x"):
        for _, cols, wb in p[name]["w"]["blocks"]:
            used[cols[np.any(wb != 0, axis=0)]] = True
    return np.flatnonzero(can & used)


def bundle_paths(onnx_path) -> dict:
    """The files of a site bundle, from its QONNX path (``site3_8bit.onnx`` or ``..._clean.onnx``)."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem.removesuffix("_clean")
    d = onnx_path.parent
    return {"onnx": d / f"{stem}_clean.onnx", "sidecar": d / f"{stem}.json",
            "intref": d / f"{stem}.intref.npz", "samples": d / f"{stem}.samples.npz"}


def write_bundle(onnx_path, p: dict, features: np.ndarray, rows: np.ndarray, live: np.ndarray, meta: dict) -> dict:
    """Write the intref parameters, the samples and the sidecar beside an exported QONNX file."""
    paths = bundle_paths(onnx_path)
    if not np.all((features == 0) | (features == 1)):
        raise ValueError("the hardware bundle expects 0/1 input features")
    save_int_params(p, paths["intref"])
    write_samples(paths["samples"], features, rows)
    write_json(paths["sidecar"], {"format_version": 1, "kind": "ncf-site-bundle", **meta,
                                  "n_inputs": int(features.shape[1]), "live_inputs": live, "samples": len(rows),
                                  "files": {k: v.name for k, v in paths.items()}})
    return paths


def write_samples(path, features: np.ndarray, rows: np.ndarray) -> None:
    """A bundle's samples file: 0/1 features [S, n_inputs], bit-packed, and their dataset rows."""
    from ncf.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, bits=np.packbits(features.astype(np.uint8), axis=1), n_inputs=features.shape[1],
                                rows=np.asarray(rows, np.int64))


def read_samples(path) -> tuple[np.ndarray, np.ndarray]:
    """A bundle's samples file: (0/1 features [S, n_inputs] uint8, dataset rows)."""
    with np.load(path) as z:
        return np.unpackbits(z["bits"], axis=1, count=int(z["n_inputs"])), z["rows"]


def read_bundle(onnx_path) -> dict:
    """The sidecar of a site bundle, with absolute file paths, the intref parameters, the samples'
    0/1 features [S, n_inputs] (uint8) and live inputs. Raises a clear error for missing files."""
    from .intref import load_int_params

    paths = bundle_paths(onnx_path)
    for k, v in paths.items():
        if not v.is_file():
            raise FileNotFoundError(f"{v} is missing: the {k} file of the site bundle written by `ncf quantize`")
    meta = read_json(paths["sidecar"])
    if meta.get("kind") != "ncf-site-bundle" or meta.get("format_version") != 1:
        raise DataError(f"{paths['sidecar']}: not a version-1 ncf site bundle")
    features, rows = read_samples(paths["samples"])
    return {**meta, "paths": paths, "params": load_int_params(paths["intref"]), "features": features,
            "rows": rows, "live_inputs": np.asarray(meta["live_inputs"], np.int64)}
