"""Branch-predictor baselines: a compiled C core (trace_eval/native/bp.c, via ctypes) and
straightforward pure-Python references of the same algorithms (used by the tests).

Interface (ChampSim-like)
-------------------------
``predict(pc) -> bool`` for conditional branches; ``update(pc, target, taken, kind)`` for every
branch (after ``predict`` for conditionals; if it was not called, ``update`` calls it);
``run(pc, target, taken, kind) -> (pred bool[n], conf u8[n])`` on a whole stream; ``conf`` is
0 = low, 1 = medium, 2 = high confidence (meaningful where ``kind == COND``; 0 elsewhere);
``storage_bits()``. Non-conditional branches (JUMP, CALL, RET, IND_JUMP, IND_CALL) are treated
as taken: they update the global histories but are not predicted. TAGE-SC-L (C and reference) also
has ``run_detail(...) -> (pred, conf, detail int32[n, TAGE_DETAIL])``: its internals at each
prediction, before the update with the outcome (``TAGE_DETAIL_COLUMNS``); ``run`` is the same loop.

Algorithms and parameters
-------------------------
``Bimodal(log_size=14)``: 2^log_size 2-bit counters (init 1, weakly not-taken),
    ``i = (pc ^ pc>>2 ^ pc>>(log_size+2)) mod 2^log_size``, predict ``ctr >= 2``.
    conf: 2 for a saturated counter (0 or 3), 0 for a weak one (1 or 2).
    Storage ``2 * 2^log_size`` bits (16K entries: 32,768 bits).
``Gshare(hist_len=14, log_size=14)``: 2-bit counters indexed by
    ``(pc ^ pc>>2 ^ fold(h mod 2^hist_len, log_size)) mod 2^log_size`` where ``h`` is the global
    history (bit 0 = most recent outcome; every branch shifts in its direction, ChampSim style)
    and ``fold(x, b)`` XORs the b-bit chunks of x. conf as bimodal.
    Storage ``2 * 2^log_size + hist_len`` bits.
``HashedPerceptron(log_size=10, segments=DEFAULT_SEGMENTS, theta0=44, speed=18)``
    (Tarjan & Skadron, "Merging path and gshare indexing in perceptron branch prediction",
    TACO 2005; the adaptive threshold of Seznec's O-GEHL as in ChampSim's hashed_perceptron):
    one table of 8-bit weights per history segment ``[lo, hi)`` (``lo == hi``: a bias table
    indexed by pc only), table t indexed by
    ``(pc ^ pc>>2 ^ pc>>17 ^ fold((h >> lo) mod 2^(hi-lo), log_size) ^ 8t) mod 2^log_size``;
    ``y = sum_t w_t``, predict ``y >= 0``. Train (all weights += ±1, saturating at [-128, 127])
    when mispredicted or ``|y| < theta``; theta adapts: ``tc += 1`` on a misprediction,
    ``tc -= 1`` on a correct low-|y| one, ``theta ± 1`` when ``|tc|`` reaches ``speed``.
    conf: 2 if ``|y| >= theta``, 1 if ``|y| >= theta/2``, else 0. History: 128 bits.
    Storage ``8 * T * 2^log_size + 128 + 16`` bits (defaults: 16 tables x 1K -> 131,216 bits).
``TageScL()``: André Seznec's TAGE-SC-L, 64KB configuration of CBP-5 (2016), re-implemented
    from his ``predictor.h`` (CBP-2016 64KB entry; read e.g. in github.com/jiegec/cbp-experiments,
    predictors/AndreSeznec-TAGE-SC-L-64KB/predictor.h). Components:

    * TAGE: bimodal base (8K prediction bits, hysteresis shared by 4 entries); 36 logical tagged
      tables in pairs sharing one geometric history length ``L(k) = int(6*500^((k-1)/17)+0.5)``,
      k = 1..18 (6 ... 3000 bits); 21 of them are enabled (NOSKIP: both members of a pair
      for tables 9..22, else the even one, minus 4, 8, 30, 34). They are bank-interleaved into
      two physical arrays: tables 1-12 share 10 banks of 1K entries with 8-bit tags, tables
      13-36 share 20 banks of 1K entries with 12-bit tags; an entry has a 3-bit counter, a 1-bit
      useful bit and the tag. Indices hash pc, the folded global history and the 27-bit path
      history; the second table of a pair uses ``index ^ tag``. use_alt_on_na: 16 5-bit counters
      indexed by the provider's table group and the alternate's confidence. Allocation on a
      misprediction of up to 2 entries (NNN = 1) above the provider, skipping useful entries
      and decaying strong counters (OPTREMP); the TICK counter (10 bits) resets all useful bits
      when failed allocations dominate (BORNTICK = 1024). A branch inserts 2 bits (3 for
      indirect branches) of pc/direction into the global history.
    * Loop predictor: 32 entries, 4-way skewed, 10-bit tags, 10-bit iteration counts, 4-bit
      confidence and age; used when confident and the WITHLOOP 7-bit counter is >= 0.
    * Statistical corrector: three 256-entry bias tables (indexed with the TAGE confidence and
      provider bank) and GEHL-like components of 6-bit counters: global (backward-taken)
      history {40, 24, 10}, path {25, 16, 9}, three local histories ({11, 6, 3} with 256
      histories; {16, 11, 6} with 16; {9, 4} with 16), IMLI count {8} and the per-IMLI-count
      outcome history {10, 4}; per-component 6-bit weights (x1 or x2), a global 12-bit and 64
      per-pc 8-bit threshold counters; two 7-bit counters arbitrate between TAGE and SC when
      TAGE is high/medium confidence and |sum| is small.

    Confidence code (Seznec's high/medium/low classes): TAGE's is 2 if the provider counter is
    saturated (|2c+1| = 7; for the bimodal provider: saturated), 1 if |2c+1| = 5, else 0. The
    final code is 2 when the loop predictor provides the prediction; when SC overrides TAGE,
    1 if |sum| >= threshold else 0; when SC disagreed but TAGE was kept, min(TAGE's, 1);
    otherwise TAGE's.

    Differences from the CBP-5 code (all deliberate, none changes the configuration):
    a 32-bit unsigned version of the MYRANDOM pseudo-random generator (the original relies on
    signed overflow); the bank-interleaving hash of tables 13-36 uses the whole 27-bit path
    history (the original masks with 2^L(13)-1, an undefined 54-bit int shift); only the 18
    distinct folded-history registers of each kind are kept (the original updates 36
    duplicates); IMLI is kept as in the 64KB code (IMLI count + per-count history, a simplified
    IMLI-OH); no indirect-conditional branch kind exists in our traces, so the target is only
    used by IMLI and the backward-taken global SC history.

    Storage (bits), as computed by ``bp_storage_bits`` / ``tage_sc_l_storage()``:

    ====================================================  =========
    tagged tables 13-36: 20 banks x 1024 x (3+1+12)          327,680
    tagged tables 1-12: 10 banks x 1024 x (3+1+8)            122,880
    use_alt_on_na: 16 x 5                                         80
    bimodal: 8192 pred + 2048 hysteresis                      10,240
    global history 3000 + path history 27 + TICK 10            3,037
    loop predictor: 32 x (10+10+10+4+4+1)                      1,248
    SC thresholds: 12 + 64 x 8                                   524
    SC bias tables: 3 x 256 x 6                                4,608
    SC GEHL tables (6-bit): G 2048, P 1024, L 2048, S 1024,
      T 1024, IMLI-hist 512, IMLI-count 128 entries           46,848
    SC weights: 8 x 8 x 6                                        384
    SC histories: 40 + 256x11 + 16x16 + 16x9 + 8 + 256x10      5,824
    choser 2 x 7 + WITHLOOP 7                                     21
    total                                                    523,374  (<= 524,288 = 64 KB)
    ====================================================  =========
"""
from __future__ import annotations

