"""What an evaluation run will do, checked before any work starts.

:func:`prepare` validates the arguments of :func:`xvit.evaluate.evaluate`, opens the model and the data,
decides which columns apply to the data set (and why the others are skipped), maps the data set's labels onto
the model's classes and returns a :class:`Plan`, the run's fixed settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xvit.evaluate.columns import RUNNER_PARAMS, Column, columns_for, make_metric
from xvit.evaluate.datasets import DataSpecError, EvalDataset, load_dataset
from xvit.evaluate.provenance import model_info
from xvit.evaluate.randomization import vit_randomization_units
from xvit.registry import did_you_mean
from xvit.utils.context import eval_mode
from xvit.utils.logits import unwrap_logits

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "METRIC_NAMES", "Plan", "prepare"]

METRIC_NAMES = ("perturbation", "deletion_insertion", "segmentation", "pointing_game", "energy_pointing_game",
                "class_sensitivity", "marker_share", "randomization", "conservation", "cost")
# marker_share is an audit of xvit-shapes spurious data and runs only when named.
DEFAULT_METRICS = tuple(m for m in METRIC_NAMES if m != "marker_share")
DEFAULT_METHODS = ("rollout", "transformer_attribution", "attnlrp")


@dataclass
class Plan:
    """The settings of one run: model, data, methods, columns and options, all validated."""

    model: nn.Module
    model_info: dict[str, Any]
    data: EvalDataset
    prep: Any
    device: torch.device
    methods: dict[str, dict[str, Any]]  # name -> full parameters (defaults filled in)
    method_args: dict[str, dict[str, Any]]  # name -> parameters as given
    columns: list[Column]
    metric_params: dict[str, dict[str, Any]]
    skipped: dict[str, str]  # column -> reason, for every method
    notes: list[str]
    label_map: Tensor | None
    num_classes: int
    options: dict[str, Any]
    fingerprints: dict[str, str] = field(default_factory=dict)  # method -> resume fingerprint, set by the run


def prepare(model: nn.Module | str, data: EvalDataset | str, methods: Sequence[str], metrics: Sequence[str], *,
            batch_size: int, class_explained: str, seed: int, method_params: Mapping[str, Mapping[str, Any]] | None,
            metric_params: Mapping[str, Mapping[str, Any]] | None, steps: int | None, forward_batch_size: int,
            randomization_images: int, max_images: int | None, model_spec: str | None = None) -> Plan:
    """Check every argument and open model and data, before any work starts."""
    import xvit
    from xvit.adapters import UnsupportedModelError, get_adapter
    from xvit.models import preprocessing_for

    for name, value in (("batch_size", batch_size), ("forward_batch_size", forward_batch_size),
                        ("randomization_images", randomization_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer or None; got {steps!r}.")
    if class_explained not in ("predicted", "target"):
        raise ValueError(f"class_explained must be 'predicted' or 'target'; got {class_explained!r}.")
    if not methods:
        raise ValueError("No methods given; name at least one (see xvit.methods()).")
    if not metrics:
        raise ValueError(f"No metrics given; choose from {', '.join(METRIC_NAMES)}.")
    registry = xvit.methods()
    for name in methods:
        if name not in registry:
            raise ValueError(f"unknown method {name!r}.{did_you_mean(name, registry)} See xvit.methods() "
                             "('xvit methods') for the list.")
    for name in metrics:
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}.{did_you_mean(name, METRIC_NAMES)} Choose from "
                             f"{', '.join(METRIC_NAMES)}.")
    methods = list(dict.fromkeys(methods))
    metrics = list(dict.fromkeys(metrics))
    method_params = {k: dict(v) for k, v in (method_params or {}).items()}
    metric_params = {k: dict(v) for k, v in (metric_params or {}).items()}
    for name in method_params:
        if name not in methods:
            raise ValueError(f"parameters were given for method {name!r}, which is not evaluated "
                             f"(methods: {', '.join(methods)}).")
    for name, params in metric_params.items():
        if name not in metrics or name == "cost":
            raise ValueError(f"parameters were given for metric {name!r}, which is not evaluated or takes none "
                             f"(metrics: {', '.join(metrics)}).")
        fixed = RUNNER_PARAMS.get(name, set()) & set(params)
        if fixed:
            raise ValueError(f"the runner sets {name}.{sorted(fixed)[0]} itself; leave it out.")

    if isinstance(model, (str, os.PathLike)):
        spec = str(model)
        model = xvit.load_model(spec)
    else:
        spec = model_spec
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module or a model spec; got {type(model).__name__}.")
    try:
        get_adapter(model)
    except UnsupportedModelError as e:
        raise ValueError(str(e)) from None
    prep = preprocessing_for(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(data, EvalDataset):
        dataset = data.subset(max_images) if max_images is not None else data
    else:
        dataset = load_dataset(data, size=tuple(prep.size), limit=max_images)
    if "marker_share" in metrics and not dataset.has_markers:
        raise ValueError(f"marker_share needs images with a spurious marker and its mask, which {dataset.spec!r} "
                         "lacks; evaluate it on xvit-shapes spurious data, e.g. "
                         "xvit-shapes:spurious:test:200:marker=random.")

    resolved = {}
    for name in methods:
        try:
            resolved[name] = xvit.Explainer(model, name, **method_params.get(name, {})).method.get_params()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None

    notes: list[str] = []
    if "marker_share" in metrics and dataset.info.get("marker") == "none":
        notes.append("marker_share: marker=none puts no marker on any image, so every image is excluded.")
    skipped: dict[str, str] = {}
    columns: list[Column] = []
    for metric in metrics:
        reason = None
        if metric in ("segmentation", "pointing_game", "energy_pointing_game") and not dataset.has_masks:
            reason = "the data set has no ground-truth masks"
        elif metric == "class_sensitivity" and not (dataset.pair and dataset.has_masks):
            reason = "needs two-object images with a mask per object (e.g. xvit-shapes:pair:test)"
        elif metric == "randomization":
            try:
                vit_randomization_units(model)
            except ValueError as e:
                reason = str(e)
        for col in columns_for(metric):
            columns.append(col)
            if reason is not None:
                skipped[col.name] = reason
        if reason is not None:
            notes.append(f"{metric}: skipped, {reason}.")

    # One probe forward: checks that the model takes the data and gives the number of classes.
    probe = dataset.load([0], prep)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(unwrap_logits(model(probe.x.to(device))).shape[-1])
    label_map = _label_map(dataset, model, num_classes, notes)
    if dataset.labels is None:
        if class_explained == "target":
            raise ValueError(f"class_explained='target' needs labels, but {dataset.spec!r} has none; explain the "
                             "predicted class.")
        if "perturbation" in metrics:
            notes.append("perturbation: the data set has no labels; accuracy is measured against the clean "
                         "prediction (clean accuracy 1 by construction).")
    elif dataset.pair:
        notes.append("two-object images: the ground-truth label of an image is the labelled class the model "
                      "scores higher; pointing games use that class's mask (images whose explained class is "
                      "not labelled are excluded), segmentation the union of both masks.")

    options = {"batch_size": batch_size, "class_explained": class_explained, "seed": seed,
               "deletion_insertion_steps": steps, "forward_batch_size": forward_batch_size,
               "randomization_images": randomization_images, "max_images": max_images}
    plan = Plan(model=model, model_info={"spec": spec}, data=dataset, prep=prep, device=device, methods=resolved,
                method_args=method_params, columns=columns, metric_params=metric_params, skipped=skipped,
                notes=notes, label_map=label_map, num_classes=num_classes, options=options)
    for col in columns:  # validate metric parameters now, not after the first chunk
        if col.name not in skipped:
            try:
                make_metric(plan, col, methods[0])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{col.metric}: {e}") from None
    plan.model_info = model_info(model, spec)
    return plan


def _label_map(data: EvalDataset, model: nn.Module, num_classes: int, notes: list[str]) -> Tensor | None:
    """Map the data set's class indices onto the model's by class name where both name their classes."""
    if data.labels is None:
        return None
    model_names = list(getattr(model, "xvit_class_names", None) or [])
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not model_names and id2label and len(id2label) == num_classes:
        model_names = [str(id2label[i]) for i in range(num_classes)]
    mapping = None
    if data.class_names and model_names and data.class_names != model_names[:len(data.class_names)]:
        if all(n in model_names for n in data.class_names):
            mapping = torch.tensor([model_names.index(n) for n in data.class_names], dtype=torch.long)
            notes.append("labels were mapped onto the model's classes by name.")
        else:
            notes.append("the data set's class names differ from the model's; labels are used as class indices.")
    top = int(data.labels.max()) if mapping is None else int(mapping[data.labels].max())
    if top >= num_classes:
        raise DataSpecError(f"{data.spec!r} has label {top} but the model has {num_classes} classes; evaluate a "
                            "model trained on this data.")
    return mapping
