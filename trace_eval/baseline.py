"""`ncf baseline`: the classical baselines on a trace, and the report over every built-in workload.

    result = evaluate(trace_path)                 # one trace: every predictor and prefetcher
    report = write_report(results, out_dir)       # tables (md + JSON), bar plots, hard branches

The hard-branch and delinquent-load lists are written per trace (``hard_branches.json``,
``delinquent_loads.json`` in the output folder, keyed by trace name) for the later stages.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ncf.io import check_output, figure, save_figure, save_table, write_json

from .branch_predictors import make_predictor
from .cache import CacheConfig, simulate
from .format import TraceReader
from .harness import (delinquent_loads, delta_scores, hard_branches, next_deltas, next_line_deltas,
                      run_branch_predictor, run_prefetcher, stride_deltas)
from .streams import branch_stream, memory_stream

PREDICTORS = ("bimodal", "gshare", "perceptron", "tage-sc-l")
PREFETCHERS = ("next-line", "ip-stride", "bop", "berti")
HARD_SHARE = 0.5       # hard branches cover this share of TAGE-SC-L's mispredictions (at most 32)
DELINQUENT_SHARE = 0.5


def evaluate(path: str | Path, predictors=PREDICTORS, prefetchers=PREFETCHERS,
             config: CacheConfig = CacheConfig()) -> dict:
    """Every baseline on one trace. Returns plain data (JSON-ready)."""
    path = Path(path)
    reader = TraceReader(path)
    reader.require_instructions("baseline scoring")
    meta = reader.meta
    name = path.name.removesuffix(".ncft")
    out = {"trace": str(path), "name": name, "workload": meta.get("workload", name),
           "input": meta.get("input", {}).get("index"), "cache_config": asdict(config), "branch": [], "prefetch": []}
    br = branch_stream(reader)
    out["instructions"] = br.n_insn
    tage = None
    for p in predictors:
        pred = make_predictor(p)
        res = run_branch_predictor(pred, br)
        out["branch"].append({**res.summary(), "storage_bits": pred.storage_bits()})
        if p == "tage-sc-l":
            tage = res
    if tage is not None:
        hard = hard_branches(tage, HARD_SHARE)
        out["hard_branches"] = hard
        out["hard_branch_share"] = hard[-1]["cumulative_share"] if hard else 0.0
    mem = memory_stream(TraceReader(path))
    base = simulate(mem.pc, mem.addr, mem.is_store, mem.idx, prefetcher="none", config=config, n_insn=mem.n_insn)
    for pf in prefetchers:
        out["prefetch"].append(run_prefetcher(pf, mem, config, base=base).summary())
    dl = delinquent_loads(mem, base, DELINQUENT_SHARE)
    out["delinquent_loads"] = dl
    out["delinquent_share"] = dl[-1]["cumulative_share"] if dl else 0.0
    sel, target = next_deltas(mem, [d["pc"] for d in dl])
    out["next_delta"] = [{"predictor": "next-line", **delta_scores(target, next_line_deltas(sel))},
                         {"predictor": "ip-stride", **delta_scores(target, stride_deltas(mem, sel))}]
    return out


def write_report(results: list[dict], out_dir: str | Path) -> dict:
    """Tables, plots and the hard-branch / delinquent-load lists of ``evaluate``'s results."""
    out_dir = check_output(out_dir, directory=True)
    mpki_rows, pf_rows, delta_rows = [], [], []
    for r in results:
        row = {"workload": r["workload"], "input": r["input"], "instructions": r["instructions"]}
        mpki_rows.append({**row, **{b["predictor"]: b["mpki"] for b in r["branch"]},
                          "hard_branches": len(r.get("hard_branches", [])),
                          "hard_share": r.get("hard_branch_share", 0.0)})
        for p in r["prefetch"]:
            pf_rows.append({**row, "prefetcher": p["prefetcher"], "l1_mpki_without": p["l1_mpki_without"],
                            "l1_mpki_with": p["l1_mpki_with"], "coverage": p["coverage"],
                            "accuracy": p["accuracy"], "timeliness": p["timeliness"]})
        for d in r["next_delta"]:
            delta_rows.append({**row, "predictor": d["predictor"], "loads": d["loads"],
                               "precision": d["precision"], "recall": d["recall"]})
    storage = {b["predictor"]: b["storage_bits"] for b in results[0]["branch"]} if results else {}
    tables = [
        save_table(out_dir / "branch_mpki", mpki_rows, "Conditional-branch MPKI of each baseline "
                   f"(hard branches: TAGE-SC-L's worst static branches covering >= {HARD_SHARE:.0%} of its "
                   "mispredictions, at most 32)", extra={"storage_bits": storage}),
        save_table(out_dir / "prefetch", pf_rows, "Prefetchers: L1D demand-load MPKI without/with, coverage, "
                   "accuracy, timeliness"),
        save_table(out_dir / "next_delta", delta_rows, "Next-delta prediction on delinquent loads (precision, "
                   "recall)"),
    ]
    write_json(out_dir / "hard_branches.json", {r["name"]: r.get("hard_branches", []) for r in results})
    write_json(out_dir / "delinquent_loads.json", {r["name"]: r["delinquent_loads"] for r in results})
    write_json(out_dir / "results.json", results)
    plots = plot_workloads(results, out_dir)
    return {"results": results, "tables": tables, "plots": plots}


def plot_workloads(results: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per workload: branch MPKI per predictor and L1D MPKI per prefetcher, per input."""
    paths = []
    for w in dict.fromkeys(r["workload"] for r in results):
        rs = [r for r in results if r["workload"] == w]
        fig, (ax1, ax2) = figure(1, 2, figsize=(10, 3.6))
        width = 0.8 / len(rs)
        for k, r in enumerate(rs):
            names = [b["predictor"] for b in r["branch"]]
            x = np.arange(len(names)) + k * width
            ax1.bar(x, [b["mpki"] for b in r["branch"]], width, label=f"input {r['input']}")
            pf = [("none", r["prefetch"][0]["l1_mpki_without"])] + [(p["prefetcher"], p["l1_mpki_with"])
                                                                   for p in r["prefetch"]]
            x2 = np.arange(len(pf)) + k * width
            ax2.bar(x2, [v for _, v in pf], width, label=f"input {r['input']}")
        ax1.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax1.set_ylabel("conditional-branch MPKI")
        ax1.set_title(f"{w}: branch predictors")
        ax2.set_xticks(np.arange(len(pf)) + 0.4 - width / 2, [n for n, _ in pf])
        ax2.set_ylabel("L1D demand-load MPKI")
        ax2.set_title(f"{w}: prefetchers")
        for ax in (ax1, ax2):
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        paths.append(save_figure(fig, out_dir / f"baselines_{w}.png"))
    return paths
