"""A two-level data-cache model and L1D prefetcher baselines (compiled core + Python reference).

Model
-----
Every memory access of a trace (pc, address, load/store, instruction index), in order:

* **L1D and L2**: set-associative, true LRU, one line size, write-allocate, non-inclusive (no
  back-invalidation, no write-backs, no dirty state). Loads and stores both access the caches.
  An access uses the line of its address (``addr >> log2(line)``); an access that straddles two
  lines touches only the first. Set index = line number mod number of sets.
* A demand access that misses the L1D looks up the L2; on an L2 miss the line is filled into the
  L2, and in every case into the L1D. Demand misses complete at once: there is no timing model
  for demands, only for prefetches (below).
* **Prefetcher** at the L1D, trained on every demand access (loads and stores), like ChampSim's
  ``prefetcher_cache_operate(addr, ip, cache_hit, useful_prefetch, type)``. It returns addresses
  to prefetch (byte addresses; the line containing each is prefetched). A request is *dropped*
  when its line is already in the L1D, or (fill level L2) already in the L2; otherwise it is
  *issued*: filled at once into the L1D and the L2 (``fill_level=1``, the default; the L2 copy is
  an ordinary line) or into the L2 only (``fill_level=2``), evicting LRU victims as demands do.
* **Timeliness**, with time = instruction index: a prefetch issued at instruction ``t`` completes
  at ``t + prefetch_latency``. The line is in the cache from ``t`` on, marked *prefetched* at the
  fill level. The first demand that finds it is a *useful* prefetch; if that demand comes before
  completion it is also *late* (outcome ``LATE``: it saves only part of the latency; the rest,
  ``ready - t`` instructions, is summed in ``pf_late_wait``). A prefetched line evicted before any
  demand is *useless*. So ``pf_issued = pf_useful + pf_useless + pf_unused_at_end``.
* Prefetchers may also have a fill hook (ChampSim ``prefetcher_cache_fill``), called when an
  issued prefetch completes and when the fill of a demand L1D miss completes, both modelled as
  ``prefetch_latency`` instructions after the access (whatever level served the demand); the
  hook runs before the first access with ``insn_idx >= ready``, in issue order. Only BOP uses it
  (its RR table must learn which offsets would have been *timely*). ``insn_idx`` must be
  non-decreasing.

Defaults (:class:`CacheConfig`): 64-byte lines; L1D 48 KiB, 12-way (64 sets) and L2 2 MiB,
16-way (2048 sets), as in Intel Raptor Cove P-cores (AMD Zen 4: 32 KiB 8-way, 1 MiB 8-way);
prefetch latency 200 instructions (about one DRAM access at IPC ~1-2); fill level L1D; 4 KiB
pages (the page-boundary checks of IP-stride, BOP and Berti).

Per-access outcomes (``l1`` and ``l2`` arrays of :class:`CacheResult`, uint8): ``MISS`` = 0,
``HIT`` = 1, ``LATE`` = 2 (hit on a prefetched line still in flight), ``NOT_ACCESSED`` = 3 (L2
only: the L1D hit).

Metrics (fields of :class:`CacheResult`, ``STAT_FIELDS`` order = the C ``stats_out`` order):
``loads``, ``l1_load_misses``, ``l2_load_misses`` (demand loads with outcome ``MISS`` at that
level; late hits are not misses), ``stores``, ``l1_store_misses``, ``l2_store_misses``,
``l1_load_late``, ``l2_load_late`` (loads with outcome ``LATE``), ``pf_requested`` (addresses
returned by the prefetcher), ``pf_issued``, ``pf_useful``, ``pf_late`` (subset of useful),
``pf_useless``, ``pf_unused_at_end``, ``pf_late_wait`` (sum of remaining latency over late
prefetches, instructions), ``pf_state`` (BOP: its prefetch offset at the end, 0 = off; else 0).
Derived: ``accuracy = pf_useful / pf_issued``, ``l1_mpki = 1000 l1_load_misses / n_insn``,
``l2_mpki`` likewise, ``late_fraction = pf_late / pf_useful``. Coverage needs two runs (without
and with the prefetcher): ``coverage(base, with_pf) = (base.l1_load_misses -
with_pf.l1_load_misses) / base.l1_load_misses``.

Prefetchers (built in, in C and in Python; see ``trace_eval/native/cache.c`` for the sources
they follow and how they differ):

* ``"none"``;
* ``"next-line"``: on every access prefetch the next ``degree`` lines (ChampSim
  ``prefetcher/next_line``; no page check, as there);
* ``"ip-stride"``: per-IP (last line, stride, confidence) table, ``sets`` x ``ways`` LRU indexed
  by a hash of the IP; when a nonzero stride repeats (confidence >= ``threshold``) prefetch
  ``line + (distance + m)*stride``, m = 0..``degree``-1, within the page (ChampSim
  ``prefetcher/ip_stride`` and its DPC-2 predecessor are ``distance=1``, ``threshold=1``);
  ``ip_distance`` ({ip: distance}) gives some IPs their own distance;
* ``"bop"``: Michaud's Best-Offset prefetcher as submitted to DPC-2 (offset list, scores, rounds,
  RR table, delay queue; no MSHR throttling), triggered on L1D misses and first hits to
  prefetched lines; ``dq_delay`` is in instructions;
* ``"berti"``: Navarro-Torres et al.'s Berti (MICRO 2022): per-IP *local* deltas chosen by how
  many of the IP's misses they would have covered *in time*. On an L1D miss and on the first
  demand hit to a prefetched line at instruction ``now``, the IP's recent such accesses (history
  table: ``hist_sets`` x ``hist_ways`` FIFO, set = hash of the IP) are searched, newest first, for
  those with ``time + prefetch_latency <= now`` (a prefetch issued then would have been timely),
  stopping at one to the same line; each ``line - earlier line`` shorter than a page gets +1 in
  the IP's delta table (``ips`` entries, FIFO; ``deltas`` per IP, a new delta replaces the one
  with the lowest count without status, else with medium status). Every ``period`` searches of the
  IP a delta's status becomes *high* (count >= ``high`` % of ``period``), *medium* (>= ``medium``
  %) or none, and the counts restart. On every access the IP's high, then medium deltas (each by
  increasing ``|delta|``) give up to ``degree`` prefetches within the page;
* ``"external"``: requests computed outside, e.g. offline by a learned model (a GNN, an LSTM):
  ``prefetch_addr``, uint64 ``[n, K]`` (or ``[n]`` for K = 1), one row per access. After access
  ``i`` (where the built-in prefetchers' requests are issued) the nonzero entries of row ``i``
  are requested, in order, as byte addresses (the line containing each), with the same
  drop / issue / fill / latency / useful / late / useless accounting; 0 = no request.
  ``pf_requested`` counts the nonzero entries. For example, ``(addr // 64 + 1) * 64`` (K = 1)
  reproduces ``"next-line"`` exactly. ``prefetch_addr`` may also come with a built-in prefetcher
  (a learned prefetcher for its own loads beside the baseline for the rest): row ``i`` then
  follows the built-in's requests of access ``i``.

``simulate`` runs the compiled core (``build/native/libcache.so``, built by ``make native``); ``simulate_ref`` is a straightforward per-access Python model giving identical
outcomes and statistics, and also runs any :class:`Prefetcher` subclass.
"""
from __future__ import annotations

