"""The evaluation runner: methods × metrics over a data set, resumable, with tables, curves and provenance.

:func:`evaluate` explains every image with every method (the predicted or the ground-truth class) and feeds
the maps to the metrics of :mod:`xvit.evaluate` (evaluation.md), chunk by chunk. With ``out_dir`` each
finished (method, chunk) is saved to ``out_dir/state/`` at once, so an interrupted run resumes where it
stopped when it is started again with the same settings; it then writes

* ``per_image.csv`` (and ``per_image.parquet`` where pyarrow is installed): one row per method × image,
* ``summary.md`` and ``summary.json``: mean ± 95 % interval per method × metric, direction, dataset-level
  numbers and the cost of each evaluation in forward passes per image,
* ``curves/*.png``: the curve figures the metrics declare (perturbation accuracy, deletion/insertion
  probability, randomisation similarity),
* ``provenance.json``: package versions, seeds, model spec and weight hash, image ids, method and metric
  parameters, the command line and wall-clock time per method.

The runner names no metric: every metric declares its columns, requirements, plots and display extras and reads
one :class:`~xvit.evaluate.inputs.MetricInput` (:class:`~xvit.evaluate.base.Metric`). The parts, each importing
only those above it:

* :mod:`~xvit.evaluate.spec`: the run's description, :class:`~xvit.evaluate.spec.RunSpec` (frozen, serialisable),
* :mod:`~xvit.evaluate.plan`: the runtime :class:`~xvit.evaluate.plan.Plan` opened from it (model, data, columns),
* :mod:`~xvit.evaluate.chunks`: per-chunk explanations and metric updates, and merging,
* :mod:`~xvit.evaluate.state`: saved (method, chunk) units and their fingerprints, for resuming,
* :mod:`~xvit.evaluate.outputs`: the result, summary and per-image rows, Markdown, JSON, CSV/Parquet, curves,
* :mod:`~xvit.evaluate.provenance`: the provenance record,
* :mod:`~xvit.evaluate.engines`: where chunks run, in this process or on Ray actors
  (:class:`~xvit.evaluate.chunks.ChunkWorker`).

``xvit evaluate`` (:mod:`xvit.cli.evaluate`) is a thin layer over :func:`prepare` and :func:`execute`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from xvit.data.sources import EvalDataset
from xvit.evaluate.base import MetricResult, NotApplicable
from xvit.evaluate.chunks import ChunkWorker, aggregate
from xvit.evaluate.engines import Engine, LocalEngine
from xvit.evaluate.outputs import EvaluationResult, per_image_rows, skipped_row, summary_row, write_outputs
from xvit.evaluate.plan import Plan, prepare
from xvit.evaluate.provenance import provenance
from xvit.evaluate.spec import DEFAULT_METHODS, RunSpec
from xvit.evaluate.state import fingerprint, open_state_dir, saved_units, write_state
from xvit.utils.progress import Progress

__all__ = ["EvaluationResult", "evaluate", "evaluate_spec", "execute"]


def evaluate(model: nn.Module | str, data: EvalDataset | str, methods: Sequence[str] = DEFAULT_METHODS,
             metrics: Sequence[str] | None = None, out_dir: str | os.PathLike | None = None, *,
             batch_size: int = 16, class_explained: str = "predicted", seed: int = 0,
             method_params: Mapping[str, Mapping[str, Any]] | None = None,
             metric_params: Mapping[str, Mapping[str, Any]] | None = None, steps: int | None = 56,
             forward_batch_size: int | None = None, randomization_images: int = 16, max_images: int | None = None,
             resume: bool = True, progress: bool = False, command: str | None = None) -> EvaluationResult:
    """Evaluate explanation methods with explanation-quality metrics over a data set (evaluation.md).

    Args:
        model: a supported ViT (in eval mode, on its device) or a model spec for :func:`xvit.load_model`.
        data: an :class:`EvalDataset` or a data spec for :func:`xvit.data.load_dataset`.
        methods: method names (see :func:`xvit.methods`).
        metrics: registered metric names (see :func:`xvit.evaluate.metrics`); ``None``: every metric that runs
            by default. Shipped: ``perturbation`` (positive and negative), ``deletion_insertion`` (both),
            ``segmentation``, ``pointing_game``, ``energy_pointing_game``, ``class_sensitivity`` (pair data
            only), ``marker_share`` (xvit-shapes ``spurious`` data only, e.g.
            ``xvit-shapes:spurious:test:200:marker=random``; not in the default set), ``randomization``
            (cascading MPRT on the first ``randomization_images`` images), ``conservation`` (methods whose
            output carries conserved relevance) and ``cost`` (time per image and peak memory of each method
            in this run). Metrics whose data requirements the data set does not meet are skipped (or, for a
            metric outside the default set, refused).
        out_dir: write outputs and resumable state here; ``None`` keeps everything in memory.
        batch_size: images per explanation call (and per saved chunk).
        class_explained: ``"predicted"`` or ``"target"`` (the ground-truth label; for two-object images the
            labelled class the model scores higher).
        seed: seeds every chunk's explanation (``torch.manual_seed(seed)``) and the randomisation test.
        method_params: ``{method: {param: value}}``.
        metric_params: ``{metric: {param: value}}``, e.g. ``{"pointing_game": {"tol": 5}}``.
        steps: deletion/insertion steps ``n`` (``None``: the preset's default pixels per step).
        forward_batch_size: perturbed images per forward pass in the perturbation metrics; None: 16 on a CPU, 128
            elsewhere (:func:`~xvit.utils.batching.rows_per_pass`).
        randomization_images: images of the randomisation test (the first ones).
        max_images: evaluate only the first images of ``data``.
        resume: reuse finished chunks saved in ``out_dir/state`` by an earlier run with the same settings.
        progress: show progress on stderr (a bar on a terminal, else a status line every 10 s).
        command: the command line to record in the provenance.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: unknown method or metric, invalid parameter, unusable data (``DataSpecError``).
    """
    spec = RunSpec(data=data.spec if isinstance(data, EvalDataset) else str(data),
                   model=str(model) if isinstance(model, (str, os.PathLike)) else None,
                   methods=tuple(methods), metrics=None if metrics is None else tuple(metrics),
                   method_params=method_params or {}, metric_params=metric_params or {}, batch_size=batch_size,
                   class_explained=class_explained, seed=seed, steps=steps, forward_batch_size=forward_batch_size,
                   randomization_images=randomization_images, max_images=max_images)
    plan = prepare(spec, model=None if spec.model is not None else model,
                   data=data if isinstance(data, EvalDataset) else None)
    return execute(plan, out_dir, resume=resume, progress=progress, command=command)


def evaluate_spec(spec: RunSpec, out_dir: str | os.PathLike | None = None, *, resume: bool = True,
                  progress: bool = False, command: str | None = None) -> EvaluationResult:
    """Run a :class:`RunSpec` (e.g. one received by a worker): open its model and data, then :func:`execute`."""
    return execute(prepare(spec), out_dir, resume=resume, progress=progress, command=command)


# ------------------------------------------------------------------------------------------------- run


def execute(plan: Plan, out_dir: str | os.PathLike | None = None, *, resume: bool = True, progress: bool = False,
            command: str | None = None, engine: Engine | None = None) -> EvaluationResult:
    """Run every (method, chunk) of ``plan`` not already saved in ``out_dir``, saving each as it finishes, then
    collect the results and write the outputs.

    ``engine`` computes the chunks (:mod:`xvit.evaluate.engines`; default: this process). A
    :class:`~xvit.evaluate.engines.RayEngine` ships the run spec to its actors, which re-open model and data from
    it, so the plan's model must come from a spec; the units come back and are merged exactly as resumed ones."""
    engine = LocalEngine() if engine is None else engine
    if not isinstance(engine, LocalEngine) and plan.spec.model is None:
        raise ValueError(f"the {engine.name} engine re-opens the model on its workers; give the model as a spec.")
    out_dir = None if out_dir is None else Path(out_dir)
    n = len(plan.data)
    bs = plan.options["batch_size"]
    chunks = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    methods = list(plan.methods)
    for m in methods:
        plan.fingerprints[m] = fingerprint(plan, m)
    state_dir = None if out_dir is None else open_state_dir(out_dir)
    units = saved_units(state_dir, plan, chunks) if state_dir is not None and resume else {}
    reused = len(units)
    todo = [(start, stop, [m for m in methods if (m, start) not in units]) for start, stop in chunks]
    todo = [task for task in todo if task[2]]
    wall: dict[str, float] = {m: 0.0 for m in methods}
    bar = Progress(n * len(methods), initial=sum(units[k]["stop"] - units[k]["start"] for k in units), unit="img",
                   desc="evaluate", enabled=progress)
    args = (plan.spec.to_dict(), dict(plan.fingerprints), str(plan.device))
    try:
        with engine:
            for finished in engine.map_unordered(ChunkWorker, args, todo, local_worker=ChunkWorker.from_plan(plan)):
                for unit, seconds in finished:
                    m = unit["method"]
                    wall[m] += seconds
                    units[(m, unit["start"])] = unit
                    if state_dir is not None:
                        write_state(state_dir, unit)
                    bar.set_postfix(m)
                    bar.update(unit["stop"] - unit["start"])
            described = engine.describe()
    finally:
        bar.close()
    return _finish(plan, out_dir, chunks, units, wall, reused, command, described)


def _finish(plan: Plan, out_dir: Path | None, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
            wall: dict[str, float], reused: int, command: str | None, engine: dict[str, Any]) -> EvaluationResult:
    """Merge the units into results, rows and provenance, and write the outputs where ``out_dir`` is given."""
    n = len(plan.data)
    notes = list(plan.notes)
    results: dict[str, dict[str, MetricResult]] = {}
    summary: list[dict[str, Any]] = []
    scores_by: dict[str, dict[str, Tensor]] = {}
    for m in plan.methods:
        parts = [units[(m, start)] for start, _ in chunks]
        results[m], scores_by[m] = {}, {}
        seconds: dict[str, float] = {}
        for part in parts:
            for k, v in part["seconds"].items():
                seconds[k] = seconds.get(k, 0.0) + v
        for col in plan.columns:
            if col.name in plan.skipped:
                summary.append(skipped_row(m, col, plan.skipped[col.name]))
                continue
            try:
                metric, res, full = aggregate(plan, m, col, parts, n)
            except NotApplicable as e:
                reason = f"not applicable to {m} ({e})"
                notes.append(f"{col.metric}: {reason}.")
                summary.append(skipped_row(m, col, reason))
                continue
            results[m][col.name] = res
            scores_by[m][col.name] = full
            summary.append(summary_row(m, col, metric, res, seconds.get(col.name)))
    per_image = per_image_rows(plan, chunks, units, scores_by)
    record = provenance(plan, chunks, units, wall, reused, command, notes, engine)
    result = EvaluationResult(summary=summary, per_image=per_image, results=results, notes=notes,
                              provenance=record, out_dir=out_dir)
    if out_dir is not None:
        write_outputs(result, plan, out_dir)
    return result
