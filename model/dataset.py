"""Datasets of fused samples: one sample per dynamic instance of a hard branch or delinquent load.

    sites = find_sites(train_trace)                      # hard branches + delinquent loads of input 0
    build_dataset(train_trace, sites, "data/bzip2-0", DatasetConfig(lead=100))
    build_dataset(test_trace, sites, "data/bzip2-1", cfg, vocab=train_vocab)   # input 1: held out

What a sample of dynamic instruction i holds, and when it was knowable (the honesty rule):

* the site's static graph (model/graph.py): static code only;
* ``dynval``: the 16 registers *before* instruction ``s = i - lead`` and, for each memory operand
  of the region, the last value its instruction accessed at an index ``< s``: state captured at
  least ``lead`` instructions before i;
* ``fe_count``: per node of the site graph, how often its instruction executed in [s, i), the
  instructions the front end fetched between the snapshot and i (``frontend_window``; 0 for nodes
  that are not instructions), saturating at 65535;
* ``mem_pred`` / ``mem_pred_ok``: per memory slot, memory as of the snapshot at the address its
  instruction will access: the address extrapolated from the slot instruction's last two accesses
  before s (a0, a1) and its front-end count n, ``a1 + n (a1 - a0)`` (``predicted_addresses``), and
  the value of the last access to that address (any instruction, load or store, whatever its size)
  before ``memory_image_index`` (= s); ok = an address was predicted and the image had a value;
* ``g``: the last 32 conditional-branch outcomes *before* i, TAGE-SC-L's prediction and
  confidence for i (an online predictor's output, available when i is fetched) and its internals
  (``tage_detail``, encoded by ``encode_tage``: provider, alternate, counters, loop predictor, SC
  sum, read before TAGE-SC-L is updated with i's outcome), and for loads the last 3 line deltas
  of the same load *before* i (access j of the load is at i; ``last_known_access`` = j - 1);
* history-only baselines: ``bpos``, the position of i in the window's branch stream
  (``branches.npy``: every branch's pc hash and direction, in order), so that a model reads the
  branches before i, as many as it wants (``Dataset.branch_history``); the classes of the k-step
  deltas (below) ending at the same load's last 16 accesses before i.

The prefetch label of access j (``delta``): the class of ``line(j-1+k) - line(j-1)``, the line delta from
the last access known before i to the k-th access after it, so that a prefetch issued at access j-1 has k
accesses' time to arrive. The distance k is per load site (``prefetch_distance`` in the sidecar, keyed by
the pc in hex): ``DatasetConfig.prefetch_distance``, or (0) chosen on the training trace for timeliness
(``timely_distance``); k = 1 is the next access's delta. The vocabulary is of these k-step deltas. The last
k - 1 accesses of a load in the window have no label (``delta`` = -1: no loss, no score).

Never the outcome, never anything from i itself or later. ``snapshot_index`` is the one place
where the lead is applied, ``frontend_window`` the one place that says which instructions are
counted, ``memory_image_index`` the one place that says when the memory image is read; the test
suite rebuilds a dataset from a trace whose state after ``s`` has been scrambled (registers, memory
values and addresses) and checks that no feature changes, from traces whose pcs after i or
before s have been scrambled and checks that the counts do not change, and from a trace whose
addresses from a load's access j on are scrambled and checks that no input changes
(``last_known_access``).

Train/test split: by program input (sites, delta vocabulary, prefetch distances and normalisation come from input 0;
input 1 is only evaluated), validation = the last 10% of the training samples in time.
History-only (``DatasetConfig.history_only``, for traces without registers, values or instruction
bytes: ChampSim imports): no site graphs, ``dynval``, ``fe_count`` or ``mem_pred``; the branch stream,
``g`` (history, TAGE-SC-L), ``bpos`` and ``dhist`` as above; ``dataset.json`` says ``history_only``. BranchNet,
the delta-LSTM and the history GNN (which reads ``g`` over blank graphs) train on it; the fused and static
GNNs refuse it.
On disk (``out_dir``): one ``.npy`` per array (memory-mapped when read), ``sites.npz`` with the
site graphs, and ``dataset.json`` (config, sites, vocabulary, counts, the traces' hashes, and
``memory_lookahead``: how many slot predictions had an address, how many of those equal the slot
instruction's real address at its last execution before i (for the report only), how many a value).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npformat

from ncf.io import DataError, UsageError, atomic_path, check_output, read_json, write_json
from ncf.trace_eval.branch_predictors import TAGE_DETAIL, TAGE_DETAIL_COLUMNS, TageScL
from ncf.trace_eval.cache import CacheConfig
from ncf.trace_eval.format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, StaticTable, TraceReader
from ncf.trace_eval.harness import LINE, Tally, top_sites
from ncf.trace_eval.streams import branch_chunks

from .graph import F_STATIC, MAX_MEM_SLOTS, N_EDGE_TYPES, N_NODES, SiteGraph, build_site_graph

FORMAT_VERSION = 4
N_SLOTS = 16 + MAX_MEM_SLOTS     # dynval columns: 16 GPRs, then memory slots
HIST_BITS = 32
N_DELTA_FEATURES = 3             # previous deltas in g
DELTA_BITS = 9                   # per previous delta: small, negative, 7 magnitude bits
TAGE_BITS = 26                   # TAGE-SC-L's internals in g (encode_tage)
# g: task (branch, load), history, TAGE-SC-L's prediction and confidence (one-hot), deltas, TAGE-SC-L's internals
G_DIM = 2 + HIST_BITS + 1 + 3 + N_DELTA_FEATURES * DELTA_BITS + TAGE_BITS
G_TAGE = slice(2 + HIST_BITS, 2 + HIST_BITS + 4)          # TAGE-SC-L's prediction and confidence
G_DELTAS = slice(G_TAGE.stop, G_TAGE.stop + N_DELTA_FEATURES * DELTA_BITS)
G_TAGE_DETAIL = slice(G_DELTAS.stop, G_DIM)               # TAGE-SC-L's internals
TASKS = ("branch", "load")
LOOKAHEAD_KEYS = ("predicted", "address_right", "with_value")   # dataset.json: memory_lookahead (slot predictions)
MAX_DISTANCE = 16                # the prefetch distance chosen for timeliness is at most this


@dataclass
class DatasetConfig:
    lead: int = 100               # D: the snapshot is taken before instruction i - D
    task: str = "both"            # "branch", "prefetch" or "both"
    n_nodes: int = N_NODES
    delta_history: int = 16       # deltas seen by the delta-LSTM
    delta_classes: int = 16       # most frequent training deltas + "other"
    max_per_site: int | None = None  # keep at most this many samples per site, evenly spaced in time
    since: int = 0                # only instances at or after this instruction of the window (a validation split)
    prefetch_distance: int = 0    # k of the prefetch label; 0 = per load, chosen for timeliness (timely_distance)
    history_only: bool = False    # no site graphs, registers, values or front-end counts (a trace without them)

    def __post_init__(self):
        check_lead(self.lead)
        if self.prefetch_distance < 0:
            raise UsageError(f"prefetch_distance {self.prefetch_distance}: give k >= 1 (the label is the line "
                             "delta k accesses on) or 0 (chosen per load for timeliness)")
        if self.task not in ("branch", "prefetch", "both"):
            raise UsageError(f"task must be branch, prefetch or both, not {self.task!r}")
        if isinstance(self.since, bool) or not isinstance(self.since, (int, np.integer)) or self.since < 0:
            raise UsageError(f"since {self.since!r}: must be an instruction index >= 0 (0: the whole window)")
        if self.max_per_site is not None and self.max_per_site < 1:
            raise UsageError(f"max_per_site {self.max_per_site}: must be >= 1 (or None: all samples)")


def check_lead(lead: int) -> int:
    """``lead`` if the honesty rule holds for it: the snapshot is taken before the predicted instruction."""
    if isinstance(lead, bool) or not isinstance(lead, (int, np.integer)):
        raise UsageError(f"lead {lead!r}: must be a whole number of instructions")
    if lead < 0:
        raise UsageError(f"lead {lead}: a negative lead takes the snapshot after the predicted instruction, "
                         "so the features would see the outcome; the lead must be >= 0")
    return lead


def snapshot_index(i: np.ndarray, lead: int) -> np.ndarray:
    """The instruction before which the dynamic state of the prediction for ``i`` is taken."""
    return np.asarray(i, np.int64) - check_lead(lead)


def eligible(i: np.ndarray, cfg: DatasetConfig) -> np.ndarray:
    """Which instances ``i`` have a sample: their snapshot lies inside the trace, and they come at or after
    ``cfg.since``."""
    i = np.asarray(i, np.int64)
    return (snapshot_index(i, cfg.lead) >= 0) & (i >= cfg.since)


def frontend_window(i: np.ndarray, lead: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, end): the instructions the front end has fetched since the snapshot when it predicts ``i``."""
    return snapshot_index(i, lead), np.asarray(i, np.int64)