import ctypes
import inspect
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from .native_lib import load_library

MISS, HIT, LATE, NOT_ACCESSED = 0, 1, 2, 3
MASK64 = (1 << 64) - 1

STAT_FIELDS = ("loads", "l1_load_misses", "l2_load_misses", "stores", "l1_store_misses",
               "l2_store_misses", "l1_load_late", "l2_load_late", "pf_requested", "pf_issued",
               "pf_useful", "pf_late", "pf_useless", "pf_unused_at_end", "pf_late_wait",
               "pf_state")

PREFETCHER_KINDS = {"none": 0, "next-line": 1, "ip-stride": 2, "bop": 3, "external": 4, "berti": 5}
# Parameters of the built-in prefetchers, in the order of the C pf_params array, with defaults
# (ip-stride's ip_distance, {ip: distance} or None, goes to the C core apart: cache_ip_distances).
PREFETCHER_PARAMS = {
    "none": {},
    "next-line": {"degree": 1},
    "ip-stride": {"degree": 3, "sets": 256, "ways": 4, "threshold": 1, "distance": 1, "ip_distance": None},
    "bop": {"score_max": 31, "round_max": 100, "bad_score": 1, "dq_delay": 60,
            "default_offset": 1},
    "berti": {"degree": 16, "ips": 16, "deltas": 16, "hist_sets": 8, "hist_ways": 16, "period": 16,
              "high": 65, "medium": 35},
    "external": {},   # its requests come from the prefetch_addr array instead
}
N_PARAMS = 8  # length of the pf_params array


