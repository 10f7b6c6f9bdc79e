"""Adapters: one uniform view (token layout, blocks, attention, canonical parts) of any supported ViT."""

from xvit.adapters import hf, timm  # noqa: F401  (registers the families)
from xvit.adapters.base import (
    ADAPTERS,
    BlockParts,
    EmbedParts,
    HeadParts,
    TokenLayout,
    UnsupportedModelError,
    ViTAdapter,
    get_adapter,
)

__all__ = ["ADAPTERS", "BlockParts", "EmbedParts", "HeadParts", "TokenLayout", "UnsupportedModelError",
           "ViTAdapter", "get_adapter"]
