"""Record a fused trace: run a program under QEMU user mode with the ncf plugin, self-check the
result, and write the trace with its sidecar.

    sidecar = record(prepare("bzip2", 0), "traces/bzip2-0.ncft", skip=10**9, count=50 * 10**6)

The trace and its sidecar appear only when everything succeeded; an interrupted or failed run
leaves neither (nor temporary files). A trace whose self-check is below 100% is kept, with the
result in its sidecar, and :class:`CaptureError` is raised: it must not be used silently.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import capstone

import ncf
from ncf.io import atomic_path, write_json

from .format import VERSION, TraceReader, file_info, sidecar_path
from .native_lib import native_path
from .selfcheck import check_trace, summary_text
from .workloads import Invocation

SUMMARY = re.compile(r"qtrace: executed=(\d+) recorded=(\d+) seconds=([\d.]+) eip_mismatches=(\d+) dropped=(\d+) "
                     r"virt_tsc=(\d+) virt_syscalls=(\d+) virt_skipped=(\d+)")


# What the guest sees is fixed, so that the same workload, input and window give the same trace,
# byte for byte, whatever the checkout path, working directory, user environment or run:
# * environment: GUEST_ENV (+ a user program's --env). Environment strings sit on the initial
#   stack; another environment would shift stack addresses and, through alignment-dependent
#   library code, the very instructions executed;
# * executable path and argv[0]: the program runs from a copy at GUEST_ROOT/exe/<sha256>/<name>
#   (the path is on the stack as AT_EXECFN and is what /proc/self/exe names) with argv[0] = <name>;
# * working directory: a built-in workload runs in GUEST_ROOT/run/<digest of its inputs>/, which
#   holds copies of its input files (a user's program runs where ncf was started: it may read
#   anything there, so its traces also depend on getcwd() if it calls it);
# * AT_RANDOM (the stack canary, pointer guard) and RDRAND: QEMU's -seed GUEST_SEED;
# * stack size and so the stack's location: -s GUEST_STACK (else the caller's `ulimit -s` moves it);
# * pids and tids: a pid namespace, where the guest is always pid 2 (glibc stores its tid at
#   start-up); also uid/gid 0 inside. Where user namespaces are not allowed the guest sees the host's
#   pids and the sidecar says so (guest.pid_namespace = false);
# * signals: every signal's handling is the default and none is blocked (both are inherited across
#   exec, and QEMU hands them to the guest: xz keeps a signal ignored that its caller ignored, and
#   `nohup` or a shell's `&` ignore some);
# * time-stamp counter, clocks, getrandom, sysinfo, uname, stat's device/inode numbers and times:
#   the plugin's virtual environment (native/qtrace.c, "determinism").
# Not fixed: file owners (stat's uid/gid) and the host's pids where namespaces are not available.
GUEST_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
GUEST_ROOT = Path("/tmp/ncf-guest")  # a fixed place, not $TMPDIR: its path is part of what the guest sees
GUEST_SEED = 1
GUEST_STACK = "8M"
GUEST_VERSION = 5  # bumped when what the guest sees changes: older traces are not reused


class CaptureError(Exception):
    """Recording failed or produced a trace that cannot be trusted; the message says why."""


def qemu_binary() -> str:
    path = shutil.which("qemu-x86_64")
    if not path:
        raise CaptureError("qemu-x86_64 not found: install it with `apt-get install qemu-user` "
                           "(`make setup` does this)")
    return path


def plugin_path() -> Path:
    try:
        return native_path("qtrace.so")
    except RuntimeError as e:
        raise CaptureError(str(e)) from None


def tool_versions() -> dict:
    qemu = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"ncf": ncf.__version__, "qemu": qemu[0] if qemu else "?", "capstone": capstone.__version__,
            "python": platform.python_version()}


def record(inv: Invocation, out: str | os.PathLike, skip: int = 0, count: int = 10**6, level: int = 3,
           selfcheck: bool = True, run_to_end: bool = False, progress: bool = True) -> dict:
    """Trace ``count`` instructions of ``inv`` after fast-forwarding ``skip``; return the sidecar.

    ``run_to_end`` lets the program finish after recording (to compare its output); by default
    the guest exits as soon as the window is recorded.
    """
    out = Path(out).absolute()   # handed to QEMU, which runs elsewhere
    if count <= 0 or skip < 0:
        raise CaptureError(f"bad window: skip={skip} count={count} (count must be > 0, skip >= 0)")
    qemu, plugin = qemu_binary(), plugin_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_trace, tempfile.TemporaryDirectory(prefix="ncf-trace-") as scratch:
        tmp_stdout = Path(scratch) / "stdout"
        opts = f"out={tmp_trace},skip={skip},count={count},level={level},seed={GUEST_SEED}" + \
            ("" if run_to_end else ",exit=on")
        rfd, wfd = os.pipe()
        cmd, cwd, env, guest = guest_command(inv, [qemu, "-singlestep", "-plugin", f"{plugin},{opts},progress={wfd}"])
        t0 = time.monotonic()
        blocked = signal.pthread_sigmask(signal.SIG_SETMASK, ())   # the child inherits this thread's mask
        try:
            with open(tmp_stdout, "wb") as so, open(inv.stdin or os.devnull, "rb") as si:
                proc = subprocess.Popen(cmd, cwd=cwd, stdout=so, stderr=subprocess.PIPE, stdin=si, pass_fds=(wfd,),
                                        env=env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(wfd)
        err_lines: list[bytes] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            _follow_progress(rfd, skip + count, f"trace {inv.workload}#{inv.input}", progress)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            os.close(rfd)
            for half in tmp_trace.parent.glob(tmp_trace.name + ".tmp.*"):  # left by a plugin that died
                half.unlink()
        reader.join()
        wall = time.monotonic() - t0
        stderr = b"".join(err_lines).decode(errors="replace")
        summary = SUMMARY.findall(stderr)
        if not summary:
            raise CaptureError(f"{inv.workload}: qemu exited with {rc} without finishing the trace:\n{stderr[-2000:]}")
        executed, recorded, seconds, eip_bad, dropped, v_tsc, v_sys, v_skipped = summary[-1]
        executed, recorded, eip_bad, dropped = int(executed), int(recorded), int(eip_bad), int(dropped)
        guest["virtualized"] = {"rdtsc": int(v_tsc), "syscalls": int(v_sys), "not_virtualized": int(v_skipped)}
        if rc != 0 and run_to_end:
            raise CaptureError(f"{inv.workload}: the program exited with status {rc}:\n{stderr[-2000:]}")
        if recorded == 0:
            raise CaptureError(f"{inv.workload}: the program ended after {executed} instructions, "
                               f"before the window (skip {skip}) began; use a smaller --skip")
        if eip_bad or dropped:
            raise CaptureError(f"{inv.workload}: the recorder is not exact here ({eip_bad} pc/register "
                               f"mismatches, {dropped} dropped memory records); the trace is discarded")
        if not tmp_trace.exists() or tmp_trace.stat().st_size == 0:
            raise CaptureError(f"{inv.workload}: qemu reported success but wrote no trace:\n{stderr[-2000:]}")
        meta = {
            "format_version": VERSION,
            "source": f"{inv.workload} input {inv.input}, recorded by ncf's QEMU plugin",
            "workload": inv.workload, "input": {"index": inv.input, "seed": inv.seed, "files": inv.input_files},
            "argv": [Path(inv.argv[0]).name, *inv.argv[1:]], "program": inv.program_version, "guest": guest,
            "window": {"skip": skip, "instructions_requested": count, "recorded": recorded,
                       "executed_total": executed, "complete": recorded == count},
            "recording": {"seconds": float(seconds), "insn_per_s": recorded / max(float(seconds), 1e-9),
                          "wall_seconds": round(wall, 3), "zstd_level": level},
            "available": {"registers": True, "memory_values": True, "instruction_bytes": True},
            "tools": tool_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "file": file_info(tmp_trace),
        }
        if run_to_end:
            meta["program_output_sha256"] = _sha256(tmp_stdout)
        meta["file"]["bytes_per_insn"] = meta["file"]["size"] / recorded
        if selfcheck:
            res = check_trace(TraceReader(tmp_trace, require_sidecar=False), progress=_bar(
                recorded, f"self-check {inv.workload}#{inv.input}", progress))
            meta["selfcheck"] = res.as_dict()
        write_json(sidecar_path(out), meta)
        # the trace takes its final name last: a trace never exists without its sidecar
    if selfcheck and not meta["selfcheck"]["ok"]:
        raise CaptureError(f"{out}: self-check failed: {summary_text(meta['selfcheck'])}; most frequent: "
                           f"{meta['selfcheck']['most_frequent_failures']}. The trace is kept for inspection.")
    return meta


def guest_command(inv: Invocation, qemu_cmd: list[str]) -> tuple[list[str], Path, dict, dict]:
    """The command, working directory and environment that run ``inv`` under ``qemu_cmd`` (QEMU and
    its plugin) in the fixed guest set-up described at the top of this module, and what the guest
    sees (the sidecar's ``guest``)."""
    exe = _guest_copy(Path(inv.argv[0]))
    cwd = _guest_run_dir(inv) if inv.own_dir else Path(inv.cwd)
    env = {**GUEST_ENV, **dict(inv.env)}
    cmd = [*qemu_cmd[:1], "-seed", str(GUEST_SEED), "-s", GUEST_STACK, "-0", exe.name, *qemu_cmd[1:], str(exe),
           *inv.argv[1:]]
    ns = pid_namespace()
    if ns:  # sh stays pid 1 (the namespace's init) so that the guest is an ordinary process, pid 2;
        # sh exports PWD (the caller's directory): env removes it again; env resets every signal's handling
        cmd = [*ns, "/bin/sh", "-c", 'env -u PWD --default-signal "$@"; exit $?', "ncf-guest", *cmd]
    else:
        cmd = ["env", "--default-signal", *cmd]
    guest = {"version": GUEST_VERSION, "exe": str(exe), "argv0": exe.name, "cwd": str(cwd) if inv.own_dir else "(caller's)",
             "env": env, "stdin": {"file": inv.stdin.name, "sha256": inv.input_files["<stdin>"]} if inv.stdin else None,
             "seed": GUEST_SEED, "stack": GUEST_STACK, "signals": "default", "pid_namespace": bool(ns)}
    return cmd, cwd, env, guest


@functools.cache
def pid_namespace() -> list[str]:
    """The unshare(1) prefix that runs a command in new user + pid namespaces, or [] (with a warning)
    where this machine does not allow them."""
    cmd = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--"]
    try:
        ok = subprocess.run([*cmd, "/bin/true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        print("ncf trace: note: user/pid namespaces are not available here (unshare failed): the guest sees "
              "the host's pids, so traces of programs that read them are not reproducible", file=sys.stderr)
    return cmd if ok else []


def _guest_copy(src: Path) -> Path:
    """``src`` copied to GUEST_ROOT/exe/<sha256[:16]>/<name>: a path fixed by the file's content."""
    digest = _sha256(src)[:16]
    dst = GUEST_ROOT / "exe" / digest / src.name
    if not dst.exists():
        _make_dirs(dst.parent)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
            tmp.chmod(0o755)
    return dst


def _guest_run_dir(inv: Invocation) -> Path:
    """GUEST_ROOT/run/<digest>/ holding copies of the workload's input files (content-addressed)."""
    digest = hashlib.sha256(json.dumps(sorted(inv.input_files.items())).encode()).hexdigest()[:16]
    run = GUEST_ROOT / "run" / digest
    for name, sha in inv.input_files.items():
        dst = run / name
        if not dst.exists():
            _make_dirs(run)
            with atomic_path(dst) as tmp:
                shutil.copyfile(Path(inv.cwd) / name, tmp)
        if _sha256(dst) != sha:
            raise CaptureError(f"{dst}: does not hold input {name} (sha256 {sha[:12]}...); delete {run} and retry")
    _make_dirs(run)
    return run


def _make_dirs(path: Path) -> None:
    """Create ``path`` under GUEST_ROOT, which any user may write to (like /tmp itself)."""
    if not GUEST_ROOT.exists():
        GUEST_ROOT.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            GUEST_ROOT.chmod(0o1777)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CaptureError(f"cannot create {path} (the fixed place guests run from): {e.strerror}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit="insn", unit_scale=True, file=sys.stderr, leave=False)
    return bar.update


def _follow_progress(fd: int, total: int, desc: str, enabled: bool) -> None:
    """Read the plugin's "executed recorded" lines until it closes the pipe; show a bar."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit="insn", unit_scale=True, file=sys.stderr, disable=not enabled,
               leave=False)
    buf = b""
    with bar:
        while chunk := os.read(fd, 4096):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines:
                executed = int(lines[-1].split()[0])
                bar.update(min(executed, total) - bar.n)
