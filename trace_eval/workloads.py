"""Built-in workloads: real programs (the SPEC CPU2006 programs Debian ships) and small C kernels,
each with inputs that ncf generates itself from fixed seeds.

Different inputs of one program are how later stages split train from test, so input ``i`` of a
workload is always generated from the same seed and gives the same bytes on every machine.

==========  ======================================  ========================  ==================
workload    command                                 SPEC CPU counterpart      input i
==========  ======================================  ========================  ==================
bzip2       bzip2 -c data.bin                       401.bzip2                 2 MiB mixed data
xz          xz -T1 -c data.bin                      557.xz_r                  2 MiB mixed data
hmmer       hmm2search --cpu 0 fam.hmm db.fa        456.hmmer (HMMER 2)       protein family + db
gnugo       gnugo --seed 1 --mode gtp --level 1     445.gobmk                 9x9 game from an opening
list_walk,  build/native/kernels/NAME SEED SIZE     (ncf's own C kernels)     seed = 1 + i
hash_table, quicksort, matmul, bst
==========  ======================================  ========================  ==================

``hmmer`` runs HMMER 2's ``hmm2search`` (Debian package hmmer2), the code base of SPEC's 456.hmmer;
Debian's ``hmmsearch`` is HMMER 3. ``--cpu 0`` keeps it on one thread.

A user workload is a YAML file (``UserWorkload``, ``load_workload``) naming a program, its argument
template and how each input is made; it has inputs 0..4 like a built-in, and input 1 is held out:

    name: perl_sort                          # a workload name (letters, digits, _ and -)
    program: perl                            # on PATH, or a path relative to this file
    args: [sort_words.pl, "{input}"]         # placeholders: {input} (the generated file), {seed}, {index}
    files: [sort_words.pl, gen_words.pl]     # copied (relative to this file) into every input's directory
    generate: [perl, gen_words.pl, "{seed}"] # run there once per input; its stdout becomes the file {input}
    stdin: null                              # a file of the input's directory ("{input}") or null
    env: {PERL_HASH_SEED: "0"}               # added to the fixed guest environment
    skip: 0                                  # default instructions to skip (past the start-up)
    instructions: 2000000                    # default instructions `ncf trace` records

The program runs in a directory of its own holding the input's files (as a built-in does), so the
same file and seed give the same trace on every machine and in every clone.
"""
from __future__ import annotations

import hashlib
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from ncf.io import atomic_path

from .native_lib import NATIVE

KERNELS = ("list_walk", "hash_table", "quicksort", "matmul", "bst")
PROGRAMS = ("bzip2", "xz", "hmmer", "gnugo")
N_INPUTS = 5  # inputs 0..4 of every workload; input 1 is held out everywhere (TEST_INPUT)
TEST_INPUT = 1
AMINO = "ACDEFGHIKLMNPQRSTVWY"


class WorkloadError(Exception):
    """A workload cannot be prepared (unknown name, missing program, bad input index)."""


@dataclass(frozen=True)
class Invocation:
    """A ready-to-run program: argv[0] is an absolute path.

    ``own_dir``: the guest runs in a directory of its own holding copies of ``input_files``
    (the built-in workloads: the files in ``cwd``); otherwise in ``cwd`` itself (a user's program,
    which may read anything there). ``stdin`` is a file fed to the guest's standard input (None:
    /dev/null), ``env`` extra environment variables; both are part of the trace's identity."""

    workload: str
    input: int
    seed: int
    argv: tuple[str, ...]
    cwd: Path
    input_files: dict  # name -> sha256
    program_version: str
    own_dir: bool = True
    stdin: Path | None = None
    env: tuple[tuple[str, str], ...] = ()


def names() -> tuple[str, ...]:
    return PROGRAMS + KERNELS


INPUT_FILE = "input"   # the file a user workload's generator writes (its stdout), ``{input}`` in args


@dataclass(frozen=True)
class UserWorkload:
    """A workload of the user's, read from a YAML file by ``load_workload`` (format: module docstring)."""

    name: str
    program: str
    source: str                    # the workload file; ``program`` and ``files`` are relative to its directory
    args: tuple = ()
    files: tuple = ()
    generate: tuple = ()
    stdin: str | None = None
    env: dict = field(default_factory=dict)
    skip: int = 0
    instructions: int = 10_000_000

    def here(self) -> Path:
        return Path(self.source).resolve().parent

    def executable(self) -> str:
        """The program's absolute path (a name on PATH, else a path relative to the workload file)."""
        local = self.here() / self.program
        found = shutil.which(self.program) if "/" not in self.program else None
        path = found or (str(local) if local.is_file() else None)
        if not path:
            raise WorkloadError(f"{self.source}: program {self.program!r} not found (not on PATH, nor {local})")
        return str(Path(path).resolve())

    def fill(self, text: str, index: int) -> str:
        """``text`` with {input}, {seed} and {index} filled in for input ``index``."""
        try:
            return text.format(input=INPUT_FILE, seed=seed_of(self.name, index), index=index)
        except (KeyError, IndexError, ValueError) as e:
            raise WorkloadError(f"{self.source}: {text!r}: unknown placeholder {e} (known: {{input}}, {{seed}}, "
                                "{index})") from None


