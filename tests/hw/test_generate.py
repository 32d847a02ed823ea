"""Hardware generation (issue #7): the hls4ml project's C simulation and C testbench equal the integer
reference on real held-out samples; the Verilog translation of the same hls4ml graph is exact
(da4ml's interpreter == intref before any Verilog is written; RTL simulation is in tests/rtl_tests);
the manifest describes the interface and the inputs it was made from; bad inputs give clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ncf.hw import rtl
from ncf.hw.generate import HwConfig, build_hls, load_manifest
from ncf.quant.quantize import read_bundle
from ncf.io import file_sha256

CSIM_SAMPLES = 10_000


def test_cast_reproduces_ap_fixed_rounding_and_overflow():
    """Every ap_fixed cast the translator emits equals the C++ semantics (numpy model): ties to even,
    truncation, round half up, saturation and wrap, on all values of a 10-bit grid."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    x = np.arange(-512, 512) / 64.0                       # every code of fixed<10,4>
    for t in (rtl.ApType(1, 2, 3, "RND_CONV", "SAT"), rtl.ApType(0, 2, 2, "RND_CONV", "SAT"),
              rtl.ApType(1, 1, 2, "TRN", "WRAP"), rtl.ApType(1, 3, 1, "RND", "SAT"),
              rtl.ApType(1, 4, 6, "RND_CONV", "WRAP")):
        inp = FixedVariableArrayInput((1,))
        v = quantize(inp, 1, 3, 6)
        comb = comb_trace(inp, rtl._array([rtl.cast(v._vars[0], t)], v))
        got = comb.predict(x[:, None])[:, 0]
        np.testing.assert_array_equal(got, rtl.cast_np(x, t), err_msg=str(t))
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5]) / 4
    np.testing.assert_array_equal(rtl.cast_np(ties, rtl.ApType(1, 3, 2, "RND_CONV", "SAT")) * 4,
                                  [0, 2, 2, 0, -2])


def test_argmax_takes_the_first_largest():
    """Ties go to the lower index, also where some logits are constants or known non-negative
    (a constant or unsigned difference has no sign bit: the tournament once read its top magnitude bit,
    which gave the folded-mux block a wrong delta class on a real gnugo site)."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    inp = FixedVariableArrayInput((5,))
    v = quantize(inp, 1, 3, 0)
    x = np.random.default_rng(0).integers(-3, 3, (500, 5)).astype(np.float64)   # many ties
    c = [rtl._const(k, v) for k in (3.0, 1.0, 0.5, 0.0)]
    r = [u.relu() for u in v._vars]
    for name, vals in {"inputs": list(v._vars), "constants falling": c[:3], "constants rising": c[2::-1],
                       "relu against 0": [r[0], c[3], r[1], c[3]], "mixed": [c[1], v._vars[0], c[1], r[2], c[0]],
                       "all equal": [c[2]] * 4}.items():
        comb = comb_trace(inp, rtl._array([rtl.argmax(vals)] + vals, v), keep_dead_inputs=True)
        got = comb.predict(x)
        np.testing.assert_array_equal(got[:, 0], got[:, 1:].argmax(1), err_msg=name)


def test_hls_csim_and_c_testbench_equal_intref(hw_bundle, tmp_path):
    """hls4ml C simulation (compile + predict) == intref on 10,000 real held-out samples of bzip2,
    and hls4ml's generated C testbench builds with plain g++ and matches too."""
    bundle = read_bundle(hw_bundle("bzip2"))
    assert len(bundle["features"]) >= CSIM_SAMPLES
    s = build_hls(bundle, HwConfig(csim_samples=CSIM_SAMPLES), tmp_path / "hls", progress=False)
    print(json.dumps(s["csim"]), json.dumps(s["c_testbench"]))
    assert s["csim"]["samples"] == CSIM_SAMPLES
    assert s["csim"]["exact"] == CSIM_SAMPLES and s["csim"]["mismatches"] == 0, s["csim"]["first_mismatch"]
    assert s["c_testbench"]["rows"] == 100 and s["c_testbench"]["exact"] == 100
    assert (tmp_path / "hls" / "firmware" / "ncf_site.cpp").exists()
    assert (tmp_path / "hls" / "build_prj.tcl").exists()            # ready for the vendor tool
    assert "not run" in s["vendor_synthesis"] and json.loads((tmp_path / "hls" / "hls.json").read_text())


