"""The one relevance engine for all LRP-style rules: rules, composites and the canonical ViT graph."""

from xvit.relevance.composites import COMPOSITES, Composite
from xvit.relevance.engine import Propagation, propagate, residual_stream, vit_graph

__all__ = ["COMPOSITES", "Composite", "Propagation", "propagate", "residual_stream", "vit_graph"]
