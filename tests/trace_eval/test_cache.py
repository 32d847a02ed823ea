"""The cache model and prefetcher baselines: compiled core == Python reference, and behaviour."""
from __future__ import annotations

import numpy as np
import pytest
from ncf.trace_eval.synthetic import memory_stream as synthetic_stream
from ncf.trace_eval.cache import (
    HIT,
    LATE,
    MISS,
    NOT_ACCESSED,
    STAT_FIELDS,
    Berti,
    CacheConfig,
    Prefetcher,
    coverage,
    simulate,
    simulate_ref,
)

SMALL = CacheConfig(l1_size=4096, l1_ways=4, l2_size=32768, l2_ways=8)  # 16 and 64 sets


def mixed_stream(n: int, seed: int = 0):
    """Sequential, per-IP strided, random and reused accesses, in phases (so that BOP switches
    on and off), ~20 % stores, 1-4 instructions per access."""
    rng = np.random.default_rng(seed)
    pcs, addrs = [], []
    pos = {0x400: 0x10000000, 0x408: 0x20000000, 0x410: 0x30000000, 0x418: 0x38000000}
    strides = {0x400: 8, 0x408: 192, 0x410: -128, 0x418: 320}
    for i in range(n):
        phase = (i // 2500) % 4
        r = rng.random()
        if phase == 3 and r < 0.8:                         # random phase
            pcs.append(0x500 + 4 * int(rng.integers(4)))
            addrs.append(0x40000000 + int(rng.integers(1 << 24)))
        elif r < 0.65:                                     # strided loops
            ip = (0x400, 0x408, 0x410, 0x418)[int(rng.integers(2 if phase == 0 else 4))]
            pos[ip] += strides[ip]
            pcs.append(ip)
            addrs.append(pos[ip] + int(rng.integers(4)))
        elif r < 0.8:                                      # random
            pcs.append(0x500)
            addrs.append(0x40000000 + int(rng.integers(1 << 22)))
        else:                                              # hot, reused region
            pcs.append(0x600 + 4 * int(rng.integers(4)))
            addrs.append(0x50000000 + 64 * int(rng.integers(96)))
    is_store = rng.random(n) < 0.2
    insn_idx = np.cumsum(rng.integers(1, 5, size=n))
    return np.array(pcs), np.array(addrs, dtype=np.uint64), is_store, insn_idx


@pytest.fixture(scope="module")
def stream():
    return mixed_stream(20_000)


def assert_same(a, b):
    assert np.array_equal(a.l1, b.l1)
    assert np.array_equal(a.l2, b.l2)
    assert a.stats() == b.stats()


CASES = [("none", {}), ("next-line", {}), ("next-line", {"degree": 3}), ("ip-stride", {}),
         ("ip-stride", {"degree": 2, "sets": 4, "ways": 2, "threshold": 2}),
         ("ip-stride", {"distance": 4}),
         ("ip-stride", {"degree": 2, "distance": 3, "ip_distance": {0x408: 1, 0x410: 6}}),
         ("bop", {}),
         ("bop", {"dq_delay": 10, "round_max": 20, "bad_score": 3}), ("berti", {}),
         ("berti", {"degree": 2, "ips": 4, "deltas": 4, "hist_sets": 2, "hist_ways": 32, "period": 8,
                    "high": 75, "medium": 50})]


@pytest.mark.parametrize("fill_level", [1, 2])
@pytest.mark.parametrize("prefetcher,params", CASES)
def test_compiled_model_matches_reference(stream, prefetcher, params, fill_level):
    cfg = CacheConfig(l1_size=4096, l1_ways=4, l2_size=32768, l2_ways=8, fill_level=fill_level)
    a = simulate(*stream, prefetcher, cfg, **params)
    b = simulate_ref(*stream, prefetcher, cfg, **params)
    assert_same(a, b)
    if prefetcher != "none":
        assert a.pf_issued > 100 and a.pf_useful > 0


def test_compiled_model_matches_reference_with_default_caches_and_odd_set_count():
    s = synthetic_stream(30_000, seed=3)
    for cfg in (CacheConfig(), CacheConfig(l1_size=3 * 64 * 4, l1_ways=4, l2_size=24 * 64 * 8,
                                           l2_ways=8, prefetch_latency=0)):
        for pf in ("next-line", "ip-stride", "bop", "berti"):
            assert_same(simulate(*s, pf, cfg), simulate_ref(*s, pf, cfg))


def test_prefetch_accounting_balances(stream):
    for pf in ("next-line", "ip-stride", "bop", "berti"):
        r = simulate(*stream, pf, SMALL)
        assert r.pf_issued == r.pf_useful + r.pf_useless + r.pf_unused_at_end
        assert r.pf_requested >= r.pf_issued and r.pf_useful >= r.pf_late
        assert r.loads + r.stores == len(stream[0])
        assert r.l1_load_late + r.l2_load_late <= r.pf_late


def test_warmup_keeps_state_but_drops_statistics(stream):
    full = simulate(*stream, "bop", SMALL)
    warm = simulate(*stream, "bop", SMALL, warmup=7000)
    assert_same(warm, simulate_ref(*stream, "bop", SMALL, warmup=7000))
    assert np.array_equal(full.l1, warm.l1)            # same state evolution
    assert warm.loads + warm.stores == len(stream[0]) - 7000
    assert warm.l1_load_misses == np.sum((full.l1[7000:] == MISS) & ~stream[2][7000:])


def test_lru_evicts_least_recently_used_line():
    cfg = CacheConfig(l1_size=2 * 2 * 64, l1_ways=2, l2_size=4 * 64, l2_ways=4)  # L1: 2 sets
    a, b, c = 0x0000, 0x0080, 0x0100           # lines 0, 2, 4: all in L1 set 0
    seq = [a, b, a, c, b, a, c]
    #      miss miss hit miss(evicts b) miss(evicts a) miss(evicts c) miss(evicts b)
    want_l1 = [MISS, MISS, HIT, MISS, MISS, MISS, MISS]
    want_l2 = [MISS, MISS, NOT_ACCESSED, MISS, HIT, HIT, HIT]
    n = len(seq)
    args = (np.zeros(n), np.array(seq), np.zeros(n, bool), np.arange(n))
    for run in (simulate, simulate_ref):
        r = run(*args, "none", cfg)
        assert r.l1.tolist() == want_l1 and r.l2.tolist() == want_l2
        assert (r.loads, r.l1_load_misses, r.l2_load_misses) == (7, 6, 3)
    # touching b instead of a before c makes a the victim
    seq2 = [a, b, b, c, b, a]
    r = simulate(np.zeros(6), np.array(seq2), np.zeros(6, bool), np.arange(6), "none", cfg)
    assert r.l1.tolist() == [MISS, MISS, HIT, MISS, HIT, MISS]


def scan(n_lines, step=8, gap=1, base=0x10000000):
    addr = base + step * np.arange(n_lines * 64 // step)
    n = len(addr)
    return np.full(n, 0x400), addr, np.zeros(n, bool), gap * np.arange(n)


def test_next_line_covers_a_sequential_scan():
    s = scan(2000)
    base, nl = simulate(*s, "none"), simulate(*s, "next-line")
    assert base.l1_load_misses == 2000
    assert coverage(base, nl) > 0.99 and nl.accuracy > 0.99


def test_ip_stride_learns_a_per_ip_stride():
    n = 6000
    k = np.arange(n) // 2
    ip = np.where(np.arange(n) % 2 == 0, 0x400, 0x480)
    addr = np.where(ip == 0x400, 0x10000000 + 128 * k, 0x20000000 - 192 * k)   # +2 and -3 lines
    s = (ip, addr, np.zeros(n, bool), 3 * np.arange(n))
    base = simulate(*s, "none")
    stride = simulate(*s, "ip-stride")
    assert coverage(base, stride) > 0.85 and stride.accuracy > 0.95
    assert coverage(base, simulate(*s, "next-line")) < 0.05
    assert_same(stride, simulate_ref(*s, "ip-stride"))


def test_ip_stride_distance_prefetches_further_ahead_and_in_time():
    # one IP, +1 line every 40 instructions: distance 1 is late (latency 200), distance 6 in time;
    # both cover (a late prefetch is a hit), but distance 6 cannot prefetch across the 4 KiB page
    n = 4000
    s = (np.full(n, 0x400), 0x10000000 + 64 * np.arange(n), np.zeros(n, bool), 40 * np.arange(n))
    base, near = simulate(*s, "none"), simulate(*s, "ip-stride", degree=1)
    far = simulate(*s, "ip-stride", degree=1, distance=6)
    assert near.late_fraction > 0.99 and far.late_fraction < 0.01
    assert coverage(base, far) > 0.85 and far.accuracy > 0.95   # not across a page: 6 of its 64 lines
    assert simulate(*s, "ip-stride").stats() == simulate(*s, "ip-stride", distance=1, ip_distance={}).stats()
    assert simulate(*s, "ip-stride", degree=1, ip_distance={0x400: 6}).stats() == far.stats()
    assert simulate(*s, "ip-stride", degree=1, distance=6, ip_distance={0x400: 1}).stats() == near.stats()


def test_bop_finds_the_best_offset():
    # every access is 5 lines after the previous one, 100 instructions apart: next-line never
    # helps, offset 5 always would (late by 100 instructions, which BOP's delay queue accepts)
    n = 20_000
    s = (np.full(n, 0x400), 0x10000000 + 5 * 64 * np.arange(n), np.zeros(n, bool),
         100 * np.arange(n))
    base = simulate(*s, "none")
    bop = simulate(*s, "bop")
    assert bop.pf_state == 5
    assert coverage(base, bop) > 0.8 and bop.accuracy > 0.9
    assert coverage(base, simulate(*s, "next-line")) == 0.0
    assert_same(bop, simulate_ref(*s, "bop"))
    # 1000 instructions apart, offset 5 is timely too: still 5, and no late prefetches
    s = s[:3] + (1000 * np.arange(n),)
    bop = simulate(*s, "bop")
    assert bop.pf_state == 5 and bop.pf_late == 0 and coverage(base, bop) > 0.8


def test_bop_turns_itself_off_when_no_offset_is_timely():
    # 1 instruction apart: no offset up to 40 lines would complete within 200 instructions
    n = 20_000
    s = (np.full(n, 0x400), 0x10000000 + 5 * 64 * np.arange(n), np.zeros(n, bool), np.arange(n))
    # (the first learning phase, 100 rounds of 46 triggers, prefetches with the default offset)
    bop = simulate(*s, "bop", warmup=5000)
    assert bop.pf_state == 0 and bop.pf_issued == 0
    assert_same(bop, simulate_ref(*s, "bop", warmup=5000))


def strided(n, stride, gap, ip=0x400, base=0x10000000, start=0):
    """One IP's accesses ``stride`` bytes apart, one every ``gap`` instructions."""
    return (np.full(n, ip), base + stride * np.arange(n), np.zeros(n, bool), start + gap * np.arange(n))


def interleave(*streams):
    """Merge streams by instruction index (stable: ties keep the argument order)."""
    cols = [np.concatenate([np.asarray(s[k]) for s in streams]) for k in range(4)]
    order = np.argsort(cols[3], kind="stable")
    return tuple(c[order] for c in cols)


def berti_deltas(pf: Berti) -> dict:
    """ip -> {delta: status} of the deltas Berti prefetches with (status 2 = high, 1 = medium)."""
    return {ip: {d: st for d, _, st in e[1] if d and st} for ip, e in pf.table.items()}


BERTI_STREAMS = {
    # one line per access, 50 instructions apart: with a latency of 200, deltas >= 4 are timely
    "stride": strided(8000, 64, 50),
    # two IPs in one history set: +2 lines every 30 and -3 lines every 70
    # instructions, and a third IP of random lines that must not take over their deltas
    "two-ips": interleave(strided(6000, 128, 30, ip=0x800), strided(3000, -192, 70, ip=0x824, base=0x30000000),
                          (np.full(2000, 0x1000), 0x50000000 + 64 * np.random.default_rng(3).integers(0, 1 << 20, 2000),
                           np.zeros(2000, bool), 1 + 97 * np.arange(2000))),
    # 8-byte steps, 2 instructions apart: 16 instructions per line, so only deltas >= 13 lines are
    # timely, and the 16-entry history reaches back 16 lines (misses and prefetched hits only)
    "long-delta": strided(40_000, 8, 2),
}


@pytest.mark.parametrize("name", list(BERTI_STREAMS))
def test_berti_compiled_model_matches_reference_on_streams_made_for_it(name):
    s = BERTI_STREAMS[name]
    for cfg, params in ((CacheConfig(), {}), (SMALL, {"degree": 3, "deltas": 6, "period": 8, "high": 80}),
                        (CacheConfig(prefetch_latency=0, fill_level=2), {"hist_ways": 4, "ips": 1})):
        a = simulate(*s, "berti", cfg, **params)
        assert_same(a, simulate_ref(*s, "berti", cfg, **params))
        assert a.pf_issued > 0


def test_berti_compiled_model_matches_reference_on_a_real_trace(bzip2_trace):
    from ncf.trace_eval.streams import memory_stream
    from ncf.trace_eval.format import TraceReader

    m = memory_stream(TraceReader(bzip2_trace))
    args = (m.pc, m.addr, m.is_store, m.idx)
    a = simulate(*args, "berti", n_insn=m.n_insn)
    assert_same(a, simulate_ref(*args, "berti", n_insn=m.n_insn))
    assert a.pf_useful > 0 and coverage(simulate(*args, "none"), a) > 0


def test_berti_prefetches_far_enough_ahead_when_the_latency_spans_several_strides():
    # one line every 50 instructions, latency 200: next-line and IP-stride (degree 3) prefetch
    # lines needed 50-150 instructions later, always late; Berti learns deltas >= 4, in time
    s = BERTI_STREAMS["stride"]
    base = simulate(*s, "none")
    ref = Berti()
    berti = simulate_ref(*s, ref)
    assert_same(berti, simulate(*s, "berti"))
    assert set(berti_deltas(ref)[0x400]) == set(range(4, 17))       # 16 history entries back
    assert coverage(base, berti) > 0.9 and berti.accuracy > 0.99       # not lines 0-3 of a page
    assert berti.late_fraction < 0.01
    for pf in ("next-line", "ip-stride"):
        r = simulate(*s, pf)
        assert r.pf_useful > 7500 and r.late_fraction > 0.99, pf


def test_berti_keeps_deltas_per_ip_and_only_timely_ones():
    ref = Berti()
    r = simulate_ref(*BERTI_STREAMS["two-ips"], ref)
    got = berti_deltas(ref)
    assert got[0x800] and all(d % 2 == 0 and d // 2 * 30 >= 200 for d in got[0x800])      # d >= 14
    assert got[0x824] and all(d % 3 == 0 and -d // 3 * 70 >= 200 for d in got[0x824])     # d <= -9
    assert 0x1000 not in got
    assert r.accuracy > 0.9
    ref = Berti()
    r = simulate_ref(*BERTI_STREAMS["long-delta"], ref)
    assert set(berti_deltas(ref)[0x400]) == {13, 14, 15, 16}
    assert coverage(simulate(*BERTI_STREAMS["long-delta"], "none"), r) > 0.75   # not lines 0-12 of a page
    assert r.late_fraction < 0.01


def test_random_addresses_get_no_coverage():
    rng = np.random.default_rng(7)
    n = 50_000
    s = (rng.integers(0x400, 0x440, n), 0x40000000 + rng.integers(0, 1 << 28, n),
         np.zeros(n, bool), 2 * np.arange(n))
    base = simulate(*s, "none")
    for pf in ("next-line", "ip-stride", "bop", "berti"):
        r = simulate(*s, pf)
        assert abs(coverage(base, r)) < 0.01, pf
        assert r.accuracy < 0.02, pf


def test_late_prefetches_are_counted_when_latency_exceeds_reuse_distance():
    s = scan(1000, step=64, gap=10)            # each line once, 10 instructions apart
    late = simulate(*s, "next-line", CacheConfig(prefetch_latency=200))
    assert late.pf_useful == 999 and late.pf_late == 999
    assert late.l1_load_late == 999 and late.l1_load_misses == 1
    assert late.pf_late_wait == 999 * (200 - 10)
    assert set(late.l1.tolist()) == {MISS, LATE}
    timely = simulate(*s, "next-line", CacheConfig(prefetch_latency=5))
    assert timely.pf_useful == 999 and timely.pf_late == 0 and timely.pf_late_wait == 0
    assert_same(late, simulate_ref(*s, "next-line", CacheConfig(prefetch_latency=200)))


def test_fill_level_l2_prefetches_only_into_the_l2():
    s = scan(2000, step=64, gap=1000)
    base = simulate(*s, "none")
    l2 = simulate(*s, "next-line", CacheConfig(fill_level=2))
    assert l2.l1_load_misses == base.l1_load_misses
    assert l2.l2_load_misses == 1 and l2.pf_useful == 1999
    assert set(l2.l2[1:].tolist()) == {HIT}


def test_stores_are_counted_apart_from_loads(stream):
    r = simulate(*stream, "none", SMALL)
    st = stream[2]
    assert r.stores == st.sum() and r.loads == (~st).sum()
    assert r.l1_store_misses == np.sum((r.l1 == MISS) & st)
    assert r.l1_load_misses == np.sum((r.l1 == MISS) & ~st)


class NextTwo(Prefetcher):
    """A user prefetcher: the same as next-line with degree 2."""

    def operate(self, addr, ip, hit):
        line = self.line(addr)
        return [(line + 1) * self.line_size, (line + 2) * self.line_size + 5]


def test_python_prefetcher_subclass_runs_in_the_reference_model(stream):
    mine = simulate(*stream, NextTwo(), SMALL)
    assert_same(mine, simulate(*stream, "next-line", SMALL, degree=2))


def test_bad_arguments_are_rejected(stream):
    with pytest.raises(ValueError):
        CacheConfig(l1_size=1000)
    with pytest.raises(TypeError):
        simulate(*stream, "ip-stride", SMALL, bogus=1)
    for bad in ({"distance": 0}, {"ip_distance": {0x400: 0}}):
        with pytest.raises(ValueError, match="ip-stride"):
            simulate(*stream, "ip-stride", SMALL, **bad)
    with pytest.raises(ValueError):
        simulate(*stream, "stream-buffer", SMALL)
    for bad in ({"high": 30, "medium": 50}, {"medium": 0}, {"hist_ways": 0}, {"deltas": 65}, {"period": 0}):
        with pytest.raises(ValueError, match="berti"):
            simulate(*stream, "berti", SMALL, **bad)
    pc, addr, st, t = stream
    with pytest.raises(ValueError):
        simulate(pc, addr, st, t[::-1], "none", SMALL)
    assert len(STAT_FIELDS) == 16


# --- the "external" prefetcher: requests computed outside (e.g. by a learned model) ----------


def next_same_pc(pc, addr):
    """Per access, the address of the next access with the same pc (0 for the last one)."""
    pc, addr = np.asarray(pc), np.asarray(addr, dtype=np.uint64)
    order = np.argsort(pc, kind="stable")
    same = pc[order][1:] == pc[order][:-1]
    out = np.zeros(len(addr), dtype=np.uint64)
    out[order[:-1][same]] = addr[order[1:][same]]
    return out


def external_requests(stream, seed=1):
    """[n, 3]: the same-pc oracle, a random far address half the time, a nearby line (-4..+4)
    a third of the time; 0 = no request."""
    pc, addr = stream[0], stream[1]
    rng = np.random.default_rng(seed)
    n = len(addr)
    far = (0x40000000 + rng.integers(0, 1 << 22, n)) * (rng.random(n) < 0.5)
    near = (addr.astype(np.int64) + 64 * rng.integers(-4, 5, n)) * (rng.random(n) < 0.3)
    return np.stack([next_same_pc(pc, addr), far.astype(np.uint64), near.astype(np.uint64)], 1)


@pytest.mark.parametrize("fill_level", [1, 2])
def test_external_compiled_model_matches_reference(stream, fill_level):
    cfg = CacheConfig(l1_size=4096, l1_ways=4, l2_size=32768, l2_ways=8, fill_level=fill_level)
    req = external_requests(stream)
    a = simulate(*stream, "external", cfg, prefetch_addr=req)
    assert_same(a, simulate_ref(*stream, "external", cfg, prefetch_addr=req))
    assert a.pf_requested == np.count_nonzero(req)
    assert a.pf_issued > 1000 and a.pf_useful > 500 and a.pf_late > 0
    assert a.pf_issued == a.pf_useful + a.pf_useless + a.pf_unused_at_end
    w = simulate(*stream, "external", cfg, warmup=5000, prefetch_addr=req)
    assert_same(w, simulate_ref(*stream, "external", cfg, warmup=5000, prefetch_addr=req))
    assert np.array_equal(w.l1, a.l1)


def test_external_oracle_of_the_next_same_pc_access_covers_a_strided_stream():
    n = 6000
    k = np.arange(n) // 2
    ip = np.where(np.arange(n) % 2 == 0, 0x400, 0x480)
    addr = np.where(ip == 0x400, 0x10000000 + 128 * k, 0x20000000 - 192 * k)   # +2 and -3 lines
    s = (ip, addr, np.zeros(n, bool), 3 * np.arange(n))
    base = simulate(*s, "none")
    oracle = simulate(*s, "external", prefetch_addr=next_same_pc(ip, addr))
    assert coverage(base, oracle) > 0.99 and oracle.accuracy > 0.99
    assert oracle.pf_requested == n - 2 and oracle.pf_late == oracle.pf_useful  # 6 insn ahead
    assert_same(oracle, simulate_ref(*s, "external", prefetch_addr=next_same_pc(ip, addr)))


def test_external_next_line_requests_reproduce_next_line(stream):
    addr = stream[1]
    line = addr // np.uint64(64)
    req = (line + np.uint64(1)) * np.uint64(64)                   # [n]: K = 1
    for cfg in (SMALL, CacheConfig(fill_level=2)):
        nl = simulate(*stream, "next-line", cfg)
        assert_same(simulate(*stream, "external", cfg, prefetch_addr=req), nl)
        assert_same(simulate_ref(*stream, "external", cfg, prefetch_addr=req), nl)
    req3 = (line[:, None] + np.arange(1, 4, dtype=np.uint64)) * np.uint64(64) + np.uint64(5)
    assert_same(simulate(*stream, "external", SMALL, prefetch_addr=req3),
                simulate(*stream, "next-line", SMALL, degree=3))


def test_external_all_zero_requests_equal_none(stream):
    zero = np.zeros((len(stream[1]), 2), dtype=np.uint64)
    r = simulate(*stream, "external", SMALL, prefetch_addr=zero)
    assert_same(r, simulate(*stream, "none", SMALL))
    assert r.pf_requested == 0
    assert_same(simulate_ref(*stream[:2], stream[2], stream[3], "external", SMALL,
                             prefetch_addr=zero[:, 0]), r)


@pytest.mark.parametrize("name", ["bop", "berti", "ip-stride"])
def test_external_requests_beside_a_built_in_prefetcher(stream, name):
    """A learned prefetcher's rows beside a baseline (its loads' requests after the built-in's own): the
    compiled model matches the reference and all-zero rows leave the built-in alone. (The union may cover
    less than the rows alone: the built-in's requests evict.)"""
    cfg = CacheConfig(l1_size=4096, l1_ways=4, l2_size=32768, l2_ways=8, fill_level=1)
    req = external_requests(stream)
    both = simulate(*stream, name, cfg, prefetch_addr=req)
    assert_same(both, simulate_ref(*stream, name, cfg, prefetch_addr=req))
    alone = simulate(*stream, name, cfg)
    assert_same(simulate(*stream, name, cfg, prefetch_addr=np.zeros_like(req)), alone)
    assert both.pf_requested > np.count_nonzero(req)   # the built-in's own (BOP and Berti learn from the rows')
    assert not np.array_equal(both.l1, alone.l1)
    w = simulate(*stream, name, cfg, warmup=5000, prefetch_addr=req)
    assert_same(w, simulate_ref(*stream, name, cfg, warmup=5000, prefetch_addr=req))


def test_external_bad_arguments_are_rejected(stream):
    n = len(stream[1])
    ok = np.zeros(n, dtype=np.uint64)
    for run in (simulate, simulate_ref):
        for bad in (np.zeros(n - 1, np.uint64), np.zeros((n, 2, 2), np.uint64),
                    np.zeros((2, n), np.uint64), np.zeros(n, np.float64), np.zeros(n, bool),
                    -np.ones(n, np.int64)):
            with pytest.raises(ValueError, match="prefetch_addr"):
                run(*stream, "external", SMALL, prefetch_addr=bad)
        with pytest.raises(ValueError, match="prefetch_addr"):
            run(*stream, "external", SMALL)
        with pytest.raises(ValueError, match="prefetch_addr"):
            run(*stream, "none", SMALL, prefetch_addr=ok)
        with pytest.raises(ValueError, match="prefetch_addr"):
            run(*stream, NextTwo(), SMALL, prefetch_addr=ok)
        with pytest.raises(TypeError):
            run(*stream, "external", SMALL, prefetch_addr=ok, degree=2)
    # non-negative signed integers are accepted as addresses
    assert_same(simulate(*stream, "external", SMALL, prefetch_addr=ok.astype(np.int64)),
                simulate(*stream, "none", SMALL))
