"""Window coverage, inspired by Ma et al. (IEEE TNNLS 2023, arXiv:2203.05922; reading of analysis-methods.md §1.2):
how much of each patch's interaction mass a square or Swin-style window captures, per block, and whether a given
window design is enough (reaches ``τ`` in every block) or over-provisioned."""

from __future__ import annotations

import re
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from xvit.analysis.base import AnalysisResult, register_analysis
from xvit.analysis.interactions import CITATION, _indicator_params, _IndicatorAnalysis, grid_positions
from xvit.methods.base import Context
from xvit.params import Interval, Nullable, Satisfies

__all__ = ["square_windows", "swin_windows", "captured_mass", "has_mass", "masked_mean", "smallest_window",
           "WindowCoverage"]

_DESIGN = re.compile(r"^(square|swin):([1-9][0-9]*)$")
OVER_PROVISION_AREA = 2.0
"""A design over-provisions when its window area is at least this multiple of the smallest square window that
reaches ``τ`` in every block (toolkit definition)."""


def square_windows(grid: tuple[int, int], sizes: list[int]) -> Tensor:
    """``square(w)``: ``(W, N, N)`` bool, ``[k, i, j]`` = ``j`` lies in the ``w_k×w_k`` box centred on ``π(i)``
    (clipped at the borders; even ``w`` reach one patch further down and right)."""
    pos = grid_positions(grid)
    d = pos[None, :, :] - pos[:, None, :]  # π(j) − π(i)
    out = []
    for w in sizes:
        lo, hi = -((w - 1) // 2), w // 2
        out.append(((d >= lo) & (d <= hi)).all(-1))
    return torch.stack(out)


def swin_windows(grid: tuple[int, int], sizes: list[int], shifted: bool) -> Tensor:
    """``swin(w, shift)``: ``(W, N, N)`` bool, ``i`` and ``j`` in the same ``w×w`` partition; shifted partitions start
    ``⌊w/2⌋`` patches earlier, which is what Swin's cyclic shift with its attention mask computes (regions that
    wrapped around are kept apart)."""
    pos = grid_positions(grid)
    out = []
    for w in sizes:
        s = w // 2 if shifted else 0
        part = torch.div(pos + (w - s) % w, w, rounding_mode="floor")  # (N, 2) partition ids
        out.append((part[None, :, :] == part[:, None, :]).all(-1))
    return torch.stack(out)


def captured_mass(ind: Tensor, windows: Tensor) -> Tensor:
    """``C^l(W)`` per image: ``(B, L, W)`` mean over targets with mass of ``Σ_{j∈W(i)} Ĩ^l(i←j)``; 0 for a block
    where no target has mass (e.g. the last block's patch rows under ``grad_attention`` with class-token pooling;
    see :func:`has_mass`)."""
    mass = torch.einsum("blij,kij->blki", ind.double(), windows.to(ind.device).double())  # (B, L, W, N)
    has = (ind.sum(-1) > 0).double()[:, :, None, :]  # (B, L, 1, N)
    return ((mass * has).sum(-1) / has.sum(-1).clamp(min=1)).float()


def has_mass(ind: Tensor) -> Tensor:
    """``(B, L)`` bool: whether any target of the block has interaction mass."""
    return (ind.sum(-1) > 0).any(-1)


def masked_mean(curve: Tensor, has: Tensor) -> Tensor:
    """Mean over images ``(L, ...)`` of the images where the block has mass; NaN where none has."""
    w = has.to(curve.dtype).reshape(*has.shape, *([1] * (curve.ndim - 2)))
    total = w.sum(0)
    return torch.where(total > 0, (curve * w).sum(0) / total.clamp(min=1), torch.nan)


def smallest_window(curve: Tensor, sizes: list[int], tau: float) -> Tensor:
    """Smallest size whose captured mass reaches ``τ``, per leading index (``-1`` where none does or the curve is
    NaN)."""
    reached = curve >= tau - 1e-6
    first = reached.float().argmax(-1)
    sizes_t = torch.tensor(sizes, device=curve.device)
    return torch.where(reached.any(-1), sizes_t[first], torch.full_like(first, -1))


def _is_design(v: Any) -> bool:
    return isinstance(v, str) and _DESIGN.match(v) is not None


@register_analysis("coverage", citation=CITATION, cost="one indicator (grad_attention: F + B)")
class WindowCoverage(_IndicatorAnalysis):
    """Captured interaction mass ``C^l(W) = mean_i Σ_{j∈W(i)} Ĩ^l(i←j)`` of square and Swin windows of every size
    per block (analysis-methods.md §1.2), the smallest square window reaching ``τ`` per block and a verdict on a
    window ``design`` (``square:W``, or ``swin:W`` with unshifted windows in odd and shifted ones in even blocks,
    as Swin alternates them).

    Tensors: ``sizes`` ``(W,)``; ``square``, ``swin``, ``swin_shifted`` ``(B, L, W)`` per image; their batch means
    ``square_mean`` etc. ``(L, W)`` over the images where the block has mass (``has_mass`` ``(B, L)``; the last
    block's patch rows have none under ``grad_attention`` with class-token pooling: NaN means, left out of the
    verdict); ``smallest_square`` ``(L,)`` (-1: not reached); ``design_mass`` ``(L,)``. Meta: ``verdict``
    (``pass``, ``over-provisioned`` — area ≥ 2× the smallest square reaching ``τ`` in every block — or ``fail``).
    """

    definition_version = "ma2022-c1"
    param_constraints = {**_indicator_params(), "tau": Interval(0, 1, closed="right"),
                         "sizes": Nullable(Satisfies(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
                             isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v),
                             "a non-empty list of positive window sizes")),
                         "design": Nullable(Satisfies(_is_design, "'square:W' or 'swin:W' with W a positive int"))}

    def __init__(self, *, method: str = "grad_attention", probes: int = 8, exact: bool = False, seed: int = 0,
                 chunk: int = 1024, tau: float = 0.8, sizes: list[int] | None = None,
                 design: str | None = None) -> None:
        super().__init__(method=method, probes=probes, exact=exact, seed=seed, chunk=chunk, tau=tau, sizes=sizes,
                         design=design)

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        ind, _ = self.indicator(ctx, x, targets)
        grid = ctx.layout.grid
        sizes = sorted(set(self.params["sizes"] or range(1, 2 * max(grid), 2)))
        curves = {"square": captured_mass(ind, square_windows(grid, sizes)),
                  "swin": captured_mass(ind, swin_windows(grid, sizes, False)),
                  "swin_shifted": captured_mass(ind, swin_windows(grid, sizes, True))}
        has = has_mass(ind)
        tensors = {"sizes": torch.tensor(sizes), **curves, "has_mass": has,
                   **{f"{k}_mean": masked_mean(v, has) for k, v in curves.items()}}
        tensors["smallest_square"] = smallest_window(tensors["square_mean"], sizes, self.params["tau"])
        meta: dict[str, Any] = {"grid": list(grid), "images": x.shape[0]}
        if self.params["design"]:
            design_mass, verdict = self.verdict(ind, grid, tensors["smallest_square"], has)
            tensors["design_mass"] = design_mass
            meta["verdict"] = verdict
        return tensors, meta

    def verdict(self, ind: Tensor, grid: tuple[int, int], smallest: Tensor, has: Tensor) -> tuple[Tensor, str]:
        """Captured mass ``(L,)`` of the design in every block and its verdict."""
        kind, w = self.params["design"].split(":")
        w = int(w)
        L = ind.shape[1]
        if kind == "square":
            mass = masked_mean(captured_mass(ind, square_windows(grid, [w]))[..., 0], has)
        else:
            plain = masked_mean(captured_mass(ind, swin_windows(grid, [w], False))[..., 0], has)
            shifted = masked_mean(captured_mass(ind, swin_windows(grid, [w], True))[..., 0], has)
            mass = torch.where(torch.arange(L) % 2 == 1, shifted, plain)
        return mass, self.judge(mass, smallest, w)

    def judge(self, mass: Tensor, smallest: Tensor, w: int) -> str:
        """``fail``, ``over-provisioned`` or ``pass`` over the blocks with interaction mass (``undetermined``
        if none has any)."""
        valid = ~mass.isnan()
        if not bool(valid.any()):
            return "undetermined"
        if bool((mass[valid] < self.params["tau"] - 1e-6).any()):
            return "fail"
        if bool((smallest[valid] > 0).all()) and w * w >= OVER_PROVISION_AREA * int(smallest[valid].max()) ** 2:
            return "over-provisioned"
        return "pass"

    @classmethod
    def merge(cls, results: list[AnalysisResult]) -> AnalysisResult:
        """One result for several batches of a data set: the per-image curves concatenated and the means, the
        smallest window and the verdict recomputed over all images."""
        first = results[0]
        tensors = {"sizes": first.tensors["sizes"], "has_mass": torch.cat([r.tensors["has_mass"] for r in results])}
        for k in ("square", "swin", "swin_shifted"):
            tensors[k] = torch.cat([r.tensors[k] for r in results])
            tensors[f"{k}_mean"] = masked_mean(tensors[k], tensors["has_mass"])
        sizes = first.tensors["sizes"].tolist()
        analysis = cls(**first.params)
        tensors["smallest_square"] = smallest_window(tensors["square_mean"], sizes, first.params["tau"])
        meta = {**first.meta, "images": sum(r.meta["images"] for r in results)}
        if "design_mass" in first.tensors:
            n = torch.tensor([float(r.meta["images"]) for r in results])
            stacked = torch.stack([r.tensors["design_mass"] for r in results])
            weight = n[:, None] * ~stacked.isnan()
            mass = (stacked.nan_to_num() * weight).sum(0) / weight.sum(0)  # NaN where no batch had mass
            tensors["design_mass"] = mass
            width = int(first.params["design"].split(":")[1])
            meta["verdict"] = analysis.judge(mass, tensors["smallest_square"], width)
        return AnalysisResult(first.name, tensors, first.params, meta)

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        t = result.tensors
        sizes = t["sizes"]
        L = t["square_mean"].shape[0]
        fig = Figure(figsize=(8.4, 3.0), layout="constrained")
        axes = fig.subplots(1, 3, sharey=True)
        for ax, key, title in zip(axes, ("square_mean", "swin_mean", "swin_shifted_mean"),
                                  ("square window (centred)", "Swin partition", "Swin partition, shifted")):
            for l in range(L):
                ax.plot(sizes.numpy(), t[key][l].numpy(), marker=".", lw=1, label=f"block {l + 1}")
            ax.axhline(result.params["tau"], color="gray", ls="--", lw=0.8)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("window size w (patches)")
        axes[0].set_ylabel("captured interaction mass C(w)")
        axes[0].set_ylim(0, 1.02)
        axes[-1].legend(fontsize=6, frameon=False, ncol=1 + L // 7)
        verdict = result.meta.get("verdict")
        fig.suptitle(f"Window coverage ({result.params['method']}, τ = {result.params['tau']:g})"
                     + (f" — design {result.params['design']}: {verdict}" if verdict else ""), fontsize=9)
        return fig
