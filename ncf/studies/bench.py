"""`ncf bench`: figures and their ratio to the targets, printed and saved (markdown + JSON).

trace: capture throughput and trace size on the built-in workloads. Targets: >= 10 M recorded
instructions/s to disk, <= 4 bytes per instruction after compression. The recording rate is the
plugin's own clock, from the first recorded instruction to the last chunk written (compression
included); fast-forwarding runs at plain -singlestep speed and is reported separately. The
self-check, which capture runs after recording, has the same target (>= 10 M insn/s, reading the
trace included): it is timed with the compiled engine and with the numpy reference (their ratio,
and whether the two give the same result on that trace).

baselines: branch predictors (target: TAGE-SC-L >= 1 M branches/s) and the cache model (target:
>= 2 M accesses/s) on synthetic streams (trace_eval/synthetic.py) and on the streams of a real trace.

verify: Verilator predictions/s of generated RTL (target >= 50,000/s), bit-exact stream.

dataset: `ncf dataset` (sites + fused samples, default settings) on bzip2 traces of growing length,
each run in a fresh process: trace instructions/s, samples/s and the run's peak RSS. Target: peak
RSS flat in trace length (the builder streams the trace chunk by chunk).

train: training samples/s of every learned model through the one training loop (model/loop.py
``fit``, Adam, no validation) on one dataset: the fused GNN with message passing over edge lists
(model/gnn.py ``FusedGNN``) and over dense adjacency (``DenseGNN``, how training ran before; same
batching), the history-only GNN, BranchNet at both published shapes, big and mini (one model over every
branch sample; training runs one per hard branch at the same cost per sample) and the delta-LSTM.
Target: edge lists >= 10x dense.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ncf.trace_eval import synthetic
from ncf.trace_eval.branch_predictors import COND, make_predictor
from ncf.trace_eval.cache import CacheConfig, coverage, simulate
from ncf.trace_eval.capture import record
from ncf.trace_eval.format import TraceReader
from ncf.trace_eval.selfcheck import check_trace
from ncf.trace_eval.streams import branch_stream, memory_stream
from ncf.trace_eval.workloads import prepare

TARGET_RATE = 10e6
TARGET_BYTES = 4.0


def bench_trace(workloads, instructions: int, skip: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ncf-bench-") as tmp:
        for w in workloads:
            out = Path(tmp) / f"{w}.ncft"
            t0 = time.monotonic()
            meta = record(prepare(w, 0), out, skip=skip, count=instructions, selfcheck=False)
            wall = time.monotonic() - t0
            rec = meta["recording"]
            checks, seconds = {}, {}
            for engine in ("c", "numpy"):
                t1 = time.monotonic()
                checks[engine] = check_trace(TraceReader(out), engine=engine)
                seconds[engine] = time.monotonic() - t1
            n = meta["window"]["recorded"]
            ff = max(wall - rec["seconds"], 1e-9)
            rows.append({"workload": w, "recorded": n, "record_M_insn_s": rec["insn_per_s"] / 1e6,
                         "x_target_rate": rec["insn_per_s"] / TARGET_RATE,
                         "selfcheck_M_insn_s": n / seconds["c"] / 1e6,
                         "numpy_M_insn_s": n / seconds["numpy"] / 1e6,
                         "x_numpy": seconds["numpy"] / seconds["c"],
                         "engines_agree": checks["c"].as_dict() == checks["numpy"].as_dict(),
                         "selfcheck_ok": checks["c"].ok,
                         "bytes_per_insn": meta["file"]["bytes_per_insn"],
                         "x_target_bytes": TARGET_BYTES / meta["file"]["bytes_per_insn"],
                         "fast_forward_M_insn_s": skip / ff / 1e6 if skip else None, "wall_s": wall})
    return rows


TARGET_BRANCHES = 1e6
TARGET_ACCESSES = 2e6


def bench_baselines(trace: Path | None, instructions: int, skip: int) -> list[dict]:
    """Speed of every predictor and prefetcher on synthetic streams and on a real trace's streams."""
    if trace is not None:
        TraceReader(trace).require_instructions("the baselines benchmark")  # before the synthetic streams
    rows = [{"stream": "synthetic", "model": r["predictor"], "items": r["branches"],
             "M_per_s": r["branches_per_s"] / 1e6, "unit": "branches",
             "x_target": r["branches_per_s"] / TARGET_BRANCHES if r["predictor"] == "tage-sc-l" else None}
            for r in bench_branch_predictors(2_000_000)]
    rows += [{"stream": "synthetic", "model": f"cache+{r['prefetcher']}", "items": r["accesses"],
              "M_per_s": r["M_accesses_s"], "unit": "accesses", "x_target": r["M_accesses_s"] * 1e6 / TARGET_ACCESSES}
             for r in bench_cache(5_000_000)]
    with tempfile.TemporaryDirectory(prefix="ncf-bench-") as tmp:
        if trace is None:
            trace = Path(tmp) / "bzip2-0.ncft"
            record(prepare("bzip2", 0), trace, skip=skip, count=instructions, selfcheck=False)
        name = Path(trace).name
        br = branch_stream(TraceReader(trace))
        for p in ("bimodal", "gshare", "perceptron", "tage-sc-l"):
            t0 = time.perf_counter()
            make_predictor(p).run(br.pc, br.target, br.taken, br.kind)
            rate = len(br) / (time.perf_counter() - t0)
            rows.append({"stream": name, "model": p, "items": len(br), "M_per_s": rate / 1e6, "unit": "branches",
                         "x_target": rate / TARGET_BRANCHES if p == "tage-sc-l" else None})
        mem = memory_stream(TraceReader(trace))
        for pf in ("none", "next-line", "ip-stride", "bop", "berti"):
            t0 = time.perf_counter()
            simulate(mem.pc, mem.addr, mem.is_store, mem.idx, prefetcher=pf, n_insn=mem.n_insn)
            rate = len(mem) / (time.perf_counter() - t0)
            rows.append({"stream": name, "model": f"cache+{pf}", "items": len(mem), "M_per_s": rate / 1e6,
                         "unit": "accesses", "x_target": rate / TARGET_ACCESSES})
    return rows


