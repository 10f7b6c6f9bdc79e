"""Map post-processing shared by the explainer, the metrics and the pictures: one upsampling, one min-max."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalise_maps(maps: Tensor, ndim: int = 2) -> Tensor:
    """Min-max normalise each map over its last ``ndim`` axes to [0, 1]; constant maps become zeros.

    Keeps the dtype of ``maps``.
    """
    dims = tuple(range(-ndim, 0))
    lo = maps.amin(dim=dims, keepdim=True)
    span = maps.amax(dim=dims, keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - lo) / safe, torch.zeros_like(maps))


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize each map of ``(..., h, w)`` to ``size`` (unchanged when it already has that size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    up = F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]), size=tuple(size), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size)
