"""Shared machinery of the evaluation metrics: registry, result type, metric base class, input checks.

A metric is a pair, after torchmetrics: a class with ``update(...)``/``compute()`` that accumulates per-image
pieces over batches, and a functional twin that runs one ``update`` and ``compute``. Every metric returns one
:class:`MetricResult`. Perturbation metrics score their perturbed copies with :func:`xvit.perturb.score` (the
copies of all images stacked along the batch axis, in chunks of ``batch_size``; no per-image loop).

A metric also declares what the evaluation runner needs to run it without naming it: the :class:`Column` s it
writes, the data it ``requires``, its :class:`Plot` s and display extras, how it builds itself from the run
(``from_run``) and how it reads one :class:`~xvit.evaluate.inputs.MetricInput` (``update_from``).
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from xvit.evaluate.inputs import MetricInput, RunContext
from xvit.params import InvalidParameterError, Parameterized, Satisfies
from xvit.registry import Registry

__all__ = ["METRICS", "REQUIREMENTS", "Column", "Metric", "MetricResult", "NotApplicable", "Plot", "get_metric",
           "metrics", "register_metric"]

METRICS: Registry[type[Metric]] = Registry("metric", "xvit.evaluate.metrics()")

# What a metric may require of the data, each with the reason given where the data set lacks it.
REQUIREMENTS = {
    "labels": "the data set has no labels",
    "masks": "the data set has no ground-truth masks",
    "pairs": "needs two-object images with a mask per object (e.g. xvit-shapes:pair:test)",
    "markers": "needs images with a spurious marker and its mask (xvit-shapes spurious data, e.g. "
               "xvit-shapes:spurious:test:200:marker=random)",
}

MetricClass = TypeVar("MetricClass", bound="type[Metric]")


def metrics() -> dict[str, dict[str, Any]]:
    """Registered metrics: ``{name: info}`` with ``citation``, ``higher_is_better`` (per column where a metric
    writes several), ``requirements`` of the data, ``columns`` and their ``units``, ``params`` (defaults;
    ``required_params`` have none), ``default`` (runs when no metrics are named) and the ``inputs`` of ``update``."""
    out = {}
    for name in METRICS:
        cls = METRICS.get(name)
        cols = cls.columns
        init = inspect.signature(cls.__init__).parameters.values()
        out[name] = {**METRICS.info(name),
                     "higher_is_better": cols[0].higher_is_better if len(cols) == 1
                     else {c.name: c.higher_is_better for c in cols},
                     "requirements": sorted(cls.requires), "columns": [c.name for c in cols],
                     "units": {c.name: c.unit for c in cols},
                     "params": cls.default_params(),
                     "required_params": [p.name for p in init if p.kind is inspect.Parameter.KEYWORD_ONLY
                                         and p.default is inspect.Parameter.empty],
                     "default": cls.default,
                     "inputs": [p for p in inspect.signature(cls.update).parameters if p != "self"]}
    return out


def get_metric(name: str) -> type[Metric]:
    """The metric class registered as ``name``; unknown names raise ``KeyError`` with close matches."""
    return METRICS.get(name)


def register_metric(name: str, *, citation: str) -> Callable[[MetricClass], MetricClass]:
    """Class decorator: register a :class:`Metric` under ``name`` with its citation. A metric that declares no
    ``columns`` writes one column named after it."""

    def decorator(cls: MetricClass) -> MetricClass:
        cls.name = name
        cols = cls.__dict__.get("columns") or (Column(name, higher_is_better=cls.higher_is_better,
                                                      display=cls.display, unit=cls.unit),)
        cls.columns = tuple(replace(c, metric=name) for c in cols)
        METRICS.add(name, cls, citation=citation)
        return cls

    return decorator


@dataclass(frozen=True)
class Column:
    """One reported quantity of a metric: the metric run with ``fixed`` extra parameters.

    Attributes:
        name: the column's name in the summary and the per-image table.
        fixed: parameters the runner sets for this column (the user may not).
        higher_is_better: direction, ``None`` where the ideal is a target value.
        display: ``MetricResult.summary`` keys shown as dataset-level numbers in ``summary.md``.
        per_image: name of the per-image table field, if not ``name``.
        unit: the unit and range of the column's values, shown in table headers (``"[0-1]"``, ``"% [0-100]"``).
        label: a short name of the per-image quantity, shown after ``name`` in table headers (``"mAP"``).
        headline: ``(summary key, label)`` of a dataset-level number shown in its own table column before the
            per-image mean, where that number separates methods better (the segmentation test's mIoU before mAP).
        metric: registry name of the metric (set on registration).
    """

    name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    higher_is_better: bool | None = None
    display: tuple[str, ...] = ()
    per_image: str | None = None
    unit: str = ""
    label: str = ""
    headline: tuple[str, str] | None = None
    metric: str = ""

    @property
    def field_name(self) -> str:
        """The per-image table field of this column."""
        return self.per_image or self.name


@dataclass(frozen=True)
class Plot:
    """A figure ``curves/<name>.png`` of mean curves: one panel per column, one line per method."""

    name: str
    columns: tuple[str, ...]
    xlabel: str
    ylabel: str


class NotApplicable(Exception):
    """Raised by ``Metric.update_from`` where the method's explanations cannot be scored; the message says why."""


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
        params: the metric's parameters (defaults filled in).
        ideal: the ideal value where ``higher_is_better`` is ``None`` and there is one (1 for a ratio).
        curve_labels: names of the curve steps, where they have names.
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
    ideal: float | None = None
    curve_labels: list[str] | None = None


def _is_channel_stats(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) > 0
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v))


