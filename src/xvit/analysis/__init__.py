"""Model analyses, one module per analysis, registered by name in :data:`ANALYSES` (``xvit analyse NAME``)."""

from xvit.analysis import (  # noqa: F401 (register)
    attention_distance,
    coverage,
    erf,
    guide,
    interactions,
    patch_removal,
    rewrite,
    svda,
)
from xvit.analysis.base import ANALYSES, Analysis, AnalysisResult, analyse, analyses, register_analysis

__all__ = ["ANALYSES", "Analysis", "AnalysisResult", "analyse", "analyses", "register_analysis"]