@dataclass(frozen=True)
class CacheConfig:
    l1_size: int = 48 * 1024
    l1_ways: int = 12
    l2_size: int = 2 * 1024 * 1024
    l2_ways: int = 16
    line_size: int = 64
    prefetch_latency: int = 200   # instructions from issue to completion of a prefetch
    fill_level: int = 1           # 1: prefetches fill L1D (and L2); 2: L2 only
    page_size: int = 4096

    def __post_init__(self):
        for name, size, ways in (("l1", self.l1_size, self.l1_ways),
                                 ("l2", self.l2_size, self.l2_ways)):
            if ways < 1 or size % (ways * self.line_size) or size < ways * self.line_size:
                raise ValueError(f"{name}: size {size} is not a positive multiple of "
                                 f"ways x line ({ways} x {self.line_size})")
        for name in ("line_size", "page_size"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two, not {v}")
        if self.page_size < self.line_size:
            raise ValueError("page_size < line_size")
        if self.fill_level not in (1, 2):
            raise ValueError("fill_level must be 1 (L1D) or 2 (L2)")
        if self.prefetch_latency < 0:
            raise ValueError("prefetch_latency must be >= 0")

    def as_array(self) -> np.ndarray:
        return np.array([self.l1_size, self.l1_ways, self.l2_size, self.l2_ways, self.line_size,
                         self.prefetch_latency, self.fill_level, self.page_size], dtype=np.int64)


@dataclass
class CacheResult:
    l1: np.ndarray                 # uint8 per access: MISS / HIT / LATE
    l2: np.ndarray                 # uint8 per access: MISS / HIT / LATE / NOT_ACCESSED
    n_insn: int | None = None      # instructions covered, for MPKI
    loads: int = 0
    l1_load_misses: int = 0
    l2_load_misses: int = 0
    stores: int = 0
    l1_store_misses: int = 0
    l2_store_misses: int = 0
    l1_load_late: int = 0
    l2_load_late: int = 0
    pf_requested: int = 0
    pf_issued: int = 0
    pf_useful: int = 0
    pf_late: int = 0
    pf_useless: int = 0
    pf_unused_at_end: int = 0
    pf_late_wait: int = 0
    pf_state: int = 0

    @property
    def l1_hit(self) -> np.ndarray:
        """bool per access: the L1D had the line (timely or late prefetch included)."""
        return self.l1 != MISS

    @property
    def l2_hit(self) -> np.ndarray:
        """bool per access: the L2 was looked up and had the line."""
        return (self.l2 == HIT) | (self.l2 == LATE)

    @property
    def accuracy(self) -> float:
        return self.pf_useful / self.pf_issued if self.pf_issued else 0.0

    @property
    def late_fraction(self) -> float:
        return self.pf_late / self.pf_useful if self.pf_useful else 0.0

    def _mpki(self, misses: int) -> float:
        if not self.n_insn:
            raise ValueError("MPKI needs n_insn (pass n_insn= to simulate)")
        return 1000.0 * misses / self.n_insn

    @property
    def l1_mpki(self) -> float:
        return self._mpki(self.l1_load_misses)

    @property
    def l2_mpki(self) -> float:
        return self._mpki(self.l2_load_misses)

    def stats(self) -> dict:
        return {k: getattr(self, k) for k in STAT_FIELDS}


def coverage(base: CacheResult, with_pf: CacheResult, level: int = 1) -> float:
    """Fraction of the demand-load misses of ``base`` (no prefetcher) removed by ``with_pf``."""
    key = "l1_load_misses" if level == 1 else "l2_load_misses"
    b = getattr(base, key)
    return (b - getattr(with_pf, key)) / b if b else 0.0


# ------------------------------------------------------------------------------------------------
# Prefetchers (Python): the base class and the reference versions of the built-in ones


class Prefetcher:
    """ChampSim-style L1D prefetcher for :func:`simulate_ref`.

    ``operate(addr, ip, hit)`` is called on every demand access (after the cache lookup) and
    returns byte addresses to prefetch (each prefetches the line containing it). It may also take
    ``useful_prefetch`` (the access was the first demand to a prefetched line) and ``is_store``
    as keyword parameters; they are passed only when the signature has them. ``fill(addr,
    prefetch)`` is called when an issued prefetch completes (``prefetch=True``) and when the
    fill of a demand L1D miss completes (``prefetch=False``), both ``prefetch_latency``
    instructions after the access. Before each call the simulator sets
    ``self.now`` (the current instruction index), ``self.index`` (the position of the current
    access in the stream), ``self.line_size``, ``self.page_size`` and ``self.prefetch_latency``.
    """

    now: int = 0
    index: int = 0
    line_size: int = 64
    page_size: int = 4096
    prefetch_latency: int = 200

    def operate(self, addr: int, ip: int, hit: bool) -> list[int]:
        return []

    def fill(self, addr: int, prefetch: bool) -> None:
        pass

    # helpers
    def line(self, addr: int) -> int:
        return addr // self.line_size

    def same_page(self, line_a: int, line_b: int) -> bool:
        lines_per_page = self.page_size // self.line_size
        return (line_a & MASK64) // lines_per_page == (line_b & MASK64) // lines_per_page


class NoPrefetcher(Prefetcher):
    pass


class NextLine(Prefetcher):
    """ChampSim ``prefetcher/next_line``: prefetch the next ``degree`` lines on every access."""

    def __init__(self, degree: int = 1):
        self.degree = degree

    def operate(self, addr, ip, hit):
        line = self.line(addr)
        return [((line + k) & MASK64) * self.line_size for k in range(1, self.degree + 1)]


class IPStride(Prefetcher):
    """Per-IP stride prefetcher after ChampSim ``prefetcher/ip_stride`` (and the DPC-2 version
    by S. Pugsley): per IP the last line, the last stride and a confidence (consecutive repeats
    of the stride, saturating at 3). A set-associative LRU table indexed by a hash of the IP.
    Prefetches ``line + (d + m) * stride``, m = 0..degree-1, d = ``ip_distance.get(ip, distance)``."""

    def __init__(self, degree: int = 3, sets: int = 256, ways: int = 4, threshold: int = 1, distance: int = 1,
                 ip_distance: dict | None = None):
        self.degree, self.sets, self.ways, self.threshold = degree, sets, ways, threshold
        self.distance, self.ip_distance = distance, dict(ip_distance or {})
        self.table = [OrderedDict() for _ in range(sets)]  # ip -> [last_line, stride, conf]

    def operate(self, addr, ip, hit):
        line = self.line(addr)
        s = self.table[(ip ^ (ip >> 8) ^ (ip >> 16)) % self.sets]
        e = s.get(ip)
        if e is None:
            if len(s) >= self.ways:
                s.popitem(last=False)
            s[ip] = [line, 0, 0]
            return []
        stride = (line - e[0]) & MASK64
        if stride >= 1 << 63:
            stride -= 1 << 64
        if stride == 0:
            return []
        e[2] = min(e[2] + 1, 3) if stride == e[1] else 0
        out = []
        if e[2] >= self.threshold:
            d = self.ip_distance.get(ip, self.distance)
            for m in range(self.degree):
                pf = (line + stride * (d + m)) & MASK64
                if not self.same_page(pf, line):
                    break
                out.append(pf * self.line_size)
        e[0], e[1] = line, stride
        s.move_to_end(ip)
        return out


class BestOffset(Prefetcher):
    """Michaud's Best-Offset prefetcher (DPC-2 submission; HPCA 2016), at the L1D, time in
    instructions. Triggered on misses and first demand hits to prefetched lines."""

    OFFSETS = (1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 9, -9, 10, -10, 11, -11,
               12, -12, 13, -13, 14, -14, 15, -15, 16, -16, 18, -18, 20, -20, 24, -24, 30, -30,
               32, -32, 36, -36, 40, -40)
    RRINDEX, RRTAG, DQSIZE = 6, 12, 15

    def __init__(self, score_max: int = 31, round_max: int = 100, bad_score: int = 1,
                 dq_delay: int = 60, default_offset: int = 1):
        self.score_max, self.round_max, self.bad_score = score_max, round_max, bad_score
        self.dq_delay, self.default_offset = dq_delay, default_offset
        self.prefetch_offset = default_offset
        self.rr = [[0] * (1 << self.RRINDEX), [0] * (1 << self.RRINDEX)]
        self.dq = deque()  # (line truncated to RRINDEX+RRTAG bits, time)
        self._reset_scores()

    def _reset_scores(self):
        self.scores = [0] * len(self.OFFSETS)
        self.max_score, self.best_offset, self.round, self.p = 0, 0, 0, 0

    def _tag(self, line):
        return (line >> self.RRINDEX) & ((1 << self.RRTAG) - 1)

    def _left(self, line):
        return (line ^ (line >> self.RRINDEX)) & ((1 << self.RRINDEX) - 1)

    def _right(self, line):
        return (line ^ (line >> (2 * self.RRINDEX))) & ((1 << self.RRINDEX) - 1)

    def _rr_hit(self, line):
        t = self._tag(line)
        return self.rr[0][self._left(line)] == t or self.rr[1][self._right(line)] == t

    def _dq_push(self, line):
        if len(self.dq) == self.DQSIZE:
            old, _ = self.dq.popleft()
            self.rr[0][self._left(old)] = self._tag(old)
        self.dq.append((line & ((1 << (self.RRINDEX + self.RRTAG)) - 1), self.now))

    def _dq_pop(self):
        while self.dq and self.now >= self.dq[0][1] + self.dq_delay:
            old, _ = self.dq.popleft()
            self.rr[0][self._left(old)] = self._tag(old)

    def _learn(self, line):
        off = self.OFFSETS[self.p]
        test = (line - off) & MASK64
        if self.same_page(line, test) and self._rr_hit(test):
            self.scores[self.p] += 1
            if self.scores[self.p] >= self.max_score:
                self.max_score, self.best_offset = self.scores[self.p], off
        if self.p == len(self.OFFSETS) - 1:
            self.round += 1
            if self.max_score >= self.score_max or self.round >= self.round_max:
                self.prefetch_offset = self.best_offset or self.default_offset
                if self.max_score <= self.bad_score:
                    self.prefetch_offset = 0
                self._reset_scores()
                return
        self.p = (self.p + 1) % len(self.OFFSETS)

    def operate(self, addr, ip, hit, useful_prefetch=False):
        self._dq_pop()
        if hit and not useful_prefetch:
            return []
        line = self.line(addr)
        self._learn(line)
        if self.prefetch_offset == 0:
            self._dq_push(line)
            return []
        pf = (line + self.prefetch_offset) & MASK64
        if not self.same_page(line, pf):
            return []
        self._dq_push(line)
        return [pf * self.line_size]

    def fill(self, addr, prefetch):
        if prefetch or self.prefetch_offset == 0:
            line = self.line(addr)
            base = (line - self.prefetch_offset) & MASK64
            if self.same_page(line, base):
                self.rr[1][self._right(base)] = self._tag(base)


class Berti(Prefetcher):
    """Berti, A. Navarro-Torres, B. Panda, J. Alastruey-Benedé, P. Ibáñez, V. Viñals-Yúfera and
    A. Ros, "Berti: an Accurate Local-Delta Data Prefetcher", MICRO 2022 (and its ChampSim port).

    Per IP, the deltas (current line - an earlier line of the same IP) that would have prefetched
    the IP's misses *in time*, ranked by coverage over ``period`` searches; see the module
    docstring for the tables. Simplifications: the fill latency is the model's constant
    ``prefetch_latency`` (Berti measures each fill's latency and searches when the fill arrives;
    here the latency is known at the access, so the search runs then); full IPs as tags; an IP
    enters the delta table at its first search that finds a timely delta and from then on every
    search counts; *medium* deltas are prefetched into the L1D after the *high* ones, as the
    ChampSim port does (it fills every selected delta into the L1D; the paper sends them to the
    L2), and there is no low-confidence fallback, MSHR-occupancy check or cross-page prefetch."""

    NONE, MEDIUM, HIGH = 0, 1, 2

    def __init__(self, degree: int = 16, ips: int = 16, deltas: int = 16, hist_sets: int = 8,
                 hist_ways: int = 16, period: int = 16, high: int = 65, medium: int = 35):
        self.degree, self.ips, self.deltas, self.period = degree, ips, deltas, period
        self.high, self.medium = high, medium
        self.hist = [deque(maxlen=hist_ways) for _ in range(hist_sets)]  # (ip, line, time), oldest first
        self.table = OrderedDict()  # ip -> [searches, [[delta, count, status] x deltas]], FIFO order

    def _history(self, ip):
        return self.hist[((ip >> 1) ^ (ip >> 4)) % len(self.hist)]

    def _timely_deltas(self, ip, line):
        """Deltas from the IP's history entries early enough for a timely prefetch, newest first."""
        span = self.page_size // self.line_size
        out = []
        for hip, hline, t in reversed(self._history(ip)):
            if hip != ip or t + self.prefetch_latency > self.now:
                continue
            if hline == line:
                break
            if abs(line - hline) < span:
                out.append(line - hline)
        return out

    def _count(self, slots, delta):
        """+1 for ``delta``; a new one takes a free slot, else replaces the lowest count without
        status, else the lowest count with medium status, else is dropped."""
        for s in slots:
            if s[0] == delta:
                s[1] = min(s[1] + 1, self.period)
                return
        free = [s for s in slots if s[0] == 0]
        if not free:
            for status in (self.NONE, self.MEDIUM):
                free = sorted((s for s in slots if s[2] == status), key=lambda s: s[1])
                if free:
                    break
        if free:
            free[0][:] = [delta, 1, self.NONE]

    def _search(self, ip, line):
        deltas = self._timely_deltas(ip, line)
        e = self.table.get(ip)
        if e is None:
            if not deltas:
                return
            if len(self.table) >= self.ips:
                self.table.popitem(last=False)
            e = self.table[ip] = [0, [[0, 0, self.NONE] for _ in range(self.deltas)]]
        e[0] += 1
        for d in deltas:
            self._count(e[1], d)
        if e[0] >= self.period:
            for s in e[1]:
                s[2] = (self.HIGH if 100 * s[1] >= self.high * self.period else
                        self.MEDIUM if 100 * s[1] >= self.medium * self.period else self.NONE)
                s[1] = 0
            e[0] = 0

    def operate(self, addr, ip, hit, useful_prefetch=False):
        line = self.line(addr)
        if not hit or useful_prefetch:
            self._search(ip, line)
            self._history(ip).append((ip, line, self.now))
        e = self.table.get(ip)
        if e is None:
            return []
        out = []
        for _, _, d in sorted((-s[2], abs(s[0]), s[0]) for s in e[1] if s[0] and s[2] != self.NONE):
            if len(out) == self.degree:
                break
            pf = (line + d) & MASK64
            if self.same_page(line, pf):
                out.append(pf * self.line_size)
        return out


PY_PREFETCHERS = {"none": NoPrefetcher, "next-line": NextLine, "ip-stride": IPStride,
                  "bop": BestOffset, "berti": Berti, "external": NoPrefetcher}   # external: rows only


def _params(prefetcher: str, params: dict) -> dict:
    if prefetcher not in PREFETCHER_PARAMS:
        raise ValueError(f"unknown prefetcher {prefetcher!r}; one of {list(PREFETCHER_PARAMS)}")
    known = PREFETCHER_PARAMS[prefetcher]
    bad = set(params) - set(known)
    if bad:
        raise TypeError(f"{prefetcher}: unknown parameters {sorted(bad)}; known: {list(known)}")
    out = {**known, **params}
    if prefetcher == "next-line" and not 0 <= out["degree"] <= 64:
        raise ValueError("next-line degree must be in 0..64")
    if prefetcher == "ip-stride" and (out["sets"] < 1 or out["ways"] < 1 or not 0 <= out["degree"] <= 64
                                      or min([out["distance"], *(out["ip_distance"] or {}).values()]) < 1):
        raise ValueError("ip-stride: sets, ways >= 1, degree in 0..64 and distances >= 1")
    if prefetcher == "berti" and (min(out["ips"], out["hist_sets"], out["period"]) < 1
                                  or not 1 <= out["hist_ways"] <= 256 or not 0 <= out["degree"] <= 64
                                  or not 1 <= out["deltas"] <= 64 or not 0 < out["medium"] <= out["high"] <= 100):
        raise ValueError("berti: ips, hist_sets, period >= 1, hist_ways in 1..256, degree in 0..64, deltas in "
                         "1..64 and 0 < medium <= high <= 100 (percent)")
    return out


def _as_arrays(pc, addr, is_store, insn_idx):
    pc = np.ascontiguousarray(pc, dtype=np.uint64)
    addr = np.ascontiguousarray(addr, dtype=np.uint64)
    is_store = np.ascontiguousarray(is_store, dtype=np.uint8)
    insn_idx = np.ascontiguousarray(insn_idx, dtype=np.uint64)
    n = len(addr)
    if not (len(pc) == len(is_store) == len(insn_idx) == n):
        raise ValueError("pc, addr, is_store and insn_idx must have the same length")
    if n > 1 and np.any(insn_idx[1:] < insn_idx[:-1]):
        raise ValueError("insn_idx must be non-decreasing")
    return pc, addr, is_store, insn_idx


def _external_rows(prefetcher, prefetch_addr, n: int):
    """Check ``prefetch_addr`` against ``prefetcher`` and the stream length ``n``; return it as a
    C-contiguous uint64 [n, K] array, or None when there is none."""
    if not isinstance(prefetcher, str):
        if prefetch_addr is not None:
            raise ValueError("prefetch_addr goes with a built-in prefetcher's name, not a Prefetcher object")
        return None
    if prefetch_addr is None:
        if prefetcher == "external":
            raise ValueError("prefetcher='external' needs prefetch_addr (uint64 [n, K] or [n])")
        return None
    if prefetcher == "none":
        raise ValueError("prefetch_addr with prefetcher='none': name it 'external'")
    a = np.asarray(prefetch_addr)
    if a.dtype.kind == "i":
        if a.size and a.min() < 0:
            raise ValueError("prefetch_addr: negative addresses (use uint64)")
    elif a.dtype.kind != "u":
        raise ValueError(f"prefetch_addr must be an unsigned integer (uint64) array, not {a.dtype}")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"prefetch_addr must have shape [n, K] or [n] with n = {n} accesses, "
                         f"not {list(np.shape(prefetch_addr))}")
    return np.ascontiguousarray(a, dtype=np.uint64)


