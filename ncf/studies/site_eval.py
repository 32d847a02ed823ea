"""One branch site's held-out samples, and how a predictor scores on them: shared by the hardware studies
(``hw_sweep``: GNN and LUT-net points; ``lutnet``; ``hw_sites``) so that every row of theirs is scored on the
same samples against TAGE-SC-L on the same samples.

    site = hardest_site(test_ds)                  # the site TAGE-SC-L mispredicts most on the held-out input
    rows = site_rows(test_ds, site, 4000)         # at most 4,000 of its rows, evenly spaced in time
    tage_accuracy(test_ds, rows), outcome_agreement(pred, test_ds, rows)
"""
from __future__ import annotations

import numpy as np


def hardest_site(test_ds, site: int | None = None) -> int:
    """The branch site where TAGE-SC-L mispredicts most often on the held-out input (or ``site``)."""
    if site is not None:
        return site
    a = test_ds.arrays
    sites, taken = np.asarray(a["site"]), np.asarray(a["taken"])
    miss = (taken >= 0) & (np.asarray(a["tage_pred"]) != taken)
    return int(np.bincount(sites[miss], minlength=len(test_ds.site_pc)).argmax())


def site_rows(test_ds, site: int, max_rows: int) -> np.ndarray:
    """The held-out samples a site's models are scored on: at most ``max_rows`` of its rows, evenly spaced."""
    from ncf.quant.quantize import spaced

    return spaced(np.flatnonzero(np.asarray(test_ds.arrays["site"]) == site), max_rows)


def tage_accuracy(ds, rows) -> float:
    """TAGE-SC-L's branch accuracy on dataset ``rows``."""
    return outcome_agreement(ds.arrays["tage_pred"][rows], ds, rows)


def outcome_agreement(pred, ds, rows) -> float:
    """Share of dataset ``rows`` (one branch site's) whose outcome equals ``pred`` (a guess per row): a
    model's, the hardware's or TAGE-SC-L's accuracy on the same samples."""
    return float((np.asarray(pred) == np.asarray(ds.arrays["taken"][rows])).mean())
