"""Beyond Intuition: head-wise (BT-H) and token-wise (BT-T) attention perception with reasoning feedback (Chen et
al., TMLR; jiaminchen-1031/transformerinterp ``generate_ours`` / ``generate_ours_c``; attribution-methods.md §5.1)."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.methods._feedback import integrated_last_gradient, read_out, readout_rows, resolve_start_layer
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable

CITATION = ("Chen, Li, Yu, Dou & Xiong, Beyond Intuition: Rethinking Token Attributions inside Transformers, "
            "TMLR 2023, OpenReview rm0zIzlhcX")


def head_weighted(attention: Tensor, grad: Tensor) -> Tensor:
    """BT-H's ``Â = Σ_h I_h A_h`` with ``I_h = mean_ij |(A_hᵀ ∇A_h)_ij|`` normalised over heads: ``(B, T, T)``."""
    importance = (attention.transpose(-1, -2) @ grad).abs().mean((-2, -1))
    importance = importance / importance.sum(1, keepdim=True)
    return (importance[..., None, None] * attention).sum(1)


class _BeyondIntuition(Method):
    """Shared parameters and the reasoning feedback ``W = E_h[(mean_k ∇A^(L)(α_k x))⁺]``."""

    per_block: ClassVar[int]
    perception_needs_gradients: ClassVar[bool]
    param_constraints = {"start_layer": Nullable(Interval(None, None, integer=True)),
                         "steps": Interval(1, None, integer=True),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True))}
    memory_factor = 2.0

    def __init__(self, *, start_layer: int | None = None, steps: int = 20,
                 internal_batch_size: int | None = None) -> None:
        super().__init__(start_layer=start_layer, steps=steps, internal_batch_size=internal_batch_size)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        blocks = range(resolve_start_layer(self, ctx, self.per_block), len(ctx.adapter.blocks()))
        rows, weights = readout_rows(ctx.layout, x.device)
        logits, targets, relevance = self._perception(ctx, x, targets, blocks, rows)
        grad = integrated_last_gradient(ctx, x, targets, self.params["steps"], self.rows_per_pass(x), rows)
        feedback = grad.clamp(min=0).mean(1)  # clamp after the step mean, before the head mean
        # Nominal passes per image: the perception pass (a forward+backward for BT-H, whose head weights are
        # gradients; a forward for BT-T) and ``steps`` forward+backward passes of the feedback.
        steps = torch.full((x.shape[0],), self.params["steps"])
        perception_backward = int(self.perception_needs_gradients)
        passes = {"n_forwards": torch.full_like(steps, 1 - perception_backward),
                  "n_forward_backward": steps + perception_backward}
        return Attribution(read_out(ctx.layout, weights, feedback * relevance), logits, targets, passes)

    @abc.abstractmethod
    def _perception(self, ctx: Context, x: Tensor, targets: Tensor | None, blocks: range,
                    rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, targets and the read-out ``rows`` of ``R = Π_b (I + mixing^(b))`` as ``(B, r, T)``."""


def _identity_rows(x: Tensor, num_tokens: int, rows: Tensor) -> Tensor:
    return torch.eye(num_tokens, dtype=x.dtype, device=x.device)[rows].expand(x.shape[0], -1, -1)


@register_method("bt_h", citation=CITATION, passes="(1 + steps) x (F+B)")
class BeyondIntuitionHead(_BeyondIntuition):
    """BT-H: ``R = Π_b (I + Σ_h I_h A_h^(b))`` over the included blocks, map ``ρ(W ⊙ R)``.

    Args:
        start_layer: first block included (0-based; the reference's argument is this + 1). None: ``⌊L/4⌋``
            (3 at 12 blocks, the reference default).
        steps: integration steps of the feedback, ``α_k ∈ linspace(0, 1, steps)``.
        internal_batch_size: scaled inputs per forward+backward pass of the feedback (16 on a CPU, 64 elsewhere).
    """

    per_block = 4
    perception_needs_gradients = True

    def _perception(self, ctx: Context, x: Tensor, targets: Tensor | None, blocks: range,
                    rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rec = ctx.record(x, targets, grads=True, reduce=head_weighted, reduce_blocks=blocks)
        r = _identity_rows(x, ctx.layout.num_tokens, rows)
        for b in reversed(blocks):
            r = r + r @ rec.reduced[b]
        return rec.logits, rec.targets, r


@register_method("bt_t", citation=CITATION, passes="F + steps x (F+B)")
class BeyondIntuitionToken(_BeyondIntuition):
    """BT-T: ``R = Π_b (I + E_h[A^(b)]·diag(o^(b)))`` with ``o_j = ‖(V_cat W_projᵀ)_j‖ / ‖Z_j‖`` (values after the
    output projection without its bias, over the block input before LN1), map ``ρ(W ⊙ |R|)``.

    Args:
        start_layer: first block included (0-based; the reference's argument is this + 1). None: ``⌊L/2⌋``
            (6 at 12 blocks, the reference default).
        steps: integration steps of the feedback.
        internal_batch_size: scaled inputs per forward+backward pass of the feedback (16 on a CPU, 64 elsewhere).
    """

    per_block = 2
    perception_needs_gradients = False

    def _perception(self, ctx: Context, x: Tensor, targets: Tensor | None, blocks: range,
                    rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rec = ctx.record(x, targets, block_inputs=tuple(blocks), reduce=lambda a, _: a.mean(1), reduce_blocks=blocks)
        r = _identity_rows(x, ctx.layout.num_tokens, rows)
        for b in reversed(blocks):
            r = r + (r @ rec.reduced[b]) * _token_order(ctx, b, rec.block_inputs[b])[:, None]
        return rec.logits, rec.targets, r.abs()


@torch.no_grad()
def _token_order(ctx: Context, index: int, z: Tensor) -> Tensor:
    """``o_j = ‖(V_cat W_projᵀ)_j‖₂ / ‖Z_j‖₂`` of block ``index`` for its input ``z`` ``(B, T, D)``: ``(B, T)``."""
    parts = ctx.adapter.block_parts(index)
    width = z.shape[-1]
    bias = None if parts.qkv_bias is None else parts.qkv_bias[2 * width:]
    values = F.linear(parts.norm1(z), parts.qkv_weight[2 * width:], bias)
    return (values @ parts.proj.weight.T).norm(dim=-1) / z.norm(dim=-1)