import ctypes
import math

import numpy as np

from .native_lib import load_library

COND, JUMP, CALL, RET, IND_JUMP, IND_CALL = 0, 1, 2, 3, 4, 5
KIND_NAMES = {COND: "cond", JUMP: "jump", CALL: "call", RET: "ret", IND_JUMP: "ind_jump",
              IND_CALL: "ind_call"}
TAGE_SC_L_BUDGET_BITS = 64 * 1024 * 8

# TAGE-SC-L's internals at the prediction of a conditional branch (``run_detail``), before its update:
# the provider's and the alternate's predictions; the provider's signed counter (a tagged table's
# ctr in [-4, 3], the bimodal's BIM - 2 in [-2, 1]: >= 0 predicts taken); the provider's and the
# alternate's bank (0 = bimodal, 1..36: longer histories); whether use-alt-on-new-alloc chose the
# alternate; TAGE's prediction (before loop and SC); loop predictor hit, valid (confident), its
# prediction and whether it provided the prediction; the SC sum and its threshold; whether SC
# changed the prediction it was given (TAGE's or the loop's).
TAGE_DETAIL_COLUMNS = ("provider_pred", "alt_pred", "provider_ctr", "provider_bank", "alt_bank", "used_alt",
                       "tage_pred", "loop_hit", "loop_valid", "loop_pred", "loop_used", "sc_sum", "sc_thres",
                       "sc_flip")
TAGE_DETAIL = len(TAGE_DETAIL_COLUMNS)
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

# (lo, hi) history segments of the hashed perceptron; (0, 0) is the bias table
_BOUNDS = [0, 2, 4, 6, 8, 11, 14, 18, 22, 27, 33, 40, 50, 64, 90, 128]
DEFAULT_SEGMENTS: tuple[tuple[int, int], ...] = ((0, 0),) + tuple(zip(_BOUNDS[:-1], _BOUNDS[1:]))

_lib = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = load_library("libbp.so")
        lib.bp_new.restype = ctypes.c_void_p
        lib.bp_new.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.bp_free.argtypes = [ctypes.c_void_p]
        lib.bp_predict.restype = ctypes.c_int
        lib.bp_predict.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint8)]
        lib.bp_update.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int,
                                  ctypes.c_int]
        u64p, u8p = ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint8)
        lib.bp_run.argtypes = [ctypes.c_void_p, u64p, u64p, u8p, u8p, ctypes.c_int64, u8p, u8p]
        lib.bp_run_detail.restype = ctypes.c_int
        lib.bp_run_detail.argtypes = lib.bp_run.argtypes + [ctypes.POINTER(ctypes.c_int32)]
        lib.bp_storage_bits.restype = ctypes.c_int64
        lib.bp_storage_bits.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


class BranchPredictor:
    """Base class; subclasses implement predict/update/storage_bits (and may override run)."""
    name: str = "base"

    def predict(self, pc: int) -> bool:
        raise NotImplementedError

    def update(self, pc: int, target: int, taken: bool, kind: int) -> None:
        raise NotImplementedError

    def storage_bits(self) -> int:
        raise NotImplementedError

    last_conf: int = 0   # confidence code of the latest predict()

    def detail(self) -> tuple[int, ...]:
        """The internals of the latest predict(), TAGE_DETAIL_COLUMNS (the Python TAGE-SC-L reference)."""
        raise ValueError(f"{type(self).__name__}: only TageScLRef keeps the internals of its latest prediction "
                         "(TageScL: run_detail)")

    def run_detail(self, pc, target, taken, kind) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TAGE-SC-L: ``run`` and the internals of each prediction, int32 [n, TAGE_DETAIL] (zero rows
        for non-conditional branches)."""
        detail = np.zeros((len(pc), TAGE_DETAIL), np.int32)
        return (*self._run(pc, target, taken, kind, detail), detail)

    def run(self, pc, target, taken, kind) -> tuple[np.ndarray, np.ndarray]:
        """Whole stream: (pred bool[n], conf u8[n]); a Python loop over predict/update."""
        return self._run(pc, target, taken, kind, None)

    def _run(self, pc, target, taken, kind, detail: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``run``; if ``detail`` is given, its row i is also set to ``self.detail()`` after the
        prediction of conditional branch i (rows of other branches are left as they are)."""
        n = len(pc)
        pred = np.zeros(n, dtype=bool)
        conf = np.zeros(n, dtype=np.uint8)
        for i in range(n):
            p, t, k = int(pc[i]), int(target[i]), int(kind[i])
            if k == COND:
                pred[i] = self.predict(p)
                conf[i] = self.last_conf
                if detail is not None:
                    detail[i] = self.detail()
            self.update(p, t, bool(taken[i]), k)
        return pred, conf


