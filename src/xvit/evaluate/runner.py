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

This module holds the entry points and the chunk loop; the parts live beside it:

* :mod:`~xvit.evaluate.plan`: argument checks, model and data, which columns apply (:class:`~.plan.Plan`),
* :mod:`~xvit.evaluate.columns`: the columns, the maps each metric is fed, per-chunk updates and merging,
* :mod:`~xvit.evaluate.state`: saved (method, chunk) units and their fingerprints, for resuming,
* :mod:`~xvit.evaluate.outputs`: summary and per-image rows, Markdown, JSON, CSV/Parquet and curve files,
* :mod:`~xvit.evaluate.provenance`: the provenance record.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from xvit.evaluate.base import MetricResult
from xvit.evaluate.columns import aggregate, clean_pass, run_chunk
from xvit.evaluate.datasets import EvalDataset
from xvit.evaluate.outputs import markdown, per_image_rows, skipped_row, summary_row, write_outputs
from xvit.evaluate.plan import DEFAULT_METHODS, DEFAULT_METRICS, METRIC_NAMES, Plan, prepare
from xvit.evaluate.provenance import provenance
from xvit.evaluate.state import fingerprint, open_state_dir, saved_units, write_state
from xvit.registry import did_you_mean
from xvit.utils.context import eval_mode

__all__ = ["DEFAULT_METRICS", "METRIC_NAMES", "EvaluationResult", "add_evaluate_arguments", "evaluate", "run_evaluate"]


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
        return markdown(self.summary, self.notes, self.provenance)


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
    plan = prepare(model, data, methods, metrics, batch_size=batch_size, class_explained=class_explained,
                   seed=seed, method_params=method_params, metric_params=metric_params, steps=steps,
                   forward_batch_size=forward_batch_size, randomization_images=randomization_images,
                   max_images=max_images)
    return _execute(plan, None if out_dir is None else Path(out_dir), resume=resume, progress=progress,
                    command=command)


# ------------------------------------------------------------------------------------------------- run


def _execute(plan: Plan, out_dir: Path | None, *, resume: bool, progress: bool, command: str | None
             ) -> EvaluationResult:
    """Run every (method, chunk) not already saved, saving each as it finishes, then collect the results."""
    n = len(plan.data)
    bs = plan.options["batch_size"]
    chunks = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    methods = list(plan.methods)
    for m in methods:
        plan.fingerprints[m] = fingerprint(plan, m)
    state_dir = None if out_dir is None else open_state_dir(out_dir)
    units = saved_units(state_dir, plan, chunks) if state_dir is not None and resume else {}
    reused = len(units)
    todo = [(start, stop) for start, stop in chunks if any((m, start) not in units for m in methods)]
    wall: dict[str, float] = {m: 0.0 for m in methods}
    warmed: set[str] = set()
    bar = tqdm(total=n * len(methods), initial=sum(units[k]["stop"] - units[k]["start"] for k in units), unit="img",
               desc="evaluate", file=sys.stderr, dynamic_ncols=True, disable=not progress)
    try:
        with torch.random.fork_rng(), eval_mode(plan.model):
            for start, stop in todo:
                batch = plan.data.load(range(start, stop), plan.prep)
                clean = clean_pass(plan, batch)
                for m in methods:
                    if (m, start) in units:
                        continue
                    t0 = time.perf_counter()
                    unit = run_chunk(plan, m, batch, clean, warm=m not in warmed)
                    warmed.add(m)
                    wall[m] += time.perf_counter() - t0
                    units[(m, start)] = unit
                    if state_dir is not None:
                        write_state(state_dir, unit)
                    bar.set_postfix_str(m, refresh=False)
                    bar.update(stop - start)
    finally:
        bar.close()
    return _finish(plan, out_dir, chunks, units, wall, reused, command)


def _finish(plan: Plan, out_dir: Path | None, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
            wall: dict[str, float], reused: int, command: str | None) -> EvaluationResult:
    """Merge the units into results, rows and provenance, and write the outputs where ``out_dir`` is given."""
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
                summary.append(skipped_row(m, col, plan.skipped[col.name]))
                continue
            res, full = aggregate(plan, m, col, parts, n)
            if res is None:
                reason = f"not applicable to {m} (its explanations carry no conserved relevance)"
                notes.append(f"conservation: {reason}.")
                summary.append(skipped_row(m, col, reason))
                continue
            results[m][col.name] = res
            scores_by[m][col.name] = full
            summary.append(summary_row(m, col, res, seconds_by[m].get(col.name)))
    per_image = per_image_rows(plan, chunks, units, scores_by)
    record = provenance(plan, chunks, units, wall, reused, command, notes)
    result = EvaluationResult(summary=summary, per_image=per_image, results=results, notes=notes,
                              provenance=record, out_dir=out_dir)
    if out_dir is not None:
        write_outputs(result, plan, out_dir)
    return result


# ------------------------------------------------------------------------------------------------- CLI


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``xvit evaluate`` options to ``parser``."""
    from xvit.cli.common import positive_int as _positive_int
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
    from xvit.cli.common import UsageError
    from xvit.cli.common import device as _device
    from xvit.cli.common import load_model as _load_model

    device = _device(args.device)
    try:
        method_params = _parse_params(args.method_param, "method")
        metric_params = _parse_params(args.metric_param, "metric")
        if any(name not in METRIC_NAMES for name in args.metrics):  # before loading the model
            bad = next(name for name in args.metrics if name not in METRIC_NAMES)
            raise ValueError(f"unknown metric {bad!r}.{did_you_mean(bad, METRIC_NAMES)} Choose from "
                             f"{', '.join(METRIC_NAMES)}.")
        model = _load_model(args.model).to(device)
        plan = prepare(model, args.data, args.methods, args.metrics, batch_size=args.batch_size,
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
