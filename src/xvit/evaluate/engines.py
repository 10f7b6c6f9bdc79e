"""Execution engines: where the units of a dataset-scale run (chunks of images) are computed.

An engine maps a *worker* over tasks and yields each task's result as it finishes. A worker is a picklable class
built from plain arguments (a run spec as a dict, never a model): it opens model and data once and then computes
one task per call. The maths lives in the worker, so every engine computes the same numbers.

* :class:`LocalEngine`: this process, in task order (today's loop; it can reuse an already opened worker).
* :class:`RayEngine`: an actor pool on a Ray cluster (`Ray <https://docs.ray.io>`_, Moritz et al., OSDI 2018), one
  actor per worker, each loading the model once. Without an address a local Ray instance with this machine's CPUs
  is started and shut down at the end; with one, the job joins that cluster. A failed actor is restarted and its
  unfinished tasks are retried (``max_restarts``, ``max_task_retries``), so results stay identical.
"""

from __future__ import annotations

import abc
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "import_ray", "make_engine"]

RAY_INSTALL = "pip install 'xvit[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"the Ray engine needs Ray; install it with {RAY_INSTALL}.") from None
    return ray


class Engine(abc.ABC):
    """Runs ``worker_cls(*args)`` over tasks; subclasses decide where."""

    name = "engine"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abc.abstractmethod
    def map_unordered(self, worker_cls: type, args: tuple, tasks: Sequence[Any],
                      local_worker: Callable[[Any], Any] | None = None) -> Iterator[Any]:
        """Yield ``worker(task)`` for every task as it finishes; ``local_worker`` is an already opened worker
        that an in-process engine may use instead of building one."""

    def describe(self) -> dict[str, Any]:
        """What the provenance records about the engine and its resources."""
        return {"name": self.name}


class LocalEngine(Engine):
    """This process, tasks in order."""

    name = "local"

    def map_unordered(self, worker_cls: type, args: tuple, tasks: Sequence[Any],
                      local_worker: Callable[[Any], Any] | None = None) -> Iterator[Any]:
        worker = local_worker if local_worker is not None else worker_cls(*args)
        for task in tasks:
            yield worker(task)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "resources": {"CPU": os.cpu_count()}}


class RayEngine(Engine):
    """An actor pool on Ray: ``workers`` actors (default: one per CPU of the cluster), each holding a worker.

    Each actor keeps ``depth`` tasks queued so that it never waits for the driver. Tasks are small (chunk
    bounds); results are fetched as they finish, so the driver holds at most ``workers × depth`` of them.

    Args:
        address: a running cluster (``ray start --head`` prints it, or ``auto``); ``None`` starts a local instance.
        workers: number of actors; ``None``: the cluster's CPUs (GPUs where ``num_gpus`` is set).
        num_cpus, num_gpus: resources each actor claims.
        max_restarts, max_task_retries: how often a dead actor is restarted and its tasks retried.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, *, num_cpus: float = 1,
                 num_gpus: float = 0, max_restarts: int = 3, max_task_retries: int = 3, depth: int = 2) -> None:
        self.ray = import_ray()
        self.address, self.workers, self.num_cpus, self.num_gpus = address, workers, num_cpus, num_gpus
        self.max_restarts, self.max_task_retries, self.depth = max_restarts, max_task_retries, depth
        self.actors: list[Any] = []
        self.resources: dict[str, Any] = {}
        self._started = False

    def __enter__(self) -> RayEngine:
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {"num_cpus": os.cpu_count()}
            self.ray.init(**kwargs, include_dashboard=False, log_to_driver=False)
            self._started = True
        self.resources = {k: v for k, v in self.ray.cluster_resources().items() if not k.startswith("node:")}
        self.resources["nodes"] = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return self

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()
            self._started = False

    def _pool_size(self) -> int:
        if self.workers is not None:
            return self.workers
        resources = self.ray.cluster_resources()
        per = self.num_gpus if self.num_gpus else self.num_cpus
        return max(1, int(resources.get("GPU" if self.num_gpus else "CPU", 1) // per))

    def map_unordered(self, worker_cls: type, args: tuple, tasks: Sequence[Any],
                      local_worker: Callable[[Any], Any] | None = None) -> Iterator[Any]:
        ray = self.ray
        if not ray.is_initialized():
            raise RuntimeError("use the RayEngine as a context manager ('with engine: ...').")
        remote = ray.remote(worker_cls).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                               max_restarts=self.max_restarts,
                                               max_task_retries=self.max_task_retries)
        self.actors = [remote.remote(*args) for _ in range(min(self._pool_size(), max(1, len(tasks))))]
        queue = deque(tasks)
        running: dict[Any, Any] = {}  # object ref -> actor

        def submit(actor: Any) -> None:
            if queue:
                running[actor.__call__.remote(queue.popleft())] = actor

        for actor in self.actors:
            for _ in range(self.depth):
                submit(actor)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            result = ray.get(done[0])
            submit(actor)
            yield result

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address or "local", "workers": len(self.actors),
                "ray": self.ray.__version__, "max_restarts": self.max_restarts,
                "max_task_retries": self.max_task_retries, "resources": self.resources}


ENGINES = {"local": LocalEngine, "ray": RayEngine}


def make_engine(name: str = "local", *, address: str | None = None, workers: int | None = None,
                **options: Any) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); ``address`` and ``workers`` apply to Ray only."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}.")
    if name == "local":
        if address is not None or workers is not None:
            raise ValueError("--address and --workers apply to the Ray engine only (--engine ray).")
        return LocalEngine()
    return RayEngine(address, workers, **options)
