"""`ncf quantize`: a trained GNN -> quantized models, the bit-width table, and per-site QONNX files
whose ladder (fake-quant == integer reference == QONNX execution) is checked on held-out samples.

    report = quantize_run("runs/bzip2/fused", "data/bzip2-0", "data/bzip2-1", "reports/quant/bzip2")

For every bit width: QAT fine-tune on the training input, accuracy of both heads on the held-out
input (``sweep.py``). At ``export_bits``: for each site of the held-out dataset, the flat one-site
form is exported to QONNX (``site<k>.onnx``) and its held-out samples run through all three
paths; the exact-match counts go into ``ladder.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ncf.io import write_json

from .export import export_compact, input_precision, run_qonnx
from .intref import extract_int_params, intref
from .qat import QuantConfig, quantize_compact
from .sweep import BITS, sweep


def ladder(qmodel, qcfg: QuantConfig, ds, site: int, path: Path, max_rows: int | None = None) -> dict:
    """Exact matches of the three paths on the held-out samples of ``site`` (at most ``max_rows``,
    evenly spaced in time)."""
    from ncf.model.gnn import flat_input
    from ncf.model.train import GraphBatches

    rows = np.flatnonzero(np.asarray(ds.arrays["site"]) == site)
    if max_rows and len(rows) > max_rows:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, max_rows).astype(np.int64))]
    static, dyn, adj, g = GraphBatches(ds, "fused", torch.device("cpu"))(rows, shared_site=True)
    qc = quantize_compact(qmodel, static[0], adj, qcfg)
    with torch.no_grad():
        xq = qc.q_in(flat_input(dyn, g)).value
        y_fq = qc(xq).double().numpy()
    p = extract_int_params(qc)
    x_int = np.round(xq.double().numpy() * 2.0 ** -p["q_in"]["e"]).astype(np.int64)
    y_int, e_out = intref(x_int, p)
    y_ref = y_int.astype(np.float64) * 2.0 ** e_out
    y_qonnx = np.asarray(run_qonnx(export_compact(qc, path), xq.numpy()), np.float64)
    same = lambda a, b: int(np.all(a == b, axis=1).sum())  # noqa: E731
    return {"site_pc": int(ds.site_pc[site]), "samples": len(rows), "outputs": int(y_fq.shape[1]),
            "fake_quant==intref": same(y_fq, y_ref), "fake_quant==qonnx": same(y_fq, y_qonnx),
            "intref==qonnx": same(y_ref, y_qonnx), "output_exponent": int(e_out),
            "hls4ml_input_precision": input_precision(p), "qonnx": str(path)}


def quantize_run(run_dir, train_dir, test_dir, out, bits=BITS, steps: int = 200, export_bits: int = 8,
                 max_rows: int | None = 30_000) -> dict:
    """``max_rows``: held-out samples (evenly spaced in time) scored per bit width and run through
    the ladder per site; None = all."""
    from ncf.model.dataset import Dataset
    from ncf.model.train import load_model

    out = Path(out)
    model, cfg = load_model(run_dir)
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    rows, models = sweep(model, train_ds, test_ds, out / "bits", sorted(set(bits) | {export_bits}), steps,
                         kind=cfg.model, max_rows=max_rows)
    qmodel, qcfg = models[export_bits]
    links = [ladder(qmodel, qcfg, test_ds, s, out / f"site{s}_{export_bits}bit.onnx", max_rows)
             for s in range(len(test_ds.site_pc))]
    write_json(out / "ladder.json", {"bits": export_bits, "run": str(run_dir), "test": str(test_dir), "sites": links})
    return {"rows": rows, "ladder": links}
