"""Shared fixtures. The C parts are built by `make native` (under a lock, so xdist workers do not
race); tools that CI installs are required, not skipped."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def build_native() -> Path:
    """Run `make native` once per machine state (a no-op when up to date)."""
    lock = REPO / "build" / ".native.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "-C", str(REPO), "native"], check=True)
    return REPO / "build" / "native"


@pytest.fixture(scope="session")
def native() -> Path:
    if not shutil.which("qemu-x86_64"):
        pytest.fail("qemu-x86_64 is missing: apt-get install qemu-user (make setup installs it)")
    return build_native()


@pytest.fixture(scope="session")
def inputs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="session")
def bzip2_trace(native, inputs_dir, tmp_path_factory) -> Path:
    """A real, self-checked trace: 300k instructions of bzip2 input 0 after 1M skipped."""
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    out = tmp_path_factory.mktemp("traces") / "bzip2-0.ncft"
    record(prepare("bzip2", 0, inputs_dir), out, skip=10**6, count=300_000, progress=False)
    return out


@pytest.fixture(scope="session")
def sites(bzip2_trace):
    """Hard branches and delinquent loads of the bzip2 trace."""
    from ncf.model.dataset import find_sites

    return find_sites(bzip2_trace)


@pytest.fixture(scope="session")
def train_ds(bzip2_trace, sites, tmp_path_factory):
    """A real dataset (lead LEAD) of the bzip2 trace."""
    from ncf.model.dataset import Dataset, DatasetConfig, build_dataset

    from .helpers import LEAD

    out = tmp_path_factory.mktemp("ds") / "bzip2-0"
    build_dataset(bzip2_trace, sites, out, DatasetConfig(lead=LEAD), progress=False)
    return Dataset(out)


def shared_dir(tmp_path_factory) -> Path:
    """A directory shared by the xdist workers of this session (for data built once, under a lock)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root


@contextlib.contextmanager
def build_once(root: Path, name: str):
    """Yield ``root / name`` and whether it still has to be built; xdist workers wait for each other."""
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield out, not (out / "done").exists()
        if out.exists():
            (out / "done").touch()


def traced_dataset(root: Path, name: str, workload: str, inp: int, skip: int, count: int, inputs_dir,
                   sites: dict | None = None) -> Path:
    """A real trace of ``workload`` input ``inp`` and its fused dataset (lead 100), built once per
    session; ``sites`` default: this trace's own hard branches and delinquent loads."""
    from ncf.model.dataset import DatasetConfig, build_dataset, find_sites
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    with build_once(root, name) as (out, todo):
        if todo:
            out.mkdir(parents=True, exist_ok=True)
            trace = out / f"{workload}-{inp}.ncft"
            record(prepare(workload, inp, inputs_dir), trace, skip=skip, count=count, progress=False)
            vocab = None
            if sites is not None:
                vocab = sites.pop("vocab", None)
            build_dataset(trace, sites or find_sites(trace), out / "ds", DatasetConfig(lead=100), vocab=vocab,
                          progress=False)
    return out / "ds"


HW_PLAN = {"bzip2": (10**6, 3 * 10**6, 3 * 10**6), "quicksort": (0, 2 * 10**6, 2 * 10**6)}  # skip, train, test
HW_SIZES = {"test": (4, 2, 4), "small": (1, 1, 3)}     # hidden, steps, bits (small: quick to synthesize)
HW_SITES = 3      # branch sites exported for the multi-site block's tests (at most; quicksort has 2)


