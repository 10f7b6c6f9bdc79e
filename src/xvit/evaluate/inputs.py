"""What the evaluation runner hands a metric: :class:`RunContext` to build it, :class:`MetricInput` to update it.

The runner builds every metric with ``Metric.from_run(context, params)`` and feeds it one :class:`MetricInput` per
chunk of images through ``Metric.update_from(input)``; each metric picks the pieces it needs, so the runner never
names a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from xvit.result import Explanation
from xvit.utils.batching import rows_per_pass
from xvit.utils.maps import upsample_maps

__all__ = ["MetricInput", "RunContext", "Timing", "energy_maps"]


@dataclass(frozen=True)
class RunContext:
    """The run's settings a metric may build its parameters from (``Metric.from_run``).

    Attributes:
        options: the run options (``batch_size``, ``class_explained``, ``seed``, ``deletion_insertion_steps``,
            ``forward_batch_size``, ``randomization_images``, ``max_images``).
        mean, std: the model's per-channel normalisation.
        method: the method whose maps the metric scores, and its parameters (defaults filled in).
        method_params: parameters of ``method``.
        device: where the model runs.
    """

    options: Mapping[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str
    method_params: Mapping[str, Any]
    device: torch.device

    def forward_rows(self) -> int:
        """Perturbed images per forward pass: the run's ``forward_batch_size``, else the device's default."""
        return rows_per_pass(self.options["forward_batch_size"], self.device, 128)


@dataclass(frozen=True)
class Timing:
    """One timed call: wall-clock ``seconds``, peak additional memory (``None`` when not probed) and its kind."""

    seconds: float
    peak_memory_bytes: int | None
    memory_kind: str


@dataclass(frozen=True)
class MetricInput:
    """One chunk of ``B`` images explained by one method, with everything a metric may score.

    Attributes:
        model: the evaluated model (eval mode).
        x: ``(B, C, H, W)`` normalised images.
        explanation: the method's :class:`~xvit.Explanation` of ``targets`` (``K = 1``).
        targets: ``(B,)`` explained classes.
        labels: ``(B,)`` ground truth (on two-object images the labelled class the model scores higher); the
            clean prediction where the data set has no labels.
        predicted: ``(B,)`` the clean prediction.
        masks: ``(B, H, W)`` bool mask of the explained class (empty where it is not labelled), or ``None``.
        foreground: ``(B, H, W)`` bool union of the object masks, or ``None``.
        object_masks: ``(B, 2, H, W)`` bool masks of both objects on two-object images, else ``None``.
        object_labels: ``(B, 2)`` labels of both objects on two-object images, else ``None``.
        markers: ``(B, H, W)`` bool spurious-marker masks, or ``None``.
        pair_explanation: explanation of both ``object_labels`` (``K = 2``) where a metric requires pairs.
        indices: positions of the images in the data set.
        relevance_start: the method's declared relevance start (``"one_hot"`` for LRP started from a one-hot
            output), or ``None``.
        timing: the explanation call; forward_timing: the clean forward pass over the same images.
    """

    model: nn.Module
    x: Tensor
    explanation: Explanation
    targets: Tensor
    labels: Tensor
    predicted: Tensor
    masks: Tensor | None
    foreground: Tensor | None
    object_masks: Tensor | None
    object_labels: Tensor | None
    markers: Tensor | None
    pair_explanation: Explanation | None
    indices: Sequence[int]
    relevance_start: str | None
    timing: Timing
    forward_timing: Timing

    @property
    def maps(self) -> Tensor:
        """``(B, H, W)`` float maps at input resolution (min-max normalised, ``Explanation.maps``)."""
        return self.explanation.maps[:, 0].float()

    def subset(self, keep: Sequence[int]) -> MetricInput:
        """The input restricted to the images at positions ``keep`` of this chunk."""
        rows = torch.as_tensor(list(keep), dtype=torch.long)
        b = self.x.shape[0]
        changes: dict[str, Any] = {"indices": [self.indices[i] for i in keep]}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.ndim and value.shape[0] == b:
                changes[f.name] = value[rows.to(value.device)]
            elif isinstance(value, Explanation):
                changes[f.name] = _rows(value, rows, b)
        return replace(self, **changes)


def _rows(exp: Explanation, rows: Tensor, b: int) -> Explanation:
    def pick(v: Any) -> Any:
        return v[rows.to(v.device)] if isinstance(v, Tensor) and v.ndim and v.shape[0] == b else v

    return replace(exp, raw=pick(exp.raw), maps=pick(exp.maps), targets=pick(exp.targets), logits=pick(exp.logits),
                   meta={k: pick(v) for k, v in exp.meta.items()})


def energy_maps(exp: Explanation, part: str) -> Tensor:
    """Maps ``(B, K, H, W)`` for the energy metrics. Min-max normalising a signed map moves zero to a mid
    level, so every region would get energy in proportion to its area; signed methods therefore use
    ``|raw|`` (``part="abs"``, the evaluation spec's energy pointing game) or the positive part of ``raw``
    (``part="positive"``: evidence for the class), upsampled to the input."""
    if not exp.signed:
        return exp.maps.float()
    raw = exp.raw.float()
    raw = raw.abs() if part == "abs" else raw.clamp(min=0)
    return upsample_maps(raw, tuple(exp.maps.shape[-2:]))
