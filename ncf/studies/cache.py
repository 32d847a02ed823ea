"""The one stage cache of every study: a step's result is reused when its inputs, settings and code
are unchanged.

    cache = StageCache("work/cache")
    entry = cache.run("dataset", key={"trace": trace_sha256, "config": asdict(dcfg)},
                      fn=lambda d: build_dataset(trace, sites, d / "data", dcfg), code=("ncf.model.dataset",),
                      label="bzip2-0")
    Dataset(entry.path / "data"); entry.result    # the files fn wrote, and what it returned

An entry is the directory ``root/<step>/<label>-<digest>/``: the files ``fn`` wrote into it and
``stage.json`` (format version, step, key, code version, result, seconds), written last. The label only
names the directory: a finished entry of the same step and digest under another label is reused (the
lead sweep's model at the study's lead is the main table's first seed). The digest
is the sha256 of the key (the inputs' content hashes and the settings) and of the code version: the
sources the named modules (the ones whose functions the step calls) depend on (``code_sources``), so a
change to the code a step runs redoes it, and a change elsewhere does not. ``fn`` writes into the
entry's directory (so that what it records of its own paths stays true), which is removed if ``fn``
fails; ``stage.json`` is written last, atomically, and an entry without it (a killed run) is never
used: it is removed and redone. A lock per entry lets concurrent processes (pytest-xdist workers, Ray
tasks) share it: the second waits, then reuses. ``fresh=True`` redoes each entry once in this run: an entry records the
run that made it, and the run's id travels with the cache object into its Ray tasks.
"""
from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import importlib.util
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ncf.io import jsonable, write_json

FORMAT_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
STAGES = ("trace_eval", "model", "quant", "hw", "rtl_tests")   # folders of their own (ncf.model is model/)
NATIVE = REPO / "trace_eval" / "native"   # the C parts, loaded by name ("libbp.so": native/bp.c)
RESOURCES = (".c", ".h", ".S", ".v", ".sv", ".mk", ".cpp", ".tcl")   # read by the stages, not imported
MODULE_NAME = re.compile(r"ncf(\.\w+)+")
LIBRARY_NAME = re.compile(r"(?:lib)?(\w+)\.so")
C_INCLUDE = re.compile(rb'#include\s+"([^"]+)"')


@functools.cache
def code_version(*modules: str) -> str:
    """sha256 of the sources a step runs (``code_sources``), each with its path."""
    h = hashlib.sha256()
    for f in code_sources(*modules):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@functools.cache
def code_sources(*modules: str) -> tuple[Path, ...]:
    """The files a step's result depends on, from the modules it calls (``ncf.model.dataset``): those
    modules and every ``ncf`` module they import, at any depth and also inside functions, or name in a
    string (cocotb's testbench module); the C sources of the native libraries they name (``"libbp.so"``:
    trace_eval/native/bp.c and the headers it includes); and the non-Python sources (Verilog, C kernels)
    of the stage folders those modules live in. A change to a baseline predictor then keeps the traces,
    and one to the GNN keeps the datasets."""
    todo, seen, files = list(modules), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(name)
        if path is None:
            raise ValueError(f"code_version: {name} is not a module of ncf")
        files.add(path)
        todo.append(name.rpartition(".")[0])   # its packages run when it is imported
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module
                todo.append(base)
                todo += [f"{base}.{a.name}" for a in node.names if _module_path(f"{base}.{a.name}")]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if MODULE_NAME.fullmatch(node.value) and _module_path(node.value):
                    todo.append(node.value)
                elif (lib := LIBRARY_NAME.fullmatch(node.value)) and (NATIVE / f"{lib[1]}.c").exists():
                    c = NATIVE / f"{lib[1]}.c"
                    files |= {c, *(NATIVE / h.decode() for h in C_INCLUDE.findall(c.read_bytes()))}
        todo = [t for t in todo if t == "ncf" or t.startswith("ncf.")]
    for stage in {f.relative_to(REPO).parts[0] for f in files} - {"ncf"}:
        files |= {f for f in (REPO / stage).rglob("*") if f.suffix in RESOURCES and NATIVE not in f.parents}
    return tuple(sorted(files))


def _module_path(name: str) -> Path | None:
    """The source file of ncf module ``name`` (the folders of pyproject.toml's package-dir: ``ncf.model.x``
    is model/x.py), found without importing it; None if it is not one (an attribute, another package)."""
    parts = name.split(".")
    if parts[0] != "ncf":
        return None
    folder, rest = (REPO / parts[1], parts[2:]) if parts[1:2] and parts[1] in STAGES else (REPO / "ncf", parts[1:])
    for f in (folder.joinpath(*rest[:-1], f"{rest[-1]}.py") if rest else None, folder.joinpath(*rest, "__init__.py")):
        if f is not None and f.is_file():
            return f
    return None


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=jsonable).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path          # the entry's directory: what fn wrote
    result: dict        # what fn returned (JSON round-tripped)
    reused: bool


@dataclass
class StageCache:
    root: Path = Path("work/cache")
    fresh: bool = False
    log: Callable[[str], None] | None = print
    _run: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)   # this run, as --fresh sees it

    def run(self, step: str, key: dict, fn: Callable[[Path], dict | None], code: tuple[str, ...] = (),
            label: str = "") -> Entry:
        """``fn(directory)``'s files and result for ``key``, computed once and then reused."""
        d = digest({"key": key, "code": code_version(*code)})
        name = f"{label}-{d[:16]}" if label else d[:16]
        path = Path(self.root) / step / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = path / "stage.json"
            for entry in [path, *sorted(p for p in path.parent.glob(f"*{d[:16]}") if p != path)]:
                rec = self._record(entry, d)
                if rec is not None:
                    self._say(f"[{step}] {name}: reused" + (f" ({entry.name})" if entry != path else ""))
                    return Entry(entry, rec["result"], True)
            self._say(f"[{step}] {name}: running ...")
            t0 = time.monotonic()
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            try:
                result = json.loads(json.dumps(fn(path) or {}, default=jsonable))
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            write_json(done, {"format_version": FORMAT_VERSION, "step": step, "digest": d, "key": key,
                              "code": list(code), "result": result, "seconds": round(time.monotonic() - t0, 2),
                              "run": self._run})
            self._say(f"[{step}] {name}: done in {time.monotonic() - t0:.1f} s")
            return Entry(path, result, False)

    def _record(self, entry: Path, d: str) -> dict | None:
        """The record of a finished entry of digest ``d`` that this run may use (None if there is none)."""
        done = entry / "stage.json"
        if not done.exists():
            return None
        rec = json.loads(done.read_text())
        ok = rec.get("format_version") == FORMAT_VERSION and rec.get("digest") == d
        return rec if ok and (not self.fresh or rec.get("run") == self._run) else None

    def _say(self, msg: str) -> None:
        if self.log:
            self.log(msg)
