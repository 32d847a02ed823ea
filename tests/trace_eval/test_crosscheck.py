"""The QEMU plugin against native ptrace single-stepping, on the small static kernels.

One kernel is compared over 100,000 instructions; the others over their whole (small-size) run,
which includes the write and exit syscalls. Every kernel must print the same checksum natively and
under qemu, for two seeds, and the two seeds must give different checksums.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

KERNELS = ("list_walk", "hash_table", "quicksort", "matmul", "bst")
SEEDS = (1, 2)


@pytest.fixture(scope="session")
def built(native) -> Path:
    """The plugin, the ptrace tracer and the kernels (conftest builds them with `make native`)."""
    return native


def _assert_clean(res: dict) -> None:
    assert res["first_mismatch"] is None, res["first_mismatch"]
    assert res["length_mismatch"] == 0, (res["insns_qemu"], res["insns_native"])
    assert res["pc_mismatch"] == 0
    assert res["reg_mismatch_total"] == 0, {r: c for r, c in res["reg_mismatch"].items() if c}
    assert res["addr_mismatch"] == 0
    assert res["access_without_operand"] == 0 and res["operand_without_access"] == 0
    assert res["unsupported"] == 0
    assert res["stdout_qemu"] == res["stdout_native"]
    assert res["ok"]


def test_crosscheck_100k_instructions(built, tmp_path):
    from ncf.trace_eval.crosscheck import crosscheck

    # quicksort of 1200 elements runs ~150k instructions: 100k cover the fill and most of the sort
    res = crosscheck(built / "kernels" / "quicksort", ["1", "1200"], n=100_000, workdir=tmp_path)
    _assert_clean(res)
    assert res["insns_compared"] == 100_000
    assert res["addr_checks"] > 10_000
    # the stack-offset rule is what makes rsp match; nothing else may be needed for most registers
    assert res["reg_stack_rule"]["rsp"] == 100_000
    assert res["addr_stack_rule"] > 0 and res["args_delta"] is not None


@pytest.mark.parametrize("kernel,size", [("list_walk", 300), ("hash_table", 250), ("matmul", 20), ("bst", 80)])
def test_crosscheck_whole_program(built, tmp_path, kernel, size):
    from ncf.trace_eval.crosscheck import crosscheck

    res = crosscheck(built / "kernels" / kernel, ["3", str(size)], n=100_000, workdir=tmp_path)
    _assert_clean(res)
    assert 10_000 < res["insns_compared"] < 100_000  # the whole run, start to exit
    assert res["syscalls"] == 2  # write + exit: the rcx/r11 syscall rule is exercised
    assert res["reg_syscall_rule"]["rcx"] > 0 and res["reg_syscall_rule"]["r11"] > 0


def _run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (cmd, p.returncode, p.stderr)
    return p.stdout


@pytest.mark.parametrize("kernel", KERNELS)
def test_checksum_native_equals_qemu(built, kernel):
    exe = str(built / "kernels" / kernel)
    sums = []
    for seed in SEEDS:
        native = _run([exe, str(seed)])
        qemu = _run(["qemu-x86_64", exe, str(seed)])
        assert native == qemu, (kernel, seed, native, qemu)
        line = native.strip()
        assert native.count("\n") == 1 and line.isdigit() and int(line) < 2**64, native
        sums.append(line)
    assert sums[0] != sums[1], f"{kernel}: seeds {SEEDS} give the same checksum {sums[0]}"


def test_crosscheck_detects_corruption(built, tmp_path):
    """The comparison is not vacuous: one wrong native value is found and reported."""
    import numpy as np
    from ncf.trace_eval.crosscheck import compare, crosscheck, read_native
    from ncf.trace_eval.format import REGS, TraceReader

    res = crosscheck(built / "kernels" / "matmul", ["5", "8"], n=100_000, workdir=tmp_path)
    _assert_clean(res)
    reader = lambda: TraceReader(tmp_path / "matmul.qemu.ncft", require_sidecar=False)  # noqa: E731
    pc, regs = read_native(tmp_path / "matmul.native.bin")
    m = len(pc)

    r = regs.copy()
    r[m // 2, REGS.index("rbx")] += np.uint64(1)
    bad = compare(reader(), pc, r)
    assert not bad["ok"] and bad["reg_mismatch"]["rbx"] == 1 and bad["reg_mismatch_total"] == 1
    assert bad["first_mismatch"]["insn"] == m // 2 and bad["first_mismatch"]["regs_mismatching"] == ["rbx"]

    p = pc.copy()
    p[100] += np.uint64(1)
    assert compare(reader(), p, regs)["pc_mismatch"] == 1

    r = regs.copy()  # a wrong base register makes the recomputed addresses wrong too
    r[m // 2:, REGS.index("rsp")] += np.uint64(8)
    bad = compare(reader(), pc, r)
    assert bad["reg_mismatch"]["rsp"] == m - m // 2 and bad["addr_mismatch"] > 0

    r = regs.copy()  # after the last syscall the native rcx must be the return address
    r[-1, REGS.index("rcx")] += np.uint64(1)
    assert compare(reader(), pc, r)["reg_mismatch"]["rcx"] == 1
