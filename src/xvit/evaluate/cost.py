"""Wall-clock time and peak memory of a callable, per image, and the ``cost`` metric of an evaluation run.

What is measured:

* **Time**: median wall-clock seconds over ``repeats`` calls after ``warmup`` calls, CUDA synchronised before
  and after each call; divided by ``n_images``.
* **Memory on CUDA**: ``torch.cuda.max_memory_allocated`` during the call minus the allocation before it, the
  peak of tensors the call added (the caching allocator's reserve is not counted).
* **Memory on CPU**: peak increase of the process's resident set size over its level before the call,
  sampled from ``/proc/self/statm`` by a background thread every ``sample_interval`` seconds. Spikes shorter
  than the interval can be missed, and memory the allocator kept from earlier calls and reuses is not counted,
  so this is a lower bound. ``None`` where ``/proc`` is unavailable (not Linux).

The ``cost`` metric (:class:`ExplanationCost`) is fed the run's own measurement of each explanation call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from xvit.evaluate.base import Column, Metric, MetricResult, register_metric, summarize
from xvit.evaluate.inputs import MetricInput
from xvit.utils.memory import PeakMemory

__all__ = ["Cost", "ExplanationCost", "measure_cost"]

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


@register_metric("cost", citation="xvit: wall-clock time and peak memory of the run's explanation calls "
                 "(xvit.evaluate.measure_cost)")
class ExplanationCost(Metric):
    """Time per image and peak memory of the explanation calls of an evaluation run.

    Fed the run's measurement of each chunk's explanation call (one unmeasured warm-up call per method comes
    first, ``probe_cost``) and of the clean forward pass over the same images. The per-image score is the
    chunk's seconds divided by its images.

    ``compute()``: ``value`` = mean seconds per image; ``summary`` has ``seconds_per_image``,
    ``forward_seconds_per_image``, ``relative_to_forward`` (the ratio of the two), ``peak_memory_bytes`` (largest
    over the chunks, ``None`` where not measurable), ``memory_kind`` and ``device``.
    """

    higher_is_better = False
    param_constraints: dict[str, Any] = {}
    columns = (Column("cost", higher_is_better=False, display=("relative_to_forward", "peak_memory_bytes"),
                      per_image="cost_seconds", unit="ms/img"),)
    probe_cost = True

    def reset(self) -> None:
        super().reset()
        self._memory_kind: str | None = None
        self._device: str | None = None

    def state_dict(self) -> dict[str, Any]:
        """The base state plus ``memory_kind`` and ``device`` of the first measurement."""
        return {**super().state_dict(), "memory_kind": self._memory_kind, "device": self._device}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """As :meth:`Metric.merge_state`; the first memory kind and device seen are kept."""
        super().merge_state(state)
        if self._memory_kind is None:
            self._memory_kind, self._device = state["memory_kind"], state["device"]

    def update(self, seconds: float, n_images: int, forward_seconds: float, peak_memory_bytes: int | None = None,
               memory_kind: str = "unavailable", device: str = "cpu") -> None:
        """Add one measured call.

        Args:
            seconds: wall-clock seconds of the explanation call for ``n_images`` images.
            n_images: images of the call.
            forward_seconds: seconds of a plain forward pass over the same images.
            peak_memory_bytes: peak additional memory of the call, or ``None``.
            memory_kind, device: as in :class:`Cost`.
        """
        self._append(seconds=torch.full((n_images,), seconds / n_images),
                     forward_seconds=torch.tensor([forward_seconds], dtype=torch.float64),
                     peak_memory_bytes=torch.tensor([-1 if peak_memory_bytes is None else peak_memory_bytes],
                                                    dtype=torch.long))
        if self._memory_kind is None:
            self._memory_kind, self._device = memory_kind, device

    def update_from(self, inp: MetricInput) -> None:
        """The chunk's explanation call and clean forward pass."""
        self.update(inp.timing.seconds, inp.x.shape[0], inp.forward_timing.seconds, inp.timing.peak_memory_bytes,
                    inp.timing.memory_kind, str(inp.x.device))

    def compute(self) -> MetricResult:
        seconds = self._cat("seconds").cpu()
        forward = float(self._cat("forward_seconds").sum()) / seconds.numel()
        peaks = self._cat("peak_memory_bytes")
        peaks = peaks[peaks >= 0]
        mean = summarize(seconds)["mean"]
        summary = {"seconds_per_image": mean, "forward_seconds_per_image": forward,
                   "relative_to_forward": mean / forward if forward > 0 else math.nan,
                   "peak_memory_bytes": int(peaks.max()) if peaks.numel() else None,
                   "memory_kind": self._memory_kind, "device": self._device}
        return self._result(seconds, summary=summary)

    @classmethod
    def format_cell(cls, row: Mapping[str, Any]) -> str:
        return f"{1000 * row['mean']:.3g} ms/img" if row["mean"] is not None else "–"
