"""Every bad argument, path or file gives one line on stderr, ``ncf <command>: error: <what and why>``,
exit status 2 (usage) or 1 (data), no traceback, and nothing new where an output was asked for.

Each row of CASES: (id, argv, setup, status, words). ``setup(tmp, f)`` makes the bad thing in
``tmp`` (``f``: the module's real trace, dataset and small hand-made traces); ``{t}`` and ``{f[..]}``
in argv name them. The command runs in ``tmp``, which must hold the same files afterwards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncf.cli import main
from ncf.io import UsageError, with_settings, write_json
from ncf.trace_eval.format import FLAG_BYTES, FLAG_REGS, FLAG_VALUES, NREG, TraceWriter, file_info, sidecar_path

READ_ONLY = "/sys/ncf-bad-input"   # sysfs: nobody, root included, may create files there
PROGRESS = re.compile(r"\r|\d+%\||it/s\]|insn/s\]")


def tiny_trace(path: Path, n: int, sidecar: bool = True) -> Path:
    """A hand-made trace of ``n`` instructions `xor ebp, ebp` (no memory access: nothing to self-check)."""
    with TraceWriter(path, FLAG_REGS | FLAG_VALUES | FLAG_BYTES) as w:
        w.define(0, 0x401000, b"\x31\xed")
        if n:
            w.add(np.zeros(n, np.uint32), np.zeros(n, np.uint16), np.zeros(0, np.uint64), np.zeros(0, np.uint8),
                  regs=np.zeros((n, NREG), np.uint64), mval=np.zeros(0, np.uint64))
    if sidecar:
        write_json(sidecar_path(path), {"format_version": 1, "file": file_info(path)})
    return path


@pytest.fixture(scope="module")
def f(native, inputs_dir, tmp_path_factory) -> dict:
    """A real trace (hash_table, 50k instructions), its dataset, and traces of 0 and 1 instructions."""
    from ncf.model.dataset import DatasetConfig, build_dataset, find_sites
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    d = tmp_path_factory.mktemp("bad-input")
    trace = d / "ht.ncft"
    record(prepare("hash_table", 0, inputs_dir), trace, count=50_000, progress=False)
    build_dataset(trace, find_sites(trace), d / "ds", DatasetConfig(), progress=False)
    return {"trace": trace, "ds": d / "ds", "empty": tiny_trace(d / "empty.ncft", 0),
            "one": tiny_trace(d / "one.ncft", 1), "inputs": inputs_dir}


# --------------------------------------------------------------------------------------- setups
def nothing(t, f):
    pass


def a_dir(t, f):
    (t / "adir").mkdir()


def a_file(t, f):
    (t / "afile").write_text("not a directory\n")


def copy_trace(t, f, name="x.ncft") -> Path:
    shutil.copy(f["trace"], t / name)
    shutil.copy(sidecar_path(f["trace"]), sidecar_path(t / name))
    return t / name


def sidecar_is_dir(t, f):
    shutil.copy(f["trace"], t / "x.ncft")
    sidecar_path(t / "x.ncft").mkdir()


def edit_sidecar(change):
    def setup(t, f):
        sc = sidecar_path(copy_trace(t, f))
        meta = json.loads(sc.read_text())
        change(meta)
        sc.write_text(json.dumps(meta))
    return setup


def configs(t, f):
    (t / "bad.yaml").write_text("train: [unclosed\n")
    (t / "list.yaml").write_text("- 1\n- 2\n")
    (t / "typed.yaml").write_text(f"train: {f['ds']}\nepochs: abc\n")
    (t / "ok.yaml").write_text(f"train: {f['ds']}\ntest: {f['ds']}\nout: {t}/run\nepochs: 1\nhidden: 4\n")
    (t / "nods.yaml").write_text(f"train: {t}/nods\ntest: {f['ds']}\nout: {t}/run\n")
    (t / "afile").write_text("not a directory\n")
    (t / "out_is_file.yaml").write_text(f"train: {f['ds']}\ntest: {f['ds']}\nout: {t}/afile\nepochs: 1\n")
    (t / "hw.yaml").write_text("cutof: 2\n")


def workload_files(t, f):
    (t / "bad.yaml").write_text("name: w\nprogram: [unclosed\n")
    (t / "list.yaml").write_text("- perl\n")
    (t / "noprog.yaml").write_text("name: w\nargs: [x]\n")
    (t / "typo.yaml").write_text("name: w\nprogram: perl\narg: [x]\n")
    (t / "missing.yaml").write_text("name: w\nprogram: no-such-program-ncf\n")
    (t / "builtin.yaml").write_text("name: bzip2\nprogram: perl\n")
    (t / "placeholder.yaml").write_text("name: w\nprogram: perl\nargs: ['{inptu}']\n")
    (t / "nofile.yaml").write_text("name: w\nprogram: perl\nfiles: [nope.pl]\n")
    (t / "zero.yaml").write_text("name: w\nprogram: perl\ninstructions: 0\n")


TRACE = ["trace", "--workload", "quicksort", "--instructions", "10k", "--inputs-dir", "{f[inputs]}", "-q"]
DATASET = ["dataset", "--trace", "{f[trace]}"]

EXPERIMENT = ["experiment", "--cache", "{t}/c", "--out", "{t}/o", "--workload-file"]
CASES = [
    # a user workload file that cannot be used: named with what is wrong, before any work
    ("workload file bad YAML", ["workloads", "--workload-file", "{t}/bad.yaml"], workload_files, 2,
     ["bad.yaml", "not valid YAML", "line 3"]),
    ("workload file not a mapping", EXPERIMENT + ["{t}/list.yaml"], workload_files, 2, ["list.yaml", "a mapping"]),
    ("workload file without program", EXPERIMENT + ["{t}/noprog.yaml"], workload_files, 2,
     ["noprog.yaml", "missing program"]),
    ("workload file unknown key", ["trace", "--workload-file", "{t}/typo.yaml"], workload_files, 2,
     ["typo.yaml", "unknown keys arg", "keys: name, program, args"]),
    ("workload file program missing", EXPERIMENT + ["{t}/missing.yaml"], workload_files, 2,
     ["missing.yaml", "'no-such-program-ncf' not found"]),
    ("workload file named as a built-in", ["workloads", "--workload-file", "{t}/builtin.yaml"], workload_files, 2,
     ["builtin.yaml", "'bzip2'", "built-in"]),
    ("workload file bad placeholder", ["workloads", "--workload-file", "{t}/placeholder.yaml"], workload_files, 2,
     ["placeholder.yaml", "unknown placeholder 'inptu'"]),
    ("workload file missing file", ["workloads", "--workload-file", "{t}/nofile.yaml"], workload_files, 2,
     ["nofile.yaml", "'nope.pl' is not a file"]),
    ("workload file 0 instructions", ["workloads", "--workload-file", "{t}/zero.yaml"], workload_files, 2,
     ["zero.yaml", "instructions is a whole number >= 1, not 0"]),
    ("workload file missing", ["workloads", "--workload-file", "{t}/nope.yaml"], nothing, 2,
     ["nope.yaml", "no such file"]),
    # a negative lead puts the snapshot after the predicted instruction: refused where the lead enters
    ("dataset lead < 0", DATASET + ["-o", "{t}/ds", "--lead", "-5"], nothing, 2, ["lead -5", ">= 0"]),
    ("dataset prefetch distance < 0", DATASET + ["-o", "{t}/ds", "--prefetch-distance", "-1"], nothing, 2,
     ["prefetch_distance -1", "k >= 1"]),
    ("experiment lead < 0", ["experiment", "--lead", "-3", "--workloads", "quicksort", "--instructions", "10k",
                             "--cache", "{t}/c", "--out", "{t}/o"], nothing, 2,
     ["lead -3", ">= 0"]),
    ("experiment lead sweep < 0", ["experiment", "--leads", "0", "-3", "--workloads", "quicksort",
                                   "--instructions", "10k", "--cache", "{t}/c",
                                   "--out", "{t}/o"], nothing, 2, ["lead -3"]),
    ("classify lead < 0", ["classify", "--lead", "-1", "--cache", "{t}/c", "--out", "{t}/o", "-q"], nothing, 2,
     ["lead -1"]),
    # counts that make no sense
    ("dataset max-per-site < 0", DATASET + ["-o", "{t}/ds", "--max-per-site", "-1"], nothing, 2,
     ["max_per_site -1"]),
    ("dataset since < 0", DATASET + ["-o", "{t}/ds", "--since", "-1"], nothing, 2, ["since -1", ">= 0"]),
    ("dataset since past the trace", DATASET + ["-o", "{t}/ds", "--since", "999999999999"], nothing, 1,
     ["no samples", "at or after instruction 999999999999"]),
    ("dataset max-branches < 0", DATASET + ["-o", "{t}/ds", "--max-branches", "-1"], nothing, 2, ["-1 branches"]),
    ("dataset no sites", DATASET + ["-o", "{t}/ds", "--max-branches", "0", "--max-loads", "0"], nothing, 2,
     ["0 branches, 0 loads"]),
    ("inspect -n < 0", ["inspect", "-n", "-5", "{f[trace]}"], nothing, 2, ["-5", ">= 0"]),
    ("trace level 99", TRACE + ["--level", "99", "-o", "{t}/x.ncft"], nothing, 2, ["--level", "'99'", "zstd level"]),
    ("trace 0 instructions", ["trace", "--workload", "quicksort", "--instructions", "0", "-o", "{t}/x.ncft"],
     nothing, 2, ["--instructions", "at least 1"]),
    ("trace nothing to run", ["trace", "-o", "{t}/x.ncft"], nothing, 2, ["--workload"]),
    ("trace --stdin missing", ["trace", "--stdin", "{t}/nope.txt", "-o", "{t}/x.ncft", "--", "/bin/true"], nothing, 2,
     ["--stdin", "nope.txt", "not a readable file"]),
    ("trace --stdin a directory", ["trace", "--stdin", "{t}/adir", "-o", "{t}/x.ncft", "--", "/bin/true"], a_dir, 2,
     ["--stdin", "adir", "not a readable file"]),
    ("trace --env not K=V", ["trace", "--env", "NOVALUE", "-o", "{t}/x.ncft", "--", "/bin/true"], nothing, 2,
     ["--env", "not K=V", "NOVALUE"]),
    ("trace --env QEMU_", ["trace", "--env", "QEMU_STRACE=1", "-o", "{t}/x.ncft", "--", "/bin/true"], nothing, 2,
     ["QEMU_STRACE", "emulator"]),
    ("trace --env PWD", ["trace", "--env", "PWD=/x", "-o", "{t}/x.ncft", "--", "/bin/true"], nothing, 2,
     ["PWD", "working directory"]),
    ("trace --stdin with --workload", TRACE + ["--stdin", "{t}/afile", "-o", "{t}/x.ncft"], a_file, 2,
     ["--stdin", "--env", "fixed by its seed"]),
    ("champsim limit 0", ["champsim", "export", "{f[trace]}", "{t}/x.champsim", "--limit", "0"], nothing, 2,
     ["limit 0"]),
    ("quantize bits 99", ["quantize", "--run", "{t}/run", "--train", "{f[ds]}", "--test", "{f[ds]}", "--bits", "99",
                          "-o", "{t}/q"], nothing, 2, ["bits", "2..8", "99"]),
    ("quantize steps < 0", ["quantize", "--run", "{t}/run", "--train", "{f[ds]}", "--test", "{f[ds]}", "--steps",
                            "-1", "-o", "{t}/q"], nothing, 2, ["steps -1"]),
    ("hw-sites one bundle", ["hw-sites", "--qonnx", "{t}/x.onnx", "-o", "{t}/o"], nothing, 2,
     ["at least 2 site bundles", "not 1"]),
    ("hw-sites unknown target", ["hw-sites", "--qonnx", "{t}/x.onnx", "{t}/y.onnx", "--targets", "vivado", "-o",
                                 "{t}/o"], nothing, 2, ["targets ['vivado']"]),
    ("rtl clock < 0", ["rtl", "--qonnx", "{t}/x.onnx", "--clock-ns", "-1", "-o", "{t}/rtl"], nothing, 2,
     ["clock_ns -1"]),
    ("rtl shared one bundle", ["rtl", "--qonnx", "{t}/x.onnx", "--design", "shared", "-o", "{t}/rtl"], nothing, 2,
     ["--design shared", "at least 2 --qonnx"]),
    ("rtl unknown design", ["rtl", "--qonnx", "{t}/x.onnx", "{t}/y.onnx", "--design", "rom", "-o", "{t}/rtl"],
     nothing, 2, ["--design", "'rom'"]),
    ("hw-sweep point not H,T,BITS", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--points", "a,b,c",
                                     "-o", "{t}/hs"], nothing, 2, ["--points", "'a,b,c'", "H,T,BITS"]),
    ("hw-sweep point out of range", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--points", "0,1,3",
                                     "-o", "{t}/hs"], nothing, 2, ["point [0, 1, 3]", "hidden 0"]),
    ("hw-sweep cutoff 0", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--points", "1,1,3,0", "-o",
                           "{t}/hs"], nothing, 2, ["point [1, 1, 3, 0.0]", "cutoff must be > 0"]),
    ("hw-sweep unknown pnr", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--pnr", "vivado", "-o",
                              "{t}/hs"], nothing, 2, ["pnr 'vivado'", "ecp5, ice40"]),
    ("hw-sweep LUT-net point not LAYERS/FAN_IN/BITS", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}",
                                                       "--lutnets", "36-6-1/6", "-o", "{t}/hs"], nothing, 2,
     ["LUT-net point '36-6-1/6'", "LAYERS/FAN_IN/BITS"]),
    ("hw-sweep LUT-net point out of range", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--lutnets",
                                             "36-6-2/6/1", "-o", "{t}/hs"], nothing, 2,
     ["LUT-net point '36-6-2/6/1'", "the last 1"]),
    ("hw-sweep samples 0", ["hw-sweep", "--train", "{f[ds]}", "--test", "{f[ds]}", "--max-rows", "0", "-o",
                            "{t}/hs"], nothing, 2, ["max_rows 0"]),
    ("experiment train-cap 0", ["experiment", "--train-cap", "0", "--cache", "{t}/c",
                                "--out", "{t}/o"], nothing, 2, ["train_cap 0"]),
    ("hls csim-samples 0", ["hls", "--qonnx", "{t}/x.onnx", "--csim-samples", "0", "-o", "{t}/hls"], nothing, 2,
     ["csim_samples 0"]),
    ("experiment unknown model", ["experiment", "--models", "bogus", "--cache", "{t}/c",
                                  "--out", "{t}/o"], nothing, 2, ["models", "'bogus'", "fused"]),
    ("experiment unknown drop", ["experiment", "--drop", "tags", "--cache", "{t}/c",
                                 "--out", "{t}/o"], nothing, 2, ["drop ['tags']", "among frontend, snapshot, tage"]),
    ("experiment unknown ablation", ["experiment", "--ablations", "frontend", "memry", "--cache", "{t}/c",
                                     "--out", "{t}/o"], nothing, 2, ["drop ['memry']", "among frontend"]),
    # missing inputs, inputs of the wrong kind
    ("inspect missing trace", ["inspect", "{t}/nope.ncft"], nothing, 2, ["nope.ncft", "no such trace file"]),
    ("dataset trace is a directory", ["dataset", "--trace", "{t}/adir", "-o", "{t}/ds"], a_dir, 2,
     ["adir", "is a directory"]),
    ("champsim import missing", ["champsim", "import", "{t}/nope.xz", "{t}/x.ncft"], nothing, 2,
     ["nope.xz", "no such ChampSim trace"]),
    ("dataset vocab-from not a dataset", DATASET + ["-o", "{t}/ds", "--vocab-from", "{t}/adir"], a_dir, 2,
     ["adir", "not a dataset"]),
    ("train config missing", ["train", "--config", "{t}/missing.yaml"], nothing, 2,
     ["missing.yaml", "no such config file"]),
    ("train config malformed", ["train", "--config", "{t}/bad.yaml"], configs, 2, ["bad.yaml", "not valid YAML"]),
    ("train config not a mapping", ["train", "--config", "{t}/list.yaml"], configs, 2, ["list.yaml", "mapping"]),
    ("train config value not an int", ["train", "--config", "{t}/typed.yaml"], configs, 2,
     ["typed.yaml", "epochs", "'abc'", "not an integer"]),
    ("train --set not an int", ["train", "--config", "{t}/ok.yaml", "--set", "epochs=abc"], configs, 2,
     ["--set epochs", "'abc'", "not an integer"]),
    ("train --set not a bool", ["train", "--config", "{t}/ok.yaml", "--set", "gate=maybe"], configs, 2,
     ["--set gate", "'maybe'", "not a boolean"]),
    ("train --set unknown key", ["train", "--config", "{t}/ok.yaml", "--set", "epochz=1"], configs, 2,
     ["epochz", "unknown setting", "epochs"]),
    ("train --set invalid model", ["train", "--config", "{t}/ok.yaml", "--set", "model=bogus"], configs, 2,
     ["model", "'bogus'"]),
    ("train --set epochs 0", ["train", "--config", "{t}/ok.yaml", "--set", "epochs=0"], configs, 2, ["epochs 0"]),
    ("train dataset missing", ["train", "--config", "{t}/nods.yaml"], configs, 2, ["nods", "not a dataset"]),
    ("quantize run missing", ["quantize", "--run", "{t}/adir", "--train", "{f[ds]}", "--test", "{f[ds]}", "-o",
                              "{t}/q"], a_dir, 2, ["adir", "not a trained run", "checkpoint.pt"]),
    ("hls qonnx missing", ["hls", "--qonnx", "{t}/nope.onnx", "-o", "{t}/hls"], nothing, 2,
     ["nope_clean.onnx", "missing"]),
    ("rtl config unknown key", ["rtl", "--qonnx", "{t}/nope.onnx", "--config", "{t}/hw.yaml", "-o", "{t}/rtl"],
     configs, 2, ["hw.yaml", "cutof", "known"]),
    ("verify rtl missing", ["verify", "{t}/adir", "-q"], a_dir, 2, ["manifest.json", "not an RTL directory"]),
    ("synth rtl missing", ["synth", "{t}/nope"], nothing, 2, ["manifest.json", "not an RTL directory"]),
    ("bench verify without --rtl", ["bench", "verify", "-o", "{t}/b"], nothing, 2, ["--rtl"]),
    ("bench train epochs 0", ["bench", "train", "--epochs", "0", "-o", "{t}/b"], nothing, 2, ["--epochs", "'0'"]),
    ("bench train dataset missing", ["bench", "train", "--dataset", "{t}/nods", "-o", "{t}/b"], nothing, 2,
     ["nods", "not a dataset"]),
    # bad data: the sidecar, empty traces
    ("inspect sidecar is a directory", ["inspect", "{t}/x.ncft"], sidecar_is_dir, 1,
     ["x.ncft.json", "directory"]),
    ("inspect sidecar file not an object", ["inspect", "{t}/x.ncft"],
     edit_sidecar(lambda m: m.update(file=[1])), 1, ["x.ncft.json", "'file'", "not a JSON object"]),
    ("dataset sidecar lacks input", ["dataset", "--trace", "{t}/x.ncft", "-o", "{t}/ds"],
     edit_sidecar(lambda m: m.pop("input")), 1, ["x.ncft.json", "lacks 'input'"]),
    ("baseline empty trace", ["baseline", "--trace", "{f[empty]}", "-o", "{t}/bl"], nothing, 1,
     ["empty.ncft", "no instructions"]),
    ("check empty trace", ["check", "{f[empty]}"], nothing, 1, ["empty.ncft", "no instructions"]),
    ("dataset empty trace", ["dataset", "--trace", "{f[empty]}", "-o", "{t}/ds"], nothing, 1,
     ["empty.ncft", "no instructions"]),
    ("champsim export empty trace", ["champsim", "export", "{f[empty]}", "{t}/x.champsim"], nothing, 1,
     ["empty.ncft", "no instructions"]),
    ("check nothing to check", ["check", "{f[one]}"], nothing, 1, ["one.ncft", "no addresses to check"]),
    # outputs that cannot be written
    ("trace -o a directory", TRACE + ["-o", "{t}/adir"], a_dir, 2, ["adir", "is a directory"]),
    ("trace -o under a file", TRACE + ["-o", "{t}/afile/x.ncft"], a_file, 2, ["afile", "not a directory"]),
    ("trace -o read-only", TRACE + ["-o", READ_ONLY + "/x.ncft"], nothing, 2, [READ_ONLY, "cannot write"]),
    ("baseline -o a file", ["baseline", "--trace", "{f[trace]}", "-o", "{t}/afile"], a_file, 2,
     ["afile", "is a file"]),
    ("baseline -o read-only", ["baseline", "--trace", "{f[trace]}", "-o", READ_ONLY], nothing, 2,
     [READ_ONLY, "cannot write"]),
    ("champsim export to a directory", ["champsim", "export", "{f[trace]}", "{t}/adir"], a_dir, 2,
     ["adir", "is a directory"]),
    ("champsim export read-only", ["champsim", "export", "{f[trace]}", READ_ONLY + "/x.champsim"], nothing, 2,
     [READ_ONLY, "cannot write"]),
    ("dataset -o a file", DATASET + ["-o", "{t}/afile"], a_file, 2, ["afile", "is a file"]),
    ("dataset -o read-only", DATASET + ["-o", READ_ONLY + "/ds"], nothing, 2, [READ_ONLY, "cannot write"]),
    ("train out is a file", ["train", "--config", "{t}/out_is_file.yaml"], configs, 2, ["afile", "is a file"]),
    ("demo --out a file", ["demo", "--out", "{t}/afile"], a_file, 2, ["afile", "is a file"]),
]


def tree(root: Path) -> dict:
    """Every path under ``root`` (hidden ones too) with its size: what a failed command must not change."""
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1 for p in root.rglob("*")}


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:   # argparse's errors
        return e.code


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]


def check(status: int, err: str, argv: list[str], want_status: int, words: list[str]) -> None:
    assert status == want_status, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ncf {argv[0]}: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(case, f, tmp_path, capsys, monkeypatch):
    _, argv, setup, want_status, words = case
    monkeypatch.chdir(tmp_path)    # default outputs (traces/, work/, reports/) would land here too
    setup(tmp_path, f)
    argv = [a.format(t=tmp_path, f=f) for a in argv]
    before = tree(tmp_path)
    status = run(argv)
    out, err = capsys.readouterr()
    check(status, err, argv, want_status, [w.format(t=tmp_path, f=f) for w in words])
    assert tree(tmp_path) == before
    assert not Path(READ_ONLY).exists()


SUBPROCESS = ["dataset lead < 0", "trace -o a directory", "train --set not a bool", "inspect sidecar is a directory",
              "check nothing to check"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_the_installed_command_prints_no_traceback(name, f, tmp_path):
    _, argv, setup, want_status, words = next(c for c in CASES if c[0] == name)
    setup(tmp_path, f)
    argv = [a.format(t=tmp_path, f=f) for a in argv]
    before = tree(tmp_path)
    ncf = Path(sys.executable).parent / "ncf"
    p = subprocess.run([str(ncf), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    check(p.returncode, p.stderr, argv, want_status, words)
    assert tree(tmp_path) == before


def test_a_window_whose_sites_have_no_samples_is_a_clear_error(native, inputs_dir, tmp_path, capsys):
    """list_walk's first 1.2M instructions: its hard branches and delinquent load run once each, in the
    first 100 instructions (the set-up), so no site has an instance at lead 100."""
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    trace = tmp_path / "lw.ncft"
    record(prepare("list_walk", 0, inputs_dir), trace, count=1_200_000, progress=False)
    before = tree(tmp_path)
    assert main(["dataset", "--trace", str(trace), "-o", str(tmp_path / "ds")]) == 1
    check(1, capsys.readouterr().err, ["dataset"], 1, ["lw.ncft", "no samples", "100 or more instructions"])
    assert tree(tmp_path) == before


def test_a_site_without_samples_is_skipped_and_reported(native, inputs_dir, tmp_path, capsys):
    """bst: its hard branch has thousands of instances, its two delinquent loads one each (set-up)."""
    from ncf.model.dataset import Dataset
    from ncf.trace_eval.capture import record
    from ncf.trace_eval.workloads import prepare

    trace = tmp_path / "bst.ncft"
    record(prepare("bst", 0, inputs_dir), trace, count=100_000, progress=False)
    assert main(["dataset", "--trace", str(trace), "-o", str(tmp_path / "ds")]) == 0
    assert "skipped 2 sites without samples" in capsys.readouterr().out
    ds = Dataset(tmp_path / "ds")
    skipped = ds.meta["sites_skipped"]
    assert [s["task"] for s in skipped] == ["load", "load"] and all("no instance" in s["why"] for s in skipped)
    assert len(ds.site_pc) == len(ds.meta["sites"]) == 1 and set(np.asarray(ds.arrays["site"])) == {0}


def test_settings_are_parsed_as_their_field_types_then_validated():
    from ncf.studies.hw_sweep import HwSweepConfig
    from ncf.model.train import TrainConfig

    cfg = with_settings(TrainConfig(), ["gate=False", "lr=1e-3", "epochs=3", "device=cpu"])
    assert (cfg.gate, cfg.lr, cfg.epochs, cfg.device) == (False, 1e-3, 3, "cpu")
    assert with_settings(cfg, ["gate=yes"]).gate is True and with_settings(cfg, ["gate=0"]).gate is False
    assert with_settings(HwSweepConfig(site=3), ["site=none"]).site is None
    with pytest.raises(UsageError, match="hidden 0"):
        with_settings(cfg, ["hidden=0"])
    from ncf.studies.experiment import ExperimentConfig   # lists: YAML, then the field's own checks

    exp = with_settings(ExperimentConfig(), ["leads=[0, 10]", "ablations=[]"])
    assert (exp.leads, exp.ablations) == ([0, 10], [])
    for bad, says in (("leads=x", "not a list"), ("leads=[a]", "lead 'a'"), ("leads=[-1]", "lead -1"),
                      ("load_share=0", "load_share 0"), ("load_share=1.5", "load_share 1.5")):
        with pytest.raises(UsageError, match=says):
            with_settings(exp, [bad])


def test_a_build_does_not_replace_a_directory_it_did_not_make(tmp_path):
    from ncf.hw.generate import HwConfig, build_rtl

    (tmp_path / "mine.txt").write_text("keep me\n")
    with pytest.raises(UsageError, match="not an earlier build"):
        build_rtl({}, HwConfig(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_inspect_allow_truncated_reads_a_cut_trace_beside_its_sidecar(f, tmp_path, capsys):
    """The truncation error recommends --allow-truncated; the sidecar (written for the whole file) is kept."""
    cut = copy_trace(tmp_path, f)
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    assert main(["inspect", str(cut)]) == 1
    assert "--allow-truncated" in capsys.readouterr().err
    assert main(["inspect", "--allow-truncated", "-n", "2", str(cut)]) == 0
    out = capsys.readouterr().out
    assert "TRUNCATED" in out and "hash_table input 0" in out


def test_a_self_check_with_nothing_checked_says_so_instead_of_nan():
    from ncf.trace_eval.selfcheck import CheckResult, summary_text

    d = CheckResult().as_dict()
    assert d["addr_match_pct"] is None and d["value_match_pct"] is None
    assert summary_text(d) == "no addresses to check, no values to check"
    assert summary_text({**d, "addr_checked": 4, "addr_match_pct": 100.0}) == \
        "addresses 100.0000% of 4, no values to check"