# ------------------------------------------------------------------------------------------
# C-backed predictors
# ------------------------------------------------------------------------------------------
class _CPredictor(BranchPredictor):
    _kind: int = -1

    def __init__(self, params: list[int] | None):
        self._lib = _load()
        arr = (ctypes.c_int * len(params))(*params) if params is not None else None
        self._h = self._lib.bp_new(self._kind, arr)
        if not self._h:
            raise ValueError(f"bp_new rejected parameters {params}")
        self._conf = ctypes.c_uint8(0)

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            self._lib.bp_free(h)
            self._h = None

    def predict(self, pc: int) -> bool:
        r = self._lib.bp_predict(self._h, pc & M64, ctypes.byref(self._conf))
        self.last_conf = self._conf.value
        return bool(r)

    def update(self, pc: int, target: int, taken: bool, kind: int) -> None:
        self._lib.bp_update(self._h, pc & M64, target & M64, int(bool(taken)), int(kind))

    def storage_bits(self) -> int:
        return int(self._lib.bp_storage_bits(self._h))

    def _run(self, pc, target, taken, kind, detail: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``bp_run_detail`` (``detail``: an int32 [n, TAGE_DETAIL] array to fill, TAGE-SC-L only) or,
        without ``detail``, ``bp_run``: the same loop in the C core."""
        pc = np.ascontiguousarray(pc, dtype=np.uint64)
        target = np.ascontiguousarray(target, dtype=np.uint64)
        taken = np.ascontiguousarray(taken, dtype=np.uint8)
        kind = np.ascontiguousarray(kind, dtype=np.uint8)
        n = len(pc)
        assert len(target) == len(taken) == len(kind) == n
        pred = np.zeros(n, dtype=np.uint8)
        conf = np.zeros(n, dtype=np.uint8)
        u64p, u8p = ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint8)
        args = (self._h, pc.ctypes.data_as(u64p), target.ctypes.data_as(u64p), taken.ctypes.data_as(u8p),
                kind.ctypes.data_as(u8p), n, pred.ctypes.data_as(u8p), conf.ctypes.data_as(u8p))
        if detail is None:
            self._lib.bp_run(*args)
        else:
            assert detail.shape == (n, TAGE_DETAIL) and detail.dtype == np.int32 and detail.flags.c_contiguous
            if self._lib.bp_run_detail(*args, detail.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))) != 0:
                raise ValueError(f"{self.name}: the C core records internals of TAGE-SC-L only")
        return pred.astype(bool), conf


class Bimodal(_CPredictor):
    name = "bimodal"
    _kind = 0

    def __init__(self, log_size: int = 14):
        self.log_size = log_size
        super().__init__([log_size])


class Gshare(_CPredictor):
    name = "gshare"
    _kind = 1

    def __init__(self, hist_len: int = 14, log_size: int = 14):
        assert 0 <= hist_len <= 64
        self.hist_len, self.log_size = hist_len, log_size
        super().__init__([hist_len, log_size])


def _perceptron_params(log_size, segments, theta0, speed) -> list[int]:
    assert 1 <= len(segments) <= 32 and all(0 <= lo <= hi <= 128 for lo, hi in segments)
    return [log_size, theta0, speed, len(segments)] + [x for s in segments for x in s]


class HashedPerceptron(_CPredictor):
    name = "perceptron"
    _kind = 2

    def __init__(self, log_size: int = 10, segments=DEFAULT_SEGMENTS, theta0: int | None = None,
                 speed: int = 18):
        theta0 = int(1.93 * len(segments) + 14) if theta0 is None else theta0
        self.log_size, self.segments, self.theta0, self.speed = log_size, tuple(segments), theta0, speed
        super().__init__(_perceptron_params(log_size, segments, theta0, speed))


class TageScL(_CPredictor):
    name = "tage-sc-l"
    _kind = 3

    def __init__(self):
        super().__init__(None)


# ------------------------------------------------------------------------------------------
# Pure-Python references (slow; same algorithms, bit-exact with the C core)
# ------------------------------------------------------------------------------------------
def _fold(x: int, bits: int) -> int:
    """XOR of the `bits`-bit chunks of x >= 0."""
    r, m = 0, (1 << bits) - 1
    while x:
        r ^= x & m
        x >>= bits
    return r


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _conf2(c: int) -> int:
    return 2 if c in (0, 3) else 0


class _RefBase(BranchPredictor):
    def __init__(self):
        self._pending: int | None = None

    def predict(self, pc: int) -> bool:
        p, self.last_conf = self._predict(pc & M64)
        self._pending = pc & M64
        return bool(p)

    def update(self, pc: int, target: int, taken: bool, kind: int) -> None:
        pc, target = pc & M64, target & M64
        taken = True if kind != COND else bool(taken)
        if kind == COND and self._pending != pc:
            self._predict(pc)
        self._pending = None
        self._update(pc, target, int(taken), kind)


class BimodalRef(_RefBase):
    name = "bimodal"

    def __init__(self, log_size: int = 14):
        super().__init__()
        self.log_size = log_size
        self.ctr = [1] * (1 << log_size)

    def _idx(self, pc):
        return (pc ^ (pc >> 2) ^ (pc >> (self.log_size + 2))) & ((1 << self.log_size) - 1)

    def _predict(self, pc):
        c = self.ctr[self._idx(pc)]
        return c >= 2, _conf2(c)

    def _update(self, pc, target, taken, kind):
        if kind == COND:
            i = self._idx(pc)
            self.ctr[i] = min(self.ctr[i] + 1, 3) if taken else max(self.ctr[i] - 1, 0)

    def storage_bits(self):
        return 2 << self.log_size


class GshareRef(BimodalRef):
    """Bimodal's counters, indexed with the folded global history."""
    name = "gshare"

    def __init__(self, hist_len: int = 14, log_size: int = 14):
        super().__init__(log_size)
        self.hist_len = hist_len
        self.ghist = 0

    def _idx(self, pc):
        h = self.ghist & ((1 << self.hist_len) - 1)
        return (pc ^ (pc >> 2) ^ _fold(h, self.log_size)) & ((1 << self.log_size) - 1)

    def _update(self, pc, target, taken, kind):
        super()._update(pc, target, taken, kind)
        self.ghist = ((self.ghist << 1) | taken) & M64

    def storage_bits(self):
        return (2 << self.log_size) + self.hist_len


class HashedPerceptronRef(_RefBase):
    name = "perceptron"

    def __init__(self, log_size: int = 10, segments=DEFAULT_SEGMENTS, theta0: int | None = None,
                 speed: int = 18):
        super().__init__()
        self.log_size, self.segments, self.speed = log_size, tuple(segments), speed
        self.theta = int(1.93 * len(segments) + 14) if theta0 is None else theta0
        self.tc = 0
        self.w = [[0] * (1 << log_size) for _ in self.segments]
        self.ghist = 0        # 128 bits, bit 0 = most recent
        self.idx: list[int] = []
        self.sum = 0

    def _predict(self, pc):
        m = (1 << self.log_size) - 1
        ph = pc ^ (pc >> 2) ^ (pc >> 17)
        self.idx = []
        for t, (lo, hi) in enumerate(self.segments):
            seg = (self.ghist >> lo) & ((1 << (hi - lo)) - 1)
            self.idx.append((ph ^ _fold(seg, self.log_size) ^ (t << 3)) & m)
        self.sum = sum(self.w[t][i] for t, i in enumerate(self.idx))
        a = abs(self.sum)
        return self.sum >= 0, 2 if a >= self.theta else (1 if a >= self.theta // 2 else 0)

    def _update(self, pc, target, taken, kind):
        if kind == COND:
            pred, a = self.sum >= 0, abs(self.sum)
            if pred != bool(taken) or a < self.theta:
                for t, i in enumerate(self.idx):
                    self.w[t][i] = min(self.w[t][i] + 1, 127) if taken else max(self.w[t][i] - 1, -128)
                if pred != bool(taken):
                    self.tc += 1
                    if self.tc >= self.speed:
                        self.theta += 1
                        self.tc = 0
                else:
                    self.tc -= 1
                    if self.tc <= -self.speed:
                        if self.theta > 1:
                            self.theta -= 1
                        self.tc = 0
        self.ghist = ((self.ghist << 1) | taken) & ((1 << 128) - 1)

    def storage_bits(self):
        return 8 * len(self.segments) * (1 << self.log_size) + self.segments[-1][1] + 16


# ---- TAGE-SC-L 64KB constants (CBP-5) ----
NHIST, NBANKLOW, NBANKHIGH, BORN = 36, 10, 20, 13
BORNINFASSOC, BORNSUPASSOC, MINHIST, MAXHIST = 9, 23, 6, 3000
LOGG, TBITS, NNN, HYSTSHIFT, LOGB, PHISTWIDTH = 10, 8, 1, 2, 13, 27
UWIDTH, CWIDTH, SIZEUSEALT, ALTWIDTH, BORNTICK, HBUF = 1, 3, 16, 5, 1024, 4096
LOGL, WIDTHNBITERLOOP, LOOPTAG, CONFLOOP = 5, 10, 10, 15
PERCWIDTH, LOGBIAS, LOGSIZEUP, LOGSIZEUPS = 6, 8, 6, 3
WIDTHRES, WIDTHRESP, EWIDTH, CONFWIDTH = 12, 8, 6, 7
NLOCAL, NSECLOCAL, NTLOCAL = 256, 16, 16
# SC components: name -> (history lengths, log size, initial weight); the last two tables of a
# component (all of them when it has <= 2) have half the entries.
SC_COMPONENTS = {"G": ((40, 24, 10), 10, 7), "P": ((25, 16, 9), 9, 7), "L": ((11, 6, 3), 10, 7),
                 "S": ((16, 11, 6), 9, 7), "T": ((9, 4), 10, 7), "IM": ((10, 4), 9, 0),
                 "I": ((8,), 8, 7)}


def tage_history_lengths() -> list[int]:
    """m[i] for i = 0..36 (m[0] unused): pairs of tables share L(k) = int(6*500^((k-1)/17)+.5)."""
    morig = [0, MINHIST] + [int(MINHIST * math.pow(MAXHIST / MINHIST, (i - 1) / (NHIST // 2 - 1)) + 0.5)
                            for i in range(2, NHIST // 2 + 1)]
    return [0] + [morig[(i + 1) // 2] for i in range(1, NHIST + 1)]


def tage_noskip() -> list[bool]:
    ns = [False] + [bool((i - 1) & 1) or (BORNINFASSOC <= i < BORNSUPASSOC) for i in range(1, NHIST + 1)]
    for i in (4, NHIST - 2, 8, NHIST - 6):
        ns[i] = False
    return ns


def tage_sc_l_storage() -> dict[str, int]:
    """Storage of the 64KB TAGE-SC-L, component by component (bits)."""
    m = tage_history_lengths()
    d = {
        "tagged 13-36 (20x1K x (3+1+12))": NBANKHIGH * (1 << LOGG) * (CWIDTH + UWIDTH + TBITS + 4),
        "tagged 1-12 (10x1K x (3+1+8))": NBANKLOW * (1 << LOGG) * (CWIDTH + UWIDTH + TBITS),
        "use_alt_on_na": SIZEUSEALT * ALTWIDTH,
        "bimodal": (1 << LOGB) + (1 << (LOGB - HYSTSHIFT)),
        "ghist+phist+TICK": m[NHIST] + PHISTWIDTH + 10,
        "loop": (1 << LOGL) * (2 * WIDTHNBITERLOOP + LOOPTAG + 4 + 4 + 1),
        "SC thresholds": WIDTHRES + WIDTHRESP * (1 << LOGSIZEUP),
        "SC bias": PERCWIDTH * 3 * (1 << LOGBIAS),
        "SC GEHL tables": sum(PERCWIDTH << (lg - (i >= len(ls) - 2))
                              for ls, lg, _ in SC_COMPONENTS.values() for i in range(len(ls))),
        "SC weights": EWIDTH * (1 << LOGSIZEUPS) * (1 + len(SC_COMPONENTS)),
        "SC histories": (SC_COMPONENTS["G"][0][0] + NLOCAL * SC_COMPONENTS["L"][0][0]
                         + NSECLOCAL * SC_COMPONENTS["S"][0][0] + NTLOCAL * SC_COMPONENTS["T"][0][0]
                         + SC_COMPONENTS["I"][0][0] + 256 * SC_COMPONENTS["IM"][0][0]),
        "choser+WITHLOOP": 2 * CONFWIDTH + 7,
    }
    d["total"] = sum(d.values())
    return d


class _Folded:
    __slots__ = ("comp", "clen", "olen", "outpoint")

    def __init__(self, olen, clen):
        self.comp, self.olen, self.clen, self.outpoint = 0, olen, clen, olen % clen

    def update(self, h, pt):
        c = (self.comp << 1) ^ h[pt & (HBUF - 1)]
        c ^= h[(pt + self.olen) & (HBUF - 1)] << self.outpoint
        c ^= c >> self.clen
        self.comp = c & ((1 << self.clen) - 1)


def _ctr(v: int, taken, nbits: int) -> int:
    """Signed saturating counter update, range [-2^(nbits-1), 2^(nbits-1)-1]."""
    if taken:
        return v + 1 if v < (1 << (nbits - 1)) - 1 else v
    return v - 1 if v > -(1 << (nbits - 1)) else v


class TageScLRef(_RefBase):
    """Readable Python TAGE-SC-L 64KB (same algorithm and state as the C core)."""
    name = "tage-sc-l"

    def __init__(self):
        super().__init__()
        self.m = tage_history_lengths()
        self.tb = [0] + [TBITS + 4 * (i >= BORN) for i in range(1, NHIST + 1)]
        self.noskip = tage_noskip()
        # tagged entries: [ctr, u, tag]
        self.glow = [[0, 0, 0] for _ in range(NBANKLOW << LOGG)]
        self.ghigh = [[0, 0, 0] for _ in range(NBANKHIGH << LOGG)]
        self.bpred = [0] * (1 << LOGB)
        self.bhyst = [1] * (1 << (LOGB - HYSTSHIFT))
        self.use_alt_on_na = [0] * SIZEUSEALT
        self.tick = 0
        self.ghist = [0] * HBUF
        self.ptghist = 0
        self.phist = 0
        self.seed = 0
        odd = range(1, NHIST + 1, 2)
        self.ci = {i: _Folded(self.m[i], LOGG) for i in odd}
        self.ct0 = {i: _Folded(self.m[i], self.tb[i]) for i in odd}
        self.ct1 = {i: _Folded(self.m[i], self.tb[i] - 1) for i in odd}
        self.GI = [0] * (NHIST + 1)
        self.GTAG = [0] * (NHIST + 1)
        # loop predictor entries: dict(nbiter, curiter, tag, confid, age, dir)
        self.ltable = [dict(nbiter=0, curiter=0, tag=0, confid=0, age=0, dir=0) for _ in range(1 << LOGL)]
        self.withloop = -1
        self.lvalid = 0
        # statistical corrector
        b0, bsk0 = (-32, 31, -1, 0), (-8, 7, -32, 31)
        self.bias = [b0[j & 3] for j in range(1 << LOGBIAS)]
        self.biasbank = [b0[j & 3] for j in range(1 << LOGBIAS)]
        self.biassk = [bsk0[j & 3] for j in range(1 << LOGBIAS)]
        self.wb = [4] * (1 << LOGSIZEUPS)
        self.sc = {}
        for name, (lens, logs, w0) in SC_COMPONENTS.items():
            tabs = [[0 if j & 1 else -1 for j in range(1 << (logs - (i >= len(lens) - 2)))]
                    for i in range(len(lens))]
            self.sc[name] = dict(lens=lens, logs=logs, tabs=tabs, w=[w0] * (1 << LOGSIZEUPS))
        self.updatethreshold = 35 << 3
        self.pupdatethreshold = [0] * (1 << LOGSIZEUP)
        self.firsth = self.secondh = 0
        self.GHIST = 0
        self.lhist = [0] * NLOCAL
        self.shist = [0] * NSECLOCAL
        self.thist = [0] * NTLOCAL
        self.imhist = [0] * 256
        self.imlicount = 0

    def storage_bits(self):
        return tage_sc_l_storage()["total"]

    # ---- helpers ----
    def _entry(self, bank):
        return (self.glow if bank < BORN else self.ghigh)[self.GI[bank]]

    def _random(self):
        s = (self.seed + 1) & M32
        s ^= self.phist & M32
        s = ((s >> 21) + (s << 11)) & M32
        s ^= self.ptghist
        s = ((s >> 10) + (s << 22)) & M32
        self.seed = s
        return s

    @staticmethod
    def _F(A, size, bank):
        a = A & ((1 << size) - 1)
        a1, a2 = a & ((1 << LOGG) - 1), a >> LOGG
        if bank < LOGG:
            a2 = ((a2 << bank) & ((1 << LOGG) - 1)) + (a2 >> (LOGG - bank))
        a = a1 ^ a2
        if bank < LOGG:
            a = ((a << bank) & ((1 << LOGG) - 1)) + (a >> (LOGG - bank))
        return a

    def _getbim(self):
        self.BIM = (self.bpred[self.BI] << 1) + self.bhyst[self.BI >> HYSTSHIFT]
        self.highconf = int(self.BIM in (0, 3))
        self.lowconf = 1 - self.highconf
        self.altconf = self.highconf
        self.medconf = 0
        return int(self.bpred[self.BI] > 0)

    def _baseupdate(self, taken):
        v = self.BIM
        v = min(v + 1, 3) if taken else max(v - 1, 0)
        self.bpred[self.BI] = v >> 1
        self.bhyst[self.BI >> HYSTSHIFT] = v & 1

    def _ind_usealt(self):
        return ((_cdiv(self.hitbank - 1, 8) << 1) + self.altconf) % (SIZEUSEALT - 1)

    def _tagepred(self, pc):
        pc32 = pc & M32
        self.hitbank = self.altbank = self.used_alt = 0
        for i in range(1, NHIST + 1, 2):
            M = min(self.m[i], PHISTWIDTH)
            gi = (pc32 ^ (pc32 >> (abs(LOGG - i) + 1)) ^ self.ci[i].comp ^ self._F(self.phist, M, i)) \
                & ((1 << LOGG) - 1)
            tag = (pc32 ^ self.ct0[i].comp ^ (self.ct1[i].comp << 1)) & ((1 << self.tb[i]) - 1)
            self.GI[i], self.GTAG[i] = gi, tag
            self.GI[i + 1], self.GTAG[i + 1] = gi ^ (tag & ((1 << LOGG) - 1)), tag
        T = (pc ^ self.phist) % NBANKHIGH
        for i in range(BORN, NHIST + 1):
            if self.noskip[i]:
                self.GI[i] += T << LOGG
                T = (T + 1) % NBANKHIGH
        T = (pc ^ (self.phist & ((1 << self.m[1]) - 1))) % NBANKLOW
        for i in range(1, BORN):
            if self.noskip[i]:
                self.GI[i] += T << LOGG
                T = (T + 1) % NBANKLOW
        self.BI = (pc ^ (pc >> 2)) & ((1 << LOGB) - 1)
        self.alttaken = self.tage_pred = self.longest_pred = self._getbim()
        for i in range(NHIST, 0, -1):
            if self.noskip[i] and self._entry(i)[2] == self.GTAG[i]:
                self.hitbank = i
                self.longest_pred = int(self._entry(i)[0] >= 0)
                break
        for i in range(self.hitbank - 1, 0, -1):
            if self.noskip[i] and self._entry(i)[2] == self.GTAG[i]:
                self.altbank = i
                break
        if self.hitbank > 0:
            if self.altbank > 0:
                c = self._entry(self.altbank)[0]
                self.alttaken = int(c >= 0)
                self.altconf = int(abs(2 * c + 1) > 1)
            else:
                self.alttaken = self._getbim()
            hc = abs(2 * self._entry(self.hitbank)[0] + 1)
            self.used_alt = int(self.use_alt_on_na[self._ind_usealt()] >= 0 and hc <= 1)
            self.tage_pred = self.alttaken if self.used_alt else self.longest_pred
            self.highconf = int(hc >= (1 << CWIDTH) - 1)
            self.lowconf = int(hc == 1)
            self.medconf = int(hc == 5)

    # ---- loop predictor ----
    def _lentry(self, way):
        return self.ltable[(self.li ^ ((self.lib >> way) << 2)) + way]

    def _loop_get(self, pc):
        self.lhit = -1
        self.li = ((pc ^ (pc >> 2)) & ((1 << (LOGL - 2)) - 1)) << 2
        self.lib = (pc >> (LOGL - 2)) & ((1 << (LOGL - 2)) - 1)
        t = (pc >> (LOGL - 2)) & ((1 << 2 * LOOPTAG) - 1)
        t ^= t >> LOOPTAG
        self.ltag = t & ((1 << LOOPTAG) - 1)
        for i in range(4):
            e = self._lentry(i)
            if e["tag"] == self.ltag:
                self.lhit = i
                self.lvalid = int(e["confid"] == CONFLOOP or e["confid"] * e["nbiter"] > 128)
                if e["curiter"] + 1 == e["nbiter"]:
                    return int(not e["dir"])
                return e["dir"]
        self.lvalid = 0
        return 0

    def _loop_update(self, taken, alloc):
        if self.lhit >= 0:
            e = self._lentry(self.lhit)
            if self.lvalid:
                if taken != self.predloop:
                    e.update(nbiter=0, age=0, confid=0, curiter=0)
                    return
                elif self.predloop != self.tage_pred or (self._random() & 7) == 0:
                    e["age"] = min(e["age"] + 1, CONFLOOP)
            e["curiter"] = (e["curiter"] + 1) & ((1 << WIDTHNBITERLOOP) - 1)
            if e["curiter"] > e["nbiter"]:
                e["confid"] = e["nbiter"] = 0
            if taken != e["dir"]:
                if e["curiter"] == e["nbiter"]:
                    e["confid"] = min(e["confid"] + 1, CONFLOOP)
                    if e["nbiter"] < 3:   # do not predict loops with 1 or 2 iterations
                        e.update(dir=taken, nbiter=0, age=0, confid=0)
                elif e["nbiter"] == 0:    # first complete nest
                    e["confid"], e["nbiter"] = 0, e["curiter"]
                else:                     # different trip count: free the entry
                    e["nbiter"] = e["confid"] = 0
                e["curiter"] = 0
        elif alloc:
            x = self._random() & 3
            if (self._random() & 3) == 0:
                e = self._lentry(x)
                if e["age"] == 0:
                    e.update(dir=int(not taken), tag=self.ltag, nbiter=0, age=7, confid=0, curiter=0)
                else:
                    e["age"] -= 1

    # ---- statistical corrector ----
    def _sc_hist(self, name, pc):
        return {"G": lambda: self.GHIST, "P": lambda: self.phist,
                "L": lambda: self.lhist[(pc ^ (pc >> 2)) & (NLOCAL - 1)],
                "S": lambda: self.shist[(pc ^ (pc >> 5)) & (NSECLOCAL - 1)],
                "T": lambda: self.thist[(pc ^ (pc >> 10)) & (NTLOCAL - 1)],
                "IM": lambda: self.imhist[self.imlicount], "I": lambda: self.imlicount}[name]()

    @staticmethod
    def _sc_index(key, bh, i, logs, nbr):
        x = key ^ bh ^ (bh >> (8 - i)) ^ (bh >> (16 - 2 * i)) ^ (bh >> (24 - 3 * i)) \
            ^ (bh >> (32 - 3 * i)) ^ (bh >> (40 - 4 * i))
        return x & ((1 << (logs - (i >= nbr - 2))) - 1)

    def _sc_entries(self, name, pc, pi):
        c = self.sc[name]
        key = (((pc << 1) + pi) & M64) if name == "G" else pc
        hist = self._sc_hist(name, pc)
        nbr = len(c["lens"])
        return c, [(c["tabs"][i], self._sc_index(key, hist & ((1 << ln) - 1), i, c["logs"], nbr))
                   for i, ln in enumerate(c["lens"])]

    def _predict(self, pc):
        self._tagepred(pc)
        self.pred_taken = self.tage_pred
        self.predloop = self._loop_get(pc)
        if self.withloop >= 0 and self.lvalid:
            self.pred_taken = self.predloop
        pi = self.pred_inter = self.pred_taken
        h = pc ^ (pc >> 2)
        upds = h & ((1 << LOGSIZEUPS) - 1)
        mb = (1 << LOGBIAS) - 1
        self.ib = ((((h << 1) ^ (self.lowconf & int(self.longest_pred != self.alttaken))) << 1) + pi) & mb
        self.ibsk = ((((pc ^ (pc >> (LOGBIAS - 2))) << 1) ^ self.highconf) << 1) + pi & mb
        self.ibbank = (pi + (((self.hitbank + 1) // 4) << 4) + (self.highconf << 1) + (self.lowconf << 2)
                       + ((self.altbank != 0) << 3) + (h << 7)) & mb
        lsum = (2 * self.bias[self.ib] + 1) + (2 * self.biassk[self.ibsk] + 1) + (2 * self.biasbank[self.ibbank] + 1)
        lsum *= 1 + (self.wb[upds] >= 0)
        for name in SC_COMPONENTS:
            c, ents = self._sc_entries(name, pc, pi)
            lsum += (1 + (c["w"][upds] >= 0)) * sum(2 * t[j] + 1 for t, j in ents)
        self.lsum = lsum
        self.scpred = int(lsum >= 0)
        self.thres = (self.updatethreshold >> 3) + self.pupdatethreshold[h & ((1 << LOGSIZEUP) - 1)] + 12 * (
            (self.wb[upds] >= 0) + sum(self.sc[n]["w"][upds] >= 0 for n in ("P", "S", "T", "L", "G", "I")))
        a, th = abs(lsum), self.thres
        if pi != self.scpred:
            self.pred_taken = self.scpred
            if self.highconf:
                if a < _cdiv(th, 4):
                    self.pred_taken = pi
                elif a < _cdiv(th, 2):
                    self.pred_taken = self.scpred if self.secondh < 0 else pi
            if self.medconf and a < _cdiv(th, 4):
                self.pred_taken = self.scpred if self.firsth < 0 else pi
        tconf = 2 if self.highconf else (1 if self.medconf else 0)
        if self.withloop >= 0 and self.lvalid and self.pred_taken == self.predloop:
            conf = 2
        elif self.pred_taken != pi:
            conf = 1 if a >= th else 0
        elif self.scpred != pi:
            conf = min(tconf, 1)
        else:
            conf = tconf
        return self.pred_taken, conf

    def detail(self):
        ctr = self._entry(self.hitbank)[0] if self.hitbank > 0 else self.BIM - 2
        return (self.longest_pred, self.alttaken, ctr, self.hitbank, self.altbank, self.used_alt, self.tage_pred,
                int(self.lhit >= 0), self.lvalid, self.predloop, int(self.withloop >= 0 and self.lvalid), self.lsum,
                self.thres, int(self.pred_taken != self.pred_inter))

    def _update(self, pc, target, taken, kind):
        if kind == COND:
            self._update_cond(pc, taken)
        self._history(pc, target, taken, kind)

    def _update_cond(self, pc, taken):
        if self.lvalid and self.pred_taken != self.predloop:
            self.withloop = _ctr(self.withloop, self.predloop == taken, 7)
        self._loop_update(taken, self.pred_taken != taken)
        a, th, pi = abs(self.lsum), self.thres, self.pred_inter
        h = pc ^ (pc >> 2)
        upd, upds = h & ((1 << LOGSIZEUP) - 1), h & ((1 << LOGSIZEUPS) - 1)
        if pi != self.scpred and a < th:
            if self.highconf and _cdiv(th, 4) <= a < _cdiv(th, 2):
                self.secondh = _ctr(self.secondh, pi == taken, CONFWIDTH)
            if self.medconf and a < _cdiv(th, 4):
                self.firsth = _ctr(self.firsth, pi == taken, CONFWIDTH)
        if self.scpred != taken or a < th:
            d = 1 if self.scpred != taken else -1
            pm, gm = 1 << (WIDTHRESP - 1), 1 << (WIDTHRES - 1)
            self.pupdatethreshold[upd] = max(-pm, min(pm - 1, self.pupdatethreshold[upd] + d))
            self.updatethreshold = max(-gm, min(gm - 1, self.updatethreshold + d))
            bsum = (2 * self.bias[self.ib] + 1) + (2 * self.biassk[self.ibsk] + 1) + (2 * self.biasbank[self.ibbank] + 1)
            x = self.lsum - (self.wb[upds] >= 0) * bsum
            if (x + bsum >= 0) != (x >= 0):
                self.wb[upds] = _ctr(self.wb[upds], (bsum >= 0) == bool(taken), EWIDTH)
            self.bias[self.ib] = _ctr(self.bias[self.ib], taken, PERCWIDTH)
            self.biassk[self.ibsk] = _ctr(self.biassk[self.ibsk], taken, PERCWIDTH)
            self.biasbank[self.ibbank] = _ctr(self.biasbank[self.ibbank], taken, PERCWIDTH)
            for name in SC_COMPONENTS:
                c, ents = self._sc_entries(name, pc, pi)
                s = 0
                for t, j in ents:
                    s += 2 * t[j] + 1
                    t[j] = _ctr(t[j], taken, PERCWIDTH)
                x = self.lsum - (c["w"][upds] >= 0) * s
                if (x + s >= 0) != (x >= 0):
                    c["w"][upds] = _ctr(c["w"][upds], (s >= 0) == bool(taken), EWIDTH)
        # TAGE
        alloc = self.tage_pred != taken and self.hitbank < NHIST
        if self.hitbank > 0:
            hit = self._entry(self.hitbank)
            if abs(2 * hit[0] + 1) <= 1:
                if self.longest_pred == taken:
                    alloc = False
                if self.longest_pred != self.alttaken:
                    k = self._ind_usealt()
                    self.use_alt_on_na[k] = _ctr(self.use_alt_on_na[k], self.alttaken == taken, ALTWIDTH)
        if self.pred_taken == taken and (self._random() & 31) != 0:
            alloc = False
        if alloc:
            T, A = NNN, 1
            if (self._random() & 127) < 32:
                A = 2
            penalty = na = 0
            I = ((self.hitbank - 1 + 2 * A) & 0xffe) ^ (self._random() & 1)
            while I < NHIST:
                done = brk = False
                for i in (I + 1, (I ^ 1) + 1):
                    if done:
                        break
                    if not self.noskip[i]:
                        continue
                    e = self._entry(i)
                    if e[1] == 0:
                        if abs(2 * e[0] + 1) <= 3:
                            e[2], e[0] = self.GTAG[i], (0 if taken else -1)
                            na += 1
                            if T <= 0:
                                brk = True
                                break
                            I += 2
                            done = True
                            T -= 1
                        else:
                            e[0] = e[0] - 1 if e[0] > 0 else e[0] + 1
                    else:
                        penalty += 1
                if brk:
                    break
                I += 2
            self.tick = max(0, self.tick + penalty - 2 * na)
            if self.tick >= BORNTICK:
                for e in self.glow:
                    e[1] >>= 1
                for e in self.ghigh:
                    e[1] >>= 1
                self.tick = 0
        if self.hitbank > 0:
            hit = self._entry(self.hitbank)
            if abs(2 * hit[0] + 1) == 1 and self.longest_pred != taken:
                if self.altbank > 0:
                    alt = self._entry(self.altbank)
                    alt[0] = _ctr(alt[0], taken, CWIDTH)
                else:
                    self._baseupdate(taken)
            hit[0] = _ctr(hit[0], taken, CWIDTH)
            if abs(2 * hit[0] + 1) == 1:
                hit[1] = 0
            if (self.alttaken == taken and self.altbank > 0 and abs(2 * self._entry(self.altbank)[0] + 1) == 7
                    and hit[1] == 1 and self.longest_pred == taken):
                hit[1] = 0
        else:
            self._baseupdate(taken)
        if self.longest_pred != self.alttaken and self.longest_pred == taken:
            hit = self._entry(self.hitbank)
            if hit[1] < (1 << UWIDTH) - 1:
                hit[1] += 1

    def _history(self, pc, target, taken, kind):
        cond = kind == COND
        brtype = (2 if kind in (RET, IND_JUMP, IND_CALL) else 0) + int(cond)
        maxt = 2 if brtype & 1 else (3 if brtype & 2 else 2)
        if cond:
            k = self.imlicount
            self.imhist[k] = ((self.imhist[k] << 1) + taken) & M64
            if target < pc:
                if not taken:
                    self.imlicount = 0
                elif self.imlicount < (1 << SC_COMPONENTS["I"][0][0]) - 1:
                    self.imlicount += 1
            self.GHIST = ((self.GHIST << 1) + int(bool(taken) and target < pc)) & M64
            li, si, ti = (pc ^ (pc >> 2)) & (NLOCAL - 1), (pc ^ (pc >> 5)) & (NSECLOCAL - 1), (pc ^ (pc >> 10)) & (NTLOCAL - 1)
            self.lhist[li] = ((self.lhist[li] << 1) + taken) & M64
            self.shist[si] = (((self.shist[si] << 1) + taken) & M64) ^ (pc & 15)
            self.thist[ti] = ((self.thist[ti] << 1) + taken) & M64
        T = (pc ^ (pc >> 2)) ^ taken
        path = pc ^ (pc >> 2) ^ (pc >> 4)
        if brtype == 3 and taken:   # indirect conditional: never produced by our traces
            T ^= target >> 2
            path ^= (target >> 2) ^ (target >> 4)
        for _ in range(maxt):
            d = T & 1
            T >>= 1
            pathbit = path & 127
            path >>= 1
            self.ptghist = (self.ptghist - 1) & M32
            self.ghist[self.ptghist & (HBUF - 1)] = d
            self.phist = ((self.phist << 1) ^ pathbit) & M64
            for i in range(1, NHIST + 1, 2):
                self.ci[i].update(self.ghist, self.ptghist)
                self.ct0[i].update(self.ghist, self.ptghist)
                self.ct1[i].update(self.ghist, self.ptghist)
        self.phist &= (1 << PHISTWIDTH) - 1


def make_predictor(name: str, **params) -> BranchPredictor:
    """Build a C-backed predictor by name: "bimodal", "gshare", "perceptron", "tage-sc-l"."""
    ctors = {"bimodal": Bimodal, "gshare": Gshare, "perceptron": HashedPerceptron,
             "tage-sc-l": TageScL}
    if name not in ctors:
        raise ValueError(f"unknown predictor {name!r}; choose from {sorted(ctors)}")
    return ctors[name](**params)
