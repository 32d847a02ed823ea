"""The shared-datapath block (hw/shared.py) in Icarus, beyond the bit-exact run of both multi-site designs
in test_multisite.py: one corrupted weight in a ROM file makes the same run fail (the ROM is what the
block computes with); and sites whose scales differ (their shifts multiplexed by the site id) are
bit-exact too."""
from __future__ import annotations

import re
import shutil

from ncf.rtl_tests.sim import verify

WORKLOAD = "quicksort"


def test_a_corrupted_rom_weight_gives_mismatches(hw_sites_rtl, tmp_path):
    """Site 0's word of the head's ROM with its top bit (the sign of the last logit's bias) flipped: site 0's
    predictions mismatch, site 1's (its own word untouched) do not."""
    rtl = tmp_path / "rtl"
    shutil.copytree(hw_sites_rtl(WORKLOAD, "shared"), rtl)
    top = int(re.search(r"reg \[(\d+):0\] rom_head ", (rtl / "ncf_shared.v").read_text())[1])
    mem = rtl / "rom_head.mem"
    words = mem.read_text().split()
    words[0] = f"{int(words[0], 16) ^ (1 << top):0{len(words[0])}x}"
    mem.write_text("".join(w + "\n" for w in words))
    s = verify(rtl, simulator="icarus", work=tmp_path / "work", n_stream=400, n_handshake=20, progress=False,
               tests=("test_stream",))
    by = {x["id"]: x for x in s["sites"]}
    assert s["tests_failed"] == 1 and by[0]["stream_mismatches"] > 0 and by[1]["stream_mismatches"] == 0


def test_sites_with_different_scales_share_the_datapath(hw_small_site_bundles, tmp_path):
    """Site 1 copied with two activation scales doubled (act_in, act_read: another integer function, so
    its own integer reference): requantization shifts, exponent alignments and the output exponent then
    differ by site and are selected by the site id; still bit-exact for both sites."""
    from ncf.hw.generate import HwConfig
    from ncf.hw.shared import build_shared
    from ncf.quant.intref import load_int_params, save_int_params
    from ncf.quant.quantize import bundle_paths, read_bundle

    src = hw_small_site_bundles(WORKLOAD)[1]
    for f in bundle_paths(src).values():
        shutil.copy(f, tmp_path / f.name)
    copy = bundle_paths(tmp_path / src.name)
    p = load_int_params(copy["intref"])
    p["act_in"]["e"] += 1
    p["act_read"]["e"] += 1
    save_int_params(p, copy["intref"])
    build_shared([read_bundle(hw_small_site_bundles(WORKLOAD)[0]), read_bundle(copy["onnx"])], HwConfig(cutoff=2),
                 tmp_path / "rtl", progress=False)
    assert re.search(r"site_d\[\d+\] == 1'd0\) \? \(", (tmp_path / "rtl" / "ncf_shared.v").read_text())
    s = verify(tmp_path / "rtl", simulator="icarus", work=tmp_path / "work", n_stream=600, n_handshake=20,
               progress=False, tests=("test_stream",))
    assert s["tests_failed"] == 0 and s["mismatches"] == 0, s["first_mismatches"]
    assert all(x["samples"] > 0 for x in s["sites"])
