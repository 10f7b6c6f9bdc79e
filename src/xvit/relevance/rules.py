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

from xvit.models.svda import UNIT_EPS


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / (b + 1e-9)`` where ``b != 0`` and 0 where ``b == 0``: the same positive shift for both signs,
    as in Chefer et al.'s reference ``safe_divide`` (which this reproduces exactly)."""
    den = b + 1e-9
    den = torch.where(den == 0, 1e-9, den)
    return (a / den).masked_fill_(b == 0, 0.0)


class BackwardMode:
    """Switch shared by the rules of one composite: ``"relevance"`` (the rule) or ``"gradient"`` (the true
    gradient). One re-played forward then serves a gradient and a relevance backward pass, as
    Transformer Attribution needs both (Chefer et al. 2021, Eq. 13)."""

    def __init__(self) -> None:
        self.gradient = False


def _sample_sum(t: Tensor) -> Tensor:
    return t.sum(dim=tuple(range(1, t.ndim)), keepdim=True)


# ---------------------------------------------------------------------------------------------------
# "relevance" convention (Chefer et al., CVPR 2021, arXiv:2012.09838, relprop rules)
# ---------------------------------------------------------------------------------------------------

class _PassThroughFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], mode: BackwardMode) -> Tensor:
        ctx.fn, ctx.mode = fn, mode
        ctx.save_for_backward(x)
        return fn(x)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None]:
        if not ctx.mode.gradient:
            return r, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(ctx.fn(xg), xg, r)[0], None, None


class _LinearPassThroughFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], mode: BackwardMode) -> Tensor:
        ctx.fn, ctx.mode = fn, mode
        return fn(x)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None]:
        return (ctx.fn(r) if ctx.mode.gradient else r), None, None


class _SoftmaxPassThroughFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], mode: BackwardMode) -> Tensor:
        y = fn(x)
        ctx.mode = mode
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None]:
        if not ctx.mode.gradient:
            return r, None, None
        (y,) = ctx.saved_tensors
        return torch._softmax_backward_data(r, y, -1, y.dtype), None, None


class PassThrough:
    """Identity rule: relevance passes unchanged (LayerNorm, GELU, softmax, scalings).

    In gradient mode the backward is the op's true gradient: ``kind="generic"`` re-computes it from the saved input,
    ``"linear"`` (scalings) applies the op to the gradient and saves nothing, ``"softmax"`` (over the last axis)
    uses the saved output, ``y ⊙ (g − Σ g ⊙ y)`` (one fused kernel), which the next product keeps anyway.
    """

    def __init__(self, mode: BackwardMode, kind: str = "generic") -> None:
        self.mode = mode
        self.fn = {"generic": _PassThroughFn, "linear": _LinearPassThroughFn, "softmax": _SoftmaxPassThroughFn}[kind]

    def __call__(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        return self.fn.apply(x, fn, self.mode)


class _AlphaBetaFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, conservative: bool,
                mode: BackwardMode) -> Tensor:
        out = x @ weight.t()
        if bias is not None:
            out = out + bias
        ctx.conservative, ctx.mode = conservative, mode
        # The output is kept rather than x·Wᵀ: the next op keeps it anyway, so it costs no memory here.
        ctx.save_for_backward(x, weight, bias, out if conservative else None)
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None, None, None]:
        x, w, bias, out = ctx.saved_tensors
        if ctx.mode.gradient:
            return r @ w, None, None, None, None
        if ctx.conservative:
            z = out if bias is None else out - bias
            # With x = x⁺ + x⁻ and W = W⁺ + W⁻: x⁺W⁺ + x⁻W⁻ = (xW + |x||W|)/2 term by term, so the
            # normaliser needs one product beyond the forward's xW, and the two back-products share one.
            ax, aw = x.abs(), w.abs()
            s = safe_divide(r, (z + ax @ aw.t()) / 2)
            back = s @ torch.cat([w, aw], 1)
            return (x * back[..., : w.shape[1]] + ax * back[..., w.shape[1]:]) / 2, None, None, None, None
        xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
        zp, zn = F.linear(xp, wp), F.linear(xn, wn)
        return xp * (safe_divide(r, zp) @ wp) + xn * (safe_divide(r, zn) @ wn), None, None, None, None


