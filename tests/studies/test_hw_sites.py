"""`ncf hw-sites` on two real sites of a hardware-sized GNN: the folded designs (one block per site) and the
two multi-site blocks (folded-mux, shared-ROM) are built and synthesized (yosys synth_xilinx: the quick
target; ECP5 and iCE40 place and
route run in the same code path with longer runs); the folded row adds up the blocks' cells, the table
files are written, and bad settings are refused."""
from __future__ import annotations

import json

import pytest
from ncf.cli import main
from ncf.io import UsageError
from ncf.studies.hw_sites import HwSitesConfig


def test_hw_sites_table_compares_folded_blocks_with_the_multisite_block(hw_small_site_bundles, tmp_path, capsys):
    onnxs = [str(o) for o in hw_small_site_bundles("quicksort")]
    rc = main(["hw-sites", "--qonnx", *onnxs, "--targets", "xilinx", "--simulator", "", "--cache",
               str(tmp_path / "cache"), "-o", str(tmp_path / "out")])
    print(capsys.readouterr().out)
    assert rc == 0
    t = json.loads((tmp_path / "out" / "sites.json").read_text())
    folded, multi, shared = t["rows"]
    assert folded["design"] == f"folded per site ({len(onnxs)} blocks)"
    assert multi["design"] == "multi-site folded-mux (1 block)"
    assert shared["design"] == "multi-site shared-ROM (1 block)"
    assert folded["status"] == multi["status"] == shared["status"] == "ok"
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "synth").glob("*/synth/summary.json")]
    per_block = {s["rtl_dir"]: s["targets"]["xilinx"]["counts"] for s in summaries}
    assert folded["LUT"] == sum(per_block[r]["LUT"] for r in t["rtl"]["folded"]) > 0
    assert multi["LUT"] == per_block[t["rtl"]["folded-mux"]]["LUT"] > 0
    assert shared["LUT"] == per_block[t["rtl"]["shared-ROM"]]["LUT"] > 0 and shared["DSP"] == 0
    assert multi["cycles"] == max(s["core_cycles"] for s in t["sites"]) + 2
    assert [s["id"] for s in t["sites"]] == list(range(len(onnxs)))
    assert all(0 < r["accuracy"] <= 1 and 0 < r["TAGE-SC-L"] <= 1 for r in t["rows"])
    assert "| folded per site" in (tmp_path / "out" / "sites.md").read_text()


def test_hw_sites_refuses_bad_settings():
    with pytest.raises(UsageError, match="targets"):
        HwSitesConfig(targets=["vivado"])
    with pytest.raises(UsageError, match="simulator"):
        HwSitesConfig(simulator="modelsim")
