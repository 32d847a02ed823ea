"""The QEMU plugin (trace_eval/native/qtrace.c) run directly: its file must read back with
TraceReader, hold exactly what was asked for, and leave the guest's behaviour unchanged."""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ncf.trace_eval.format import NREG, REGS, TraceReader

REPO = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-x86_64")
SUMMARY = re.compile(r"^qtrace: executed=(\d+) recorded=(\d+) seconds=([0-9.]+) eip_mismatches=(\d+) "
                     r"dropped=(\d+) virt_tsc=(\d+) virt_syscalls=(\d+) virt_skipped=(\d+) out=(.+)$", re.M)
RSP = REGS.index("rsp")


@pytest.fixture(scope="module")
def plugin(native) -> Path:
    return native / "qtrace.so"


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> list[str]:
    """bzip2 compressing a small deterministic mix of text and noise: ~18 M instructions."""
    rng = random.Random(1)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    data = bytearray()
    while len(data) < 20000:
        if rng.random() < 0.6:
            data += (" ".join(rng.choice(words) for _ in range(8)) + "\n").encode()
        else:
            data += bytes(rng.getrandbits(8) for _ in range(64))
    path = tmp_path_factory.mktemp("guest") / "data.bin"
    path.write_bytes(bytes(data[:20000]))
    bzip2 = shutil.which("bzip2")
    assert bzip2, "bzip2 is missing (apt-get install bzip2)"
    return [os.path.realpath(bzip2), "-c", str(path)]  # qemu-x86_64 needs the full path


def run(plugin: Path, out: Path, guest: list[str], *opts: str, **kw) -> subprocess.CompletedProcess:
    arg = ",".join([str(plugin), f"out={out}", *opts])
    return subprocess.run([QEMU, "-singlestep", "-plugin", arg, *guest], capture_output=True,
                          timeout=120, **kw)


def summary(r: subprocess.CompletedProcess) -> dict:
    err = r.stderr.decode(errors="replace")
    m = SUMMARY.findall(err)
    assert len(m) == 1, f"expected one summary line on stderr, got:\n{err}"
    ex, rec, sec, eip, drop, v_tsc, v_sys, v_skip, out = m[0]
    return {"executed": int(ex), "recorded": int(rec), "seconds": float(sec), "eip_mismatches": int(eip),
            "dropped": int(drop), "virtualized": (int(v_tsc), int(v_sys), int(v_skip)), "out": out, "stderr": err}


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if ".tmp" in p.name]


def check_pushes(reader: TraceReader) -> int:
    """`push r64` (50+r, or 41 50+r for r8..r15) stores the register at rsp-8: checks the register
    values, the memory values and the attribution of accesses to instructions together."""
    checked = 0
    for ch in reader.chunks():
        ins, mem = ch.insn, ch.mem
        code = reader.static.bytes[ins["sid"]]
        ln = reader.static.len[ins["sid"]]
        one = (code[:, 0] >= 0x50) & (code[:, 0] <= 0x57) & (ln == 1)
        two = (code[:, 0] == 0x41) & (code[:, 1] >= 0x50) & (code[:, 1] <= 0x57) & (ln == 2)
        sel = np.nonzero((one | two) & (ins["nmem"] == 1))[0]
        reg = np.where(one[sel], code[sel, 0] - 0x50, code[sel, 1] - 0x50 + 8).astype(np.int64)
        m = mem[ins["mem0"][sel].astype(np.int64)]  # mem0 indexes the chunk's mem array
        regs = ins["regs"][sel]
        assert (m["store"]).all() and (m["size"] == 8).all()
        assert (m["addr"] == regs[:, RSP] - np.uint64(8)).all()
        # push rsp stores the old rsp, like any other register
        assert (m["val"] == regs[np.arange(len(sel)), reg]).all()
        checked += len(sel)
    return checked


