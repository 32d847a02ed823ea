"""ncf: learned branch prediction and prefetching, from fused program traces to verified hardware.

Every subcommand is a thin wrapper: it parses arguments, calls one plain function of a stage
module, prints a table and writes JSON. ``ncf <command> --help`` explains each.

Bad input gives one line, ``ncf <command>: error: <what and why>``, on stderr: exit status 2 for a
bad argument, a missing input or an unwritable output (argparse's errors included), 1 for an input
whose content cannot be used (a corrupt or empty trace, a sidecar that does not match).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

EPILOG = """Stages: trace -> (baselines, datasets) -> train -> quantize -> hls/rtl -> verify -> synth.
See README.md for the whole pipeline; `make demo` runs it end to end."""


def count(text: str) -> int:
    """Instruction counts as people write them: 50000000, 50e6, 1e9, 50M, 2G, 100k."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not an instruction count: {text!r} (examples: 50e6, 50M, 1e9)")
    value = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2].lower()]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number of instructions: {text!r}")
    return int(value)


def env_var(text: str) -> tuple[str, str]:
    """K=V as given to --env."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"not K=V: {text!r}")
    return key, value


def positive(text: str) -> int:
    """A whole number >= 1."""
    if not re.fullmatch(r"\s*[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number >= 1")
    return int(text)


def instructions(text: str) -> int:
    """A count of instructions to record: at least 1."""
    n = count(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: record at least 1 instruction")
    return n


def zstd_level(text: str) -> int:
    """A zstd compression level the tracing plugin accepts (libzstd's range), checked before qemu starts."""
    from ncf.trace_eval.format import zstd_levels

    levels = zstd_levels()
    try:
        level = int(text)
    except ValueError:
        level = None
    if level not in levels:
        raise argparse.ArgumentTypeError(f"{text!r} is not a zstd level ({levels.start}..{levels.stop - 1})")
    return level


def point(text: str) -> list:
    """A hardware-sweep point H,T,BITS or H,T,BITS,CUTOFF (three integers, then a number; their ranges are
    checked by HwSweepConfig)."""
    parts = text.split(",")
    try:
        values = [int(v) for v in parts[:3]] + [float(v) for v in parts[3:]]
    except ValueError:
        values = []
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r} is not H,T,BITS or H,T,BITS,CUTOFF (e.g. 2,2,4 or 2,1,3,1.0)")
    return values


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of every other ncf error (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ------------------------------------------------------------------------------------ trace
def cmd_trace(a) -> int:
    from ncf.io import UsageError, check_output
    from ncf.trace_eval import capture, workloads

    user = workloads.load_workloads(a.workload_file)
    if a.command_line:
        if a.workload or user:
            raise UsageError("give a program after `--` or a workload (--workload, --workload-file), not both")
        inv = workloads.custom(a.command_line, stdin=a.stdin, env=dict(a.env or []), index=a.input)
    elif a.workload or user:
        if a.stdin or a.env:
            raise UsageError("--stdin and --env are for a program given after `--`; a workload's inputs are fixed by "
                             "its seed (a workload file has its own stdin and env)")
        if len(user) > 1 and not a.workload:
            raise UsageError(f"--workload NAME: which of {', '.join(user)}")
        inv = workloads.prepare(user.get(a.workload) or a.workload or next(iter(user.values())), a.input,
                                a.inputs_dir)
    else:
        raise UsageError("give --workload NAME, --workload-file FILE or a program after `--` (see --help)")
    uw = user.get(inv.workload)
    skip = a.skip if a.skip is not None else uw.skip if uw else 0
    count = a.instructions if a.instructions is not None else uw.instructions if uw else 10**7
    out = check_output(a.output or Path("traces") / f"{inv.workload}-{inv.input}.ncft")
    meta = capture.record(inv, out, skip=skip, count=count, level=a.level,
                          selfcheck=not a.no_selfcheck, run_to_end=a.run_to_end, progress=not a.quiet)
    _print_trace_summary(out, meta)
    return 0


def _print_trace_summary(out, meta) -> None:
    w, r, f = meta["window"], meta["recording"], meta["file"]
    print(f"{out}: {w['recorded']:,} instructions after skipping {w['skip']:,} "
          f"({r['insn_per_s'] / 1e6:.2f} M insn/s recording, {f['bytes_per_insn']:.2f} B/insn, "
          f"{f['size'] / 1e6:.1f} MB)")
    if not w["complete"]:
        print(f"  note: the program ended after {w['executed_total']:,} instructions, before the "
              f"{w['instructions_requested']:,} requested were recorded")
    if "selfcheck" in meta:
        from ncf.trace_eval.selfcheck import summary_text
        print(f"  self-check: {summary_text(meta['selfcheck'])}")


def cmd_workloads(a) -> int:
    from ncf.trace_eval import workloads

    rows = []
    for name in workloads.names():
        rows.append({"workload": name, "source": "built-in", "inputs": list(range(workloads.N_INPUTS)),
                     "seeds": [workloads.seed_of(name, i) for i in range(workloads.N_INPUTS)]})
    for name, uw in workloads.load_workloads(a.workload_file).items():
        rows.append({"workload": name, "source": uw.source, "inputs": list(range(workloads.N_INPUTS)),
                     "seeds": [workloads.seed_of(name, i) for i in range(workloads.N_INPUTS)],
                     "command": " ".join([uw.program, *uw.args]), "skip": uw.skip, "instructions": uw.instructions})
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'workload':<12} seeds of inputs 0..{workloads.N_INPUTS - 1} "
              f"(input {workloads.TEST_INPUT} is held out)")
        for r in rows:
            extra = f"    {r['source']}: {r['command']}" if "command" in r else ""
            print(f"{r['workload']:<12} {' '.join(map(str, r['seeds']))}{extra}")
    return 0


def cmd_inspect(a) -> int:
    from ncf.trace_eval import inspect

    print(inspect.describe(a.trace, first=a.first, allow_truncated=a.allow_truncated))
    return 0


def cmd_check(a) -> int:
    from ncf.io import DataError
    from ncf.trace_eval.format import TraceReader
    from ncf.trace_eval.selfcheck import check_trace, summary_text

    res = check_trace(TraceReader(a.trace))
    print(json.dumps(res.as_dict(), indent=1))
    if not res.ok:
        raise DataError(f"{a.trace}: self-check failed: {summary_text(res.as_dict())}")
    return 0


def cmd_champsim(a) -> int:
    from ncf.trace_eval import champsim

    if a.direction == "import":
        path = champsim.import_champsim(a.src, a.dst)
    else:
        path = champsim.export_champsim(a.src, a.dst, limit=a.limit)
    print(path)
    return 0


def cmd_baseline(a) -> int:
    from ncf.io import UsageError, check_output, markdown_table, write_json
    from ncf.trace_eval import baseline

    if a.all:
        from ncf.studies.experiment import ExperimentConfig, run_baselines
        from ncf.trace_eval.workloads import names

        cfg = _settle(ExperimentConfig, a, {"workloads": None if a.workload_files else list(names())})
        rep = run_baselines(cfg, Path(a.out))
        print("\n".join(rep["tables"]))
        print(f"written to {a.out}/ (tables as .md + .json, baselines_*.png, hard_branches.json, "
              "delinquent_loads.json)")
        return 0
    if not a.trace:
        raise UsageError("give --trace FILE... or --all (see --help)")
    check_output(a.out, directory=True)
    for t in a.trace:
        r = baseline.evaluate(t, a.predictor, a.prefetcher)
        print(f"## {t}\n")
        print(markdown_table(r["branch"]) + "\n")
        if r["prefetch"]:
            print(markdown_table(r["prefetch"]) + "\n")
        print(f"hard branches: {len(r.get('hard_branches', []))} static branches cover "
              f"{r.get('hard_branch_share', 0):.1%} of TAGE-SC-L's mispredictions; delinquent loads: "
              f"{len(r['delinquent_loads'])} cover {r['delinquent_share']:.1%} of L1D load misses")
        path = write_json(Path(a.out) / f"{r['name']}.json", r)
        print(f"written {path}")
    return 0


