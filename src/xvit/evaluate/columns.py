"""The reported columns: which metric each one runs, the maps it is fed, and chunk-wise scoring and merging.

A :class:`Column` is one reported quantity (``perturbation`` gives two, ``perturbation_pos`` and
``perturbation_neg``). For every chunk of images, :func:`clean_pass` runs the clean forward pass once and
:func:`run_chunk` explains the chunk with one method and updates a fresh metric per column, keeping each
metric's :meth:`~xvit.evaluate.Metric.state_dict`: that is the *unit* saved for resuming
(:mod:`xvit.evaluate.state`). :func:`aggregate` merges the units of one method × column into one
:class:`~xvit.evaluate.MetricResult`. ``conservation`` and ``cost`` are computed here from the explanations
and the timings rather than by a metric object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from xvit.evaluate.base import Metric, MetricResult, get_metric, summarize
from xvit.evaluate.cost import Cost, measure_cost
from xvit.result import Explanation
from xvit.utils.logits import unwrap_logits
from xvit.utils.maps import upsample_maps

if TYPE_CHECKING:
    from xvit.evaluate.datasets import EvalBatch
    from xvit.evaluate.plan import Plan

__all__ = ["RUNNER_PARAMS", "Column", "aggregate", "clean_pass", "columns_for", "energy_maps", "make_metric",
           "run_chunk"]

# Parameters the runner sets itself, per metric.
RUNNER_PARAMS = {"perturbation": {"mode"}, "deletion_insertion": {"mode"}, "randomization": {"explain_fn"}}
# Methods whose raw map is LRP relevance started from a one-hot output (R_out = 1, evaluation.md §6).
_ONE_HOT_START = frozenset({"full_lrp"})


@dataclass(frozen=True)
class Column:
    """One reported quantity: a metric (registry name) run with fixed extra parameters."""

    name: str
    metric: str
    fixed: dict[str, Any] = field(default_factory=dict)


def columns_for(metric: str) -> list[Column]:
    """The columns of one metric name: both modes of ``perturbation`` and ``deletion_insertion``, else one."""
    if metric == "perturbation":
        return [Column("perturbation_pos", metric, {"mode": "positive"}),
                Column("perturbation_neg", metric, {"mode": "negative"})]
    if metric == "deletion_insertion":
        return [Column("deletion", metric, {"mode": "deletion"}), Column("insertion", metric, {"mode": "insertion"})]
    return [Column(metric, metric)]


# ------------------------------------------------------------------------------------------ metric objects


def make_metric(plan: Plan, col: Column, method: str) -> Metric | None:
    """A fresh metric for ``col`` with the run's parameters; ``None`` for ``conservation`` and ``cost``."""
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
        return None  # computed from the explanations and timings (run_chunk, aggregate)
    return get_metric(col.metric)(**params)


def _explain_fn(method: str, params: Mapping[str, Any]) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """``explain_fn`` of the randomisation test: the raw (signed) map upsampled to the input, as Spearman
    on ``|a|`` needs the sign-free magnitude of the raw relevance, not the min-max normalised map."""
    import xvit

    def explain_fn(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        exp = xvit.explain(model, x, method, target=targets[:, None], **params)
        return upsample_maps(exp.raw[:, 0].float(), tuple(x.shape[-2:]))

    return explain_fn


def energy_maps(exp: Explanation, part: str) -> Tensor:
    """Maps ``(B, K, H, W)`` for the energy metrics. Min-max normalising a signed map moves zero to a mid
    level, so every region would get energy in proportion to its area; signed methods therefore use
    ``|raw|`` (``part="abs"``, the evaluation spec's energy pointing game) or the positive part of ``raw``
    (``part="positive"``: evidence for the class), upsampled to the input."""
    if not exp.signed:
        return exp.maps.float()
    raw = exp.raw.float()
    raw = raw.abs() if part == "abs" else raw.clamp(min=0)
    return upsample_maps(raw, tuple(exp.maps.shape[-2:]))


def _conservation(method: str, exp: Explanation) -> tuple[Tensor | None, str | None]:
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


# ------------------------------------------------------------------------------------------------ chunks


def _timed(plan: Plan, fn: Callable[[], None], n_images: int) -> Cost:
    """One call of ``fn``: timed and memory-sampled by :func:`measure_cost` when ``cost`` is evaluated, else
    just timed (no sampling thread)."""
    if any(c.metric == "cost" and c.name not in plan.skipped for c in plan.columns):
        return measure_cost(fn, n_images, device=plan.device, warmup=0, repeats=1)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return Cost(seconds, seconds / n_images, None, "not measured", str(plan.device))


def clean_pass(plan: Plan, batch: EvalBatch) -> dict[str, Any]:
    """The clean forward pass of a chunk (timed: the cost reference), labels and explained classes."""
    x = batch.x.to(plan.device)
    out: list[Tensor] = []

    def forward() -> None:
        with torch.no_grad():
            out[:] = [unwrap_logits(plan.model(x)).float()]

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


def run_chunk(plan: Plan, method: str, batch: EvalBatch, clean: dict[str, Any], warm: bool) -> dict[str, Any]:
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
        metric = make_metric(plan, col, method)
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
        unit["metrics"][col.name] = {"indices": indices, "state": _to_cpu(metric.state_dict())}
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


# ------------------------------------------------------------------------------------------------ merging


def aggregate(plan: Plan, method: str, col: Column, parts: list[dict[str, Any]], n: int
              ) -> tuple[MetricResult | None, Tensor]:
    """Merge the chunks of one method × column into one result; scores spread to ``(N,)`` (NaN: not scored).

    The result is ``None`` where the method's explanations carry no conserved relevance (``conservation``).
    """
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
    metric = make_metric(plan, col, method)
    present = [p["metrics"][col.name] for p in parts if col.name in p["metrics"]]
    for p in present:  # chunk order: compute() sees what one metric updated with every chunk would
        metric.merge_state(p["state"])
    res = metric.compute()
    indices = [i for p in present for i in p["indices"]]
    full[torch.tensor(indices, dtype=torch.long)] = res.scores.float()
    return res, full
