"""The cached steps every study is built from: each is one stage function behind the stage cache.

    cache = StageCache("work/cache")
    t = trace(cache, prepare("bzip2", 0), skip=10**8, count=5 * 10**6)     # .../trace.ncft
    s = sites(cache, t, max_branches=6, max_loads=4, load_share=0.5)
    d = dataset(cache, t, s, DatasetConfig(lead=100, max_per_site=1500), label="bzip2-0")
    run = train(cache, TrainConfig(model="fused", epochs=8), train_ds=d)

A step's key is what determines its result: the content hashes of its inputs (a trace's sha256, a
dataset's ``dataset.json``, a bundle's files) and its settings; paths are not part of a key (the
same inputs elsewhere give the same entry), and the cache adds the version of the code that runs.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from ncf.io import file_sha256, read_json

from .cache import StageCache


# ------------------------------------------------------------------------------------ trace_eval
def trace(cache: StageCache, inv, skip: int, count: int, progress: bool = True) -> Path:
    """A self-checked trace of ``inv`` (a workloads.Invocation) after ``skip`` instructions."""
    from ncf.trace_eval.capture import GUEST_VERSION, record

    key = {"argv": [Path(inv.argv[0]).name, *inv.argv[1:]], "exe": file_sha256(inv.argv[0]),
           "inputs": inv.input_files, "env": list(inv.env), "own_dir": inv.own_dir, "program": inv.program_version,
           "skip": skip, "count": count, "guest": GUEST_VERSION}
    label = f"{inv.workload}-{inv.input}"
    name = f"{label}.ncft"
    return cache.run("trace", key, lambda d: {"sidecar": record(inv, d / name, skip=skip, count=count,
                                                                progress=progress)},
                     code=("ncf.trace_eval.capture",), label=label).path / name


def trace_sha(path) -> str:
    """A trace's content hash, from its sidecar (checked against the file whenever it is opened)."""
    return read_json(Path(str(path) + ".json"))["file"]["sha256"]


def baselines(cache: StageCache, trace_path: Path) -> dict:
    """Every classical branch predictor and prefetcher on one trace (trace_eval.baseline.evaluate)."""
    from ncf.trace_eval.baseline import evaluate

    return cache.run("baselines", {"trace": trace_sha(trace_path)}, lambda d: evaluate(trace_path),
                     code=("ncf.trace_eval.baseline",), label=Path(trace_path).stem).result


# ------------------------------------------------------------------------------------ model
def sites(cache: StageCache, trace_path: Path, max_branches: int, max_loads: int, load_share: float) -> dict:
    """Hard branches and delinquent loads of a (training) trace (model.dataset.find_sites)."""
    from ncf.model.dataset import find_sites

    def fn(d):
        s = find_sites(trace_path, max_branches=max_branches, max_loads=max_loads, load_share=load_share)
        s["from_trace"] = Path(trace_path).name
        return s
    return cache.run("sites", {"trace": trace_sha(trace_path), "limits": [max_branches, max_loads],
                               "load_share": load_share}, fn,
                     code=("ncf.model.dataset",), label=Path(trace_path).stem).result


def dataset(cache: StageCache, trace_path: Path, site_list: dict, cfg, vocab: list | None = None,
            distance: dict | None = None, label: str = "", may_be_empty: bool = False) -> Path | None:
    """The fused samples of ``trace_path`` for ``site_list`` (model.dataset.build_dataset; ``vocab`` and
    ``distance`` from the training dataset, None = chosen here);
    ``may_be_empty``: None (remembered in the cache) when no site has a sample in this window."""
    from ncf.model.dataset import NoSamples, build_dataset

    def fn(d):
        try:
            return {"samples": build_dataset(trace_path, site_list, d / "data", cfg, vocab=vocab,
                                                 distance=distance)["samples"]}
        except NoSamples as e:
            if not may_be_empty:
                raise
            return {"samples": 0, "why": str(e).split(": ", 1)[1]}

    key = {"trace": trace_sha(trace_path), "sites": site_list, "config": asdict(cfg), "vocab": vocab,
           "distance": distance}
    entry = cache.run("dataset", key, fn, code=("ncf.model.dataset",), label=label or Path(trace_path).stem)
    return entry.path / "data" if entry.result["samples"] else None


def merged(cache: StageCache, parts: list, label: str = "") -> Path:
    """One training dataset of several (model.dataset.concat_datasets), in the order given."""
    from ncf.model.dataset import concat_datasets

    def fn(d):
        meta = concat_datasets(parts, d / "data")
        return {"samples": meta["samples"], "dropped": meta["samples_dropped"]}
    return cache.run("merge", {"parts": [entry_key(p) for p in parts]}, fn, code=("ncf.model.dataset",),
                     label=label).path / "data"


def train(cache: StageCache, cfg, train_ds: Path, test_ds: Path | None = None, label: str = "",
          progress: bool = True) -> Path:
    """A trained run of ``cfg.model`` on ``train_ds`` (model.train.train); the run directory. BranchNet's shape
    keys BranchNet's runs only: a GNN trained beside Big-BranchNet is the one trained beside Mini-BranchNet."""
    from ncf.model.train import train as train_run

    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("train", "test", "out") and (k != "branchnet" or cfg.model == "branchnet")}
    key = {"train": entry_key(train_ds), "config": settings}
    return cache.run("train", key, lambda d: train_run(replace(cfg, train=str(train_ds), out=str(d / "run"),
                                                              test=str(test_ds or "")), progress=progress),
                     code=("ncf.model.train",), label=label or cfg.model).path / "run"


