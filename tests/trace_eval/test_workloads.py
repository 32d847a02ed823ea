"""Built-in workloads: inputs are generated deterministically and differ between indices."""
import hashlib

import pytest

from ncf.trace_eval.workloads import PROGRAMS, WorkloadError, load_workload, prepare, seed_of
from tests.conftest import REPO


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


# ------------------------------------------------------------------------------------ user workloads
EXAMPLE = REPO / "examples" / "workloads" / "perl_sort.yaml"


def test_the_example_user_workload_traces_byte_identically_with_a_full_self_check(native, tmp_path):
    """examples/workloads/perl_sort.yaml (perl, a generated word list per input): each input traced twice
    gives the same bytes, the two inputs differ, every address and value checks, and the sidecar names
    the input's real index."""
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.format import TraceReader

    uw = load_workload(EXAMPLE)
    assert (uw.name, uw.env) == ("perl_sort", {"PERL_HASH_SEED": "0"})
    digests = {}
    for run in ("a", "b"):
        for i in (0, 1):
            out = tmp_path / run / f"perl_sort-{i}.ncft"
            meta = record(prepare(uw, i, tmp_path / "inputs"), out, skip=uw.skip, count=200_000, progress=False)
            s = meta["selfcheck"]
            assert s["ok"] and s["addr_match_pct"] == s["value_match_pct"] == 100.0, s
            assert s["addr_checked"] > 50_000 and s["value_checked"] > 50_000 and s["unsupported"] == 0, s
            assert meta["input"]["index"] == i and meta["workload"] == "perl_sort"
            assert TraceReader(out).n_insn == 200_000
            digests[run, i] = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digests["a", 0] == digests["b", 0] and digests["a", 1] == digests["b", 1]
    assert digests["a", 0] != digests["a", 1]


def test_a_user_workloads_inputs_come_from_its_generator_and_seed(tmp_path):
    uw = load_workload(EXAMPLE)
    a, b = prepare(uw, 0, tmp_path / "a"), prepare(uw, 0, tmp_path / "b")
    assert a.input_files == b.input_files and set(a.input_files) == {"input", "gen_words.pl", "sort_words.pl"}
    assert a.seed == seed_of("perl_sort", 0) and a.argv[1:] == ("sort_words.pl", "input")
    assert prepare(uw, 2, tmp_path / "a").input_files["input"] != a.input_files["input"]
    with pytest.raises(WorkloadError, match="perl_sort: input 5 does not exist"):
        prepare(uw, 5, tmp_path)


def test_a_program_traced_after_dashes_keeps_its_input_index_in_the_dataset(native, tmp_path, capsys):
    """`ncf trace --input 3 -- PROG` records input 3; `ncf dataset` writes it into the samples' metadata
    (it used to say input 0 for every input of a program of the user's)."""
    from ncf.cli import main
    from ncf.model.dataset import Dataset

    trace = tmp_path / "bst-3.ncft"
    assert main(["trace", "--input", "3", "--instructions", "100k", "-o", str(trace), "-q", "--",
                 str(native / "kernels" / "bst"), "4"]) == 0
    assert main(["dataset", "--trace", str(trace), "-o", str(tmp_path / "ds")]) == 0
    assert Dataset(tmp_path / "ds").meta["input"] == 3


def test_ncf_workloads_lists_a_user_workload_beside_the_built_ins(capsys):
    import json

    from ncf.cli import main

    assert main(["workloads", "--workload-file", str(EXAMPLE), "--json"]) == 0
    rows = {r["workload"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"bzip2", "quicksort", "perl_sort"} <= set(rows)
    assert rows["perl_sort"]["seeds"] == [seed_of("perl_sort", i) for i in range(5)]
    assert rows["perl_sort"]["command"] == "perl sort_words.pl {input}" and rows["bzip2"]["source"] == "built-in"
