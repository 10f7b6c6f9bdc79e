"""Chunk-wise scoring and merging of an evaluation run.

For every chunk of images, :func:`clean_pass` runs the clean forward pass once and :func:`run_chunk` explains the
chunk with one method, builds one :class:`~xvit.evaluate.inputs.MetricInput` and updates a fresh metric per
column with it, keeping each metric's :meth:`~xvit.evaluate.Metric.state_dict`: that is the *unit* saved for
resuming (:mod:`xvit.evaluate.state`). :func:`aggregate` merges the units of one method × column into one
:class:`~xvit.evaluate.MetricResult`. :class:`ChunkWorker` computes every pending unit of one chunk; the engines
of :mod:`xvit.evaluate.engines` run it in this process or on Ray actors that open it from the run's spec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from xvit.data.sources import EvalBatch
from xvit.evaluate.base import Column, Metric, MetricResult, NotApplicable
from xvit.evaluate.cost import measure_cost
from xvit.evaluate.inputs import MetricInput, Timing
from xvit.evaluate.plan import Plan, prepare
from xvit.evaluate.spec import RunSpec
from xvit.explainer import Explainer
from xvit.models import load_model
from xvit.utils.context import eval_mode
from xvit.utils.logits import unwrap_logits

__all__ = ["ChunkWorker", "aggregate", "clean_pass", "run_chunk"]


def _timed(plan: Plan, fn: Callable[[], None], n_images: int, probe: bool) -> Timing:
    """One call of ``fn``: timed and memory-sampled by :func:`measure_cost` where ``probe``, else just timed (no
    sampling thread)."""
    if probe:
        cost = measure_cost(fn, n_images, device=plan.device, warmup=0, repeats=1)
        return Timing(cost.seconds, cost.peak_memory_bytes, cost.memory_kind)
    t0 = time.perf_counter()
    fn()
    return Timing(time.perf_counter() - t0, None, "not measured")


def clean_pass(plan: Plan, batch: EvalBatch) -> dict[str, Any]:
    """The clean forward pass of a chunk (timed: the cost reference), labels and explained classes."""
    x = batch.x.to(plan.device)
    out: list[Tensor] = []

    def forward() -> None:
        with torch.no_grad():
            out[:] = [unwrap_logits(plan.model(x)).float()]

    timing = _timed(plan, forward, x.shape[0], plan.probes_cost())
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
            "ids": batch.ids, "indices": batch.indices, "forward_timing": timing}


def run_chunk(plan: Plan, method: str, batch: EvalBatch, clean: dict[str, Any], warm: bool) -> dict[str, Any]:
    """Explain one chunk with one method and update every applicable metric; returns the saved unit."""
    x, explained = clean["x"], clean["explained"]
    metrics = [(col, plan.make_metric(col, method)) for col in plan.active_columns()]
    probe = plan.probes_cost()
    pairs = any("pairs" in m.requires for _, m in metrics)
    seconds: dict[str, float] = {}
    unit: dict[str, Any] = {"fingerprint": plan.fingerprints[method], "method": method, "start": batch.indices[0],
                            "stop": batch.indices[-1] + 1, "ids": list(batch.ids), "metrics": {}}
    torch.manual_seed(plan.options["seed"])
    with Explainer(plan.model, method, **plan.spec.method_params.get(method, {})) as explainer:
        if warm and probe:
            explainer(x[:1], target=explained[:1, None])  # unmeasured warm-up (lazy initialisation)
            torch.manual_seed(plan.options["seed"])
        result: list[Any] = []

        def run() -> None:
            result[:] = [explainer(x, target=explained[:, None])]

        timing = _timed(plan, run, x.shape[0], probe)
        seconds["explain"] = timing.seconds
        pair_exp = None
        if pairs:
            t0 = time.perf_counter()
            pair_exp = explainer(x, target=clean["labels"])
            seconds["explain_pair"] = time.perf_counter() - t0
    unit["per_image"] = {"predicted": clean["predicted"].cpu(), "explained": explained.cpu(),
                         "probability": clean["logits"].softmax(1).gather(1, explained[:, None])[:, 0].cpu(),
                         "labels": None if clean["labels"] is None else clean["labels"].cpu()}
    pair = clean["masks"] is not None and clean["masks"].ndim == 4
    inp = MetricInput(model=plan.model, x=x, explanation=result[0], targets=explained,
                      labels=clean["label"] if clean["label"] is not None else clean["predicted"],
                      predicted=clean["predicted"], masks=clean["mask"], foreground=clean["foreground"],
                      object_masks=clean["masks"] if pair else None, object_labels=clean["labels"] if pair else None,
                      markers=clean["markers"], pair_explanation=pair_exp, indices=list(batch.indices),
                      relevance_start=plan.relevance_start[method], timing=timing,
                      forward_timing=clean["forward_timing"])
    for col, metric in metrics:
        t0 = time.perf_counter()
        part = inp
        limit = metric.image_limit(plan.options)
        if limit is not None:
            keep = [i for i, g in enumerate(inp.indices) if g < limit]
            if not keep:
                continue
            part = inp.subset(keep) if len(keep) < len(inp.indices) else inp
        try:
            metric.update_from(part)
        except NotApplicable as e:
            unit["metrics"][col.name] = {"not_applicable": str(e)}
        else:
            unit["metrics"][col.name] = {"indices": list(part.indices), "state": _to_cpu(metric.state_dict())}
        seconds[col.name] = time.perf_counter() - t0
    unit["seconds"] = seconds
    return unit


class ChunkWorker:
    """Computes the units of one chunk: ``worker((start, stop, methods))`` loads images ``start:stop``, runs the
    clean pass once and :func:`run_chunk` for each method, and returns ``[(unit, seconds), ...]``.

    Built from plain arguments (the run spec as a dict, the driver's resume fingerprints, a device name), it
    opens model and data itself, once; :meth:`from_plan` wraps an already opened plan.
    """

    def __init__(self, spec: dict[str, Any], fingerprints: dict[str, str], device: str = "cpu") -> None:
        run_spec = RunSpec.from_dict(spec)
        if run_spec.model is None:
            raise ValueError("a worker re-opens the model from the run spec; give the model as a spec.")
        self.plan = prepare(run_spec, model=load_model(run_spec.model).to(device))
        self.plan.fingerprints.update(fingerprints)
        self.warmed: set[str] = set()

    @classmethod
    def from_plan(cls, plan: Plan) -> ChunkWorker:
        """A worker on an opened plan (whose ``fingerprints`` are set)."""
        worker = cls.__new__(cls)
        worker.plan, worker.warmed = plan, set()
        return worker

    def __call__(self, task: tuple[int, int, list[str]]) -> list[tuple[dict[str, Any], float]]:
        start, stop, methods = task
        plan, out = self.plan, []
        with torch.random.fork_rng(), eval_mode(plan.model):
            batch = plan.data.load(range(start, stop), plan.prep)
            clean = clean_pass(plan, batch)
            for m in methods:
                t0 = time.perf_counter()
                unit = run_chunk(plan, m, batch, clean, warm=m not in self.warmed)
                self.warmed.add(m)
                out.append((unit, time.perf_counter() - t0))
        return out


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def aggregate(plan: Plan, method: str, col: Column, parts: list[dict[str, Any]], n: int
              ) -> tuple[Metric, MetricResult, Tensor]:
    """Merge the chunks of one method × column into one result; scores spread to ``(N,)`` (NaN: not scored).

    Raises :class:`~xvit.evaluate.base.NotApplicable` where the metric could not score the method's explanations.
    """
    present = [p["metrics"][col.name] for p in parts if col.name in p["metrics"]]
    for p in present:
        if "not_applicable" in p:
            raise NotApplicable(p["not_applicable"])
    metric = plan.make_metric(col, method)
    for p in present:  # chunk order: compute() sees what one metric updated with every chunk would
        metric.merge_state(p["state"])
    res = metric.compute()
    full = torch.full((n,), math.nan)
    indices = [i for p in present for i in p["indices"]]
    full[torch.tensor(indices, dtype=torch.long)] = res.scores.float()
    return metric, res, full