@pytest.mark.parametrize("workload", ["bzip2", "quicksort"])
def test_rtl_manifest_describes_what_was_built(hw_rtl, hw_bundle, workload):
    m = load_manifest(hw_rtl(workload))
    bundle = read_bundle(hw_bundle(workload))
    check = m["da4ml"]["interpreter_check"]
    assert check["exact"] == check["samples"] == min(len(bundle["features"]), HwConfig().check_samples)
    for k in ("onnx", "intref", "samples"):
        assert m["inputs"][k]["sha256"] == file_sha256(bundle["paths"][k])
    p = m["parameters"]
    assert p["IN_W"] == len(bundle["live_inputs"]) == len(m["live_inputs"]) > 0
    assert p["N_LOGITS"] == 17 and 2 ** p["CLASS_W"] >= 16
    assert m["latency"]["top_cycles"] == p["CORE_LAT"] + 1 and m["latency"]["initiation_interval"] == 1
    assert m["bits"]["weights"] == 4
    for f in m["sources"]:
        assert (hw_rtl(workload) / f).exists(), f
    text = (hw_rtl(workload) / "ncf_predictor.v").read_text()
    assert "module ncf_predictor" in text and "ncf_core_wrapper" in text
    assert not any(prim in (hw_rtl(workload) / f).read_text()            # no vendor primitives
                   for f in m["sources"] for prim in ("LUT6", "DSP48", "RAMB", "CARRY4"))


