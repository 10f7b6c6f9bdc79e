"""Shared machinery of the evaluation metrics: registry, result type, metric base class, batched perturbation.

A metric is a pair, after torchmetrics: a class with ``update(...)``/``compute()`` that accumulates per-image
pieces over batches, and a functional twin that runs one ``update`` and ``compute``. Every metric returns one
:class:`MetricResult`. Perturbation metrics stack the perturbed copies of all images along the batch axis and
send them through the model in chunks of ``batch_size`` (no per-image loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from xvit.params import InvalidParameterError, validate_params
from xvit.registry import Registry
from xvit.utils.logits import unwrap_logits

__all__ = ["METRICS", "Metric", "MetricResult", "get_metric", "metrics"]

METRICS: Registry[type[Metric]] = Registry("metric", "xvit.evaluate.metrics()")


def metrics() -> dict[str, dict[str, Any]]:
    """Registered metrics: ``{name: info}`` (``higher_is_better``, ``inputs`` of ``update``, ``paper``)."""
    return {name: METRICS.info(name) for name in METRICS.names()}


def get_metric(name: str) -> type[Metric]:
    """The metric class registered as ``name``; unknown names raise ``KeyError`` with close matches."""
    return METRICS.get(name)


@dataclass(frozen=True)
class MetricResult:
    """What every metric's ``compute()`` returns.

    Attributes:
        name: registry name of the metric.
        value: the headline dataset-level number (each metric's docstring says which).
        scores: ``(N,)`` per-image scores, NaN where an image is excluded or undefined.
        mean: mean of the finite ``scores``.
        ci95: ``mean ± 1.96·std/√n`` over the finite scores (sample std; NaN for fewer than two).
        n: number of finite scores.
        higher_is_better: direction of ``value``; ``None`` where the ideal is a target value.
        summary: all dataset-level numbers (including ``value``).
        curves: ``(N, S)`` per-image curves for curve metrics, else ``None``.
        curve_x: ``(S,)`` x-axis of ``curves``.
        per_image: further per-image pieces keyed by name (first axis N).
        forward_passes: model forward passes on single images (images × perturbed copies); 0 for metrics
            that only read maps.
        params: the metric's parameters as given.
    """

    name: str
    value: float
    scores: Tensor
    mean: float
    ci95: tuple[float, float]
    n: int
    higher_is_better: bool | None
    summary: dict[str, Any] = field(default_factory=dict)
    curves: Tensor | None = None
    curve_x: Tensor | None = None
    per_image: dict[str, Tensor] = field(default_factory=dict)
    forward_passes: int = 0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """A parameter constraint: a predicate and the phrase that describes it (for ``validate_params``)."""

    predicate: Callable[[Any], bool]
    description: str

    def accepts(self, v: Any) -> bool:
        return self.predicate(v)

    def describe(self) -> str:
        return self.description


def _is_channel_stats(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) > 0
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v))


CHANNEL_MEAN = Check(_is_channel_stats, "a tuple of finite floats, one per channel")
CHANNEL_STD = Check(lambda v: _is_channel_stats(v) and all(c > 0 for c in v),
                    "a tuple of positive floats, one per channel")


class Metric:
    """Base class: keyword parameters validated against ``param_constraints``, list states, ``reset``.

    Subclasses set ``name``, ``higher_is_better`` and ``param_constraints``, call ``_append`` in ``update``
    and build their result with ``_result`` in ``compute``. Subclasses with accumulated state beyond the
    appended pieces and ``forward_passes`` extend :meth:`state_dict` and :meth:`merge_state`.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool | None]
    param_constraints: ClassVar[dict[str, Any]]

    def __init__(self, **params: Any) -> None:
        validate_params(self.name, params, self.param_constraints)
        self._params = dict(params)
        for key, value in params.items():
            setattr(self, key, value)
        self.reset()

    def get_params(self) -> dict[str, Any]:
        """The parameters exactly as given to ``__init__``."""
        return dict(self._params)

    def reset(self) -> None:
        """Forget everything accumulated by ``update``."""
        self._state: dict[str, list[Tensor]] = {}
        self._forward_passes = 0

    def state_dict(self) -> dict[str, Any]:
        """What ``update`` has accumulated, parameters excluded: ``pieces`` (``{name: [one tensor per batch]}``,
        in update order) and ``forward_passes``, plus any fields a subclass adds. Holds only tensors, lists,
        dicts, strings, numbers and ``None``, so ``torch.save``/``torch.load(weights_only=True)`` keep it."""
        return {"pieces": {k: list(v) for k, v in self._state.items()}, "forward_passes": self._forward_passes}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """Add another metric's :meth:`state_dict` (same class and parameters) after what this one holds.

        ``compute()`` then returns what one metric updated with this one's batches and then the other's would
        (every metric accumulates batches exactly, tests/evaluate/test_accumulation.py); merging into a fresh
        metric restores a saved state.
        """
        for key, pieces in state["pieces"].items():
            self._state.setdefault(key, []).extend(pieces)
        self._forward_passes += state["forward_passes"]

    def _append(self, **pieces: Tensor) -> None:
        for key, value in pieces.items():
            self._state.setdefault(key, []).append(value.detach())

    def _cat(self, key: str) -> Tensor:
        if not self._state:
            raise RuntimeError(f"{self.name}: compute() was called before any update().")
        return torch.cat(self._state[key])

    def _has(self, key: str) -> bool:
        return key in self._state

    def _result(self, scores: Tensor, *, value: float | None = None, higher_is_better: bool | None = None,
                **fields: Any) -> MetricResult:
        stats = summarize(scores)
        hib = self.higher_is_better if higher_is_better is None else higher_is_better
        return MetricResult(name=self.name, value=stats["mean"] if value is None else float(value),
                            scores=scores, mean=stats["mean"], ci95=(stats["low"], stats["high"]),
                            n=stats["n"], higher_is_better=hib, forward_passes=self._forward_passes,
                            params=self.get_params(), **fields)


