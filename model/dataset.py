"""Datasets of fused samples: one sample per dynamic instance of a hard branch or delinquent load.

    sites = find_sites(train_trace)                      # hard branches + delinquent loads of input 0
    build_dataset(train_trace, sites, "data/bzip2-0", DatasetConfig(lead=100))
    build_dataset(test_trace, sites, "data/bzip2-1", cfg, vocab=train_vocab)   # input 1: held out

What a sample of dynamic instruction i holds, and when it was knowable (the honesty rule):

* the site's static graph (model/graph.py): static code only;
* ``dynval``: the 16 registers *before* instruction ``s = i - lead`` and, for each memory operand
  of the region, the last value its instruction accessed at an index ``< s``: state captured at
  least ``lead`` instructions before i;
* ``g``: the last 32 conditional-branch outcomes *before* i, TAGE-SC-L's prediction and
  confidence for i (an online predictor's output, available when i is fetched), and for loads the
  last 3 address deltas of the same load *before* i;
* history-only baselines: the last 200 branches (pc hash, direction) before i; the last 16 delta
  classes of the same load before i.

Never the outcome, never anything from i itself or later. ``snapshot_index`` is the one place
where the lead is applied; the test suite rebuilds a dataset from a trace whose state after ``s``
has been scrambled and checks that no feature changes.

Train/test split: by program input (sites, delta vocabulary and normalisation come from input 0;
input 1 is only evaluated), validation = the last 10% of the training samples in time.
On disk (``out_dir``): one ``.npy`` per array (memory-mapped when read), ``sites.npz`` with the
site graphs, and ``dataset.json`` (config, sites, vocabulary, counts, the traces' hashes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ncf.io import DataError, UsageError, atomic_path, check_output, read_json, write_json
from ncf.trace_eval.branch_predictors import COND, TageScL
from ncf.trace_eval.format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, TraceReader
from ncf.trace_eval.harness import LINE, delinquent_loads, hard_branches, run_branch_predictor
from ncf.trace_eval.streams import branch_stream, memory_stream

from .graph import MAX_MEM_SLOTS, N_NODES, SiteGraph, build_site_graph

FORMAT_VERSION = 1
N_SLOTS = 16 + MAX_MEM_SLOTS     # dynval columns: 16 GPRs, then memory slots
HIST_BITS = 32
N_DELTA_FEATURES = 3             # previous deltas in g
DELTA_BITS = 9                   # per previous delta: small, negative, 7 magnitude bits
G_DIM = 2 + HIST_BITS + 1 + 3 + N_DELTA_FEATURES * DELTA_BITS
TASKS = ("branch", "load")


@dataclass
class DatasetConfig:
    lead: int = 100               # D: the snapshot is taken before instruction i - D
    task: str = "both"            # "branch", "prefetch" or "both"
    n_nodes: int = N_NODES
    cnn_history: int = 200        # branches seen by the BranchNet-style CNN
    delta_history: int = 16       # deltas seen by the delta-LSTM
    delta_classes: int = 16       # most frequent training deltas + "other"
    max_per_site: int | None = None  # keep at most this many samples per site, evenly spaced in time

    def __post_init__(self):
        check_lead(self.lead)
        if self.task not in ("branch", "prefetch", "both"):
            raise UsageError(f"task must be branch, prefetch or both, not {self.task!r}")
        if self.max_per_site is not None and self.max_per_site < 1:
            raise UsageError(f"max_per_site {self.max_per_site}: must be >= 1 (or None: all samples)")


def check_lead(lead: int) -> int:
    """``lead`` if the honesty rule holds for it: the snapshot is taken before the predicted instruction."""
    if lead < 0:
        raise UsageError(f"lead {lead}: a negative lead takes the snapshot after the predicted instruction, "
                         "so the features would see the outcome; the lead must be >= 0")
    return lead


def snapshot_index(i: np.ndarray, lead: int) -> np.ndarray:
    """The instruction before which the dynamic state of the prediction for ``i`` is taken."""
    return np.asarray(i, np.int64) - check_lead(lead)


# --------------------------------------------------------------------------------------- sites
def find_sites(trace: str | Path, share: float = 0.5, max_branches: int = 16, max_loads: int = 16) -> dict:
    """Hard branches (TAGE-SC-L's worst) and delinquent loads (most L1D misses) of a trace."""
    from ncf.trace_eval.cache import simulate

    if max_branches < 0 or max_loads < 0 or max_branches + max_loads == 0:
        raise UsageError(f"sites to find: {max_branches} branches, {max_loads} loads (each >= 0, not both 0)")
    r = TraceReader(trace)
    r.require_instructions("finding hard branches and delinquent loads")
    res = run_branch_predictor(TageScL(), branch_stream(r))
    mem = memory_stream(TraceReader(trace, verify=False))  # verified just above
    base = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, n_insn=mem.n_insn)
    return {"branch": [h["pc"] for h in hard_branches(res, share, max_branches)],
            "load": [d["pc"] for d in delinquent_loads(mem, base, share, max_loads)],
            "from_trace": str(trace)}