def cmd_dataset(a) -> int:
    from ncf.model.dataset import Dataset, DatasetConfig, build_dataset, find_sites

    sites = find_sites(a.sites_from or a.trace, max_branches=a.max_branches, max_loads=a.max_loads,
                       load_share=a.load_share)
    ref = Dataset(a.vocab_from).meta if a.vocab_from else {}
    cfg = DatasetConfig(lead=a.lead, task=a.task, max_per_site=a.max_per_site, since=a.since,
                        prefetch_distance=a.prefetch_distance, history_only=a.history_only)
    meta = build_dataset(a.trace, sites, a.output, cfg, vocab=ref.get("delta_vocabulary"),
                         distance=ref.get("prefetch_distance"))
    print(f"{a.output}: {meta['samples']:,} samples ({meta['samples_per_task']}) from {len(meta['sites'])} sites "
          f"of {meta['sites_from']}, lead {a.lead}")
    if meta["sites_skipped"]:
        print(f"  skipped {len(meta['sites_skipped'])} sites without samples: "
              + ", ".join(f"{s['pc']:#x} ({s['task']}: {s['why']})" for s in meta["sites_skipped"]))
    return 0


def _settle(cls, a, base: dict | None = None):
    """The command's config: ``cls`` defaults < ``base`` (a preset) < --config FILE < the named
    options (an option and a config field share a name) < --set KEY=VALUE; typed and validated once."""
    from dataclasses import fields

    from ncf.io import settle

    options = {f.name: getattr(a, f.name, None) for f in fields(cls)}
    return settle(cls, base, getattr(a, "config", None), options, getattr(a, "set", None) or ())


def cmd_train(a) -> int:
    from ncf.model.train import TrainConfig, train

    cfg = _settle(TrainConfig, a)
    if a.nproc > 1 and "WORLD_SIZE" not in os.environ:   # the same command, under torchrun
        import subprocess

        argv, rest = [], iter(a.argv)
        for x in rest:
            if x == "--nproc":
                next(rest)
            elif not x.startswith("--nproc="):
                argv.append(x)
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc-per-node={a.nproc}", "-m", "ncf.cli", *argv]).returncode
    s = train(cfg, resume=a.resume)
    last = s["epochs"][-1] if s.get("epochs") else {}
    print(f"{cfg.out}: {cfg.model} trained in {s['train_seconds']:.1f} s; last epoch {last}")
    return 0


def cmd_experiment(a) -> int:
    from ncf.io import UsageError
    from ncf.studies.experiment import ExperimentConfig, run_data, run_experiment

    cfg = _settle(ExperimentConfig, a, _experiment_presets()[a.preset])
    if cfg.champsim_dir:
        from ncf.studies.champsim_dir import run_champsim

        if cfg.workload_files or a.workloads or a.data_only:
            raise UsageError("--champsim-dir runs the traces of a directory: not with --workloads, --workload-file "
                             "or --data-only")
        r = run_champsim(cfg, models=a.models)
        print("\n".join(r["tables"]))
        return 0
    if cfg.test_trace:
        raise UsageError("--test-trace names a file of --champsim-dir")
    if a.data_only:
        print(run_data(cfg)["table"])
        return 0
    r = run_experiment(cfg)
    print("\n".join(r["tables"]))
    return 0


def cmd_quantize(a) -> int:
    from ncf.io import markdown_table
    from ncf.studies.bits import BitsConfig, quantize_run

    r = quantize_run(a.run, a.train, a.test, a.out, _settle(BitsConfig, a))
    print(markdown_table(r["rows"], ["bits", "branch_acc", "prefetch_acc", "storage_bits", "qat_steps"]))
    print(markdown_table(r["ladder"], ["site_pc", "samples", "fake_quant==intref", "fake_quant==qonnx",
                                       "intref==qonnx", "hls4ml_input_precision"]))
    print(f"written to {a.out}/ (bits.md/.json/.png, ladder.json, site*.onnx)")
    return 0


def cmd_hls(a) -> int:
    from ncf.hw.generate import HwConfig, build_hls
    from ncf.quant.quantize import read_bundle

    cfg = _settle(HwConfig, a)
    s = build_hls(read_bundle(a.qonnx), cfg, a.output)
    c, tb = s["csim"], s["c_testbench"]
    print(f"{a.output}: hls4ml project ({s['backend']}, {s['io_type']}, part {s['part']}, {s['clock_ns']} ns)")
    print(f"  C simulation vs intref: {c['exact']:,} / {c['samples']:,} samples exact "
          f"({c['outputs']} outputs each), {c['samples_per_s']:,.0f} samples/s")
    print(f"  C testbench (plain g++): {tb['exact']} / {tb['rows']} rows exact")
    print(f"  vendor synthesis: {s['vendor_synthesis']}")
    return 0 if c["mismatches"] == 0 and tb["mismatches"] == 0 else 1


def cmd_rtl(a) -> int:
    from ncf.hw.generate import HwConfig, build_rtl
    from ncf.hw.shared import build_sites
    from ncf.io import UsageError
    from ncf.quant.quantize import read_bundle

    cfg = _settle(HwConfig, a)
    if len(a.qonnx) == 1:
        if a.design != "folded":
            raise UsageError(f"--design {a.design} serves several sites: give at least 2 --qonnx files")
        m = build_rtl(read_bundle(a.qonnx[0]), cfg, a.output)
    else:
        m = build_sites([read_bundle(q) for q in a.qonnx], cfg, a.output, a.design)
    print(json.dumps({k: m[k] for k in ("top", "parameters", "latency", "bits")}, indent=1))
    print(f"manifest: {a.output / 'manifest.json'}")
    return 0


def cmd_verify(a) -> int:
    from ncf.rtl_tests.sim import verify

    s = verify(a.rtl, trace=a.trace, simulator=a.simulator, work=a.work, n_stream=a.samples,
               n_handshake=a.handshake_samples, progress=not a.quiet, netlist=a.netlist, synth_dir=a.synth_dir)
    if s["netlist"]:
        print(f"gate level: {s['netlist']['file']} ({s['netlist']['yosys']}, "
              + ", ".join(f"{k} {v:,}" for k, v in s["netlist"]["counts"].items() if v) + ")")
    print(f"{s['rtl']} ({s['design']}) on {s['simulator']}: {s['predictions_compared']:,} predictions compared, "
          f"{s['mismatches']} mismatches, {s['tests_failed']} of {len(s['tests'])} tests failed")
    print(f"  stimulus: {s['samples']:,} feature snapshots ({s['stimulus']})")
    print(f"  latency: manifest {s['latency_manifest']} cycles, measured {s['latency_measured']}")
    if s["stream_cycles"]:
        print(f"  stream: {s['stream_cycles']:,} cycles, {s['results_per_cycle']:.3f} results/cycle, "
              f"{s['predictions_per_s']:,.0f} predictions/s (build {s['build_seconds']} s)")
    for st in s.get("sites", []):
        print(f"  site {st['id']} ({st['task']} {st['site_pc']:#x}): {st['samples']:,} snapshots in the stream, "
              f"{st['stream_mismatches']} mismatches")
    for mm in s["first_mismatches"]:
        print(f"  MISMATCH row {mm['row']}: got {mm['got']}, expected {mm['expected']}")
    if "harness" in s:
        h = s["harness"]
        print(f"  harness replay ({h['task']}): software {h['software']}, rtl {h['rtl']}: "
              f"{'equal' if h['equal'] else 'DIFFERENT'}")
    ok = s["mismatches"] == 0 and s["tests_failed"] == 0 and s.get("harness", {}).get("equal", True)
    return 0 if ok else 1


