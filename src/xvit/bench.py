"""Time and peak memory of explanation methods, relative to plain passes of the same model.

Every method and both baselines run on the same random batch, in the same run; the baselines run inside
the model adapter's ``eager_attention()`` context, the same explicit attention path the explainers use. The baselines
are a forward pass under ``torch.no_grad()`` and a plain forward+backward pass: the gradient of the summed
logits with respect to the input and every parameter that requires one, which is what ``loss.backward()``
computes (taken with ``torch.autograd.grad``, so the model's ``.grad`` stay untouched).
Times are the median of ``repeats`` calls after ``warmup`` calls.

Peak memory is measured in one extra call. On CUDA it is ``torch.cuda.max_memory_allocated`` minus
what was allocated before the call. On the CPU it is the largest increase of the process's resident set
size (RSS), read from ``/proc/self/statm`` by a thread every millisecond, after ``malloc_trim`` asked
glibc to return freed memory so that memory cached by earlier calls does not hide the increase. It
counts all memory of the process, not only tensors, and can miss peaks shorter than a millisecond;
where ``/proc`` does not exist it is ``None``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

import xvit
from xvit.adapters import get_adapter
from xvit.data.preprocess import channels, normalise
from xvit.models import preprocessing_for
from xvit.utils.logits import unwrap_logits
from xvit.utils.memory import PeakMemory

__all__ = ["run_benchmark", "format_table"]


def run_benchmark(model: nn.Module, methods: Sequence[str], batch_size: int = 8,
                  image_size: int | tuple[int, int] | None = None, repeats: int = 5,
                  warmup: int = 1) -> list[dict[str, Any]]:
    """Benchmark ``methods`` on ``model`` with random pixels, normalised as the model expects, on its device.

    Args:
        model: the model; it stays on its device.
        methods: registered method names (see :func:`xvit.methods`).
        batch_size: images per call.
        image_size: input side (or ``(H, W)``); the model's preprocessing size when omitted.
        repeats: timed calls per method; the median is reported.
        warmup: untimed calls before timing.

    Returns:
        One row per baseline (``forward``, ``forward+backward``) and per method, with
        ``seconds_per_image``, ``peak_mib`` (None where unmeasurable), time ratios ``x_forward`` and
        ``x_forward_backward``, and the memory ratio ``mem_x_forward_backward``.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size and repeats must be >= 1 and warmup >= 0.")
    param = next(model.parameters())
    device = param.device
    prep = preprocessing_for(model)
    h, w = prep.size if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size))
    pixels = torch.rand(batch_size, channels(prep), h, w, generator=torch.Generator().manual_seed(0))
    x = normalise(pixels, prep)
    x = x.to(device, param.dtype)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    params = [p for p in model.parameters() if p.requires_grad]

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(unwrap_logits(model(xg)).sum(), [xg, *params])

    rows = []
    with get_adapter(model).eager_attention():
        for name, fn in (("forward", forward), ("forward+backward", forward_backward)):
            rows.append(_row(name, *_measure(fn, repeats, warmup, device)))
    for method in methods:
        with xvit.Explainer(model, method=method) as explainer:
            rows.append(_row(method, *_measure(lambda e=explainer: e(x), repeats, warmup, device)))
    for r in rows:
        r.update(batch_size=batch_size, image_size=[h, w], repeats=repeats, device=str(device))
        r["seconds_per_image"] = r.pop("seconds") / batch_size
    fwd, fwd_bwd = rows[0], rows[1]
    for r in rows:
        r["x_forward"] = r["seconds_per_image"] / fwd["seconds_per_image"]
        r["x_forward_backward"] = r["seconds_per_image"] / fwd_bwd["seconds_per_image"]
        base = fwd_bwd["peak_mib"]
        r["mem_x_forward_backward"] = r["peak_mib"] / base if r["peak_mib"] is not None and base else None
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`run_benchmark` as a Markdown table."""
    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = ["| method | ms / image | × forward | × fwd+bwd | peak MiB | memory × fwd+bwd |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['seconds_per_image'] * 1e3:.2f} | {r['x_forward']:.2f} | "
              f"{r['x_forward_backward']:.2f} | {num(r['peak_mib'], '.1f')} | "
              f"{num(r['mem_x_forward_backward'], '.2f')} |" for r in rows]
    return "\n".join(lines)


def _row(method: str, seconds: float, peak_bytes: int | None) -> dict[str, Any]:
    peak_mib = None if peak_bytes is None else peak_bytes / 2**20
    return {"method": method, "seconds": seconds, "peak_mib": peak_mib}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn: Callable[[], Any], repeats: int, warmup: int,
             device: torch.device) -> tuple[float, int | None]:
    """Median seconds per call and peak memory increase in bytes of one further call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    gc.collect()
    with PeakMemory(device, trim=True) as probe:
        fn()
    return statistics.median(times), probe.peak
