"""`ncf lutnet`'s study (ncf/studies/lutnet.py): the LUT net learns from the training input's training rows
only. Scrambling the held-out input's labels and the training input's validation tail leaves its tables
unchanged; scrambling the training rows' labels changes them (so the check can fail)."""
from __future__ import annotations

import numpy as np

from ncf.model.dataset import Dataset
from ncf.model.train import split_rows
from ncf.quant.lutnet import LutNetConfig, load_tables
from ncf.studies.lutnet import lutnet_site

from ..conftest import LUTNET_HELDOUT, LUTNET_TEST


def relabelled(src, dst, rows) -> str:
    """A copy of dataset ``src`` (links) whose branch labels at ``rows`` are inverted."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "taken.npy":
            (dst / f.name).symlink_to(f.resolve())
    taken = np.load(src / "taken.npy")
    taken[rows] = np.where(taken[rows] >= 0, 1 - taken[rows], taken[rows])
    np.save(dst / "taken.npy", taken)
    return dst


def tables_of(train, test, site, out):
    lutnet_site(train, test, out, LutNetConfig(**LUTNET_TEST), site=site, max_rows=LUTNET_HELDOUT, progress=False)
    return load_tables(out / f"site{site}_lutnet.npz")["layers"]


def same(a, b) -> bool:
    return all(np.array_equal(x["idx"], y["idx"]) and np.array_equal(x["table"], y["table"]) for x, y in zip(a, b))


def test_lutnet_learns_from_the_training_rows_only(hw_lutnet, tmp_path):
    train, test, site = hw_lutnet["train"], hw_lutnet["test"], hw_lutnet["site"]
    ref = load_tables(hw_lutnet["out"] / f"site{site}_lutnet.npz")["layers"]
    tr, va = split_rows(Dataset(train), [site])
    held = np.flatnonzero(np.asarray(Dataset(test).arrays["site"]) == site)
    blind = tables_of(relabelled(train, tmp_path / "train_va", va), relabelled(test, tmp_path / "test", held), site,
                      tmp_path / "blind")
    assert same(blind, ref)
    seen = tables_of(relabelled(train, tmp_path / "train_tr", tr), test, site, tmp_path / "seen")
    assert not same(seen, ref)


def test_bad_lutnet_commands_say_what_is_wrong(hw_lutnet, tmp_path, capsys):
    from ncf.cli import main

    base = ["lutnet", "--train", str(hw_lutnet["train"]), "--test", str(hw_lutnet["test"]), "-o", str(tmp_path / "o")]
    assert main(base + ["--layers", "8", "2"]) == 2
    assert "the last 1 (the branch logit)" in capsys.readouterr().err
    assert main(base + ["--site", "7"]) == 2
    assert "sites (0..1)" in capsys.readouterr().err
    assert main(base + ["--fan-in", "7", "--bits", "2"]) == 2
    assert "at most 12" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def reordered(src, dst) -> str:
    """A copy of dataset ``src`` (links) with its sites in reverse order (as a held-out window that runs the
    training sites in another order, or lacks one, numbers them differently)."""
    from ncf.io import read_json, write_json

    dst.mkdir()
    for f in src.iterdir():
        if f.name not in ("sites.npz", "site.npy", "dataset.json"):
            (dst / f.name).symlink_to(f.resolve())
    sites = dict(np.load(src / "sites.npz"))
    np.savez(dst / "sites.npz", **{k: v[::-1] for k, v in sites.items()})
    site = np.load(src / "site.npy")
    np.save(dst / "site.npy", (len(sites["pc"]) - 1 - site).astype(site.dtype))
    meta = read_json(src / "dataset.json")
    write_json(dst / "dataset.json", {**meta, "sites": meta["sites"][::-1]})
    return dst


def test_lutnet_maps_a_held_out_site_to_the_training_site_of_its_pc(hw_lutnet, tmp_path):
    """A held-out dataset numbering the sites otherwise: the held-out site of the same pc gets the same tables
    (trained on the training rows of that pc, not of the training dataset's site of the same index)."""
    train, test, site = hw_lutnet["train"], hw_lutnet["test"], hw_lutnet["site"]
    ref = load_tables(hw_lutnet["out"] / f"site{site}_lutnet.npz")["layers"]
    flipped = reordered(test, tmp_path / "test")
    other = len(Dataset(test).site_pc) - 1 - site
    assert other != site and Dataset(flipped).site_pc[other] == Dataset(test).site_pc[site]
    assert same(tables_of(train, flipped, other, tmp_path / "o"), ref)
