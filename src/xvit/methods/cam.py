"""Grad-CAM on ViT tokens."""

from __future__ import annotations

from torch import Tensor

from xvit.methods.base import Attribution, Context, Method, check_start_layer, register_method
from xvit.params import Interval


@register_method("gradcam", citation="Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via "
                 "Gradient-based Localization, ICCV 2017, arXiv:1610.02391 (ViT layer convention of "
                 "pytorch-grad-cam)", passes="F+B")
class GradCAM(Method):
    """Grad-CAM on the tokens entering a block's attention: ``F = LN1(Z^(layer))`` with the prefix tokens
    dropped and reshaped to the patch grid, ``w_d = mean_grid ∂y_c/∂F_d``, ``map = ReLU(Σ_d w_d F_d)``
    (Selvaraju et al. 2017, Eq. 1-2). The default layer is LN1 of the last block: the last block's output
    reaches the head only through the class token, so later layers give zero maps.

    Args:
        layer: block whose LN1 output is used (default -1, the last).
    """

    needs_attention_probs = False
    param_constraints = {"layer": Interval(None, None, integer=True)}

    def __init__(self, *, layer: int = -1) -> None:
        super().__init__(layer=layer)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        layer = check_start_layer(self, ctx, "layer")
        rec = ctx.record(x, targets, grads=True, modules={"features": ctx.adapter.norm1(layer)})
        grid = lambda t: ctx.layout.tokens_to_grid(t.transpose(1, 2))  # noqa: E731  (B, D, h, w)
        feats, grads = grid(rec.outputs["features"]), grid(rec.output_grads["features"])
        cam = (grads.mean(dim=(-2, -1), keepdim=True) * feats).sum(1).clamp(min=0)
        return Attribution(cam, rec.logits, rec.targets)
