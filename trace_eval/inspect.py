"""Human-readable summary of a trace: its sidecar, counts, and the first instructions disassembled."""
from __future__ import annotations

from ncf.io import UsageError

from . import x86
from .format import FLAG_NAMES, REGS, TraceReader
from .selfcheck import summary_text


def describe(path, first: int = 20, allow_truncated: bool = False) -> str:
    """The summary and the ``first`` instructions of a trace (``allow_truncated``: of a cut file's
    complete chunks; its sidecar, written for the whole file, is shown unchecked)."""
    if first < 0:
        raise UsageError(f"instructions to print: {first} (must be >= 0)")
    r = TraceReader(path, allow_truncated=allow_truncated, require_sidecar=not allow_truncated)
    lines = [f"{path}: {r.n_insn:,} instructions, {r.size / 1e6:.2f} MB "
             f"({r.size / max(r.n_insn, 1):.2f} B/insn), records "
             + ", ".join(name for flag, name in FLAG_NAMES.items() if r.flags & flag)]
    if r.end is None:
        lines.append("  TRUNCATED: no end record; showing the complete chunks"
                     + ("; the sidecar describes the whole recording" if r.meta else ""))
    m = r.meta
    if m.get("workload"):
        inp, window = m["input"], m["window"]
        lines.append(f"  {m['workload']} input {inp.get('index')} (seed {inp.get('seed')}): "
                     f"{' '.join(map(str, m['argv']))}; skip {window.get('skip', 0):,}")
    if "selfcheck" in m:
        lines.append(f"  self-check: {summary_text(m['selfcheck'])}")
    shown = 0
    for ch in r.chunks():
        for row in ch.insn[: first - shown]:
            pc, code = r.static.code(int(row["sid"]))
            line = f"  {int(row['idx']):>8} {pc:#014x}  {x86.text(code, pc) if code else '(no bytes)':<40}"
            if "regs" in row.dtype.names:
                line += " " + " ".join(f"{REGS[k]}={int(row['regs'][k]):#x}" for k in (0, 1, 2, 4, 6, 7))
            mems = ch.mem[int(row["mem0"]):int(row["mem0"]) + int(row["nmem"])]
            line += "".join(f"  {'st' if x['store'] else 'ld'}{int(x['size'])}[{int(x['addr']):#x}]={int(x['val']):#x}"
                            for x in mems)
            lines.append(line)
        shown += min(len(ch.insn), first - shown)
        if shown >= first:
            break
    return "\n".join(lines)
