"""A LUT net's RTL (hw/lutnet.py) through the existing `ncf verify` path: its manifest names the truth tables as
its reference; in Verilator it predicts what the tables predict on every real held-out sample of the bundle;
RTL generated from a table with one corrupted entry fails the same check."""
from __future__ import annotations

import json

import numpy as np

from ncf.hw.generate import load_manifest
from ncf.hw.lutnet import build_lutnet_rtl
from ncf.quant.lutnet import read_lutnet_bundle, table_forward
from ncf.rtl_tests.sim import verify


def test_lutnet_rtl_predicts_what_its_tables_predict(hw_lutnet, tmp_path):
    rtl = hw_lutnet["out"] / "rtl"
    m = load_manifest(rtl)
    summary = json.loads((hw_lutnet["out"] / "lutnet.json").read_text())["rows"][0]
    s = verify(rtl, work=tmp_path, n_handshake=300, progress=False)
    print(json.dumps({k: v for k, v in s.items() if k != "first_mismatches"}))
    assert m["reference"] == "lutnet" and m["parameters"]["N_LOGITS"] == 1
    assert summary["tables_equal_brevitas"] == summary["heldout_samples"] == s["samples"]
    assert s["tests_failed"] == 0 and s["mismatches"] == 0, s["first_mismatches"]
    assert s["latency_measured"] == [len(m["lutnet"]["neurons"]) + 1] * 5 == [m["latency"]["top_cycles"]] * 5
    assert s["results_per_cycle"] == 1.0 and s["harness"]["equal"]


def test_a_corrupted_table_entry_is_caught(hw_lutnet, tmp_path):
    """The logit table's entry the streamed held-out samples hit most, with its taken bit flipped."""
    b = read_lutnet_bundle(hw_lutnet["out"] / f"site{hw_lutnet['site']}_lutnet.npz")
    *hidden, last = b["tables"]["layers"]
    a = table_forward({"layers": hidden}, b["features"][:, b["tables"]["inputs"]])
    r = sum(a[:, last["idx"][0, k]] << (last["ib"] * k) for k in range(last["idx"].shape[1]))
    n = 200
    hit = int(np.bincount(r[:n]).argmax())
    last["table"][0, hit] = -1 if last["table"][0, hit] > 0 else 1
    build_lutnet_rtl(b, tmp_path / "rtl", progress=False)        # its manifest still names the true tables
    s = verify(tmp_path / "rtl", simulator="icarus", work=tmp_path / "work", n_stream=n, n_handshake=20,
               tests=("test_stream",), progress=False)
    assert s["tests_failed"] == 1 and s["mismatches"] == int((r[:n] == hit).sum()) > 0