def cmd_bench(a) -> int:
    from ncf.io import UsageError, check_output, save_table
    from ncf.studies import bench

    check_output(a.out, directory=True)
    if a.what == "verify":
        if a.rtl is None:
            raise UsageError("bench verify needs --rtl DIR (written by `ncf rtl`, e.g. one under work/cache/rtl)")
        rows = bench.bench_verify(a.rtl, a.samples)
        print(save_table(a.out / "verify", rows, "ncf bench verify: Verilator predictions/s, bit-exact stream "
                         f"(target >= {bench.TARGET_PREDICTIONS:,}/s; x_target > 1 meets it)",
                         extra={"targets": {"predictions_per_s": bench.TARGET_PREDICTIONS}}))
        return 0
    if a.what == "dataset":
        rows = bench.bench_dataset(a.trace, a.lengths or bench.DATASET_LENGTHS, a.skip)
        last = rows[-1]
        print(save_table(a.out / "dataset", rows, "ncf bench dataset: sites + dataset of each trace in a fresh process "
                         f"(target: peak RSS flat in trace length; longest/first trace: {last['rss_x_first']:.2f})",
                         extra={"targets": {"rss_x_first": 1.0}}))
        return 0
    if a.trace and len(a.trace) > 1:
        raise UsageError(f"bench {a.what} takes one --trace, not {len(a.trace)}")
    if a.what == "train":
        machine = bench.machine_load()
        rows = bench.bench_train(a.dataset, a.trace[0] if a.trace else None, a.instructions, a.skip, a.epochs,
                                 a.batch, a.threads)
        print(save_table(a.out / "train", rows, f"ncf bench train: training samples/s, {a.threads} thread(s) on "
                         f"{machine['cpus']} cpus, load average {machine['load_average']:.1f} before the run "
                         f"(target: fused GNN over edge lists >= {bench.TARGET_TRAIN_RATIO:.0f}x the dense path; "
                         "x_target > 1 meets it)",
                         extra={"targets": {"fused_edge_lists_over_dense": bench.TARGET_TRAIN_RATIO}, **machine}))
        return 0
    if a.what == "baselines":
        rows = bench.bench_baselines(a.trace[0] if a.trace else None, a.instructions, a.skip)
        print(save_table(a.out / "baselines", rows, "ncf bench baselines (targets: TAGE-SC-L >= 1 M branches/s, "
                         "cache model >= 2 M accesses/s; x_target > 1 meets the target)",
                         extra={"targets": {"tage_branches_per_s": bench.TARGET_BRANCHES,
                                            "cache_accesses_per_s": bench.TARGET_ACCESSES}}))
        return 0
    rows = bench.bench_trace(a.workloads, a.instructions, a.skip)
    print(save_table(a.out / "trace", rows, f"ncf bench trace: {a.instructions:,} instructions after skipping "
                     f"{a.skip:,} (targets: recording and self-check >= {bench.TARGET_RATE / 1e6:.0f} M insn/s, "
                     f"<= {bench.TARGET_BYTES} B/insn; x_target > 1 meets the target; x_numpy: the compiled "
                     "self-check's speed-up over the numpy reference)",
                     extra={"targets": {"insn_per_s": bench.TARGET_RATE, "bytes_per_insn": bench.TARGET_BYTES}}))
    return 0


def cmd_demo(a) -> int:
    from ncf.studies import demo

    demo.run(a.out, preset=a.preset, fresh=a.fresh, cache_root=a.cache, workers=a.workers, ray_address=a.ray_address,
             workload_files=a.workload_file or ())
    return 0


def cmd_synth(a) -> int:
    from ncf.hw.synth import synth

    out = a.out or a.rtl / "synth"
    s = synth(a.rtl, targets=tuple(a.targets), out_dir=out, freq_mhz=a.freq, seed=a.seed, timeout_s=a.timeout,
              place=a.place)
    print((out / "summary.md").read_text())
    return 0 if all(t["status"] in ("ok", "does not fit") for t in s["targets"].values()) else 1


def cmd_hw_sites(a) -> int:
    from ncf.studies.hw_sites import HwSitesConfig, hw_sites

    r = hw_sites(a.qonnx, a.out, _settle(HwSitesConfig, a))
    print(r["text"])
    for name, v in r["verify"].items():
        print(f"multi-site {name} block on {v['simulator']}: {v['predictions_compared']:,} predictions compared, "
              f"{v['mismatches']} mismatches, {v['tests_failed']} tests failed; per site: "
              + ", ".join(f"{s['id']}: {s['stream_mismatches']}/{s['samples']:,}" for s in v["sites"]))
    print(f"written to {a.out}/sites.md and sites.json")
    return 0 if all(v["mismatches"] == 0 and v["tests_failed"] == 0 for v in r["verify"].values()) else 1


def cmd_hw_sweep(a) -> int:
    from ncf.studies.hw_sweep import HwSweepConfig, hw_sweep

    r = hw_sweep(a.train, a.test, a.out, _settle(HwSweepConfig, a))
    print(r["text"])
    print(f"plot: {r['plot']}")
    return 0


def cmd_lutnet(a) -> int:
    from ncf.quant.lutnet import LutNetConfig
    from ncf.studies.lutnet import lutnet_site

    r = lutnet_site(a.train, a.test, a.out, _settle(LutNetConfig, a), site=a.site, max_rows=a.max_rows)
    print(r["text"])
    print(f"bundle: {r['bundle']}; RTL: {r['rtl']} (next: `ncf verify {r['rtl']}`, `ncf synth {r['rtl']} --targets "
          "ecp5 ice40`)")
    return 0 if r["tables_equal_brevitas"] == r["heldout_samples"] else 1


def cmd_classify(a) -> int:
    from ncf.studies.classify import PRESETS, SPLITS, ClassifyConfig, confusion_text, run_classify

    cfg = _settle(ClassifyConfig, a, PRESETS[a.preset])
    r = run_classify(cfg, progress=not a.quiet)
    print(r["table"])
    for s in SPLITS:
        for m in cfg.methods:
            print(f"confusion, {m}, {s} (rows: true, columns: predicted):")
            print(confusion_text(r["confusion"][s][m], r["classes"]) + "\n")
    print(f"written to {cfg.out}/ (accuracy.md/.json, confusion.json, confusion.png, classify.json)")
    return 0