# ------------------------------------------------------------------------------------------------
# compiled core


_lib = None


def _load_lib():
    global _lib
    if _lib is None:
        lib = load_library("libcache.so")
        p = ctypes.c_void_p
        lib.cache_new.argtypes = [p]
        lib.cache_new.restype = p
        lib.cache_free.argtypes = [p]
        lib.cache_free.restype = None
        lib.cache_n_stats.restype = ctypes.c_int
        lib.cache_ip_distances.argtypes = [p, ctypes.c_int64, p, p]
        lib.cache_ip_distances.restype = ctypes.c_int
        lib.cache_run.argtypes = [p, ctypes.c_int, p, p, p, p, p, ctypes.c_int64, p, p, p, p,
                                  ctypes.c_int64]
        lib.cache_run.restype = None
        if lib.cache_n_stats() != len(STAT_FIELDS):
            raise RuntimeError("libcache.so and cache.py disagree on the statistics")
        _lib = lib
    return _lib


class NativeCache:
    """The compiled model. Cache and prefetcher state persist across :meth:`run` calls (the
    prefetcher is reset when its kind or parameters change); each call returns its own stats."""

    handle = None

    def __init__(self, config: CacheConfig = CacheConfig()):
        self.lib = _load_lib()
        self.config = config
        self._cfg = config.as_array()
        self.handle = self.lib.cache_new(self._cfg.ctypes.data)
        if not self.handle:
            raise MemoryError("cache_new failed")

    def close(self):
        if self.handle:
            self.lib.cache_free(self.handle)
            self.handle = None

    __del__ = close

    def run(self, pc, addr, is_store, insn_idx, prefetcher: str = "none",
            n_insn: int | None = None, prefetch_addr=None, **params) -> CacheResult:
        prm = _params(prefetcher, params)
        table = prm.pop("ip_distance", None) or {}
        ips, ks = np.array(list(table), np.uint64), np.array(list(table.values()), np.int64)
        if self.lib.cache_ip_distances(self.handle, len(ips), ips.ctypes.data, ks.ctypes.data):
            raise MemoryError("cache_ip_distances failed")
        pc, addr, is_store, insn_idx = _as_arrays(pc, addr, is_store, insn_idx)
        n = len(addr)
        ext = _external_rows(prefetcher, prefetch_addr, n)
        pf = np.zeros(N_PARAMS, dtype=np.int64)
        pf[:len(prm)] = list(prm.values())
        l1 = np.empty(n, dtype=np.uint8)
        l2 = np.empty(n, dtype=np.uint8)
        st = np.zeros(len(STAT_FIELDS), dtype=np.int64)
        self.lib.cache_run(self.handle, PREFETCHER_KINDS[prefetcher], pf.ctypes.data,
                           pc.ctypes.data, addr.ctypes.data, is_store.ctypes.data,
                           insn_idx.ctypes.data, n, l1.ctypes.data, l2.ctypes.data,
                           st.ctypes.data, None if ext is None else ext.ctypes.data,
                           0 if ext is None else ext.shape[1])
        return CacheResult(l1=l1, l2=l2, n_insn=n_insn,
                           **{k: int(v) for k, v in zip(STAT_FIELDS, st)})