TARGET_PREDICTIONS = 50_000


def bench_verify(rtl: Path, samples: int | None) -> list[dict]:
    """Verilator simulation speed of a generated predictor (``ncf verify``'s bit-exact stream test:
    the HDL-side source/sink streams every snapshot, Python compares the results afterwards)."""
    from ncf.rtl_tests.sim import verify

    with tempfile.TemporaryDirectory(prefix="ncf-bench-") as tmp:
        s = verify(rtl, simulator="verilator", work=tmp, tests=("test_stream",), n_stream=samples, close_loop=False)
    if s["mismatches"] or s["tests_failed"]:
        raise RuntimeError(f"the RTL does not match intref ({s['mismatches']} mismatches): no speed figure")
    return [{"rtl": str(rtl), "predictions": s["samples"], "cycles": s["stream_cycles"],
             "predictions_per_s": s["predictions_per_s"], "x_target": s["predictions_per_s"] / TARGET_PREDICTIONS,
             "build_s": s["build_seconds"], "sim_s": s["sim_seconds"]}]


def bench_branch_predictors(n: int = 2_000_000, seed: int = 0) -> list[dict]:
    """Time each C predictor's run() on synthetic_stream(n); returns branches/s (all branches)."""
    stream = synthetic.branch_stream(n, seed)
    cond = stream[3] == COND
    out = []
    for name in ("bimodal", "gshare", "perceptron", "tage-sc-l"):
        p = make_predictor(name)
        t0 = time.perf_counter()
        pred, _ = p.run(*stream)
        dt = time.perf_counter() - t0
        acc = float((pred[cond] == stream[2][cond]).mean())
        out.append(dict(predictor=name, branches=n, seconds=dt, branches_per_s=n / dt,
                        accuracy=acc, storage_bits=p.storage_bits()))
    return out


