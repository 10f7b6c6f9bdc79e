"""Model variants registered only for the duration of a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor

from xvit.models import MODEL_VARIANTS, VIT_PRESETS, VisionTransformer, ViTConfig, register_model


class HalfLogitViT(VisionTransformer):
    """The built-in ViT with its logits halved: a subclass that keeps the layout (ViT-compatible)."""

    def forward_head(self, x: Tensor) -> Tensor:
        return 0.5 * super().forward_head(x)


class OpaqueViT(VisionTransformer):
    """A subclass registered as not ViT-compatible (as a variant with changed attention would be)."""


@contextlib.contextmanager
def registered(name: str, cls: type, vit_compatible: bool) -> Iterator[None]:
    """``cls`` registered as variant ``name`` (built-in ViT config and presets) inside the context."""
    register_model(name, config_class=ViTConfig, presets=VIT_PRESETS, default_preset="tiny",
                   vit_compatible=vit_compatible, citation="test variant")(cls)
    try:
        yield
    finally:
        MODEL_VARIANTS.remove(name)
