"""Model analyses, one module per analysis, registered by name in :data:`ANALYSES` (``xvit analyse NAME``)."""

from xvit.analysis import attention_distance, guide, rewrite  # noqa: F401 (register)
from xvit.analysis.base import ANALYSES, Analysis, AnalysisResult, analyse, analyses, register_analysis

__all__ = ["ANALYSES", "Analysis", "AnalysisResult", "analyse", "analyses", "register_analysis"]
