"""Class rewriting (Cui, Fan & Chen 2026, arXiv:2605.11392; analysis-methods.md §3, reading ``cui2026-r1``): a
targeted L∞ attack in pixel space whose support is restricted to the patches an explanation ranks highest, with an
unrestricted and a random-support control in the same run. A robustness-auditing tool; see docs/analyses.md."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from xvit.analysis.base import Analysis, AnalysisResult, register_analysis
from xvit.methods.base import METHODS, Context, Method
from xvit.models import preprocessing_for
from xvit.params import Interval, InvalidParameterError, Nullable, Options, Satisfies
from xvit.utils.filters import gaussian_blur
from xvit.utils.maps import normalise_maps

ARMS = ("explanation", "unrestricted", "random")


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image of ``(B, C, H, W)`` images in [0, 1] (Wang et al., IEEE TIP 2004: 11×11 Gaussian window,
    σ = 1.5, K1 = 0.01, K2 = 0.03, reflect padding), averaged over channels and pixels: ``(B,)``."""
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: Tensor) -> Tensor:
        return gaussian_blur(t, 11, 1.5, padding="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def _patch_scores(raw: Tensor, grid: tuple[int, int]) -> Tensor:
    """A method's raw maps ``(N, h, w)`` or pixel maps ``(N, H, W)`` as per-patch scores ``(N, h·w)``."""
    if tuple(raw.shape[-2:]) != tuple(grid):
        raw = F.adaptive_avg_pool2d(raw[:, None], grid)[:, 0]
    return raw.flatten(1)


@register_analysis("rewrite_class", citation="Cui, Fan & Chen, Transformer Interpretability from Perspective of "
                   "Attention and Gradient, arXiv:2605.11392 (2026): class rewriting; reading cui2026-r1",
                   cost="2·(explanation) + arms·steps·(F+B) + 2·(explanation)")
class ClassRewriting(Analysis):
    """Explanation-restricted targeted PGD: change each image's class to a target class inside the top-``q`` patches
    of an explanation, under an L∞ budget ``ε`` on [0, 1] pixels (the model's normalisation applied after), stopping
    per image as soon as the target wins; controls in the same run: unrestricted PGD and a random support of equal
    area.

    ``δ ← clip_ε(δ − a·sign(∇_δ CE(f(norm(x + δ)), t)) ⊙ Ω)``, then clipped so that ``x + δ`` stays in [0, 1].

    Tensors (arms in the order explanation, unrestricted, random; ``(B, A)`` unless stated): ``success``, ``steps``,
    ``target_prob``, ``linf``, ``l2``, ``psnr`` (dB; inf where unchanged), ``ssim``, ``patches`` (patches touched),
    ``support`` ``(B, A, h, w)``; ``source``, ``target`` ``(B,)``; ``pixels`` and ``delta`` ``(B, 3, H, W)`` (original
    and perturbation of the explanation arm); ``maps_before`` / ``maps_after`` ``(B, 2, h', w')`` raw explanations of
    the source and target class before and after (explanation arm).

    Args:
        epsilon: L∞ budget on [0, 1] pixels.
        steps: at most this many PGD steps.
        step_size: ``a``; None: ``ε / 4``.
        q: support fraction (top ``⌈q·N⌉`` patches).
        mask_from: the explained class that chooses the support: "source", "target" or "none" (``Ω = 1``).
        margin: the target wins when its logit exceeds every other by more than this.
        method: explanation method (one pass per target) for the support and the maps before and after.
        method_params: its parameters.
        controls: also run the unrestricted and the random-support arms.
        seed: seed of the random support (one generator per image, so results do not depend on the batch).
    """

    definition_version = "cui2026-r1"
    param_constraints = {
        "epsilon": Interval(0, 1, closed="right"), "steps": Interval(1, None, integer=True),
        "step_size": Nullable(Interval(0, None, closed="neither")), "q": Interval(0, 1, closed="right"),
        "mask_from": Options(("source", "target", "none")), "margin": Interval(0, None),
        "method": Satisfies(lambda v: isinstance(v, str) and v in METHODS, "a registered method name"),
        "method_params": Nullable(Satisfies(lambda v: isinstance(v, dict), "a dict of the method's parameters")),
        "controls": Options((True, False)), "seed": Interval(0, None, integer=True),
    }

    def __init__(self, *, epsilon: float = 2 / 255, steps: int = 50, step_size: float | None = None, q: float = 0.25,
                 mask_from: str = "source", margin: float = 0.0, method: str = "gradient_corrected_attention",
                 method_params: dict[str, Any] | None = None, controls: bool = True, seed: int = 0) -> None:
        super().__init__(epsilon=epsilon, steps=steps, step_size=step_size, q=q, mask_from=mask_from, margin=margin,
                         method=method, method_params=method_params, controls=controls, seed=seed)
        self.explainer_method: Method = METHODS.get(method)(**(method_params or {}))
        if not (self.explainer_method.class_specific and self.explainer_method.per_target_pass):
            raise InvalidParameterError(f"The 'method' parameter of rewrite_class must be a class-specific method "
                                        f"with one pass per target; {method!r} is not.")

    def _explain(self, ctx: Context, x: Tensor, classes: Tensor) -> Tensor:
        return self.explainer_method.attribute(ctx, x, classes).raw.detach()

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        p = self.params
        B = x.shape[0]
        prep = preprocessing_for(ctx.adapter.model)
        mean = x.new_tensor(prep.mean).view(1, -1, 1, 1)
        std = x.new_tensor(prep.std).view(1, -1, 1, 1)
        pixels = (x * std + mean).detach()
        self.explainer_method.validate(ctx)
        with torch.no_grad():
            logits = ctx.adapter.forward(x)
        source = logits.argmax(-1)
        target = logits.topk(2, dim=-1).indices[:, 1] if targets is None else targets.to(x.device).view(-1)
        if target.shape != (B,):
            raise ValueError(f"rewrite_class takes one target class per image; got {tuple(target.shape)}.")

        before = self._explain(ctx, x.repeat_interleave(2, 0), torch.stack([source, target], 1).flatten())
        before = before.view(B, 2, *before.shape[1:])
        grid, n_patches = ctx.layout.grid, ctx.layout.num_patches
        size = max(1, math.ceil(p["q"] * n_patches))
        supports = [self._support(before, grid, size)]
        if p["controls"]:
            supports.append(torch.ones_like(supports[0]))
            supports.append(self._random_support(B, n_patches, size, x.device).to(supports[0].dtype))
        support = torch.stack(supports, 1).view(B, len(supports), *grid)  # (B, A, h, w)
        A = support.shape[1]

        rows_pixels = pixels.repeat_interleave(A, 0)
        omega = F.interpolate(support.flatten(0, 1)[:, None], scale_factor=ctx.layout.patch_size, mode="nearest")
        delta, steps = self._attack(ctx, rows_pixels, omega.to(x.dtype), target.repeat_interleave(A), mean, std)

        rewritten = (rows_pixels + delta).detach()
        with torch.no_grad():
            final = ctx.adapter.forward((rewritten - mean) / std)
        rows_target = target.repeat_interleave(A)
        success = self._wins(final, rows_target)
        flat = delta.flatten(1)
        mse = (flat**2).mean(1)
        touched = F.avg_pool2d(delta.abs().amax(1, keepdim=True), ctx.layout.patch_size).flatten(1) > 0
        main = rewritten.view(B, A, *x.shape[1:])[:, 0]
        after = self._explain(ctx, ((main - mean) / std).repeat_interleave(2, 0),
                              torch.stack([source, target], 1).flatten())

        def per_arm(t: Tensor) -> Tensor:
            return t.view(B, A)

        tensors = {
            "success": per_arm(success), "steps": per_arm(steps),
            "target_prob": per_arm(final.softmax(-1).gather(1, rows_target[:, None])[:, 0]),
            "linf": per_arm(flat.abs().amax(1)), "l2": per_arm(flat.norm(dim=1)),
            "psnr": per_arm(torch.where(mse > 0, -10 * torch.log10(mse), torch.full_like(mse, math.inf))),
            "ssim": per_arm(ssim(rows_pixels.clamp(0, 1), rewritten.clamp(0, 1))),
            "patches": per_arm(touched.sum(1)), "support": support, "source": source, "target": target,
            "pixels": pixels, "delta": delta.view(B, A, *x.shape[1:])[:, 0],
            "maps_before": before, "maps_after": after.view(B, 2, *after.shape[1:]),
        }
        step_size = p["step_size"] if p["step_size"] is not None else p["epsilon"] / 4
        meta = {"arms": list(ARMS[:A]), "support_patches": size, "step_size": step_size,
                "explanation": {"method": self.explainer_method.name, "params": self.explainer_method.get_params(),
                                "signed": bool(self.explainer_method.signed)}}
        return tensors, meta

    def _support(self, before: Tensor, grid: tuple[int, int], size: int) -> Tensor:
        """``(B, N)`` 0/1 support: the top ``size`` patches of the chosen class's explanation (all for "none")."""
        n = grid[0] * grid[1]
        if self.params["mask_from"] == "none":
            return before.new_ones(before.shape[0], n)
        scores = _patch_scores(before[:, 0 if self.params["mask_from"] == "source" else 1], grid)
        return torch.zeros_like(scores).scatter_(1, scores.topk(size, dim=1).indices, 1.0)

    def _random_support(self, batch: int, n: int, size: int, device: torch.device) -> Tensor:
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(self.params["seed"]))[:size]
        out = torch.zeros(batch, n)
        out[:, chosen] = 1.0  # the same seeded patches for every image, so the control does not depend on the batch
        return out.to(device)

    def _wins(self, logits: Tensor, target: Tensor) -> Tensor:
        """Whether the target's logit exceeds every other class's by more than the margin: ``(N,)`` bool."""
        others = logits.scatter(1, target[:, None], -math.inf).amax(1)
        return logits.gather(1, target[:, None])[:, 0] - others > self.params["margin"]

    def _attack(self, ctx: Context, pixels: Tensor, omega: Tensor, target: Tensor, mean: Tensor,
                std: Tensor) -> tuple[Tensor, Tensor]:
        """Targeted PGD on every row until its target wins or the steps run out: ``(δ, steps used)``."""
        p = self.params
        eps = p["epsilon"]
        step = p["step_size"] if p["step_size"] is not None else eps / 4
        low, high = (-pixels).clamp(max=0), (1 - pixels).clamp(min=0)  # δ = 0 stays allowed for any input
        delta = torch.zeros_like(pixels)
        steps = torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)
        active = torch.ones_like(steps, dtype=torch.bool)
        for _ in range(p["steps"] + 1):
            rows = active.nonzero()[:, 0]
            if not len(rows):
                break
            d = delta[rows].requires_grad_(True)
            with torch.enable_grad():
                logits = ctx.adapter.forward((pixels[rows] + d - mean) / std)
                won = self._wins(logits.detach(), target[rows])
                loss = F.cross_entropy(logits, target[rows], reduction="sum")
                grad, = torch.autograd.grad(loss, d)
            active[rows[won]] = False
            if int(steps.max()) >= p["steps"]:
                break
            go = rows[~won]
            update = delta[go] - step * grad[~won].sign() * omega[go]
            delta[go] = torch.maximum(torch.minimum(update.clamp(-eps, eps), high[go]), low[go])
            steps[go] += 1
        return delta.detach(), steps

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        """First image: original, rewritten, amplified difference, source and target maps before and after."""
        t = result.tensors
        original = t["pixels"][0].clamp(0, 1)
        delta = t["delta"][0]
        rewritten = (original + delta).clamp(0, 1)
        scale = float(delta.abs().max())
        amplified = (0.5 + 0.5 * delta / scale).clamp(0, 1) if scale > 0 else torch.full_like(delta, 0.5)
        src, tgt = int(t["source"][0]), int(t["target"][0])
        panels = [(original, "original"),
                  (rewritten, f"rewritten ({'success' if bool(t['success'][0, 0]) else 'failed'})"),
                  (amplified, f"difference ×{0.5 / scale:.0f}" if scale > 0 else "difference (none)")]
        maps = [(t["maps_before"][0, 0], f"class {src} before"), (t["maps_before"][0, 1], f"class {tgt} before"),
                (t["maps_after"][0, 0], f"class {src} after"), (t["maps_after"][0, 1], f"class {tgt} after")]
        fig = Figure(figsize=(2.0 * 7, 2.3), layout="constrained")
        axes = fig.subplots(1, 7)
        for ax, (img, title) in zip(axes, panels):
            ax.imshow(img.permute(1, 2, 0).float().cpu().numpy())
            ax.set_title(title, fontsize=8)
        for ax, (m, title) in zip(axes[3:], maps):
            ax.imshow(normalise_maps(m.float().cpu()).numpy(), cmap="inferno")
            ax.set_title(title, fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"Class rewriting (ε = {result.params['epsilon'] * 255:.3g}/255, q = {result.params['q']:g})",
                     fontsize=9)
        return fig
