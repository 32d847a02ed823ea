"""Tests for ChampSim import / export (``ncf.trace_eval.champsim``): synthetic ChampSim files round
trip byte for byte, bad files give clear errors, and an export of a trace of real x86-64 code gets
the branch types ChampSim's own inference must see."""
from __future__ import annotations

import gzip
import json
import lzma
import shutil
import subprocess

import capstone
import numpy as np
import pytest
from capstone import x86 as cx86
from ncf.trace_eval.champsim import (
    RECORD,
    BranchType,
    champsim_branch_type,
    export_champsim,
    import_champsim,
    iter_champsim,
)
from ncf.trace_eval.format import (
    FLAG_BRANCH,
    FLAG_BYTES,
    FLAG_CSREGS,
    FLAG_REGS,
    FLAG_VALUES,
    NREG,
    REGS,
    TraceError,
    TraceReader,
    TraceWriter,
    file_info,
    sidecar_path,
)

from ncf.io import write_json


# ------------------------------------------------------------------------------------- helpers
def packed(rng, n: int, width: int, values) -> np.ndarray:
    """(n, width) rows with 0..width nonzero entries first, zeros after (how Pin fills slots)."""
    out = np.zeros((n, width), values.dtype)
    count = rng.integers(0, width + 1, n)
    for k in range(width):
        on = count > k
        out[on, k] = values[rng.integers(0, len(values), on.sum())]
    return out