CHANNEL_MEAN = Satisfies(_is_channel_stats, "a tuple of finite floats, one per channel")
CHANNEL_STD = Satisfies(lambda v: _is_channel_stats(v) and all(c > 0 for c in v),
                    "a tuple of positive floats, one per channel")


class Metric(Parameterized, abc.ABC):
    """Base class: keyword parameters (``xvit.params.Parameterized``), list states, ``reset``, run declarations.

    Subclasses set ``higher_is_better`` and ``param_constraints``, call ``_append`` in ``update`` and build their
    result with ``_result`` in ``compute``; :func:`register_metric` sets ``name``. Subclasses with accumulated
    state beyond the appended pieces and ``forward_passes`` extend :meth:`state_dict` and :meth:`merge_state`.
    Parameters read as attributes (``self.tol``).

    What the evaluation runner reads (class attributes and hooks; the defaults suit a metric of the maps):

    * ``columns``: the :class:`Column` s it writes (default: one, named after the metric, with ``display`` and
      ``unit``),
    * ``requires``: what it needs of the data, keys of :data:`REQUIREMENTS`,
    * ``plots``: its curve figures; ``default``: whether it runs when no metrics are named,
    * ``run_params``: parameters :meth:`from_run` sets that the user may not,
    * ``probe_cost``: the runner warms the method up and probes peak memory around the explanation call,
    * :meth:`from_run`, :meth:`update_from`, :meth:`image_limit`, :meth:`unsupported`, :meth:`run_notes`,
      :meth:`passes_per_image` and :meth:`format_cell`.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool | None] = None
    columns: ClassVar[tuple[Column, ...]] = ()
    requires: ClassVar[frozenset[str]] = frozenset()
    plots: ClassVar[tuple[Plot, ...]] = ()
    display: ClassVar[tuple[str, ...]] = ()
    unit: ClassVar[str] = ""
    default: ClassVar[bool] = True
    run_params: ClassVar[frozenset[str]] = frozenset()
    probe_cost: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.reset()

    def __getattr__(self, key: str) -> Any:
        params = self.__dict__.get("params")
        if params is not None and key in params:
            return params[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    # ------------------------------------------------------------------------------------------ runner hooks

    @classmethod
    def from_run(cls, context: RunContext, params: Mapping[str, Any]) -> Metric:
        """The metric for one method of a run: the user's ``params`` (column ones included) completed from the
        run's settings (normalisation, batch sizes, seed, ...)."""
        return cls(**params)

    @abc.abstractmethod
    def update_from(self, inp: MetricInput) -> None:
        """Update with one chunk of the run; raise :class:`NotApplicable` where the method cannot be scored."""

    @classmethod
    def image_limit(cls, options: Mapping[str, Any]) -> int | None:
        """Score only the first images of the run (``None``: all)."""
        return None

    @classmethod
    def unsupported(cls, model: nn.Module, params: Mapping[str, Any]) -> str | None:
        """Why the metric cannot run on ``model`` with the user's ``params``, or ``None``."""
        return None

    @classmethod
    def run_notes(cls, available: frozenset[str], data_info: Mapping[str, Any]) -> list[str]:
        """Notes on how the data set's ``available`` requirements and ``info`` affect this metric."""
        return []

    def passes_per_image(self, result: MetricResult) -> tuple[float, str]:
        """Model passes per image of this evaluation and their unit (``"forward"`` or ``"explanations"``)."""
        n = result.scores.numel()
        return (result.forward_passes / n if n else 0.0), "forward"

    @classmethod
    def format_cell(cls, row: Mapping[str, Any]) -> str:
        """The ``summary.md`` cell of a summary row: mean ± half-width of the 95 % interval."""
        mean, low, high = row["mean"], row["ci95_low"], row["ci95_high"]
        if low is None or high is None:
            return format_number(mean)
        return f"{format_number(mean)} ± {format_number((high - low) / 2)}"

    # ---------------------------------------------------------------------------------------------- state

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


def format_number(v: float | None) -> str:
    """A number for a Markdown table: three significant digits, ``–`` for missing or non-finite values."""
    if v is None or not math.isfinite(v):
        return "–"
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 10 else f"{v:.3f}" if a >= 0.01 or a == 0 else f"{v:.2e}"


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