# ------------------------------------------------------------------------------------ parser
CONFIGS = {"DatasetConfig": "ncf.model.dataset", "TrainConfig": "ncf.model.train", "HwConfig": "ncf.hw.generate",
           "ExperimentConfig": "ncf.studies.experiment", "BitsConfig": "ncf.studies.bits",
           "HwSweepConfig": "ncf.studies.hw_sweep", "HwSitesConfig": "ncf.studies.hw_sites",
           "ClassifyConfig": "ncf.studies.classify", "LutNetConfig": "ncf.quant.lutnet"}


PARALLEL_OPTIONS = {"workers": "Ray tasks at once on this machine (0 = every CPU, 1 = serial, without Ray)",
                    "ray_address": "run the tasks on this Ray cluster ('auto', 'ray://HEAD:10001'; or set RAY_ADDRESS)"}


def _experiment_presets() -> dict:
    from ncf.studies.experiment import PRESETS

    return PRESETS


def _config_class(name: str):
    import importlib

    return getattr(importlib.import_module(CONFIGS[name]), name)


def _default(config: str, name: str):
    """A config field's default: help texts quote it from its one source."""
    from dataclasses import MISSING, fields

    f = next(f for f in fields(_config_class(config)) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def _workload_file_option(parser, verb: str, dest: str = "workload_file", note: str = "") -> None:
    parser.add_argument("--workload-file", dest=dest, action="append", metavar="FILE",
                        help=f"{verb} a workload of your own, described by a YAML file{note} (repeatable; see "
                        "examples/workloads/perl_sort.yaml and the README's \"Your own program\")")


def _set_option(parser) -> None:
    parser.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                        help="set any config value (typed by its field, validated), after --config and the options")


