"""The method contract and its registry.

A method is one small class that registers itself with :func:`register_method`. It declares its
parameters (keyword arguments of ``__init__`` with ``param_constraints``) and implements
:meth:`Method.attribute`, which gets a :class:`Context` (adapter, layout, the recording helper) and the
batch, and returns raw maps. :class:`xvit.Explainer` does the plumbing: validation, targets, the
eager-attention context, batching B images x K targets, upsampling and normalisation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from xvit.adapters.base import TokenLayout, ViTAdapter
from xvit.capture import Recording, record
from xvit.methods._memory import forward_backward_bytes
from xvit.params import InvalidParameterError, Parameterized
from xvit.registry import Registry
from xvit.utils.batching import rows_per_pass


@dataclass
class Context:
    """What a method may use: the model's adapter and the layout of the current input."""

    adapter: ViTAdapter
    layout: TokenLayout

    def record(self, x: Tensor, targets: Tensor | None, **kwargs: Any) -> Recording:
        """See :func:`xvit.capture.record`."""
        return record(self.adapter, x, targets, **kwargs)


@dataclass
class Attribution:
    """What :meth:`Method.attribute` returns for a flat batch of N = B·K rows.

    ``raw`` is ``(N, h, w)`` (token methods) or ``(N, H, W)`` (pixel methods); ``logits`` ``(N, C)``;
    ``targets`` ``(N,)``; ``extras`` per-row tensors or scalars that go to ``Explanation.meta``.
    """

    raw: Tensor
    logits: Tensor
    targets: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Method(Parameterized, abc.ABC):
    """Base class. Subclasses set the class attributes below and implement :meth:`attribute`."""

    name: ClassVar[str] = ""
    signed: ClassVar[bool] = False
    class_specific: ClassVar[bool] = True
    resolution: ClassVar[str] = "tokens"  # or "pixels"
    # True: the computation depends on the target, so K targets of an image cost K passes (gradient and relevance
    # methods; the explainer stacks the K copies on the batch axis). False: one set of passes scores every class
    # (mask methods), and ``attribute`` receives the ``(N, K)`` targets and returns ``N·K`` maps, image-major.
    per_target_pass: ClassVar[bool] = True
    # "one_hot" where the raw map is LRP relevance started from R_out = 1 at the explained class (its sum is then
    # compared with 1 by the conservation metric); None otherwise.
    relevance_start: ClassVar[str | None] = None
    # True: the method reads attention probabilities of the real model, so the explainer switches its fused
    # attention to the explicit path. Methods that read none keep the fused kernel.
    needs_attention_probs: ClassVar[bool] = True
    # Peak memory per row as a multiple of one forward+backward's estimate; None for methods whose passes run a fixed
    # number of rows (internal_batch_size) whatever the batch, so the explainer never chunks them.
    memory_factor: ClassVar[float | None] = 1.0
    # Rows per pass on an accelerator for methods that batch their own passes (``internal_batch_size=None``); on a
    # CPU :data:`~xvit.utils.batching.CPU_ROWS_PER_PASS`.
    accelerator_rows: ClassVar[int] = 64
    param_constraints: ClassVar[dict[str, Any]] = {}

    def rows_per_pass(self, x: Tensor) -> int:
        """Rows per pass of the work this method batches itself: ``internal_batch_size``, or when that is None the
        default of ``x``'s device (:func:`~xvit.utils.batching.rows_per_pass`)."""
        return rows_per_pass(self.params.get("internal_batch_size"), x.device, self.accelerator_rows)

    def validate(self, ctx: Context) -> None:
        """Check parameters against the model (e.g. ``start_layer`` < number of blocks)."""

    def memory_per_row(self, ctx: Context, x: Tensor) -> int | None:
        """Estimated peak bytes per row of ``x``, used to chunk a batch to the explainer's ``max_memory``;
        None when unknown (no chunking)."""
        base = None if self.memory_factor is None else forward_backward_bytes(ctx.adapter, ctx.layout, x)
        return None if base is None else int(self.memory_factor * base)

    @abc.abstractmethod
    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        """Raw maps for ``x`` (N rows) and ``targets`` (``(N,)``, or None for the predicted classes; ``(N, K)``
        when the method sets ``per_target_pass = False``)."""


METHODS: Registry[type[Method]] = Registry("method", "xvit.methods()")


def register_method(name: str, *, citation: str, passes: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` under ``name`` with its citation and cost in passes."""

    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.add(name, cls, citation=citation, passes=passes)
        return cls

    return decorator


def validate_method_params(params: dict[str, dict[str, Any]], methods: Sequence[str]) -> None:
    """Every entry of ``{method: {param: value}}`` names one of ``methods`` and passes that method's constraints;
    raises ``ValueError``/``TypeError`` (``InvalidParameterError``) naming the method otherwise."""
    for name, values in params.items():
        if name not in methods:
            raise ValueError(f"parameters were given for method {name!r}, which is not run (methods: "
                             f"{', '.join(methods)}).")
        try:
            METHODS.get(name)(**values)
        except (TypeError, ValueError) as e:
            raise InvalidParameterError(f"{name}: {e}") from None


def check_start_layer(method: Method, ctx: Context, key: str = "start_layer") -> int:
    """Validate a block index parameter against the model's depth; negative indices count from the end."""
    depth = len(ctx.adapter.blocks())
    value = method.params[key]
    index = value + depth if value < 0 else value
    if not 0 <= index < depth:
        raise InvalidParameterError(f"The {key!r} parameter of {method.name} must be a block index in "
                                    f"[{-depth}, {depth}) for this {depth}-block model. Got {value!r} instead.")
    return index