def summarize(scores: Tensor) -> dict[str, Any]:
    """Mean and normal 95 % interval ``mean ± 1.96·std/√n`` of the finite entries of ``scores``."""
    s = scores.detach().double().flatten()
    s = s[torch.isfinite(s)]
    n = int(s.numel())
    mean = float(s.mean()) if n else math.nan
    half = 1.96 * float(s.std()) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


# ----------------------------------------------------------------------------------------------- inputs


def check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected {name} as a normalised float image batch (B, C, H, W); got {got}.")


def check_maps(maps: Tensor, x_shape: tuple[int, ...] | None = None, name: str = "maps") -> None:
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"Expected {name} of shape (B, H, W); got {got}. Squeeze a channel axis of size 1.")
    if x_shape is not None and (maps.shape[0] != x_shape[0] or tuple(maps.shape[1:]) != tuple(x_shape[2:])):
        raise ValueError(f"{name} {tuple(maps.shape)} does not match the images {tuple(x_shape)}: expected "
                         f"({x_shape[0]}, {x_shape[2]}, {x_shape[3]}). Upsample maps to input resolution.")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values.")


def check_masks(masks: Tensor, maps_shape: tuple[int, ...], name: str = "masks") -> None:
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool or tuple(masks.shape) != tuple(maps_shape):
        got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"Expected {name} as a bool tensor of shape {tuple(maps_shape)}; got {got}.")


def check_classes(t: Tensor, batch: int, name: str) -> None:
    if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != batch or t.is_floating_point():
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"Expected {name} as an integer tensor of shape ({batch},); got {got}.")


def param_error(owner: str, name: str, message: str) -> InvalidParameterError:
    return InvalidParameterError(f"The {name!r} parameter of {owner} {message}")


# ----------------------------------------------------------------------------------------------- maths


def pixel_ranks(maps: Tensor) -> Tensor:
    """Rank of every pixel, 0 for the most relevant: stable sort on (−value, flat index) (evaluation.md §0).

    Args:
        maps: ``(B, H, W)``.

    Returns:
        ``(B, H·W)`` long tensor; pixel ``p`` of image ``b`` is removed in a state that removes ``n`` pixels
        iff ``ranks[b, p] < n``.
    """
    order = torch.sort(-maps.flatten(1), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


@torch.no_grad()
def perturbed_outputs(model: Callable[[Tensor], Any], x: Tensor, ranks: Tensor, counts: Tensor,
                      changed: Tensor, kept: Tensor, reduce: Callable[[Tensor, Tensor], Tensor],
                      batch_size: int) -> Tensor:
    """Score every image in every perturbation state, with all states stacked along the batch axis.

    State ``k`` of image ``b`` takes the ``counts[k]`` top-ranked pixels (all channels) from ``changed[b]``
    and the others from ``kept[b]``. The ``B·S`` states are built and classified chunk by chunk,
    ``batch_size`` at a time, so memory stays bounded.

    Args:
        model: callable returning logits for a normalised batch.
        x: ``(B, C, H, W)`` images (for shape and device).
        ranks: ``(B, H·W)`` from :func:`pixel_ranks`.
        counts: ``(S,)`` number of changed pixels per state.
        changed, kept: ``(B, C, H, W)`` sources (expanded views are fine).
        reduce: ``reduce(logits, image_index) -> (chunk, ...)``, applied to each chunk's logits.
        batch_size: images per forward pass.

    Returns:
        ``(B, S, ...)`` stacked outputs of ``reduce``.
    """
    b, _, h, w = x.shape
    s = counts.numel()
    counts = counts.to(ranks.device)
    outputs = []
    for start in range(0, b * s, batch_size):  # loop over chunks of stacked copies, not over images
        flat = torch.arange(start, min(start + batch_size, b * s), device=x.device)
        img, step = flat // s, flat % s
        mask = (ranks[img] < counts[step, None]).view(-1, 1, h, w)
        states = torch.where(mask, changed[img], kept[img])
        outputs.append(reduce(unwrap_logits(model(states)), img))
    out = torch.cat(outputs)
    return out.view(b, s, *out.shape[1:])


def black_value(mean: tuple[float, ...], std: tuple[float, ...], like: Tensor) -> Tensor:
    """Normalised value of a black pixel, ``(0 − mean) / std`` per channel, shaped ``(1, C, 1, 1)``."""
    if len(mean) != like.shape[1] or len(std) != like.shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries but the images have {like.shape[1]} "
                         "channels; pass the checkpoint's per-channel normalisation.")
    m = torch.tensor(mean, dtype=like.dtype, device=like.device)
    sd = torch.tensor(std, dtype=like.dtype, device=like.device)
    return (-m / sd).view(1, -1, 1, 1)
