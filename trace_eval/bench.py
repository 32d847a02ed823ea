"""`ncf bench trace`: capture throughput and trace size on the built-in workloads.

Targets (issue #3): >= 10 M recorded instructions/s to disk, <= 4 bytes per instruction after
compression. The recording rate is the plugin's own clock, from the first recorded instruction to
the last chunk written (compression included); fast-forwarding runs at plain -singlestep speed
and is reported separately. Self-check time is reported too but is not part of capture.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

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


def main(a) -> int:
    rows = bench_trace(a.workloads, a.instructions, a.skip)
    print(save_table(a.out / "trace", rows, f"ncf bench trace: {a.instructions:,} instructions after skipping "
                     f"{a.skip:,} (targets: >= {TARGET_RATE / 1e6:.0f} M insn/s, <= {TARGET_BYTES} B/insn; "
                     "x_target > 1 meets the target)",
                     extra={"targets": {"insn_per_s": TARGET_RATE, "bytes_per_insn": TARGET_BYTES}}))
    return 0
