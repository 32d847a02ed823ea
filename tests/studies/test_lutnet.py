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
