"""Patch interactions, inspired by Ma et al. (Visualizing and Understanding Patch Interactions in Vision Transformer,
IEEE TNNLS 2023, arXiv:2203.05922; reading of analysis-methods.md §1.1): the interaction indicator ``I^l(i ← j)``,
how much source patch ``j`` affects target patch ``i`` at block ``l``, row-normalised, and its dataset kernel
``κ^l(Δ)`` in relative coordinates.

Two indicators (the paper's formulas are not public; both are the spec's [proposal]):

* ``grad_attention`` — ``Ā^l = E_h[(∇A^l ⊙ A^l)^+]`` from one forward and one backward pass for all blocks
  (:func:`xvit.capture.record` with a per-block reduction), class-specific.
* ``jacobian`` — ``I^l(i←j) = ‖∂z^l_i/∂e_j‖_F`` (``z^l`` the output of block ``l``, ``e`` the patch tokens after the
  position embedding), estimated with ``R`` Gaussian forward-mode probes per source (``E‖J_ij w‖² = ‖J_ij‖²_F``) or
  computed exactly from the ``D`` basis tangents; the tangents of all sources and probes run as batched forward-mode
  passes (``torch.autograd.forward_ad``, ``chunk`` rows of images × tangents each), no loop over source patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from matplotlib.figure import Figure
from torch import Tensor

from xvit.adapters.base import ViTAdapter
from xvit.analysis.base import Analysis, AnalysisResult, register_analysis
from xvit.methods.base import Context
from xvit.params import Interval, Options

__all__ = ["INDICATORS", "CITATION", "interaction", "grad_attention_interaction", "jacobian_interaction",
           "normalise_rows", "grid_positions", "relative_kernel", "kernel_to_mask", "Interactions"]

CITATION = ("Ma, Bai, Zhong, Zhang, Yao & Mei, Visualizing and Understanding Patch Interactions in Vision "
            "Transformer, IEEE TNNLS 2023, arXiv:2203.05922 (inspired by; reading analysis-methods.md §1)")
INDICATORS = ("grad_attention", "jacobian")


def normalise_rows(m: Tensor) -> Tensor:
    """``Ĩ(i←j) = I(i←j) / Σ_j' I(i←j')``; rows without mass (a target no source reaches, e.g. the patch rows of the
    last block under class-token pooling for ``grad_attention``) stay zero."""
    total = m.sum(-1, keepdim=True)
    return torch.where(total > 0, m / total.clamp(min=torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def grid_positions(grid: tuple[int, int], device: torch.device | str | None = None) -> Tensor:
    """``π(i)``: ``(N, 2)`` long (row, col) of every patch in row-major order."""
    h, w = grid
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack([rows, cols], 1)


def grad_attention_interaction(ctx: Context, x: Tensor, targets: Tensor | None, *, patches_only: bool = True
                               ) -> tuple[Tensor, Tensor]:
    """Raw ``E_h[(∇A^l ⊙ A^l)^+]`` restricted to patch rows and columns, ``(B, L, N, N)`` (all tokens, ``(B, L, T,
    T)``, without ``patches_only``), and the explained classes ``(B,)`` — one forward and one backward pass for all
    blocks."""
    p = ctx.layout.num_prefix if patches_only else 0

    def reduce(a: Tensor, g: Tensor | None) -> Tensor:
        return (a * g).clamp(min=0).mean(1)[:, p:, p:]

    rec = ctx.record(x, targets, grads=True, reduce=reduce)
    return torch.stack([rec.reduced[i] for i in sorted(rec.reduced)], 1), rec.targets


def _block_outputs(adapter: ViTAdapter, tokens: Tensor) -> list[Tensor]:
    """Outputs of every block for the residual stream ``tokens`` entering block 0 (the model's own blocks, read by
    forward hooks removed on exit)."""
    outs: dict[int, Tensor] = {}

    def keep(i: int) -> Callable[..., None]:
        def hook(_m: Any, _inp: Any, out: Any) -> None:
            outs[i] = out[0] if isinstance(out, tuple) else out
        return hook

    blocks = adapter.blocks()
    handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(blocks)]
    try:
        adapter.forward_from(tokens, 0)
    finally:
        for h in handles:
            h.remove()
    return [outs[i] for i in range(len(blocks))]


def jacobian_interaction(ctx: Context, x: Tensor, *, probes: int = 8, exact: bool = False, seed: int = 0,
                         chunk: int = 1024) -> Tensor:
    """Raw ``‖∂z^l_i/∂e_j‖_F`` for all blocks, ``(B, L, N, N)`` (target ``i``, source ``j``).

    Tangents are placed on one source token each: ``R`` probes ``w ~ N(0, I_D)`` (seeded, the same for every image)
    give ``mean_w ‖J_ij w‖² ≈ ‖J_ij‖²_F``; ``exact`` uses the ``D`` basis vectors, which gives it exactly. Each batched
    forward-mode pass runs ``chunk`` rows (images × tangents), which bounds memory to ``chunk`` copies of the
    activations."""
    adapter, layout = ctx.adapter, ctx.layout
    p, n = layout.num_prefix, layout.num_patches
    with torch.no_grad():
        e = adapter.block_input(x, 0)
    B, T, D = e.shape
    if exact:
        per_source = torch.eye(D, device=e.device, dtype=e.dtype).expand(n, D, D)  # (N, D, D)
    else:
        gen = torch.Generator().manual_seed(seed)
        per_source = torch.randn(n, probes, D, generator=gen).to(device=e.device, dtype=e.dtype)  # (N, R, D)
    r = per_source.shape[1]
    sources = torch.arange(n, device=e.device).repeat_interleave(r)
    vectors = per_source.reshape(n * r, D)
    total = [torch.zeros(B, n, n, device=e.device, dtype=torch.float64) for _ in adapter.blocks()]
    step = max(1, chunk // B)
    with torch.no_grad():
        for start in range(0, n * r, step):
            src, vec = sources[start:start + step], vectors[start:start + step]
            s = len(src)
            tangent = torch.zeros(s, T, D, device=e.device, dtype=e.dtype)
            tangent[torch.arange(s, device=e.device), p + src] = vec
            primal = e.repeat_interleave(s, 0)  # (B·s, T, D), image-major
            with fwAD.dual_level():
                dual = fwAD.make_dual(primal, tangent.repeat(B, 1, 1))
                outs = _block_outputs(adapter, dual)
                for l, z in enumerate(outs):
                    t = fwAD.unpack_dual(z).tangent
                    if t is None:  # a block whose output does not depend on the input (cannot happen in a ViT)
                        continue
                    sq = t.reshape(B, s, T, -1)[:, :, p:].double().pow(2).sum(-1)  # (B, s, N targets)
                    total[l].index_add_(1, src, sq)
    ind = torch.stack(total, 1) / (1 if exact else r)  # (B, L, N sources, N targets)
    return ind.transpose(-1, -2).sqrt().to(x.dtype)


def interaction(ctx: Context, x: Tensor, targets: Tensor | None, method: str = "grad_attention", *,
                probes: int = 8, exact: bool = False, seed: int = 0, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Row-normalised ``Ĩ^l(i←j)`` ``(B, L, N, N)`` for every block, and the explained classes ``(B,)``
    (``jacobian`` is not class-specific: the predicted classes)."""
    if method not in INDICATORS:
        raise ValueError(f"Unknown interaction indicator {method!r}; choose one of {', '.join(INDICATORS)}.")
    if method == "grad_attention":
        raw, classes = grad_attention_interaction(ctx, x, targets)
    else:
        raw = jacobian_interaction(ctx, x, probes=probes, exact=exact, seed=seed, chunk=chunk)
        with torch.no_grad():
            classes = ctx.adapter.forward(x).argmax(1) if targets is None else targets
    return normalise_rows(raw.float()), classes


