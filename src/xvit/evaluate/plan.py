"""The runtime state of an evaluation run, opened from its :class:`~xvit.evaluate.spec.RunSpec` before any work.

:func:`prepare` opens the model and the data, decides which columns apply to the data set and the model (and
why the others are skipped) from what each metric declares, maps the data set's labels onto the model's classes
and returns a :class:`Plan`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.data.sources import DataSpecError, EvalDataset, load_dataset
from xvit.evaluate.base import REQUIREMENTS, Column, Metric, get_metric
from xvit.evaluate.inputs import RunContext
from xvit.evaluate.spec import RunSpec
from xvit.explainer import Explainer
from xvit.models import bundled_model_dir, bundled_models, load_model, preprocessing_for
from xvit.utils.context import eval_mode
from xvit.utils.logits import unwrap_logits

__all__ = ["Plan", "available_requirements", "model_info", "prepare"]


@dataclass
class Plan:
    """A run's spec with its opened model and data, the columns that apply and the resolved parameters."""

    spec: RunSpec
    model: nn.Module
    model_info: dict[str, Any]
    data: EvalDataset
    prep: Any
    device: torch.device
    methods: dict[str, dict[str, Any]]  # name -> full parameters (defaults filled in)
    relevance_start: dict[str, str | None]  # name -> the method's declared relevance start
    columns: list[Column]
    skipped: dict[str, str]  # column -> reason, for every method
    notes: list[str]
    label_map: Tensor | None
    num_classes: int
    seeds: dict[str, int]  # metric -> its seed parameter, for metrics that take one
    fingerprints: dict[str, str] = field(default_factory=dict)  # method -> resume fingerprint, set by the run

    @property
    def options(self) -> dict[str, Any]:
        return self.spec.options()

    @property
    def metric_params(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.spec.metric_params.items()}

    def active_columns(self) -> list[Column]:
        """The columns evaluated for every method (not skipped)."""
        return [c for c in self.columns if c.name not in self.skipped]

    def probes_cost(self) -> bool:
        """Whether an evaluated metric asks for warmed-up, memory-probed explanation calls (``probe_cost``)."""
        return any(get_metric(c.metric).probe_cost for c in self.active_columns())

    def make_metric(self, col: Column, method: str) -> Metric:
        """A fresh metric for ``col`` and ``method``: the user's parameters, the column's, and the run's."""
        context = RunContext(options=self.options, mean=tuple(self.prep.mean), std=tuple(self.prep.std),
                             method=method, method_params=self.methods.get(method, {}), device=self.device)
        params = {**col.fixed, **self.spec.metric_params.get(col.metric, {})}
        return get_metric(col.metric).from_run(context, params)


def available_requirements(data: EvalDataset) -> frozenset[str]:
    """Which of :data:`~xvit.evaluate.base.REQUIREMENTS` the data set meets."""
    have = {"labels": data.labels is not None, "masks": data.has_masks, "pairs": data.pair and data.has_masks,
            "markers": data.has_markers}
    return frozenset(k for k, v in have.items() if v)


def prepare(spec: RunSpec, model: nn.Module | None = None, data: EvalDataset | None = None) -> Plan:
    """Open model (``spec.model`` unless given) and data (``spec.data`` unless given) and check everything the
    spec could not check alone, before any work starts."""
    if model is None:
        if spec.model is None:
            raise ValueError("The spec names no model; pass one.")
        model = load_model(spec.model)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module or a model spec; got {type(model).__name__}.")
    try:
        get_adapter(model)
    except UnsupportedModelError as e:
        raise ValueError(str(e)) from None
    prep = preprocessing_for(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if data is None:
        dataset = load_dataset(spec.data, size=tuple(prep.size), limit=spec.max_images)
    else:
        dataset = data.subset(spec.max_images) if spec.max_images is not None else data
    available = available_requirements(dataset)
    for name in spec.metrics:
        cls = get_metric(name)
        missing = [r for r in REQUIREMENTS if r in cls.requires and r not in available]
        if missing and not cls.default:  # a metric named on purpose that this data set cannot feed
            raise ValueError(f"{name} cannot run on {dataset.spec!r}: {REQUIREMENTS[missing[0]]}.")

    resolved, starts = {}, {}
    for name in spec.methods:
        try:
            method = Explainer(model, name, **spec.method_params.get(name, {})).method
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None
        resolved[name] = method.get_params()
        starts[name] = method.relevance_start

    notes: list[str] = []
    skipped: dict[str, str] = {}
    columns: list[Column] = []
    for name in spec.metrics:
        cls = get_metric(name)
        notes += cls.run_notes(available, dataset.info)
        missing = [r for r in REQUIREMENTS if r in cls.requires and r not in available]
        reason = REQUIREMENTS[missing[0]] if missing else cls.unsupported(model, spec.metric_params.get(name, {}))
        for col in cls.columns:
            columns.append(col)
            if reason is not None:
                skipped[col.name] = reason
        if reason is not None:
            notes.append(f"{name}: skipped, {reason}.")

    # One probe forward: checks that the model takes the data and gives the number of classes.
    probe = dataset.load([0], prep)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(unwrap_logits(model(probe.x.to(device))).shape[-1])
    label_map = _label_map(dataset, model, num_classes, notes)
    if dataset.labels is None:
        if spec.class_explained == "target":
            raise ValueError(f"class_explained='target' needs labels, but {dataset.spec!r} has none; explain the "
                             "predicted class.")
    elif dataset.pair:
        notes.append("two-object images: the ground-truth label of an image is the labelled class the model "
                     "scores higher; pointing games use that class's mask (images whose explained class is "
                     "not labelled are excluded), segmentation the union of both masks.")

    plan = Plan(spec=spec, model=model, model_info={"spec": spec.model}, data=dataset, prep=prep, device=device,
                methods=resolved, relevance_start=starts, columns=columns, skipped=skipped, notes=notes,
                label_map=label_map, num_classes=num_classes, seeds={})
    for col in plan.active_columns():  # build every metric now: parameters fail here, not after the first chunk
        try:
            metric = plan.make_metric(col, spec.methods[0])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{col.metric}: {e}") from None
        if "seed" in metric.get_params():
            plan.seeds[col.metric] = metric.get_params()["seed"]
    plan.model_info = model_info(model, spec.model)
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
    if int(data.labels.min()) < 0:
        raise DataSpecError(f"{data.spec!r} has a negative label ({int(data.labels.min())}); labels are class "
                            "indices 0, 1, ...")
    top = int(data.labels.max()) if mapping is None else int(mapping[data.labels].max())
    if top >= num_classes:
        raise DataSpecError(f"{data.spec!r} has label {top} but the model has {num_classes} classes; evaluate a "
                            "model trained on this data.")
    return mapping


def model_info(model: nn.Module, spec: str | None) -> dict[str, Any]:
    """Spec, weight-file hashes (bundled or directory checkpoints) and a hash of the state dict."""
    info: dict[str, Any] = {"spec": spec, "class": f"{type(model).__module__}.{type(model).__qualname__}",
                            "preprocessing": preprocessing_for(model).to_dict()}
    folder = None
    if spec is not None:
        if spec in bundled_models():
            folder = bundled_model_dir(spec)
        elif Path(spec).is_dir():
            folder = Path(spec)
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")
                       and p.is_file())  # is_file: a pipe would block
        info["weights"] = {p.name: _sha256_file(p) for p in files}
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    info["state_dict_sha256"] = h.hexdigest()
    return info


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
