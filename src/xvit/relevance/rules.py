"""Relevance rules: small objects, one per propagation rule, applied to one op of the ViT graph.

Two conventions exist, and a composite uses one throughout:

* ``relevance``: the backward pass carries relevance itself (Chefer et al. 2021's ``relprop``); each rule
  is an autograd function whose backward *is* the rule.
* ``gradient``: the backward pass carries a (modified) gradient and relevance is ``input * gradient``
  (the "gradient x input" form of LRP used by AttnLRP and CP-LRP); each rule changes the forward graph
  so that autograd computes the modified gradient while forward values stay those of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / (b + 1e-9)`` where ``b != 0`` and 0 where ``b == 0``: the same positive shift for both signs,
    as in Chefer et al.'s reference ``safe_divide`` (which this reproduces exactly)."""
    den = b + 1e-9
    den = den + (den == 0).to(den.dtype) * 1e-9
    return a / den * (b != 0).to(b.dtype)


def _sample_sum(t: Tensor) -> Tensor:
    return t.sum(dim=tuple(range(1, t.ndim)), keepdim=True)


# ---------------------------------------------------------------------------------------------------
# "relevance" convention (Chefer et al., CVPR 2021, arXiv:2012.09838, relprop rules)
# ---------------------------------------------------------------------------------------------------

class _PassThroughFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return fn(x)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None]:
        return r, None


class PassThrough:
    """Identity rule: relevance passes unchanged (LayerNorm, GELU, softmax, scalings)."""

    def __call__(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return _PassThroughFn.apply(x, fn)


class _AlphaBetaFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, conservative: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conservative = conservative
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None, None]:
        x, w = ctx.saved_tensors
        xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
        zp, zn = F.linear(xp, wp), F.linear(xn, wn)
        if ctx.conservative:
            s = safe_divide(r, zp + zn)
            return xp * (s @ wp) + xn * (s @ wn), None, None, None
        return xp * (safe_divide(r, zp) @ wp) + xn * (safe_divide(r, zn) @ wn), None, None, None


class AlphaBeta:
    """LRP-αβ with α = 1, β = 0 on a Linear layer, bias ignored (Bach et al. 2015; Chefer et al. 2021 Eq. 4).

    ``conservative=True`` normalises by ``z̃ = x⁺W⁺ + x⁻W⁻`` (Chefer's ``layers_ours``; conserves
    relevance); ``False`` normalises the two parts separately (``layers_lrp``; does not conserve).
    """

    def __init__(self, conservative: bool = True) -> None:
        self.conservative = conservative

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _AlphaBetaFn.apply(x, weight.detach(), None if bias is None else bias.detach(), self.conservative)


class _ZBoxFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv2d(x, weight, bias, stride=stride)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None, None]:
        x, w = ctx.saved_tensors
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        low = torch.ones_like(x) * x.amin(dim=(1, 2, 3), keepdim=True)
        high = torch.ones_like(x) * x.amax(dim=(1, 2, 3), keepdim=True)
        conv = lambda t, k: F.conv2d(t, k, stride=ctx.stride)  # noqa: E731
        z = conv(x, w) - conv(low, wp) - conv(high, wn) + 1e-9
        s = r / z
        back = lambda k: torch.nn.grad.conv2d_input(x.shape, k, s, stride=ctx.stride)  # noqa: E731
        return x * back(w) - low * back(wp) - high * back(wn), None, None, None


class ZBox:
    """z^B rule for the first (pixel) layer with bounds ``l = min x``, ``h = max x`` per sample
    (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor decomposition")."""

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> Tensor:
        return _ZBoxFn.apply(x, weight.detach(), None if bias is None else bias.detach(), tuple(stride))


class _HalfBilinearFn(Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        out = a @ b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, Tensor]:
        a, b, out = ctx.saved_tensors
        s = safe_divide(r, out)
        return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


class HalfBilinear:
    """z-rule on a product of two activations ``O = A·B``, then each operand's relevance halved
    (Chefer et al. 2021, Eq. 5-6: ``A·V`` and ``Q·Kᵀ``)."""

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return _HalfBilinearFn.apply(a, b)


class _AddFn(Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, rescale: bool) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.rescale = rescale
        return a + b

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, Tensor, None]:
        a, b = ctx.saved_tensors
        s = safe_divide(r, a + b)
        ra, rb = a * s, b * s
        if ctx.rescale:
            sa, sb, total = _sample_sum(ra), _sample_sum(rb), _sample_sum(r)
            denom = sa.abs() + sb.abs()
            ra = ra * safe_divide(safe_divide(sa.abs(), denom) * total, sa)
            rb = rb * safe_divide(safe_divide(sb.abs(), denom) * total, sb)
        return ra, rb, None


