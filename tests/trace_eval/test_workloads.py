"""Built-in workloads: inputs are generated deterministically and differ between indices."""
import pytest
from ncf.trace_eval.workloads import PROGRAMS, WorkloadError, prepare, seed_of


@pytest.mark.parametrize("workload", PROGRAMS)
def test_inputs_are_the_same_bytes_on_every_generation(workload, tmp_path):
    a = prepare(workload, 0, tmp_path / "a")
    b = prepare(workload, 0, tmp_path / "b")
    assert a.input_files == b.input_files and a.input_files
    assert a.seed == seed_of(workload, 0)


@pytest.mark.parametrize("workload", PROGRAMS)
def test_different_inputs_have_different_contents(workload, tmp_path):
    assert prepare(workload, 0, tmp_path).input_files != prepare(workload, 1, tmp_path).input_files


def test_unknown_workload_and_input_are_clear_errors(tmp_path):
    with pytest.raises(WorkloadError, match="unknown workload 'gcc'; built-ins: bzip2"):
        prepare("gcc", 0, tmp_path)
    with pytest.raises(WorkloadError, match="input 7 does not exist"):
        prepare("xz", 7, tmp_path)
