"""The description of an evaluation run: :class:`RunSpec`, frozen and JSON-serialisable, checked when it is made.

A spec names what to evaluate and how (model spec, data spec, methods and metrics with their parameters, run
options) and holds no objects, so it can be stored, compared, or shipped to a worker that opens model and data
itself (:func:`xvit.evaluate.prepare` turns it into the runtime :class:`~xvit.evaluate.plan.Plan`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from xvit.evaluate.base import get_metric
from xvit.evaluate.catalog import default_metrics, metric_names
from xvit.methods import METHODS, validate_method_params
from xvit.params import validate_params
from xvit.registry import did_you_mean

__all__ = ["DEFAULT_METHODS", "RunSpec"]

DEFAULT_METHODS = ("rollout", "transformer_attribution", "attnlrp")


@dataclass(frozen=True)
class RunSpec:
    """What an evaluation run does (see :func:`xvit.evaluate.evaluate` for the meaning of each field).

    Method and metric names and parameter values are checked on construction (model-dependent checks wait for
    :func:`~xvit.evaluate.prepare`); ``metrics=None`` means every registered metric that runs by default.
    :meth:`to_dict`/:meth:`from_dict` convert to and from plain JSON types.
    """

    data: str
    model: str | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    metrics: tuple[str, ...] | None = None
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_size: int = 16
    class_explained: str = "predicted"
    seed: int = 0
    steps: int | None = 56
    forward_batch_size: int | None = None
    randomization_images: int = 16
    max_images: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "randomization_images"):
            _check_count(name, getattr(self, name))
        for name in ("steps", "forward_batch_size", "max_images"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), " or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer; got {self.seed!r}.")
        if self.class_explained not in ("predicted", "target"):
            raise ValueError(f"class_explained must be 'predicted' or 'target'; got {self.class_explained!r}.")
        if not isinstance(self.data, str):
            raise ValueError(f"data must be a data spec string; got {type(self.data).__name__}.")
        metrics = default_metrics() if self.metrics is None else self.metrics
        object.__setattr__(self, "methods", tuple(dict.fromkeys(self.methods)))
        object.__setattr__(self, "metrics", tuple(dict.fromkeys(metrics)))
        object.__setattr__(self, "method_params", {k: dict(v) for k, v in self.method_params.items()})
        object.__setattr__(self, "metric_params", {k: dict(v) for k, v in self.metric_params.items()})
        self._check_names()
        self._check_params()

    def _check_names(self) -> None:
        if not self.methods:
            raise ValueError("No methods given; name at least one (see xvit.methods()).")
        if not self.metrics:
            raise ValueError(f"No metrics given; choose from {', '.join(metric_names())}.")
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}.{did_you_mean(name, METHODS)} See xvit.methods() "
                                 "('xvit methods') for the list.")
        for name in self.metrics:
            if name not in metric_names():
                raise ValueError(f"unknown metric {name!r}.{did_you_mean(name, metric_names())} Choose from "
                                 f"{', '.join(metric_names())}.")

    def _check_params(self) -> None:
        validate_method_params(self.method_params, self.methods)
        for name, params in self.metric_params.items():
            cls = get_metric(name) if name in metric_names() else None
            if name not in self.metrics or not cls.param_constraints:
                raise ValueError(f"parameters were given for metric {name!r}, which is not evaluated or takes none "
                                 f"(metrics: {', '.join(self.metrics)}).")
            fixed = sorted(set(params) & (cls.run_params | {k for c in cls.columns for k in c.fixed}))
            if fixed:
                raise ValueError(f"the runner sets {name}.{fixed[0]} itself; leave it out.")
            try:
                validate_params(name, params, cls.param_constraints)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None

    def options(self) -> dict[str, Any]:
        """The run options as recorded in the provenance and read by ``Metric.from_run``."""
        return {"batch_size": self.batch_size, "class_explained": self.class_explained, "seed": self.seed,
                "deletion_insertion_steps": self.steps, "forward_batch_size": self.forward_batch_size,
                "randomization_images": self.randomization_images, "max_images": self.max_images}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: tuples become lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        """The spec of :meth:`to_dict`; lists in parameter values become tuples again."""
        d = dict(d)
        for key in ("methods", "metrics"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for key in ("method_params", "metric_params"):
            d[key] = {owner: {k: _tuples(v) for k, v in params.items()} for owner, params in d.get(key, {}).items()}
        return cls(**d)


def _check_count(name: str, value: Any, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{extra}; got {value!r}.")


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v