def test_skip_and_count_record_exactly_the_window(plugin, guest, tmp_path):
    skip, count = 1_000_000, 1_200_000  # crosses a chunk boundary (2^20 instructions)
    out = tmp_path / "w.ncft"
    r = run(plugin, out, guest, f"skip={skip}", f"count={count}")
    assert r.returncode == 0, r.stderr.decode()
    s = summary(r)
    assert s["eip_mismatches"] == 0, "env is not CPUX86State: register values are wrong"
    assert (s["executed"], s["recorded"], s["dropped"], s["out"]) == (skip + count, count, 0, str(out))
    assert leftovers(tmp_path) == []

    t = TraceReader(out, require_sidecar=False)
    assert t.flags == 7 and t.chunk_insns == 1 << 20
    assert t.n_insn == count
    assert int(t.end["executed"]) == skip + count and int(t.end["dropped"]) == 0
    chunks = list(t.chunks())
    assert len(chunks) == 2 and chunks[0].first == 0 and chunks[1].first == 1 << 20
    assert int(chunks[0].insn["idx"][0]) == 0
    assert sum(len(c.insn) for c in chunks) == count
    assert sum(len(c.mem) for c in chunks) == int(t.end["n_mem"]) > 0
    for c in chunks:
        assert (c.insn["regs"][:, RSP] != 0).all()
        assert set(np.unique(c.mem["size"])) <= {1, 2, 4, 8}
    assert check_pushes(t) > 10


def test_guest_output_is_unchanged(plugin, guest, tmp_path):
    native = subprocess.run(guest, capture_output=True, check=True).stdout
    out = tmp_path / "all.ncft"
    r = run(plugin, out, guest, "count=300000")  # recording stops; qemu_plugin_reset; run on
    assert r.returncode == 0 and r.stdout == native
    assert summary(r)["eip_mismatches"] == 0
    assert leftovers(tmp_path) == []
    assert TraceReader(out, require_sidecar=False).n_insn == 300000


def test_whole_run_records_every_instruction(plugin, tmp_path):
    true = os.path.realpath(shutil.which("true"))
    out = tmp_path / "true.ncft"
    r = run(plugin, out, [true])
    assert r.returncode == 0
    s = summary(r)
    assert s["eip_mismatches"] == 0 and s["dropped"] == 0 and s["executed"] == s["recorded"] > 10000
    t = TraceReader(out, require_sidecar=False)
    assert t.n_insn == int(t.end["executed"]) == s["recorded"]
    (c,) = list(t.chunks())
    assert c.insn["regs"].shape == (s["recorded"], NREG)
    assert check_pushes(t) > 1000
    assert leftovers(tmp_path) == []


def test_exit_on_ends_the_guest_and_progress_lines(plugin, guest, tmp_path):
    out = tmp_path / "x.ncft"
    rd, wr = os.pipe()
    with os.fdopen(rd) as progress:
        try:
            r = run(plugin, out, guest, "skip=5000000", "count=100000", "exit=on", f"progress={wr}",
                    pass_fds=(wr,))
        finally:
            os.close(wr)
        lines = progress.read().splitlines()
    assert r.returncode == 0
    assert summary(r)["executed"] == 5_100_000
    assert lines[0] == f"{1 << 22} 0" and lines[-1] == "5100000 100000"
    assert TraceReader(out, require_sidecar=False).n_insn == 100000
    assert leftovers(tmp_path) == []


def test_unknown_option_fails_clearly(plugin, guest, tmp_path):
    out = tmp_path / "bad.ncft"
    r = run(plugin, out, guest, "count=10", "colour=blue")
    assert r.returncode != 0
    assert "qtrace: unknown option 'colour'" in r.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_missing_out_fails_clearly(plugin, guest, tmp_path):
    r = subprocess.run([QEMU, "-singlestep", "-plugin", f"{plugin},count=10", *guest], capture_output=True,
                       timeout=60)
    assert r.returncode != 0 and "out=PATH is required" in r.stderr.decode()


def test_virt_off_leaves_the_hosts_time_stamp_counter(plugin, guest, tmp_path):
    """The virtual environment (default on) replaces rdtsc results and time/random syscalls; with
    virt=off the host's values stay and two runs differ."""
    def regs_after_start(out):
        r = TraceReader(out, require_sidecar=False)
        return next(r.chunks()).insn["regs"][:5000]

    on = [summary(run(plugin, tmp_path / f"on{k}.ncft", guest, "count=5000", "exit=on")) for k in range(2)]
    off = [summary(run(plugin, tmp_path / f"off{k}.ncft", guest, "count=5000", "exit=on", "virt=off"))
           for k in range(2)]
    assert on[0]["virtualized"][0] > 0 and off[0]["virtualized"] == (0, 0, 0)
    assert (regs_after_start(tmp_path / "off0.ncft") != regs_after_start(tmp_path / "off1.ncft")).any()
    bad = run(plugin, tmp_path / "bad.ncft", guest, "count=10", "virt=maybe")
    assert bad.returncode != 0 and "bad value for virt" in bad.stderr.decode()
