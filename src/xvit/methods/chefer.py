"""Relevance propagation with Chefer et al. 2021's rules: Transformer Attribution, partial and full LRP."""

from __future__ import annotations

from torch import Tensor

from xvit.methods._rollout import gradient_weighted, residual_rollout_row
from xvit.methods.base import Attribution, Context, Method, check_start_layer, register_method
from xvit.params import Interval, Options
from xvit.relevance import COMPOSITES, propagate, residual_stream

CHEFER = "Chefer, Gur & Wolf, Transformer Interpretability Beyond Attention Visualization, CVPR 2021, arXiv:2012.09838"
RULES = Options(("lrp", "conservative"))


def _composite(rules: str):
    return COMPOSITES.get("chefer2021")(conservative=rules == "conservative")


@register_method("transformer_attribution", citation=CHEFER, passes="F+B + relevance pass")
class TransformerAttribution(Method):
    """Transformer Attribution: relevance ``R^(b)`` at each block's attention probabilities from LRP with
    conservative αβ rules (starting from relevance 1 at class c), fused with the logit gradient as
    ``Ā^(b) = E_h[(∇A^(b) ⊙ R^(b))⁺]`` and rolled out as ``C = Π_b (I + Ā^(b))`` (Eq. 13-14).

    Args:
        start_layer: first block included (0-based). The reference API default is 0; every evaluation
            script of the reference passes 1, which is xvit's default.
    """

    needs_attention_probs = False  # the relevance engine re-plays the model with its own explicit attention
    memory_factor = 2.5
    param_constraints = {"start_layer": Interval(None, None, integer=True)}

    def __init__(self, *, start_layer: int = 1) -> None:
        super().__init__(start_layer=start_layer)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        start = check_start_layer(self, ctx)
        depth = len(ctx.adapter.blocks())
        # One re-played forward from block `start`, then a gradient and a relevance backward over it; the relevance
        # pass fuses each block with its gradient as it reaches it and stops at block `start`'s attention.
        prop = propagate(ctx.adapter, _composite("conservative"), targets, z=residual_stream(ctx.adapter, x, start),
                         start=start, attention_blocks=range(start, depth), attention_gradients=True,
                         reduce=gradient_weighted, start_relevance=False)
        fused = [prop.attention[b] for b in range(start, depth)]
        return Attribution(residual_rollout_row(ctx.layout, fused), prop.logits, prop.targets)


@register_method("partial_lrp", citation=f"Baseline in {CHEFER}; after Voita et al., ACL 2019, arXiv:1905.09418",
                 passes="F + relevance pass through the last block")
class PartialLRP(Method):
    """Relevance at the last block's attention probabilities, ``ρ(E_h[(R^(L))⁺])`` (Chefer's
    "partial LRP" baseline).

    Args:
        rules: "lrp" (the reference baseline's ``layers_lrp`` rules) or "conservative" (``layers_ours``).
        is_ablation: multiply ``R^(L)`` by the attention gradient before the clamp.
    """

    needs_attention_probs = False
    memory_factor = 0.5
    param_constraints = {"rules": RULES, "is_ablation": Options((True, False))}

    def __init__(self, *, rules: str = "lrp", is_ablation: bool = False) -> None:
        super().__init__(rules=rules, is_ablation=is_ablation)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        last = len(ctx.adapter.blocks()) - 1
        rec = ctx.record(x, targets, block_inputs=(last,))

        def readout(rel: Tensor, grad: Tensor | None) -> Tensor:
            return ctx.layout.readout((rel if grad is None else rel * grad).clamp(min=0).mean(1))

        # The ablation's attention gradient comes from the re-played block in gradient mode (the true gradient).
        prop = propagate(ctx.adapter, _composite(self.params["rules"]), rec.targets, z=rec.block_inputs[last],
                         start=last, attention_blocks=(last,), attention_gradients=self.params["is_ablation"],
                         reduce=readout, start_relevance=False)
        return Attribution(prop.attention[last], rec.logits, rec.targets)


@register_method("full_lrp", citation=f"Baseline 'LRP' in {CHEFER}; Bach et al., PLOS ONE 2015",
                 passes="F + relevance pass to the pixels")
class FullLRP(Method):
    """LRP through every block to the pixels: αβ rules, z-rule on the position-embedding add (token part
    kept), z^B rule on the patch-embedding convolution; ``raw = Σ_RGB R_x`` (signed, not conservative
    with the "lrp" rules).

    Args:
        rules: "lrp" (``layers_lrp``, the paper's baseline) or "conservative" (``layers_ours``).
    """

    signed = True
    resolution = "pixels"
    relevance_start = "one_hot"  # R_out = 1 at the explained class (conservation reads Σ R / 1)
    needs_attention_probs = False
    memory_factor = 2.5
    param_constraints = {"rules": RULES}

    def __init__(self, *, rules: str = "lrp") -> None:
        super().__init__(rules=rules)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        prop = propagate(ctx.adapter, _composite(self.params["rules"]), targets, x=x)
        return Attribution(prop.start.sum(1), prop.logits, prop.targets)