def memory_image_index(i: np.ndarray, lead: int) -> np.ndarray:
    """The instruction before which the memory image read at the predicted addresses is taken: the snapshot."""
    return snapshot_index(i, lead)


def last_known_access(j: np.ndarray) -> np.ndarray:
    """The last access of a load whose address the prediction for its access ``j`` (at instruction i) may use."""
    return np.asarray(j, np.int64) - 1


def timely_distance(gaps: Tally, latency: int = CacheConfig().prefetch_latency) -> int:
    """The smallest k whose median instruction gap between a load's access and its k-th next reaches
    ``latency`` (column k - 1 of ``gaps`` counts those gaps), so that a prefetch issued at an access
    for its k-th next arrives in time at least half the time; MAX_DISTANCE if none does."""
    for col in range(min(gaps.counts.shape[1], MAX_DISTANCE)):
        n = int(gaps.counts[:, col].sum())
        if n:
            cum = np.cumsum(gaps.counts[:, col])
            if gaps.keys[np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")].mean() >= latency:
                return col + 1
    return MAX_DISTANCE


def predicted_addresses(a0: np.ndarray, a1: np.ndarray, known: np.ndarray, n: np.ndarray):
    """(address, ok): a memory slot's address at i from its instruction's last two accesses before the
    snapshot (``a0``, ``a1``; ``known`` of them, at most 2) and its executions since (``n``, the front-end
    count): ``a1 + n (a1 - a0)`` (modulo 2^64), stride 0 after a single access; no address (ok = False) if
    the instruction did not run before the snapshot."""
    a0, a1 = np.asarray(a0, np.uint64), np.asarray(a1, np.uint64)
    stride = np.where(np.asarray(known) >= 2, a1 - a0, np.uint64(0))
    return a1 + np.asarray(n, np.uint64) * stride, np.asarray(known) >= 1


# --------------------------------------------------------------------------------------- sites
def find_sites(trace: str | Path, max_branches: int = 16, max_loads: int = 16, branch_share: float = 0.5,
               load_share: float = 0.5) -> dict:
    """Hard branches (TAGE-SC-L's worst: the fewest holding ``branch_share`` of its mispredictions, at most
    ``max_branches``) and delinquent loads (the fewest holding ``load_share`` of the L1D load misses, at most
    ``max_loads``) of a trace, in one pass over its chunks (memory: a chunk, the predictor, the cache model
    and counts per pc)."""
    from ncf.trace_eval.cache import MISS, NativeCache

    if max_branches < 0 or max_loads < 0 or max_branches + max_loads == 0:
        raise UsageError(f"sites to find: {max_branches} branches, {max_loads} loads (each >= 0, not both 0)")
    check_share(branch_share=branch_share, load_share=load_share)
    r = TraceReader(trace)
    r.require_instructions("finding hard branches and delinquent loads")
    tage, cache = TageScL(), NativeCache()
    mispredicted, missed = Tally(np.uint64), Tally(np.uint64)   # per conditional branch pc / load pc
    try:
        for ch, br in branch_chunks(r):
            pred, _ = tage.run(br.pc, br.target, br.taken, br.kind)
            cond = br.cond
            mispredicted.add(br.pc[cond], pred[cond] != br.taken[cond])
            pc = _access_pcs(ch)
            l1 = cache.run(pc, ch.mem["addr"], ch.mem["store"], ch.mem["insn"]).l1
            load = ~ch.mem["store"]
            missed.add(pc[load], l1[load] == MISS)
    finally:
        cache.close()
    return {"branch": [int(mispredicted.keys[i]) for i in top_sites(mispredicted.counts[:, 0], branch_share, max_branches)],
            "load": [int(missed.keys[i]) for i in top_sites(missed.counts[:, 0], load_share, max_loads)],
            "from_trace": str(trace)}


def check_share(**shares: float) -> None:
    """Each share of events that sites are picked to hold is in (0, 1]."""
    bad = {k: v for k, v in shares.items() if not 0 < v <= 1}
    if bad:
        raise UsageError(", ".join(f"{k} {v}" for k, v in bad.items()) + ": give a share of events in (0, 1]")


def site_graphs(static: StaticTable, sites: dict, n_nodes: int) -> list[SiteGraph]:
    """The graphs of the sites whose code the trace executed (``static``: its whole static table)."""
    code_of = {int(static.pc[s]): static.code(int(s))[1] for s in np.nonzero(static.known)[0]}
    return [build_site_graph(pc, code_of, task, n_nodes) for task in TASKS for pc in sites.get(task, [])
            if pc in code_of]   # a site of the training input may not execute in another window


def history_site(pc: int, task: str) -> SiteGraph:
    """A site of a history-only dataset: its pc and task, no graph (size-0 arrays)."""
    return SiteGraph(pc=pc, task=task, static=np.zeros((0, 0), np.uint8), adj=np.zeros((0, 0, 0), np.uint8),
                     dyn_slot=np.zeros(0, np.int16), node_pc=np.zeros(0, np.uint64))


# --------------------------------------------------------------------------------------- encodings
def encode_deltas(d: np.ndarray) -> np.ndarray:
    """Line deltas -> DELTA_BITS features: [small (|d| < 128), negative, 7 bits of min(|d|, 127)]."""
    d = np.asarray(d, np.int64)
    mag = np.minimum(np.abs(d), 127)
    out = np.zeros(d.shape + (DELTA_BITS,), np.uint8)
    out[..., 0] = np.abs(d) < 128
    out[..., 1] = d < 0
    out[..., 2:] = (mag[..., None] >> np.arange(7)) & 1
    return out


def encode_tage(detail: np.ndarray) -> np.ndarray:
    """TAGE-SC-L's internals (int [..., TAGE_DETAIL], TAGE_DETAIL_COLUMNS) -> TAGE_BITS features:
    provider prediction, alternate prediction, use-alt chose the alternate, TAGE's prediction;
    provider history length, a thermometer of the table pair k = (bank + 1) // 2 >= 1, 4, 7, 10, 13, 16
    (history >= 6, 18, 54, 161, 482, 1444 bits; all 0: the bimodal table); provider confidence
    |2 ctr + 1| >= 3, 5, 7; loop hit, valid, prediction, used; SC: sum >= 0, |sum| >= threshold / 4,
    / 2, / 1, 4 bits of min(|sum| >> 4, 15); SC changed the prediction."""
    d = {name: np.asarray(detail)[..., k].astype(np.int64) for k, name in enumerate(TAGE_DETAIL_COLUMNS)}
    pair, strength, mag = (d["provider_bank"] + 1) // 2, np.abs(2 * d["provider_ctr"] + 1), np.abs(d["sc_sum"])
    bits = [d["provider_pred"], d["alt_pred"], d["used_alt"], d["tage_pred"]]
    bits += [pair >= k for k in (1, 4, 7, 10, 13, 16)] + [strength >= k for k in (3, 5, 7)]
    bits += [d["loop_hit"], d["loop_valid"], d["loop_pred"], d["loop_used"]]
    bits += [d["sc_sum"] >= 0] + [mag * k >= d["sc_thres"] for k in (4, 2, 1)]
    bits += [(np.minimum(mag >> 4, 15) >> b) & 1 for b in range(4)] + [d["sc_flip"]]
    assert len(bits) == TAGE_BITS
    return np.stack(bits, -1).astype(np.uint8)


def delta_vocabulary(deltas: Tally, n_classes: int) -> list[int]:
    """The ``n_classes - 1`` most frequent deltas (ties: smaller |delta| first); the last class is "other"."""
    vals, counts = deltas.keys, deltas.counts[:, 0]
    order = sorted(range(len(vals)), key=lambda k: (-counts[k], abs(int(vals[k])), int(vals[k])))
    return [int(vals[k]) for k in order[: n_classes - 1]]


def delta_class(deltas: np.ndarray, vocab: list[int]) -> np.ndarray:
    lookup = {d: k for k, d in enumerate(vocab)}
    other = len(vocab)
    return np.array([lookup.get(int(d), other) for d in deltas], np.int64)


def _window(values: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """Rows ``values[end-length:end]`` for each ``end`` (each ``end >= length``)."""
    return values[np.asarray(end, np.int64)[:, None] - length + np.arange(length)[None, :]]


def _tail(values: np.ndarray, length: int) -> np.ndarray:
    return values[max(len(values) - length, 0):]


def _spaced(n: int, cap: int | None) -> np.ndarray | None:
    """Indices of at most ``cap`` of ``n`` samples, evenly spaced in time; None: all of them."""
    if cap is None or n <= cap:
        return None
    return np.unique(np.linspace(0, n - 1, cap).astype(np.int64))


def branch_tokens(pc: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """A branch as BranchNet reads it: a 12-bit hash of its pc and its direction, ``hash << 1 | taken``."""
    h = (np.asarray(pc, np.uint64) ^ (np.asarray(pc, np.uint64) >> np.uint64(12))) & np.uint64(0xFFF)
    return ((h << np.uint64(1)) | np.asarray(taken, np.uint64)).astype(np.uint16)


def _access_pcs(ch) -> np.ndarray:
    """The pc of each memory access of a chunk."""
    return ch.insn["pc"][(ch.mem["insn"] - np.uint64(ch.first)).astype(np.int64)]


class _LoadLines:
    """A load's accesses chunk by chunk: ``take`` gives (instruction index, line) of the chunk's loads
    of ``pc`` after the last ``keep`` accesses before the chunk (fewer at the start of the trace), and
    how many of those it carried."""

    def __init__(self, pc: int, keep: int):
        self.pc, self.keep = pc, keep
        self.idx, self.line = np.zeros(0, np.int64), np.zeros(0, np.int64)

    def take(self, ch, access_pc: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        q = np.nonzero(~ch.mem["store"] & (access_pc == self.pc))[0]
        idx = np.concatenate([self.idx, ch.mem["insn"][q].astype(np.int64)])
        line = np.concatenate([self.line, (ch.mem["addr"][q] // LINE).astype(np.int64)])
        carried = len(self.idx)
        self.idx, self.line = _tail(idx, self.keep), _tail(line, self.keep)
        return idx, line, carried


def _ahead(heads: list[np.ndarray], chunk: int, n: int) -> np.ndarray:
    """The first ``n`` lines (fewer at the end of the trace) of a load's accesses after chunk ``chunk``
    (``heads``: per chunk, the lines of its first accesses)."""
    out, c = [np.zeros(0, np.int64)], chunk + 1
    while sum(map(len, out)) < n and c < len(heads):
        out.append(heads[c])
        c += 1
    return np.concatenate(out)[:n]


def _steps(values: np.ndarray, carried: int, ks) -> list[np.ndarray]:
    """Per k of ``ks``: ``values[p] - values[p - k]`` for each position p of the chunk (``>= carried``)
    with an access k before it."""
    positions = [np.arange(max(carried, k), len(values)) for k in ks]
    return [values[p] - values[p - k] for p, k in zip(positions, ks)]


def _tally_steps(tally: Tally, steps: list[np.ndarray]) -> None:
    """Count the k-step values of ``_steps`` in ``tally``, column by k."""
    sizes = [len(v) for v in steps]
    tally.add(np.concatenate(steps), *(np.repeat(np.eye(len(steps), dtype=np.int64)[c], sizes)
                                       for c in range(len(steps))))


class NoSamples(DataError):
    """None of the sites has an instance in this window: a training window may be skipped for it."""


# --------------------------------------------------------------------------------------- building
def build_dataset(trace: str | Path, sites: dict, out_dir: str | Path, cfg: DatasetConfig,
                  vocab: list[int] | None = None, distance: dict | None = None, progress: bool = True) -> dict:
    """Build the samples of ``trace`` for ``sites`` and write them to ``out_dir``; return the sidecar.

    ``vocab`` (delta classes) and ``distance`` (prefetch distance per load, {pc hex: k}) come from the
    training dataset; None = compute them here (training).
    A site without samples in this window (not executed, or only in its first ``lead`` instructions)
    is left out and listed in the sidecar's ``sites_skipped``; no samples at all is a DataError.

    Two passes over the trace, chunk by chunk: the first counts each site's instances (and the
    training deltas and gaps, and each load's first lines per chunk, which the labels of the chunk
    before read), the second computes the samples and appends them to the files. Memory: a chunk, the
    registers, pcs and memory accesses of the last ``lead`` + 1 instructions, the recent values and
    addresses of the sites' memory operands, the histories and the memory image (the last value of each
    address the program touched: its footprint); not the trace (the delta and gap counts of a training
    set grow with its distinct deltas and gaps).
    """
    trace, out_dir = Path(trace), check_output(out_dir, directory=True)
    cfg = DatasetConfig(**asdict(cfg))  # validated again: a config can be changed after it was made
    reader = TraceReader(trace)
    for flag in () if cfg.history_only else (FLAG_REGS, FLAG_VALUES, FLAG_BYTES):
        reader.require(flag, "the fused dataset (history-only for BranchNet and the delta-LSTM: --history-only)")
    reader.require_instructions("the fused dataset")
    want = {"branch": cfg.task in ("branch", "both"), "load": cfg.task in ("prefetch", "both")}
    wanted = {t: sites.get(t, []) if want[t] else [] for t in TASKS}
    scan = TraceReader(trace, verify=False)   # the file was verified when ``reader`` opened it
    keep = max([cfg.prefetch_distance or MAX_DISTANCE, *(distance or {}).values()])
    ks = [cfg.prefetch_distance] if cfg.prefetch_distance else list(range(1, keep + 1))
    instances, deltas, gaps, heads, n_branches = _count(scan, wanted, cfg, ks, keep, progress,
                                                        tally=vocab is None or distance is None)
    graphs = ([history_site(pc, t) for t in TASKS for pc in wanted[t]] if cfg.history_only
              else site_graphs(scan.static, wanted, cfg.n_nodes))
    distance = _distances(cfg, wanted["load"], distance, gaps, ks)
    if vocab is None and want["load"]:
        total = Tally(np.int64)
        for pc in wanted["load"]:
            counts = deltas[pc].counts[:, ks.index(distance[f"{pc:#x}"])]
            total.add(deltas[pc].keys[counts > 0], counts[counts > 0])
        vocab = delta_vocabulary(total, cfg.delta_classes)
    vocab = vocab or []
    executed = {(g.task, g.pc) for g in graphs}
    skipped = [{"pc": pc, "task": t, "why": "not executed in this window"}
               for t in TASKS for pc in wanted[t] if (t, pc) not in executed]
    where = f"{cfg.lead} or more instructions into the window" + (f" and at or after instruction {cfg.since}"
                                                                   if cfg.since else "")
    skipped += [{"pc": g.pc, "task": g.task, "why": f"no instance {where}"} for g in graphs
                if not instances[g.task, g.pc]]
    graphs = [g for g in graphs if instances[g.task, g.pc]]
    if not graphs:
        raise NoSamples(f"{trace}: no samples: none of the {len(skipped)} sites ({cfg.task}) has an instance {where}")
    picks = [_spaced(instances[g.task, g.pc], cfg.max_per_site) for g in graphs]
    kept = [instances[g.task, g.pc] if p is None else len(p) for g, p in zip(graphs, picks)]
    lookahead = dict.fromkeys(LOOKAHEAD_KEYS, 0)
    samples = _samples(scan, graphs, picks, cfg, vocab, distance, heads, progress, lookahead)
    _write_columns(out_dir, samples, _columns(cfg), sum(kept), n_branches)
    counts = {t: sum(n for g, n in zip(graphs, kept) if g.task == t) for t in TASKS}
    return _write_meta(out_dir, trace, reader, sites, graphs, counts, cfg, vocab, distance, skipped, lookahead)


def _distances(cfg: DatasetConfig, loads: list[int], given: dict | None, gaps: dict, ks: list[int]) -> dict:
    """{pc hex: k} of the load sites: ``given`` (the training dataset's), else ``cfg.prefetch_distance``,
    else chosen here for timeliness."""
    if given is None:
        return {f"{pc:#x}": cfg.prefetch_distance or timely_distance(gaps[pc]) for pc in loads}
    missing = [f"{pc:#x}" for pc in loads if f"{pc:#x}" not in given]
    if missing:
        raise UsageError(f"no prefetch distance for the loads {missing}: give the training dataset's")
    if cfg.prefetch_distance and {given[f"{pc:#x}"] for pc in loads} - {cfg.prefetch_distance}:
        raise UsageError(f"prefetch_distance {cfg.prefetch_distance} but the given distances are {given}")
    return {f"{pc:#x}": int(given[f"{pc:#x}"]) for pc in loads}


def _chunks(reader: TraceReader, desc: str, progress: bool):
    """``branch_chunks(reader)`` with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=reader.n_insn, desc=desc, unit="insn", unit_scale=True, disable=not progress,
              leave=False) as bar:
        for ch, br in branch_chunks(reader):
            yield ch, br
            bar.update(len(ch.insn))


def _count(reader: TraceReader, sites: dict, cfg: DatasetConfig, ks: list[int], keep: int, progress: bool,
           tally: bool) -> tuple[dict, dict, dict, dict, int]:
    """Pass 1: each site's ``eligible`` instances, keyed (task, pc); per load
    site (with ``tally``) the k-step line deltas and instruction gaps (Tally, one column per k of
    ``ks``) and the lines of its first ``keep`` accesses in each chunk; the number of branches. Fills
    ``reader.static``."""
    counts = {(t, pc): 0 for t in TASKS for pc in sites[t]}
    deltas = {pc: Tally(np.int64, len(ks)) for pc in sites["load"]}
    gaps = {pc: Tally(np.int64, len(ks)) for pc in sites["load"]}
    loads, heads = {pc: _LoadLines(pc, keep) for pc in sites["load"]}, {pc: [] for pc in sites["load"]}
    n_branches = 0
    for ch, br in _chunks(reader, "counting", progress):
        n_branches += len(br.idx)
        for pc in sites["branch"]:
            i = br.idx[br.cond & (br.pc == pc)].astype(np.int64)
            counts["branch", pc] += int(eligible(i, cfg).sum())
        access_pc = _access_pcs(ch)
        for pc in sites["load"]:
            idx, line, carried = loads[pc].take(ch, access_pc)
            counts["load", pc] += int(eligible(idx[max(carried, 1):], cfg).sum())
            heads[pc].append(line[carried:carried + keep])
            if tally:
                _tally_steps(deltas[pc], _steps(line, carried, ks))
                _tally_steps(gaps[pc], _steps(idx, carried, ks))
    return counts, deltas, gaps, heads, n_branches


def _columns(cfg: DatasetConfig) -> dict:
    """name -> (dtype, shape of one sample); history-only: without the snapshot's columns."""
    columns = {"idx": (np.int64, ()), "g": (np.uint8, (G_DIM,)), "taken": (np.int8, ()), "delta": (np.int16, ()),
               "tage_pred": (np.uint8, ()), "tage_conf": (np.uint8, ()), "tage_detail": (np.int32, (TAGE_DETAIL,)),
               "bpos": (np.int64, ()), "bfirst": (np.int64, ()),
               "dhist": (np.int16, (cfg.delta_history,)), "site": (np.int16, ())}
    if cfg.history_only:
        return columns
    return {**columns, "dynval": (np.uint64, (N_SLOTS,)), "fe_count": (np.uint16, (cfg.n_nodes,)),
            "mem_pred": (np.uint64, (MAX_MEM_SLOTS,)), "mem_pred_ok": (np.uint8, (MAX_MEM_SLOTS,))}


def _samples(reader: TraceReader, graphs: list[SiteGraph], picks: list, cfg: DatasetConfig, vocab: list[int],
             distance: dict, heads: dict, progress: bool, lookahead: dict) -> Iterator[dict]:
    """Pass 2: the samples of each chunk, in time order. ``picks[k]``: which of site k's eligible
    instances to keep (positions in time order; None: all); ``heads`` (from pass 1): the loads' first
    lines in each chunk, for the labels of the chunk before. Adds the memory slots' address
    predictions to ``lookahead`` (LOOKAHEAD_KEYS)."""
    lead, n_hist, n_dh = cfg.lead, HIST_BITS, cfg.delta_history
    seen = [0] * len(graphs)   # eligible instances of each site so far
    tage = TageScL()           # its prediction, confidence and internals are inputs at prediction time
    cond_idx, cond_taken = np.full(n_hist, -1, np.int64), np.zeros(n_hist, np.uint8)  # the last conditional branches
    n_before = 0               # branches in the chunks before this one
    loads = {g.pc: _LoadLines(g.pc, distance[f"{g.pc:#x}"]) for g in graphs if g.task == "load"}
    d_prev = {g.pc: np.zeros(N_DELTA_FEATURES, np.int64) for g in graphs if g.task == "load"}  # each load's last deltas
    c_prev = {g.pc: np.full(n_dh, cfg.delta_classes, np.int64) for g in graphs if g.task == "load"}  # and classes
    snapshots, frontend, image = _Snapshots(graphs, lead), _FrontEndCounts(graphs, lead), _MemoryImage(lead)
    slot_node = np.zeros((len(graphs), MAX_MEM_SLOTS), np.int64)   # the node of each slot's instruction (0: none)
    for k, g in enumerate(graphs):
        slot_node[k, :len(g.mem_pcs)] = [int(np.nonzero(g.node_pc == pc)[0][0]) for pc in g.mem_pcs]

    def keep(k: int, i: np.ndarray) -> np.ndarray:
        ok = np.nonzero(eligible(i, cfg))[0]
        first, seen[k] = seen[k], seen[k] + len(ok)
        return ok if picks[k] is None else ok[np.isin(np.arange(first, seen[k]), picks[k])]

    for chunk, (ch, br) in enumerate(_chunks(reader, "samples", progress)):
        pred, conf, detail = tage.run_detail(br.pc, br.target, br.taken, br.kind)   # before each update
        cond = br.cond
        cond_idx = np.concatenate([cond_idx, br.idx[cond].astype(np.int64)])
        cond_taken = np.concatenate([cond_taken, br.taken[cond].astype(np.uint8)])
        access_pc = _access_pcs(ch)
        parts = []
        for k, g in enumerate(graphs):
            if g.task == "branch":
                pos = np.nonzero(cond & (br.pc == g.pc))[0]
                pos = pos[keep(k, br.idx[pos].astype(np.int64))]
                i, n = br.idx[pos].astype(np.int64), len(pos)
                gvec = np.zeros((n, G_DIM), np.uint8)
                gvec[:, 0] = 1
                gvec[:, G_TAGE.start] = pred[pos]
                gvec[np.arange(n), G_TAGE.start + 1 + conf[pos].astype(np.int64)] = 1
                gvec[:, G_TAGE_DETAIL] = encode_tage(detail[pos])
                part = {"taken": br.taken[pos].astype(np.int8), "delta": np.full(n, -1, np.int16),
                        "tage_pred": pred[pos].astype(np.uint8), "tage_conf": conf[pos].astype(np.uint8),
                        "tage_detail": detail[pos],
                        "dhist": np.full((n, n_dh), cfg.delta_classes, np.int16)}
            else:
                dist = distance[f"{g.pc:#x}"]
                idx, line, carried = loads[g.pc].take(ch, access_pc)   # carried: the last ``dist`` before
                w = np.concatenate([line, _ahead(heads[g.pc], chunk, dist - 1)])
                first = max(carried, 1)
                p = np.arange(first, len(line))   # positions in w of the chunk's accesses after the trace's first
                ending = np.where(p >= dist, line[p] - line[np.maximum(p - dist, 0)], 0)   # k-step delta up to each
                ds = np.concatenate([d_prev[g.pc], line[p] - line[p - 1]])
                cs = np.concatenate([c_prev[g.pc], np.where(p >= dist, delta_class(ending, vocab), cfg.delta_classes)])
                d_prev[g.pc], c_prev[g.pc] = _tail(ds, N_DELTA_FEATURES), _tail(cs, n_dh)
                j = keep(k, idx[p])   # access p[j]: the one being predicted, at instruction i
                i, n = idx[p[j]], len(j)
                known = last_known_access(p[j])             # deltas up to it are known, and its line
                end = known - first + 1                     # in ds / cs after their carried entries
                target = known + dist
                label = np.where(target < len(w), delta_class(w[np.minimum(target, len(w) - 1)] - w[known], vocab), -1)
                gvec = np.zeros((n, G_DIM), np.uint8)
                gvec[:, 1] = 1
                before = _window(ds, N_DELTA_FEATURES + end, N_DELTA_FEATURES)[:, ::-1]   # latest first
                gvec[:, G_DELTAS] = encode_deltas(before).reshape(n, N_DELTA_FEATURES * DELTA_BITS)
                part = {"taken": np.full(n, -1, np.int8), "delta": label.astype(np.int16),
                        "tage_pred": np.zeros(n, np.uint8), "tage_conf": np.zeros(n, np.uint8),
                        "tage_detail": np.zeros((n, TAGE_DETAIL), np.int32),
                        "dhist": _window(cs, n_dh + end, n_dh).astype(np.int16)}
            gvec[:, 2:2 + n_hist] = _window(cond_taken, np.searchsorted(cond_idx, i), n_hist)  # before i
            parts.append({"idx": i, "g": gvec, **part, "site": np.full(n, k, np.int16),
                          "bpos": n_before + np.searchsorted(br.idx, i), "bfirst": np.zeros(n, np.int64)})
        cond_idx, cond_taken = _tail(cond_idx, n_hist), _tail(cond_taken, n_hist)
        cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        order = np.argsort(cols["idx"], kind="stable")   # samples in time order (validation = the last ones)
        cols = {key: v[order] for key, v in cols.items()}
        cols["branches"] = branch_tokens(br.pc, br.taken)
        n_before += len(br.idx)
        if cfg.history_only:
            yield cols
            continue
        cols["dynval"], slots = snapshots.take(ch, cols["site"], snapshot_index(cols["idx"], lead), cols["idx"])
        count = frontend.take(ch, cols["site"], cols["idx"])
        cols["fe_count"] = np.minimum(count, np.iinfo(np.uint16).max).astype(np.uint16)
        n = np.take_along_axis(count, slot_node[cols["site"].astype(np.int64)], 1)
        addr, predicted = predicted_addresses(slots["a0"], slots["a1"], slots["known"], n)
        val, found = image.take(ch, addr, memory_image_index(cols["idx"], lead))
        ok = predicted & found
        cols["mem_pred"], cols["mem_pred_ok"] = np.where(ok, val, np.uint64(0)), ok.astype(np.uint8)
        for key, v in zip(LOOKAHEAD_KEYS, (predicted, predicted & (addr == slots["truth"]), ok)):
            lookahead[key] += int(v.sum())
        yield cols


class _Snapshots:
    """The dynamic state of the samples: registers before the snapshot instruction and, per memory
    slot, the last value its instruction accessed before it and the addresses of its last two accesses
    before it (and, for the report only, of its last access before i). Carries across chunks what
    samples up to ``lead`` + 1 instructions before the next chunk need: those instructions' registers,
    the slot instructions' accesses among them and the last two of each before them."""

    def __init__(self, graphs: list[SiteGraph], lead: int):
        self.graphs, self.keep = graphs, lead + 1
        self.mem_pcs = np.array(sorted({pc for g in graphs for pc in g.mem_pcs}), np.uint64)
        self.regs, self.regs_first = np.zeros((0, 16), np.uint64), 0   # registers before regs_first, regs_first + 1..
        self.acc = {"idx": np.zeros(0, np.int64), "pc": np.zeros(0, np.uint64), "val": np.zeros(0, np.uint64),
                    "addr": np.zeros(0, np.uint64)}

    def take(self, ch, site: np.ndarray, snap: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, dict]:
        """For samples of ``site`` at instructions ``i`` (inside ``ch``) with snapshots ``snap``: [M, N_SLOTS]
        u64 values, and per memory slot [M, MAX_MEM_SLOTS]: ``a0``, ``a1`` (u64), ``known`` (how many
        of them exist, at most 2), ``truth`` (u64, the address at the last access before i)."""
        lo, n = ch.first, len(ch.insn)
        out = np.zeros((len(snap), N_SLOTS), np.uint64)
        slots = {key: np.zeros((len(snap), MAX_MEM_SLOTS), np.uint64) for key in ("a0", "a1", "truth")}
        slots["known"] = np.zeros((len(snap), MAX_MEM_SLOTS), np.int64)
        inside = snap >= lo
        out[inside, :16] = ch.regs_at(snap[inside] - lo)[:, :16]
        out[~inside, :16] = self.regs[snap[~inside] - self.regs_first]
        access_pc = _access_pcs(ch)
        sel = np.isin(access_pc, self.mem_pcs)
        acc = {"idx": np.concatenate([self.acc["idx"], ch.mem["insn"][sel].astype(np.int64)]),
               "pc": np.concatenate([self.acc["pc"], access_pc[sel]]),
               "val": np.concatenate([self.acc["val"], ch.mem["val"][sel]]),
               "addr": np.concatenate([self.acc["addr"], ch.mem["addr"][sel]])}
        for k, g in enumerate(self.graphs):
            rows = np.nonzero(site == k)[0]
            for slot, pc in enumerate(g.mem_pcs):
                m = acc["pc"] == np.uint64(pc)
                idx, val, addr = acc["idx"][m], acc["val"][m], acc["addr"][m]   # in trace order
                if not len(idx):
                    continue
                last = np.searchsorted(idx, snap[rows], side="left") - 1   # last access with index < snap
                out[rows, 16 + slot] = np.where(last >= 0, val[np.maximum(last, 0)], 0)
                slots["a1"][rows, slot] = addr[np.maximum(last, 0)]
                slots["a0"][rows, slot] = addr[np.maximum(last - 1, 0)]
                slots["known"][rows, slot] = np.minimum(last + 1, 2)
                slots["truth"][rows, slot] = addr[np.maximum(np.searchsorted(idx, i[rows], side="left") - 1, 0)]
        tail = np.arange(max(n - self.keep, 0), n)
        self.regs = _tail(np.concatenate([self.regs, ch.regs_at(tail)[:, :16]]), self.keep)
        self.regs_first = lo + n - len(self.regs)
        horizon = lo + n - self.keep   # the earliest snapshot of the next chunk's samples
        before = np.nonzero(acc["idx"] < horizon)[0]
        by_pc = before[np.argsort(acc["pc"][before], kind="stable")]   # in trace order within each pc
        p = acc["pc"][by_pc]
        last_two = by_pc[np.concatenate([p[2:] != p[:-2], np.ones(min(len(p), 2), bool)])]   # each pc's last two
        rows = np.sort(np.concatenate([last_two, np.nonzero(acc["idx"] >= horizon)[0]]))
        self.acc = {key: v[rows] for key, v in acc.items()}
        return out, slots


class _FrontEndCounts:
    """The front-end counts of the samples: per node, the executions of its instruction in the
    sample's ``frontend_window``. Per chunk, the executions of the sites' instructions (the chunk and
    the carried pcs of the last ``lead`` + 1 instructions before it: a branch sample can be the
    previous chunk's last instruction) are sorted by (instruction, index), and a count is the
    difference of two searchsorted positions."""

    STRIDE = np.int64(1 << 40)   # key = instruction number * STRIDE + dynamic index

    def __init__(self, graphs: list[SiteGraph], lead: int):
        self.lead, self.keep = lead, lead + 1
        self.pcs = np.array(sorted({int(p) for g in graphs for p in g.node_pc if p}), np.uint64)
        node_pc = np.stack([g.node_pc for g in graphs])
        self.insn = np.where(node_pc != 0, np.searchsorted(self.pcs, node_pc), -1)   # [S, N] into pcs, -1: none
        self.tail = np.zeros(0, np.uint64)   # the pcs of the instructions just before the next chunk

    def take(self, ch, site: np.ndarray, i: np.ndarray) -> np.ndarray:
        """[M, N] int64 for samples of ``site`` at instructions ``i`` (inside ``ch``)."""
        pc = np.concatenate([self.tail, ch.insn["pc"]])
        first = int(ch.first) - len(self.tail)
        k = np.minimum(np.searchsorted(self.pcs, pc), len(self.pcs) - 1)   # every graph has an instruction
        hit = np.nonzero(self.pcs[k] == pc)[0]
        keys = np.sort(k[hit] * self.STRIDE + (first + hit))
        start, end = frontend_window(i, self.lead)
        insn = self.insn[np.asarray(site, np.int64)]                                   # [M, N]
        count = (np.searchsorted(keys, insn * self.STRIDE + end[:, None])
                 - np.searchsorted(keys, insn * self.STRIDE + start[:, None]))
        self.tail = _tail(pc, self.keep)
        return np.where(insn >= 0, count, 0)


class _MemoryImage:
    """Memory as of an instruction: per address, the value of the last access to it (any instruction,
    load or store) before it. Carries the last value of each address accessed before a horizon
    (``addr`` sorted: the program's footprint) and the accesses from the horizon on (the last
    ``lead`` + 1 instructions before the next chunk); a lookup in the recent accesses is a
    searchsorted on (address, index) keys."""

    def __init__(self, lead: int):
        self.keep = lead + 1
        self.addr, self.val = np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        self.recent = {"idx": np.zeros(0, np.int64), "addr": np.zeros(0, np.uint64), "val": np.zeros(0, np.uint64)}

    def take(self, ch, addr: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(value u64, found) at addresses ``addr`` [M, K] as of instructions ``t`` [M] (the last access
        with index < t; each t at least the first instruction of ``ch`` minus ``lead``)."""
        rec = {"idx": np.concatenate([self.recent["idx"], ch.mem["insn"].astype(np.int64)]),
               "addr": np.concatenate([self.recent["addr"], ch.mem["addr"]]),
               "val": np.concatenate([self.recent["val"], ch.mem["val"]])}
        base = int(ch.first) - self.keep                   # every access and t here is at or after it
        span = np.int64(int(ch.first) + len(ch.insn) + 1 - base)
        uniq, number = np.unique(rec["addr"], return_inverse=True)
        keys = number.astype(np.int64) * span + (rec["idx"] - base)   # (address number, index)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        q, in_rec = _find(uniq, addr)
        pos = np.searchsorted(keys, q * span + (np.asarray(t, np.int64)[:, None] - base)) - 1
        hit = in_rec & (pos >= 0) & (keys[np.maximum(pos, 0)] // span == q) if len(keys) else in_rec
        j, in_img = _find(self.addr, addr)
        val = np.zeros(np.shape(addr), np.uint64)
        val[in_img] = self.val[j[in_img]]
        val[hit] = rec["val"][order[pos[hit]]]   # accessed since the horizon: the recent value
        horizon = int(ch.first) + len(ch.insn) - self.keep   # the earliest t of the next chunk
        old = rec["idx"] < horizon
        new_addr, last = np.unique(rec["addr"][old][::-1], return_index=True)   # each address's last value
        new_val = rec["val"][old][::-1][last]
        k, known = _find(self.addr, new_addr)
        self.val[k[known]] = new_val[known]
        at = np.searchsorted(self.addr, new_addr[~known])
        self.addr, self.val = np.insert(self.addr, at, new_addr[~known]), np.insert(self.val, at, new_val[~known])
        self.recent = {key: v[~old] for key, v in rec.items()}
        return val, hit | in_img


def _find(sorted_keys: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, present) of each ``x`` in ``sorted_keys`` (position 0 where absent)."""
    pos = np.searchsorted(sorted_keys, x)
    pos = np.where(pos < len(sorted_keys), pos, 0)
    return pos, (sorted_keys[pos] == x) if len(sorted_keys) else np.zeros(np.shape(x), bool)


def _write_columns(out_dir: Path, samples: Iterator[dict], columns: dict, total: int, n_branches: int) -> None:
    """Append the samples to one ``.npy`` per column and their ``branches`` to ``branches.npy``
    (each file written whole or not at all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {**columns, "branches": (np.uint16, ())}
    lengths = {key: total for key in columns} | {"branches": n_branches}
    with ExitStack() as stack:
        files = {}
        for key, (dtype, shape) in columns.items():
            files[key] = stack.enter_context(open(stack.enter_context(atomic_path(out_dir / f"{key}.npy")), "wb"))
            npformat.write_array_header_1_0(files[key], {"descr": npformat.dtype_to_descr(np.dtype(dtype)),
                                                         "fortran_order": False, "shape": (lengths[key],) + shape})
        written = dict.fromkeys(columns, 0)
        for cols in samples:
            for key, f in files.items():
                f.write(np.ascontiguousarray(cols[key], columns[key][0]).tobytes())
                written[key] += len(cols[key])
        if written != lengths:
            raise AssertionError(f"written {written}, counted {lengths}")


def _write_meta(out_dir: Path, trace: Path, reader: TraceReader, sites: dict, graphs: list[SiteGraph],
                counts: dict, cfg: DatasetConfig, vocab: list[int], distance: dict, skipped: list[dict],
                lookahead: dict) -> dict:
    with atomic_path(out_dir / "sites.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, static=np.stack([g.static for g in graphs]), adj=np.stack([g.adj for g in graphs]),
                     dyn_slot=np.stack([g.dyn_slot for g in graphs]), node_pc=np.stack([g.node_pc for g in graphs]),
                     pc=np.array([g.pc for g in graphs], np.uint64),
                     task=np.array([TASKS.index(g.task) for g in graphs], np.int8))
    meta = {"format_version": FORMAT_VERSION, "config": asdict(cfg), "trace": str(trace),
            "trace_sha256": reader.meta.get("file", {}).get("sha256"), "workload": reader.meta.get("workload"),
            "input": reader.meta.get("input", {}).get("index"), "n_insn": reader.n_insn,
            "sites": [{"pc": g.pc, "task": g.task, "nodes": g.nodes, "mem_pcs": g.mem_pcs} for g in graphs],
            "sites_skipped": skipped,
            "sites_from": sites.get("from_trace"), "delta_vocabulary": vocab,
            "prefetch_distance": distance, "samples": sum(counts.values()),
            "samples_per_task": counts, "g_dim": G_DIM, "n_slots": N_SLOTS, "memory_lookahead": lookahead,
            "history_only": cfg.history_only}
    write_json(out_dir / "dataset.json", meta)
    return meta


def concat_datasets(parts: list, out_dir: str | Path) -> dict:
    """One dataset of ``parts`` (dataset directories built with the same config, delta vocabulary and
    prefetch distances for the same sites: the windows and inputs of one training set), their samples
    in the order given, written part by part. A site (by pc) takes the graph of the first part that has it; a part whose
    graph of that site differs (its window executed other code around it) contributes no samples of
    it, and the sidecar counts them in ``samples_dropped``."""
    out_dir = check_output(out_dir, directory=True)
    ds = [Dataset(p) for p in parts]
    if not ds:
        raise UsageError("concat_datasets: no datasets given")
    first = ds[0].meta
    for d in ds[1:]:
        for key in ("config", "delta_vocabulary", "prefetch_distance"):
            if d.meta[key] != first[key]:
                raise DataError(f"{d.path}: its {key} differs from {ds[0].path}'s; the parts cannot be merged")
    graphs, where, remaps, dropped = [], {}, [], {}
    for d in ds:
        remap = np.full(len(d.site_pc), -1, np.int64)
        for k, pc in enumerate(d.site_pc):
            g = SiteGraph(pc=int(pc), task=d.task(k), static=d.static[k], adj=d.adj[k],
                          dyn_slot=d.dyn_slot[k], node_pc=d.node_pc[k], mem_pcs=d.meta["sites"][k]["mem_pcs"],
                          nodes=d.meta["sites"][k]["nodes"])
            j = where.setdefault((g.task, g.pc), len(graphs))
            if j == len(graphs):
                graphs.append(g)
            h = graphs[j]
            if g.mem_pcs == h.mem_pcs and all(np.array_equal(getattr(g, f), getattr(h, f))
                                              for f in ("static", "adj", "dyn_slot", "node_pc")):
                remap[k] = j
            else:
                n = int((np.asarray(d.arrays["site"]) == k).sum())
                dropped[f"{int(pc):#x}"] = dropped.get(f"{int(pc):#x}", 0) + n
        remaps.append(remap)

    def samples():
        offset = 0
        for d, remap in zip(ds, remaps):
            site = np.asarray(d.arrays["site"], np.int64)
            keep = remap[site] >= 0
            cols = {key: np.asarray(v)[keep] for key, v in d.arrays.items()}
            cols["site"] = remap[site[keep]]
            cols["bpos"], cols["bfirst"] = cols["bpos"] + offset, cols["bfirst"] + offset   # into the merged stream
            cols["branches"] = np.asarray(d.branches)
            offset += len(d.branches)
            yield cols

    cfg = DatasetConfig(**first["config"])
    kept = [np.bincount(np.asarray(d.arrays["site"], np.int64), minlength=len(r))[r >= 0].sum() if len(d) else 0
            for d, r in zip(ds, remaps)]
    _write_columns(out_dir, samples(), _columns(cfg), int(sum(kept)), sum(len(d.branches) for d in ds))
    site = np.load(out_dir / "site.npy", mmap_mode="r")
    counts = {t: int(np.isin(site, [k for k, g in enumerate(graphs) if g.task == t]).sum()) for t in TASKS}
    meta = _write_meta(out_dir, Path(first["trace"]), TraceReader(first["trace"], verify=False),
                       {"from_trace": first["sites_from"]}, graphs, counts, cfg, first["delta_vocabulary"],
                       first["prefetch_distance"],
                       [s for d in ds for s in d.meta["sites_skipped"]],
                       {key: sum(d.meta["memory_lookahead"][key] for d in ds) for key in LOOKAHEAD_KEYS})
    meta.update({"parts": [{"path": str(d.path), "trace_sha256": d.meta["trace_sha256"], "input": d.meta["input"],
                            "samples": len(d), "rows": int(k)} for d, k in zip(ds, kept)], "samples_dropped": dropped})
    write_json(out_dir / "dataset.json", meta)
    return meta


# --------------------------------------------------------------------------------------- reading
class Dataset:
    """A built dataset, memory-mapped: ``ds.arrays[name]``, ``ds.static`` [S,N,F], ``ds.adj``
    [S,E,N,N], ``ds.dyn_slot`` [S,N], ``ds.node_pc`` [S,N], ``ds.meta``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a dataset (no dataset.json); build it with `ncf dataset`")
        self.meta = read_json(meta_path)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{self.path}: dataset format {self.meta.get('format_version')} is not "
                             f"{FORMAT_VERSION}; rebuild it with `ncf dataset`")
        sites = np.load(self.path / "sites.npz")
        self.static, self.adj, self.dyn_slot = sites["static"], sites["adj"], sites["dyn_slot"]
        self.node_pc = sites["node_pc"]
        self.site_pc, self.site_task = sites["pc"], sites["task"]
        self.history_only = bool(self.meta.get("history_only"))
        if self.history_only:   # no site graphs: blank ones, all the history GNN reads of an ncf dataset's graphs
            s, n = len(self.site_pc), self.meta["config"]["n_nodes"]
            self.static, self.adj = np.zeros((s, n, F_STATIC), np.uint8), np.zeros((s, N_EDGE_TYPES, n, n), np.uint8)
            self.dyn_slot, self.node_pc = np.full((s, n), -1, np.int16), np.zeros((s, n), np.uint64)
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in self.path.glob("*.npy") if p.stem != "branches"}
        stream = self.path / "branches.npy"
        self.branches = np.load(stream, mmap_mode="r") if stream.exists() else None

    def branch_history(self, rows: np.ndarray, length: int) -> np.ndarray:
        """int16 [len(rows), length]: the tokens (``branch_tokens``) of the last ``length`` branches
        before each sample, oldest first, 0 where its window has fewer."""
        if self.branches is None:
            raise DataError(f"{self.path}: no branch stream (branches.npy); rebuild it with `ncf dataset`")
        pos = np.asarray(self.arrays["bpos"][rows], np.int64)[:, None] + np.arange(-length, 0)
        ok = pos >= np.asarray(self.arrays["bfirst"][rows], np.int64)[:, None]
        return np.where(ok, np.asarray(self.branches)[np.where(ok, pos, 0)], 0).astype(np.int16)

    def __len__(self) -> int:
        return len(self.arrays["idx"])

    def task(self, site: int) -> str:
        """Site ``site``'s task: "branch" or "load" (``TASKS``)."""
        return TASKS[int(self.site_task[site])]

    @property
    def part_rows(self) -> list[int]:
        """The rows of each part of a merged dataset (``concat_datasets``: one training trace each, in time
        order, one part after the other); one part of every row otherwise."""
        parts = self.meta.get("parts")
        if not parts:
            return [len(self)]
        if any("rows" not in p for p in parts) or sum(p["rows"] for p in parts) != len(self):
            raise DataError(f"{self.path}: merged by an older ncf (its parts' rows are not recorded); merge it again")
        return [p["rows"] for p in parts]
