"""Effective responsive field per patch, inspired by Ma et al. (IEEE TNNLS 2023, arXiv:2203.05922; reading of
analysis-methods.md §1.3), and the window estimate for the window-free ViT (§1.5): the file
``window_mask.safetensors`` that :class:`xvit.models.winft.WinfT` reads."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import torch
from matplotlib.figure import Figure
from safetensors.torch import save_file
from torch import Tensor

from xvit.analysis.base import AnalysisResult, register_analysis
from xvit.analysis.interactions import (
    CITATION,
    _indicator_params,
    _IndicatorAnalysis,
    grid_positions,
    kernel_to_mask,
    relative_kernel,
)
from xvit.methods.base import Context
from xvit.params import Interval

__all__ = ["erf_of_rows", "direction", "save_window_mask", "ResponsiveField"]

WINDOW_FILE = "window_mask.safetensors"


def erf_of_rows(ind: Tensor, tau: float) -> Tensor:
    """``ERF_i``: ``(..., N, N)`` bool, the smallest set of sources, taken in decreasing ``Ĩ(i←·)``, whose cumulative
    mass reaches ``τ`` (empty for rows without mass)."""
    order = ind.argsort(-1, descending=True)
    cum = ind.gather(-1, order).cumsum(-1)
    n_keep = (cum < tau - 1e-6).sum(-1, keepdim=True) + 1
    keep_sorted = torch.arange(ind.shape[-1], device=ind.device) < n_keep
    out = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return out & (ind.sum(-1, keepdim=True) > 0)


def direction(ind: Tensor, grid: tuple[int, int]) -> Tensor:
    """``μ_i = Σ_j Ĩ(i←j)(π(j) − π(i))``: ``(..., N, 2)`` (rows, cols) in patches."""
    pos = grid_positions(grid, ind.device).to(ind.dtype)
    return ind @ pos - ind.sum(-1, keepdim=True) * pos


def _bbox(members: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bounding box ``(..., N, 4)`` (row0, col0, row1, col1, inclusive) of each ERF; -1 where it is empty."""
    pos = grid_positions(grid, members.device)
    big = max(grid) + 1
    rows, cols = pos[:, 0], pos[:, 1]
    lo_r = torch.where(members, rows, big).amin(-1)
    lo_c = torch.where(members, cols, big).amin(-1)
    hi_r = torch.where(members, rows, -1).amax(-1)
    hi_c = torch.where(members, cols, -1).amax(-1)
    box = torch.stack([lo_r, lo_c, hi_r, hi_c], -1)
    return torch.where(members.any(-1, keepdim=True), box, torch.full_like(box, -1))


