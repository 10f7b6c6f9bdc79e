"""The one result type every method returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor


@dataclass(frozen=True, repr=False)
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

    def numpy(self) -> np.ndarray:
        """``maps`` as a float32 numpy array ``(B, K, H, W)`` in [0, 1] (what grad-cam users expect)."""
        return self.maps.detach().float().cpu().numpy()

    def overlay(self, images: Any = None, *, cmap: Any = None, alpha: float | None = None, sign: str | None = None,
                pool: int | tuple[int, int] | str | None = None, smooth: float | None = None) -> np.ndarray:
        """Heat maps blended over display images, as uint8 ``(B, K, H, W, 3)`` (``Image.fromarray(o[b, k])``
        gives a PIL image).

        Unsigned maps are min-max scaled and coloured with a sequential colormap at opacity ``alpha`` (0.5);
        signed maps are scaled by the 99th percentile of ``|map|``, coloured red (for) and blue (against) around
        zero, and fade to transparent where the relevance is small (``alpha``, default 0.8, is the opacity of
        the strongest pixels). ``images`` are PIL images or ``(H, W, 3)`` arrays, one per explained image;
        ``None`` gives the coloured maps alone. ``sign`` (``all``, ``positive``, ``negative``,
        ``absolute_value``), ``pool`` (``"patch"`` or a block size) and ``smooth`` are those of
        :func:`xvit.viz.explanation_overlays`.
        """
        from xvit.viz import explanation_overlays

        return explanation_overlays(self, images, alpha=alpha, cmap=cmap, sign=sign, pool=pool, smooth=smooth)

    def __repr__(self) -> str:
        B, K, H, W = self.maps.shape
        targets = self.targets.tolist() if self.targets.numel() <= 8 else f"<{B}x{K} classes>"
        native = "" if tuple(self.raw.shape[-2:]) == (H, W) else f", native={tuple(self.raw.shape[-2:])}"
        return (f"Explanation(method={self.method!r}, shape=(B={B}, K={K}, H={H}, W={W}){native}, "
                f"targets={targets}, signed={self.signed}, device={self.maps.device.type!r})")

    def _repr_html_(self) -> str:
        """A notebook's view: a small table and the coloured maps (at most 4 images x 4 classes) as a PNG."""
        from html import escape

        from xvit.viz import thumbnail_png

        B, K, H, W = self.maps.shape
        rows = {"method": self.method, "maps (B, K, H, W)": (B, K, H, W),
                "native resolution": tuple(self.raw.shape[-2:]),
                "targets": self.targets.tolist() if self.targets.numel() <= 16 else f"{B} x {K} classes",
                "signed": self.signed, "device": self.maps.device.type,
                "params": ", ".join(f"{k}={v!r}" for k, v in self.params.items()) or "(defaults)"}
        table = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>"
                        f"{escape(str(v))}</td></tr>" for k, v in rows.items())
        shown = "" if B <= 4 and K <= 4 else f"<br><small>first {min(B, 4)} image(s) x {min(K, 4)} class(es)</small>"
        return (f"<div><table>{table}</table><img alt='maps of {escape(self.method)}' "
                f"src='data:image/png;base64,{thumbnail_png(self)}'>{shown}</div>")
