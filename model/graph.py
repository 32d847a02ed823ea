"""The fused graph of one static site: the code around a hard branch or delinquent load.

Static part (built once per site from the instruction bytes, with capstone):

* nodes (at most ``N``; node 0 is the target instruction, padding nodes are all-zero):
  INSN one per instruction of the region; OPCODE one per opcode class present (shared);
  REG one per general-purpose register the region reads or writes (shared); MEM one per memory
  operand (its displacement is a static feature); IMM one per immediate operand (its value is a
  static feature).
* typed edges, each relation in both directions (``E = 2 * len(RELATIONS)`` adjacency matrices,
  ``adj[e, i, j] = 1``: a message flows from j to i):
  NEXT (instruction -> next instruction by address), CFG (branch -> its target in the region),
  OPCODE (instruction -> its opcode node), SRC (instruction -> operand it reads: REG, MEM, IMM),
  DST (instruction -> operand it writes), MEM_BASE / MEM_INDEX (MEM -> the REG of its base / index),
  DATAFLOW (last writer of a register or the flags -> instruction reading it; the region is read as a
  loop body, so a read before any write in address order links to the last writer after it).

Which instructions: the target, then its backward data-flow slice (the producers of the values its
compare or address depends on, transitively, through registers and flags), then the nearest
executed instructions by address, while the node budget lasts. This points the model at the values
that feed the branch's own compare, as the data said it must (../shared/TOOLCHAIN.md).

Dynamic part (per sample, filled by the dataset from a snapshot D instructions before the
prediction): each REG node carries that register's value, each MEM node the last value its
instruction loaded or stored. ``dyn_slot[node]`` says where a node's value comes from: ``r`` in
0..15 = register r, ``16 + k`` = memory slot k (the k-th memory-operand instruction, ``mem_pcs[k]``),
-1 = none. Each INSN node also carries its front-end count: how often its instruction (``node_pc``)
executed between the snapshot and the prediction, and each MEM node memory as of the snapshot at
the address its instruction is predicted to access at the prediction (the dataset's ``mem_pred``, with
an ok bit). Per node, F_DYN features: [encode_values(value) | encode_counts(count) |
encode_values(predicted memory value), ok] (slices DYN_VALUE, DYN_COUNT, DYN_MEMORY; ``dyn_inputs``:
which of them a node can have).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import capstone
import numpy as np
from capstone import x86

from ncf.trace_eval.x86 import GPR
from ncf.trace_eval.x86 import decode as disassemble

N_NODES = 32
NODE_TYPES = ("insn", "opcode", "reg", "mem", "imm")
RELATIONS = ("next", "cfg", "opcode", "src", "dst", "mem_base", "mem_index", "dataflow")
N_EDGE_TYPES = 2 * len(RELATIONS)
OPCODE_CLASSES = ("mov", "load", "store", "lea", "add_sub", "logic", "shift", "mul_div", "cmp_test", "jcc",
                  "jmp", "call_ret", "push_pop", "setcc_cmov", "simd", "other")
FLAGS = 16  # pseudo register id of rflags in data flow
N_VALUE_BITS = 24
COUNT_BITS = 10                      # front-end counts up to 1023: exact for every lead <= 1023
DYN_VALUE = slice(0, N_VALUE_BITS)                                    # per node: the snapshot's value
DYN_COUNT = slice(DYN_VALUE.stop, DYN_VALUE.stop + COUNT_BITS)         # the front-end count
DYN_MEMORY = slice(DYN_COUNT.stop, DYN_COUNT.stop + N_VALUE_BITS + 1)  # memory at the predicted address, ok
F_DYN = DYN_MEMORY.stop
F_STATIC = len(NODE_TYPES) + len(OPCODE_CLASSES) + 17 + N_VALUE_BITS + 1  # + register one-hot, value, is-target
REGION_BEFORE, REGION_AFTER = 512, 64  # bytes around the target that may be in the region
MAX_MEM_SLOTS = 8


# ------------------------------------------------------------------------------- value encoding
def encode_values(v: np.ndarray) -> np.ndarray:
    """64-bit values -> N_VALUE_BITS binary features that keep small integers and pointers apart.

    [small, negative, pointer, 5-bit log2 magnitude bucket, 16 low bits]: ``small`` = the signed
    value fits in 16 bits; ``pointer`` = |value| >= 2^32. Small values give their 16 low bits;
    pointers only their 6 low bits (alignment within a line): their high bits name an allocation,
    not a property of the computation, and a model would memorise them.
    """
    v = np.asarray(v, np.uint64)
    s = v.view(np.int64)
    neg = s < 0
    mag = np.where(neg, (~v) + np.uint64(1), v)  # |s| as unsigned (2^63 stays 2^63)
    small = mag < (1 << 15)
    pointer = mag >= (1 << 32)
    bucket = np.minimum(np.floor(np.log2(mag.astype(np.float64) + 1)).astype(np.int64) // 2, 31)
    low = np.where(pointer, v & np.uint64(0x3F), v & np.uint64(0xFFFF)).astype(np.int64)
    out = np.zeros(v.shape + (N_VALUE_BITS,), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = small, neg, pointer
    out[..., 3:8] = (bucket[..., None] >> np.arange(5)) & 1
    out[..., 8:24] = (low[..., None] >> np.arange(16)) & 1
    return out


def encode_counts(c: np.ndarray) -> np.ndarray:
    """Front-end counts -> COUNT_BITS binary features: the bits of min(count, 2^COUNT_BITS - 1)."""
    c = np.minimum(np.asarray(c, np.int64), (1 << COUNT_BITS) - 1)
    return ((c[..., None] >> np.arange(COUNT_BITS)) & 1).astype(np.uint8)


def dyn_inputs(dyn_slot: np.ndarray, node_pc: np.ndarray) -> np.ndarray:
    """bool [..., N, F_DYN]: the dynamic features a node can have, value bits where it carries a value
    (``dyn_slot >= 0``), count bits where it is an instruction (``node_pc != 0``), predicted-memory
    bits where it is a memory slot (``dyn_slot >= 16``)."""
    has = [np.asarray(dyn_slot) >= 0, np.asarray(node_pc) != 0, np.asarray(dyn_slot) >= 16]
    width = [p.stop - p.start for p in (DYN_VALUE, DYN_COUNT, DYN_MEMORY)]
    return np.concatenate([np.repeat(h[..., None], n, -1) for h, n in zip(has, width)], -1)


# ------------------------------------------------------------------------------- decoding
@dataclass
class Insn:
    pc: int
    size: int
    mnemonic: str
    op_str: str
    opclass: str
    reads: set        # register ids (0..15 GPRs, FLAGS)
    writes: set
    src_regs: set     # GPRs read as explicit operands
    dst_regs: set
    mems: list        # (base, index, disp, is_load, is_store) per memory operand
    imms: list        # immediate values
    target: int | None  # static branch target


def _gpr(d, reg) -> int | None:
    name = d.reg_name(reg)
    if name in ("rflags", "eflags"):
        return FLAGS
    return GPR[name][0] if name in GPR else None


def opcode_class(m: str, has_load: bool, has_store: bool) -> str:
    if m.startswith("j") and m != "jmp":
        return "jcc"
    if m == "jmp":
        return "jmp"
    if m.startswith(("call", "ret")):
        return "call_ret"
    if m.startswith(("push", "pop")):
        return "push_pop"
    if m.startswith(("cmp", "test")):
        return "cmp_test"
    if m.startswith(("set", "cmov")):
        return "setcc_cmov"
    if m == "lea":
        return "lea"
    if m.startswith(("mov", "xchg")) and not m.startswith(("movs", "movap", "movup", "movdq", "movq", "movd")):
        return "load" if has_load else "store" if has_store else "mov"
    if m.startswith(("add", "sub", "inc", "dec", "neg", "adc", "sbb")):
        return "add_sub"
    if m.startswith(("and", "or", "xor", "not")):
        return "logic"
    if m.startswith(("shl", "shr", "sar", "sal", "rol", "ror")):
        return "shift"
    if m.startswith(("mul", "imul", "div", "idiv")):
        return "mul_div"
    if m.startswith(("p", "v", "movdq", "movap", "movup", "movq", "movd")):
        return "simd"
    return "other"


def decode(code: bytes, pc: int) -> Insn:
    d = disassemble(code, pc)
    if d is None:
        raise ValueError(f"undecodable instruction at {pc:#x}: {code.hex()}")
    r, w = d.regs_access()
    reads = {x for x in (_gpr(d, g) for g in r) if x is not None}
    writes = {x for x in (_gpr(d, g) for g in w) if x is not None}
    src, dst, mems, imms = set(), set(), [], []
    target = None
    for o in d.operands:
        if o.type == x86.X86_OP_REG:
            g = _gpr(d, o.reg)
            if g is not None and g != FLAGS:
                (src if o.access & capstone.CS_AC_READ else set()).add(g)
                (dst if o.access & capstone.CS_AC_WRITE else set()).add(g)
        elif o.type == x86.X86_OP_MEM:
            base = _gpr(d, o.mem.base) if o.mem.base else None
            index = _gpr(d, o.mem.index) if o.mem.index else None
            if d.mnemonic == "lea" or d.mnemonic.startswith("nop"):  # address arithmetic, no access
                src |= {r for r in (base, index) if r is not None and r != FLAGS}
                continue
            mems.append((base, index, o.mem.disp, bool(o.access & capstone.CS_AC_READ),
                         bool(o.access & capstone.CS_AC_WRITE)))
        elif o.type == x86.X86_OP_IMM:
            if d.group(capstone.CS_GRP_JUMP) or d.group(capstone.CS_GRP_CALL):
                target = o.imm
            else:
                imms.append(o.imm)
    has_load = any(m[3] for m in mems)
    has_store = any(m[4] for m in mems)
    return Insn(pc, d.size, d.mnemonic, d.op_str, opcode_class(d.mnemonic, has_load, has_store), reads, writes,
                src, dst, mems, imms, target)


# ------------------------------------------------------------------------------- the site graph
@dataclass
class SiteGraph:
    """Static graph of one site, padded to ``N`` nodes."""

    pc: int
    task: str                       # "branch" or "load"
    static: np.ndarray              # uint8 [N, F_STATIC]
    adj: np.ndarray                 # uint8 [E, N, N]
    dyn_slot: np.ndarray            # int16 [N]
    node_pc: np.ndarray             # uint64 [N]: the pc of an INSN node, 0 for the other nodes
    mem_pcs: list = field(default_factory=list)   # pc of memory slot k
    nodes: list = field(default_factory=list)     # human-readable node labels

    @property
    def n_real(self) -> int:
        return len(self.nodes)


def _slice_order(insns: dict[int, Insn], target: int) -> list[int]:
    """Target first, then its backward data-flow slice (breadth first), then the rest by distance."""
    pcs = sorted(insns)
    order, seen = [target], {target}
    frontier = [target]
    while frontier:
        nxt = []
        for pc in frontier:
            need = set(insns[pc].reads) | {m[0] for m in insns[pc].mems if m[0] is not None} | \
                {m[1] for m in insns[pc].mems if m[1] is not None}
            for r in need:
                w = _last_writer(insns, pcs, pc, r)
                if w is not None and w not in seen:
                    seen.add(w)
                    order.append(w)
                    nxt.append(w)
        frontier = nxt
    order += sorted((p for p in pcs if p not in seen), key=lambda p: (abs(p - target), p))
    return order


def _last_writer(insns: dict[int, Insn], pcs: list[int], pc: int, reg: int) -> int | None:
    """The nearest instruction before ``pc`` (wrapping around: the region is a loop body) writing ``reg``."""
    k = pcs.index(pc)
    for p in pcs[k - 1::-1] + pcs[:k:-1] if k else pcs[:0:-1]:
        if reg in insns[p].writes:
            return p
    return None


def build_site_graph(target: int, code_of: dict[int, bytes], task: str, n_nodes: int = N_NODES) -> SiteGraph:
    """The graph of the site at ``target``; ``code_of`` maps executed pcs to their bytes."""
    near = {pc: decode(c, pc) for pc, c in code_of.items()
            if target - REGION_BEFORE <= pc <= target + REGION_AFTER and c}
    if target not in near:
        raise ValueError(f"site {target:#x}: its instruction bytes are not in the trace")
    order = _slice_order(near, target)

    # choose instructions while the node budget lasts
    chosen: list[int] = []
    regs: set = set()
    opcodes: set = set()
    n_mem = n_imm = 0
    for pc in order:
        ins = near[pc]
        r = (ins.src_regs | ins.dst_regs | {m[0] for m in ins.mems if m[0] is not None}
             | {m[1] for m in ins.mems if m[1] is not None}) - {FLAGS}
        cost = 1 + len(r - regs) + (ins.opclass not in opcodes) + len(ins.mems) + len(ins.imms)
        total = len(chosen) + len(regs) + len(opcodes) + n_mem + n_imm
        if total + cost > n_nodes or n_mem + len(ins.mems) > MAX_MEM_SLOTS:
            if pc == target:
                raise ValueError(f"site {target:#x}: its own instruction does not fit in {n_nodes} nodes")
            continue
        chosen.append(pc)
        regs |= r
        opcodes.add(ins.opclass)
        n_mem += len(ins.mems)
        n_imm += len(ins.imms)
    chosen_sorted = sorted(chosen)

    # nodes: target first, the other instructions by address, then opcodes, registers, mem, imm
    labels = []
    static_rows = []
    idx_insn = {}
    for pc in [target] + [p for p in chosen_sorted if p != target]:
        idx_insn[pc] = len(labels)
        ins = near[pc]
        labels.append(f"insn {pc:#x} {ins.mnemonic} {ins.op_str}")
        static_rows.append(("insn", ins.opclass, None, None, pc == target))
    idx_op = {}
    for c in sorted(opcodes, key=OPCODE_CLASSES.index):
        idx_op[c] = len(labels)
        labels.append(f"opcode {c}")
        static_rows.append(("opcode", c, None, None, False))
    idx_reg = {}
    for r in sorted(regs):
        idx_reg[r] = len(labels)
        labels.append(f"reg {_REG_NAMES[r]}")
        static_rows.append(("reg", None, r, None, False))
    edges = []
    mem_pcs, dyn = [], {}
    for r, node in idx_reg.items():
        dyn[node] = r
    for pc in chosen_sorted:
        ins, i = near[pc], idx_insn[pc]
        edges.append(("opcode", i, idx_op[ins.opclass]))
        for base, index, disp, is_load, is_store in ins.mems:
            node = len(labels)
            labels.append(f"mem [{pc:#x}] disp {disp:#x}")
            static_rows.append(("mem", None, None, disp, False))
            dyn[node] = 16 + len(mem_pcs)
            mem_pcs.append(pc)
            if is_load or not is_store:
                edges.append(("src", i, node))
            if is_store:
                edges.append(("dst", i, node))
            if base is not None and base in idx_reg:
                edges.append(("mem_base", node, idx_reg[base]))
            if index is not None and index in idx_reg:
                edges.append(("mem_index", node, idx_reg[index]))
        for imm in ins.imms:
            node = len(labels)
            labels.append(f"imm {imm:#x}")
            static_rows.append(("imm", None, None, imm, False))
            edges.append(("src", i, node))
        for r in ins.src_regs:
            edges.append(("src", i, idx_reg[r]))
        for r in ins.dst_regs:
            edges.append(("dst", i, idx_reg[r]))
    # NEXT and CFG between chosen instructions (by address), DATAFLOW through registers and flags
    for a, b in zip(chosen_sorted, chosen_sorted[1:]):
        if near[a].pc + near[a].size == b or near[a].opclass not in ("jmp", "call_ret"):
            edges.append(("next", idx_insn[a], idx_insn[b]))
    for pc in chosen_sorted:
        t = near[pc].target
        if t is not None and t in idx_insn:
            edges.append(("cfg", idx_insn[pc], idx_insn[t]))
        for r in near[pc].reads:
            w = _last_writer({p: near[p] for p in chosen_sorted}, chosen_sorted, pc, r)
            if w is not None:
                edges.append(("dataflow", idx_insn[w], idx_insn[pc]))

    static = np.zeros((n_nodes, F_STATIC), np.uint8)
    for k, (kind, opclass, reg, value, is_target) in enumerate(static_rows):
        static[k] = static_features(kind, opclass, reg, value, is_target)
    adj = np.zeros((N_EDGE_TYPES, n_nodes, n_nodes), np.uint8)
    for rel, src, dst in edges:  # relation "src -> dst"; message dst <- src in e, src <- dst in e + R
        e = RELATIONS.index(rel)
        adj[e, dst, src] = 1
        adj[e + len(RELATIONS), src, dst] = 1
    dyn_slot = np.full(n_nodes, -1, np.int16)
    for node, slot in dyn.items():
        dyn_slot[node] = slot
    node_pc = np.zeros(n_nodes, np.uint64)
    for pc, node in idx_insn.items():
        node_pc[node] = pc
    return SiteGraph(target, task, static, adj, dyn_slot, node_pc, mem_pcs, labels)


_REG_NAMES = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()


def static_features(kind: str, opclass: str | None, reg: int | None, value: int | None, is_target: bool) -> np.ndarray:
    """[node type one-hot | opcode class one-hot | register one-hot (16 + none) | value bits | is-target]."""
    f = np.zeros(F_STATIC, np.uint8)
    f[NODE_TYPES.index(kind)] = 1
    o = len(NODE_TYPES)
    if opclass is not None:
        f[o + OPCODE_CLASSES.index(opclass)] = 1
    o += len(OPCODE_CLASSES)
    f[o + (reg if reg is not None else 16)] = 1
    o += 17
    if value is not None:
        f[o:o + N_VALUE_BITS] = encode_values(np.array([value & (2**64 - 1)], np.uint64))[0]
    f[-1] = is_target
    return f