def save_window_mask(directory: str | os.PathLike, kernel: Tensor, mean_indicator: Tensor, grid: tuple[int, int],
                     tau: float, **info: Any) -> Path:
    """Write ``window_mask.safetensors`` for :class:`xvit.models.winft.WinfT`: the relative kernel ``kernel``
    ``(L, 2G_h−1, 2G_w−1)``, the kernel thresholded at mass ``τ`` spread to absolute positions ``kernel_mask``
    ``(L, N, N)`` and the per-patch ERFs of the mean indicator ``erf_mask`` ``(L, N, N)`` (uint8, ``[l, i, j]`` = 1
    where target ``i`` may attend to source ``j``); ``info`` goes to the file's metadata."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    n = grid[0] * grid[1]
    erf = erf_of_rows(mean_indicator.float(), tau) | torch.eye(n, dtype=torch.bool)
    tensors = {"kernel": kernel.float().contiguous(),
               "kernel_mask": kernel_to_mask(kernel, grid, tau).to(torch.uint8).contiguous(),
               "erf_mask": erf.to(torch.uint8).contiguous()}
    path = out / WINDOW_FILE
    save_file({k: v.cpu() for k, v in tensors.items()}, str(path),
              metadata={"grid": json.dumps(list(grid)), "tau": json.dumps(tau), "info": json.dumps(info)})
    return path


@register_analysis("erf", citation=CITATION, cost="one indicator (grad_attention: F + B)")
class ResponsiveField(_IndicatorAnalysis):
    """Effective responsive field per patch and block (analysis-methods.md §1.3): the smallest set of source patches,
    in decreasing ``Ĩ^l(i←·)``, whose mass reaches ``τ``; its size, bounding box and the interaction-weighted
    direction ``μ^l_i``.

    Tensors: ``size`` ``(B, L, N)`` patches (0 for rows without mass); ``bbox`` ``(B, L, N, 4)`` (row0, col0, row1,
    col1); ``direction`` ``(B, L, N, 2)`` (rows, cols) in patches; ``mean_size`` ``(L,)``; ``thumbnail``
    ``(B, 3, 4G_h, 4G_w)`` of the input (min-max scaled) for the figure (the first image only after a merge);
    ``kernel_sum``/``kernel_count`` and ``indicator_sum`` ``(L, N, N)``, from which ``xvit analyse erf --out DIR``
    writes the WinfT window file.
    """

    definition_version = "ma2022-e1"
    param_constraints = {**_indicator_params(), "tau": Interval(0, 1, closed="right")}

    def __init__(self, *, method: str = "grad_attention", probes: int = 8, exact: bool = False, seed: int = 0,
                 chunk: int = 1024, tau: float = 0.8) -> None:
        super().__init__(method=method, probes=probes, exact=exact, seed=seed, chunk=chunk, tau=tau)

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        ind, _ = self.indicator(ctx, x, targets)
        grid = ctx.layout.grid
        members = erf_of_rows(ind, self.params["tau"])
        size = members.sum(-1)
        has = ind.sum(-1) > 0
        sums, counts = relative_kernel(ind, grid)
        thumb = torch.nn.functional.interpolate(x.detach().float(), size=(4 * grid[0], 4 * grid[1]), mode="area")
        lo = thumb.amin((1, 2, 3), keepdim=True)
        hi = thumb.amax((1, 2, 3), keepdim=True)
        tensors = {"size": size, "bbox": _bbox(members, grid), "direction": direction(ind, grid),
                   "mean_size": (size * has).sum((0, 2)).float() / has.sum((0, 2)).clamp(min=1),
                   "thumbnail": (thumb - lo) / (hi - lo).clamp(min=1e-12), "kernel_sum": sums.float(),
                   "kernel_count": counts.float(), "indicator_sum": ind.sum(0)}
        return tensors, {"grid": list(grid), "images": x.shape[0]}

    @classmethod
    def merge(cls, results: list[AnalysisResult]) -> AnalysisResult:
        """One result for several batches of a data set: per-image tensors concatenated, sums added."""
        first = results[0]
        t: dict[str, Tensor] = {}
        for k in ("size", "bbox", "direction"):
            t[k] = torch.cat([r.tensors[k] for r in results])
        t["thumbnail"] = first.tensors["thumbnail"][:1]  # the figure shows the first image
        for k in ("kernel_sum", "kernel_count", "indicator_sum"):
            t[k] = sum(r.tensors[k] for r in results)
        has_sizes = t["size"] > 0
        t["mean_size"] = (t["size"] * has_sizes).sum((0, 2)).float() / has_sizes.sum((0, 2)).clamp(min=1)
        return AnalysisResult(first.name, t, first.params, {**first.meta,
                                                            "images": sum(r.meta["images"] for r in results)})

    @staticmethod
    def write_window_mask(result: AnalysisResult, directory: str | os.PathLike, **info: Any) -> Path:
        """The WinfT window file of an ``erf`` result (a batch or a merged data set) in ``directory``."""
        t = result.tensors
        kernel = t["kernel_sum"].double() / t["kernel_count"].double().clamp(min=1)
        mean = t["indicator_sum"].double() / result.meta["images"]
        return save_window_mask(directory, kernel, mean, tuple(result.meta["grid"]), result.params["tau"],
                                method=result.params["method"], images=result.meta["images"], **info)

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        t = result.tensors
        h, w = result.meta["grid"]
        L = t["size"].shape[1]
        cols = min(L, 6)
        fig = Figure(figsize=(2.0 * cols + 0.8, 4.3), layout="constrained")
        axes = fig.subplots(2, cols, squeeze=False)
        size = t["size"][0].float()
        vmax = float(size.max().clamp(min=1))
        pos = grid_positions((h, w)).float()
        stride = math.ceil(max(h, w) / 10)  # at most about 10 arrows per side
        shown_patch = ((pos[:, 0] % stride == 0) & (pos[:, 1] % stride == 0)).nonzero()[:, 0]
        shown = [round(i * (L - 1) / max(cols - 1, 1)) for i in range(cols)] if L > cols else list(range(L))
        for c, l in enumerate(shown):
            ax = axes[0, c]
            ax.imshow(t["thumbnail"][0].permute(1, 2, 0).numpy(), extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            d = t["direction"][0, l].float()
            at = shown_patch
            q = ax.quiver(pos[at, 1].numpy(), pos[at, 0].numpy(), d[at, 1].numpy(), d[at, 0].numpy(),
                          size[l, at].numpy(), cmap="viridis", clim=(0, vmax),
                          angles="xy", scale_units="xy", scale=1, width=0.012)
            ax.set_title(f"block {l + 1}: mean |ERF| {float(t['mean_size'][l]):.1f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            mag = d.norm(dim=-1)
            hue = (torch.atan2(-d[:, 0], d[:, 1]) / (2 * math.pi)) % 1.0
            hsv = torch.stack([hue, torch.ones_like(hue), mag / mag.max().clamp(min=1e-12)], -1).reshape(h, w, 3)
            axes[1, c].imshow(mcolors.hsv_to_rgb(hsv.numpy()))
            axes[1, c].set_xticks([])
            axes[1, c].set_yticks([])
        for c in range(len(shown), cols):
            axes[0, c].axis("off")
            axes[1, c].axis("off")
        fig.colorbar(q, ax=axes[0, :].tolist(), shrink=0.8, label="ERF size (patches)")
        axes[1, 0].set_ylabel("direction (hue)\nmagnitude (value)", fontsize=7)
        fig.suptitle(f"Effective responsive field, first image ({result.params['method']}, τ = "
                     f"{result.params['tau']:g}); arrows: interaction-weighted direction μ", fontsize=8)
        return fig
