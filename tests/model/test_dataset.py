"""Fused datasets: honest snapshots (a deliberate leak is caught), graphs and splits by input, samples
as defined on the whole trace whatever its chunk size."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ncf.model.dataset as dsmod
from ncf.io import UsageError
from ncf.model.dataset import (G_TAGE_DETAIL, HIST_BITS, MAX_DISTANCE, Dataset, DatasetConfig, branch_tokens,
                               build_dataset, encode_tage, find_sites, predicted_addresses)
from ncf.trace_eval.cache import CacheConfig
from ncf.trace_eval.branch_predictors import TAGE_DETAIL_COLUMNS, TageScL
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.harness import LINE
from ncf.trace_eval.streams import branch_stream, memory_stream
from ncf.model.graph import F_STATIC, N_EDGE_TYPES, RELATIONS, encode_values

from ..helpers import LEAD, rewrite_trace


def _scrambled(src, dst, after: int, seed: int = 0, addresses: bool = False):
    """A copy of the trace whose registers after instruction ``after`` and memory values (and with
    ``addresses``, access addresses) of instructions >= ``after`` are random; pcs and control flow
    are unchanged."""
    rng = np.random.default_rng(seed)

    def scramble(ch, regs, vals):
        late = ch.insn["idx"] > after
        regs[late] = rng.integers(0, 2**63, size=(int(late.sum()), regs.shape[1]), dtype=np.uint64)
        mlate = ch.mem["insn"] >= after
        vals[mlate] = rng.integers(0, 2**63, size=int(mlate.sum()), dtype=np.uint64)
        if addresses:
            ch.mem["addr"][mlate] = rng.integers(0, 2**47, size=int(mlate.sum()), dtype=np.uint64) & ~np.uint64(7)

    return rewrite_trace(src, dst, scramble, sidecar=True)


def _labels(ds: Dataset) -> dict:
    """What a rebuild takes from the dataset it is compared with: its delta vocabulary and prefetch distances."""
    return {"vocab": ds.meta["delta_vocabulary"], "distance": ds.meta["prefetch_distance"]}


def _leaked_samples(trace, sites, ds: Dataset, tmp_path) -> int:
    """Rebuild from traces scrambled after each probe's snapshot; count probes whose features changed."""
    a = ds.arrays
    changed = 0
    for j in np.linspace(len(a["idx"]) // 4, len(a["idx"]) - 1, 4).astype(int):
        s = int(a["idx"][j]) - LEAD
        bad = _scrambled(trace, tmp_path / f"scr{j}.ncft", s)
        other = tmp_path / f"ds{j}"
        build_dataset(bad, sites, other, DatasetConfig(lead=LEAD), **_labels(ds), progress=False)
        b = Dataset(other).arrays
        k = np.nonzero((b["idx"] == a["idx"][j]) & (b["site"] == a["site"][j]))[0]
        assert len(k) == 1
        same = all(np.array_equal(a[n][j], b[n][k[0]]) for n in ("dynval", "fe_count", "g", "dhist", "taken",
                                                                 "delta", "tage_detail", "mem_pred", "mem_pred_ok"))
        same &= np.array_equal(ds.branch_history([j], 600), Dataset(other).branch_history(k, 600))
        changed += not same
    return changed


def test_features_do_not_depend_on_anything_after_the_snapshot(bzip2_trace, sites, train_ds, tmp_path):
    assert _leaked_samples(bzip2_trace, sites, train_ds, tmp_path) == 0


def test_a_deliberate_leak_is_caught(bzip2_trace, sites, tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod, "snapshot_index", lambda i, lead: np.asarray(i, np.int64))  # state at i itself
    out = tmp_path / "leaky"
    build_dataset(bzip2_trace, sites, out, DatasetConfig(lead=LEAD), progress=False)
    leaky = Dataset(out)
    assert _leaked_samples(bzip2_trace, sites, leaky, tmp_path) > 0


def _memory_leaks(trace, sites, ds: Dataset, tmp_path, addresses: bool) -> int:
    """Rebuild from traces whose memory values (and with ``addresses``, access addresses) are scrambled
    from each probe's snapshot on; count probes (samples with memory at a predicted address) whose
    snapshot, counts or predicted memory changed."""
    a = ds.arrays
    rows = np.nonzero(np.asarray(a["mem_pred_ok"]).any(1))[0]
    changed = 0
    for j in rows[np.linspace(len(rows) // 4, len(rows) - 1, 6).astype(int)]:
        bad = _scrambled(trace, tmp_path / f"mem{j}.ncft", int(a["idx"][j]) - LEAD, addresses=addresses)
        build_dataset(bad, sites, tmp_path / f"mem{j}", DatasetConfig(lead=LEAD), **_labels(ds),
                      progress=False)
        b = Dataset(tmp_path / f"mem{j}").arrays
        k = np.nonzero((b["idx"] == a["idx"][j]) & (b["site"] == a["site"][j]))[0]
        assert len(k) == 1
        changed += not all(np.array_equal(a[n][j], b[n][k[0]]) for n in ("dynval", "fe_count", "mem_pred",
                                                                         "mem_pred_ok"))
    return changed


def test_predicted_memory_does_not_depend_on_addresses_or_values_after_the_snapshot(bzip2_trace, sites, train_ds,
                                                                                   tmp_path):
    assert _memory_leaks(bzip2_trace, sites, train_ds, tmp_path, addresses=True) == 0


def test_a_memory_image_read_at_the_prediction_is_caught(bzip2_trace, sites, tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod, "memory_image_index", lambda i, lead: np.asarray(i, np.int64))   # memory as of i
    build_dataset(bzip2_trace, sites, tmp_path / "leaky", DatasetConfig(lead=LEAD), progress=False)
    leaky = Dataset(tmp_path / "leaky")
    assert _memory_leaks(bzip2_trace, sites, leaky, tmp_path, addresses=False) > 0


def test_predicted_addresses_extrapolate_the_stride():
    addr, ok = predicted_addresses(a0=[100, 100, 0, 200], a1=[108, 108, 50, 192], known=[2, 2, 1, 2], n=[0, 3, 4, 2])
    assert list(ok) == [True, True, True, True] and list(addr) == [108, 132, 50, 176]
    _, ok = predicted_addresses(a0=[0], a1=[0], known=[0], n=[5])
    assert not ok[0]


def _shuffled(src, dst, lo: int, hi: int, keep: int | None = None, seed: int = 0):
    """A copy of the trace whose instructions ``lo..hi-1`` run the same static instructions in a random
    order (the trace executes the same code, so the site graphs stay the same; instruction ``keep``
    keeps its pc), with random registers and memory values."""
    rng = np.random.default_rng(seed)
    sid = np.concatenate([ch.insn["sid"] for ch in TraceReader(src).chunks(registers=False)])
    own = sid[keep] if keep is not None else None
    sid[lo:hi] = rng.permutation(sid[lo:hi])
    if keep is not None:
        p = lo + int(np.argmax(sid[lo:hi] == own))
        sid[p], sid[keep] = sid[keep], own

    def shuffle(ch, regs, vals):
        at = (ch.insn["idx"] >= lo) & (ch.insn["idx"] < hi)
        ch.insn["sid"] = sid[ch.first:ch.first + len(ch.insn)]
        regs[at] = rng.integers(0, 2**63, size=(int(at.sum()), regs.shape[1]), dtype=np.uint64)
        mat = (ch.mem["insn"] >= lo) & (ch.mem["insn"] < hi)
        vals[mat] = rng.integers(0, 2**63, size=int(mat.sum()), dtype=np.uint64)

    return rewrite_trace(src, dst, shuffle, sidecar=True)


def _changed_counts(trace, sites, ds: Dataset, tmp_path, side: str) -> int:
    """Rebuild from traces shuffled on one side of each probe's window [s, i): "after" = i and later
    (but i's own pc, which makes it a sample), "before" = before s; count probes whose counts changed."""
    a = ds.arrays
    changed = 0
    for j in np.linspace(len(a["idx"]) // 4, len(a["idx"]) - 1, 3).astype(int):
        i = int(a["idx"][j])
        lo, hi, keep = (i, 2**62, i) if side == "after" else (0, i - LEAD, None)
        other = tmp_path / f"{side}{j}"
        shuffled = _shuffled(trace, tmp_path / f"{side}{j}.ncft", lo, hi, keep)
        build_dataset(shuffled, sites, other, DatasetConfig(lead=LEAD), **_labels(ds),
                      progress=False)
        b = Dataset(other)
        assert np.array_equal(b.node_pc, ds.node_pc)   # the same code: the same graphs
        k = np.nonzero((b.arrays["idx"] == i) & (b.arrays["site"] == a["site"][j]))[0]
        assert len(k) == 1
        changed += not np.array_equal(a["fe_count"][j], b.arrays["fe_count"][k[0]])
    return changed


@pytest.mark.parametrize("side", ["after", "before"])
def test_frontend_counts_see_only_the_instructions_between_snapshot_and_prediction(bzip2_trace, sites, train_ds,
                                                                                  tmp_path, side):
    assert _changed_counts(bzip2_trace, sites, train_ds, tmp_path, side) == 0


@pytest.mark.parametrize("side", ["after", "before"])
def test_a_deliberate_frontend_leak_is_caught(bzip2_trace, sites, tmp_path, monkeypatch, side):
    wider = {"after": lambda i, lead: (np.asarray(i, np.int64) - lead, np.asarray(i, np.int64) + 50),
             "before": lambda i, lead: (np.asarray(i, np.int64) - lead - 50, np.asarray(i, np.int64))}
    monkeypatch.setattr(dsmod, "frontend_window", wider[side])
    out = tmp_path / "leaky"
    build_dataset(bzip2_trace, sites, out, DatasetConfig(lead=LEAD), progress=False)
    assert _changed_counts(bzip2_trace, sites, Dataset(out), tmp_path, side) > 0


def _outcomes_inverted_from(after: int):
    """``branch_chunks`` whose branch outcomes at and after instruction ``after`` (the trace's future)
    are all the opposite of the recorded ones (pcs, targets and kinds as recorded)."""
    real = dsmod.branch_chunks

    def chunks(reader):
        for ch, br in real(reader):
            yield ch, dataclasses.replace(br, taken=br.taken ^ (br.idx >= after))
    return chunks


def _tage_leaks(sites, ds: Dataset, trace, tmp_path, monkeypatch) -> int:
    """Rebuild with the outcomes inverted from each probe (a branch sample) on; count probes whose
    TAGE-SC-L features (prediction, confidence, internals, g) changed. The inversion must change
    the samples after the probe."""
    a = ds.arrays
    branch = np.nonzero(np.asarray(a["taken"]) >= 0)[0]
    changed = 0
    for j in branch[np.linspace(len(branch) // 4, len(branch) - 10, 3).astype(int)]:
        with monkeypatch.context() as m:
            m.setattr(dsmod, "branch_chunks", _outcomes_inverted_from(int(a["idx"][j])))
            build_dataset(trace, sites, tmp_path / f"out{j}", DatasetConfig(lead=LEAD),
                          **_labels(ds), progress=False)
        b = Dataset(tmp_path / f"out{j}").arrays
        assert np.array_equal(a["idx"], b["idx"]) and np.array_equal(a["site"], b["site"])
        assert a["taken"][j] != b["taken"][j]
        later = np.arange(len(a["idx"])) > j
        assert not np.array_equal(a["tage_detail"][later], b["tage_detail"][later])   # the future did change
        changed += not all(np.array_equal(a[n][j], b[n][j]) for n in ("tage_pred", "tage_conf", "tage_detail", "g"))
    return changed


def test_tage_internals_do_not_depend_on_the_outcome_or_the_future(sites, train_ds, bzip2_trace, tmp_path,
                                                                   monkeypatch):
    assert _tage_leaks(sites, train_ds, bzip2_trace, tmp_path, monkeypatch) == 0


def test_a_tage_feature_that_peeks_at_the_outcome_is_caught(sites, bzip2_trace, tmp_path, monkeypatch):
    class Peeking(TageScL):
        def run_detail(self, pc, target, taken, kind):
            pred, conf, detail = super().run_detail(pc, target, taken, kind)
            detail[:, TAGE_DETAIL_COLUMNS.index("alt_pred")] = taken    # the outcome itself
            return pred, conf, detail

    monkeypatch.setattr(dsmod, "TageScL", Peeking)
    build_dataset(bzip2_trace, sites, tmp_path / "leaky", DatasetConfig(lead=LEAD), progress=False)
    leaky = Dataset(tmp_path / "leaky")
    assert _tage_leaks(sites, leaky, bzip2_trace, tmp_path, monkeypatch) > 0


def test_tage_encoding_of_known_internals():
    cols = {n: k for k, n in enumerate(TAGE_DETAIL_COLUMNS)}
    d = np.zeros((2, len(cols)), np.int32)
    d[0, [cols["provider_pred"], cols["used_alt"], cols["loop_hit"]]] = 1
    d[0, cols["provider_bank"]], d[0, cols["provider_ctr"]] = 36, 3          # longest table, saturated
    d[0, cols["sc_sum"]], d[0, cols["sc_thres"]] = -100, 150                 # |sum| >= thres/2, not >= thres
    d[1, cols["provider_ctr"]], d[1, cols["sc_sum"]], d[1, cols["sc_thres"]] = -1, 400, 100  # bimodal, weak
    e = encode_tage(d)
    assert e.shape == (2, G_TAGE_DETAIL.stop - G_TAGE_DETAIL.start)
    assert list(e[0]) == [1, 0, 1, 0] + [1] * 6 + [1, 1, 1] + [1, 0, 0, 0] + [0, 1, 1, 0] + [0, 1, 1, 0] + [0]
    assert list(e[1]) == [0, 0, 0, 0] + [0] * 6 + [0, 0, 0] + [0, 0, 0, 0] + [1, 1, 1, 1] + [1, 1, 1, 1] + [0]


def test_samples_are_in_time_order_with_labels_per_task(train_ds):
    a, meta = train_ds.arrays, train_ds.meta
    assert (np.diff(a["idx"]) >= 0).all()
    branch = a["taken"] >= 0
    assert branch.any() and (~branch).any()
    assert (a["delta"][branch] == -1).all() and (a["delta"][~branch] >= 0).any()   # loads: -1 = no label
    assert a["delta"].max() < meta["config"]["delta_classes"]
    assert (a["idx"] >= LEAD).all()
    assert meta["samples_per_task"]["branch"] == int(branch.sum())


def test_site_graphs_point_at_the_compare_that_feeds_the_branch(train_ds):
    static, adj = train_ds.static, train_ds.adj
    assert static.shape[1:] == (32, F_STATIC) and adj.shape[1:] == (N_EDGE_TYPES, 32, 32)
    flow = RELATIONS.index("dataflow")
    for k, site in enumerate(train_ds.meta["sites"]):
        assert site["nodes"][0].startswith(f"insn {site['pc']:#x}")   # node 0 is the target
        if site["task"] == "branch" and site["nodes"][0].split()[2].startswith("j"):
            assert adj[k, flow, 0].any(), site["nodes"]   # the flags' producer flows into the branch
    # every dynamic slot points at a register or a memory slot of that site
    assert ((train_ds.dyn_slot == -1) | (train_ds.dyn_slot < 16 + 8)).all()


def test_value_encoding_separates_small_integers_from_pointers():
    enc = encode_values(np.array([5, 2**64 - 3, 0x7FFD12345678], np.uint64))
    assert enc[0, 0] == 1 and enc[0, 2] == 0 and enc[0, 8] == 1          # small, bit 0 of 5
    assert enc[1, 0] == 1 and enc[1, 1] == 1                             # -3: small and negative
    assert enc[2, 2] == 1 and enc[2, 0] == 0 and enc[2, 8 + 6:].sum() == 0  # pointer: only 6 low bits


def test_test_split_uses_the_training_sites_vocabulary_and_distances(bzip2_trace, sites, train_ds, native, inputs_dir,
                                                                     tmp_path):
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    test_trace = tmp_path / "bzip2-1.ncft"
    record(prepare("bzip2", 1, inputs_dir), test_trace, skip=10**6, count=300_000, progress=False)
    meta = build_dataset(test_trace, sites, tmp_path / "bzip2-1", DatasetConfig(lead=LEAD),
                         **_labels(train_ds), progress=False)
    assert meta["delta_vocabulary"] == train_ds.meta["delta_vocabulary"]
    assert meta["prefetch_distance"] == train_ds.meta["prefetch_distance"]
    assert meta["sites_from"] == str(bzip2_trace) and meta["input"] == 1
    assert {s["pc"] for s in meta["sites"]} <= set(sites["branch"]) | set(sites["load"])


def _same_dataset(a: Dataset, b: Dataset) -> bool:
    """Equal arrays, graphs and sidecars (but for what names the trace: the copy has a bare sidecar)."""
    trace_keys = ("trace", "trace_sha256", "workload", "input")
    same_meta = {k: v for k, v in a.meta.items() if k not in trace_keys} == \
        {k: v for k, v in b.meta.items() if k not in trace_keys}
    return (same_meta and a.arrays.keys() == b.arrays.keys()
            and all(np.array_equal(a.arrays[k], b.arrays[k]) and a.arrays[k].dtype == b.arrays[k].dtype
                    for k in a.arrays)
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("static", "adj", "dyn_slot", "node_pc", "site_pc")))


@pytest.fixture(scope="module")
def rechunked(bzip2_trace, tmp_path_factory):
    """The bzip2 trace in chunks of 577 instructions: hundreds of chunk boundaries, a lead of 1000 spans two."""
    return rewrite_trace(bzip2_trace, tmp_path_factory.mktemp("rechunked") / "bzip2-0.ncft", chunk_insns=577,
                         sidecar=True)


def test_sites_do_not_depend_on_the_chunk_size(rechunked, sites):
    assert {k: v for k, v in find_sites(rechunked).items() if k != "from_trace"} == \
        {k: v for k, v in sites.items() if k != "from_trace"}


def test_a_larger_load_share_adds_the_next_most_missing_loads(bzip2_trace, sites):
    """The loads holding 90% of the misses are the baseline harness's delinquent loads at that share (the
    whole trace's memory stream through the cache model at once, not chunk by chunk) and start with those
    holding 50%; a share that is no share is refused before the trace is read."""
    from ncf.trace_eval.cache import simulate
    from ncf.trace_eval.harness import delinquent_loads

    more = find_sites(bzip2_trace, max_loads=64, load_share=0.9)
    mem = memory_stream(TraceReader(bzip2_trace))
    base = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, prefetcher="none", n_insn=mem.n_insn)
    assert more["load"] == [d["pc"] for d in delinquent_loads(mem, base, 0.9, max_n=64)]
    assert more["branch"] == sites["branch"] and len(more["load"]) > len(sites["load"])
    assert more["load"][:len(sites["load"])] == sites["load"]
    with pytest.raises(UsageError, match="load_share 0"):
        find_sites(bzip2_trace, load_share=0)


@pytest.mark.parametrize("lead", [0, 1, 100, 1000])
def test_datasets_do_not_depend_on_the_chunk_size(bzip2_trace, rechunked, sites, lead, tmp_path):
    cfg = DatasetConfig(lead=lead, max_per_site=None if lead in (0, 100) else 500)
    build_dataset(bzip2_trace, sites, tmp_path / "a", cfg, progress=False)
    build_dataset(rechunked, sites, tmp_path / "b", cfg, progress=False)
    a = Dataset(tmp_path / "a")
    assert len(a) and (a.arrays["idx"] >= lead).all() and a.arrays["mem_pred_ok"].any()
    assert _same_dataset(a, Dataset(tmp_path / "b"))


def test_samples_match_their_definition_on_the_whole_trace(bzip2_trace, train_ds):
    """A reference from the whole trace in memory: registers before i - lead, the front-end counts
    of [i - lead, i), memory before i - lead at the extrapolated addresses, the branch outcome,
    TAGE-SC-L's prediction, the global history and the last branches before i; per load its distance k
    (the smallest k whose median gap reaches the prefetch latency), the vocabulary of k-step deltas, the
    label line(j-1+k) - line(j-1) and the history of k-step deltas up to access j-1."""
    r = TraceReader(bzip2_trace)
    chunks = list(r.chunks())
    regs = np.concatenate([ch.insn["regs"][:, :16] for ch in chunks])
    pcs = np.concatenate([ch.insn["pc"] for ch in chunks])
    acc = {k: np.concatenate([ch.mem[k] for ch in chunks]) for k in ("insn", "addr", "val")}
    acc_pc = pcs[acc["insn"].astype(np.int64)]
    br, mem = branch_stream(TraceReader(bzip2_trace)), memory_stream(TraceReader(bzip2_trace))
    tage_pred, _, tage_detail = TageScL().run_detail(br.pc, br.target, br.taken, br.kind)
    cond_taken, cond_idx = br.taken[br.cond], br.idx[br.cond].astype(np.int64)
    a, vocab = train_ds.arrays, train_ds.meta["delta_vocabulary"]
    lines, dist, counts = {}, {}, {}
    for pc in train_ds.meta["prefetch_distance"]:
        q = np.nonzero(~mem.is_store & (mem.pc == int(pc, 16)))[0]
        idx = mem.idx[q].astype(np.int64)
        dist[pc] = next((k for k in range(1, MAX_DISTANCE + 1) if len(idx) > k
                         and np.median(idx[k:] - idx[:-k]) >= CacheConfig().prefetch_latency), MAX_DISTANCE)
        lines[pc] = (mem.addr[q] // LINE).astype(np.int64)
        for d in lines[pc][dist[pc]:] - lines[pc][:-dist[pc]]:
            counts[int(d)] = counts.get(int(d), 0) + 1
    assert train_ds.meta["prefetch_distance"] == dist and 1 < max(dist.values())
    assert vocab == sorted(counts, key=lambda d: (-counts[d], abs(d), d))[:15]
    loops = moved = found = 0
    for j in np.linspace(0, len(a["idx"]) - 1, 200).astype(int):
        i, site = int(a["idx"][j]), train_ds.meta["sites"][a["site"][j]]
        assert (a["dynval"][j, :16] == regs[i - LEAD]).all()
        node_pc = train_ds.node_pc[a["site"][j]]
        count = [(pcs[i - LEAD:i] == p).sum() if p else 0 for p in node_pc]
        assert (a["fe_count"][j] == count).all()
        loops += a["fe_count"][j, 0] > 1     # the site ran more than once since the snapshot
        for k, pc in enumerate(site["mem_pcs"]):
            mine = np.nonzero((acc_pc == pc) & (acc["insn"] < i - LEAD))[0][-2:]   # its last accesses before s
            want = (0, 0)
            if len(mine):
                a1, a0 = int(acc["addr"][mine[-1]]), int(acc["addr"][mine[0]])
                guess = (a1 + int((pcs[i - LEAD:i] == pc).sum()) * (a1 - a0)) % 2**64
                moved += guess != a1
                at = np.nonzero((acc["addr"] == guess) & (acc["insn"] < i - LEAD))[0]
                want = (int(acc["val"][at[-1]]), 1) if len(at) else (0, 0)
            assert (int(a["mem_pred"][j, k]), int(a["mem_pred_ok"][j, k])) == want
            found += want[1]
        assert not a["mem_pred_ok"][j, len(site["mem_pcs"]):].any()
        hist = cond_taken[:np.searchsorted(cond_idx, i)][-HIST_BITS:]
        assert (a["g"][j, 2 + HIST_BITS - len(hist):2 + HIST_BITS] == hist).all()
        hist = train_ds.branch_history([j], 600)[0]          # the last 600 branches before i, oldest first
        k = int(np.searchsorted(br.idx, i))
        last = branch_tokens(br.pc[max(k - 600, 0):k], br.taken[max(k - 600, 0):k])
        assert (hist[600 - len(last):] == last).all() and (hist[:600 - len(last)] == 0).all()
        if site["task"] == "branch":
            k = int(np.searchsorted(br.idx, i))
            assert a["taken"][j] == br.taken[k] and a["tage_pred"][j] == tage_pred[k]
            assert (a["tage_detail"][j] == tage_detail[k]).all()
            assert (a["g"][j, G_TAGE_DETAIL] == encode_tage(tage_detail[k])).all()
        else:
            line, k = lines[f"{site['pc']:#x}"], dist[f"{site['pc']:#x}"]
            m = int(np.searchsorted(mem.idx[(mem.pc == site["pc"]) & ~mem.is_store], i))   # access m at i
            want = line[m - 1 + k] - line[m - 1] if m - 1 + k < len(line) else None
            assert a["delta"][j] == (-1 if want is None else vocab.index(want) if want in vocab else len(vocab))
            hist = [line[e] - line[e - k] if e >= k else None for e in range(m - 16, m)]   # up to access m-1
            assert list(a["dhist"][j]) == [16 if d is None else vocab.index(d) if d in vocab else 15 for d in hist]
    assert loops > 0 and moved > 0 and found > 0
    look = train_ds.meta["memory_lookahead"]
    assert look["predicted"] >= look["address_right"] > 0 and look["predicted"] >= look["with_value"] > 0
    assert look["with_value"] == int(a["mem_pred_ok"].sum())
    for k, site in enumerate(train_ds.meta["sites"]):   # the last k - 1 accesses of a load have no label
        unlabelled = (np.asarray(a["site"]) == k) & (np.asarray(a["delta"]) < 0) & (np.asarray(a["taken"]) < 0)
        assert unlabelled.sum() == (dist[f"{site['pc']:#x}"] - 1 if site["task"] == "load" else 0)


def test_distance_1_labels_the_next_access_delta(bzip2_trace, sites, tmp_path):
    """k = 1 is the label before distances existed: the class of line(j) - line(j-1), with the vocabulary
    of those deltas, and the history of the same deltas before j."""
    meta = build_dataset(bzip2_trace, sites, tmp_path / "k1", DatasetConfig(lead=LEAD, task="prefetch",
                                                                           prefetch_distance=1), progress=False)
    ds, mem = Dataset(tmp_path / "k1"), memory_stream(TraceReader(bzip2_trace))
    assert set(meta["prefetch_distance"].values()) == {1}
    deltas = {}
    for pc in sites["load"]:
        line = (mem.addr[~mem.is_store & (mem.pc == pc)] // LINE).astype(np.int64)
        deltas[pc] = np.diff(line)
    values, counts = np.unique(np.concatenate(list(deltas.values())), return_counts=True)
    vocab = [int(values[k]) for k in sorted(range(len(values)), key=lambda k: (-counts[k], abs(values[k]), values[k]))]
    assert meta["delta_vocabulary"] == vocab[:15]
    cls = {pc: np.array([vocab.index(d) if vocab.index(d) < 15 else 15 for d in d_pc]) for pc, d_pc in deltas.items()}
    a = ds.arrays
    for k, pc in enumerate(ds.site_pc):
        rows = np.nonzero(np.asarray(a["site"]) == k)[0]
        idx = mem.idx[~mem.is_store & (mem.pc == pc)].astype(np.int64)
        m = np.searchsorted(idx, np.asarray(a["idx"][rows]))      # the access at i; deltas[m - 1] is its delta
        assert np.array_equal(a["delta"][rows], cls[int(pc)][m - 1])
        padded = np.concatenate([np.full(16, 16), cls[int(pc)]])
        assert np.array_equal(a["dhist"][rows], padded[(m - 1)[:, None] + np.arange(16)])


def _load_input_leaks(trace, sites, ds: Dataset, tmp_path) -> int:
    """Rebuild from traces whose addresses, memory values and registers are scrambled from a load
    sample's instruction i on (its access j and later); count probes whose inputs changed. The
    scramble must change some labels (the k-th next access is after i)."""
    a = ds.arrays
    loads = np.nonzero(np.asarray(a["delta"]) >= 0)[0]
    changed = relabelled = 0
    for j in loads[np.linspace(len(loads) // 4, len(loads) - 1, 4).astype(int)]:
        bad = _scrambled(trace, tmp_path / f"load{j}.ncft", int(a["idx"][j]), addresses=True)
        build_dataset(bad, sites, tmp_path / f"load{j}", DatasetConfig(lead=LEAD), **_labels(ds), progress=False)
        b = Dataset(tmp_path / f"load{j}").arrays
        k = np.nonzero((b["idx"] == a["idx"][j]) & (b["site"] == a["site"][j]))[0]
        assert len(k) == 1
        changed += not all(np.array_equal(a[n][j], b[n][k[0]]) for n in ("g", "dhist", "dynval", "fe_count",
                                                                         "mem_pred", "mem_pred_ok", "tage_detail"))
        relabelled += a["delta"][j] != b["delta"][k[0]]
    assert relabelled > 0
    return changed


def test_load_inputs_do_not_depend_on_the_predicted_access_or_later(bzip2_trace, sites, train_ds, tmp_path):
    assert _load_input_leaks(bzip2_trace, sites, train_ds, tmp_path) == 0


def test_a_delta_history_that_reaches_the_predicted_access_is_caught(bzip2_trace, sites, tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod, "last_known_access", lambda j: np.asarray(j, np.int64))   # access j itself
    build_dataset(bzip2_trace, sites, tmp_path / "leaky", DatasetConfig(lead=LEAD), progress=False)
    assert _load_input_leaks(bzip2_trace, sites, Dataset(tmp_path / "leaky"), tmp_path) > 0


def test_merged_datasets_keep_each_windows_branch_history(train_ds, tmp_path):
    """Merging appends the branch streams: a sample reads only its own window's branches, so the first
    samples of the second part see padding, not the first part's last branches."""
    from ncf.model.dataset import concat_datasets

    concat_datasets([train_ds.path, train_ds.path], tmp_path / "merged")
    merged, n = Dataset(tmp_path / "merged"), len(train_ds)
    assert len(merged) == 2 * n and len(merged.branches) == 2 * len(train_ds.branches)
    rows = np.r_[0:5, n - 5:n]
    want = train_ds.branch_history(rows, 600)
    assert (want[:5, 0] == 0).all()                       # the window's first samples: padding
    assert np.array_equal(merged.branch_history(rows, 600), want)
    assert np.array_equal(merged.branch_history(rows + n, 600), want)
