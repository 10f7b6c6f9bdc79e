"""AttnLRP and CP-LRP: LRP in gradient x input form, with the rules applied inside the relevance engine."""

from __future__ import annotations

from torch import Tensor

from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Options
from xvit.relevance import COMPOSITES, propagate

GAMMA = Interval(0, None)


class _GradientLRP(Method):
    signed = True
    resolution = "pixels"
    needs_attention_probs = False  # the relevance engine re-plays the model (with the fused attention kernel)
    memory_factor = 1.5

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        prop = propagate(ctx.adapter, COMPOSITES.get(self.name)(**self.params), targets, x=x)
        return Attribution(prop.start.sum(1), prop.logits, prop.targets,
                           extras={"relevance_sum": prop.start.sum(dim=(1, 2, 3)),
                                   "explained_logit": prop.logits.gather(1, prop.targets.view(-1, 1))[:, 0]})


@register_method("attnlrp", citation="Achtibat et al., AttnLRP: Attention-Aware Layer-Wise Relevance Propagation "
                 "for Transformers, ICML 2024, arXiv:2402.05602", passes="F+B")
class AttnLRP(_GradientLRP):
    """AttnLRP: ``R_x = x ⊙ ∂̃y_c/∂x`` with the identity rule on GELU, LayerNorm's σ held constant, the
    uniform rule on both attention products (gradient 1/4 at q and k, 1/2 at v) and plain gradient x
    input (z/ε-rule) elsewhere; ``raw = Σ_RGB R_x`` (signed).

    Args:
        conv_gamma: γ of the γ-rule on the patch-embedding convolution (0 = plain rule).
        linear_gamma: γ on every Linear layer (0 = plain rule). lxt's ViT example uses 0.25 / 0.05.
    """

    param_constraints = {"conv_gamma": GAMMA, "linear_gamma": GAMMA}

    def __init__(self, *, conv_gamma: float = 0.0, linear_gamma: float = 0.0) -> None:
        super().__init__(conv_gamma=conv_gamma, linear_gamma=linear_gamma)


@register_method("cp_lrp", citation="Ali et al., XAI for Transformers: Better Explanations through Conservative "
                 "Propagation, ICML 2022, arXiv:2202.07304", passes="F+B")
class CPLRP(_GradientLRP):
    """CP-LRP: gradient x input with the attention probabilities held constant (AH-rule: relevance flows
    through the values only) and LayerNorm's σ held constant (LN-rule); ``raw = Σ_RGB R_x`` (signed).

    Args:
        conv_gamma: γ on the patch-embedding convolution (0 = plain rule).
        linear_gamma: γ on every Linear layer (0 = plain rule).
        gelu_rule: "identity" (lxt's ViT recipe, matched by the reference fixtures) or "gradient".
    """

    param_constraints = {"conv_gamma": GAMMA, "linear_gamma": GAMMA,
                         "gelu_rule": Options(("identity", "gradient"))}

    def __init__(self, *, conv_gamma: float = 0.0, linear_gamma: float = 0.0, gelu_rule: str = "identity") -> None:
        super().__init__(conv_gamma=conv_gamma, linear_gamma=linear_gamma, gelu_rule=gelu_rule)
