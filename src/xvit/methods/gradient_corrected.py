"""Gradient-corrected attention: Cui, Fan & Chen 2026 (arXiv:2605.11392), the pos/abs/signed corrections under an
incomplete or a complete scheme (attribution-methods.md §2.5, definition ``cui2026-p1``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from xvit.methods._rollout import diagonal_rollout_row, gradient_weighted, residual_rollout_row
from xvit.methods.base import Attribution, Context, Method, check_start_layer, register_method
from xvit.params import Interval, Options

CORRECTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "pos": lambda t: t.clamp(min=0),
    "abs": torch.abs,
    "signed": lambda t: t,
}


@register_method("gradient_corrected_attention", citation="Cui, Fan & Chen, Transformer Interpretability from "
                 "Perspective of Attention and Gradient, arXiv:2605.11392 (2026); reading cui2026-p1",
                 passes="F+B")
class GradientCorrectedAttention(Method):
    """Gradient-corrected attention transfer: ``Ā^(b) = E_h[φ(∇A^(b) ⊙ A^(b))]`` with the correction ``φ`` (pos:
    ``(·)⁺``, abs: ``|·|``, signed: identity), ``R = Π_b (D^(b) + Ā^(b))`` read out at the class token.

    ``incomplete``: ``D = I`` (``pos`` + ``incomplete`` is exactly ``grad_attention_rollout``). ``complete``:
    ``D = diag(g)`` with ``g_j = φ(Σ_d Z_jd ∂y_c/∂Z_jd)`` on the block input ``Z``, rescaled to ``mean_j |g_j| = 1``
    (``I`` where ``g ≡ 0``). ``signed`` keeps the sign of the map. Definition ``cui2026-p1`` (a proposal: only the
    paper's abstract is public).

    Args:
        correction: "pos", "abs" or "signed".
        scheme: "incomplete" or "complete".
        start_layer: first block corrected and included (0-based; negative counts from the end).
    """

    definition_version = "cui2026-p1"
    param_constraints = {"correction": Options(tuple(CORRECTIONS)), "scheme": Options(("incomplete", "complete")),
                         "start_layer": Interval(None, None, integer=True)}

    def __init__(self, *, correction: str = "abs", scheme: str = "incomplete", start_layer: int = 0) -> None:
        super().__init__(correction=correction, scheme=scheme, start_layer=start_layer)

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return self.params["correction"] == "signed"

    def validate(self, ctx: Context) -> None:
        check_start_layer(self, ctx)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        start = check_start_layer(self, ctx)
        blocks = ctx.adapter.blocks()
        included = range(start, len(blocks))
        phi = CORRECTIONS[self.params["correction"]]
        if self.params["correction"] == "pos":
            fuse = gradient_weighted  # the very code of grad_attention_rollout, so the two agree bit for bit
        else:
            def fuse(attention: Tensor, grad: Tensor) -> Tensor:
                return phi(grad * attention).mean(1)
        if self.params["scheme"] == "incomplete":
            rec = ctx.record(x, targets, grads=True, reduce=fuse, reduce_blocks=included)
            raw = residual_rollout_row(ctx.layout, [rec.reduced[b] for b in included])
            return Attribution(raw, rec.logits, rec.targets)
        rec = ctx.record(x, targets, grads=True, reduce=fuse, reduce_blocks=included, block_inputs=tuple(included))
        diagonals = [_residual_weights(rec.block_inputs[b], rec.block_input_grads[b], phi) for b in included]
        raw = diagonal_rollout_row(ctx.layout, [rec.reduced[b] for b in included], diagonals)
        return Attribution(raw, rec.logits, rec.targets)


def _residual_weights(z: Tensor, grad: Tensor, phi: Callable[[Tensor], Tensor]) -> Tensor:
    """``g_j = φ(Σ_d Z_jd ∂y/∂Z_jd)`` per token, rescaled to ``mean_j |g_j| = 1``; ones where ``g ≡ 0``: ``(B, T)``."""
    g = phi((z * grad).sum(-1))
    scale = g.abs().mean(-1, keepdim=True)
    return torch.where(scale > 0, g / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.ones_like(g))
