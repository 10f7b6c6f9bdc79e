"""Mean attention distance per block and head (Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021,
arXiv:2010.11929, Fig. 7 right): how far, in pixels, each head looks on average."""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from xvit.analysis.base import Analysis, AnalysisResult, register_analysis
from xvit.methods.base import Context


@register_analysis("attention_distance", citation="Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021, "
                   "arXiv:2010.11929 (Fig. 7, mean attention distance)", cost="F")
class AttentionDistance(Analysis):
    """Mean attention distance ``d^l_h = mean_i Σ_j a^l_h(i, j) ‖p_i − p_j‖`` in pixels, over patch queries ``i``
    and patch keys ``j`` (prefix tokens left out, each row renormalised over the patch keys).

    Tensors: ``distance`` ``(B, L, H)`` per image, block and head; ``mean`` ``(L, H)`` over the batch.
    """

    def __init__(self) -> None:
        super().__init__()

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        with torch.no_grad():
            rec = ctx.record(x, targets, attention=True)
        layout = ctx.layout
        h, w = layout.grid
        ph, pw = ctx.adapter.layout_patch_size()
        rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w) * ph
        cols = torch.arange(w, dtype=torch.float64).repeat(h) * pw
        dist = torch.cdist(torch.stack([rows, cols], 1), torch.stack([rows, cols], 1))  # (N, N) pixels
        p = layout.num_prefix
        out = []
        for attn in rec.attentions:  # (B, H, T, T)
            a = attn[:, :, p:, p:].double()
            a = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
            out.append((a * dist.to(a.device)).sum(-1).mean(-1))  # (B, H)
        distance = torch.stack(out, 1).float()
        return {"distance": distance, "mean": distance.mean(0)}, {"grid": [h, w], "patch_size": [ph, pw]}

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        mean = result.tensors["mean"]
        fig = Figure(figsize=(4.5, 3.2), layout="constrained")
        ax = fig.add_subplot()
        L, H = mean.shape
        for head in range(H):
            ax.scatter(torch.arange(L) + 1, mean[:, head], s=14, label=f"head {head}" if H <= 8 else None)
        ax.set_xlabel("block")
        ax.set_ylabel("mean attention distance (pixels)")
        ax.set_title("Mean attention distance")
        if H <= 8:
            ax.legend(fontsize=7, frameon=False)
        return fig