class AlphaBeta:
    """LRP-αβ with α = 1, β = 0 on a Linear layer, bias ignored (Bach et al. 2015; Chefer et al. 2021 Eq. 4).

    ``conservative=True`` normalises by ``z̃ = x⁺W⁺ + x⁻W⁻`` (Chefer's ``layers_ours``; conserves
    relevance); ``False`` normalises the two parts separately (``layers_lrp``; does not conserve).
    """

    def __init__(self, mode: BackwardMode, conservative: bool = True) -> None:
        self.mode = mode
        self.conservative = conservative

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _AlphaBetaFn.apply(x, weight.detach(), None if bias is None else bias.detach(), self.conservative,
                                  self.mode)


class _ZBoxFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                mode: BackwardMode) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.mode = stride, mode
        return F.conv2d(x, weight, bias, stride=stride)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None, None, None, None]:
        x, w = ctx.saved_tensors
        if ctx.mode.gradient:
            return torch.nn.grad.conv2d_input(x.shape, w, r, stride=ctx.stride), None, None, None, None
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        low = torch.ones_like(x) * x.amin(dim=(1, 2, 3), keepdim=True)
        high = torch.ones_like(x) * x.amax(dim=(1, 2, 3), keepdim=True)
        conv = lambda t, k: F.conv2d(t, k, stride=ctx.stride)  # noqa: E731
        z = conv(x, w) - conv(low, wp) - conv(high, wn) + 1e-9
        s = r / z
        back = lambda k: torch.nn.grad.conv2d_input(x.shape, k, s, stride=ctx.stride)  # noqa: E731
        return x * back(w) - low * back(wp) - high * back(wn), None, None, None, None


class ZBox:
    """z^B rule for the first (pixel) layer with bounds ``l = min x``, ``h = max x`` per sample
    (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor decomposition")."""

    def __init__(self, mode: BackwardMode) -> None:
        self.mode = mode

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int]) -> Tensor:
        return _ZBoxFn.apply(x, weight.detach(), None if bias is None else bias.detach(), tuple(stride), self.mode)


class _HalfBilinearFn(Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, mode: BackwardMode) -> Tensor:
        out = a @ b
        ctx.mode = mode
        # Q·Kᵀ's (T, T) output is recomputed by the relevance pass rather than kept through both passes.
        ctx.keep_out = out.numel() <= a.numel() + b.numel()
        ctx.save_for_backward(a, b, out if ctx.keep_out else None)
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, Tensor, None]:
        a, b, out = ctx.saved_tensors
        if ctx.mode.gradient:
            return r @ b.transpose(-2, -1), a.transpose(-2, -1) @ r, None
        s = safe_divide(r, out if ctx.keep_out else a @ b)
        halve_s = s.numel() < a.numel() + b.numel()  # halve the smaller side (exact either way: a power of 2)
        s = s / 2 if halve_s else s
        ra, rb = a * (s @ b.transpose(-2, -1)), b * (a.transpose(-2, -1) @ s)
        return (ra, rb, None) if halve_s else (ra / 2, rb / 2, None)


class HalfBilinear:
    """z-rule on a product of two activations ``O = A·B``, then each operand's relevance halved
    (Chefer et al. 2021, Eq. 5-6: ``A·V`` and ``Q·Kᵀ``)."""

    def __init__(self, mode: BackwardMode) -> None:
        self.mode = mode

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return _HalfBilinearFn.apply(a, b, self.mode)


class _AddFn(Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, rescale: bool, mode: BackwardMode) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.rescale, ctx.mode = rescale, mode
        return a + b

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, Tensor, None, None]:
        if ctx.mode.gradient:
            return r, r, None, None
        a, b = ctx.saved_tensors
        s = safe_divide(r, a + b)
        ra, rb = a * s, b * s
        if ctx.rescale:
            sa, sb, total = _sample_sum(ra), _sample_sum(rb), _sample_sum(r)
            denom = sa.abs() + sb.abs()
            ra = ra * safe_divide(safe_divide(sa.abs(), denom) * total, sa)
            rb = rb * safe_divide(safe_divide(sb.abs(), denom) * total, sb)
        return ra, rb, None, None


