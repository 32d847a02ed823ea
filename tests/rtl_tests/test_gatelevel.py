"""Gate-level sign-off (issue #18): the post-synthesis netlists `ncf synth` writes (yosys synth_ecp5 /
synth_ice40 of the test RTL, the module that is placed) run the same cocotb tests as the RTL, with
yosys's cell simulation models, on real held-out snapshots: bit-exact against the integer reference,
the manifest's latency and one result per cycle. A netlist with one LUT inverted must fail."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from ncf.hw.generate import load_manifest
from ncf.hw.synth import synth
from ncf.io import DataError
from ncf.rtl_tests.sim import verify

RTL = ("bzip2", "small")          # H1 T1 3-bit: ~1,600 LUT4 on ECP5, ~2,600 SB_LUT4 on iCE40
N_STREAM, N_HANDSHAKE = 150, 20


@pytest.fixture(scope="module")
def synthesized(hw_rtl, tmp_path_factory):
    """The small test RTL synthesized for ECP5 and iCE40 (no P&R: the same yosys script writes the netlist
    that `ncf synth` places); the netlists are in <out>/<target>."""
    out = tmp_path_factory.mktemp("synth")
    s = synth(hw_rtl(*RTL), targets=("ecp5", "ice40"), out_dir=out, progress=False, timeout_s=1200, place=False)
    for target in ("ecp5", "ice40"):
        res = s["targets"][target]
        assert res["status"] == "ok" and [x["step"] for x in res["steps"]] == ["synth"], res
        assert (out / res["netlist"]).exists()
    return out


@pytest.mark.parametrize("target", ["ecp5", "ice40"])
def test_netlist_predicts_exactly_what_intref_predicts(hw_rtl, synthesized, target, tmp_path):
    """Icarus (4-state: an X on an output fails); Verilator also runs the netlists, but its build of a
    flat netlist takes minutes."""
    m = load_manifest(hw_rtl(*RTL))
    s = verify(hw_rtl(*RTL), simulator="icarus", work=tmp_path, n_stream=N_STREAM, n_handshake=N_HANDSHAKE,
               close_loop=False, progress=False, netlist=target, synth_dir=synthesized)
    print(json.dumps({k: v for k, v in s.items() if k != "first_mismatches"}))
    assert s["design"] == f"{target} netlist" and s["netlist"]["file"] == str(synthesized / target / "netlist.v")
    assert s["tests_failed"] == 0 and s["mismatches"] == 0, s["first_mismatches"]
    assert s["predictions_compared"] == 5 + N_STREAM + 3 * N_HANDSHAKE + N_HANDSHAKE
    assert s["latency_measured"] == [m["latency"]["top_cycles"]] * 5
    assert s["stream_cycles"] == N_STREAM + m["latency"]["top_cycles"] and s["results_per_cycle"] == 1.0


def test_a_netlist_with_one_lut_inverted_reports_mismatches(hw_rtl, synthesized, tmp_path):
    """The sign-off can fail: the first LUT4 of the core's datapath computes the complement of its function."""
    bad = tmp_path / "synth"
    shutil.copytree(synthesized, bad)
    net = bad / "ecp5" / "netlist.v"
    text = net.read_text()
    lut = re.search(r"LUT4 #\(\n\s+\.INIT\(16'h([0-9a-f]{4})\)\n\s+\) \\core\.op\.stage\d", text)
    text = text[:lut.start(1)] + f"{0xFFFF ^ int(lut[1], 16):04x}" + text[lut.end(1):]
    net.write_text(text)
    s = verify(hw_rtl(*RTL), simulator="icarus", work=tmp_path / "work", tests=("test_stream",),
               n_stream=N_STREAM, close_loop=False, progress=False, netlist="ecp5", synth_dir=bad)
    assert s["tests_failed"] == 1 and s["mismatches"] > 0


def test_a_netlist_of_other_sources_is_refused(hw_rtl, synthesized, tmp_path):
    rtl = tmp_path / "rtl"
    shutil.copytree(hw_rtl(*RTL), rtl)
    top = rtl / "ncf_predictor.v"
    top.write_text(top.read_text() + "\n// edited after synthesis\n")
    with pytest.raises(DataError, match="was not synthesized from"):
        verify(rtl, simulator="icarus", work=tmp_path / "work", netlist="ecp5", synth_dir=synthesized, progress=False)