def bench_cache(n: int = 5_000_000, config: CacheConfig = CacheConfig(), seed: int = 0,
                prefetchers=("none", "next-line", "ip-stride", "bop", "berti")) -> list[dict]:
    pc, addr, is_store, insn_idx = synthetic.memory_stream(n, seed)
    n_insn = int(insn_idx[-1]) + 1
    simulate(pc[:1000], addr[:1000], is_store[:1000], insn_idx[:1000])  # build + load the library
    rows, base = [], None
    for pf in prefetchers:
        t0 = time.perf_counter()
        r = simulate(pc, addr, is_store, insn_idx, pf, config, n_insn=n_insn)
        dt = time.perf_counter() - t0
        if pf == "none":
            base = r
        rows.append({"prefetcher": pf, "accesses": n, "seconds": round(dt, 3),
                     "M_accesses_s": round(n / dt / 1e6, 2), "x_target": round(n / dt / TARGET_ACCESSES, 2),
                     "l1_mpki": round(r.l1_mpki, 2), "l2_mpki": round(r.l2_mpki, 2),
                     "accuracy": round(r.accuracy, 3),
                     "coverage": round(coverage(base, r), 3) if base is not None else None,
                     "late_fraction": round(r.late_fraction, 3)})
    return rows


DATASET_LENGTHS = (25 * 10**6, 50 * 10**6, 100 * 10**6)


def bench_dataset(traces: list[Path] | None, lengths, skip: int) -> list[dict]:
    """The dataset of each trace (default: bzip2 input 0, ``lengths`` instructions after ``skip``),
    each built in a fresh process (``dataset_run``); the first row: that process with nothing built."""
    with tempfile.TemporaryDirectory(prefix="ncf-bench-") as tmp:
        if not traces:
            traces = [Path(tmp) / f"bzip2-0-{n}.ncft" for n in lengths]
            for t, n in zip(traces, lengths):
                record(prepare("bzip2", 0), t, skip=skip, count=n, selfcheck=False)
        for t in traces:
            TraceReader(t).require_instructions("the dataset benchmark")
        rows = [_child(None, Path(tmp))] + [_child(Path(t), Path(tmp)) for t in traces]
    for r in rows:
        r["rss_x_first"] = r["peak_rss_MiB"] / rows[1]["peak_rss_MiB"]   # target: about 1 (row 0: imports only)
    return rows


def dataset_run(trace: str | None = None, out: str | None = None) -> None:
    """What `ncf dataset --trace TRACE` builds (sites of the trace itself, default settings; nothing
    without a trace), then one JSON line: times, samples and this process's peak RSS (VmHWM: unlike
    ru_maxrss, it leaves out what the process inherited from its parent at fork)."""
    from ncf.model.dataset import DatasetConfig, build_dataset, find_sites

    row = {"trace": "(imports only)", "instructions": 0, "samples": None, "sites_s": None, "dataset_s": None,
           "M_insn_s": None, "samples_per_s": None}
    if trace is not None:
        t0 = time.perf_counter()
        sites = find_sites(trace)
        t1 = time.perf_counter()
        meta = build_dataset(trace, sites, out, DatasetConfig(), progress=False)
        t2 = time.perf_counter()
        row.update(trace=Path(trace).name, instructions=meta["n_insn"], samples=meta["samples"], sites_s=t1 - t0,
                   dataset_s=t2 - t1, M_insn_s=meta["n_insn"] / (t2 - t0) / 1e6, samples_per_s=meta["samples"] / (t2 - t0))
    status = Path("/proc/self/status").read_text().splitlines()
    row["peak_rss_MiB"] = int(next(ln for ln in status if ln.startswith("VmHWM:")).split()[1]) / 1024
    print(json.dumps(row))