def site_graphs(reader: TraceReader, sites: dict, n_nodes: int) -> list[SiteGraph]:
    for _ in reader.chunks(registers=False):  # fill the static table
        pass
    known = np.nonzero(reader.static.known)[0]
    code_of = {int(reader.static.pc[s]): reader.static.code(int(s))[1] for s in known}
    graphs = []
    for task in TASKS:
        for pc in sites.get(task, []):
            if pc in code_of:  # a site of the training input may not execute in another window
                graphs.append(build_site_graph(pc, code_of, task, n_nodes))
    return graphs


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


def delta_vocabulary(deltas: np.ndarray, n_classes: int) -> list[int]:
    """The ``n_classes - 1`` most frequent deltas (ties: smaller |delta| first); the last class is "other"."""
    vals, counts = np.unique(deltas, return_counts=True)
    order = sorted(range(len(vals)), key=lambda k: (-counts[k], abs(int(vals[k])), int(vals[k])))
    return [int(vals[k]) for k in order[: n_classes - 1]]


def delta_class(deltas: np.ndarray, vocab: list[int]) -> np.ndarray:
    lookup = {d: k for k, d in enumerate(vocab)}
    other = len(vocab)
    return np.array([lookup.get(int(d), other) for d in deltas], np.int64)


def _history(values: np.ndarray, end: np.ndarray, length: int, pad=0) -> np.ndarray:
    """Rows ``values[end-length:end]`` for each ``end`` (left-padded with ``pad``)."""
    padded = np.concatenate([np.full(length, pad, values.dtype), values])
    return padded[end[:, None] + np.arange(length)[None, :]]