def _config_options(parser, config: str, options: dict[str, str]) -> None:
    """--config FILE, one option per named field of ``config`` (default: not given, so the config file
    or the dataclass default stands; the help quotes the default), and --set."""
    import typing

    kinds = typing.get_type_hints(_config_class(config))
    parser.add_argument("--config", type=Path, help=f"a {config} file (YAML/JSON) to start from")
    for name, text in options.items():
        kind = kinds[name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        extra = {"nargs": "+"} if typing.get_origin(base) is list or base is list else \
            {"type": count if name in ("instructions", "skip") else base}
        if extra.get("nargs"):
            ints = ("bits", "leads", "levels", "seeds", "train_inputs", "layers", "fan_in")
            extra["type"] = int if name in ints else str
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), **extra,
                            help=f"{text} (default {_default(config, name)})")
    _set_option(parser)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ncf", description=__doc__.splitlines()[0], epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    t = sub.add_parser("trace", help="record a fused trace (registers + memory values) of a program",
                       description="Run a program under QEMU with ncf's plugin and record, for every "
                       "executed instruction, its pc and bytes, the 16 GPRs (+ fs/gs base) before it, and "
                       "every memory access with its value. The trace is self-checked (addresses recomputed "
                       "from registers, values against registers) and written with a JSON sidecar.",
                       epilog="examples:\n  ncf trace --workload bzip2 --input 0 --skip 1e9 --instructions 50e6 "
                       "-o traces/bzip2-0.ncft\n  ncf trace --instructions 1M -o ls.ncft -- /bin/ls -l /\n"
                       "  ncf trace --stdin script.txt --env LANG=C -o calc.ncft -- /usr/bin/bc -q\n\n"
                       "The same workload, input and window give a byte-identical trace on every run and machine: "
                       "the program runs from a fixed path with a fixed argv[0], environment, stack, AT_RANDOM, pids, "
                       "and a virtual clock, time-stamp counter, getrandom, sysinfo, uname and stat (see "
                       "trace_eval/capture.py).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--workload", help="a built-in workload, or one of --workload-file's (see `ncf workloads`)")
    _workload_file_option(t, "trace")
    t.add_argument("--input", type=int, default=0, help="input index of the workload, or of the program after `--` "
                   "(recorded in the trace; `ncf dataset` records it in the samples) (default 0)")
    t.add_argument("--skip", type=count, help="instructions to fast-forward without recording (default: the "
                   "workload file's skip, else 0)")
    t.add_argument("--instructions", type=instructions, help="instructions to record (default: the workload "
                   "file's instructions, else 10M)")
    t.add_argument("-o", "--output", type=Path, help="trace file (default traces/WORKLOAD-INPUT.ncft)")
    t.add_argument("--level", type=zstd_level, default=3, help="zstd level (default 3)")
    t.add_argument("--no-selfcheck", action="store_true", help="skip the self-check (not recommended)")
    t.add_argument("--run-to-end", action="store_true",
                   help="let the program finish after the window and record a digest of its output")
    t.add_argument("--inputs-dir", default="work/inputs", help="where generated inputs live")
    t.add_argument("--stdin", type=Path, metavar="FILE",
                   help="a program's standard input (default /dev/null); recorded in the sidecar with its sha256")
    t.add_argument("--env", type=env_var, action="append", metavar="K=V",
                   help="an environment variable for the program (repeatable), added to the fixed guest "
                   "environment PATH=/usr/bin:/bin LC_ALL=C; recorded in the sidecar")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.add_argument("command_line", nargs=argparse.REMAINDER, help="after `--`: any x86-64 Linux program and args")
    t.set_defaults(func=cmd_trace)

    w = sub.add_parser("workloads", help="list the built-in workloads and their input seeds",
                       description="List the built-in workloads (bzip2, xz, hmmer, gnugo and the C kernels) "
                       "with the fixed seed of each input. Input files are generated from these seeds by "
                       "`ncf trace`; different inputs are how train and test are split. With --workload-file, "
                       "also the user workloads of those files.")
    w.add_argument("--json", action="store_true")
    _workload_file_option(w, "list")
    w.set_defaults(func=cmd_workloads)

    i = sub.add_parser("inspect", help="summarise a trace and disassemble its first instructions",
                       description="Print what a trace holds (counts, size, sidecar, self-check result) and "
                       "its first instructions with registers and memory accesses. A damaged file gives an "
                       "error that names the problem; --allow-truncated reads what survives of a cut file.")
    i.add_argument("trace", type=Path)
    i.add_argument("-n", "--first", type=int, default=20, help="instructions to print (default 20)")
    i.add_argument("--allow-truncated", action="store_true", help="read the complete chunks of a cut-short file")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("check", help="re-run the self-check of a trace (exit 1 below 100%%)",
                       description="Recompute every memory address from the recorded registers and compare "
                       "with the recorded accesses, and check loaded/stored values against registers. "
                       "Prints the counts as JSON; exit status 1 if anything disagrees.")
    c.add_argument("trace", type=Path)
    c.set_defaults(func=cmd_check)

    cs = sub.add_parser("champsim", help="import or export ChampSim traces (64-byte input_instr, .xz)",
                        description="import: a ChampSim trace (.xz, .gz or raw) becomes an ncf trace without "
                        "registers, values or instruction bytes (stages that need them say so). export: any "
                        "ncf trace becomes ChampSim input_instr records (.xz if the name ends in .xz).")
    cs.add_argument("direction", choices=["import", "export"])
    cs.add_argument("src", type=Path)
    cs.add_argument("dst", type=Path)
    cs.add_argument("--limit", type=count, help="export at most this many instructions")
    cs.set_defaults(func=cmd_champsim)

    bl = sub.add_parser("baseline", help="score the classical branch predictors and prefetchers on traces",
                        description="Run branch predictors (bimodal, gshare, hashed perceptron, TAGE-SC-L 64KB) "
                        "and prefetchers (next-line, IP-stride, Best-Offset, Berti) over traces through the evaluation "
                        "harness: MPKI, accuracy, per-branch mispredictions, the hard branches (TAGE-SC-L's worst, "
                        "covering 50%% of its mispredictions), L1D/L2 demand-miss MPKI with and without each "
                        "prefetcher, coverage, accuracy, timeliness, delinquent loads and next-delta "
                        "precision/recall. Prints tables and writes JSON.",
                        epilog="examples:\n  ncf baseline --trace traces/bzip2-0.ncft --predictor tage-sc-l\n"
                        "  ncf baseline --all            # every built-in workload, inputs 0 and 1, with plots\n"
                        "  ncf baseline --all --workloads bzip2 xz --instructions 20M --skip 100M",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    bl.add_argument("--trace", type=Path, nargs="+", help="trace files to evaluate")
    bl.add_argument("--predictor", nargs="+", default=["bimodal", "gshare", "perceptron", "tage-sc-l"],
                    choices=["bimodal", "gshare", "perceptron", "tage-sc-l"])
    bl.add_argument("--prefetcher", nargs="*", default=["next-line", "ip-stride", "bop", "berti"],
                    choices=["next-line", "ip-stride", "bop", "berti"])
    bl.add_argument("--all", action="store_true", help="trace (or reuse, from the stage cache) the built-in "
                    "workloads, inputs 0 and 1, and write the full report")
    bl.add_argument("--workloads", nargs="+", help="with --all: these workloads (default: every built-in one, or "
                    "the --workload-file workloads when given)")
    _workload_file_option(bl, "with --all: include", dest="workload_files")
    bl.add_argument("--instructions", type=instructions, help=f"with --all: instructions per trace (default "
                    f"{_default('ExperimentConfig', 'instructions'):,})")
    bl.add_argument("--skip", type=count, help=f"with --all: instructions skipped first (default "
                    f"{_default('ExperimentConfig', 'skip'):,}; the C kernels are traced from their start)")
    bl.add_argument("--cache", help="with --all: the stage cache (default work/cache)")
    bl.add_argument("--workers", type=int, help="with --all: " + PARALLEL_OPTIONS["workers"])
    bl.add_argument("--ray-address", help="with --all: " + PARALLEL_OPTIONS["ray_address"])
    bl.add_argument("-o", "--out", default="reports/baselines")
    bl.set_defaults(func=cmd_baseline)

    ds = sub.add_parser("dataset", help="build fused samples (graph + snapshot D instructions earlier) from a trace",
                        description="For the hard branches and delinquent loads of --sites-from (default: the trace "
                        "itself), write one sample per dynamic instance: the site's fused graph, the registers and "
                        "memory values captured before instruction i-D, the global history before i and TAGE-SC-L's "
                        "prediction; plus the history-only inputs of the learned baselines. Memory-mapped .npy "
                        "arrays with a dataset.json sidecar. Split train/test by input: build the test input's "
                        "dataset with --sites-from and --vocab-from the training input.",
                        epilog="example:\n  ncf dataset --trace traces/demo/bzip2-0.ncft -o work/data/bzip2-0\n"
                        "  ncf dataset --trace traces/demo/bzip2-1.ncft --sites-from traces/demo/bzip2-0.ncft "
                        "--vocab-from work/data/bzip2-0 -o work/data/bzip2-1",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ds.add_argument("--trace", type=Path, required=True)
    ds.add_argument("-o", "--output", type=Path, required=True)
    ds.add_argument("--task", choices=["branch", "prefetch", "both"], default="both")
    ds.add_argument("--lead", type=int, default=_default("DatasetConfig", "lead"),
                    help=f"snapshot lead D in instructions (default {_default('DatasetConfig', 'lead')})")
    ds.add_argument("--sites-from", type=Path, help="trace whose hard branches / delinquent loads are the sites")
    ds.add_argument("--vocab-from", type=Path, help="training dataset whose delta vocabulary and prefetch "
                    "distances to use")
    ds.add_argument("--prefetch-distance", type=int, default=_default("DatasetConfig", "prefetch_distance"),
                    help="k: a load's prefetch label is line(j-1+k) - line(j-1), j-1 its last access before i; "
                    "0 = per load, the smallest k whose median instruction gap reaches the cache model's prefetch "
                    "latency, chosen on this trace unless --vocab-from gives it (default 0)")
    ds.add_argument("--max-per-site", type=int, help="keep at most this many samples per site (evenly in time)")
    ds.add_argument("--since", type=int, default=0, help="only instances at or after this instruction of the trace "
                    "(`ncf experiment` builds the hybrids' validation split so: every instance from the first "
                    "validation sample of each training trace on); default 0, the whole trace")
    ds.add_argument("--max-branches", type=int, default=8)
    ds.add_argument("--max-loads", type=int, default=8)
    ds.add_argument("--load-share", type=float, default=0.5, help="delinquent loads: the fewest holding this share "
                    "of the trace's L1D load misses, at most --max-loads (default 0.5)")
    ds.add_argument("--history-only", action="store_true", help="no site graphs, registers, memory values or "
                    "front-end counts: for a trace without them (a ChampSim import); BranchNet and the delta-LSTM "
                    "train on it, the GNN models refuse it")
    ds.set_defaults(func=cmd_dataset)

    tr = sub.add_parser("train", help="train a model (GNN, ablation or learned baseline) from a config file",
                        description="Train from a YAML/JSON TrainConfig (model: fused | static | history | "
                        "branchnet | delta-lstm). Checkpoints every epoch in `out`; --resume continues. Seeds are "
                        "fixed; CPU by default, GPU when present (device: auto).",
                        epilog="example config (YAML):\n  train: work/data/bzip2-0\n  test: work/data/bzip2-1\n"
                        "  model: fused\n  out: runs/bzip2-fused\n  epochs: 4",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--config", type=Path, required=True)
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in `out`")
    tr.add_argument("--nproc", type=positive, default=1, help="train with this many data-parallel processes "
                    "(torch DDP: runs `torchrun --nproc-per-node N -m ncf.cli train ...`; gloo on CPU, NCCL on GPUs)")
    _set_option(tr)
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("experiment", help="the main study: every model on every workload, train input 0, test 1",
                        description="Per workload: sites from input 0, datasets at lead D, the fused GNN, its "
                        "ablations (static graph only, history only), the BranchNet-style CNN and the delta-LSTM "
                        "trained with one budget; scored on input 1 through the harness (hard-branch and overall "
                        "MPKI with the models overriding TAGE-SC-L; the delta to the load's k-th next access, k "
                        "per load chosen for timeliness on input 0 (--set prefetch_distance=K fixes it): its "
                        "accuracy and the cache model's coverage, accuracy and late fraction, against IP-stride at "
                        "the same k, BOP and Berti). --leads also trains the fused GNN at each of several D "
                        "and plots accuracy against D. Traces, datasets and trained models go through the stage cache "
                        "(--cache): a re-run redoes only what changed.",
                        epilog="examples:\n  ncf experiment --workloads bzip2 xz --epochs 4\n"
                        "  ncf experiment --config reports/demo/configs/experiment.yaml   # what the demo ran\n"
                        "  ncf experiment --workloads bzip2 --leads 0 10 30 100 300 1000\n"
                        "  ncf experiment --preset study   # issue 17's study: 3 seeds, ablations, lead sweep (~1 h)\n"
                        "  ncf experiment --preset large --data-only --workers 1   # the data at scale, serially",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _workload_file_option(ex, "run", dest="workload_files")
    _config_options(ex, "ExperimentConfig", {"workloads": "workloads (default: the four programs, or the "
                                                          "--workload-file workloads when given)",
                                             "models": "models to train and score (default: all)",
                                             "lead": "snapshot lead D", "instructions": "instructions per trace",
                                             "skip": "instructions skipped first (C kernels: from their start)",
                                             "epochs": "training epochs of every model",
                                             "windows": "windows per training input",
                                             "window_stride": "instructions from one window's start to the next's",
                                             "train_inputs": "training inputs (input 1 is held out)",
                                             "train_cap": "training samples per site", "out": "report directory",
                                             "branchnet": "BranchNet's published shape: big (Big-BranchNet) "
                                                          "or mini (Mini-BranchNet 1KB, unquantized)",
                                             "seeds": "models trained per workload, seeds seed, seed+1, ...: the "
                                                      "tables give means and standard deviations",
                                             "drop": "inputs the GNN models do not see: frontend, snapshot, tage, "
                                                     "tage-internals, memory",
                                             "ablations": "one more fused GNN per name, without that input "
                                                          "(fused-no-<name>; names as for --drop)",
                                             "leads": "the lead sweep: also one fused GNN (seed --seed) per "
                                                      "workload and snapshot lead D, a table and lead_sweep.png",
                                             "champsim_dir": "a directory of ChampSim traces (.xz, .gz, raw) "
                                                             "to score instead of workloads: every baseline, one "
                                                             "trace file held out, an MPKI table; with --models "
                                                             "branchnet delta-lstm history, those too",
                                             "test_trace": "with --champsim-dir: the trace file held out "
                                                           "(default: the first by name)",
                                             "cache": "the stage cache", **PARALLEL_OPTIONS})
    ex.add_argument("--preset", choices=list(_experiment_presets()), default="default",
                    help="settings to start from (study: 3 training inputs x 2 windows x 10M instructions, up to 8,000 "
                    "samples per site, 8 epochs, 3 seeds, the feature ablations and the lead sweep, about an hour on 2 "
                    "cores; large: the same study with 4 windows x 25M instructions, up to 64,000 samples per site and "
                    "Big-BranchNet, for a Ray cluster or a GPU); the other options apply on top")
    ex.add_argument("--data-only", action="store_true", help="build the traces and datasets only and write "
                    "data.md/.json: training samples per site, held-out samples, bytes on disk")
    ex.set_defaults(func=cmd_experiment)

    q = sub.add_parser("quantize", help="Brevitas QAT at several bit widths, integer reference, QONNX export",
                       description="Quantize a trained GNN run with power-of-two scales (weights and activations "
                       "at each --bits, biases 16 bit, the static fold 24 bit), fine-tune it briefly on the "
                       "training dataset (QAT), score both heads on the held-out dataset, and at --export-bits "
                       "export every site's flat one-site form to QONNX and check fake-quant == integer "
                       "reference == QONNX execution on all of that site's held-out samples.",
                       epilog="example (the demo's run and datasets are in the stage cache; its report prints "
                       "the exact command):\n  ncf quantize --run RUN --train DATASET --test DATASET --bits 2 4 8 "
                       "--export-bits 4",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--run", type=Path, required=True, help="trained GNN run directory (fused, static or history)")
    q.add_argument("--train", type=Path, required=True, help="training dataset (QAT)")
    q.add_argument("--test", type=Path, required=True, help="held-out dataset (scoring and the exactness ladder)")
    _config_options(q, "BitsConfig", {"bits": "bit widths to sweep (2..8)",
                                      "export_bits": "bit width exported as site bundles",
                                      "steps": "QAT steps per bit width",
                                      "max_rows": "held-out samples scored and checked per site"})
    q.add_argument("-o", "--out", type=Path, default=Path("reports/quant"))
    q.set_defaults(func=cmd_quantize)

    hw_help = ("The input is a site bundle written by `ncf quantize` (site<k>_<b>bit.onnx and its .json, "
               ".intref.npz, .samples.npz).")
    for name, fn, what in (("hls", cmd_hls, "hls4ml HLS C++ project + C simulation checked against the integer "
                            "reference + hls4ml's C testbench built with g++"),
                           ("rtl", cmd_rtl, "synthesizable pipelined Verilog (ncf_predictor) from the same hls4ml "
                            "model graph, through da4ml, with a JSON manifest")):
        h = sub.add_parser(name, help=what, description=f"{what}. {hw_help}",
                           epilog=f"example:\n  ncf {name} --qonnx reports/demo/hw/quant/site0_4bit.onnx -o build/{name}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        h.add_argument("--qonnx", type=Path, required=True, nargs="+" if name == "rtl" else None,
                       help="the site's QONNX file (or its _clean.onnx)" + (
                           "; several: one multi-site block, site id k = the k-th file" if name == "rtl" else ""))
        if name == "rtl":
            h.add_argument("--design", choices=("folded", "shared"), default="folded",
                           help="several sites: folded = each site's weights folded into its own da4ml core, "
                           "the cores behind a site-id multiplexer (hw/multisite.py); "
                           "shared = one datapath for all sites, each site's weights in ROM addressed by the "
                           "site id (hw/shared.py; its adder levels per stage = int(cutoff); the sites must share "
                           "one model shape)")
        h.add_argument("-o", "--output", type=Path, default=Path(f"build/{name}"))
        _config_options(h, "HwConfig", {"cutoff": "da4ml latency_cutoff: adder delays per pipeline stage",
                                        "clock_ns": "target clock period in ns",
                                        "csim_samples": "held-out samples for the C simulation check"})
        h.set_defaults(func=fn)

    v = sub.add_parser("verify", help="cocotb verification of generated RTL against the integer reference",
                       description="Simulate the RTL written by `ncf rtl` with cocotb (Verilator, or Icarus for "
                       "short runs) on real feature snapshots: the site bundle's held-out samples, or those of "
                       "--trace (another trace of the same program; the dataset code builds them). Checks every "
                       "prediction bit for bit, the latency against the manifest, one result per cycle, random "
                       "gaps and backpressure, reset mid-stream, and replays the RTL's decisions through the "
                       "evaluation harness (MPKI or prefetch coverage must equal the software model's). With "
                       "--netlist, the same tests run on the gate-level netlist of `ncf synth` (Icarus). A "
                       "multi-site block (`ncf rtl --qonnx A B ...`, either --design) is verified on every site's "
                       "held-out samples, the site ids interleaved at random, with mismatches counted per site (no "
                       "harness replay).",
                       epilog="examples:\n  ncf verify build/rtl --trace traces/demo/bzip2-1.ncft\n"
                              "  ncf synth build/rtl --targets ecp5 && ncf verify build/rtl --netlist ecp5 "
                              "--simulator icarus",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("rtl", type=Path, help="directory written by `ncf rtl`")
    v.add_argument("--trace", type=Path, help="take feature snapshots from this trace (default: the bundle's samples)")
    v.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    v.add_argument("-n", "--samples", type=int, help="at most this many snapshots (default: all)")
    v.add_argument("--handshake-samples", type=int, default=2000, help="snapshots for the protocol tests")
    v.add_argument("--netlist", choices=["ecp5", "ice40"], help="simulate the post-synthesis netlist `ncf synth` "
                   "wrote for this target (yosys's cell models) instead of the RTL")
    v.add_argument("--synth-dir", type=Path, help="--netlist: the `ncf synth` output directory (default: <rtl>/synth)")
    v.add_argument("--work", type=Path, help="keep the simulator build and results here (default: a temp dir)")
    v.add_argument("-q", "--quiet", action="store_true")
    v.set_defaults(func=cmd_verify)

    c = sub.add_parser(
        "classify", help="transfer: classify which algorithm a program runs from its execution",
        description="Trace the algorithm corpus (trace_eval/corpus: sorting, searching, graph traversal, dynamic "
        "programming, hashing, string matching, matrix kernels, prime counting; several implementations each, "
        "built at -O0/-O1/-O2 by `make native`), build each program's fused samples at lead D, and classify the "
        "algorithm of held-out programs with a linear probe on (1) the pooled embeddings of the fused GNN "
        "trained on the branch/prefetch task of the training programs and then frozen, (2) the same GNN with "
        "the dynamic inputs zeroed, (3) a bag of executed opcodes; and (4) with the same GNN trained from "
        "scratch on the classes. Two splits: unseen implementation (every fold holds out one implementation "
        "of each class) and unseen optimisation level (--test-level held out). Writes accuracy.md/.json, "
        "confusion.json, confusion.png. Traces, datasets and models go through the stage cache.",
        epilog="examples:\n  ncf classify                               # default: ~4 min the first time\n"
        "  ncf classify --preset full                 # 4 folds, 2 seeds, 1M instructions (longer)\n"
        "  ncf classify --classes sort search --max-impls 2 --levels 1 2 --methods opcodes",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--preset", choices=["default", "tiny", "full"], default="default",
                   help="default: 2 folds, seed 1, 400k instructions; tiny: 3 classes, 2 levels, 1 epoch; full: "
                   "4 folds, seeds 1 2, 1M")
    _config_options(c, "ClassifyConfig", {
        "classes": "algorithm classes (default: all of the corpus)",
        "max_impls": "at most this many implementations per class", "levels": "gcc -O levels to use",
        "seeds": "input seeds per program", "test_level": "level held out",
        "impl_folds": "folds of the unseen-implementation split", "instructions": "instructions recorded per program",
        "skip": "instructions skipped first (past the set-up)", "lead": "snapshot lead D",
        "per_site": "samples per site", "epochs": "epochs of the branch/prefetch GNN",
        "scratch_epochs": "epochs of the scratch GNN", "methods": "methods (fused static opcodes scratch)",
        "seed": "training and shuffling seed", "out": "report directory", "cache": "the stage cache", **PARALLEL_OPTIONS})
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_classify)

    b = sub.add_parser("bench", help="benchmarks that print figures and ratios against targets",
                       description="Measure, print and save (markdown + JSON under --out) figures with their "
                       "ratio to the project's targets. Benchmarks never fail on a missed target: they report it.")
    b.add_argument("what", choices=["trace", "baselines", "verify", "dataset", "train"],
                   help="trace: capture throughput and bytes per instruction; baselines: predictor and cache "
                   "model speed; verify: Verilator predictions/s of generated RTL (--rtl); dataset: `ncf "
                   "dataset` instructions/s, samples/s and peak RSS per trace length; train: training "
                   "samples/s of every learned model, the fused GNN over dense adjacency and over edge lists")
    b.add_argument("--rtl", type=Path, help="verify: directory written by `ncf rtl`")
    b.add_argument("--samples", type=int, help="verify: at most this many snapshots (default: all of the bundle's)")
    b.add_argument("--trace", type=Path, nargs="+", help="baselines: a trace whose streams to time; dataset: "
                   "traces to build (default: record bzip2 input 0); train: a trace to build the dataset from")
    b.add_argument("--lengths", type=instructions, nargs="+",
                   help="dataset: instructions of the traces to record (default 25M 50M 100M)")
    b.add_argument("--dataset", type=Path, help="train: a dataset (`ncf dataset`) to train on (default: built "
                   "from --trace: 5 hard branches, 5 delinquent loads, <= 1500 samples per site)")
    b.add_argument("--epochs", type=positive, default=2, help="train: epochs per model")
    b.add_argument("--batch", type=positive, default=256, help="train: batch size")
    b.add_argument("--threads", type=positive, default=_default("TrainConfig", "threads"),
                   help=f"train: torch threads (default {_default('TrainConfig', 'threads')}, as training)")
    b.add_argument("--workloads", nargs="+", default=["bzip2", "xz", "hmmer", "gnugo"])
    b.add_argument("--instructions", type=instructions, default=20 * 10**6)
    b.add_argument("--skip", type=count, default=10**7)
    b.add_argument("-o", "--out", type=Path, default=Path("reports/bench"))
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline end to end on the built-in workloads and write a report",
                       description="Trace every built-in workload on a training and a held-out input, run "
                       "the stages after it, and write a report (markdown + JSON) under --out. Work already "
                       "done with the same settings is reused.")
    d.add_argument("--out", default="reports/demo")
    d.add_argument("--cache", default="work/cache", help="the stage cache (default work/cache)")
    d.add_argument("--preset", choices=["default", "full", "tiny"], default="default",
                   help="default: fits about 20 minutes on 2 cores; full: 20M-instruction windows, every model, "
                   "6 leads, 5 bit widths, 7 hardware points, ECP5 P&R without a time limit (hours); tiny: every "
                   "stage on bzip2 alone with the smallest settings (minutes; what CI runs)")
    _workload_file_option(d, "run the pipeline on", note=", instead of the built-in workloads (the first file's "
                          "workload also goes through the lead sweep, bit widths and hardware)")
    d.add_argument("--fresh", action="store_true", help="redo every step instead of reusing the stage cache")
    d.add_argument("--workers", type=int, default=0, help=PARALLEL_OPTIONS["workers"] + " (default 0)")
    d.add_argument("--ray-address", help=PARALLEL_OPTIONS["ray_address"])
    d.set_defaults(func=cmd_demo)

    sy = sub.add_parser("synth", help="real synthesis and place-and-route of generated RTL (yosys, nextpnr)",
                        description="yosys synth_xilinx (LUT/FF/DSP/BRAM), yosys + nextpnr-ecp5 on an ECP5-85k "
                        "(placed-and-routed Fmax, utilisation) and yosys + nextpnr-ice40 on an iCE40 HX8K, for a "
                        "directory written by `ncf rtl`. JSON + markdown summary in <rtl>/synth.",
                        epilog="example:\n  ncf synth build/rtl --targets xilinx ecp5 --timeout 1800",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sy.add_argument("rtl", type=Path, help="directory written by `ncf rtl`")
    sy.add_argument("--targets", nargs="+", choices=["xilinx", "ecp5", "ice40"], default=["xilinx", "ecp5", "ice40"])
    sy.add_argument("--freq", type=float, default=200, help="clock target for place-and-route, MHz")
    sy.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    sy.add_argument("--timeout", type=float, help="seconds per target before it is recorded as timed out")
    sy.add_argument("--no-place", dest="place", action="store_false", help="ecp5 / ice40: stop after synthesis "
                    "(counts and the gate-level netlist for `ncf verify --netlist`, no Fmax)")
    sy.add_argument("-o", "--out", type=Path, help="default: <rtl>/synth")
    sy.set_defaults(func=cmd_synth)

    ms = sub.add_parser("hw-sites", help="one folded block per site against the two multi-site blocks (cells, Fmax)",
                        description="For the site bundles given (site id k = the k-th): RTL of each site's folded "
                        "block and of the two multi-site blocks (the site id comes in with the features): folded-mux "
                        "(the folded cores behind a multiplexer) and shared-ROM (one datapath, per-site weights in "
                        "ROM), synthesis and place-and-route of every one (yosys + nextpnr), both multi-site blocks "
                        "verified on every site's held-out samples; writes the table (LUT, FF, carry, BRAM, DSP, "
                        "Fmax, cycles, ns) to "
                        "--out/sites.md and .json. Everything goes through the stage cache.",
                        epilog="example:\n  ncf hw-sites --qonnx reports/quant/bzip2/site{0,1,2}_4bit.onnx "
                        "--targets ecp5 ice40",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ms.add_argument("--qonnx", type=Path, nargs="+", required=True, help="site bundles (QONNX files), 2 or more")
    _config_options(ms, "HwSitesConfig", {"targets": "synthesis targets (xilinx ecp5 ice40)",
                                          "cutoff": "da4ml latency_cutoff (shared-ROM: "
                                          "adder levels per stage)", "freq_mhz": "nextpnr clock target, MHz",
                                          "timeout_s": "seconds per design and target",
                                          "simulator": "verifying simulator (verilator, icarus; '' = none)",
                                          "verify_samples": "held-out samples verified, shared by the sites "
                                                            "(None = every one)",
                                          "cache": "the stage cache"})
    ms.add_argument("-o", "--out", type=Path, default=Path("reports/hw/sites"))
    ms.set_defaults(func=cmd_hw_sites)

    hs = sub.add_parser("hw-sweep", help="hardware size x bit width -> accuracy against LUTs (the Pareto plot)",
                        description="For each point H,T,BITS: train the compact GNN on one site's training "
                        "samples (the branch site TAGE-SC-L mispredicts most, or --set site=K, a branch or a delinquent "
                        "load), quantize it (QAT on the same samples), export the site, generate its RTL and synthesize "
                        "it (yosys synth_xilinx; with --pnr also place and route it for Fmax and latency in ns); plot "
                        "accuracy against LUTs (and latency) with a reference on the same samples for scale: TAGE-SC-L "
                        "at a branch site, at a load site its last known delta class repeated (what a stride "
                        "prefetcher predicts).")
    hs.add_argument("--train", type=Path, required=True)
    hs.add_argument("--test", type=Path, required=True)
    _config_options(hs, "HwSweepConfig", {"epochs": "training epochs per (H, T)", "qat_steps": "QAT steps per point",
                                          "max_rows": "held-out samples per point",
                                          "cutoff": "da4ml latency_cutoff of points without their own",
                                          "pnr": "also place and route every point on this target (ecp5 or ice40): "
                                                 "Fmax, latency in ns, and the latency panel of the plot",
                                          "cache": "the stage cache", **PARALLEL_OPTIONS})
    hs.add_argument("--points", nargs="+", type=point, help="configurations H,T,BITS[,CUTOFF] (hidden width, "
                    "message-passing steps, bit width, da4ml latency cutoff: adder delays per pipeline stage; "
                    f"default {' '.join(','.join(map(str, q)) for q in _default('HwSweepConfig', 'points'))})")
    hs.add_argument("--lutnets", nargs="+", metavar="LAYERS/FAN_IN/BITS",
                    help="also LUT-native networks of the same site as points (`ncf lutnet`): neurons per layer, fan-in "
                    "(one, or one per layer), activation bits; e.g. 36-6-1/6/1 27-9-3-1/6-3-3-3/2")
    hs.add_argument("--no-synth", dest="synth", action="store_const", const=False,
                    help="da4ml cost estimates only (no yosys)")
    hs.add_argument("-o", "--out", type=Path, default=Path("reports/hw/sweep"))
    hs.set_defaults(func=cmd_hw_sweep)

    ln = sub.add_parser("lutnet", help="a LUT-native network for one branch site (LogicNets style): tables + RTL",
                        description="Train a sparse network of few-bit neurons (each reads FAN_IN outputs of the layer "
                        "below; the first layer reads the feature bits with the highest mutual information with the "
                        "label on the training rows) with Brevitas on one branch site's training samples (CPU, "
                        "seeded), enumerate every neuron into a truth table (the integer reference: lookups only), "
                        "check it against the trained model, score it against TAGE-SC-L on the same held-out samples "
                        "as `ncf hw-sweep`, and write the bundle and its RTL: one registered table lookup per layer, "
                        "module ncf_core_wrapper under the usual ncf_predictor top (branch only: N_LOGITS 1, "
                        "out_class 0). Exit status 1 if the tables and the trained model disagree on a held-out "
                        "sample.",
                        epilog="examples:\n  ncf lutnet --train DATASET --test DATASET --site 1 -o reports/lutnet/a\n"
                        "  ncf lutnet --train DATASET --test DATASET --layers 27 9 3 1 --fan-in 6 3 3 3 --bits 2 -o DIR\n"
                        "  ncf verify DIR/rtl && ncf synth DIR/rtl --targets ecp5 ice40",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ln.add_argument("--train", type=Path, required=True, help="training dataset (the site's training rows are used)")
    ln.add_argument("--test", type=Path, required=True, help="held-out dataset (scoring, the bundle's samples)")
    ln.add_argument("--site", type=int, help="branch site id (default: the one TAGE-SC-L mispredicts most on --test)")
    ln.add_argument("--max-rows", type=positive, default=4000, help="held-out samples scored (evenly spaced; "
                    "default 4000, as hw-sweep)")
    _config_options(ln, "LutNetConfig", {
        "layers": "neurons per layer, the last 1 (the branch logit)",
        "fan_in": "inputs per neuron: one value, or one per layer",
        "bits": "hidden activation bits (1..4; the first layer's inputs are 1 bit)",
        "out_bits": "the branch logit's bits (signed, on [-2, 2))",
        "inputs": "feature bits the first layer draws from", "train_rows": "at most this many training samples",
        "epochs": "training epochs", "lr": "Adam learning rate", "seed": "connections, initial weights and batches"})
    ln.add_argument("-o", "--out", type=Path, default=Path("reports/lutnet"))
    ln.set_defaults(func=cmd_lutnet)
    return p


def exit_status(e: Exception) -> int | None:
    """2 for bad usage, 1 for unusable data, None for anything else (a bug: it keeps its traceback)."""
    from ncf.io import DataError, UsageError
    from ncf.trace_eval.capture import CaptureError
    from ncf.trace_eval.workloads import WorkloadError

    if isinstance(e, (UsageError, WorkloadError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                      PermissionError, FileExistsError)):
        return 2
    if isinstance(e, OSError) and e.filename is not None:  # about a path the user named (read-only, full, ...)
        return 2
    if isinstance(e, (DataError, CaptureError)):
        return 1
    return None


def one_line(e: Exception) -> str:
    """The message of ``e`` on one line; an OS error names its path."""
    if isinstance(e, OSError) and e.strerror:
        path = e.filename2 if e.filename2 is not None else e.filename
        return f"{path}: {e.strerror}" if path is not None else e.strerror
    return " | ".join(line.strip() for line in str(e).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if getattr(args, "command_line", None) and args.command_line[0] == "--":
        args.command_line = args.command_line[1:]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"ncf {args.cmd}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        print(f"ncf {args.cmd}: error: {one_line(e)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
