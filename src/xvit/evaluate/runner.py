"""The evaluation runner: methods × metrics over a data set, resumable, with tables, curves and provenance.

:func:`evaluate` explains every image with every method (the predicted or the ground-truth class) and feeds
the maps to the metrics of :mod:`xvit.evaluate` (evaluation.md), chunk by chunk. With ``out_dir`` each
finished (method, chunk) is saved to ``out_dir/state/`` at once, so an interrupted run resumes where it
stopped when it is started again with the same settings; it then writes

* ``per_image.csv`` (and ``per_image.parquet`` where pyarrow is installed): one row per method × image,
* ``summary.md`` and ``summary.json``: mean ± 95 % interval per method × metric, direction, dataset-level
  numbers and the cost of each evaluation in forward passes per image,
* ``curves/*.png``: perturbation accuracy, deletion/insertion probability and randomisation similarity curves,
* ``provenance.json``: package versions, seeds, model spec and weight hash, image ids, method and metric
  parameters, the command line and wall-clock time per method.

``xvit evaluate`` (:func:`add_evaluate_arguments`, :func:`run_evaluate`) is a thin layer over :func:`evaluate`.
"""

from __future__ import annotations

import argparse
import ast
import csv
import difflib
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.evaluate.base import MetricResult, get_metric, logits_of, summarize
from xvit.evaluate.cost import Cost, measure_cost
from xvit.evaluate.datasets import DataSpecError, EvalDataset, load_dataset
from xvit.evaluate.randomization import vit_randomization_units
from xvit.explainer import eval_mode
from xvit.result import Explanation

__all__ = ["DEFAULT_METRICS", "METRIC_NAMES", "EvaluationResult", "add_evaluate_arguments", "evaluate", "run_evaluate"]

METRIC_NAMES = ("perturbation", "deletion_insertion", "segmentation", "pointing_game", "energy_pointing_game",
                "class_sensitivity", "marker_share", "randomization", "conservation", "cost")
# marker_share is an audit of xvit-shapes spurious data and runs only when named.
DEFAULT_METRICS = tuple(m for m in METRIC_NAMES if m != "marker_share")
DEFAULT_METHODS = ("rollout", "transformer_attribution", "attnlrp")
STATE_VERSION = 1
# Methods whose raw map is LRP relevance started from a one-hot output (R_out = 1, evaluation.md §6).
_ONE_HOT_START = frozenset({"full_lrp"})
# Parameters the runner sets itself, per metric.
_RUNNER_PARAMS = {"perturbation": {"mode"}, "deletion_insertion": {"mode"}, "randomization": {"explain_fn"}}


@dataclass(frozen=True)
class _Column:
    """One reported quantity: a metric (registry name) run with fixed extra parameters."""

    name: str
    metric: str
    fixed: dict[str, Any] = field(default_factory=dict)


