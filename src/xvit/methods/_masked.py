"""Shared pieces of the mask methods (RISE, occlusion): the clean forward, the explained classes and the meta."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from xvit.methods.base import Context
from xvit.targets import explained_classes


@dataclass(frozen=True)
class TensorOrNone:
    """Parameter constraint of ``masks=``: None (the method draws its own) or a tensor (checked when used)."""

    def accepts(self, v: Any) -> bool:
        return v is None or isinstance(v, Tensor)

    def describe(self) -> str:
        return "None or a mask tensor"


def clean_pass(ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
    """Logits of the unperturbed images and the ``(B, K)`` classes to score (the prediction when ``targets`` is
    None)."""
    with torch.no_grad():
        logits = ctx.adapter.forward(x).float()
    return logits, explained_classes(logits, None)[:, None] if targets is None else targets


def pass_counts(batch: int, n_masks: int, clean: int = 1) -> dict[str, Tensor]:
    """Per-image ``n_masks`` and ``n_forwards`` (masked rows plus ``clean`` unperturbed passes) for ``meta``."""
    return {"n_masks": torch.full((batch,), n_masks, dtype=torch.long),
            "n_forwards": torch.full((batch,), n_masks + clean, dtype=torch.long)}
