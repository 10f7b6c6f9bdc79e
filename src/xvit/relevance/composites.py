"""Composites: which rule each op of the canonical ViT graph uses, registered by name.

A :class:`Composite` names one rule per op kind of :func:`xvit.relevance.engine.vit_graph`; ops left at
their default run plainly (ordinary autograd). ``convention`` says what the backward pass carries (see
:mod:`xvit.relevance.rules`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.models.svda import unit_rows
from xvit.registry import Registry
from xvit.relevance.rules import (
    AlphaBeta,
    AttentionHeadRule,
    BackwardMode,
    ConstantUnitNorm,
    DetachedStdNorm,
    Gamma,
    HalfBilinear,
    IdentityNonlinearity,
    PassThrough,
    ZAdd,
    ZBox,
    ZClone,
    ZMean,
)


def _plain_norm(x: Tensor, norm: torch.nn.Module) -> Tensor:
    return norm(x)


def _plain_act(x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    return fn(x)


def _plain_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> Tensor:
    return F.conv2d(x, weight, bias, stride=stride)


def _plain_clone(x: Tensor) -> tuple[Tensor, Tensor]:
    return x, x


@dataclass(frozen=True)
class Composite:
    """One rule per op kind. ``norm``, ``act`` and ``softmax``/``scale`` rules take ``(x, fn)``; ``unit`` is the
    ℓ2 normalisation of SVDA's queries and keys (plain by default)."""

    name: str
    convention: str = "gradient"
    linear: Callable[..., Tensor] = F.linear
    conv: Callable[..., Tensor] = _plain_conv
    norm: Callable[..., Tensor] = _plain_norm
    act: Callable[..., Tensor] = _plain_act
    softmax: Callable[..., Tensor] = _plain_act
    scale: Callable[..., Tensor] = _plain_act
    matmul: Callable[[Tensor, Tensor], Tensor] = torch.matmul
    add: Callable[[Tensor, Tensor], Tensor] = operator.add
    clone: Callable[[Tensor], tuple[Tensor, Tensor]] = _plain_clone
    mean: Callable[[Tensor], Tensor] = field(default=lambda x: x.mean(1))
    qkv: Callable[..., tuple[Tensor, Tensor, Tensor]] = field(default=lambda q, k, v: (q, k, v))
    unit: Callable[[Tensor], Tensor] = unit_rows
    mode: BackwardMode | None = None  # relevance-convention composites: switch their backward to gradients

    @property
    def plain_attention(self) -> bool:
        """Whether ``softmax(q kᵀ · scale) v`` runs with plain autograd (the rules act on q, k and v only)."""
        return self.matmul is torch.matmul and self.softmax is _plain_act and self.scale is _plain_act


COMPOSITES: Registry[Callable[..., Composite]] = Registry("composite", "xvit.relevance.COMPOSITES.names()")


@COMPOSITES.register("gradient")
def gradient() -> Composite:
    """Plain gradients everywhere: the canonical graph computes the model's own function and gradient."""
    return Composite("gradient")


@COMPOSITES.register("chefer2021")
def chefer2021(conservative: bool = True) -> Composite:
    """Chefer et al. 2021's relprop rules: ``conservative=True`` is ``layers_ours`` (Transformer
    Attribution: conservative αβ and re-scaled residual adds), ``False`` is ``layers_lrp`` (the paper's
    LRP baselines: αβ parts normalised separately, plain z-rule adds). SVDA's ℓ2 normalisers pass relevance
    through unchanged, like LayerNorm."""
    mode = BackwardMode()
    passthrough = PassThrough(mode)
    return Composite(
        "chefer2021" if conservative else "chefer2021_lrp", convention="relevance",
        linear=AlphaBeta(mode, conservative), conv=ZBox(mode), norm=passthrough, act=passthrough,
        softmax=PassThrough(mode, "softmax"), scale=PassThrough(mode, "linear"), matmul=HalfBilinear(mode),
        add=ZAdd(mode, rescale=conservative),
        clone=ZClone(mode), mean=ZMean(mode), unit=lambda t: passthrough(t, unit_rows), mode=mode,
    )


def _lxt_style(name: str, attention: str, gelu: str, conv_gamma: float, linear_gamma: float) -> Composite:
    act: Any = IdentityNonlinearity() if gelu == "identity" else _plain_act
    return Composite(name, convention="gradient", linear=Gamma(linear_gamma).linear,
                     conv=Gamma(conv_gamma).conv, norm=DetachedStdNorm(), act=act,
                     qkv=AttentionHeadRule(attention), unit=ConstantUnitNorm())


@COMPOSITES.register("attnlrp")
def attnlrp(conv_gamma: float = 0.0, linear_gamma: float = 0.0) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024, arXiv:2402.05602): identity rule on GELU, LayerNorm with a
    constant σ, the uniform rule on both attention products, ε/z-rule (plain gradient x input) or γ on
    Linear and Conv2d layers."""
    return _lxt_style("attnlrp", "uniform", "identity", conv_gamma, linear_gamma)


@COMPOSITES.register("cp_lrp")
def cp_lrp(conv_gamma: float = 0.0, linear_gamma: float = 0.0, gelu_rule: str = "identity") -> Composite:
    """CP-LRP (Ali et al., ICML 2022, arXiv:2202.07304): attention probabilities held constant (AH-rule),
    LayerNorm with a constant σ (LN-rule); lxt's ViT recipe keeps the identity rule on GELU."""
    return _lxt_style("cp_lrp", "constant", gelu_rule, conv_gamma, linear_gamma)
