"""Cross-check of the QEMU tracing plugin against a native ptrace single-stepper.

The plugin reads guest registers through undocumented QEMU internals, so its output is checked
against an independent source: the same static ``-nostdlib`` kernel (trace_eval/kernels) run
natively under ``ptrace_trace`` (trace_eval/native/ptrace_trace.c), which records rip, the 16 GPRs
and fs/gs base before every instruction. :func:`crosscheck` runs both for ``n`` instructions and
compares them instruction by instruction:

(a) PCs: identical for every instruction (a static binary with its own ``_start`` executes the same
    instructions under QEMU and natively).
(b) Registers: equal, except for stack-derived values. The stack sits elsewhere in the two runs, so
    a value matches if ``q - q_rsp0 == n - n_rsp0`` (rsp0: each run's rsp at the first instruction).
    The argument strings (``argv[i]`` text, which the kernels parse) are stack-derived too, but the
    kernel and QEMU lay out auxv/env differently, so their distance from rsp0 differs by a second
    constant: ``args_delta = q_argv1 - n_argv1``, taken once from the first load of the ``argv[1]``
    slot (``[rsp0 + 16]``; its value is the destination register before the next instruction).
    A value that differs by exactly that constant matches by the "args" rule.
    ``syscall``: the CPU puts the return rip in rcx and rflags in r11; QEMU 7.2 linux-user does
    neither (measured: both keep their pre-syscall values). So while rcx/r11 still hold what a
    syscall left (unchanged in both runs since), each must satisfy exactly this: QEMU's value equals
    its value before the syscall, the native rcx equals the next pc, and the native r11 is an rflags
    value: bits 0x202 set and no bit outside SYSCALL_R11_VARIABLE (status flags, which the plugin
    does not record, TF set by single-stepping, RF) besides them. Counted as ``reg_syscall_rule``.
(c) Memory addresses: for every instruction, the effective addresses recomputed from the *native*
    registers by :class:`ncf.trace_eval.selfcheck.Decoder` must be among the addresses the plugin
    recorded for it, directly or translated by the stack (or argument-string) offset. Conversely an
    instruction without a memory operand must have no recorded access, and one with a checked memory
    operand must have at least one.

Nothing is skipped wholesale: every register of every compared instruction is counted, and the
result says how many values needed which rule.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .format import MEM, NREG, REGS, TraceReader, insn_dtype
from .native_lib import NATIVE
from . import x86
from .selfcheck import KIND_CHECKED, KIND_NO_ACCESS, KIND_NONE, Decoder

NATIVE_REC = 1 + NREG  # ptrace_trace record: rip + 16 GPRs + fs_base + gs_base, u64 each

RSP = REGS.index("rsp")
R11 = REGS.index("r11")
# After a native `syscall`, r11 = rflags. Fixed bits: 0x2 (reserved, always 1) and IF (0x200).
# Variable bits: the status flags CF PF AF ZF SF OF (0x8D5, not recorded by the plugin, so nothing
# to compare them with), TF (0x100, set while PTRACE_SINGLESTEP-ping) and RF (0x10000). Any other
# bit set (DF, IOPL, AC, ...) is a mismatch.
SYSCALL_R11_FIXED = 0x202
SYSCALL_R11_VARIABLE = 0x8D5 | 0x100 | 0x10000
SYSCALL = b"\x0f\x05"


class CrossCheckError(RuntimeError):
    """A tracer or the kernel could not be run; the message says which and why."""


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except FileNotFoundError as e:
        raise CrossCheckError(f"{what}: cannot run {cmd[0]}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise CrossCheckError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if p.returncode != 0:
        raise CrossCheckError(f"{what}: exit status {p.returncode}: {' '.join(cmd)}\n"
                              f"{p.stderr.decode(errors='replace').strip()}")
    return p


def run_qemu(kernel: str | os.PathLike, args: list[str], n: int, out: Path, plugin: Path,
             qemu: str = "qemu-x86_64", timeout: float = 600) -> bytes:
    """Trace the first ``n`` instructions of ``kernel args`` with the plugin; returns its stdout."""
    cmd = [qemu, "-singlestep", "-plugin", f"{plugin},out={out},count={n}", str(Path(kernel).resolve()),
           *map(str, args)]
    return _run(cmd, "qemu + plugin", timeout).stdout


def run_ptrace(kernel: str | os.PathLike, args: list[str], n: int, out: Path, tracer: Path,
               timeout: float = 600) -> bytes:
    """Trace the first ``n`` instructions of ``kernel args`` natively; returns its stdout."""
    cmd = [str(tracer), str(out), str(n), str(Path(kernel).resolve()), *map(str, args)]
    return _run(cmd, "ptrace_trace", timeout).stdout


def read_native(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(pcs (m,), regs (m, NREG)) from a ptrace_trace output file."""
    raw = np.fromfile(path, "<u8")
    if len(raw) % NATIVE_REC:
        raise CrossCheckError(f"{path}: {len(raw) * 8} bytes is not a whole number of "
                              f"{NATIVE_REC * 8}-byte records")
    raw = raw.reshape(-1, NATIVE_REC)
    return raw[:, 0].copy(), raw[:, 1:].copy()