class ZAdd:
    """z-rule on a sum ``o = a + b``: ``R_a = a·R/o``; with ``rescale=True`` both parts are then scaled per
    sample so their totals keep the ratio ``|ΣR_a| : |ΣR_b|`` and add up to ``ΣR`` (Chefer et al. 2021,
    Eq. 7-8, residual connections)."""

    def __init__(self, mode: BackwardMode, rescale: bool = False) -> None:
        self.mode = mode
        self.rescale = rescale

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return _AddFn.apply(a, b, self.rescale, self.mode)


class _CloneFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, mode: BackwardMode) -> tuple[Tensor, Tensor]:
        ctx.mode = mode
        ctx.save_for_backward(x)
        return x.view_as(x), x.view_as(x)  # views: the two branches share the input's memory

    @staticmethod
    def backward(ctx: Any, r1: Tensor, r2: Tensor) -> tuple[Tensor, None]:
        if ctx.mode.gradient:
            return r1 + r2, None
        (x,) = ctx.saved_tensors
        return x * (safe_divide(r1, x) + safe_divide(r2, x)), None


class ZClone:
    """A fork (residual stream copy): branch relevances add up, z-rule style (0 where ``x = 0``)."""

    def __init__(self, mode: BackwardMode) -> None:
        self.mode = mode

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _CloneFn.apply(x, self.mode)


class _ZMeanFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, mode: BackwardMode) -> Tensor:
        ctx.mode = mode
        ctx.save_for_backward(x)
        return x.mean(1)

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        if ctx.mode.gradient:
            return (r / x.shape[1]).unsqueeze(1).expand_as(x), None
        return x * safe_divide(r, x.sum(1)).unsqueeze(1), None


class ZMean:
    """z-rule on average pooling over tokens: ``R_i = x_i · R / Σ_j x_j``."""

    def __init__(self, mode: BackwardMode) -> None:
        self.mode = mode

    def __call__(self, x: Tensor) -> Tensor:
        return _ZMeanFn.apply(x, self.mode)


# ---------------------------------------------------------------------------------------------------
# "gradient" convention (Achtibat et al., AttnLRP, ICML 2024, arXiv:2402.05602; Ali et al., ICML 2022)
# ---------------------------------------------------------------------------------------------------

class _ScaleGradientFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.factor, None


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """Forward value unchanged (a view, no copy), gradient multiplied by ``factor``."""
    return _ScaleGradientFn.apply(x, factor)


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


class _DetachedStdNormFn(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, norm: torch.nn.Module, detach_mean: bool) -> Tensor:
        weight = None if norm.weight is None else norm.weight.detach()
        bias = None if norm.bias is None else norm.bias.detach()
        y, _, rstd = torch.native_layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)
        ctx.detach_mean = detach_mean
        ctx.save_for_backward(rstd, weight)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        rstd, weight = ctx.saved_tensors
        gw = g if weight is None else g * weight
        if not ctx.detach_mean:
            gw = gw - gw.mean(-1, keepdim=True)
        return gw * rstd, None, None


class DetachedStdNorm:
    """LayerNorm with the standard deviation treated as a constant, ``(x − μ)/sg(σ)·γ + β``
    (Ali et al. 2022 LN-rule; AttnLRP §3.3). ``detach_mean=True`` also stops the gradient at ``μ``.

    The forward is the model's own fused LayerNorm; the backward, ``(g·γ − mean(g·γ))/σ``, keeps only ``1/σ``
    per token.
    """

    def __init__(self, detach_mean: bool = False) -> None:
        self.detach_mean = detach_mean

    def __call__(self, x: Tensor, norm: torch.nn.Module) -> Tensor:
        return _DetachedStdNormFn.apply(x, norm, self.detach_mean)


class ConstantUnitNorm:
    """SVDA's ℓ2 normalisation with the norm held constant, ``x / sg(‖x‖)``: like LayerNorm's σ under the LN-rule
    (Ali et al. 2022; AttnLRP §3.3) it becomes a linear diagonal scaling, which passes relevance through unchanged
    (analysis-methods.md §2.1)."""

    def __call__(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(UNIT_EPS).detach()


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
