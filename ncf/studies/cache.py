"""The one stage cache of every study: a step's result is reused when its inputs, settings and code
are unchanged.

    cache = StageCache("work/cache")
    entry = cache.run("dataset", key={"trace": trace_sha256, "config": asdict(dcfg)},
                      fn=lambda d: build_dataset(trace, sites, d / "data", dcfg), code=("model",),
                      label="bzip2-0")
    Dataset(entry.path / "data"); entry.result    # the files fn wrote, and what it returned

An entry is the directory ``root/<step>/<label>-<digest>/``: the files ``fn`` wrote into it and
``stage.json`` (format version, step, key, code version, result, seconds), written last. The digest
is the sha256 of the key (the inputs' content hashes and the settings) and of the code version: the
sources of the named stage packages and of every stage upstream of them (``ncf/io.py`` included),
so a change to the code a step runs redoes it. ``fn`` writes into the entry's directory (so that
what it records of its own paths stays true), which is removed if ``fn`` fails; ``stage.json`` is
written last, atomically, and an entry without it (a killed run) is never used: it is removed and
redone. A lock per entry lets concurrent processes (pytest-xdist workers, Ray tasks) share it: the
second waits, then reuses. ``fresh=True`` redoes each entry once in this run: an entry records the
run that made it, and the run's id travels with the cache object into its Ray tasks.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ncf.io import jsonable, write_json

FORMAT_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
STAGES = ("trace_eval", "model", "quant", "hw", "rtl_tests")   # in pipeline order


@functools.cache
def code_version(*packages: str) -> str:
    """sha256 of the sources (Python, C, Verilog) of ``packages``, the stages upstream of the latest
    of them, and ``ncf/io.py``."""
    last = max((STAGES.index(p) for p in packages), default=-1)
    h = hashlib.sha256()
    for d in STAGES[:last + 1]:
        for f in sorted((REPO / d).rglob("*")):
            if f.suffix in (".py", ".c", ".h", ".S", ".v", ".mk") and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    h.update((REPO / "ncf" / "io.py").read_bytes())
    return h.hexdigest()


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
            if done.exists():
                rec = json.loads(done.read_text())
                if (rec.get("format_version") == FORMAT_VERSION and rec.get("digest") == d
                        and (not self.fresh or rec.get("run") == self._run)):
                    self._say(f"[{step}] {name}: reused")
                    return Entry(path, rec["result"], True)
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

    def _say(self, msg: str) -> None:
        if self.log:
            self.log(msg)