def _spaced(n: int, cap: int | None) -> np.ndarray:
    """Indices of at most ``cap`` of ``n`` samples, evenly spaced in time."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).astype(np.int64))


# --------------------------------------------------------------------------------------- building
def build_dataset(trace: str | Path, sites: dict, out_dir: str | Path, cfg: DatasetConfig,
                  vocab: list[int] | None = None, progress: bool = True) -> dict:
    """Build the samples of ``trace`` for ``sites`` and write them to ``out_dir``; return the sidecar.

    ``vocab`` (delta classes) comes from the training dataset; None = compute it here (training).
    A site without samples in this window (not executed, or only in its first ``lead`` instructions)
    is left out and listed in the sidecar's ``sites_skipped``; no samples at all is a DataError.
    """
    trace, out_dir = Path(trace), check_output(out_dir, directory=True)
    cfg = DatasetConfig(**asdict(cfg))  # validated again: a config can be changed after it was made
    reader = TraceReader(trace)
    for flag in (FLAG_REGS, FLAG_VALUES, FLAG_BYTES):
        reader.require(flag, "the fused dataset")
    reader.require_instructions("the fused dataset")
    want = {"branch": cfg.task in ("branch", "both"), "load": cfg.task in ("prefetch", "both")}
    graphs = [g for g in site_graphs(reader, sites, cfg.n_nodes) if want[g.task]]
    br = branch_stream(TraceReader(trace, verify=False))   # the file was verified when ``reader`` opened it
    mem = memory_stream(TraceReader(trace, verify=False))

    # TAGE-SC-L over the whole branch stream: its prediction/confidence is an input at prediction time
    tage_pred, tage_conf = TageScL().run(br.pc, br.target, br.taken, br.kind)
    cond = br.kind == COND
    cond_taken = br.taken[cond].astype(np.uint8)
    cond_idx = br.idx[cond].astype(np.int64)  # global history before instruction i: cond_taken[:searchsorted(cond_idx, i)]
    pc_hash = ((br.pc ^ (br.pc >> np.uint64(12))) & np.uint64(0xFFF)).astype(np.int64)

    parts = []
    loads = ~mem.is_store
    if vocab is None and want["load"]:
        all_d = [np.diff((mem.addr[loads & (mem.pc == g.pc)] // LINE).astype(np.int64)) for g in graphs
                 if g.task == "load"]
        vocab = delta_vocabulary(np.concatenate(all_d) if all_d else np.zeros(0, np.int64), cfg.delta_classes)
    vocab = vocab or []
    for g in graphs:
        if g.task == "branch":
            pos = np.nonzero(cond & (br.pc == g.pc))[0]
            i = br.idx[pos].astype(np.int64)
            keep = np.nonzero(snapshot_index(i, cfg.lead) >= 0)[0]
            keep = keep[_spaced(len(keep), cfg.max_per_site)]
            pos, i = pos[keep], i[keep]
            gvec = np.zeros((len(pos), G_DIM), np.uint8)
            gvec[:, 0] = 1
            gvec[:, 2:2 + HIST_BITS] = _history(cond_taken, np.searchsorted(cond_idx, i), HIST_BITS)
            gvec[:, 2 + HIST_BITS] = tage_pred[pos]
            gvec[np.arange(len(pos)), 3 + HIST_BITS + tage_conf[pos].astype(np.int64)] = 1
            parts.append({"idx": i, "g": gvec,
                          "taken": br.taken[pos].astype(np.int8), "delta": np.full(len(pos), -1, np.int16),
                          "tage_pred": tage_pred[pos].astype(np.uint8), "tage_conf": tage_conf[pos].astype(np.uint8),
                          "bhist_pc": _history(pc_hash, pos, cfg.cnn_history).astype(np.int16),
                          "bhist_dir": _history(br.taken.astype(np.uint8), pos, cfg.cnn_history),
                          "dhist": np.full((len(pos), cfg.delta_history), cfg.delta_classes, np.int16)})
        else:
            q = np.nonzero(loads & (mem.pc == g.pc))[0]
            line = (mem.addr[q] // LINE).astype(np.int64)
            d = np.diff(line)                     # delta of access k (k >= 1) from access k-1
            cls = delta_class(d, vocab)
            i = mem.idx[q[1:]].astype(np.int64)   # the access being predicted
            keep = np.nonzero(snapshot_index(i, cfg.lead) >= 0)[0]
            keep = keep[_spaced(len(keep), cfg.max_per_site)]
            n = len(keep)
            gvec = np.zeros((n, G_DIM), np.uint8)
            gvec[:, 1] = 1
            gvec[:, 2:2 + HIST_BITS] = _history(cond_taken, np.searchsorted(cond_idx, i[keep]), HIST_BITS)
            prev = _history(np.concatenate([[0], d]), keep + 1, N_DELTA_FEATURES)  # deltas before access k
            gvec[:, 2 + HIST_BITS + 4:] = encode_deltas(prev[:, ::-1]).reshape(n, N_DELTA_FEATURES * DELTA_BITS)
            parts.append({"idx": i[keep], "g": gvec,
                          "taken": np.full(n, -1, np.int8), "delta": cls[keep].astype(np.int16),
                          "tage_pred": np.zeros(n, np.uint8), "tage_conf": np.zeros(n, np.uint8),
                          "bhist_pc": np.zeros((n, cfg.cnn_history), np.int16),
                          "bhist_dir": np.zeros((n, cfg.cnn_history), np.uint8),
                          "dhist": _history(cls, keep, cfg.delta_history, pad=cfg.delta_classes).astype(np.int16)})
    executed = {(g.task, g.pc) for g in graphs}
    skipped = [{"pc": pc, "task": t, "why": "not executed in this window"}
               for t in TASKS if want[t] for pc in sites.get(t, []) if (t, pc) not in executed]
    skipped += [{"pc": g.pc, "task": g.task, "why": f"no instance {cfg.lead} or more instructions into the window"}
                for g, p in zip(graphs, parts) if not len(p["idx"])]
    graphs, parts = [g for g, p in zip(graphs, parts) if len(p["idx"])], [p for p in parts if len(p["idx"])]
    if not parts:
        raise DataError(f"{trace}: no samples: none of the {len(skipped)} sites ({cfg.task}) has an instance "
                        f"{cfg.lead} or more instructions into this window")
    for k, p in enumerate(parts):
        p["site"] = np.full(len(p["idx"]), k, np.int16)
    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(cols["idx"], kind="stable")   # samples in time order (validation = the last ones)
    cols = {key: v[order] for key, v in cols.items()}
    cols["dynval"] = snapshot_values(TraceReader(trace, verify=False), graphs, cols["site"], snapshot_index(cols["idx"], cfg.lead),
                                     progress)
    return _write(out_dir, trace, reader, sites, graphs, cols, cfg, vocab, skipped)


def snapshot_values(reader: TraceReader, graphs: list[SiteGraph], site: np.ndarray, snap: np.ndarray,
                    progress: bool = True) -> np.ndarray:
    """[M, N_SLOTS] u64: registers before instruction ``snap`` and the last value each memory slot's
    instruction accessed at an index < ``snap``. One pass over the trace."""
    from tqdm import tqdm

    mem_pcs = sorted({pc for g in graphs for pc in g.mem_pcs})
    order = np.argsort(snap, kind="stable")
    s_sorted = snap[order]
    regs = np.zeros((len(snap), 16), np.uint64)
    acc_idx, acc_pc, acc_val = [], [], []
    pcs_arr = np.array(mem_pcs, np.uint64)
    with tqdm(total=reader.n_insn, desc="snapshots", unit="insn", unit_scale=True, disable=not progress,
              leave=False) as bar:
        for ch in reader.chunks(registers=False):
            lo, hi = ch.first, ch.first + len(ch.insn)
            a, b = np.searchsorted(s_sorted, [lo, hi])
            regs[order[a:b]] = ch.regs_at(s_sorted[a:b] - lo)[:, :16]
            local = (ch.mem["insn"] - np.uint64(lo)).astype(np.int64)
            sel = np.isin(ch.insn["pc"][local], pcs_arr)
            acc_idx.append(ch.mem["insn"][sel].astype(np.int64))
            acc_pc.append(ch.insn["pc"][local[sel]])
            acc_val.append(ch.mem["val"][sel])
            bar.update(len(ch.insn))
    acc_idx, acc_pc, acc_val = (np.concatenate(x) if x else np.zeros(0, np.uint64) for x in (acc_idx, acc_pc, acc_val))
    out = np.zeros((len(snap), N_SLOTS), np.uint64)
    out[:, :16] = regs
    for k, g in enumerate(graphs):
        rows = np.nonzero(site == k)[0]
        for slot, pc in enumerate(g.mem_pcs):
            m = acc_pc == np.uint64(pc)
            idx, val = acc_idx[m], acc_val[m]   # in trace order
            last = np.searchsorted(idx, snap[rows], side="left") - 1   # last access with index < snap
            out[rows, 16 + slot] = np.where(last >= 0, val[np.maximum(last, 0)], 0) if len(idx) else 0
    return out


def _write(out_dir: Path, trace: Path, reader: TraceReader, sites: dict, graphs: list[SiteGraph], cols: dict,
           cfg: DatasetConfig, vocab: list[int], skipped: list[dict]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, v in cols.items():
        with atomic_path(out_dir / f"{key}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, v)
    with atomic_path(out_dir / "sites.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, static=np.stack([g.static for g in graphs]), adj=np.stack([g.adj for g in graphs]),
                     dyn_slot=np.stack([g.dyn_slot for g in graphs]),
                     pc=np.array([g.pc for g in graphs], np.uint64),
                     task=np.array([TASKS.index(g.task) for g in graphs], np.int8))
    counts = {t: int(np.isin(cols["site"], [k for k, g in enumerate(graphs) if g.task == t]).sum()) for t in TASKS}
    meta = {"format_version": FORMAT_VERSION, "config": asdict(cfg), "trace": str(trace),
            "trace_sha256": reader.meta.get("file", {}).get("sha256"), "workload": reader.meta.get("workload"),
            "input": reader.meta.get("input", {}).get("index"), "n_insn": reader.n_insn,
            "sites": [{"pc": g.pc, "task": g.task, "nodes": g.nodes, "mem_pcs": g.mem_pcs} for g in graphs],
            "sites_skipped": skipped,
            "sites_from": sites.get("from_trace"), "delta_vocabulary": vocab, "samples": len(cols["idx"]),
            "samples_per_task": counts, "g_dim": G_DIM, "n_slots": N_SLOTS}
    write_json(out_dir / "dataset.json", meta)
    return meta


def concat_datasets(parts: list, out_dir: str | Path) -> dict:
    """One dataset of ``parts`` (dataset directories built with the same config and delta vocabulary
    for the same sites: the windows and inputs of one training set), their samples in the order given.
    A site (by pc) takes the graph of the first part that has it; a part whose graph of that site
    differs (its window executed other code around it) contributes no samples of it, and the
    sidecar counts them in ``samples_dropped``."""
    out_dir = check_output(out_dir, directory=True)
    ds = [Dataset(p) for p in parts]
    if not ds:
        raise UsageError("concat_datasets: no datasets given")
    first = ds[0].meta
    for d in ds[1:]:
        for key in ("config", "delta_vocabulary"):
            if d.meta[key] != first[key]:
                raise DataError(f"{d.path}: its {key} differs from {ds[0].path}'s; the parts cannot be merged")
    graphs, where, cols, dropped = [], {}, [], {}
    for d in ds:
        remap = np.full(len(d.site_pc), -1, np.int64)
        for k, pc in enumerate(d.site_pc):
            g = SiteGraph(pc=int(pc), task=TASKS[int(d.site_task[k])], static=d.static[k], adj=d.adj[k],
                          dyn_slot=d.dyn_slot[k], mem_pcs=d.meta["sites"][k]["mem_pcs"],
                          nodes=d.meta["sites"][k]["nodes"])
            j = where.setdefault((g.task, g.pc), len(graphs))
            if j == len(graphs):
                graphs.append(g)
            same = all(np.array_equal(getattr(g, f), getattr(graphs[j], f)) for f in ("static", "adj", "dyn_slot"))
            if same and g.mem_pcs == graphs[j].mem_pcs:
                remap[k] = j
        site = np.asarray(d.arrays["site"], np.int64)
        keep = remap[site] >= 0
        for k in np.nonzero(remap < 0)[0]:
            dropped[f"{int(d.site_pc[k]):#x}"] = dropped.get(f"{int(d.site_pc[k]):#x}", 0) + int((site == k).sum())
        part = {key: np.asarray(v)[keep] for key, v in d.arrays.items()}
        part["site"] = remap[site[keep]].astype(np.int16)
        cols.append(part)
    cols = {key: np.concatenate([c[key] for c in cols]) for key in cols[0]}
    meta = _write(out_dir, Path(first["trace"]), TraceReader(first["trace"], verify=False),
                  {"from_trace": first["sites_from"]}, graphs, cols, DatasetConfig(**first["config"]),
                  first["delta_vocabulary"], [s for d in ds for s in d.meta["sites_skipped"]])
    meta.update({"parts": [{"path": str(d.path), "trace_sha256": d.meta["trace_sha256"], "input": d.meta["input"],
                            "samples": len(d)} for d in ds], "samples_dropped": dropped})
    write_json(out_dir / "dataset.json", meta)
    return meta


# --------------------------------------------------------------------------------------- reading
class Dataset:
    """A built dataset, memory-mapped: ``ds.arrays[name]``, ``ds.static`` [S,N,F], ``ds.adj``
    [S,E,N,N], ``ds.dyn_slot`` [S,N], ``ds.meta``."""

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
        self.site_pc, self.site_task = sites["pc"], sites["task"]
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in self.path.glob("*.npy")}

    def __len__(self) -> int:
        return len(self.arrays["idx"])
