"""The command line: counts, help texts, and clear errors (exit status 1 for bad data, 2 for bad usage;
tests/test_bad_input.py holds the table of bad inputs)."""
import argparse

import pytest

from ncf.cli import build_parser, count, main


@pytest.mark.parametrize("text,value", [("50e6", 50_000_000), ("1e9", 10**9), ("50M", 50_000_000),
                                        ("100k", 100_000), ("2G", 2 * 10**9), ("123", 123)])
def test_counts_are_read_as_people_write_them(text, value):
    assert count(text) == value


@pytest.mark.parametrize("text", ["abc", "1.5", "-3", "1e"])
def test_bad_counts_are_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError):
        count(text)


def test_every_subcommand_has_help(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert len(capsys.readouterr().out) > 200, name


def test_a_corrupt_trace_gives_a_clear_error_and_exit_status_1(tmp_path, capsys):
    bad = tmp_path / "x.ncft"
    bad.write_bytes(b"NOTATRACE" * 20)
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "x.ncft" in err and "not an ncf trace" in err


def test_baseline_all_writes_its_report_where_out_says(native, tmp_path, capsys):
    """`ncf baseline --all -o DIR` (its -o was once passed to the config as a Path and refused)."""
    assert main(["baseline", "--all", "--workloads", "quicksort", "--instructions", "20k", "--workers", "1",
                 "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "bl")]) == 0
    assert "| quicksort |" in capsys.readouterr().out and (tmp_path / "bl" / "branch_mpki.json").exists()
