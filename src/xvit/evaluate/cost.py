"""Wall-clock time and peak memory of a callable, per image (for the cost columns of an evaluation run).

What is measured:

* **Time**: median wall-clock seconds over ``repeats`` calls after ``warmup`` calls, CUDA synchronised before
  and after each call; divided by ``n_images``.
* **Memory on CUDA**: ``torch.cuda.max_memory_allocated`` during the call minus the allocation before it, the
  peak of tensors the call added (the caching allocator's reserve is not counted).
* **Memory on CPU**: peak increase of the process's resident set size over its level before the call,
  sampled from ``/proc/self/statm`` by a background thread every ``sample_interval`` seconds. Spikes shorter
  than the interval can be missed, and memory the allocator kept from earlier calls and reuses is not counted,
  so this is a lower bound. ``None`` where ``/proc`` is unavailable (not Linux).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from xvit.utils.memory import PeakMemory

__all__ = ["Cost", "measure_cost"]

@dataclass(frozen=True)
class Cost:
    """Result of :func:`measure_cost`.

    Attributes:
        seconds: median wall-clock seconds of one call.
        seconds_per_image: ``seconds / n_images``.
        peak_memory_bytes: peak additional memory of one call (largest over the repeats), or ``None``.
        memory_kind: ``"cuda_max_allocated"``, ``"cpu_rss_sampled"`` or ``"unavailable"``.
        device: the device measured.
    """

    seconds: float
    seconds_per_image: float
    peak_memory_bytes: int | None
    memory_kind: str
    device: str


def measure_cost(fn: Callable[[], Any], n_images: int, *, device: str | torch.device = "cpu", warmup: int = 1,
                 repeats: int = 3, sample_interval: float = 0.001) -> Cost:
    """Time ``fn()`` and measure its peak memory; see the module docstring for what exactly is measured.

    Args:
        fn: zero-argument callable doing the work for ``n_images`` images (e.g. a ``functools.partial``).
        n_images: images processed by one call.
        device: device the work runs on (``"cuda…"`` switches to CUDA timing and memory).
        warmup: unmeasured calls first (lazy initialisation, autotuning).
        repeats: measured calls.
        sample_interval: RSS sampling period on CPU, in seconds.

    Returns:
        A :class:`Cost`.
    """
    if n_images < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"Expected n_images >= 1, repeats >= 1 and warmup >= 0; got {n_images}, {repeats}, "
                         f"{warmup}.")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    for _ in range(warmup):
        fn()
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(dev, interval=sample_interval) as probe:
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        if probe.peak is not None:
            peaks.append(probe.peak)
    kind = probe.kind
    seconds = statistics.median(times)
    return Cost(seconds=seconds, seconds_per_image=seconds / n_images,
                peak_memory_bytes=max(peaks) if peaks else None, memory_kind=kind, device=str(dev))
