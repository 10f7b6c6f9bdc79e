"""Gradient baselines on the input: input x gradient, integrated gradients, SmoothGrad."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from xvit.capture import select_logits
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable, Options
from xvit.perturb import Black, Blur, MeanColour, Substrate
from xvit.targets import explained_classes


def _input_grads(ctx: Context, x: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """``∂y_c/∂x`` for many rows, ``chunk`` rows per forward/backward pass."""
    return torch.cat([ctx.record(x[i:i + chunk], targets[i:i + chunk], input_grad=True).input_grad
                      for i in range(0, x.shape[0], chunk)])


def _path_bytes(x: Tensor, copies: int) -> int:
    """Per-row memory of a method that makes ``copies`` noisy or scaled copies of each row and their gradients; the
    forward+backward passes over them run ``internal_batch_size`` rows at a time whatever the number of rows."""
    return 3 * copies * x[0].numel() * x.element_size()


def _predict(ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        logits = ctx.adapter.forward(x)
    return logits, explained_classes(logits, targets)


@register_method("input_x_gradient", citation="Shrikumar et al., Not Just a Black Box: Learning Important Features "
                 "Through Propagating Activation Differences, arXiv:1605.01713, 2016", passes="F+B")
class InputXGradient(Method):
    """``R = x ⊙ ∂y_c/∂x`` on the normalised input, summed over RGB (signed). Its implicit baseline is the
    normalised zero, i.e. the dataset mean colour."""

    signed = True
    resolution = "pixels"
    needs_attention_probs = False

    def __init__(self) -> None:
        super().__init__()

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        rec = ctx.record(x, targets, input_grad=True)
        return Attribution((x * rec.input_grad).sum(1), rec.logits, rec.targets)


def _baseline(kind: str, x: Tensor, ctx: Context) -> Tensor:
    if kind == "black":
        from xvit.models import preprocessing_for

        prep = preprocessing_for(ctx.adapter.model)
        substrate: Substrate = Black(prep.mean, prep.std)
    else:
        substrate = MeanColour() if kind == "zero" else Blur(11, 5.0, kernel="truncated", padding="zeros")
    return substrate.image(x).contiguous()


@register_method("integrated_gradients", citation="Sundararajan, Taly & Yan, Axiomatic Attribution for Deep "
                 "Networks, ICML 2017, arXiv:1703.01365", passes="n_steps x (F+B)")
class IntegratedGradients(Method):
    """``IG = (x − x') ⊙ Σ_k w_k ∇_x y_c(x' + α_k (x − x'))`` summed over RGB (signed), with
    Gauss-Legendre or trapezoid nodes on [0, 1] (Sundararajan et al. 2017, Eq. 1 and 3). ``meta`` holds
    the completeness gap ``Σ IG − (y_c(x) − y_c(x'))`` per row.

    Args:
        n_steps: number of integration nodes.
        approximation: "gausslegendre" (Captum's ``method`` default) or "riemann_trapezoid".
        baseline: "zero" (normalised 0, Captum's default), "black" (pixel 0 under the model's
            normalisation) or "blur" (Gaussian, 11x11, σ = 5).
        internal_batch_size: rows per forward/backward pass (16 on a CPU, 64 elsewhere).
    """

    signed = True
    resolution = "pixels"
    needs_attention_probs = False
    param_constraints = {"n_steps": Interval(1, None, integer=True),
                         "approximation": Options(("gausslegendre", "riemann_trapezoid")),
                         "baseline": Options(("zero", "black", "blur")),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True))}

    def __init__(self, *, n_steps: int = 50, approximation: str = "gausslegendre", baseline: str = "zero",
                 internal_batch_size: int | None = None) -> None:
        super().__init__(n_steps=n_steps, approximation=approximation, baseline=baseline,
                         internal_batch_size=internal_batch_size)

    def memory_per_row(self, ctx: Context, x: Tensor) -> int:
        return _path_bytes(x, self.params["n_steps"])

    def _nodes(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.params["n_steps"]
        if self.params["approximation"] == "gausslegendre":
            nodes, weights = np.polynomial.legendre.leggauss(n)
            return 0.5 * (nodes + 1), 0.5 * weights
        if n == 1:
            return np.array([0.5]), np.array([1.0])
        alphas = np.linspace(0, 1, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return alphas, weights

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        logits, targets = _predict(ctx, x, targets)
        base = _baseline(self.params["baseline"], x, ctx)
        alphas, weights = self._nodes()
        n, N = len(alphas), x.shape[0]
        a = x.new_tensor(alphas).view(n, 1, 1, 1, 1)
        path = (base + a * (x - base)).reshape(n * N, *x.shape[1:])
        grads = _input_grads(ctx, path, targets.repeat(n), self.rows_per_pass(x))
        avg = (grads.view(n, N, *x.shape[1:]) * x.new_tensor(weights).view(n, 1, 1, 1, 1)).sum(0)
        ig = (x - base) * avg
        with torch.no_grad():
            base_logit = select_logits(ctx.adapter.forward(base), targets)
        gap = ig.sum(dim=(1, 2, 3)) - (select_logits(logits, targets) - base_logit)
        return Attribution(ig.sum(1), logits, targets, extras={"completeness_gap": gap})


@register_method("smoothgrad", citation="Smilkov et al., SmoothGrad: removing noise by adding noise, "
                 "arXiv:1706.03825, 2017", passes="n_samples x (F+B)")
class SmoothGrad(Method):
    """Mean of a base attribution over noisy copies ``x + ε_k``, ``ε_k ~ N(0, σ²)``, summed over RGB
    (Smilkov et al. 2017, Eq. 3). Every image draws its noise from a generator seeded with ``seed``.

    Args:
        n_samples: noisy copies per image.
        noise_level: σ as a fraction of each image's value range (the paper recommends 10-20 %).
        stdevs: absolute σ in normalised units; overrides ``noise_level`` (Captum's default is 1.0).
        base: "saliency" (``|∇|``), "gradient" or "input_x_gradient".
        nt_type: "smoothgrad" (mean), "smoothgrad_sq" (mean of squares) or "vargrad" (variance).
        seed: seed of the noise.
        internal_batch_size: rows per forward/backward pass (16 on a CPU, 64 elsewhere).
    """

    resolution = "pixels"
    needs_attention_probs = False
    param_constraints = {"n_samples": Interval(1, None, integer=True), "noise_level": Interval(0, None),
                         "stdevs": Nullable(Interval(0, None)),
                         "base": Options(("saliency", "gradient", "input_x_gradient")),
                         "nt_type": Options(("smoothgrad", "smoothgrad_sq", "vargrad")),
                         "seed": Interval(0, None, integer=True),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True))}

    def __init__(self, *, n_samples: int = 50, noise_level: float = 0.15, stdevs: float | None = None,
                 base: str = "saliency", nt_type: str = "smoothgrad", seed: int = 0,
                 internal_batch_size: int | None = None) -> None:
        super().__init__(n_samples=n_samples, noise_level=noise_level, stdevs=stdevs, base=base, nt_type=nt_type,
                         seed=seed, internal_batch_size=internal_batch_size)

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return self.params["base"] != "saliency" and self.params["nt_type"] == "smoothgrad"

    def memory_per_row(self, ctx: Context, x: Tensor) -> int:
        return _path_bytes(x, self.params["n_samples"])

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p = self.params
        logits, targets = _predict(ctx, x, targets)
        n, N = p["n_samples"], x.shape[0]
        if p["stdevs"] is not None:
            sigma = x.new_full((N,), float(p["stdevs"]))
        else:
            sigma = p["noise_level"] * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
        # Each image draws its noise from its own generator seeded with ``seed``, so a map does not depend on
        # the batch it is computed in; for one image the draws equal Captum's NoiseTunnel after
        # torch.manual_seed(seed).
        noise = []
        for i in range(N):
            gen = torch.Generator(device=x.device).manual_seed(p["seed"])
            std = sigma[i].expand(n, *x.shape[1:]).contiguous()
            noise.append(torch.normal(0.0, std, generator=gen))
        noisy = x.repeat_interleave(n, 0) + torch.cat(noise)
        grads = _input_grads(ctx, noisy, targets.repeat_interleave(n), self.rows_per_pass(x))
        if p["base"] == "saliency":
            attr = grads.abs()
        elif p["base"] == "input_x_gradient":
            attr = noisy * grads
        else:
            attr = grads
        attr = attr.view(N, n, *x.shape[1:])
        if p["nt_type"] == "smoothgrad":
            out = attr.mean(1)
        elif p["nt_type"] == "smoothgrad_sq":
            out = (attr**2).mean(1)
        else:
            out = attr.var(1, unbiased=False)
        return Attribution(out.sum(1), logits, targets)