class ZAdd:
    """z-rule on a sum ``o = a + b``: ``R_a = a·R/o``; with ``rescale=True`` both parts are then scaled per
    sample so their totals keep the ratio ``|ΣR_a| : |ΣR_b|`` and add up to ``ΣR`` (Chefer et al. 2021,
    Eq. 7-8, residual connections)."""

    def __init__(self, rescale: bool = False) -> None:
        self.rescale = rescale

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return _AddFn.apply(a, b, self.rescale)


class _CloneFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(x)
        return x.clone(), x.clone()

    @staticmethod
    def backward(ctx: Any, r1: Tensor, r2: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x * (safe_divide(r1, x) + safe_divide(r2, x))


class ZClone:
    """A fork (residual stream copy): branch relevances add up, z-rule style (0 where ``x = 0``)."""

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _CloneFn.apply(x)


class _ZMeanFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.mean(1)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x * safe_divide(r, x.sum(1)).unsqueeze(1)


class ZMean:
    """z-rule on average pooling over tokens: ``R_i = x_i · R / Σ_j x_j``."""

    def __call__(self, x: Tensor) -> Tensor:
        return _ZMeanFn.apply(x)


# ---------------------------------------------------------------------------------------------------
# "gradient" convention (Achtibat et al., AttnLRP, ICML 2024, arXiv:2402.05602; Ali et al., ICML 2022)
# ---------------------------------------------------------------------------------------------------

def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """Forward value unchanged (exactly), gradient multiplied by ``factor``."""
    return x.detach() + (x - x.detach()) * factor


def _stabilise(z: Tensor, eps: float = 1e-6) -> Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class Gamma:
    """LRP-γ on a Linear or Conv2d layer: the backward pass follows ``z_γ`` computed with ``W + γW⁺`` and
    ``b + γb⁺`` while the forward value stays ``z`` (Montavon et al. 2019; AttnLRP §3.5 γ-rule)."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def _modified(self, w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor | None]:
        g = self.gamma
        return w + g * w.clamp(min=0), None if b is None else b + g * b.clamp(min=0)

    def _combine(self, z: Tensor, zg: Tensor) -> Tensor:
        return zg * (z / _stabilise(zg)).detach()

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = F.linear(x, weight, bias)
        if self.gamma == 0:
            return z
        return self._combine(z, F.linear(x, *self._modified(weight, bias)))

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> Tensor:
        z = F.conv2d(x, weight, bias, stride=stride)
        if self.gamma == 0:
            return z
        w, b = self._modified(weight, bias)
        return self._combine(z, F.conv2d(x, w, b, stride=stride))


class _IdentityNonlinearityFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        x, y = ctx.saved_tensors
        return g * y / (x + 1e-10), None


class IdentityNonlinearity:
    """Identity rule for an element-wise non-linearity ``f``: ``R_in = R_out``, i.e. in gradient form the
    backward multiplies by ``f(x)/x`` instead of ``f'(x)`` (AttnLRP Prop. 3.1)."""

    def __call__(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return _IdentityNonlinearityFn.apply(x, fn)


class DetachedStdNorm:
    """LayerNorm with the standard deviation treated as a constant, ``(x − μ)/sg(σ)·γ + β``
    (Ali et al. 2022 LN-rule; AttnLRP §3.3). ``detach_mean=True`` also stops the gradient at ``μ``."""

    def __init__(self, detach_mean: bool = False) -> None:
        self.detach_mean = detach_mean

    def __call__(self, x: Tensor, norm: torch.nn.Module) -> Tensor:
        mu = x.mean(-1, keepdim=True)
        if self.detach_mean:
            mu = mu.detach()
        std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps).detach()
        y = (x - mu) / std
        return y * norm.weight + norm.bias if norm.weight is not None else y


class AttentionHeadRule:
    """Rule for the attention inputs ``q, k, v``.

    ``uniform`` (AttnLRP): gradients scaled by 1/4 at ``q`` and ``k`` and 1/2 at ``v``, which with plain
    gradients through softmax and both matmuls equals AttnLRP's uniform rule for the two bilinear
    products (Achtibat et al. 2024, Eq. 13 and Prop. 3.3). ``constant`` (CP-LRP AH-rule, Ali et al. 2022):
    ``q`` and ``k`` are detached, so attention probabilities act as constants and relevance flows
    through ``v`` only.
    """

    def __init__(self, mode: str = "uniform") -> None:
        self.mode = mode

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.mode == "constant":
            return q.detach(), k.detach(), v
        return scale_gradient(q, 0.25), scale_gradient(k, 0.25), scale_gradient(v, 0.5)
