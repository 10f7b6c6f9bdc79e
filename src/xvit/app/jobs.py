"""A bounded pool of worker threads for the app's jobs, with progress, cooperative cancellation and a time limit.

A job's body runs in a worker thread. Cancellation and the time limit are checked between steps and, through a
forward pre-hook on every module of the model in use (:func:`interruptible`), before each module's forward pass,
so an expensive method (integrated gradients, SmoothGrad) stops within one layer of being cancelled. Admission is
bounded: once ``max_queue`` jobs are waiting or running, :meth:`JobPool.submit` raises :class:`QueueFullError`
with a retry hint. Finished jobs are kept, newest ``keep``, for their results.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from torch import nn

from xvit.utils.memory import release_memory

log = logging.getLogger("xvit.app")

TERMINAL = ("done", "error", "cancelled", "timed_out")


class JobStopped(Exception):
    """Raised inside a job that was cancelled or ran out of time."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class QueueFullError(RuntimeError):
    """The pool holds ``max_queue`` jobs; ``retry_after`` is a hint in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"The server is busy (its job queue is full); try again in about {retry_after} s.")
        self.retry_after = retry_after


class Job:
    """One unit of work: status, progress in [0, 1], the current stage, and the body's output once done."""

    def __init__(self, kind: str, timeout_s: float) -> None:
        self.id = secrets.token_hex(8)
        self.kind = kind
        self.status = "queued"
        self.progress = 0.0
        self.stage = "waiting for a worker"
        self.message: str | None = None
        self.output: Any = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.timeout_s = timeout_s
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`JobStopped` if the job was cancelled or is past its time limit."""
        if self._cancel.is_set():
            raise JobStopped("cancelled", "Cancelled.")
        if self.started is not None and time.time() - self.started > self.timeout_s:
            raise JobStopped("timed_out", f"Stopped after the server's per-job time limit of {self.timeout_s:g} s.")

    def advance(self, stage: str, done: float, total: float) -> None:
        """Report the current stage and the share done; checks for cancellation first."""
        self.check()
        self.stage = stage
        self.progress = min(1.0, done / total) if total > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """The job's state as the page polls it."""
        end = self.finished or time.time()
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": round(self.progress, 4),
                "stage": self.stage, "message": self.message,
                "seconds": round(end - self.started, 3) if self.started else 0.0}


@contextlib.contextmanager
def interruptible(model: nn.Module, job: Job) -> Iterator[None]:
    """Check ``job`` before every module's forward pass of ``model``; the hooks are removed on exit."""

    def check(module: nn.Module, args: Any) -> None:
        job.check()

    handles = [m.register_forward_pre_hook(check) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class JobPool:
    """``workers`` threads, at most ``max_queue`` jobs waiting or running, the newest ``keep`` finished jobs
    kept."""

    def __init__(self, workers: int, max_queue: int, timeout_s: float, keep: int) -> None:
        self.workers = max(1, workers)
        self.max_queue = max(1, max_queue)
        self.timeout_s = timeout_s
        self.keep = max(1, keep)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="xvit-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._durations: list[float] = []

    def active(self) -> int:
        with self._lock:
            return sum(j.status not in TERMINAL for j in self._jobs.values())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean recent job time times the queue per worker."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * self.max_queue / self.workers))

    def submit(self, kind: str, body: Callable[[Job], Any]) -> tuple[Job, Future]:
        """Queue ``body(job)``; its return value becomes ``job.output``. Raises :class:`QueueFullError`."""
        job = Job(kind, self.timeout_s)
        with self._lock:
            if sum(j.status not in TERMINAL for j in self._jobs.values()) >= self.max_queue:
                raise QueueFullError(self.retry_after())
            self._jobs[job.id] = job
            self._trim()
        return job, self._executor.submit(self._run, job, body)

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job with id {job_id!r} (finished jobs are kept only for a while)")
            return self._jobs[job_id]

    def shutdown(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, body: Callable[[Job], Any]) -> Any:
        job.started = time.time()
        job.status = "running"
        try:
            job.check()
            job.output = body(job)
            job.status, job.progress, job.stage = "done", 1.0, "done"
        except JobStopped as e:
            job.status, job.message, job.stage = e.status, str(e), e.status.replace("_", " ")
        except Exception as e:  # any failure of a job is reported to its page, not raised
            log.warning("job %s (%s) failed: %s", job.id, job.kind, e, exc_info=not isinstance(e, ValueError))
            job.status, job.message, job.stage = "error", _message(e), "failed"
        finally:
            job.finished = time.time()
            with self._lock:
                self._durations = (self._durations + [job.finished - job.started])[-20:]
                self._trim()
                idle = not any(j.status not in TERMINAL for j in self._jobs.values())
            # Freed memory goes back to the system once the pool is idle: a full collection holds the interpreter
            # lock for a while, so it does not run after every job under load.
            if idle:
                release_memory()
        return job.output

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in TERMINAL]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[k]


def _message(e: Exception) -> str:
    """A one-line message for the page (a KeyError's text without its quotes)."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return (str(text).strip().splitlines() or [type(e).__name__])[0]
