"""Traces are reproducible: the same workload, input and window give the same file, byte for byte,
whatever the checkout path, working directory, caller's environment and stack limit, run after run;
what a program could learn about its host (clocks, time-stamp counter, random bytes, memory, host
name, inode numbers, pids) is the tracer's virtual environment."""
from __future__ import annotations

import dataclasses
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from ncf.trace_eval import capture
from ncf.trace_eval.capture import record
from ncf.io import file_sha256
from ncf.trace_eval.workloads import custom, prepare

PROBE = Path(__file__).parent / "data" / "guest_probe.c"


@pytest.fixture
def stack_limit():
    """Set RLIMIT_STACK (inherited by QEMU) for the test, then restore it."""
    old = resource.getrlimit(resource.RLIMIT_STACK)
    yield lambda soft: resource.setrlimit(resource.RLIMIT_STACK, (soft, old[1]))
    resource.setrlimit(resource.RLIMIT_STACK, old)


def test_a_kernel_traced_from_two_checkout_paths_gives_the_same_file(native, tmp_path, monkeypatch, stack_limit):
    """As if the repository were cloned twice, at paths of different lengths, and traced from two
    working directories with different caller environments and stack limits."""
    shas = []
    for k, where in enumerate(["a", "a/much/longer/path/to/another/checkout"]):
        kernels = tmp_path / where / "build" / "native" / "kernels"
        kernels.mkdir(parents=True)
        shutil.copy(native / "kernels" / "quicksort", kernels / "quicksort")
        inv = prepare("quicksort", 0, tmp_path / where / "work" / "inputs")
        inv = dataclasses.replace(inv, argv=(str(kernels / "quicksort"), *inv.argv[1:]))
        monkeypatch.chdir(tmp_path / where)
        monkeypatch.setenv("NCF_TEST_NOISE", "x" * (100 * k + 1))
        stack_limit(8 << 20 if k == 0 else 32 << 20)
        record(inv, Path("q.ncft"), count=200_000, progress=False)
        shas.append(file_sha256("q.ncft"))
    assert shas[0] == shas[1]


def test_a_users_program_traced_from_two_working_directories_gives_the_same_file(native, tmp_path, monkeypatch):
    """A user's program runs in the caller's directory: its path must not reach the guest (a shell
    exports PWD, for one)."""
    shas = []
    for where in ("w", "a/much/longer/working/directory"):
        (tmp_path / where).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / where)
        monkeypatch.setenv("PWD", str(tmp_path / where))
        record(custom([str(native / "kernels" / "quicksort"), "1"]), Path("q.ncft"), count=100_000, progress=False)
        shas.append(file_sha256("q.ncft"))
    assert shas[0] == shas[1]


def test_a_dynamic_program_gives_the_same_trace_twice(native, inputs_dir, tmp_path):
    """bzip2 from its first instruction: the dynamic loader reads the time-stamp counter, glibc stores
    its tid and draws the stack canary (AT_RANDOM) and malloc's tcache key (getrandom)."""
    inv = prepare("bzip2", 0, inputs_dir)
    metas = [record(inv, tmp_path / f"b{k}.ncft", count=300_000, progress=False) for k in range(2)]
    assert file_sha256(tmp_path / "b0.ncft") == file_sha256(tmp_path / "b1.ncft")
    v = metas[0]["guest"]["virtualized"]
    assert v["rdtsc"] > 0 and v["syscalls"] > 0 and v["not_virtualized"] == 0
    assert metas[0]["guest"]["pid_namespace"]  # CI machines allow user namespaces


def _probe(tmp_path) -> Path:
    """The probe program (data/guest_probe.c), compiled once per test directory."""
    exe = tmp_path / "guest_probe"
    if not exe.exists():
        subprocess.run(["gcc", "-O1", "-o", str(exe), str(PROBE)], check=True)
    return exe


def _run_probe(tmp_path, k: int, progress_fd: int | None = None) -> tuple[str, str]:
    """The probe's output and trace; with ``progress_fd``, QEMU starts with that fd open (/dev/null)
    and the plugin's progress=FD naming it, as record() does with its pipe."""
    inv = custom([str(_probe(tmp_path))])
    out = tmp_path / f"probe{k}.ncft"
    plugin = f"{capture.plugin_path()},out={out},seed={capture.GUEST_SEED}"
    if progress_fd is not None:
        plugin += f",progress={progress_fd}"
    cmd, cwd, env, _ = capture.guest_command(inv, [capture.qemu_binary(), "-singlestep", "-plugin", plugin])
    if progress_fd is not None:
        cmd = ["sh", "-c", f'exec "$@" {progress_fd}>/dev/null', "sh", *cmd]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return r.stdout, file_sha256(out)


