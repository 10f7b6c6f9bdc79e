"""Gradient-weighted attention: Chefer et al. 2021b rollout and Chefer's attention Grad-CAM baseline."""

from __future__ import annotations

from torch import Tensor

from xvit.methods._rollout import gradient_weighted, residual_rollout_row
from xvit.methods.base import Attribution, Context, Method, check_start_layer, register_method
from xvit.params import Interval


@register_method("grad_attention_rollout", citation="Chefer, Gur & Wolf, Generic Attention-model Explainability "
                 "for Interpreting Bi-Modal and Encoder-Decoder Transformers, ICCV 2021, arXiv:2103.15679",
                 passes="F+B")
class GradAttentionRollout(Method):
    """Gradient-weighted attention rollout: ``Ā^(b) = E_h[(∇A^(b) ⊙ A^(b))⁺]`` (rule 5, clamp before the
    head mean), ``R = Π_b (I + Ā^(b))`` (rule 6), read out at the class token.

    Args:
        start_layer: first block included (0-based).
    """

    param_constraints = {"start_layer": Interval(None, None, integer=True)}

    def __init__(self, *, start_layer: int = 0) -> None:
        super().__init__(start_layer=start_layer)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        start = check_start_layer(self, ctx)
        depth = len(ctx.adapter.blocks())
        rec = ctx.record(x, targets, grads=True, reduce=gradient_weighted, reduce_blocks=range(start, depth))
        fused = [rec.reduced[b] for b in range(start, depth)]
        return Attribution(residual_rollout_row(ctx.layout, fused), rec.logits, rec.targets)


@register_method("attention_gradcam", citation="Grad-CAM baseline on the last attention map in Chefer, Gur & "
                 "Wolf, CVPR 2021, arXiv:2012.09838 (after Selvaraju et al., ICCV 2017, arXiv:1610.02391)",
                 passes="F+B")
class AttentionGradCAM(Method):
    """Grad-CAM on the attention of the last block: per head ``w_h = mean_j ∇A_h[0, j]`` over patch
    columns, ``map = (E_h[w_h · A_h[0, K:]])⁺`` (the "GradCAM" row of Chefer et al.'s tables).

    An all-non-positive map is returned as zeros (the reference's min-max step divides 0 by 0 there).
    """

    def __init__(self) -> None:
        super().__init__()

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        last = len(ctx.adapter.blocks()) - 1
        rec = ctx.record(x, targets, grads=True, reduce=lambda a, g: _attention_cam(ctx, a, g), reduce_blocks=(last,))
        return Attribution(rec.reduced[last], rec.logits, rec.targets)


def _attention_cam(ctx: Context, attention: Tensor, grad: Tensor) -> Tensor:
    a = ctx.layout.readout(attention)  # (B, heads, h, w)
    weights = ctx.layout.readout(grad).mean(dim=(-2, -1), keepdim=True)
    return (weights * a).mean(1).clamp(min=0)