def entry_key(path) -> str:
    """What identifies ``path``'s content in a key: the digest of the cache entry it was made in,
    else the sha256 of the file (of a run's checkpoint, of a dataset's dataset.json)."""
    path = Path(path)
    stage = path.parent / "stage.json"
    if stage.exists():
        return read_json(stage)["digest"]
    for inner in ("checkpoint.pt", "dataset.json"):
        if (path / inner).exists():
            return file_sha256(path / inner)
    return file_sha256(path)


# ------------------------------------------------------------------------------------ hw, rtl_tests
def bundle_key(onnx) -> dict:
    """The content hashes of a site bundle's files (``ncf quantize``'s hardware input)."""
    from ncf.quant.quantize import bundle_paths

    return {k: file_sha256(p) for k, p in bundle_paths(onnx).items()}


def rtl(cache: StageCache, onnx, cutoff: float, check_samples: int | None = None) -> Path:
    """The RTL directory (``hw.generate.build_rtl``) of a site bundle."""
    from ncf.hw.generate import HwConfig, build_rtl
    from ncf.quant.quantize import read_bundle

    cfg = HwConfig(cutoff=cutoff, **({"check_samples": check_samples} if check_samples else {}))
    return cache.run("rtl", {"bundle": bundle_key(onnx), "config": asdict(cfg)},
                     lambda d: {"latency": build_rtl(read_bundle(onnx), cfg, d / "rtl", progress=False)["latency"]},
                     code=("ncf.hw.generate", "ncf.quant.quantize"),
                     label=Path(onnx).stem.removesuffix("_clean")).path / "rtl"


def multisite_rtl(cache: StageCache, onnxs: list, cutoff: float, check_samples: int | None = None,
                  design: str = "folded") -> Path:
    """The multi-site RTL directory of several site bundles (site id k = ``onnxs[k]``), ``design`` "folded"
    or "shared" (``hw.shared.build_sites``)."""
    from ncf.hw.generate import HwConfig
    from ncf.hw.shared import build_sites
    from ncf.quant.quantize import read_bundle

    cfg = HwConfig(cutoff=cutoff, **({"check_samples": check_samples} if check_samples else {}))
    key = {"bundles": [bundle_key(o) for o in onnxs], "config": asdict(cfg), "design": design}
    return cache.run("rtl", key, lambda d: {"latency": build_sites([read_bundle(o) for o in onnxs], cfg, d / "rtl", design,
                                                                   progress=False)["latency"]},
                     code=("ncf.hw.generate", "ncf.hw.shared", "ncf.quant.quantize"),
                     label=f"sites{len(onnxs)}-{design}").path / "rtl"


def manifest(rtl_dir) -> dict:
    from ncf.hw.generate import load_manifest

    return load_manifest(rtl_dir)


def hls(cache: StageCache, onnx) -> dict:
    """The hls4ml project of a site bundle with its C-simulation check (``hw.generate.build_hls``)."""
    from ncf.hw.generate import HwConfig, build_hls
    from ncf.quant.quantize import read_bundle

    return cache.run("hls", {"bundle": bundle_key(onnx), "config": asdict(HwConfig())},
                     lambda d: build_hls(read_bundle(onnx), HwConfig(), d / "hls", progress=False),
                     code=("ncf.hw.generate", "ncf.quant.quantize"),
                     label=Path(onnx).stem.removesuffix("_clean")).result


def verify(cache: StageCache, rtl_dir, simulator: str, n_stream: int | None = None, n_handshake: int = 2000,
           close_loop: bool = True, netlist: str | None = None, synth_dir=None) -> dict:
    """cocotb verification of the RTL in ``simulator`` on its bundle's held-out samples; with
    ``netlist``, of the post-synthesis netlist in ``synth_dir`` (a ``synth`` step's output)."""
    from ncf.rtl_tests.sim import verify as run_verify

    key = {"rtl": entry_key(rtl_dir), "simulator": simulator, "n_stream": n_stream, "n_handshake": n_handshake,
           "close_loop": close_loop, "netlist": netlist, "synth": None if netlist is None else entry_key(synth_dir)}
    return cache.run("verify", key, lambda d: run_verify(rtl_dir, simulator=simulator, work=d / "work",
                                                         n_stream=n_stream, n_handshake=n_handshake,
                                                         close_loop=close_loop, progress=False, netlist=netlist,
                                                         synth_dir=synth_dir),
                     code=("ncf.rtl_tests.sim",),
                     label=simulator if netlist is None else f"{simulator}-{netlist}").result


def synth(cache: StageCache, rtl_dir, targets: tuple, timeout_s: float | None = None, freq_mhz: float = 200,
          seed: int = 1) -> dict:
    """yosys / nextpnr on the RTL (``hw.synth.synth``): counts, and Fmax after place and route."""
    from ncf.hw.synth import synth as run_synth

    key = {"rtl": entry_key(rtl_dir), "targets": list(targets), "timeout_s": timeout_s, "freq_mhz": freq_mhz,
           "seed": seed}
    return cache.run("synth", key, lambda d: run_synth(rtl_dir, targets=targets, out_dir=d / "synth",
                                                       freq_mhz=freq_mhz, seed=seed, progress=False,
                                                       timeout_s=timeout_s),
                     code=("ncf.hw.synth",), label="-".join(targets)).result