def hw_datasets(root: Path, w: str, inputs_dir) -> tuple[Path, Path]:
    """``w``'s hardware datasets (HW_PLAN), built once under ``root``: input 0 (training) and input 1
    (held out), the latter with the training trace's branch sites and delta vocabulary."""
    from ncf.model.dataset import Dataset

    skip, n_train, n_test = HW_PLAN[w]
    tr = traced_dataset(root, f"hw-{w}-0", w, 0, skip, n_train, inputs_dir)
    train_ds = Dataset(tr)
    sites = {"branch": [int(pc) for pc, t in zip(train_ds.site_pc, train_ds.site_task) if t == 0],
             "vocab": train_ds.meta["delta_vocabulary"]}
    return tr, traced_dataset(root, f"hw-{w}-1", w, 1, skip, n_test, inputs_dir, sites)


def hw_load_datasets(root: Path, inputs_dir) -> tuple[Path, Path]:
    """bzip2's hardware training dataset (``hw_datasets``) and a held-out dataset of input 1 with all of its
    training sites, delinquent loads included (the one of ``hw_datasets`` has its branch sites only)."""
    from ncf.model.dataset import Dataset

    tr, _ = hw_datasets(root, "bzip2", inputs_dir)
    train_ds = Dataset(tr)
    sites = {task: [int(pc) for pc, t in zip(train_ds.site_pc, train_ds.site_task) if t == k]
             for k, task in enumerate(("branch", "load"))}
    skip, _, n_test = HW_PLAN["bzip2"]
    return tr, traced_dataset(root, "hw-bzip2-1-loads", "bzip2", 1, skip, n_test, inputs_dir,
                              {**sites, "vocab": train_ds.meta["delta_vocabulary"]})


def hw_bundles(root: Path, w: str, inputs_dir, hidden: int = 4, steps: int = 2, bits: int = 4,
               max_rows: int | None = None, n_sites: int = 1) -> list[Path]:
    """The QONNX paths of ``w``'s site bundles, most held-out samples first (built once under ``root``):
    a small fused GNN (H, T, bits; no gate) trained on input 0, QAT, exported for the ``n_sites`` branch
    sites with the most samples of the held-out input 1 (all of them, or ``max_rows``)."""
    import torch
    from ncf.model.dataset import Dataset
    from ncf.model.train import TrainConfig, load_model, train
    from ncf.quant.qat import QuantConfig, finetune, quantize_model
    from ncf.quant.quantize import ladder

    name = f"hw-{w}" + (f"-h{hidden}t{steps}b{bits}" if (hidden, steps, bits) != HW_SIZES["test"] else "") \
        + (f"-s{n_sites}" if n_sites > 1 else "") + (f"-r{max_rows}" if max_rows else "")
    with build_once(root, name) as (d, todo):
        if todo:
            torch.set_num_threads(1)
            tr, te = hw_datasets(root, w, inputs_dir)
            train_ds, test_ds = Dataset(tr), Dataset(te)
            train(TrainConfig(train=str(tr), test=str(te), out=str(d / "run"), hidden=hidden, steps=steps,
                              gate=False, epochs=2, batch=256, threads=1), progress=False)
            qcfg = QuantConfig(weight_bits=bits, act_bits=bits, calib_batches=16)
            q = quantize_model(load_model(d / "run")[0], qcfg)
            finetune(q, train_ds, qcfg, max_steps=40, seed=0)
            counts = np.bincount(np.asarray(test_ds.arrays["site"]), minlength=len(test_ds.site_pc))
            order = [int(s) for s in np.argsort(-counts, kind="stable")[:n_sites] if counts[s]]
            for site in order:
                r = ladder(q, qcfg, test_ds, site, d / f"site{site}_{bits}bit.onnx", max_rows)
                assert r["fake_quant==intref"] == r["samples"] == r["intref==qonnx"]
            (d / "sites.txt").write_text("".join(f"site{s}_{bits}bit.onnx\n" for s in order))
    return [d / name for name in (d / "sites.txt").read_text().split()]


