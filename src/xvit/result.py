"""The one result type every method returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Explanation:
    """Attribution maps for ``B`` images and ``K`` explained classes each.

    Attributes:
        raw: un-normalised maps at the method's native resolution, signed where the method is:
            the patch grid ``(B, K, h, w)`` for token methods, pixels ``(B, K, H, W)`` for input methods.
        maps: ``raw`` upsampled bilinearly to the input size and min-max normalised per map to [0, 1],
            ``(B, K, H, W)``.
        targets: the explained classes, ``(B, K)`` long.
        logits: the model's logits for the input, ``(B, C)``.
        method: registry name of the method.
        params: the method's parameters, as given (defaults filled in).
        meta: everything else: ``signed``, ``class_specific``, ``layout``, ``seconds``, extras such as
            ``completeness_gap`` for integrated gradients.
    """

    raw: Tensor
    maps: Tensor
    targets: Tensor
    logits: Tensor
    method: str
    params: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        return bool(self.meta.get("signed", False))

    def numpy(self):
        """``maps`` as a float32 numpy array ``(B, K, H, W)`` in [0, 1] (what grad-cam users expect)."""
        return self.maps.detach().float().cpu().numpy()

    def overlay(self, images: Sequence[Any], alpha: float = 0.5) -> list[list[Any]]:
        """Heat maps blended over display images; ``result[b][k]`` is a PIL image.

        Non-negative maps use a perceptual colormap; signed maps a diverging one centred on zero.
        ``images`` are PIL images or ``(H, W, 3)`` arrays, one per explained image.
        """
        from xvit.viz import overlay_explanation

        return overlay_explanation(self, images, alpha=alpha)
