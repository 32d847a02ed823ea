"""`ncf quantize` end to end on a real dataset: the bit-width table, and the exactness ladder on
every held-out sample of every site."""
from __future__ import annotations

import json

from ncf.cli import main
from ncf.model.train import TrainConfig, train


def test_quantize_command_checks_every_site_exactly(train_ds, tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(train=str(train_ds.path), test=str(train_ds.path), out=str(run), epochs=1, hidden=8,
                      threads=1), progress=False)
    out = tmp_path / "q"
    assert main(["quantize", "--run", str(run), "--train", str(train_ds.path), "--test", str(train_ds.path),
                 "--bits", "4", "--export-bits", "8", "--steps", "5", "-o", str(out)]) == 0
    bits = json.loads((out / "bits.json").read_text())["rows"]
    assert [r["bits"] for r in bits] == ["4", "8", "float"]
    assert (out / "bits.png").stat().st_size > 1000
    ladder = json.loads((out / "ladder.json").read_text())["sites"]
    assert len(ladder) == len(train_ds.site_pc)
    for site in ladder:
        n = site["samples"]
        assert n > 0 and site["fake_quant==intref"] == site["fake_quant==qonnx"] == site["intref==qonnx"] == n
    assert "fake_quant==qonnx" in capsys.readouterr().out