def relative_kernel(ind: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Sum and count over images and targets of ``Ĩ^l(i ← j(π(i)+Δ))`` per offset: ``(L, 2G_h−1, 2G_w−1)`` each, so
    ``κ^l(Δ) = sum / count`` (analysis-methods.md §1.1) and kernels of several batches merge by adding both."""
    B, L, N, _ = ind.shape
    h, w = grid
    pos = grid_positions(grid, ind.device)
    delta = pos[None, :, :] - pos[:, None, :]  # (i, j): π(j) − π(i)
    index = ((delta[..., 0] + h - 1) * (2 * w - 1) + delta[..., 1] + w - 1).reshape(-1)
    size = (2 * h - 1) * (2 * w - 1)
    sums = torch.zeros(L, size, device=ind.device, dtype=torch.float64)
    sums.index_add_(1, index, ind.double().sum(0).reshape(L, N * N))
    counts = torch.zeros(size, device=ind.device, dtype=torch.float64)
    counts.index_add_(0, index, torch.ones(N * N, device=ind.device, dtype=torch.float64))
    counts = (counts * B).expand(L, size)
    return sums.reshape(L, 2 * h - 1, 2 * w - 1), counts.reshape(L, 2 * h - 1, 2 * w - 1)


def kernel_to_mask(kernel: Tensor, grid: tuple[int, int], tau: float) -> Tensor:
    """The hard window of analysis-methods.md §1.5 from a relative kernel ``(L, 2G_h−1, 2G_w−1)``: per block the
    smallest set of offsets, in decreasing ``κ``, whose share of ``Σ_Δ κ`` reaches ``τ`` (the zero offset always
    in), spread to absolute positions: ``(L, N, N)`` bool, ``[l, i, j]`` = target ``i`` may attend to source ``j``."""
    L, kh, kw = kernel.shape
    h, w = grid
    if (kh, kw) != (2 * h - 1, 2 * w - 1):
        raise ValueError(f"A kernel of shape {(kh, kw)} does not belong to a {h}x{w} patch grid "
                         f"(expected {(2 * h - 1, 2 * w - 1)}).")
    flat = kernel.reshape(L, -1).double().clamp(min=0)
    share = flat / flat.sum(-1, keepdim=True).clamp(min=1e-300)
    order = share.argsort(-1, descending=True)
    cum = share.gather(1, order).cumsum(-1)
    n_keep = (cum < tau).sum(-1) + 1  # the smallest prefix reaching τ
    keep_sorted = torch.arange(flat.shape[1], device=kernel.device)[None] < n_keep[:, None]
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    keep[:, (h - 1) * (2 * w - 1) + (w - 1)] = True  # Δ = 0
    pos = grid_positions(grid, kernel.device)
    delta = pos[None, :, :] - pos[:, None, :]
    index = (delta[..., 0] + h - 1) * (2 * w - 1) + delta[..., 1] + w - 1  # (N, N)
    return keep[:, index]


def _indicator_params() -> dict[str, Any]:
    return {"method": Options(INDICATORS), "probes": Interval(1, None, integer=True), "exact": Options((False, True)),
            "seed": Interval(0, None, integer=True), "chunk": Interval(1, None, integer=True)}


class _IndicatorAnalysis(Analysis):
    """Shared parameters of the analyses built on the interaction indicator."""

    needs_attention = True

    def indicator(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """``Ĩ`` ``(B, L, N, N)`` and the explained classes for this analysis's parameters."""
        p = self.params
        return interaction(ctx, x, targets, p["method"], probes=p["probes"], exact=p["exact"], seed=p["seed"],
                           chunk=p["chunk"])


@register_analysis("interactions", citation=CITATION, cost="grad_attention: F + B; jacobian: N·R forward-mode "
                   "products (N·D with exact)")
class Interactions(_IndicatorAnalysis):
    """Patch-interaction indicator ``Ĩ^l(i←j)`` per block (rows sum to 1) and its kernel ``κ^l(Δ)`` in relative
    coordinates (analysis-methods.md §1.1).

    Tensors: ``indicator`` ``(B, L, N, N)`` (target ``i``, source ``j``); ``targets`` ``(B,)`` explained classes;
    ``kernel_sum`` and ``kernel_count`` ``(L, 2G_h−1, 2G_w−1)`` (merge over batches by adding) and ``kernel`` their
    ratio, ``κ^l(Δ)`` with ``Δ = (0, 0)`` at the centre.
    """

    definition_version = "ma2022-i1"
    param_constraints = _indicator_params()

    def __init__(self, *, method: str = "grad_attention", probes: int = 8, exact: bool = False, seed: int = 0,
                 chunk: int = 1024) -> None:
        super().__init__(method=method, probes=probes, exact=exact, seed=seed, chunk=chunk)

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        ind, classes = self.indicator(ctx, x, targets)
        grid = ctx.layout.grid
        sums, counts = relative_kernel(ind, grid)
        kernel = (sums / counts.clamp(min=1)).float()
        return ({"indicator": ind, "targets": classes, "kernel_sum": sums.float(), "kernel_count": counts.float(),
                 "kernel": kernel}, {"grid": list(grid), "images": x.shape[0]})

    @classmethod
    def merge(cls, results: list[AnalysisResult]) -> AnalysisResult:
        """One result for several batches of a data set: kernels pooled over all images; the per-image indicator
        replaced by its mean ``indicator_mean`` ``(L, N, N)``."""
        sums = sum(r.tensors["kernel_sum"].double() for r in results)
        counts = sum(r.tensors["kernel_count"].double() for r in results)
        images = sum(r.meta["images"] for r in results)
        mean = sum(r.tensors["indicator"].double().sum(0) for r in results) / images
        first = results[0]
        return AnalysisResult(first.name, {"indicator_mean": mean.float(), "kernel_sum": sums.float(),
                                           "kernel_count": counts.float(),
                                           "kernel": (sums / counts.clamp(min=1)).float()},
                              first.params, {**first.meta, "images": images})

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        kernel = result.tensors["kernel"]
        L = kernel.shape[0]
        cols = min(L, 6)
        rows = math.ceil(L / cols)
        fig = Figure(figsize=(1.9 * cols + 0.6, 2.0 * rows + 0.4), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        kh, kw = kernel.shape[1:]
        extent = (-(kw // 2) - 0.5, kw // 2 + 0.5, kh // 2 + 0.5, -(kh // 2) - 0.5)
        for l, ax in enumerate(axes.flat):
            if l >= L:
                ax.axis("off")
                continue
            im = ax.imshow(kernel[l].numpy(), cmap="magma", extent=extent)
            ax.set_title(f"block {l + 1}", fontsize=8)
            ax.tick_params(labelsize=6)
            fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        fig.suptitle(f"Interaction kernel κ(Δ) ({result.params['method']}; Δ = source − target, in patches)",
                     fontsize=9)
        return fig