def test_the_guest_sees_the_virtual_environment_not_the_host(native, tmp_path):
    host = subprocess.run(["uname", "-n"], capture_output=True, text=True).stdout.strip()
    (out0, sha0), (out1, sha1) = _run_probe(tmp_path, 0), _run_probe(tmp_path, 1)
    assert out0 == out1 and sha0 == sha1
    lines = dict(line.split(" ", 1) for line in out0.splitlines())
    assert lines["uname"] == "Linux ncf 6.1.0 x86_64" and host != "ncf"
    assert lines["urandom"] != " ".join(["00"] * 8) != lines["random"]   # read, and from the seeded stream
    assert lines["sysinfo"] == f"totalram {16 << 30} freeram {12 << 30} procs 1"
    assert lines["realtime"].startswith("1767225600 mono 1000 gettimeofday 1767225600 time 1767225600")
    tsc0, tsc1 = (int(v) for v in lines["tsc"].split()[:2])
    assert 0 < tsc0 < tsc1 < 10**6          # one tick per executed instruction
    assert lines["stat"].endswith("mtime 1767225600 blksize 4096")
    assert lines["pid"] == "2"              # the guest is pid 2 of its own pid namespace
    assert lines["fd"] == "3"               # the first file it opens: QEMU's and the tracer's fds are out of the way
    assert lines["signals"] == "ignored 0 blocked 0"


def test_the_progress_pipe_does_not_take_a_guest_fd_number(native, tmp_path):
    """record() hands the tracer a progress pipe whose number is whatever the caller had free (a
    shell's first free fd, a Ray worker's hundredth): the plugin moves it away, or the guest's own
    files get other numbers (xz's input was fd 5 or 6) and its registers, and trace, differ."""
    (plain, sha_plain), (piped, sha_piped) = _run_probe(tmp_path, 0), _run_probe(tmp_path, 1, progress_fd=3)
    assert "fd 3" in piped.splitlines() and piped == plain and sha_piped == sha_plain


def test_signals_the_caller_ignores_or_blocks_do_not_reach_the_guest(native, tmp_path):
    """Ignored and blocked signals survive exec and QEMU hands them to the guest: `nohup` or a shell's
    `&` made xz run other instructions (it keeps an ignored SIGINT ignored), so a study started in the
    background traced another xz window than `ncf trace` did from a terminal."""
    inv = custom([str(_probe(tmp_path))])
    plain = record(inv, tmp_path / "plain.ncft", count=10**7, run_to_end=True, selfcheck=False, progress=False)
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN), signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        odd = record(inv, tmp_path / "odd.ncft", count=10**7, run_to_end=True, selfcheck=False, progress=False)
    finally:
        signal.signal(signal.SIGHUP, old[0])
        signal.pthread_sigmask(signal.SIG_SETMASK, old[1])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == old[1]   # the caller's mask is back
    assert odd["program_output_sha256"] == plain["program_output_sha256"]
    assert file_sha256(tmp_path / "odd.ncft") == file_sha256(tmp_path / "plain.ncft")


def test_an_open_file_limit_too_low_for_the_moved_fds_is_an_error_that_says_how_to_raise_it(native, tmp_path):
    """The plugin's fds must sit at 900 and above (see above); under `ulimit -n 512` it cannot move
    them, and it stops with the fix rather than tracing with its files among the guest's numbers."""
    out = tmp_path / "probe.ncft"
    plugin = f"{capture.plugin_path()},out={out},seed={capture.GUEST_SEED}"
    qemu = [capture.qemu_binary(), "-singlestep", "-plugin", plugin]
    cmd, cwd, env, _ = capture.guest_command(custom([str(_probe(tmp_path))]), qemu)
    r = subprocess.run(["sh", "-c", 'ulimit -n 512 && exec "$@"', "sh", *cmd], cwd=cwd, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "open-file limit is 512" in r.stderr and "ulimit -n 1024" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("probe.ncft.tmp.*"))


def test_stdin_and_env_reach_the_program_and_are_part_of_the_identity(native, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("3\n1\n2\n")
    sort = shutil.which("sort")
    meta = record(custom([sort], stdin="in.txt", env={"LC_ALL": "C", "NCF_X": "1"}), tmp_path / "s.ncft",
                  count=50_000_000, run_to_end=True, progress=False)
    import hashlib
    assert meta["program_output_sha256"] == hashlib.sha256(b"1\n2\n3\n").hexdigest()
    g = meta["guest"]
    assert g["stdin"] == {"file": "in.txt", "sha256": hashlib.sha256(b"3\n1\n2\n").hexdigest()}
    assert g["env"] == {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "NCF_X": "1"}
    assert meta["input"]["files"]["<stdin>"] == g["stdin"]["sha256"]


def test_a_qemu_variable_is_refused_as_guest_environment():
    from ncf.trace_eval.workloads import WorkloadError

    with pytest.raises(WorkloadError, match="QEMU_STRACE"):
        custom(["/bin/true"], env={"QEMU_STRACE": "1"})
    with pytest.raises(WorkloadError, match="PWD"):
        custom(["/bin/true"], env={"PWD": "/x"})
