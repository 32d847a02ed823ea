"""`ncf bench trace|baselines`: figures and their ratio to the targets, printed and saved.

trace: capture throughput and trace size on the built-in workloads. Targets (issue #3): >= 10 M recorded instructions/s to disk, <= 4 bytes per instruction after
compression. The recording rate is the plugin's own clock, from the first recorded instruction to
the last chunk written (compression included); fast-forwarding runs at plain -singlestep speed
and is reported separately. Self-check time is reported too but is not part of capture.

baselines: branch predictors (target: TAGE-SC-L >= 1 M branches/s) and the cache model (target:
>= 2 M accesses/s) on synthetic streams and on the streams of a real trace.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ncf.io import UsageError, check_output
from ncf.report import save_table

from .capture import record
from .format import TraceReader
from .selfcheck import check_trace
from .workloads import prepare

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
            t1 = time.monotonic()
            ok = check_trace(TraceReader(out)).ok
            check_s = time.monotonic() - t1
            n = meta["window"]["recorded"]
            ff = max(wall - rec["seconds"], 1e-9)
            rows.append({"workload": w, "recorded": n, "record_M_insn_s": rec["insn_per_s"] / 1e6,
                         "x_target_rate": rec["insn_per_s"] / TARGET_RATE,
                         "bytes_per_insn": meta["file"]["bytes_per_insn"],
                         "x_target_bytes": TARGET_BYTES / meta["file"]["bytes_per_insn"],
                         "fast_forward_M_insn_s": skip / ff / 1e6 if skip else None,
                         "wall_s": wall, "selfcheck_M_insn_s": n / check_s / 1e6, "selfcheck_ok": ok})
    return rows


TARGET_BRANCHES = 1e6
TARGET_ACCESSES = 2e6


def bench_baselines(trace: Path | None, instructions: int, skip: int) -> list[dict]:
    """Speed of every predictor and prefetcher on synthetic streams and on a real trace's streams."""
    from .bench_bp import bench_branch_predictors
    from .bench_cache import bench_cache
    from .branch_predictors import make_predictor
    from .cache import simulate
    from .streams import branch_stream, memory_stream

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


def main(a) -> int:
    check_output(a.out, directory=True)
    if a.what == "verify":
        if a.rtl is None:
            raise UsageError("bench verify needs --rtl DIR (written by `ncf rtl`, e.g. reports/demo/hw/rtl)")
        rows = bench_verify(a.rtl, a.samples)
        print(save_table(a.out / "verify", rows, f"ncf bench verify: Verilator predictions/s, bit-exact stream "
                         f"(target >= {TARGET_PREDICTIONS:,}/s; x_target > 1 meets it)",
                         extra={"targets": {"predictions_per_s": TARGET_PREDICTIONS}}))
        return 0
    if a.what == "baselines":
        rows = bench_baselines(a.trace, a.instructions, a.skip)
        print(save_table(a.out / "baselines", rows, "ncf bench baselines (targets: TAGE-SC-L >= 1 M branches/s, "
                         "cache model >= 2 M accesses/s; x_target > 1 meets the target)",
                         extra={"targets": {"tage_branches_per_s": TARGET_BRANCHES,
                                            "cache_accesses_per_s": TARGET_ACCESSES}}))
        return 0
    rows = bench_trace(a.workloads, a.instructions, a.skip)
    print(save_table(a.out / "trace", rows, f"ncf bench trace: {a.instructions:,} instructions after skipping "
                     f"{a.skip:,} (targets: >= {TARGET_RATE / 1e6:.0f} M insn/s, <= {TARGET_BYTES} B/insn; "
                     "x_target > 1 meets the target)",
                     extra={"targets": {"insn_per_s": TARGET_RATE, "bytes_per_insn": TARGET_BYTES}}))
    return 0
