"""Shared fixtures. The C parts are built by `make native` (under a lock, so xdist workers do not
race); tools that CI installs are required, not skipped."""
from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

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
