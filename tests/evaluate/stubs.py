"""Tiny models with hand-checkable outputs and a deterministic explainer, shared by the metric tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

HALF = (0.5, 0.5, 0.5)  # mean = std = 0.5: white is +1, black is -1 in normalised space


def first_row_model(x: Tensor) -> Tensor:
    """Two classes: class 0 while the mean of channel 0 over the first row exceeds 0.1, else class 1."""
    return torch.stack([x[:, 0, 0, :].mean(1), torch.full((x.shape[0],), 0.1)], 1)


def bright_count_model(x: Tensor) -> Tensor:
    """Logits whose softmax is exactly ``[q, 1 - q]``, ``q = (1 + #pixels with channel 0 > 0.5) / (HW + 2)``."""
    hw = x.shape[2] * x.shape[3]
    q = (1 + (x[:, 0] > 0.5).flatten(1).sum(1).double()) / (hw + 2)
    return torch.stack([q, 1 - q], 1).log().float()


def tiny_cnn(size: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * size * size, classes)).eval()


def grad_x_input(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Gradient × input summed over channels, ``(B, H, W)``: deterministic and parameter-dependent."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
    return (g * x).sum(1).detach()


def data(n: int = 10, size: int = 6, classes: int = 3, seed: int = 0) -> dict[str, Tensor]:
    """Random images, distinct-valued signed maps, labels, targets and masks."""
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(n, 3, size, size, generator=g),
        "maps": torch.randn(n, size, size, generator=g),
        "labels": torch.randint(0, classes, (n,), generator=g),
        "targets": torch.randint(0, classes, (n,), generator=g),
        "masks": torch.rand(n, size, size, generator=g) > 0.6,
        "masks_b": torch.rand(n, size, size, generator=g) > 0.6,
        "maps_b": torch.randn(n, size, size, generator=g),
    }
