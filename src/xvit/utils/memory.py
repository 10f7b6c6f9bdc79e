"""One peak-memory probe: CUDA's allocator statistics on a GPU, a sampled resident set size on the CPU."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

_STATM = "/proc/self/statm"


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``); raises ``OSError`` elsewhere."""
    with open(_STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_kind(device: torch.device) -> str:
    """``"cuda_max_allocated"``, ``"cpu_rss_sampled"`` or ``"unavailable"``: what :class:`PeakMemory` measures."""
    if device.type == "cuda":
        return "cuda_max_allocated"
    return "cpu_rss_sampled" if os.path.exists(_STATM) else "unavailable"


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> None:
    """Collect garbage and return freed heap pages to the operating system (glibc's ``malloc_trim``; a plain
    collection elsewhere), so the resident set size falls back after a burst of work."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PeakMemory:
    """Context manager: ``peak`` is the largest memory increase (bytes) seen while the block ran, or None.

    On CUDA it reads ``max_memory_allocated`` above the allocation at entry; on the CPU a thread samples the
    resident set size every ``interval`` seconds (``trim=True`` first returns freed heap pages to the OS so the
    baseline is not inflated by an earlier call).
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 1e-3, trim: bool = False) -> None:
        self.device = torch.device(device)
        self.kind = memory_kind(self.device)
        self.interval = interval
        self.trim = trim
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.kind == "cpu_rss_sampled":
            trim = _malloc_trim() if self.trim else None
            if trim is not None:
                trim(0)
            self._start = self._max = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: Any) -> None:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, rss_bytes()) - self._start