def load_workload(path: str | Path) -> UserWorkload:
    """The user workload in YAML file ``path``; a WorkloadError names what is wrong with it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"workload file {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise WorkloadError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise WorkloadError(f"{path}: a workload file is a mapping with keys name, program, args, ...")
    known = [f.name for f in fields(UserWorkload) if f.name != "source"]
    unknown = sorted(set(data) - set(known))
    missing = [k for k in ("name", "program") if not data.get(k)]
    if unknown or missing:
        raise WorkloadError(f"{path}: " + "; ".join(
            ([f"unknown keys {', '.join(map(str, unknown))}"] if unknown else [])
            + ([f"missing {' and '.join(missing)}"] if missing else [])) + f" (keys: {', '.join(known)})")
    name = str(data["name"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) or name in names():
        raise WorkloadError(f"{path}: name {name!r}: " + ("a built-in workload has this name" if name in names()
                                                          else "use letters, digits, _ and - only"))

    def strings(key):
        v = data.get(key) or []
        if isinstance(v, str) or not all(isinstance(x, (str, int, float)) for x in v):
            raise WorkloadError(f"{path}: {key} is a list of strings, not {v!r}")
        return tuple(str(x) for x in v)

    def whole(key, default, least):
        v = data.get(key, default)
        if type(v) is not int or v < least:
            raise WorkloadError(f"{path}: {key} is a whole number >= {least}, not {v!r}")
        return v

    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise WorkloadError(f"{path}: env is a mapping NAME: value, not {env!r}")
    stdin = data.get("stdin")
    uw = UserWorkload(name=name, program=str(data["program"]), source=str(path), args=strings("args"),
                      files=strings("files"), generate=strings("generate"),
                      stdin=None if stdin is None else str(stdin), env={str(k): str(v) for k, v in env.items()},
                      skip=whole("skip", 0, 0), instructions=whole("instructions", 10_000_000, 1))
    check_env(uw.env, f"{path}: env")
    for f in uw.files:
        if Path(f).name != f or not (uw.here() / f).is_file():
            raise WorkloadError(f"{path}: files: {f!r} is not a file next to the workload file")
    uw.executable()
    for text in (*uw.args, *uw.generate, *([uw.stdin] if uw.stdin else [])):
        uw.fill(text, 0)
    return uw


def load_workloads(files) -> dict:
    """name -> UserWorkload of the workload ``files`` (two files may not name the same workload)."""
    user = {}
    for f in files or ():
        uw = load_workload(f)
        if uw.name in user:
            raise WorkloadError(f"workload files {user[uw.name].source} and {f} both name {uw.name!r}")
        user[uw.name] = uw
    return user


def workload_name(workload) -> str:
    """The name of a built-in (str) or user workload."""
    return workload.name if isinstance(workload, UserWorkload) else workload


def seed_of(workload: str, index: int) -> int:
    """The fixed seed of input ``index`` of ``workload`` (stable across machines and versions)."""
    if workload in KERNELS:
        return 1 + index
    return int.from_bytes(hashlib.sha256(f"{workload}/{index}".encode()).digest()[:4], "little")


# ------------------------------------------------------------------------------------ inputs
def mixed_data(rng: random.Random, size: int = 2 << 20) -> bytes:
    """Text with a Zipf-like vocabulary, small binary records, repeats and noise (compressible
    in the ways real files are)."""
    words = ["".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9))) for _ in range(800)]
    out = bytearray()
    while len(out) < size:
        kind = rng.random()
        if kind < 0.45:
            line = " ".join(words[min(int(rng.paretovariate(1.2)) - 1, 799)] for _ in range(rng.randint(4, 16)))
            out += (line.capitalize() + rng.choice(".,;!?") + "\n").encode()
        elif kind < 0.7:
            for _ in range(rng.randint(8, 64)):
                out += rng.randint(0, 300).to_bytes(4, "little")
                out += rng.randint(-5000, 5000).to_bytes(2, "little", signed=True)
        elif kind < 0.85:
            if len(out) > 4096:
                start = rng.randrange(len(out) - 2048)
                out += out[start:start + rng.randint(64, 2048)]
        else:
            out += rng.randbytes(rng.randint(16, 512))
    return bytes(out[:size])


def protein_inputs(rng: random.Random) -> tuple[str, str]:
    """A Stockholm alignment of a synthetic family and a FASTA database where ~10% of the
    sequences carry a mutated family member."""
    def mutate(seq, rate):
        return "".join(rng.choice(AMINO) if rng.random() < rate else c for c in seq)

    core = "".join(rng.choice(AMINO) for _ in range(80))
    sto = ["# STOCKHOLM 1.0", ""] + [f"fam{i:02d} {mutate(core, 0.25)}" for i in range(24)] + ["//", ""]
    fa = []
    for i in range(1500):
        seq = "".join(rng.choice(AMINO) for _ in range(rng.randint(150, 400)))
        if rng.random() < 0.1:
            pos = rng.randrange(len(seq))
            seq = seq[:pos] + mutate(core, 0.35) + seq[pos:]
        fa.append(f">seq{i:05d}")
        fa += [seq[j:j + 60] for j in range(0, len(seq), 60)]
    return "\n".join(sto), "\n".join(fa) + "\n"


def gtp_script(rng: random.Random, moves: int = 30) -> str:
    """A 9x9 game: a seeded opening of 4-6 stones on non-adjacent points, then gnugo plays."""
    cols = "ABCDEFGHJ"
    points: list[tuple[int, int]] = []
    while len(points) < rng.randint(4, 6):
        p = (rng.randrange(9), rng.randrange(9))
        if all(abs(p[0] - q[0]) + abs(p[1] - q[1]) > 1 for q in points):
            points.append(p)
    colour = ["black", "white"]
    cmds = ["boardsize 9", "clear_board", "komi 5.5"]
    cmds += [f"play {colour[i % 2]} {cols[c]}{r + 1}" for i, (c, r) in enumerate(points)]
    cmds += [f"genmove {colour[(len(points) + i) % 2]}" for i in range(moves)]
    cmds += ["showboard", "final_score", "quit"]
    return "\n".join(cmds) + "\n"


# ------------------------------------------------------------------------------------ programs
def _which(prog: str, package: str) -> str:
    path = shutil.which(prog) or (f"/usr/games/{prog}" if Path(f"/usr/games/{prog}").exists() else None)
    if not path:
        raise WorkloadError(f"program {prog!r} not found: install it with `apt-get install {package}` "
                            "(`make setup` does this)")
    return path


def _version(package: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return f"{package} {r.stdout.strip()}" if r.returncode == 0 else f"{package} (version unknown)"


def _write(path: Path, data: bytes | str) -> None:
    if path.exists():
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def prepare_user(uw: UserWorkload, index: int, root: str | Path = "work/inputs") -> Invocation:
    """Input ``index`` of a user workload: its files copied and its generator run (once) in
    ``root``/<name>/<index>, and the command that runs it there."""
    seed = seed_of(uw.name, index)
    cwd = (Path(root) / uw.name / str(index)).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    for f in uw.files:
        data = (uw.here() / f).read_bytes()
        if (cwd / f).exists() and (cwd / f).read_bytes() != data:
            (cwd / f).unlink()   # the file was edited since: take the new one
        _write(cwd / f, data)
    if uw.generate and not (cwd / INPUT_FILE).exists():
        cmd = [uw.fill(a, index) for a in uw.generate]
        try:
            r = subprocess.run(cmd, cwd=cwd, capture_output=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C",
                                                                        **uw.env})
        except OSError as e:
            raise WorkloadError(f"{uw.source}: generate {cmd[0]!r}: {e.strerror}") from None
        if r.returncode != 0:
            raise WorkloadError(f"{uw.source}: generate {' '.join(cmd)} failed (exit {r.returncode}): "
                                f"{r.stderr.decode(errors='replace').strip()[-300:]}")
        _write(cwd / INPUT_FILE, r.stdout)
    stdin = cwd / uw.fill(uw.stdin, index) if uw.stdin else None
    if stdin is not None and not stdin.is_file():
        raise WorkloadError(f"{uw.source}: stdin {uw.stdin!r}: no such file in the input's directory {cwd}")
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cwd.iterdir()) if p.is_file()}
    return Invocation(uw.name, index, seed, (uw.executable(), *(uw.fill(a, index) for a in uw.args)), cwd, files,
                      f"user workload {uw.name} ({Path(uw.source).name}): {uw.program}", stdin=stdin,
                      env=tuple(sorted(uw.env.items())))


def prepare(workload: str | UserWorkload, index: int, root: str | Path = "work/inputs") -> Invocation:
    """Generate (once) the input files of ``workload`` (a built-in's name or a UserWorkload) input
    ``index`` under ``root`` and return the command that runs it. Generation is deterministic;
    existing files are reused."""
    if not isinstance(workload, UserWorkload) and workload not in names():
        raise WorkloadError(f"unknown workload {workload!r}; built-ins: {', '.join(names())} (a workload of your "
                            "own: --workload-file FILE)")
    if not 0 <= index < N_INPUTS:
        raise WorkloadError(f"{workload_name(workload)}: input {index} does not exist (inputs are 0..{N_INPUTS - 1})")
    if isinstance(workload, UserWorkload):
        return prepare_user(workload, index, root)
    seed = seed_of(workload, index)
    cwd = (Path(root) / workload / str(index)).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    if workload in ("bzip2", "xz"):
        _write(cwd / "data.bin", mixed_data(rng))
        prog = _which(workload, "bzip2" if workload == "bzip2" else "xz-utils")
        argv = (prog, "-c", "data.bin") if workload == "bzip2" else (prog, "-T1", "-c", "data.bin")
        version = _version("bzip2" if workload == "bzip2" else "xz-utils")
    elif workload == "hmmer":
        sto, fa = protein_inputs(rng)
        _write(cwd / "fam.sto", sto)
        _write(cwd / "db.fa", fa)
        prog = _which("hmm2search", "hmmer2")
        if not (cwd / "fam.hmm").exists():
            # hmm2build stamps the date and its command line into the model: drop those two lines
            # so that the same seed gives the same bytes
            with tempfile.TemporaryDirectory() as scratch:
                subprocess.run([_which("hmm2build", "hmmer2"), "-F", f"{scratch}/fam.hmm", "fam.sto"], cwd=cwd,
                               check=True, capture_output=True)
                built = Path(scratch, "fam.hmm").read_text()
            _write(cwd / "fam.hmm", "".join(line for line in built.splitlines(True)
                                            if not line.startswith(("DATE ", "COM "))))
        argv, version = (prog, "--cpu", "0", "fam.hmm", "db.fa"), _version("hmmer2")
    elif workload == "gnugo":
        _write(cwd / "game.gtp", gtp_script(rng))
        prog = _which("gnugo", "gnugo")
        argv = (prog, "--seed", "1", "--mode", "gtp", "--gtp-input", "game.gtp", "--level", "1")
        version = _version("gnugo")
    else:
        prog = NATIVE / "kernels" / workload
        if not prog.exists():
            raise WorkloadError(f"kernel {prog} is not built: run `make native`")
        argv, version = (str(prog), str(seed)), f"ncf kernel {workload}"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cwd.iterdir()) if p.is_file()}
    return Invocation(workload, index, seed, argv, cwd, files, version)


def check_env(env: dict, what: str = "--env") -> None:
    """Guest environment variables must be plain names, not QEMU's own nor PWD."""
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key.startswith("QEMU_") or key == "PWD":
            why = {"PWD": " (the guest's working directory is not passed: traces must not depend on it)"}.get(
                key, " (QEMU_* variables would configure the emulator, not the guest)" if key.startswith("QEMU_")
                else "")
            raise WorkloadError(f"{what} {key}=...: not a usable variable name{why}")


def custom(argv: list[str], stdin: str | Path | None = None, env: dict | None = None, index: int = 0) -> Invocation:
    """Any x86-64 Linux user program, run in the current directory, with ``stdin`` (a file) as its
    standard input and ``env`` added to the fixed guest environment; ``index``: which input of the
    program this is (recorded in the trace, and by ``ncf dataset`` in its samples)."""
    prog = shutil.which(argv[0]) or (argv[0] if Path(argv[0]).is_file() else None)
    if not prog:
        raise WorkloadError(f"program {argv[0]!r} not found")
    files = {}
    if stdin is not None:
        stdin = Path(stdin).resolve()
        if not stdin.is_file():
            raise WorkloadError(f"--stdin {stdin}: not a readable file")
        files["<stdin>"] = hashlib.sha256(stdin.read_bytes()).hexdigest()
    env = dict(env or {})
    check_env(env)
    return Invocation(Path(prog).name, index, 0, (str(Path(prog).resolve()), *argv[1:]), Path.cwd(), files,
                      "custom program", own_dir=False, stdin=stdin, env=tuple(sorted(env.items())))
