"""x86-64 decoding for every stage: capstone set up once, and the general-purpose register table.

    d = decode(code, pc)          # a capstone instruction with operand details, or None
    ds = decode_each(codes)       # many at once, faster (their addresses mean nothing)
    text(code, pc)                # "mov rax, qword ptr [rbx + 8]"
    col, width, shift = GPR["eax"]  # trace register column (format.REGS order), bits, bit offset

``GPR`` maps every capstone name of a general-purpose register (rax/eax/ax/al, ah..bh, r8..r15 and
their d/w/b forms) to its column in the trace's register rows (rax rcx rdx rbx rsp rbp rsi rdi
r8..r15), its width and, for ah/bh/ch/dh, its shift.
"""
from __future__ import annotations

import functools

import capstone

GPR: dict[str, tuple[int, int, int]] = {}
for _i, (_q, _d, _w, _b) in enumerate(zip(
        "rax rcx rdx rbx rsp rbp rsi rdi".split() + [f"r{k}" for k in range(8, 16)],
        "eax ecx edx ebx esp ebp esi edi".split() + [f"r{k}d" for k in range(8, 16)],
        "ax cx dx bx sp bp si di".split() + [f"r{k}w" for k in range(8, 16)],
        "al cl dl bl spl bpl sil dil".split() + [f"r{k}b" for k in range(8, 16)])):
    GPR.update({_q: (_i, 64, 0), _d: (_i, 32, 0), _w: (_i, 16, 0), _b: (_i, 8, 0)})
GPR.update({"ah": (0, 8, 8), "ch": (1, 8, 8), "dh": (2, 8, 8), "bh": (3, 8, 8)})


@functools.cache
def _cs() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def decode(code: bytes, pc: int):
    """The first instruction of ``code`` at ``pc`` with operand details (capstone CsInsn), or None."""
    return next(_cs().disasm(bytes(code), pc), None)


def decode_each(codes: list[bytes]) -> list:
    """``decode(code, 0)`` of each of ``codes`` (the bytes of one instruction each), in few capstone
    calls: they are decoded back to back, and one that does not decode there to exactly its own
    bytes is decoded alone. Addresses are offsets in the batch, meaningless."""
    out = []
    while len(out) < len(codes):
        for d in _cs().disasm(b"".join(codes[len(out):]), 0):
            if d.size != len(codes[len(out)]):
                break
            out.append(d)
        if len(out) < len(codes):
            out.append(decode(codes[len(out)], 0))
    return out


def text(code: bytes, pc: int) -> str:
    """Assembly text of the instruction, or its bytes in hex when capstone cannot decode them."""
    d = decode(code, pc)
    return f"{d.mnemonic} {d.op_str}".strip() if d else f"(undecodable {bytes(code).hex()})"
