"""Fixtures of the model tests: sites and a dataset of the real bzip2 trace (tests/conftest.py)."""
import pytest

from ncf.model.dataset import Dataset, DatasetConfig, build_dataset, find_sites

LEAD = 100


@pytest.fixture(scope="session")
def sites(bzip2_trace):
    return find_sites(bzip2_trace)


@pytest.fixture(scope="session")
def train_ds(bzip2_trace, sites, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "bzip2-0"
    build_dataset(bzip2_trace, sites, out, DatasetConfig(lead=LEAD), progress=False)
    return Dataset(out)
