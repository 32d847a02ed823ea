"""Both multi-site blocks in a real simulator (Icarus: the small blocks build in seconds; `ncf hw-sites`
runs Verilator on every held-out sample): the folded-mux block (hw/multisite.py) and the shared-datapath
block (hw/shared.py) on every site's real held-out samples, the site ids interleaved at random, each
prediction compared bit for bit with that site's integer reference, plus the protocol tests (latency ==
manifest, one result per cycle, gaps and backpressure, reset mid-stream); and a manifest whose site ids
are swapped makes the same run fail (the check can fail). The shared block's own tests (a corrupted ROM
word, sites whose scales differ) are in test_shared.py."""
from __future__ import annotations

import json
import shutil

import pytest
from ncf.hw.generate import load_manifest
from ncf.rtl_tests.sim import verify

WORKLOAD = "quicksort"
SAMPLES = 3000         # in all, shared evenly by the sites


@pytest.mark.parametrize("design", ["folded", "shared"])
def test_multisite_block_predicts_what_each_sites_intref_predicts(hw_sites_rtl, design, tmp_path):
    rtl = hw_sites_rtl(WORKLOAD, design)
    m = load_manifest(rtl)
    s = verify(rtl, simulator="icarus", work=tmp_path, n_stream=SAMPLES, n_handshake=300, progress=False)
    print(json.dumps({k: v for k, v in s.items() if k != "first_mismatches"}))
    assert m["multisite"]["design"] == {"folded": "folded-mux", "shared": "shared-rom"}[design]
    assert len(m["sites"]) >= 2
    assert s["tests_failed"] == 0 and s["mismatches"] == 0, s["first_mismatches"]
    assert [x["id"] for x in s["sites"]] == list(range(len(m["sites"])))
    assert all(x["samples"] > 0 and x["stream_mismatches"] == 0 for x in s["sites"])
    assert sum(x["samples"] for x in s["sites"]) == s["samples"]
    assert s["latency_measured"] == [m["latency"]["top_cycles"]] * 5
    assert s["stream_cycles"] == s["samples"] + m["latency"]["top_cycles"] and s["results_per_cycle"] == 1.0


def test_swapped_site_ids_give_mismatches(hw_sites_rtl, tmp_path):
    """The same block with its manifest's first two sites swapped: the stimulus then sends site 0's
    snapshots with id 1 and the other way round, and both sites' predictions mismatch."""
    rtl = tmp_path / "rtl"
    shutil.copytree(hw_sites_rtl(WORKLOAD, "folded"), rtl)
    m = json.loads((rtl / "manifest.json").read_text())
    m["sites"][0]["id"], m["sites"][1]["id"] = 1, 0
    m["sites"][:2] = m["sites"][1::-1]
    (rtl / "manifest.json").write_text(json.dumps(m))
    s = verify(rtl, simulator="icarus", work=tmp_path / "work", n_stream=300, n_handshake=20, progress=False,
               tests=("test_stream",))
    by = {x["id"]: x for x in s["sites"]}
    assert s["tests_failed"] == 1 and s["mismatches"] > 0
    assert by[0]["stream_mismatches"] > 0 and by[1]["stream_mismatches"] > 0
