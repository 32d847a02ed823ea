"""The shared-datapath block's generation (hw/shared.py): one datapath whose per-site weights sit in ROM
files, the manifest in the multi-site layout (design "shared-rom", every site's feature bits the union of
the live inputs), the Verilog has no multiplier for synthesis to put in DSPs, and sites of different model
shapes are refused. Simulation is in tests/rtl_tests/test_shared.py."""
from __future__ import annotations

import re

import numpy as np
import pytest
from ncf.hw.generate import HwConfig, load_manifest
from ncf.hw.shared import build_shared, build_sites
from ncf.io import UsageError, file_sha256
from ncf.quant.quantize import read_bundle

WORKLOAD = "quicksort"


def test_manifest_describes_one_datapath_with_every_sites_weights_in_rom(hw_sites_rtl, hw_small_site_bundles):
    rtl = hw_sites_rtl(WORKLOAD, "shared")
    m = load_manifest(rtl)
    bundles = [read_bundle(o) for o in hw_small_site_bundles(WORKLOAD)]
    ms, p = m["multisite"], m["parameters"]
    assert ms["design"] == "shared-rom" and ms["n_sites"] == len(bundles) == len(m["sites"]) >= 2
    union = np.unique(np.concatenate([b["live_inputs"] for b in bundles])).tolist()
    for k, (site, b) in enumerate(zip(m["sites"], bundles)):
        assert site["id"] == k and site["site_pc"] == b["site_pc"] and site["live_inputs"] == union
        assert site["inputs"]["intref"]["sha256"] == file_sha256(b["paths"]["intref"])
    assert ms["feature_bits"] == len(union) and p["IN_W"] == len(union) + ms["site_bits"]
    assert m["latency"]["top_cycles"] == p["CORE_LAT"] + 1 and m["latency"]["initiation_interval"] == 1
    verilog = (rtl / ms["core"]).read_text()
    assert "ncf_core_wrapper" in verilog and not re.search(r"[\w)\]]\s*\*\s*[\w($]", verilog), "a multiplier"
    for mem in m["memfiles"]:         # one word per site id, the ROM read in the Verilog
        words = (rtl / mem).read_text().split()
        assert len(words) == 2 ** ms["site_bits"] and f'$readmemh("{mem}"' in verilog
    assert sum(int(w, 16) != 0 for mem in m["memfiles"] for w in (rtl / mem).read_text().split()) >= len(bundles)


def test_sites_of_different_shapes_or_one_site_are_refused(hw_small_site_bundles, tmp_path):
    a, b = (read_bundle(o) for o in hw_small_site_bundles(WORKLOAD)[:2])
    with pytest.raises(UsageError, match="differ in hidden"):
        build_shared([a, {**b, "gnn": {**b["gnn"], "hidden": b["gnn"]["hidden"] + 1}}], HwConfig(), tmp_path / "a",
                     progress=False)
    with pytest.raises(UsageError, match="weight_bits"):
        build_shared([a, {**b, "quant": {**b["quant"], "weight_bits": 8}}], HwConfig(), tmp_path / "b",
                     progress=False)
    with pytest.raises(UsageError, match="at least 2 site bundles"):
        build_shared([a], HwConfig(), tmp_path / "c", progress=False)
    with pytest.raises(UsageError, match="unknown multi-site design 'mux'"):
        build_sites([a, b], HwConfig(), tmp_path / "d", "mux", progress=False)
    assert not any((tmp_path / n).exists() for n in "abcd")