def _columns(metric: str) -> list[_Column]:
    if metric == "perturbation":
        return [_Column("perturbation_pos", metric, {"mode": "positive"}),
                _Column("perturbation_neg", metric, {"mode": "negative"})]
    if metric == "deletion_insertion":
        return [_Column("deletion", metric, {"mode": "deletion"}), _Column("insertion", metric, {"mode": "insertion"})]
    return [_Column(metric, metric)]


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        summary: one row per method × column (``perturbation_pos``, ``perturbation_neg``, ``deletion``,
            ``insertion``, ``segmentation``, …, ``cost``) with ``mean``, ``ci95_low``, ``ci95_high``, ``n``,
            ``value`` (the metric's headline number), ``direction``, ``passes_per_image`` and
            ``details`` (dataset-level numbers); skipped pairs have ``status="skipped"`` and a ``note``.
        per_image: one row per method × image: id, label, predicted and explained class, one score per column.
        results: ``results[method][column]`` is the :class:`MetricResult` over all images.
        notes: what was skipped or substituted, and why.
        provenance: versions, seeds, model, data, parameters, timings (as written to ``provenance.json``).
        out_dir: where the files were written, or ``None``.
    """

    summary: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    results: dict[str, dict[str, MetricResult]]
    notes: list[str]
    provenance: dict[str, Any]
    out_dir: Path | None = None

    def to_markdown(self) -> str:
        """The summary as Markdown (the content of ``summary.md``)."""
        return _markdown(self.summary, self.notes, self.provenance)


# ------------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    model: nn.Module
    model_info: dict[str, Any]
    data: EvalDataset
    prep: Any
    device: torch.device
    methods: dict[str, dict[str, Any]]  # name -> full parameters (defaults filled in)
    method_args: dict[str, dict[str, Any]]  # name -> parameters as given
    columns: list[_Column]
    metric_params: dict[str, dict[str, Any]]
    skipped: dict[str, str]  # column -> reason, for every method
    notes: list[str]
    label_map: Tensor | None
    num_classes: int
    options: dict[str, Any]
    fingerprints: dict[str, str] = field(default_factory=dict)


def evaluate(model: nn.Module | str, data: EvalDataset | str, methods: Sequence[str] = DEFAULT_METHODS,
             metrics: Sequence[str] = DEFAULT_METRICS, out_dir: str | os.PathLike | None = None, *,
             batch_size: int = 16, class_explained: str = "predicted", seed: int = 0,
             method_params: Mapping[str, Mapping[str, Any]] | None = None,
             metric_params: Mapping[str, Mapping[str, Any]] | None = None, steps: int | None = 56,
             forward_batch_size: int = 128, randomization_images: int = 16, max_images: int | None = None,
             resume: bool = True, progress: bool = False, command: str | None = None) -> EvaluationResult:
    """Evaluate explanation methods with explanation-quality metrics over a data set (evaluation.md).

    Args:
        model: a supported ViT (in eval mode, on its device) or a model spec for :func:`xvit.load_model`.
        data: an :class:`EvalDataset` or a data spec for :func:`xvit.evaluate.datasets.load_dataset`.
        methods: method names (see :func:`xvit.methods`).
        metrics: any of ``perturbation`` (positive and negative), ``deletion_insertion`` (both),
            ``segmentation``, ``pointing_game``, ``energy_pointing_game``, ``class_sensitivity`` (pair data
            only), ``marker_share`` (xvit-shapes ``spurious`` data only, e.g.
            ``xvit-shapes:spurious:test:200:marker=random``; not in the default set), ``randomization``
            (cascading MPRT on the first ``randomization_images`` images), ``conservation`` (methods whose
            output carries conserved relevance) and ``cost`` (time per image and peak memory of each method
            in this run).
        out_dir: write outputs and resumable state here; ``None`` keeps everything in memory.
        batch_size: images per explanation call (and per saved chunk).
        class_explained: ``"predicted"`` or ``"target"`` (the ground-truth label; for two-object images the
            labelled class the model scores higher).
        seed: seeds every chunk's explanation (``torch.manual_seed(seed)``) and the randomisation test.
        method_params: ``{method: {param: value}}``.
        metric_params: ``{metric: {param: value}}``, e.g. ``{"pointing_game": {"tol": 5}}``.
        steps: deletion/insertion steps ``n`` (``None``: the preset's default pixels per step).
        forward_batch_size: perturbed images per forward pass in the perturbation metrics.
        randomization_images: images of the randomisation test (the first ones).
        max_images: evaluate only the first images of ``data``.
        resume: reuse finished chunks saved in ``out_dir/state`` by an earlier run with the same settings.
        progress: show a tqdm progress bar on stderr.
        command: the command line to record in the provenance.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: unknown method or metric, invalid parameter, unusable data (``DataSpecError``).
    """
    plan = _prepare(model, data, methods, metrics, batch_size=batch_size, class_explained=class_explained,
                    seed=seed, method_params=method_params, metric_params=metric_params, steps=steps,
                    forward_batch_size=forward_batch_size, randomization_images=randomization_images,
                    max_images=max_images)
    return _execute(plan, None if out_dir is None else Path(out_dir), resume=resume, progress=progress,
                    command=command)


def _prepare(model: nn.Module | str, data: EvalDataset | str, methods: Sequence[str], metrics: Sequence[str], *,
             batch_size: int, class_explained: str, seed: int, method_params: Mapping[str, Mapping[str, Any]] | None,
             metric_params: Mapping[str, Mapping[str, Any]] | None, steps: int | None, forward_batch_size: int,
             randomization_images: int, max_images: int | None, model_spec: str | None = None) -> _Plan:
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
            raise ValueError(f"unknown method {name!r}.{_did_you_mean(name, registry)} See xvit.methods() "
                             "('xvit methods') for the list.")
    for name in metrics:
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}.{_did_you_mean(name, METRIC_NAMES)} Choose from "
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
        fixed = _RUNNER_PARAMS.get(name, set()) & set(params)
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
    columns: list[_Column] = []
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
        for col in _columns(metric):
            columns.append(col)
            if reason is not None:
                skipped[col.name] = reason
        if reason is not None:
            notes.append(f"{metric}: skipped, {reason}.")

    # One probe forward: checks that the model takes the data and gives the number of classes.
    probe = dataset.load([0], prep)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(logits_of(model, probe.x.to(device)).shape[-1])
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
    plan = _Plan(model=model, model_info={"spec": spec}, data=dataset, prep=prep, device=device, methods=resolved,
                 method_args=method_params, columns=columns, metric_params=metric_params, skipped=skipped,
                 notes=notes, label_map=label_map, num_classes=num_classes, options=options)
    for col in columns:  # validate metric parameters now, not after the first chunk
        if col.name not in skipped:
            try:
                _make_metric(plan, col, methods[0])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{col.metric}: {e}") from None
    plan.model_info = _model_info(model, spec)
    return plan


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


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


def _model_info(model: nn.Module, spec: str | None) -> dict[str, Any]:
    """Spec, weight-file hashes (bundled or directory checkpoints) and a hash of the state dict."""
    from xvit.models import bundled_model_dir, bundled_models, preprocessing_for

    info: dict[str, Any] = {"spec": spec, "class": f"{type(model).__module__}.{type(model).__qualname__}",
                            "preprocessing": preprocessing_for(model).to_dict()}
    folder = None
    if spec is not None:
        if spec in bundled_models():
            folder = bundled_model_dir(spec)
        elif Path(spec).is_dir():
            folder = Path(spec)
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
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


# -------------------------------------------------------------------------------------------- metrics


def _explain_fn(method: str, params: Mapping[str, Any]) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """``explain_fn`` of the randomisation test: the raw (signed) map upsampled to the input, as Spearman
    on ``|a|`` needs the sign-free magnitude of the raw relevance, not the min-max normalised map."""
    import xvit

    def explain_fn(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        exp = xvit.explain(model, x, method, target=targets[:, None], **params)
        return _upsampled_raw(exp.raw[:, 0], x.shape[-2:])

    return explain_fn


def _upsampled_raw(raw: Tensor, size: Sequence[int]) -> Tensor:
    raw = raw.float()
    if tuple(raw.shape[-2:]) == tuple(size):
        return raw
    return F.interpolate(raw[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _make_metric(plan: _Plan, col: _Column, method: str) -> Any:
    params = {**col.fixed, **plan.metric_params.get(col.metric, {})}
    if col.metric == "perturbation":
        params = {"mean": tuple(plan.prep.mean), "std": tuple(plan.prep.std),
                  "batch_size": plan.options["forward_batch_size"], **params}
    elif col.metric == "deletion_insertion":
        params = {"batch_size": plan.options["forward_batch_size"], "mean": tuple(plan.prep.mean),
                  "std": tuple(plan.prep.std), **params}
        steps = plan.options["deletion_insertion_steps"]
        if steps is not None and "pixels_per_step" not in params and "steps" not in params:
            params["steps"] = steps
    elif col.metric == "randomization":
        params = {"seed": plan.options["seed"], **params,
                  "explain_fn": _explain_fn(method, plan.methods.get(method, {}))}
    elif col.metric in ("conservation", "cost"):
        return None  # computed by the runner from the explanations
    return get_metric(col.metric)(**params)


def _snapshot(metric: Any) -> dict[str, Any]:
    """A metric's accumulated state: its underscore attributes (``_state`` lists of per-batch pieces,
    counters such as ``_forward_passes``, layout such as ``_curve_x``), parameters excluded."""
    return {k: v for k, v in vars(metric).items() if k.startswith("_") and k != "_params"}


def _restore(metric: Any, snapshots: Sequence[dict[str, Any]]) -> None:
    """Merge chunk snapshots into a fresh metric: lists of pieces are concatenated in chunk order, integer
    counters add up, and layout fields (``None`` after ``reset``) take the first chunk's value. ``compute()``
    then sees what one metric updated with every chunk would (the batch-accumulation property of every
    metric, tests/evaluate/test_accumulation.py)."""
    for snap in snapshots:
        for key, value in snap.items():
            current = getattr(metric, key)
            if isinstance(value, dict):
                for name, parts in value.items():
                    current.setdefault(name, []).extend(parts)
            elif isinstance(value, int) and not isinstance(value, bool):
                setattr(metric, key, current + value)
            elif current is None:
                setattr(metric, key, value)


# ------------------------------------------------------------------------------------------------- run


def _execute(plan: _Plan, out_dir: Path | None, *, resume: bool, progress: bool, command: str | None
             ) -> EvaluationResult:
    n = len(plan.data)
    bs = plan.options["batch_size"]
    chunks = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    methods = list(plan.methods)
    for m in methods:
        plan.fingerprints[m] = _fingerprint(plan, m)
    state_dir = None if out_dir is None else out_dir / "state"
    units: dict[tuple[str, int], dict[str, Any]] = {}
    reused = 0
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "README.txt").write_text(
            "Finished (method, chunk) results of 'xvit evaluate'. Rerun the same command to resume; delete this "
            "folder to start over.\n")
        if resume:
            for m in methods:
                for start, stop in chunks:
                    unit = _read_state(state_dir, m, start, stop, plan.fingerprints[m], plan.data.ids[start:stop])
                    if unit is not None:
                        units[(m, start)] = unit
                        reused += 1
    todo = [(start, stop) for start, stop in chunks if any((m, start) not in units for m in methods)]
    wall: dict[str, float] = {m: 0.0 for m in methods}
    warmed: set[str] = set()
    bar = _progress_bar(n * len(methods), sum(units[k]["stop"] - units[k]["start"] for k in units), progress)
    try:
        with torch.random.fork_rng(), eval_mode(plan.model):
            for start, stop in todo:
                batch = plan.data.load(range(start, stop), plan.prep)
                clean = _clean_pass(plan, batch)
                for m in methods:
                    if (m, start) in units:
                        continue
                    t0 = time.perf_counter()
                    unit = _run_chunk(plan, m, batch, clean, warm=m not in warmed)
                    warmed.add(m)
                    wall[m] += time.perf_counter() - t0
                    units[(m, start)] = unit
                    if state_dir is not None:
                        _write_state(state_dir, unit)
                    bar.set_postfix_str(m, refresh=False)
                    bar.update(stop - start)
    finally:
        bar.close()
    return _finish(plan, out_dir, chunks, units, wall, reused, command)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the Python API
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="img", desc="evaluate", file=sys.stderr, dynamic_ncols=True)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def _fingerprint(plan: _Plan, method: str) -> str:
    """Everything a (method, chunk) result depends on; a saved chunk is reused only on an exact match."""
    import xvit

    # Image ids are checked per chunk (_read_state), so a run over more images of the same data reuses chunks.
    key = {"state_version": STATE_VERSION, "xvit": xvit.__version__, "model": plan.model_info["state_dict_sha256"],
           "data": _data_key(plan.data),
           "preprocessing": plan.prep.to_dict(), "method": method, "method_params": plan.methods[method],
           "columns": [c.name for c in plan.columns], "skipped": plan.skipped, "metric_params": plan.metric_params,
           **{k: v for k, v in plan.options.items() if k not in ("forward_batch_size", "max_images")}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()


def _data_key(data: EvalDataset) -> Any:
    """The data part of a fingerprint: for xvit-shapes variant, split and marker policy (not N), else the spec."""
    if not data.spec.startswith("xvit-shapes"):
        return data.spec
    key = data.spec.split(":")[:3]
    return key + [f"marker={data.info['marker']}"] if "marker" in data.info else key


def _state_path(state_dir: Path, method: str, start: int, stop: int) -> Path:
    return state_dir / method / f"{start:07d}-{stop:07d}.pt"


def _read_state(state_dir: Path, method: str, start: int, stop: int, fingerprint: str, ids: list[str]
                ) -> dict[str, Any] | None:
    path = _state_path(state_dir, method, start, stop)
    if not path.is_file():
        return None
    try:
        unit = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a half-written or foreign file: recompute that chunk
        return None
    ok = isinstance(unit, dict) and unit.get("fingerprint") == fingerprint and unit.get("ids") == ids
    return unit if ok else None


def _write_state(state_dir: Path, unit: dict[str, Any]) -> None:
    path = _state_path(state_dir, unit["method"], unit["start"], unit["stop"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(unit, tmp)
    os.replace(tmp, path)  # atomic: an interruption leaves either the old state or the new one


def _timed(plan: _Plan, fn: Callable[[], None], n_images: int) -> Cost:
    """One call of ``fn``: timed and memory-sampled by :func:`measure_cost` when ``cost`` is evaluated, else
    just timed (no sampling thread)."""
    if any(c.metric == "cost" and c.name not in plan.skipped for c in plan.columns):
        return measure_cost(fn, n_images, device=plan.device, warmup=0, repeats=1)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return Cost(seconds, seconds / n_images, None, "not measured", str(plan.device))


def _clean_pass(plan: _Plan, batch: Any) -> dict[str, Any]:
    """The clean forward pass of a chunk (timed: the cost reference), labels and explained classes."""
    x = batch.x.to(plan.device)
    out: list[Tensor] = []

    def forward() -> None:
        with torch.no_grad():
            out[:] = [logits_of(plan.model, x).float()]

    cost = _timed(plan, forward, x.shape[0])
    logits = out[0]
    predicted = logits.argmax(1)
    labels = None if batch.labels is None else batch.labels.to(plan.device)
    if labels is not None and plan.label_map is not None:
        labels = plan.label_map.to(plan.device)[labels]
    label = None
    if labels is not None:
        # Two-object images: the labelled class the model scores higher stands for the ground truth.
        label = labels if labels.ndim == 1 else labels.gather(1, logits.gather(1, labels).argmax(1, keepdim=True))[:, 0]
    explained = label if plan.options["class_explained"] == "target" else predicted
    masks = None if batch.masks is None else batch.masks.to(plan.device)
    mask, foreground = masks, masks
    if masks is not None and masks.ndim == 4:  # pair data: the explained class's mask, empty if not labelled
        hit = labels == explained[:, None]
        mask = (masks & hit[:, :, None, None]).any(1)
        foreground = masks.any(1)
    markers = None if batch.marker_masks is None else batch.marker_masks.to(plan.device)
    return {"x": x, "logits": logits, "predicted": predicted, "labels": labels, "label": label,
            "explained": explained, "masks": masks, "mask": mask, "foreground": foreground, "markers": markers,
            "ids": batch.ids, "indices": batch.indices, "forward_cost": cost}


def _run_chunk(plan: _Plan, method: str, batch: Any, clean: dict[str, Any], warm: bool) -> dict[str, Any]:
    """Explain one chunk with one method and update every applicable metric; returns the saved unit."""
    import xvit

    x, explained = clean["x"], clean["explained"]
    columns = [c for c in plan.columns if c.name not in plan.skipped]
    seconds: dict[str, float] = {}
    unit: dict[str, Any] = {"fingerprint": plan.fingerprints[method], "method": method, "start": batch.indices[0],
                            "stop": batch.indices[-1] + 1, "ids": list(batch.ids), "metrics": {}}
    torch.manual_seed(plan.options["seed"])
    with xvit.Explainer(plan.model, method, **plan.method_args.get(method, {})) as explainer:
        if warm and any(c.metric == "cost" for c in columns):
            explainer(x[:1], target=explained[:1, None])  # unmeasured warm-up (lazy initialisation)
            torch.manual_seed(plan.options["seed"])
        result: list[Any] = []

        def run() -> None:
            result[:] = [explainer(x, target=explained[:, None])]

        cost = _timed(plan, run, x.shape[0])
        exp = result[0]
        seconds["explain"] = cost.seconds
        pair_exp = None
        if any(c.metric == "class_sensitivity" for c in columns):
            t0 = time.perf_counter()
            pair_exp = explainer(x, target=clean["labels"])
            seconds["explain_pair"] = time.perf_counter() - t0
    maps = exp.maps[:, 0].float()
    forward_cost = clean["forward_cost"]
    unit["cost"] = {"seconds": cost.seconds, "peak_memory_bytes": cost.peak_memory_bytes,
                    "memory_kind": cost.memory_kind, "forward_seconds": forward_cost.seconds,
                    "forward_peak_memory_bytes": forward_cost.peak_memory_bytes}
    unit["per_image"] = {"predicted": clean["predicted"].cpu(), "explained": explained.cpu(),
                         "probability": clean["logits"].softmax(1).gather(1, explained[:, None])[:, 0].cpu(),
                         "labels": None if clean["labels"] is None else clean["labels"].cpu()}
    labels = clean["label"] if clean["label"] is not None else clean["predicted"]
    r_images = plan.options["randomization_images"]
    for col in columns:
        if col.metric == "cost":
            continue
        t0 = time.perf_counter()
        indices = list(batch.indices)
        if col.metric == "conservation":
            scores, quantity = _conservation(method, exp)
            unit["conservation"] = None if scores is None else {"scores": scores.cpu(), "quantity": quantity}
            seconds[col.name] = time.perf_counter() - t0
            continue
        metric = _make_metric(plan, col, method)
        if col.metric == "perturbation":
            metric.update(plan.model, x, maps, labels, explained)
        elif col.metric == "deletion_insertion":
            metric.update(plan.model, x, maps, explained)
        elif col.metric == "segmentation":
            metric.update(maps, clean["foreground"])
        elif col.metric == "pointing_game":
            metric.update(maps, clean["mask"], explained)
        elif col.metric == "energy_pointing_game":
            metric.update(energy_maps(exp, "abs")[:, 0], clean["mask"])
        elif col.metric == "marker_share":
            metric.update(energy_maps(exp, "abs")[:, 0], clean["markers"], explained)
        elif col.metric == "class_sensitivity":
            m2 = energy_maps(pair_exp, "positive")
            metric.update(m2[:, 0], m2[:, 1], clean["masks"][:, 0], clean["masks"][:, 1])
        elif col.metric == "randomization":
            keep = [i for i, g in enumerate(indices) if g < r_images]
            if not keep:
                continue
            indices = [indices[i] for i in keep]
            metric.update(plan.model, x[keep], explained[keep])
        unit["metrics"][col.name] = {"indices": indices, "state": _to_cpu(_snapshot(metric))}
        seconds[col.name] = time.perf_counter() - t0
    unit["seconds"] = seconds
    return unit


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def energy_maps(exp: Explanation, part: str) -> Tensor:
    """Maps ``(B, K, H, W)`` for the energy metrics. Min-max normalising a signed map moves zero to a mid
    level, so every region would get energy in proportion to its area; signed methods therefore use
    ``|raw|`` (``part="abs"``, the evaluation spec's energy pointing game) or the positive part of ``raw``
    (``part="positive"``: evidence for the class), upsampled to the input."""
    if not exp.signed:
        return exp.maps.float()
    raw = exp.raw.float()
    raw = raw.abs() if part == "abs" else raw.clamp(min=0)
    size = tuple(exp.maps.shape[-2:])
    if tuple(raw.shape[-2:]) != size:
        B, K = raw.shape[:2]
        raw = F.interpolate(raw.reshape(B * K, 1, *raw.shape[-2:]), size=size, mode="bilinear",
                            align_corners=False).reshape(B, K, *size)
    return raw


def _conservation(method: str, exp: Any) -> tuple[Tensor | None, str | None]:
    """Per-image conservation from what the explanation already holds (no extra forward pass).

    * ``relevance_sum``/``explained_logit`` in ``meta`` (AttnLRP, CP-LRP): ``Σ R / y_c`` (ideal 1).
    * ``completeness_gap`` in ``meta`` (integrated gradients; ``Σ IG − Δ`` with ``Δ = y_c(x) − y_c(x')``):
      the relative gap ``|Σ IG − Δ| / |Δ|`` with ``Δ = Σ raw − gap`` (evaluation.md §6).
    * One-hot-start LRP (full LRP): ``Σ R / 1``.
    """
    meta = exp.meta
    if "relevance_sum" in meta and "explained_logit" in meta:
        return (meta["relevance_sum"][:, 0].double() / meta["explained_logit"][:, 0].double()).float(), "ratio"
    if "completeness_gap" in meta:
        gap = meta["completeness_gap"][:, 0].double()
        delta = exp.raw[:, 0].flatten(1).double().sum(1) - gap
        return (gap.abs() / delta.abs()).float(), "completeness_gap"
    if method in _ONE_HOT_START:
        return exp.raw[:, 0].flatten(1).double().sum(1).float(), "ratio"
    return None, None


# ---------------------------------------------------------------------------------------------- results


def _finish(plan: _Plan, out_dir: Path | None, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
            wall: dict[str, float], reused: int, command: str | None) -> EvaluationResult:
    n = len(plan.data)
    notes = list(plan.notes)
    results: dict[str, dict[str, MetricResult]] = {}
    summary: list[dict[str, Any]] = []
    scores_by: dict[str, dict[str, Tensor]] = {}
    seconds_by: dict[str, dict[str, float]] = {}
    for m in plan.methods:
        parts = [units[(m, start)] for start, _ in chunks]
        results[m], scores_by[m] = {}, {}
        seconds_by[m] = {}
        for part in parts:
            for k, v in part["seconds"].items():
                seconds_by[m][k] = seconds_by[m].get(k, 0.0) + v
        for col in plan.columns:
            if col.name in plan.skipped:
                summary.append(_skipped_row(m, col, plan.skipped[col.name]))
                continue
            res, full = _aggregate(plan, m, col, parts, n)
            if res is None:
                reason = f"not applicable to {m} (its explanations carry no conserved relevance)"
                notes.append(f"conservation: {reason}.")
                summary.append(_skipped_row(m, col, reason))
                continue
            results[m][col.name] = res
            scores_by[m][col.name] = full
            summary.append(_row(m, col, res, seconds_by[m].get(col.name)))
    per_image = _per_image_rows(plan, chunks, units, scores_by)
    provenance = _provenance(plan, chunks, units, wall, reused, command, notes)
    result = EvaluationResult(summary=summary, per_image=per_image, results=results, notes=notes,
                              provenance=provenance, out_dir=out_dir)
    if out_dir is not None:
        _write_outputs(result, plan, out_dir)
    return result


def _aggregate(plan: _Plan, method: str, col: _Column, parts: list[dict[str, Any]], n: int
               ) -> tuple[MetricResult | None, Tensor]:
    """Merge the chunks of one method × column into one result; scores spread to ``(N,)`` (NaN: not scored)."""
    full = torch.full((n,), math.nan)
    if col.metric == "cost":
        secs = torch.cat([torch.full((p["stop"] - p["start"],), p["cost"]["seconds"] / (p["stop"] - p["start"]))
                          for p in parts])
        fwd = sum(p["cost"]["forward_seconds"] for p in parts) / n
        peaks = [p["cost"]["peak_memory_bytes"] for p in parts if p["cost"]["peak_memory_bytes"] is not None]
        stats = summarize(secs)
        details = {"seconds_per_image": stats["mean"], "forward_seconds_per_image": fwd,
                   "relative_to_forward": stats["mean"] / fwd if fwd > 0 else math.nan,
                   "peak_memory_bytes": max(peaks) if peaks else None,
                   "memory_kind": parts[0]["cost"]["memory_kind"], "device": str(plan.device)}
        res = MetricResult(name="cost", value=stats["mean"], scores=secs, mean=stats["mean"],
                           ci95=(stats["low"], stats["high"]), n=stats["n"], higher_is_better=False, summary=details)
        return res, secs
    if col.metric == "conservation":
        got = [p.get("conservation") for p in parts]
        if any(g is None for g in got):
            return None, full
        scores = torch.cat([g["scores"] for g in got])
        quantity = got[0]["quantity"]
        stats = summarize(scores)
        details: dict[str, Any] = {"quantity": quantity}
        if quantity == "completeness_gap":
            details.update(completeness_pass=float((scores <= 0.05).float().mean()), threshold=0.05)
        else:
            details["start"] = "one-hot" if method in _ONE_HOT_START else "logit"
        res = MetricResult(name="conservation", value=stats["mean"], scores=scores, mean=stats["mean"],
                           ci95=(stats["low"], stats["high"]), n=stats["n"],
                           higher_is_better=False if quantity == "completeness_gap" else None, summary=details)
        return res, scores
    metric = _make_metric(plan, col, method)
    present = [p["metrics"][col.name] for p in parts if col.name in p["metrics"]]
    _restore(metric, [p["state"] for p in present])
    res = metric.compute()
    indices = [i for p in present for i in p["indices"]]
    full[torch.tensor(indices, dtype=torch.long)] = res.scores.float()
    return res, full


def _direction(res: MetricResult) -> str:
    if res.name == "conservation" and res.summary.get("quantity") == "ratio":
        return "→1"
    return {True: "↑", False: "↓"}.get(res.higher_is_better, "")


def _row(method: str, col: _Column, res: MetricResult, seconds: float | None) -> dict[str, Any]:
    details = {k: v for k, v in res.summary.items() if k != "units"}
    passes = res.forward_passes / res.n if res.n else 0.0
    unit = "forward"
    if col.metric == "randomization":
        passes = len(res.summary.get("units", [])) + 1  # a_0 and one map per randomised unit, for every image
        unit = "explanations"
        details["units"] = res.summary.get("units")
    elif col.metric in ("perturbation", "deletion_insertion") and res.scores.numel():
        passes = res.forward_passes / res.scores.numel()
    return {"method": method, "metric": col.metric, "column": col.name, "status": "ok",
            "direction": _direction(res), "value": _num(res.value), "mean": _num(res.mean),
            "ci95_low": _num(res.ci95[0]), "ci95_high": _num(res.ci95[1]), "n": res.n,
            "passes_per_image": passes, "passes_unit": unit if passes else None,
            "seconds": seconds, "details": _jsonable(details), "note": None}


def _skipped_row(method: str, col: _Column, reason: str) -> dict[str, Any]:
    return {"method": method, "metric": col.metric, "column": col.name, "status": "skipped", "direction": None,
            "value": None, "mean": None, "ci95_low": None, "ci95_high": None, "n": 0, "passes_per_image": None,
            "passes_unit": None, "seconds": None, "details": {}, "note": reason}


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _per_image_rows(plan: _Plan, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
                    scores_by: dict[str, dict[str, Tensor]]) -> list[dict[str, Any]]:
    rows = []
    for m in plan.methods:
        info = {k: [] for k in ("predicted", "explained", "probability", "labels")}
        for start, _ in chunks:
            pi = units[(m, start)]["per_image"]
            for k in info:
                info[k].append(pi[k])
        cat = {k: None if v[0] is None else torch.cat(v) for k, v in info.items()}
        for i, image_id in enumerate(plan.data.ids):
            label = cat["labels"]
            row = {"method": m, "index": i, "image_id": image_id,
                   "label": None if label is None else (";".join(map(str, label[i].tolist())) if label.ndim == 2
                                                        else int(label[i])),
                   "predicted": int(cat["predicted"][i]), "explained": int(cat["explained"][i]),
                   "probability": float(cat["probability"][i])}
            for col in plan.columns:
                s = scores_by[m].get(col.name)
                name = "cost_seconds" if col.metric == "cost" else col.name
                row[name] = None if s is None or not math.isfinite(float(s[i])) else float(s[i])
            rows.append(row)
    return rows


def _versions() -> dict[str, str | None]:
    import numpy

    import xvit

    out = {"xvit": xvit.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
           "python": platform.python_version()}
    for name in ("timm", "transformers", "h5py"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", None)
    return out


def _provenance(plan: _Plan, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
                wall: dict[str, float], reused: int, command: str | None, notes: list[str]) -> dict[str, Any]:
    compute = {m: sum(sum(units[(m, s)]["seconds"].values()) for s, _ in chunks) for m in plan.methods}
    return _jsonable({
        "command": command if command is not None else shlex.join(sys.argv),
        "versions": _versions(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "device": str(plan.device),
        "seeds": {"explanations": plan.options["seed"], "randomization": plan.metric_params.get(
            "randomization", {}).get("seed", plan.options["seed"]), "data": plan.data.info.get("base_seed")},
        "model": plan.model_info, "data": {**plan.data.describe(), "image_ids": plan.data.ids},
        "options": plan.options, "methods": plan.methods,
        "metrics": {c.name: {"metric": c.metric, **c.fixed, **plan.metric_params.get(c.metric, {})}
                    for c in plan.columns},
        "skipped": plan.skipped,
        "wall_clock_seconds": {m: {"this_run": wall[m], "all_chunks": compute[m]} for m in plan.methods},
        "chunks": {"total": len(chunks) * len(plan.methods), "reused": reused},
        "notes": notes,
        "conventions": {"maps": "Explanation.maps (bilinear upsampling, min-max per image) for ranking and "
                                "localisation metrics, except for signed methods in the energy metrics: |raw| "
                                "for energy_pointing_game and marker_share, the positive part of raw for "
                                "class_sensitivity; raw maps for randomisation and conservation",
                        "cost": "wall-clock of the run's own explanation call per chunk (one warm-up call per "
                                "method first), peak memory as measured by xvit.evaluate.measure_cost"},
    })


# ---------------------------------------------------------------------------------------------- outputs


def _write_outputs(result: EvaluationResult, plan: _Plan, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(result.per_image, out_dir / "per_image.csv")
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        pass
    else:
        keys = list(result.per_image[0])
        table = pyarrow.Table.from_pydict({k: [r[k] for r in result.per_image] for k in keys})
        pyarrow.parquet.write_table(table, out_dir / "per_image.parquet")
    curves = _curves(result)
    (out_dir / "summary.json").write_text(json.dumps(_jsonable(
        {"rows": result.summary, "curves": curves, "notes": result.notes,
         "model": plan.model_info.get("spec"), "data": plan.data.spec, "n_images": len(plan.data),
         "class_explained": plan.options["class_explained"]}), indent=1, ensure_ascii=False) + "\n")
    (out_dir / "summary.md").write_text(result.to_markdown())
    _plot_curves(curves, out_dir / "curves")
    (out_dir / "provenance.json").write_text(json.dumps(result.provenance, indent=1, ensure_ascii=False) + "\n")


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _curves(result: EvaluationResult) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean curve per column × method (NaN-aware), for the plots and ``summary.json``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, cols in result.results.items():
        for name, res in cols.items():
            if res.curves is None or res.curve_x is None or res.curves.numel() == 0:
                continue
            y = res.curves.double().nanmean(0)
            entry = {"x": res.curve_x.tolist(), "y": y.tolist(), "n": int(res.curves.shape[0])}
            if name == "randomization":
                entry["labels"] = list(res.summary.get("units", []))
            out.setdefault(name, {})[method] = entry
    return out


_PLOTS = {
    "perturbation": (("perturbation_pos", "perturbation_neg"), "fraction of pixels removed", "top-1 accuracy"),
    "deletion_insertion": (("deletion", "insertion"), "fraction of pixels changed", "probability of the class"),
    "randomization": (("randomization",), "units randomised (output → input)", "Spearman similarity of |map|"),
}


def _plot_curves(curves: dict[str, dict[str, dict[str, Any]]], folder: Path) -> None:
    from matplotlib.figure import Figure

    from xvit.viz import save_grid

    for name, (cols, xlabel, ylabel) in _PLOTS.items():
        present = [c for c in cols if c in curves]
        if not present:
            continue
        fig = Figure(figsize=(5 * len(present), 3.8), layout="constrained")
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        for ax, col in zip(axes, present, strict=True):
            for method, c in curves[col].items():
                ax.plot(c["x"], c["y"], marker="o", markersize=3, label=method)
                if "labels" in c:
                    ax.set_xticks(c["x"], c["labels"], rotation=60, fontsize=7)
            ax.set_title(col)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save_grid(fig, folder / f"{name}.png")


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 10 else f"{v:.3f}" if a >= 0.01 or a == 0 else f"{v:.2e}"


def _cell(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return "n/a"
    if row["metric"] == "cost":
        return f"{1000 * row['mean']:.3g} ms/img" if row["mean"] is not None else "–"
    mean, low, high = row["mean"], row["ci95_low"], row["ci95_high"]
    text = _fmt(mean) if low is None or high is None else f"{_fmt(mean)} ± {_fmt((high - low) / 2)}"
    if row["metric"] == "conservation":
        text += " (Σ R / R_out, →1)" if row["details"].get("quantity") == "ratio" else " (IG gap, ↓)"
    return text


def _markdown(summary: list[dict[str, Any]], notes: list[str], provenance: dict[str, Any]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cols = list(dict.fromkeys(r["column"] for r in summary))
    by = {(r["method"], r["column"]): r for r in summary}

    def header(col: str) -> str:
        dirs = {by[(m, col)]["direction"] for m in methods if by[(m, col)]["direction"]}
        return f"{col} {'/'.join(sorted(dirs))}".strip()

    data = provenance.get("data", {})
    model = provenance.get("model", {})
    opts = provenance.get("options", {})
    lines = ["# xvit evaluate", "",
             f"Model `{model.get('spec') or model.get('class')}`, data `{data.get('spec')}` ({data.get('n')} images), "
             f"class explained: {opts.get('class_explained')}, seed {opts.get('seed')}, device "
             f"{provenance.get('device')}.", "",
             "Mean ± half-width of the 95 % interval over images; ↑ higher is better, ↓ lower is better, "
             "→1 ideal value 1.", "",
             "| method | " + " | ".join(header(c) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(by[(m, c)]) for c in cols) + " |")
    extra_keys = {"perturbation_pos": ("clean_accuracy", "auc_target"), "perturbation_neg": ("auc_target",),
                  "segmentation": ("pixel_accuracy", "miou", "map"), "pointing_game": ("class_mean", "excluded"),
                  "marker_share": ("chance", "lift", "shortcut_share", "shortcut_n"),
                  "conservation": ("completeness_pass",),
                  "cost": ("relative_to_forward", "peak_memory_bytes")}
    extras = []
    for m in methods:
        for c in cols:
            r = by[(m, c)]
            for k in extra_keys.get(c, ()):
                v = r["details"].get(k) if r["status"] == "ok" else None
                if v is not None:
                    shown = f"{v / 2**20:.1f} MiB" if k == "peak_memory_bytes" else _fmt(v) if isinstance(
                        v, float) else str(v)
                    extras.append(f"| {m} | {c} | {k} | {shown} |")
    if extras:
        lines += ["", "## Dataset-level numbers", "", "| method | column | quantity | value |", "|---|---|---|---|",
                  *extras]
    cost_cols = [c for c in cols if any(by[(m, c)]["passes_per_image"] for m in methods)]
    if cost_cols:
        lines += ["", "## Cost of each evaluation", "",
                  "Model passes per image on top of the explanation: forward passes (× plain forward over the same "
                  "images) or explanation calls (randomisation), and wall-clock seconds in this run.", "",
                  "| method | " + " | ".join(cost_cols) + " |", "|---|" + "---|" * len(cost_cols)]
        for m in methods:
            cells = []
            for c in cost_cols:
                r = by[(m, c)]
                if r["status"] != "ok":
                    cells.append("n/a")
                    continue
                unit = "expl." if r["passes_unit"] == "explanations" else "×F"
                secs = f", {r['seconds']:.2g} s" if r["seconds"] is not None else ""
                cells.append(f"{r['passes_per_image']:.3g} {unit}{secs}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    skipped = [r for r in summary if r["status"] != "ok"]
    if notes or skipped:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in dict.fromkeys(notes)]
    lines += ["", "Per-image scores: `per_image.csv`; curves: `curves/`; provenance: `provenance.json`.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- CLI


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``xvit evaluate`` options to ``parser``."""
    from xvit.cli import _positive_int
    parser.description = ("Run explanation methods x quality metrics over a data set; write per-image scores, a "
                          "summary (Markdown, JSON), curve plots and provenance to --out. Rerunning the same "
                          "command resumes an interrupted run.")
    parser.add_argument("--model", default="shapes-vit-tiny",
                        help="bundled model name, checkpoint DIR, timm:NAME or hf:ID (default: shapes-vit-tiny)")
    parser.add_argument("--data", required=True,
                        help="xvit-shapes:<variant>:<split>[:N][:marker=MODE] (e.g. xvit-shapes:single:test:200 or "
                             "xvit-shapes:spurious:test:200:marker=random), an image folder with masks/ and "
                             "manifest.json, or gtsegs_ijcv.mat")
    parser.add_argument("--methods", "--method", dest="methods", nargs="+", metavar="M", default=list(DEFAULT_METHODS),
                        help=f"methods to evaluate (default: {' '.join(DEFAULT_METHODS)}; see 'xvit methods')")
    parser.add_argument("--metrics", "--metric", dest="metrics", nargs="+", metavar="NAME",
                        default=list(DEFAULT_METRICS),
                        help=f"metrics (default: all but marker_share, the audit of xvit-shapes spurious data): "
                             f"{', '.join(METRIC_NAMES)}")
    parser.add_argument("--out", type=Path, default=Path("out/evaluate"), help="output folder (default: out/evaluate)")
    parser.add_argument("--batch-size", type=_positive_int, default=16,
                        help="images per explanation call and per saved chunk (default: 16)")
    parser.add_argument("--forward-batch-size", type=_positive_int, default=128,
                        help="perturbed images per forward pass in perturbation metrics (default: 128)")
    parser.add_argument("--class-explained", choices=["predicted", "target"], default="predicted",
                        help="explain the predicted class (default) or the ground-truth label")
    parser.add_argument("--seed", type=int, default=0, help="seed of explanations and randomisation (default: 0)")
    parser.add_argument("--steps", type=_positive_int, default=56,
                        help="deletion/insertion steps (default: 56; 224 pixels per step at 112x112)")
    parser.add_argument("--randomization-images", type=_positive_int, default=16,
                        help="images of the randomisation test, the first ones (default: 16)")
    parser.add_argument("--max-images", type=_positive_int, default=None, help="evaluate only the first N images")
    parser.add_argument("--method-param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method parameter, e.g. integrated_gradients.n_steps=16 (repeatable)")
    parser.add_argument("--metric-param", action="append", default=[], metavar="METRIC.KEY=VALUE",
                        help="a metric parameter, e.g. pointing_game.tol=5 or deletion_insertion.preset=tis "
                             "(repeatable)")
    parser.add_argument("--restart", action="store_true", help="ignore saved state in --out and start over")
    parser.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _parse_value(text: str) -> Any:
    """``5`` → int, ``0.5`` → float, ``(0.1, 0.2)`` → tuple, ``true``/``none`` → bool/None, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_params(items: Sequence[str], kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        owner, dot, key = target.partition(".")
        if not sep or not dot or not owner or not key:
            raise ValueError(f"--{kind}-param expects {kind.upper()}.KEY=VALUE, e.g. "
                             f"{'rollout.head_fusion=max' if kind == 'method' else 'pointing_game.tol=5'}; "
                             f"got {item!r}.")
        out.setdefault(owner, {})[key] = _parse_value(value)
    return out


def _command(args: argparse.Namespace) -> str:
    parts = ["xvit", "evaluate", "--model", args.model, "--data", args.data, "--methods", *args.methods,
             "--metrics", *args.metrics, "--out", str(args.out), "--batch-size", str(args.batch_size),
             "--class-explained", args.class_explained, "--seed", str(args.seed), "--steps", str(args.steps),
             "--randomization-images", str(args.randomization_images),
             "--forward-batch-size", str(args.forward_batch_size), "--device", args.device]
    if args.max_images is not None:
        parts += ["--max-images", str(args.max_images)]
    for p in args.method_param:
        parts += ["--method-param", p]
    for p in args.metric_param:
        parts += ["--metric-param", p]
    return shlex.join(parts)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run :func:`evaluate` from parsed ``add_evaluate_arguments`` options; returns an exit status."""
    from xvit.cli import UsageError, _device, _load_model

    device = _device(args.device)
    try:
        method_params = _parse_params(args.method_param, "method")
        metric_params = _parse_params(args.metric_param, "metric")
        if any(name not in METRIC_NAMES for name in args.metrics):  # before loading the model
            bad = next(name for name in args.metrics if name not in METRIC_NAMES)
            raise ValueError(f"unknown metric {bad!r}.{_did_you_mean(bad, METRIC_NAMES)} Choose from "
                             f"{', '.join(METRIC_NAMES)}.")
        model = _load_model(args.model).to(device)
        plan = _prepare(model, args.data, args.methods, args.metrics, batch_size=args.batch_size,
                        class_explained=args.class_explained, seed=args.seed, method_params=method_params,
                        metric_params=metric_params, steps=args.steps, forward_batch_size=args.forward_batch_size,
                        randomization_images=args.randomization_images, max_images=args.max_images,
                        model_spec=args.model)
    except ImportError as e:
        raise UsageError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    try:
        result = _execute(plan, args.out, resume=not args.restart, progress=args.progress, command=_command(args))
    except KeyboardInterrupt:
        print(f"xvit evaluate: finished chunks are saved in {args.out / 'state'}; rerun the same command to "
              "resume.", file=sys.stderr)
        raise
    print(result.to_markdown().split("\n## ")[0].rstrip())
    for note in dict.fromkeys(result.notes):
        print(f"note: {note}", file=sys.stderr)
    print(f"Wrote per_image.csv, summary.md, summary.json, curves/ and provenance.json to {args.out}")
    return 0