@pytest.fixture(scope="session")
def hw_bundle(native, inputs_dir, tmp_path_factory):
    """(workload, size) -> the QONNX path of a site bundle (``ncf quantize``'s hardware input): size "test":
    H=4, T=2, 4-bit; "small": H=1, T=1, 3-bit; the branch site with the most held-out samples
    (``hw_bundles``), built once per session, workload and size (the two workloads can be built by two
    xdist workers at once)."""
    root = shared_dir(tmp_path_factory)
    return lambda w, size="test": hw_bundles(root, w, inputs_dir, *HW_SIZES[size])[0]


@pytest.fixture(scope="session")
def hw_small_site_bundles(native, inputs_dir, tmp_path_factory):
    """workload -> the site bundles (``hw_bundles``) of a hardware-sized GNN: H=1, T=1, 3 bits (the demo's
    iCE40 configuration), at most 4,000 held-out samples per site: the multi-site block's tests."""
    root = shared_dir(tmp_path_factory)
    return lambda w: hw_bundles(root, w, inputs_dir, *HW_SIZES["small"], max_rows=4000, n_sites=HW_SITES)


@pytest.fixture(scope="session")
def hw_rtl(hw_bundle, tmp_path_factory):
    """(workload, size) -> the RTL directory (``ncf rtl``) of its hardware bundle, built once."""
    from ncf.hw.generate import HwConfig, build_rtl
    from ncf.quant.quantize import read_bundle

    root = shared_dir(tmp_path_factory)

    def get(w: str, size: str = "test") -> Path:
        onnx = hw_bundle(w, size)
        with build_once(root, f"rtl-{w}" if size == "test" else f"rtl-{w}-{size}") as (d, todo):
            if todo:
                d.mkdir(parents=True, exist_ok=True)
                build_rtl(read_bundle(onnx), HwConfig(cutoff=2), d / "rtl", progress=False)
        return d / "rtl"
    return get


@pytest.fixture(scope="session")
def hw_sites_rtl(hw_small_site_bundles, tmp_path_factory):
    """(workload, design) -> the multi-site RTL directory (``hw.shared.build_sites``, design "folded" or
    "shared") of its hardware-sized site bundles (``hw_small_site_bundles``), built once."""
    from ncf.hw.generate import HwConfig
    from ncf.hw.shared import build_sites
    from ncf.quant.quantize import read_bundle

    root = shared_dir(tmp_path_factory)

    def get(w: str, design: str) -> Path:
        onnxs = hw_small_site_bundles(w)
        with build_once(root, f"rtl-{design}-{w}") as (d, todo):
            if todo:
                d.mkdir(parents=True, exist_ok=True)
                build_sites([read_bundle(o) for o in onnxs], HwConfig(cutoff=2), d / "rtl", design, progress=False)
        return d / "rtl"
    return get


LUTNET_TEST = {"layers": [36, 6, 1], "fan_in": [6], "bits": 1, "train_rows": 3000, "epochs": 4}
LUTNET_HELDOUT = 1500       # held-out samples of the LUT net's bundle


def lutnet_site_dir(root: Path, train: Path, test: Path, site: int, name: str) -> Path:
    """`ncf lutnet`'s study (LUTNET_TEST) on ``site`` of the datasets, written once under ``root / name``."""
    from ncf.quant.lutnet import LutNetConfig
    from ncf.studies.lutnet import lutnet_site

    with build_once(root, name) as (d, todo):
        if todo:
            lutnet_site(train, test, d, LutNetConfig(**LUTNET_TEST), site=site, max_rows=LUTNET_HELDOUT,
                        progress=False)
    return d


@pytest.fixture(scope="session")
def hw_lutnet(native, inputs_dir, tmp_path_factory):
    """The quicksort LUT net of its first branch site, written by `ncf lutnet`'s study function once:
    {"train", "test" (dataset dirs), "site", "out" (its -o directory: bundle, rtl/, lutnet.json)}."""
    root = shared_dir(tmp_path_factory)
    train, test = hw_datasets(root, "quicksort", inputs_dir)
    return {"train": train, "test": test, "site": 0, "out": lutnet_site_dir(root, train, test, 0, "lutnet-quicksort")}