def _load(reader: TraceReader, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` instructions of the trace and their memory records, as whole arrays."""
    insns, mems, have = [], [], 0
    for ch in reader.chunks():
        insns.append(ch.insn)
        mems.append(ch.mem)
        have += len(ch.insn)
        if have >= limit:
            break
    if not insns:
        return np.zeros(0, insn_dtype(reader.flags)), np.zeros(0, MEM)
    ins, mem = np.concatenate(insns)[:limit], np.concatenate(mems)
    return ins, mem[mem["insn"] < len(ins)]


def _syscall_segments(after: np.ndarray, q: np.ndarray, nr: np.ndarray) -> np.ndarray:
    """For each row, the row just after the syscall whose effect the register still holds (the
    register unchanged in both runs since then), or -1."""
    m = len(after)
    rows = np.arange(m)
    chg = np.ones(m, bool)
    chg[1:] = (q[1:] != q[:-1]) | (nr[1:] != nr[:-1])
    start_row = np.maximum.accumulate(np.where(after | chg, rows, 0))
    return np.where(after[start_row], start_row, -1)


def compare(reader: TraceReader, n_pc: np.ndarray, n_regs: np.ndarray) -> dict:
    """Compare a plugin trace with a native register trace (see the module docstring)."""
    M = np.uint64
    res = {"insns_qemu": reader.n_insn, "insns_native": int(len(n_pc)), "insns_compared": 0,
           "pc_mismatch": 0,
           "reg_mismatch": {r: 0 for r in REGS}, "reg_equal": {r: 0 for r in REGS},
           "reg_stack_rule": {r: 0 for r in REGS}, "reg_args_rule": {r: 0 for r in REGS},
           "reg_syscall_rule": {"rcx": 0, "r11": 0}, "syscalls": 0,
           "addr_checks": 0, "addr_mismatch": 0, "addr_equal": 0, "addr_stack_rule": 0,
           "addr_args_rule": 0, "insns_with_mem_operand": 0, "mem_records": 0,
           "access_without_operand": 0, "operand_without_access": 0, "unsupported": 0,
           "stack_delta": None, "args_delta": None, "first_mismatch": None}
    ins, mem = _load(reader, len(n_pc))
    m = len(ins)
    res["insns_compared"] = m
    res["length_mismatch"] = int(res["insns_qemu"] != res["insns_native"])
    if m == 0:
        res["ok"] = False
        return res
    dec = Decoder()
    sid = ins["sid"].astype(np.int64)
    dec.ensure(sid, reader.static)
    q, nr = ins["regs"].astype(M), n_regs[:m].astype(M)
    qpc, npc = ins["pc"].astype(M), n_pc[:m].astype(M)
    local = mem["insn"].astype(np.int64)  # global index = row: the trace starts at instruction 0
    MASK = 2**64 - 1

    q_rsp0, n_rsp0 = int(q[0, RSP]), int(n_regs[0, RSP])
    sd = M((q_rsp0 - n_rsp0) & MASK)
    res["stack_delta"] = q_rsp0 - n_rsp0
    res["rsp0"] = {"qemu": hex(q_rsp0), "native": hex(n_rsp0)}
    # the argument-string offset, from the first load of argv[1] (at rsp0 + 16)
    ad = None
    hit = np.nonzero((mem["addr"] == M(q_rsp0 + 16)) & ~mem["store"] & (mem["size"] == 8))[0]
    for j in hit:
        r = int(local[j])
        if dec.vkind[sid[r]] == 1 and r + 1 < m:  # mov reg <- [argv+8]: value in the next row
            q_arg1, n_arg1 = int(mem["val"][j]), int(nr[r + 1, dec.vreg[sid[r]]])
            ad = M((q_arg1 - n_arg1) & MASK)
            res["args_delta"] = q_arg1 - n_arg1
            res["argv1"] = {"qemu": hex(q_arg1), "native": hex(n_arg1)}
            break
    if ad is None:  # the program never read argv[1]: the rule is the stack rule
        ad = sd

    # (a) PCs
    pc_ok = qpc == npc
    res["pc_mismatch"] = int((~pc_ok).sum())

    # (b) registers
    diff = q - nr
    eq = q == nr
    st = ~eq & (diff == sd)
    ar = ~eq & ~st & (diff == ad)
    ok = eq | st | ar
    # QEMU 7.2 linux-user does not write rcx/r11 on `syscall`: they keep their values. The CPU
    # (native) puts the return rip in rcx and rflags in r11. While a register still holds that
    # value, require exactly this: QEMU's value unchanged across the syscall, the native rcx equal
    # to the next pc, the native r11 a plausible rflags (only status flags, TF, RF may vary).
    code = reader.static.bytes[sid, :2]
    is_sys = (code[:, 0] == SYSCALL[0]) & (code[:, 1] == SYSCALL[1]) & (reader.static.len[sid] == 2)
    res["syscalls"] = int(is_sys.sum())
    after = np.zeros(m, bool)
    after[1:] = is_sys[:-1]
    for reg in ("rcx", "r11"):
        k = REGS.index(reg)
        seg = _syscall_segments(after, q[:, k], nr[:, k])
        s = np.maximum(seg, 1)
        q_kept = q[s, k] == q[s - 1, k]
        if reg == "rcx":
            n_ok = nr[s, k] == npc[s]
        else:
            n_ok = (nr[s, k] & M(~SYSCALL_R11_VARIABLE & MASK)) == M(SYSCALL_R11_FIXED)
        rule = (seg >= 0) & ~ok[:, k] & q_kept & n_ok
        res["reg_syscall_rule"][reg] = int(rule.sum())
        ok[:, k] |= rule
    for k, r in enumerate(REGS):
        res["reg_mismatch"][r] = int((~ok[:, k]).sum())
        res["reg_equal"][r] = int(eq[:, k].sum())
        res["reg_stack_rule"][r] = int(st[:, k].sum())
        res["reg_args_rule"][r] = int(ar[:, k].sum())

    # (c) memory addresses recomputed from the native registers
    kind = dec.kind[sid]
    ea = dec.effective_addresses(sid, nr)
    valid = dec.valid[sid] & pc_ok[:, None]
    ea_ok = np.ones((m, dec.valid.shape[1]), bool)
    for k in range(ea_ok.shape[1]):
        how = [np.bincount(local[mem["addr"] == cand[local]], minlength=m) > 0
               for cand in (ea[:, k], ea[:, k] + sd, ea[:, k] + ad)]
        e, s_, a_ = how[0], ~how[0] & how[1], ~how[0] & ~how[1] & how[2]
        v = valid[:, k]
        res["addr_checks"] += int(v.sum())
        res["addr_equal"] += int((v & e).sum())
        res["addr_stack_rule"] += int((v & s_).sum())
        res["addr_args_rule"] += int((v & a_).sum())
        ea_ok[:, k] = ~v | e | s_ | a_
    res["addr_mismatch"] = int((~ea_ok).sum())
    nmem = ins["nmem"]
    res["insns_with_mem_operand"] = int((kind == KIND_CHECKED).sum())
    res["mem_records"] = int(len(mem))
    acc_wo = ((kind == KIND_NONE) | (kind == KIND_NO_ACCESS)) & (nmem > 0)
    op_wo = (kind == KIND_CHECKED) & (nmem == 0)
    res["access_without_operand"] = int(acc_wo.sum())
    res["operand_without_access"] = int(op_wo.sum())
    res["unsupported"] = int(((kind != KIND_CHECKED) & (kind != KIND_NONE) & (kind != KIND_NO_ACCESS)).sum())

    bad = ~pc_ok | ~ok.all(1) | ~ea_ok.all(1) | acc_wo | op_wo
    if bad.any():
        r = int(np.argmax(bad))
        ms = mem[local == r]
        what = ("pc" if not pc_ok[r] else "registers" if not ok[r].all() else
                "address" if not ea_ok[r].all() else "access without operand" if acc_wo[r]
                else "operand without access")
        pc, code = reader.static.code(int(sid[r]))
        res["first_mismatch"] = {
            "insn": r, "what": what, "pc_qemu": hex(int(qpc[r])), "pc_native": hex(int(npc[r])),
            "disasm": x86.text(code, pc),
            "regs_mismatching": [REGS[k] for k in range(NREG) if not ok[r, k]],
            "regs_qemu": {REGS[k]: hex(int(q[r, k])) for k in range(NREG)},
            "regs_native": {REGS[k]: hex(int(nr[r, k])) for k in range(NREG)},
            "ea_native": [hex(int(ea[r, k])) for k in range(ea_ok.shape[1]) if dec.valid[sid[r], k]],
            "mem_qemu": [f"{'ST' if s else 'LD'}{int(z)} {int(a):#x} = {int(v):#x}"
                         for a, v, z, s in zip(ms["addr"], ms["val"], ms["size"], ms["store"])]}

    res["reg_mismatch_total"] = sum(res["reg_mismatch"].values())
    res["ok"] = (res["length_mismatch"] == 0 and res["pc_mismatch"] == 0
                 and res["reg_mismatch_total"] == 0 and res["addr_mismatch"] == 0
                 and res["access_without_operand"] == 0 and res["operand_without_access"] == 0
                 and res["unsupported"] == 0)
    return res


def crosscheck(kernel_path: str | os.PathLike, args: list[str] | tuple = (), n: int = 100_000,
               workdir: str | os.PathLike | None = None, *, plugin: str | os.PathLike | None = None,
               tracer: str | os.PathLike | None = None, qemu: str = "qemu-x86_64") -> dict:
    """Run ``kernel_path args`` under the plugin and under ptrace_trace for ``n`` instructions each
    and compare them (see the module docstring). Returns counts; ``ok`` is True when everything
    matched. Also returns both runs' stdout (the kernels print a checksum)."""
    plugin = Path(plugin) if plugin else NATIVE / "qtrace.so"
    tracer = Path(tracer) if tracer else NATIVE / "ptrace_trace"
    for p, what in ((plugin, "the plugin"), (tracer, "the ptrace tracer"), (Path(kernel_path), "the kernel")):
        if not p.exists():
            raise CrossCheckError(f"{what} {p} does not exist (run `make native`)")
    if not shutil.which(qemu):
        raise CrossCheckError(f"{qemu} not found (apt-get install qemu-user)")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ncf-crosscheck-")
        workdir = tmp.name
    try:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        name = Path(kernel_path).name
        qt, nt = wd / f"{name}.qemu.ncft", wd / f"{name}.native.bin"
        q_out = run_qemu(kernel_path, list(args), n, qt, plugin.resolve(), qemu)
        n_out = run_ptrace(kernel_path, list(args), n, nt, tracer.resolve())
        n_pc, n_regs = read_native(nt)
        res = compare(TraceReader(qt, require_sidecar=False), n_pc, n_regs)
    finally:
        if tmp is not None:
            tmp.cleanup()
    res.update(kernel=str(kernel_path), args=[str(a) for a in args], n=n,
               stdout_qemu=q_out.decode(errors="replace"), stdout_native=n_out.decode(errors="replace"))
    res["ok"] = res["ok"] and res["stdout_qemu"] == res["stdout_native"]
    return res


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    ap = argparse.ArgumentParser(description="cross-check the QEMU plugin against ptrace single-stepping")
    ap.add_argument("kernel")
    ap.add_argument("args", nargs="*")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    res = crosscheck(a.kernel, a.args, a.n, a.workdir)
    print(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
