"""How many rows a method or metric puts through the model per pass when it batches the work itself (masked
images, integrated-gradient steps, perturbed images of the evaluation metrics)."""

from __future__ import annotations

import torch

__all__ = ["CPU_ROWS_PER_PASS", "rows_per_pass"]

CPU_ROWS_PER_PASS = 16
"""Rows per pass on a CPU: a ViT's forward costs 5–40 % more per row at 64–128 rows than at 8–16 there (bundled
tiny model +40 % at 128, ViT-S/16 +22 % at 64, ViT-B/16 +10 % at 128; docs/benchmarks.md)."""


def rows_per_pass(requested: int | None, device: torch.device | str, accelerator: int) -> int:
    """``requested`` when given; otherwise :data:`CPU_ROWS_PER_PASS` on a CPU and ``accelerator`` elsewhere
    (large passes keep a GPU busy)."""
    if requested is not None:
        return requested
    return CPU_ROWS_PER_PASS if torch.device(device).type == "cpu" else accelerator
