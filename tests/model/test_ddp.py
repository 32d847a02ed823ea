"""torch DDP: two processes under torchrun (gloo, CPU) train the model that one process trains with
the same global batch and seed, and a run resumed under DDP ends where a straight run ends."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch


from ncf.model.baselines import BRANCHNET_SHAPES, BranchNet
from ncf.model.loop import load_checkpoint
from ncf.model.train import TrainConfig, build_gnn, load_model, train

from ..helpers import train_until_epoch_two


def ncf_train(config, *extra):
    r = subprocess.run([sys.executable, "-m", "ncf.cli", "train", "--config", str(config), *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def max_diff(a: dict, b: dict) -> float:
    return max(float((x - b[k]).abs().max()) for k, x in a.items() if x.is_floating_point())


@pytest.mark.slow
def test_two_processes_train_the_model_of_one(train_ds, tmp_path):
    base = dict(train=str(train_ds.path), hidden=8, batch=128, epochs=2, threads=1, lr=1e-2)
    one = TrainConfig(out=str(tmp_path / "one"), **base)
    train(one, progress=False)
    two = TrainConfig(out=str(tmp_path / "two"), **base)
    ncf_train(two.save(tmp_path / "two.yaml"), "--nproc", "2")
    a, b = load_model(tmp_path / "one")[0].state_dict(), load_model(tmp_path / "two")[0].state_dict()
    init = build_gnn(one, train_ds).state_dict()
    assert max_diff(a, init) > 0.05                     # training moved the weights ...
    assert max_diff(a, b) < 1e-4                        # ... and both runs moved them alike
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["state"]["epoch"] == 2



def test_a_run_resumed_under_ddp_ends_where_a_straight_run_ends(train_ds, tmp_path, monkeypatch):
    base = dict(train=str(train_ds.path), hidden=8, batch=128, epochs=2, threads=1, lr=1e-2)
    train(TrainConfig(out=str(tmp_path / "straight"), **base), progress=False)
    cfg = TrainConfig(out=str(tmp_path / "resumed"), **base)
    train_until_epoch_two(cfg, monkeypatch)
    after_one = load_model(tmp_path / "resumed")[0].state_dict()
    ncf_train(cfg.save(tmp_path / "resumed.yaml"), "--nproc=2", "--resume")
    straight, resumed = (load_model(tmp_path / d)[0].state_dict() for d in ("straight", "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state"]["epoch"] == 2
    assert max_diff(resumed, after_one) > 0.01 and max_diff(resumed, straight) < 1e-4


@pytest.mark.slow
def test_two_processes_train_the_branchnet_of_one(train_ds, tmp_path):
    base = dict(train=str(train_ds.path), model="branchnet", branchnet="mini", batch=64, epochs=2, threads=1)
    train(TrainConfig(out=str(tmp_path / "one"), **base), progress=False)
    ncf_train(TrainConfig(out=str(tmp_path / "two"), **base).save(tmp_path / "two.yaml"), "--nproc", "2")
    a = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["sites"]
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["sites"]
    assert a.keys() == b.keys() and a
    for site in a:
        assert max_diff(a[site], b[site]) < 1e-4
    torch.manual_seed(0)                                 # the first site's model starts from this
    init = BranchNet(**BRANCHNET_SHAPES["mini"]).state_dict()
    assert max_diff(next(iter(a.values())), init) > 0.01
