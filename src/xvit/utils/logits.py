"""One way to read logits from whatever a classifier's forward returns."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def unwrap_logits(out: Any) -> Tensor:
    """Logits ``(B, C)`` from a tensor, a Hugging Face ``ModelOutput`` (``.logits``) or a tuple (first element)."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"Cannot read logits from a {type(out).__name__}; the model should return a tensor, a "
                    "ModelOutput with .logits, or a tuple whose first element is the logits.")
