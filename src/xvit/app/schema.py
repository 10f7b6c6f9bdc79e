"""The registries as the page reads them: each method's and analysis's parameters with their declared
constraints (:mod:`xvit.params`), from which the page builds its form controls, and the colour maps of
:mod:`xvit.viz`. A newly registered method or analysis appears here with no change to the page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

from xvit.analysis import ANALYSES, analyses
from xvit.methods import METHODS, methods
from xvit.params import Boxes, Interval, InvalidParameterError, Nullable, Options
from xvit.registry import did_you_mean
from xvit.utils.jsonable import jsonable
from xvit.viz import DEFAULT_CMAP, DIVERGING_CMAP


def constraint_schema(constraint: Any) -> dict[str, Any]:
    """A parameter constraint as JSON: ``kind`` (``interval``, ``options``, ``boxes``, ``nullable`` or ``any``), its
    fields and the same description the validation messages use. ``boxes`` are ``[x0, y0, x1, y1]`` fractions of
    the image, which the page lets the user draw on it."""
    if isinstance(constraint, Interval):
        out = {"kind": "interval", "low": constraint.low, "high": constraint.high, "closed": constraint.closed,
               "integer": constraint.integer}
    elif isinstance(constraint, Options):
        out = {"kind": "options", "values": jsonable(list(constraint.values))}
    elif isinstance(constraint, Boxes):
        out = {"kind": "boxes"}
    elif isinstance(constraint, Nullable):
        out = {"kind": "nullable", "inner": constraint_schema(constraint.inner)}
    else:
        out = {"kind": "any"}
    if constraint is not None and hasattr(constraint, "describe"):
        out["description"] = constraint.describe()
    return out


def _params(cls: Any, defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    constraints = getattr(cls, "param_constraints", {})
    return [{"name": k, "default": jsonable(v), "constraint": constraint_schema(constraints.get(k))}
            for k, v in defaults.items()]


def method_listing() -> dict[str, dict[str, Any]]:
    """``xvit.methods()`` with each parameter's default and constraint."""
    return {name: {**jsonable({k: v for k, v in info.items() if k != "params"}),
                   "params": _params(METHODS.get(name), info["params"])}
            for name, info in methods().items()}


def analysis_listing() -> dict[str, dict[str, Any]]:
    """``xvit.analyses()`` with each parameter's default and constraint."""
    return {name: {**jsonable({k: v for k, v in info.items() if k != "params"}),
                   "params": _params(ANALYSES.get(name), info["params"])}
            for name, info in analyses().items()}


def colormaps(stops: int = 11) -> dict[str, dict[str, Any]]:
    """The overlay colour maps as CSS colour stops: ``sequential`` for maps >= 0, ``diverging`` for signed ones."""
    out = {}
    for kind, name in (("sequential", DEFAULT_CMAP), ("diverging", DIVERGING_CMAP)):
        cmap = matplotlib.colormaps[name]
        colours = [cmap(i / (stops - 1)) for i in range(stops)]
        out[kind] = {"name": name, "stops": ["#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])
                                             for rgba in colours]}
    return out


def _from_json(value: Any) -> Any:
    """JSON lists become tuples (the parameters' sequence type)."""
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def checked_method_params(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{method: params}`` from the page, checked against the registry and each method's constraints.

    Raises:
        KeyError: an unknown method (the message lists close matches).
        InvalidParameterError: a parameter the method does not have or a value it cannot take.
    """
    out = {}
    for name, params in methods.items():
        if name not in METHODS:
            raise KeyError(f"unknown method {name!r}.{did_you_mean(name, METHODS)} GET /api/methods lists them.")
        values = {k: _from_json(v) for k, v in params.items()}
        METHODS.get(name)(**values)
        out[name] = values
    return out


def checked_analysis_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of analysis ``name``, checked as :func:`checked_method_params` does."""
    if name not in ANALYSES:
        raise KeyError(f"unknown analysis {name!r}.{did_you_mean(name, ANALYSES)} GET /api/analyses lists them.")
    values = {k: _from_json(v) for k, v in params.items()}
    ANALYSES.get(name)(**values)
    return values


__all__ = ["InvalidParameterError", "analysis_listing", "checked_analysis_params", "checked_method_params",
           "colormaps", "constraint_schema", "method_listing"]
