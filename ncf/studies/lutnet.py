"""One branch site's LUT net (quant/lutnet.py): trained on the site's training rows, checked against its truth
tables, scored against TAGE-SC-L on the same held-out samples, and lowered to RTL (hw/lutnet.py): `ncf lutnet`.

    r = lutnet_site("work/data/train", "work/data/test", "reports/lutnet", LutNetConfig(), site=1)
    r["branch_acc"], r["tage_acc"], r["rtl"]     # held-out accuracy, TAGE-SC-L's on the same samples, the RTL

The site and its held-out samples are the ones `ncf hw-sweep` scores (the branch site TAGE-SC-L mispredicts
most on the held-out input, or ``site``; at most ``max_rows`` of its samples, evenly spaced), so the rows sit
beside the sweep's GNN points. Training (the input ranking, the weights, BatchNorm) reads only the site's
training rows of the training input (``split_rows``: not its validation tail, never the held-out input).
Writes ``out/site<k>_lutnet.npz`` (+ ``.samples.npz``, ``.json``: the bundle), ``out/rtl/`` and
``out/lutnet.md/.json``; then ``ncf verify out/rtl`` and ``ncf synth out/rtl``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ncf.io import UsageError, check_output, save_table
from ncf.model.dataset import Dataset
from ncf.quant.lutnet import LutNetConfig

from .site_eval import hardest_site, site_rows, tage_accuracy, training_site


def site_split(train_ds, test_ds, site: int | None, cfg: LutNetConfig, max_rows: int) -> tuple[int, int, np.ndarray,
                                                                                                np.ndarray]:
    """(site: the held-out dataset's index, the training dataset's index of the same pc, its training rows of the
    training input, its held-out rows of the held-out input)."""
    from ncf.model.train import split_rows
    from ncf.quant.quantize import spaced

    if site is not None and not 0 <= site < len(test_ds.site_pc):
        raise UsageError(f"site {site}: the dataset has {len(test_ds.site_pc)} sites (0..{len(test_ds.site_pc) - 1})")
    site = hardest_site(test_ds, site)
    if test_ds.task(site) != "branch":
        raise UsageError(f"site {site} is a load: a LUT net predicts a branch (pick a branch site)")
    train_index = training_site(train_ds, test_ds, site)
    return (site, train_index, spaced(split_rows(train_ds, [train_index])[0], cfg.train_rows),
            site_rows(test_ds, site, max_rows))


def train_site(train_ds, rows: np.ndarray, cfg: LutNetConfig):
    """The LUT net trained on dataset ``rows`` (0/1 features, taken labels) and its truth tables."""
    from ncf.quant.lutnet import enumerate_tables, site_features, train_lutnet

    net = train_lutnet(site_features(train_ds, rows), np.asarray(train_ds.arrays["taken"][rows]), cfg)
    return net, enumerate_tables(net)


def lutnet_site(train_dir, test_dir, out, cfg: LutNetConfig | None = None, site: int | None = None,
                max_rows: int = 4000, progress: bool = True) -> dict:
    """Train, tabulate, score, write the bundle and the RTL; returns the summary row (+ paths)."""
    from ncf.hw.lutnet import build_lutnet_rtl
    from ncf.model.train import split_rows
    from ncf.quant.lutnet import lutnet_logits, predict_codes, read_lutnet_bundle, site_features, write_lutnet_bundle

    cfg = cfg or LutNetConfig()
    if max_rows < 1:
        raise UsageError(f"max_rows {max_rows}: must be >= 1")
    out = check_output(out, directory=True)
    train_ds, test_ds = Dataset(train_dir), Dataset(test_dir)
    site, train_index, rows, rows_eval = site_split(train_ds, test_ds, site, cfg, max_rows)
    net, tables = train_site(train_ds, rows, cfg)
    x = site_features(test_ds, rows_eval)
    taken = np.asarray(test_ds.arrays["taken"][rows_eval])
    code = lutnet_logits(tables, x)
    val = split_rows(train_ds, [train_index])[1]
    val_acc = float(((lutnet_logits(tables, site_features(train_ds, val)) > 0) == np.asarray(
        train_ds.arrays["taken"][val])).mean()) if len(val) else None
    layers = tables["layers"]
    row = {"site": site, "site_pc": f"{int(test_ds.site_pc[site]):#x}", "layers": cfg.layers,
           "fan_in": [int(t["idx"].shape[1]) for t in layers], "bits": cfg.bits, "out_bits": cfg.out_bits,
           "input_bits": len(tables["inputs"]), "train_samples": len(rows), "heldout_samples": len(rows_eval),
           "branch_acc": float(((code > 0) == taken).mean()), "tage_acc": tage_accuracy(test_ds, rows_eval),
           "val_acc": val_acc, "tables_equal_brevitas": int((predict_codes(net, x) == code).sum()),
           "table_bits": int(sum(t["table"].size * t["ob"] for t in layers))}
    path = out / f"site{site}_lutnet.npz"
    write_lutnet_bundle(path, tables, x, rows_eval, {
        "site": site, "site_pc": int(test_ds.site_pc[site]), "task": "branch", "dataset": str(Path(test_dir).resolve()),
        "train_dataset": str(Path(train_dir).resolve()), "lutnet": cfg.as_dict(), "figures": row})
    m = build_lutnet_rtl(read_lutnet_bundle(path), out / "rtl", progress)
    row["latency_cycles"] = m["latency"]["top_cycles"]
    text = save_table(out / "lutnet", [row], "LUT net of one branch site: held-out accuracy against TAGE-SC-L on the "
                      "same samples; tables_equal_brevitas: held-out samples where the truth tables give the trained "
                      "Brevitas model's logit", extra={"config": cfg.as_dict(), "max_rows": max_rows})
    return {**row, "text": text, "bundle": path, "rtl": out / "rtl"}
