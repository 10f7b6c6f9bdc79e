"""The metrics xvit ships, registered on import. The import order is the registry's order and so the column order
of a run with the default metrics; a new metric module is imported here (or anywhere, for a metric of one's own)."""

# isort: off
from xvit.evaluate.perturbation import Perturbation
from xvit.evaluate.deletion import DeletionInsertion
from xvit.evaluate.segmentation import Segmentation
from xvit.evaluate.localisation import PointingGame, EnergyPointingGame, ClassSensitivity, MarkerShare
from xvit.evaluate.randomization import Randomization
from xvit.evaluate.conservation import Conservation
from xvit.evaluate.cost import ExplanationCost
# isort: on
from xvit.evaluate.base import METRICS, Metric

__all__ = ["BUILTIN_METRICS", "default_metrics", "metric_names"]

BUILTIN_METRICS: tuple[type[Metric], ...] = (Perturbation, DeletionInsertion, Segmentation, PointingGame,
                                              EnergyPointingGame, ClassSensitivity, MarkerShare, Randomization,
                                              Conservation, ExplanationCost)


def metric_names() -> list[str]:
    """Every registered metric, in registration order."""
    return METRICS.names()


def default_metrics() -> tuple[str, ...]:
    """The metrics a run evaluates when none are named: every registered one with ``default = True``."""
    return tuple(name for name in METRICS if METRICS.get(name).default)