def _child(trace: Path | None, tmp: Path) -> dict:
    """``dataset_run`` in a fresh Python; its output directory is removed afterwards."""
    out = tmp / "ds"
    args = [str(trace), str(out)] if trace else []
    proc = subprocess.run([sys.executable, "-c", "import sys; from ncf.studies.bench import dataset_run; "
                           "dataset_run(*sys.argv[1:])", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"building the dataset of {trace} failed (exit {proc.returncode}):\n"
                           + "\n".join(proc.stderr.strip().splitlines()[-5:]))
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


TARGET_TRAIN_RATIO = 10.0
BENCH_SITES = {"max_branches": 5, "max_loads": 5}     # with max_per_site 1500: <= 15,000 samples


def bench_train(dataset: Path | None, trace: Path | None, instructions: int, skip: int, epochs: int = 2,
                batch: int = 256, threads: int = 1) -> list[dict]:
    """Training samples/s of each model on ``dataset`` (default: built from ``trace``, or from a fresh
    recording of bzip2 input 0: 5 hard branches, 5 delinquent loads, at most 1500 samples per site)."""
    import torch

    from ncf.model.dataset import Dataset, DatasetConfig, build_dataset, find_sites

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="ncf-bench-") as tmp:
        if dataset is None:
            if trace is None:
                trace = Path(tmp) / "bzip2-0.ncft"
                record(prepare("bzip2", 0), trace, skip=skip, count=instructions, selfcheck=False)
            dataset = Path(tmp) / "ds"
            build_dataset(trace, find_sites(trace, branch_share=1.0, load_share=1.0, **BENCH_SITES), dataset,
                          DatasetConfig(lead=100, max_per_site=1500), progress=False)
        ds = Dataset(dataset)
        rows = [dict(r, epochs=epochs, batch=batch, threads=threads) for r in _train_rates(ds, epochs, batch)]
    dense = next(r["samples_per_s"] for r in rows if r["path"] == "dense (before)")
    for r in rows:
        edges = r["model"] == "fused GNN" and r["path"] == "edge lists"
        r["x_dense"] = r["samples_per_s"] / dense if edges else None
        r["x_target"] = r["x_dense"] / TARGET_TRAIN_RATIO if edges else None
    return rows


def _train_rates(ds, epochs: int, batch: int):
    """{model, path, samples, seconds, samples_per_s, train_loss} of each model (wall clock of the loop)."""
    import numpy as np
    import torch

    from ncf.model.baselines import BRANCHNET_SHAPES, BranchNet, DeltaLSTM, train_classifier
    from ncf.model.gnn import DenseGNN, FusedGNN
    from ncf.model.loop import fit
    from ncf.model.train import GraphBatches, TrainConfig, build_gnn, labels, multitask_loss, split_rows

    a, dev = ds.arrays, torch.device("cpu")
    cfg = build_gnn(TrainConfig(), ds).cfg
    for name, path, cls, kind in [("fused GNN", "dense (before)", DenseGNN, "fused"),
                                  ("fused GNN", "edge lists", FusedGNN, "fused"),
                                  ("history-only GNN", "edge lists (no edges)", FusedGNN, "history")]:
        t0 = time.perf_counter()
        model, gb = cls(cfg), GraphBatches(ds, kind, dev)
        hist = fit(model, lambda r: multitask_loss(*model(*gb(r)), *labels(ds, r, dev)), split_rows(ds)[0],
                   epochs=epochs, batch=batch, opt=torch.optim.Adam(model.parameters(), lr=3e-3), progress=False)
        yield _rate(name, path, sum(h["steps"] for h in hist) * batch, t0, hist[-1]["train_loss"])

    taken, delta = np.asarray(a["taken"]), np.asarray(a["delta"])
    br, ld = np.flatnonzero(taken >= 0), np.flatnonzero(delta >= 0)

    def classifiers():
        for shape in BRANCHNET_SHAPES:
            net = BranchNet(**BRANCHNET_SHAPES[shape])
            yield f"BranchNet {shape}", net, (ds.branch_history(br, net.history),), taken[br]
        yield ("delta-LSTM", DeltaLSTM(n_sites=len(ds.site_pc), n_classes=ds.meta["config"]["delta_classes"]),
               (a["dhist"][ld], a["site"][ld]), delta[ld])

    for name, model, inputs, y in classifiers():
        t0 = time.perf_counter()
        h = train_classifier(model, [np.asarray(x, np.int64) for x in inputs], y, epochs=epochs, batch=batch, lr=3e-3,
                             progress=False, val_start=len(y))
        n = h["n_train"] - h["n_train"] % batch if h["n_train"] >= batch else h["n_train"]   # full batches only
        yield _rate(name, "-", h["epochs_run"] * n, t0, h["train_loss"][-1])


def _rate(model: str, path: str, samples: int, t0: float, loss: float) -> dict:
    seconds = time.perf_counter() - t0
    return {"model": model, "path": path, "samples": samples, "seconds": seconds,
            "samples_per_s": round(samples / seconds), "train_loss": loss}


def machine_load() -> dict:
    """The 1-minute load average and the cpus: other work on the machine slows every figure."""
    return {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