def simulate(pc, addr, is_store, insn_idx, prefetcher="none", config: CacheConfig = CacheConfig(),
             n_insn: int | None = None, warmup: int = 0, prefetch_addr=None,
             **params) -> CacheResult:
    """Run the model over a stream of accesses with the compiled core.

    ``prefetcher`` is a built-in name (``"none"``, ``"next-line"``, ``"ip-stride"``, ``"bop"``,
    ``"berti"``, parameters as keywords, see ``PREFETCHER_PARAMS``) or a :class:`Prefetcher`
    object (then the Python reference model runs it). ``"external"`` takes its requests from ``prefetch_addr``
    (uint64 ``[n, K]`` or ``[n]``, row i = byte addresses to prefetch after access i, 0 = none); with
    another built-in, ``prefetch_addr``'s requests follow the built-in's own.
    The first ``warmup`` accesses train the caches and the
    prefetcher but are left out of the statistics (their outcomes are still in ``l1``/``l2``).
    ``n_insn`` (instructions covered by the measured part) is needed only for MPKI.
    """
    if isinstance(prefetcher, Prefetcher):
        _external_rows(prefetcher, prefetch_addr, len(addr))
        return simulate_ref(pc, addr, is_store, insn_idx, prefetcher, config, n_insn, warmup)
    ext = _external_rows(prefetcher, prefetch_addr, len(addr))
    cache = NativeCache(config)
    try:
        if warmup:
            w = cache.run(pc[:warmup], addr[:warmup], is_store[:warmup], insn_idx[:warmup],
                          prefetcher, None, None if ext is None else ext[:warmup], **params)
            r = cache.run(pc[warmup:], addr[warmup:], is_store[warmup:], insn_idx[warmup:],
                          prefetcher, n_insn, None if ext is None else ext[warmup:], **params)
            r.l1 = np.concatenate([w.l1, r.l1])
            r.l2 = np.concatenate([w.l2, r.l2])
            return r
        return cache.run(pc, addr, is_store, insn_idx, prefetcher, n_insn, ext, **params)
    finally:
        cache.close()


