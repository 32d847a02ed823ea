"""One site's held-out samples, and how a predictor scores on them: shared by the hardware studies
(``hw_sweep``: GNN and LUT-net points; ``lutnet``; ``hw_sites``) so that every row of theirs is scored on the
same samples against a reference on the same samples: TAGE-SC-L at a branch site, at a load site the
class of the load's last known delta (``dhist``'s latest entry: what a stride prefetcher repeats).

    site = hardest_site(test_ds)                  # the site TAGE-SC-L mispredicts most on the held-out input
    rows = site_rows(test_ds, site, 4000)         # at most 4,000 of its (labelled) rows, evenly spaced in time
    tage_accuracy(test_ds, rows), outcome_agreement(pred, test_ds, rows)
    reference_accuracy(test_ds, rows, "load"), label_agreement(delta_class, test_ds, rows, "load")
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


def training_site(train_ds, test_ds, site: int) -> int:
    """The training dataset's index of the held-out dataset's site ``site`` (the same pc): a held-out dataset
    lacks the training sites its window never ran, so the two indices can differ."""
    from ncf.io import DataError

    pc = np.uint64(test_ds.site_pc[site])
    found = np.flatnonzero(np.asarray(train_ds.site_pc, np.uint64) == pc)
    if not len(found):
        raise DataError(f"site {site} ({int(pc):#x}) of {test_ds.path} is not a site of {train_ds.path}: build the "
                        "held-out dataset with the training trace's sites (`ncf dataset --sites-from`)")
    return int(found[0])


def site_rows(test_ds, site: int, max_rows: int) -> np.ndarray:
    """The held-out samples a site's models are scored on: at most ``max_rows`` of its rows with a label
    (a load's last k - 1 accesses of the window have none), evenly spaced."""
    from ncf.quant.quantize import spaced

    a = test_ds.arrays
    label = np.asarray(a["taken" if test_ds.task(site) == "branch" else "delta"])
    return spaced(np.flatnonzero((np.asarray(a["site"]) == site) & (label >= 0)), max_rows)


def tage_accuracy(ds, rows) -> float:
    """TAGE-SC-L's branch accuracy on dataset ``rows``."""
    return outcome_agreement(ds.arrays["tage_pred"][rows], ds, rows)


def outcome_agreement(pred, ds, rows) -> float:
    """Share of dataset ``rows`` (one branch site's) whose outcome equals ``pred`` (a guess per row): a
    model's, the hardware's or TAGE-SC-L's accuracy on the same samples."""
    return float((np.asarray(pred) == np.asarray(ds.arrays["taken"][rows])).mean())


def label_agreement(pred, ds, rows, task: str) -> float:
    """Share of dataset ``rows`` (one site's) whose label equals ``pred``: the outcome at a branch site, the
    delta class at a load site."""
    if task == "branch":
        return outcome_agreement(pred, ds, rows)
    return float((np.asarray(pred) == np.asarray(ds.arrays["delta"][rows])).mean())


def reference_accuracy(ds, rows, task: str) -> float:
    """The reference on the same samples: TAGE-SC-L (branch), or the class of the load's last known k-step
    delta repeated (load; the delta-LSTM's latest input, known before the access)."""
    if task == "branch":
        return tage_accuracy(ds, rows)
    return label_agreement(np.asarray(ds.arrays["dhist"][rows])[:, -1], ds, rows, task)
