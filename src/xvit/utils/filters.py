"""One Gaussian blur, in the two kernel constructions that reference code uses.

``kernel="truncated"``: the sampled Gaussian on ``kernel_size`` taps, renormalised (torchvision's
``gaussian_blur``, the TIS harness, the blur baseline of integrated gradients). ``kernel="folded"``: RISE's
``gkern``, a centred delta smoothed by ``scipy.ndimage.gaussian_filter`` (truncate 4, ``mode="reflect"``), i.e. a
wide Gaussian folded back into ``kernel_size`` taps by reflection. Both are separable and applied per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(kernel_size: int, sigma: float, kernel: str = "truncated") -> Tensor:
    """The 1-D kernel (float64, sums to 1) of :func:`gaussian_blur`."""
    if kernel == "truncated":
        half = (kernel_size - 1) * 0.5
        pdf = torch.exp(-0.5 * (torch.linspace(-half, half, kernel_size, dtype=torch.float64) / sigma) ** 2)
        return pdf / pdf.sum()
    if kernel == "folded":
        radius = int(4.0 * sigma + 0.5)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        weights = torch.exp(-0.5 * offsets**2 / sigma**2)
        weights = weights / weights.sum()
        pos = torch.arange(kernel_size, dtype=torch.long)[:, None] + offsets.long()[None, :]
        pos = pos % (2 * kernel_size)
        pos = torch.where(pos >= kernel_size, 2 * kernel_size - 1 - pos, pos)  # scipy "reflect": dcba|abcd
        return (weights[None, :] * (pos == kernel_size // 2)).sum(1)
    raise ValueError(f"kernel must be 'truncated' or 'folded'; got {kernel!r}.")


def gaussian_blur(x: Tensor, kernel_size: int = 11, sigma: float = 5.0, *, kernel: str = "truncated",
                  padding: str = "zeros") -> Tensor:
    """Blur every channel of ``x`` ``(B, C, H, W)`` with a ``kernel_size``² Gaussian of std ``sigma``.

    ``padding`` is ``"zeros"`` or ``"reflect"`` (the latter needs ``H, W > kernel_size // 2``).
    """
    k1 = gaussian_kernel1d(kernel_size, sigma, kernel).to(x.dtype)
    c, k = x.shape[1], kernel_size
    weight = torch.outer(k1, k1).to(device=x.device).expand(c, 1, k, k)
    if padding == "reflect":
        return F.conv2d(F.pad(x, [k // 2] * 4, mode="reflect"), weight, groups=c)
    if padding == "zeros":
        return F.conv2d(x, weight, padding=k // 2, groups=c)
    raise ValueError(f"padding must be 'zeros' or 'reflect'; got {padding!r}.")
