"""Ray under the studies: the embarrassingly parallel steps (traces with their self-check, datasets,
baselines, the points of every sweep) as Ray tasks, each going through the one stage cache.

    engine = Engine(workers=0)                       # 0: a local Ray on every CPU, started in-process
    traces = engine.map(trace_task, [(cache, inv, skip, n) for inv in invocations])
    engine = Engine(address="auto")                  # a running Ray cluster (or RAY_ADDRESS)
    engine = Engine(workers=1)                       # serial, in this process, no Ray

``map(fn, args)`` returns ``[fn(*a) for a in args]`` in order, whatever ran where: a task is a
module-level function of picklable arguments; it runs in the driver's working directory (relative
paths mean the same thing in every task) and writes only through the stage cache, whose entries are
atomic, so a failed task fails the run with its own message while every finished task's entry stays
for the re-run, which redoes only what is missing. On a cluster the cache directory and the working
directory must be on a file system every node sees (README, "Scaling out").
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ncf.io import UsageError


def _in_cwd(cwd: str, fn: Callable, args: tuple):
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


@dataclass(frozen=True)
class Engine:
    workers: int = 0                # tasks at once on a local Ray: 0 = every CPU; 1 = serial, no Ray
    address: str | None = None      # a Ray cluster ("auto", "ray://head:10001"); default $RAY_ADDRESS

    def __post_init__(self):
        if self.workers < 0:
            raise UsageError(f"workers {self.workers}: must be >= 0 (0 = every CPU, 1 = serial)")

    @property
    def cluster(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None

    @property
    def serial(self) -> bool:
        return self.cluster is None and (self.workers == 1 or (self.workers == 0 and (os.cpu_count() or 1) == 1))

    def map(self, fn: Callable, args: Sequence[tuple], desc: str = "tasks", progress: bool = True) -> list:
        """``[fn(*a) for a in args]``, as Ray tasks unless serial (or a single task), with a progress bar."""
        from tqdm import tqdm

        args = [tuple(a) for a in args]
        bar = tqdm(total=len(args), desc=desc, unit="task", leave=False, disable=not progress or len(args) <= 1)
        with bar:
            if self.serial or len(args) <= 1:
                out = []
                for a in args:
                    out.append(fn(*a))
                    bar.update()
                return out
            ray = self._ray()
            task = ray.remote(num_cpus=1, max_retries=0)(_in_cwd)
            refs = [task.remote(os.getcwd(), fn, a) for a in args]
            todo = list(refs)
            try:
                while todo:
                    done, todo = ray.wait(todo, num_returns=1)
                    ray.get(done)           # a failed task raises here, at once
                    bar.update(len(done))
                return ray.get(refs)
            except ray.exceptions.RayTaskError as e:
                for r in todo:          # interrupted, a running step removes its half-made cache entry
                    ray.cancel(r)
                raise (e.cause if isinstance(e.cause, Exception) else e) from None

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UsageError("Ray is not installed in this environment: run `make setup` (it is pinned in "
                             "requirements.lock), or pass --workers 1 to run serially") from None
        if not ray.is_initialized():
            if self.cluster:
                ray.init(address=self.cluster, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False, object_store_memory=256 * 2**20)
        return ray


def settings(cfg) -> dict:
    """A study config's fields without where it ran (``workers``, ``ray_address``): what its tables
    record, the same for a serial run, a local Ray and a cluster."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("workers", "ray_address")}
