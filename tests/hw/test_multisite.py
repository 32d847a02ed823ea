"""The multi-site block's generation (hw/multisite.py): every site's core checked against its integer
reference before any Verilog is written, the manifest records the sites in id order with the files they
came from, one module of each name in the sources, the input layout and latency; bad inputs give clear
errors. Simulation is in tests/rtl_tests/test_multisite.py."""
from __future__ import annotations

import re

import pytest
from ncf.hw.generate import HwConfig, load_manifest
from ncf.hw.multisite import build_multisite, common_format
from ncf.io import UsageError, file_sha256
from ncf.quant.quantize import read_bundle

WORKLOAD = "quicksort"


def test_manifest_records_every_site_in_id_order(hw_sites_rtl, hw_small_site_bundles):
    rtl = hw_sites_rtl(WORKLOAD, "folded")
    m = load_manifest(rtl)
    bundles = [read_bundle(o) for o in hw_small_site_bundles(WORKLOAD)]
    assert len(m["sites"]) == len(bundles) >= 2
    for k, (site, b) in enumerate(zip(m["sites"], bundles)):
        assert site["id"] == k and site["site"] == b["site"] and site["site_pc"] == b["site_pc"]
        assert site["inputs"]["intref"]["sha256"] == file_sha256(b["paths"]["intref"])
        assert site["live_inputs"] == b["live_inputs"].tolist() and site["feature_bits"] == len(b["live_inputs"])
        check = site["da4ml"]["interpreter_check"]
        assert check["exact"] == check["samples"] == min(len(b["features"]), HwConfig().check_samples)
    p, ms = m["parameters"], m["multisite"]
    assert ms["feature_bits"] == max(len(b["live_inputs"]) for b in bundles)
    assert 2 ** ms["site_bits"] >= len(bundles) and p["IN_W"] == ms["feature_bits"] + ms["site_bits"]
    assert m["latency"]["core_cycles"] == max(s["core_cycles"] for s in m["sites"]) + 1      # + the multiplexer
    assert m["latency"]["top_cycles"] == p["CORE_LAT"] + 1 and m["latency"]["initiation_interval"] == 1
    assert (p["ELEM_W"], p["OUT_F"]) == tuple(common_format([s["logit"] for s in m["sites"]]).values())
    modules = [name for f in m["sources"] for name in re.findall(r"^\s*module\s+(\w+)", (rtl / f).read_text(), re.M)]
    assert len(modules) == len(set(modules)), "a module is defined twice"
    assert {"ncf_predictor", "ncf_core_wrapper"} | {f"ncf_core_s{k}_wrapper" for k in range(len(bundles))} \
        <= set(modules)


def test_common_format_holds_every_core_exactly():
    assert common_format([{"width": 10, "f": 4}, {"width": 9, "f": 2}]) == {"width": 11, "f": 4}


def test_bad_site_lists_give_clear_errors(hw_small_site_bundles, tmp_path):
    one = read_bundle(hw_small_site_bundles(WORKLOAD)[0])
    with pytest.raises(UsageError, match="at least 2 site bundles"):
        build_multisite([one], HwConfig(), tmp_path / "a", progress=False)
    with pytest.raises(UsageError, match="given twice"):
        build_multisite([one, one], HwConfig(), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
