"""Explanation-quality metrics: faithfulness, localisation and sanity (specs/evaluation.md), and the runner.

Each metric is a class with ``update(...)``/``compute()`` and a functional twin; both return a
:class:`MetricResult`. ``state_dict()``/``merge_state()`` save and combine what metrics accumulated over
parts of the data. ``metrics()`` lists the registered names with their citation, direction, data requirements,
columns and parameters; ``get_metric(name)`` returns the class. A metric registered with
:func:`register_metric` that implements ``update_from`` runs in :func:`evaluate` (and ``xvit evaluate``), its
summary and its plots without any change to the runner. :class:`RunSpec` describes a run (frozen, serialisable),
:func:`prepare` opens it and :func:`execute` runs it.
"""

from xvit.data.sources import DataSpecError, EvalBatch, EvalDataset, load_dataset
from xvit.evaluate.base import (
    METRICS,
    REQUIREMENTS,
    Column,
    Metric,
    MetricResult,
    NotApplicable,
    Plot,
    get_metric,
    metrics,
    register_metric,
)
from xvit.evaluate.catalog import default_metrics
from xvit.evaluate.conservation import Conservation, conservation_scores
from xvit.evaluate.cost import Cost, ExplanationCost, measure_cost
from xvit.evaluate.deletion import DeletionInsertion, deletion_insertion
from xvit.evaluate.inputs import MetricInput, RunContext, Timing, energy_maps
from xvit.evaluate.localisation import (
    ClassSensitivity,
    EnergyPointingGame,
    MarkerShare,
    PointingGame,
    class_sensitivity,
    energy_pointing_game,
    marker_share,
    pointing_game,
)
from xvit.evaluate.perturbation import Perturbation, perturbation_curve
from xvit.evaluate.plan import Plan, prepare
from xvit.evaluate.randomization import Randomization, randomization_curve, spearman, vit_randomization_units
from xvit.evaluate.runner import EvaluationResult, evaluate, evaluate_spec, execute
from xvit.evaluate.segmentation import Segmentation, average_precision, segmentation_scores
from xvit.evaluate.spec import DEFAULT_METHODS, RunSpec

__all__ = [
    "DEFAULT_METHODS",
    "METRICS",
    "REQUIREMENTS",
    "ClassSensitivity",
    "Column",
    "Conservation",
    "Cost",
    "DataSpecError",
    "DeletionInsertion",
    "EnergyPointingGame",
    "EvalBatch",
    "EvalDataset",
    "EvaluationResult",
    "ExplanationCost",
    "MarkerShare",
    "Metric",
    "MetricInput",
    "MetricResult",
    "NotApplicable",
    "Perturbation",
    "Plan",
    "Plot",
    "PointingGame",
    "Randomization",
    "RunContext",
    "RunSpec",
    "Segmentation",
    "Timing",
    "average_precision",
    "class_sensitivity",
    "conservation_scores",
    "default_metrics",
    "deletion_insertion",
    "energy_maps",
    "energy_pointing_game",
    "evaluate",
    "evaluate_spec",
    "execute",
    "get_metric",
    "load_dataset",
    "marker_share",
    "measure_cost",
    "metrics",
    "perturbation_curve",
    "pointing_game",
    "prepare",
    "randomization_curve",
    "register_metric",
    "segmentation_scores",
    "spearman",
    "vit_randomization_units",
]