def synth_records(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ips = 0x400000 + np.sort(rng.choice(1 << 16, 300, replace=False)).astype(np.uint64)
    ips[-1] = 0xFFFF_FFFF_FF60_0000
    rec = np.zeros(n, RECORD)
    rec["ip"] = ips[rng.integers(0, len(ips), n)]
    rec["is_branch"] = rng.random(n) < 0.2
    rec["branch_taken"] = rec["is_branch"] & (rng.random(n) < 0.6)
    regs = np.arange(1, 60, dtype=np.uint8)
    rec["dst_regs"], rec["src_regs"] = packed(rng, n, 2, regs), packed(rng, n, 4, regs)
    addrs = (0x7FFF_0000_0000 + rng.integers(1, 1 << 30, 5000) * 8).astype(np.uint64)
    rec["dst_mem"], rec["src_mem"] = packed(rng, n, 2, addrs), packed(rng, n, 4, addrs)
    return rec


def write_xz(path, data: bytes):
    path.write_bytes(lzma.compress(data, preset=0))
    return path


def seal(w: TraceWriter) -> None:
    """Close a test trace and give it its sidecar."""
    path = w.close()
    write_json(sidecar_path(path), {"format_version": 1, "source": "test", "file": file_info(path)})


def read_all(path):
    r = TraceReader(path)
    chunks = list(r.chunks())
    return r, np.concatenate([c.insn for c in chunks]), np.concatenate([c.mem for c in chunks]), len(chunks)


# ---------------------------------------------------------------------------- import / export
def test_import_columns_and_exact_round_trip(tmp_path):
    rec = synth_records(20_000)
    src = write_xz(tmp_path / "t.champsim.xz", rec.tobytes())
    dst = import_champsim(src, tmp_path / "t.ncft", chunk_insns=4096)

    r, ins, mem, n_chunks = read_all(dst)
    assert r.flags == FLAG_BRANCH | FLAG_CSREGS and n_chunks == 5
    assert np.array_equal(ins["pc"], rec["ip"])
    assert len(np.unique(ins["sid"])) == len(np.unique(rec["ip"]))
    assert all(r.static.code(s)[1] == b"" for s in np.unique(ins["sid"]))
    assert np.array_equal(ins["br"], rec["is_branch"] | (rec["branch_taken"] << 1))
    assert np.array_equal(ins["csregs"], np.concatenate([rec["dst_regs"], rec["src_regs"]], 1))
    slots = np.concatenate([rec["dst_mem"], rec["src_mem"]], 1)
    assert np.array_equal(ins["nmem"], (slots != 0).sum(1))
    assert np.array_equal(mem["addr"], slots[slots != 0])  # stores then loads, slot order
    assert np.array_equal(mem["store"], np.broadcast_to(np.arange(6) < 2, slots.shape)[slots != 0])
    assert (mem["size"] == 8).all() and (mem["val"] == 0).all()

    meta = json.loads(sidecar_path(dst).read_text())
    assert meta["source"] == "ChampSim trace t.champsim.xz" and meta["format_version"] == 1
    assert meta["imported_from"]["records"] == 20_000 and len(meta["imported_from"]["sha256"]) == 64
    assert meta["file"] == file_info(dst)
    assert meta["available"] == {"registers": False, "memory_values": False, "instruction_bytes": False}

    stats = export_champsim(dst, tmp_path / "back.champsim.xz")
    assert stats["records"] == 20_000 and stats["dropped_loads"] == stats["dropped_stores"] == 0
    assert lzma.decompress((tmp_path / "back.champsim.xz").read_bytes()) == rec.tobytes()
    export_champsim(dst, tmp_path / "back.raw")
    assert (tmp_path / "back.raw").read_bytes() == rec.tobytes()
    export_champsim(dst, tmp_path / "head.raw", limit=5000)
    assert (tmp_path / "head.raw").read_bytes() == rec[:5000].tobytes()


def test_gzip_and_uncompressed_inputs(tmp_path):
    rec = synth_records(3000, seed=1)
    (tmp_path / "a.gz").write_bytes(gzip.compress(rec.tobytes()))
    (tmp_path / "a.trace").write_bytes(rec.tobytes())
    for name in ("a.gz", "a.trace"):
        dst = import_champsim(tmp_path / name, tmp_path / f"{name}.ncft")
        export_champsim(dst, tmp_path / f"{name}.out")
        assert (tmp_path / f"{name}.out").read_bytes() == rec.tobytes()


def test_truncated_record_file(tmp_path):
    data = synth_records(10).tobytes() + b"\1" * 5
    src = write_xz(tmp_path / "cut.xz", data)
    with pytest.raises(TraceError, match=r"cut\.xz: .*10 whole 64-byte records and 5 leftover bytes"):
        import_champsim(src, tmp_path / "cut.ncft")
    assert not (tmp_path / "cut.ncft").exists() and not list(tmp_path.glob(".cut*"))


def test_corrupt_and_cut_xz(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, 64 * 4000, dtype=np.uint8).tobytes()
    good = lzma.compress(data, preset=0)
    bad = bytearray(good)
    bad[len(bad) // 2: len(bad) // 2 + 16] = b"\xff" * 16
    (tmp_path / "bad.xz").write_bytes(bytes(bad))
    with pytest.raises(TraceError, match=r"bad\.xz: corrupt xz stream"):
        import_champsim(tmp_path / "bad.xz", tmp_path / "bad.ncft")
    (tmp_path / "short.xz").write_bytes(good[: len(good) // 2])
    with pytest.raises(TraceError, match=r"short\.xz: corrupt xz stream"):
        import_champsim(tmp_path / "short.xz", tmp_path / "short.ncft")
    assert not (tmp_path / "bad.ncft").exists() and not (tmp_path / "short.ncft").exists()


def test_empty_files(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    write_xz(tmp_path / "empty.xz", b"")
    for name in ("empty", "empty.xz"):
        with pytest.raises(TraceError, match=rf"{name}: empty ChampSim trace"):
            import_champsim(tmp_path / name, tmp_path / "e.ncft")
    with pytest.raises(TraceError, match="no such ChampSim trace"):
        list(iter_champsim(tmp_path / "missing.xz"))


def test_import_lacks_registers(tmp_path):
    dst = import_champsim(write_xz(tmp_path / "t.xz", synth_records(100).tobytes()), tmp_path / "t.ncft")
    r = TraceReader(dst)
    with pytest.raises(TraceError, match=r"dataset needs registers, which ChampSim trace t\.xz does not record"):
        r.require(FLAG_REGS, "dataset")


# ------------------------------------------------------------------------ ChampSim's inference
def test_champsim_branch_type_mirror():
    def rec(dst, src):
        r = np.zeros(1, RECORD)[0]
        r["dst_regs"][: len(dst)], r["src_regs"][: len(src)] = dst, src
        return r

    SP, FL, IP, RAX = 6, 25, 26, 10
    assert champsim_branch_type(rec([IP], [IP])) == BranchType.BRANCH_DIRECT_JUMP
    assert champsim_branch_type(rec([IP], [RAX])) == BranchType.BRANCH_INDIRECT
    assert champsim_branch_type(rec([IP], [IP, FL])) == BranchType.BRANCH_CONDITIONAL
    assert champsim_branch_type(rec([SP, IP], [SP, IP])) == BranchType.BRANCH_DIRECT_CALL
    assert champsim_branch_type(rec([SP, IP], [SP, IP, RAX])) == BranchType.BRANCH_INDIRECT_CALL
    assert champsim_branch_type(rec([SP, IP], [SP])) == BranchType.BRANCH_RETURN
    assert champsim_branch_type(rec([IP], [IP, RAX, SP])) == BranchType.BRANCH_OTHER
    assert champsim_branch_type(rec([FL, RAX], [RAX])) == BranchType.NOT_BRANCH
    # jmp *x(%rip): no address register, so ChampSim (as with Pin traces) calls it direct
    assert champsim_branch_type(rec([IP], [])) == BranchType.BRANCH_DIRECT_JUMP


SNIPPET = """
.intel_syntax noprefix
.text
start:
    mov ecx, 3
    lea rdi, [rsp - 64]
    xor eax, eax
top:
    add rax, [rdi + rcx*8]
    mov [rdi], rax
    dec ecx
    cmp ecx, 0
    jne top
    test rax, rax
    je skip
    call func
skip:
    lea rdx, [rip + func2]
    call rdx
    lea rbx, [rsp - 128]
    call [rbx]
    lea rdx, [rip + after]
    jmp rdx
    ud2
after:
    mov [rbx + 8], rdx
    jmp [rbx + 8]
    ud2
after2:
    jmp done
    ud2
done:
    mov ecx, 2
again:
    loop again
    nop
    jmp start
func:
    push rbp
    mov rbp, rsp
    pop rbp
    ret
func2:
    ret
"""
# the run: conditional outcomes and indirect targets, in the order they execute
COND = {"top": [True, True, False], "skip": [False], "again": [True, False]}
INDIRECT = ["func2", "func", "after", "after2"]


def assemble(tmp_path) -> tuple[bytes, dict[str, int]]:
    for tool in ("gcc", "objcopy", "nm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: apt-get install gcc binutils (make setup installs it)")
    (tmp_path / "s.s").write_text(SNIPPET)
    subprocess.run(["gcc", "-c", "-o", tmp_path / "s.o", tmp_path / "s.s"], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", tmp_path / "s.o", tmp_path / "s.bin"], check=True)
    nm = subprocess.run(["nm", tmp_path / "s.o"], check=True, capture_output=True, text=True).stdout
    syms = {name: int(addr, 16) for addr, _, name in (line.split() for line in nm.splitlines())}
    return (tmp_path / "s.bin").read_bytes(), syms


def capstone_class(insn) -> BranchType:
    """The branch class read off the instruction itself (independent of the exporter)."""
    direct = any(op.type == cx86.X86_OP_IMM for op in insn.operands)
    if insn.mnemonic == "ret":
        return BranchType.BRANCH_RETURN
    if insn.mnemonic == "call":
        return BranchType.BRANCH_DIRECT_CALL if direct else BranchType.BRANCH_INDIRECT_CALL
    if insn.mnemonic == "jmp":
        return BranchType.BRANCH_DIRECT_JUMP if direct else BranchType.BRANCH_INDIRECT
    if insn.mnemonic.startswith(("j", "loop")):
        return BranchType.BRANCH_CONDITIONAL
    return BranchType.NOT_BRANCH


def run_snippet(code: bytes, syms: dict, base: int = 0x401000, laps: int = 3):
    """Walk the snippet's control flow (scripted outcomes), producing a plausible dynamic run with
    registers (rsp tracked) and memory records (operands, pushes and pops, calls and returns)."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    insns = {i.address: i for i in md.disasm(code, base)}
    label = {base + a: name for name, a in syms.items()}
    steps, regs, mem = [], [], []  # mem: (step, addr, store)
    rsp, stack = 0x7FFF_F000, []
    cond = {base + syms[k]: list(v) * laps for k, v in COND.items()}
    targets = iter([base + syms[t] for t in INDIRECT] * laps)
    pc, lap = base, 0
    while True:
        i = insns[pc]
        k = len(steps)
        steps.append(pc)
        row = np.arange(NREG, dtype=np.uint64) * 0x1000 + k
        row[REGS.index("rsp")] = rsp
        regs.append(row)
        for op in i.operands:
            if op.type == cx86.X86_OP_MEM and i.mnemonic != "lea":  # lea computes, does not load
                a = 0x7FFE_0000 + 8 * (k % 97) + 0x10000 * (pc & 0xFF)
                if op.access & capstone.CS_AC_READ:
                    mem.append((k, a, False))
                if op.access & capstone.CS_AC_WRITE:
                    mem.append((k, a, True))
        fall = pc + i.size
        cls = capstone_class(i)
        if i.mnemonic in ("push", "call"):
            rsp -= 8
            mem.append((k, rsp, True))
        if i.mnemonic in ("pop", "ret"):
            mem.append((k, rsp, False))
            rsp += 8
        if cls == BranchType.BRANCH_RETURN:
            pc = stack.pop()
        elif cls in (BranchType.BRANCH_DIRECT_CALL, BranchType.BRANCH_INDIRECT_CALL):
            stack.append(fall)
            pc = i.operands[0].imm if cls == BranchType.BRANCH_DIRECT_CALL else next(targets)
        elif cls == BranchType.BRANCH_CONDITIONAL:
            tgt = i.operands[0].imm
            pc = tgt if cond[tgt].pop(0) else fall
        elif cls == BranchType.BRANCH_DIRECT_JUMP:
            pc = i.operands[0].imm
        elif cls == BranchType.BRANCH_INDIRECT:
            pc = next(targets)
        else:
            pc = fall
        if label.get(pc) == "start":
            lap += 1
            if lap == laps:
                break
    return insns, np.array(steps, np.uint64), np.array(regs), mem


def test_export_of_real_code_matches_champsim_inference(tmp_path):
    code, syms = assemble(tmp_path)
    insns, steps, regs, mem = run_snippet(code, syms)
    sid_of = {pc: s for s, pc in enumerate(insns)}
    path = tmp_path / "snip.ncft"
    w = TraceWriter(path, FLAG_REGS | FLAG_VALUES | FLAG_BYTES, chunk_insns=7)  # chunk edges inside runs
    for pc, s in sid_of.items():
        w.define(s, pc, bytes(insns[pc].bytes))
    nmem = np.bincount([m[0] for m in mem], minlength=len(steps))
    maddr = np.array([m[1] for m in mem], np.uint64)
    minfo = np.array([3 | (0x80 if m[2] else 0) for m in mem], np.uint8)
    w.add([sid_of[int(p)] for p in steps], nmem, maddr, minfo, regs=regs, mval=maddr ^ np.uint64(0x55))
    seal(w)

    stats = export_champsim(path, tmp_path / "snip.champsim.xz")
    out = np.frombuffer(lzma.decompress((tmp_path / "snip.champsim.xz").read_bytes()), RECORD)
    assert stats["records"] == len(out) == len(steps) and np.array_equal(out["ip"], steps)
    assert stats["undecodable"] == stats["dropped_loads"] == stats["dropped_stores"] == 0

    seen = set()
    for k, r in enumerate(out):
        i = insns[int(r["ip"])]
        want = capstone_class(i)
        assert champsim_branch_type(r) == want, (k, i.mnemonic, i.op_str, r)
        assert r["is_branch"] == (want != BranchType.NOT_BRANCH), (i.mnemonic, i.op_str)
        if r["is_branch"]:
            nxt = int(steps[k + 1]) if k + 1 < len(steps) else None
            taken = want != BranchType.BRANCH_CONDITIONAL or (nxt is not None and nxt != i.address + i.size)
            assert r["branch_taken"] == taken, (k, i.mnemonic)
        seen.add(want)
        if i.mnemonic in ("cmp", "test", "dec", "add", "xor"):
            assert 25 in r["dst_regs"], (i.mnemonic, r)  # REG_FLAGS written
        if i.mnemonic in ("jne", "je"):
            assert 25 in r["src_regs"]  # conditional branches read REG_FLAGS
        if i.mnemonic == "loop":
            assert 9 in r["src_regs"] and 9 in r["dst_regs"]  # REG_RCX
        if not r["is_branch"]:
            assert 26 not in r["dst_regs"]
        stores = sorted(m[1] for m in mem if m[0] == k and m[2])
        loads = sorted(m[1] for m in mem if m[0] == k and not m[2])
        assert sorted(a for a in r["dst_mem"] if a) == stores and sorted(a for a in r["src_mem"] if a) == loads
    assert seen == set(BranchType) - {BranchType.BRANCH_OTHER}
    # the loop at `top` runs 3 times per lap: taken, taken, not taken
    top = np.flatnonzero(out["ip"] == insns[next(a for a, i in insns.items() if i.mnemonic == "jne")].address)
    assert out["branch_taken"][top].tolist() == [1, 1, 0] * 3

    # and the export imports back: same pcs, same branch bits
    back = import_champsim(tmp_path / "snip.champsim.xz", tmp_path / "back.ncft")
    _, ins, _, _ = read_all(back)
    assert np.array_equal(ins["pc"], steps)
    assert np.array_equal(ins["br"], out["is_branch"] | (out["branch_taken"] << 1))


def test_export_needs_instruction_bytes(tmp_path):
    path = tmp_path / "nobytes.ncft"
    w = TraceWriter(path, FLAG_REGS)
    w.define(0, 0x1000)
    w.add([0, 0], [0, 0], [], [], regs=np.zeros((2, NREG), np.uint64))
    seal(w)
    with pytest.raises(TraceError, match="ChampSim export needs instruction bytes"):
        export_champsim(path, tmp_path / "x.xz")
    assert not (tmp_path / "x.xz").exists()