def test_bad_inputs_give_clear_errors(hw_bundle, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(ValueError, match="not a version-1 ncf RTL manifest"):
        load_manifest(tmp_path)
    lonely = tmp_path / "site9_4bit.onnx"
    lonely.write_bytes(hw_bundle("bzip2").read_bytes())
    with pytest.raises(FileNotFoundError, match="site bundle written by `ncf quantize`"):
        read_bundle(lonely)
    with pytest.raises(ValueError, match="unknown config keys"):
        bad = tmp_path / "hw.yaml"
        bad.write_text("cutof: 3\n")
        HwConfig.load(bad)
    with pytest.raises(NotImplementedError, match="SAT_SYM"):
        from da4ml.trace import FixedVariableArrayInput
        from da4ml.trace.ops import quantize
        v = quantize(FixedVariableArrayInput((1,)), 1, 3, 4)._vars[0]
        rtl.cast(v, rtl.ApType(1, 3, 2, "RND_CONV", "SAT_SYM"))


def test_hw_config_round_trips(tmp_path):
    cfg = HwConfig(cutoff=1.5, clock_ns=4.0, csim_samples=123)
    for name in ("hw.yaml", "hw.json"):
        assert HwConfig.load(cfg.save(tmp_path / name)) == cfg


def test_lutnet_points_parse_into_the_lut_nets_own_config():
    from ncf.io import UsageError
    from ncf.studies.hw_sweep import HwSweepConfig, lutnet_config

    c = lutnet_config("27-9-3-1/6-3-3-3/2")
    assert (c.layers, c.fan_in, c.bits) == ([27, 9, 3, 1], [6, 3, 3, 3], 2)
    assert lutnet_config("36-6-1/6/1").fan_ins == [6, 6, 6]
    for bad, why in (("36-6-1", "LAYERS/FAN_IN/BITS"), ("36-6-1/6/1/2", "three parts"), ("a/6/1", "LAYERS"),
                     ("36-6-1/7-1/1", "fan_in"), ("36-6-1/6/5", "bits 5")):
        with pytest.raises(UsageError, match=why):
            HwSweepConfig(lutnets=[bad])


def test_pareto_front_keeps_only_undominated_points():
    from ncf.studies.hw_sweep import pareto

    pts = [(100, 0.90), (50, 0.85), (200, 0.89), (60, 0.95), (400, 0.97)]
    assert pareto(pts) == [1, 3, 4]          # by LUTs: 50 (0.85), 60 (0.95), 400 (0.97)


def test_sweep_plot_adds_the_latency_panel_after_place_and_route(tmp_path):
    from ncf.studies.hw_sweep import HwSweepConfig, plot

    from ..helpers import png_size

    assert HwSweepConfig(points=[[1, 1, 3], [2, 1, 3, 1.0]]).point_cutoff([2, 1, 3, 1.0]) == 1.0
    rows = [{"model": "GNN H1T1/3b", "LUT": 2000, "branch_acc": 0.9,
             "weight_storage_bits": 900, "latency_cycles": 16, "fmax_mhz": 100.0, "latency_ns": 160.0},
            {"model": "GNN H2T1/3b c1", "LUT": 5000, "branch_acc": 0.92,
             "weight_storage_bits": 1800, "latency_cycles": 30, "fmax_mhz": 126.6, "latency_ns": 237.0},
            {"model": "LUT 36-6-1/6/1", "LUT": 175, "branch_acc": 0.89,
             "weight_storage_bits": 2400, "latency_cycles": 4, "fmax_mhz": 227.4, "latency_ns": 17.6}]
    w2, h2 = png_size(plot(rows, tmp_path / "two.png", 0.91))
    w3, h3 = png_size(plot(rows, tmp_path / "three.png", 0.91, pnr="ecp5"))
    assert h3 == h2 and w3 > 1.4 * w2          # a third panel: accuracy against latency in ns


def test_sweep_serves_a_load_site_against_its_last_delta_class(native, inputs_dir, tmp_path_factory, tmp_path):
    """A delinquent load's point: trained on its load samples, quantized, exported with its delta-class history as
    input, lowered to RTL; scored by delta class against the class of its last known delta repeated."""
    from ncf.io import UsageError, read_json
    from ncf.model.dataset import Dataset
    from ncf.studies.cache import StageCache
    from ncf.studies.hw_sweep import HwSweepConfig, hw_sweep
    from ncf.studies.site_eval import reference_accuracy, site_rows

    from ..conftest import hw_load_datasets, shared_dir

    tr, te = hw_load_datasets(shared_dir(tmp_path_factory), inputs_dir)
    test_ds = Dataset(te)
    load = int(np.flatnonzero(np.asarray(test_ds.site_task) == 1)[0])
    cfg = HwSweepConfig(points=[[1, 1, 3]], site=load, epochs=1, qat_steps=20, max_rows=300, synth=False, workers=1)
    with pytest.raises(UsageError, match="is a load: a LUT net predicts a branch"):
        hw_sweep(tr, te, tmp_path / "lut", HwSweepConfig(**{**cfg.__dict__, "lutnets": ["36-6-1/6/1"]}))
    r = hw_sweep(tr, te, tmp_path / "sweep", cfg, StageCache(tmp_path / "cache"), progress=False)
    row = r["rows"][0]
    rows = site_rows(test_ds, load, 300)
    last = np.asarray(test_ds.arrays["dhist"][rows])[:, -1]
    assert row["last_delta_acc"] == reference_accuracy(test_ds, rows, "load") == float(
        (last == np.asarray(test_ds.arrays["delta"][rows])).mean())
    assert 0 <= row["delta_acc"] <= 1 and "branch_acc" not in row and row["ladder_exact"]
    bundle = read_json(next((tmp_path / "cache").rglob(f"site{load}_3bit.json")))
    assert bundle["task"] == "load"
    assert read_json(tmp_path / "sweep" / "sweep.json")["task"] == "load"
    assert row["input_bits"] > 0 and row["latency_cycles"] > 0


def test_a_held_out_site_maps_to_the_training_datasets_index_of_its_pc():
    """hmmer's held-out window never runs two of its training branch sites, so the held-out dataset's site k can be
    the training dataset's k + 2: the sweep trains a site's model on the training rows of the same pc."""
    from types import SimpleNamespace

    from ncf.io import DataError
    from ncf.studies.site_eval import training_site

    train = SimpleNamespace(site_pc=np.array([0x10, 0x20, 0x30, 0x40], np.uint64), path="train")
    test = SimpleNamespace(site_pc=np.array([0x10, 0x40, 0x50], np.uint64), path="test")
    assert [training_site(train, test, k) for k in (0, 1)] == [0, 3]
    with pytest.raises(DataError, match="0x50\\) of test is not a site of train"):
        training_site(train, test, 2)