# ------------------------------------------------------------------------------------------------
# reference model


class _Level:
    """One cache level: per set an OrderedDict line -> [prefetched, ready], LRU first."""

    def __init__(self, size, ways, line_size):
        self.ways = ways
        self.nsets = size // (ways * line_size)
        self.sets = [OrderedDict() for _ in range(self.nsets)]

    def set_of(self, line):
        return self.sets[line % self.nsets]

    def find(self, line):
        return self.set_of(line).get(line)

    def touch(self, line):
        self.set_of(line).move_to_end(line)

    def insert(self, line) -> bool:
        """Insert a line that is not present; True when an unused prefetched line was evicted."""
        s = self.set_of(line)
        evicted_pf = False
        if len(s) >= self.ways:
            _, meta = s.popitem(last=False)
            evicted_pf = meta[0]
        s[line] = [False, 0]
        return evicted_pf

    def unused(self):
        return sum(meta[0] for s in self.sets for meta in s.values())


def _wants(fn, name):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def simulate_ref(pc, addr, is_store, insn_idx, prefetcher="none",
                 config: CacheConfig = CacheConfig(), n_insn: int | None = None, warmup: int = 0,
                 prefetch_addr=None, **params) -> CacheResult:
    """Straightforward per-access Python version of :func:`simulate` (same model, same results);
    ``prefetcher`` may be a built-in name (with ``prefetch_addr`` or not) or any :class:`Prefetcher`
    object."""
    ext = _external_rows(prefetcher, prefetch_addr, len(addr))
    if isinstance(prefetcher, Prefetcher):
        if params:
            raise TypeError("parameters go to the Prefetcher object's constructor")
        pf = prefetcher
    else:
        prm = _params(prefetcher, params)
        pf = PY_PREFETCHERS[prefetcher](**({} if prefetcher == "external" else prm))
    rows = ext.tolist() if ext is not None else None
    pf.line_size, pf.page_size, pf.prefetch_latency = (config.line_size, config.page_size,
                                                       config.prefetch_latency)
    pass_useful = _wants(pf.operate, "useful_prefetch")
    pass_store = _wants(pf.operate, "is_store")
    has_fill = type(pf).fill is not Prefetcher.fill

    pc, addr, is_store, insn_idx = _as_arrays(pc, addr, is_store, insn_idx)
    n = len(addr)
    ls, lat, fill_l2 = config.line_size, config.prefetch_latency, config.fill_level == 2
    l1c = _Level(config.l1_size, config.l1_ways, ls)
    l2c = _Level(config.l2_size, config.l2_ways, ls)
    out1 = np.empty(n, dtype=np.uint8)
    out2 = np.empty(n, dtype=np.uint8)
    st = dict.fromkeys(STAT_FIELDS, 0)
    inflight = deque()  # (ready, line, is_prefetch) of fills in flight, for the fill hook

    def demand_prefetched(meta, now):
        meta[0] = False
        st["pf_useful"] += 1
        if now < meta[1]:
            st["pf_late"] += 1
            st["pf_late_wait"] += meta[1] - now
            return LATE
        return HIT

    def issue(line, now):
        if l1c.find(line) is not None:
            return False
        in_l2 = l2c.find(line) is not None
        if fill_l2:
            if in_l2:
                return False
            st["pf_useless"] += l2c.insert(line)
            l2c.find(line)[:] = [True, now + lat]
        else:
            if in_l2:
                l2c.touch(line)
            else:
                st["pf_useless"] += l2c.insert(line)
            st["pf_useless"] += l1c.insert(line)
            l1c.find(line)[:] = [True, now + lat]
        if has_fill:
            inflight.append((now + lat, line, True))
        return True

    pcs, addrs, stores, times = pc.tolist(), addr.tolist(), is_store.tolist(), insn_idx.tolist()
    for i in range(n):
        if i == warmup and warmup:
            st = dict.fromkeys(STAT_FIELDS, 0)
        now, line, store = times[i], addrs[i] // ls, bool(stores[i])
        pf.now, pf.index = now, i
        while inflight and inflight[0][0] <= now:
            _, fl, was_pf = inflight.popleft()
            pf.fill(fl * ls, was_pf)

        useful = False
        c2 = NOT_ACCESSED
        m1 = l1c.find(line)
        if m1 is not None:
            l1c.touch(line)
            c1 = HIT
            if m1[0]:
                useful = True
                c1 = demand_prefetched(m1, now)
        else:
            c1 = MISS
            m2 = l2c.find(line)
            if m2 is not None:
                l2c.touch(line)
                c2 = HIT
                if m2[0]:
                    useful = True
                    c2 = demand_prefetched(m2, now)
            else:
                c2 = MISS
                st["pf_useless"] += l2c.insert(line)
            st["pf_useless"] += l1c.insert(line)
        out1[i], out2[i] = c1, c2
        if store:
            st["stores"] += 1
            st["l1_store_misses"] += c1 == MISS
            st["l2_store_misses"] += c2 == MISS
        else:
            st["loads"] += 1
            st["l1_load_misses"] += c1 == MISS
            st["l2_load_misses"] += c2 == MISS
            st["l1_load_late"] += c1 == LATE
            st["l2_load_late"] += c2 == LATE

        kw = {}
        if pass_useful:
            kw["useful_prefetch"] = useful
        if pass_store:
            kw["is_store"] = store
        cands = pf.operate(addrs[i], pcs[i], c1 != MISS, **kw)
        if rows is not None:
            cands = [*cands, *(a for a in rows[i] if a)]
        if c1 == MISS and has_fill:
            inflight.append((now + lat, line, False))
        for a in cands:
            st["pf_requested"] += 1
            st["pf_issued"] += issue((int(a) & MASK64) // ls, now)

    st["pf_unused_at_end"] = l1c.unused() + l2c.unused()
    st["pf_state"] = pf.prefetch_offset if isinstance(pf, BestOffset) else 0
    return CacheResult(l1=out1, l2=out2, n_insn=n_insn, **{k: int(v) for k, v in st.items()})


__all__ = ["CacheConfig", "CacheResult", "Prefetcher", "NextLine", "IPStride", "BestOffset",
           "Berti", "NativeCache", "simulate", "simulate_ref", "coverage", "STAT_FIELDS",
           "PREFETCHER_PARAMS", "MISS", "HIT", "LATE", "NOT_ACCESSED"]
