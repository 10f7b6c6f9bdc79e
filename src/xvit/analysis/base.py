"""The analysis contract, its result type and its registry.

An analysis studies the model rather than one class's heat map (attention distances, patch interactions,
spectral indicators, ...). Like a method it is a small class that registers itself, declares its parameters
(:class:`~xvit.params.Parameterized`: keyword-only ``__init__`` arguments, ``param_constraints``, validated once)
and implements :meth:`Analysis.compute`. Calling it runs ``compute`` inside the same scoped contexts as the
explainer (eval mode, explicit attention path; both restored on exit, also after an error) and returns an
:class:`AnalysisResult`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from matplotlib.figure import Figure
from torch import Tensor, nn

from xvit.adapters import get_adapter
from xvit.methods.base import Context
from xvit.params import Parameterized
from xvit.registry import Registry, summary_of
from xvit.utils.context import eval_mode
from xvit.utils.jsonable import jsonable


@dataclass(frozen=True)
class AnalysisResult:
    """What every analysis returns.

    Attributes:
        name: registry name of the analysis.
        tensors: the numbers, by name (e.g. ``distance``: ``(B, L, H)``); their meaning is in the analysis's
            docstring.
        params: the analysis's parameters (defaults filled in).
        meta: everything else; always ``definition_version`` (bumped whenever the computed quantity changes) and
            the model's ``adapter`` family.
    """

    name: str
    tensors: dict[str, Tensor]
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tensors as nested lists, non-finite numbers as ``None``."""
        return jsonable({"name": self.name, "params": self.params, "meta": self.meta, "tensors": self.tensors})

    def plot(self) -> Figure:
        """The analysis's standard figure."""
        return ANALYSES.get(self.name).plot(self)


class Analysis(Parameterized, abc.ABC):
    """Base class. Subclasses set ``name`` (by :func:`register_analysis`), ``definition_version``, and implement
    :meth:`compute` and :meth:`plot`."""

    name: ClassVar[str] = ""
    definition_version: ClassVar[str] = "1"
    needs_attention: ClassVar[bool] = True  # run on the explicit attention path

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor | None = None) -> AnalysisResult:
        """Analyse ``model`` on the normalised batch ``x`` (``targets``: ``(B,)`` classes where the analysis is
        class-specific; None = predicted)."""
        adapter = get_adapter(model)
        adapter.check_input(x)
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(model))
            if self.needs_attention:
                stack.enter_context(adapter.eager_attention())
            tensors, meta = self.compute(Context(adapter, adapter.layout(x)), x, targets)
        return AnalysisResult(self.name, tensors, self.get_params(),
                              {"definition_version": self.definition_version, "adapter": adapter.family, **meta})

    @abc.abstractmethod
    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors and extra ``meta`` of the result."""

    @classmethod
    @abc.abstractmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        """The standard figure of a result of this analysis."""


ANALYSES: Registry[type[Analysis]] = Registry("analysis", "xvit.analyses()")


def register_analysis(name: str, *, citation: str, cost: str) -> Callable[[type[Analysis]], type[Analysis]]:
    """Class decorator: register an :class:`Analysis` under ``name`` with its citation and cost in passes."""

    def decorator(cls: type[Analysis]) -> type[Analysis]:
        cls.name = name
        ANALYSES.add(name, cls, citation=citation, cost=cost)
        return cls

    return decorator


def analyses() -> dict[str, dict[str, Any]]:
    """Registered analyses: name -> citation, cost, definition_version, parameters (defaults), summary."""
    out = {}
    for name in ANALYSES:
        cls = ANALYSES.get(name)
        out[name] = {**ANALYSES.info(name), "definition_version": cls.definition_version,
                     "params": cls.default_params(), "summary": summary_of(cls)}
    return out


def analyse(model: nn.Module, x: Tensor, name: str, targets: Tensor | None = None, **params: Any) -> AnalysisResult:
    """One-call form: ``ANALYSES.get(name)(**params)(model, x, targets)``."""
    return ANALYSES.get(name)(**params)(model, x, targets)
