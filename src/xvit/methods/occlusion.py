"""Occlusion with patch-aligned windows (Zeiler & Fergus, ECCV 2014, arXiv:1311.2901; Captum ``Occlusion``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.adapters.base import TokenLayout, UnsupportedModelError
from xvit.methods._masked import TensorOrNone, clean_pass, pass_counts
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable, Options
from xvit.perturb import READOUTS, score


def window_masks(grid: tuple[int, int], window: int, stride: int) -> Tensor:
    """``(M, h·w)`` bool token masks, False inside each ``window × window`` patch window (stride ``stride``, windows
    that fit, row-major positions as Captum slides them)."""
    h, w = grid
    starts = [(r, c) for r in range(0, h - window + 1, stride) for c in range(0, w - window + 1, stride)]
    keep = torch.ones(len(starts), h, w, dtype=torch.bool)
    for m, (r, c) in enumerate(starts):
        keep[m, r:r + window, c:c + window] = False
    return keep.flatten(1)


def occluded_share(masks: Tensor, layout: TokenLayout) -> Tensor:
    """``(M, N)`` share of each patch that pixel masks ``(M, H, W)`` (1 keeps the pixel) occlude."""
    return 1 - F.avg_pool2d(masks[:, None].float(), layout.patch_size)[:, 0].flatten(1)


@register_method("occlusion", citation="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, "
                 "ECCV 2014, arXiv:1311.2901", passes="(windows + 1) x F")
class Occlusion(Method):
    """``Δ_w = y_c(x) − y_c(x with window w occluded)``; a token's value is the mean ``Δ_w`` over the windows that
    cover it (Captum's ``Occlusion`` with a ``(3, k·P, k·P)`` window and ``(3, s·P, s·P)`` strides). Signed.

    Args:
        window: window side in patches (1: one forward per patch, ``N + 1`` passes).
        stride: window stride in patches.
        mode: "pixel" fills the window with normalised 0 (the mean colour, Captum's default baseline);
            "token_drop" removes its patch tokens from the sequence instead (needs blocks that take a shortened
            sequence).
        readout: "logit" (``y_c``) or "softmax" (``p_c``).
        internal_batch_size: occluded images per forward pass (16 on a CPU, 64 elsewhere).
        masks: ``(M, H, W)`` masks shared by the batch to use instead of the windows (0 occludes); a token's value
            is then the mean of ``Δ_m`` weighted by the share of the patch each mask occludes. "token_drop" needs
            masks that are constant 0 or 1 on every patch.
    """

    signed = True
    per_target_pass = False
    memory_factor = None  # its passes run internal_batch_size rows at a time
    needs_attention_probs = False
    param_constraints = {"window": Interval(1, None, integer=True), "stride": Interval(1, None, integer=True),
                         "mode": Options(("pixel", "token_drop")), "readout": Options(("logit", "softmax")),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True)), "masks": TensorOrNone()}

    def __init__(self, *, window: int = 1, stride: int = 1, mode: str = "pixel", readout: str = "logit",
                 internal_batch_size: int | None = None, masks: Tensor | None = None) -> None:
        super().__init__(window=window, stride=stride, mode=mode, readout=readout,
                         internal_batch_size=internal_batch_size, masks=masks)


    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p, layout = self.params, ctx.layout
        logits, targets = clean_pass(ctx, x, targets)
        keep_tokens, pixel_masks, share = self._masks(layout, tuple(x.shape[-2:]), x.device)
        try:
            if p["mode"] == "token_drop":
                occluded = score(ctx.adapter, x, keep_tokens, targets, space="token", readout=p["readout"],
                                 batch_size=self.rows_per_pass(x))
            else:
                occluded = score(ctx.adapter, x, pixel_masks, targets, substrate="mean", readout=p["readout"],
                                 batch_size=self.rows_per_pass(x))
        except UnsupportedModelError as error:
            raise UnsupportedModelError(f"occlusion with mode='token_drop' cannot run on this model: {error}") \
                from error
        clean = READOUTS[p["readout"]](logits, torch.arange(x.shape[0], device=x.device)).gather(1, targets)
        delta = clean[:, None] - occluded  # (B, M, K)
        total = torch.einsum("bmk,mn->bkn", delta, share)
        coverage = share.sum(0)
        raw = torch.where(coverage > 0, total / coverage.clamp(min=1e-12), torch.zeros_like(total))
        return Attribution(raw.reshape(-1, *layout.grid), logits,
                           targets.reshape(-1), pass_counts(x.shape[0], share.shape[0]))

    def _masks(self, layout: TokenLayout, size: tuple[int, int],
               device: torch.device) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """Token masks (token_drop), pixel masks (pixel mode) and the ``(M, N)`` occluded share of each patch."""
        p = self.params
        if p["masks"] is None:
            keep = window_masks(layout.grid, p["window"], p["stride"]).to(device)
            pixels = keep.view(-1, *layout.grid).repeat_interleave(layout.patch_size[0], 1)
            pixels = pixels.repeat_interleave(layout.patch_size[1], 2)
            return keep, pixels, (~keep).float()
        masks = p["masks"].to(device)
        if masks.ndim != 3 or tuple(masks.shape[1:]) != size:
            raise ValueError(f"occlusion takes masks (M, {size[0]}, {size[1]}) shared by the batch; got "
                             f"{tuple(masks.shape)}.")
        share = occluded_share(masks, layout)
        if p["mode"] != "token_drop":
            return None, masks, share
        if not bool(((share == 0) | (share == 1)).all()):
            raise ValueError("occlusion with mode='token_drop' needs masks that are constant 0 or 1 on every patch.")
        return share == 0, None, share
