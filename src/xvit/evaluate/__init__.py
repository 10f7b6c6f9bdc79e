"""Explanation-quality metrics: faithfulness, localisation and sanity (specs/evaluation.md).

Each metric is a class with ``update(...)``/``compute()`` and a functional twin; both return a
:class:`MetricResult`. ``state_dict()``/``merge_state()`` save and combine what metrics accumulated over
parts of the data. ``metrics()`` lists the registered names, ``get_metric(name)`` returns the class.
"""

from xvit.evaluate.base import METRICS, Metric, MetricResult, get_metric, metrics
from xvit.evaluate.conservation import Conservation, conservation_scores
from xvit.evaluate.cost import Cost, measure_cost
from xvit.evaluate.datasets import DataSpecError, EvalBatch, EvalDataset, load_dataset
from xvit.evaluate.deletion import DeletionInsertion, deletion_insertion
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
from xvit.evaluate.randomization import Randomization, randomization_curve, spearman, vit_randomization_units
from xvit.evaluate.runner import METRIC_NAMES, EvaluationResult, add_evaluate_arguments, evaluate, run_evaluate
from xvit.evaluate.segmentation import Segmentation, average_precision, segmentation_scores

__all__ = [
    "METRICS",
    "METRIC_NAMES",
    "ClassSensitivity",
    "Conservation",
    "Cost",
    "DataSpecError",
    "DeletionInsertion",
    "EnergyPointingGame",
    "EvalBatch",
    "EvalDataset",
    "EvaluationResult",
    "MarkerShare",
    "Metric",
    "MetricResult",
    "Perturbation",
    "PointingGame",
    "Randomization",
    "Segmentation",
    "add_evaluate_arguments",
    "average_precision",
    "class_sensitivity",
    "conservation_scores",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate",
    "get_metric",
    "load_dataset",
    "marker_share",
    "measure_cost",
    "metrics",
    "perturbation_curve",
    "pointing_game",
    "randomization_curve",
    "run_evaluate",
    "segmentation_scores",
    "spearman",
    "vit_randomization_units",
]
