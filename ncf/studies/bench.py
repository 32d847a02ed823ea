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
"""
from __future__ import annotations

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
        for pf in ("none", "next-line", "ip-stride", "bop"):
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
                prefetchers=("none", "next-line", "ip-stride", "bop")) -> list[dict]:
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
