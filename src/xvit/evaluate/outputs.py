"""Tables and files of an evaluation run: :class:`EvaluationResult`, summary and per-image rows, ``summary.md``,
``summary.json``, ``per_image.csv``/``.parquet``, ``curves/*.png`` and ``provenance.json``.

What is shown for a column (direction, cell text, dataset-level numbers, curve figures) comes from the metric's
declarations (:class:`~xvit.evaluate.base.Metric`), looked up in the registry.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import Column, Metric, MetricResult, Plot, format_number, get_metric
from xvit.evaluate.plan import Plan
from xvit.utils.jsonable import jsonable

__all__ = ["BASELINE", "EvaluationResult", "markdown", "per_image_rows", "skipped_row", "summary_row",
           "summary_table", "write_outputs"]

# The chance baseline (xvit.methods.random_map): its row closes every table, so readers see what chance scores.
BASELINE = "random"


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`xvit.evaluate.evaluate` returns.

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


# ------------------------------------------------------------------------------------------------- rows


def summary_row(method: str, col: Column, metric: Metric, res: MetricResult, seconds: float | None
                ) -> dict[str, Any]:
    """The summary row of one method × column: statistics, direction, passes per image and details."""
    passes, unit = metric.passes_per_image(res)
    return {"method": method, "metric": col.metric, "column": col.name, "status": "ok",
            "direction": _direction(res), "value": _num(res.value), "mean": _num(res.mean),
            "ci95_low": _num(res.ci95[0]), "ci95_high": _num(res.ci95[1]), "n": res.n,
            "passes_per_image": passes, "passes_unit": unit if passes else None,
            "seconds": seconds, "details": jsonable(res.summary), "note": None}


def skipped_row(method: str, col: Column, reason: str) -> dict[str, Any]:
    """The summary row of a method × column that was not evaluated, with the reason."""
    return {"method": method, "metric": col.metric, "column": col.name, "status": "skipped", "direction": None,
            "value": None, "mean": None, "ci95_low": None, "ci95_high": None, "n": 0, "passes_per_image": None,
            "passes_unit": None, "seconds": None, "details": {}, "note": reason}


def _direction(res: MetricResult) -> str:
    if res.ideal is not None:
        return f"→{res.ideal:g}"
    return {True: "↑", False: "↓"}.get(res.higher_is_better, "")


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def per_image_rows(plan: Plan, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
                   scores_by: dict[str, dict[str, Tensor]]) -> list[dict[str, Any]]:
    """One row per method × image: id, label, predicted and explained class, probability, one score per column."""
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
                row[col.field_name] = None if s is None or not math.isfinite(float(s[i])) else float(s[i])
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ files


def write_outputs(result: EvaluationResult, plan: Plan, out_dir: Path) -> None:
    """Write every output file of ``result`` to ``out_dir``."""
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
    curves = _mean_curves(result)
    (out_dir / "summary.json").write_text(json.dumps(jsonable(
        {"rows": result.summary, "curves": curves, "notes": result.notes,
         "model": plan.model_info.get("spec"), "data": plan.data.spec, "n_images": len(plan.data),
         "class_explained": plan.options["class_explained"]}), indent=1, ensure_ascii=False) + "\n")
    (out_dir / "summary.md").write_text(result.to_markdown())
    _write_plots(curves, _plots(plan), out_dir / "curves")
    (out_dir / "provenance.json").write_text(json.dumps(result.provenance, indent=1, ensure_ascii=False) + "\n")


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _plots(plan: Plan) -> list[Plot]:
    """The figures the run's metrics declare, once each, in column order."""
    return list({p.name: p for m in dict.fromkeys(c.metric for c in plan.columns) for p in get_metric(m).plots}
                .values())


def _write_plots(curves: dict[str, dict[str, dict[str, Any]]], plots: list[Plot], folder: Path) -> None:
    """One PNG per plot that has curves, a panel per column and a line per method."""
    from xvit.viz import plot_curves, save_grid

    for plot in plots:
        present = {c: curves[c] for c in plot.columns if c in curves}
        if present:
            save_grid(plot_curves(present, plot.xlabel, plot.ylabel), folder / f"{plot.name}.png")


def _mean_curves(result: EvaluationResult) -> dict[str, dict[str, dict[str, Any]]]:
    """Mean curve per column × method (NaN-aware), for the plots and ``summary.json``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, cols in result.results.items():
        for name, res in cols.items():
            if res.curves is None or res.curve_x is None or res.curves.numel() == 0:
                continue
            y = res.curves.double().nanmean(0)
            entry = {"x": res.curve_x.tolist(), "y": y.tolist(), "n": int(res.curves.shape[0])}
            if res.curve_labels is not None:
                entry["labels"] = list(res.curve_labels)
            out.setdefault(name, {})[method] = entry
    return out


# --------------------------------------------------------------------------------------------- markdown


def _cell(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return "n/a"
    return get_metric(row["metric"]).format_cell(row)


def _column(row: dict[str, Any]) -> Column:
    return next(c for c in get_metric(row["metric"]).columns if c.name == row["column"])


def _shown(key: str, v: Any) -> str:
    if key.endswith("_bytes"):
        return f"{v / 2**20:.1f} MiB"
    return format_number(v) if isinstance(v, float) else str(v)


def _headline_cell(row: dict[str, Any], key: str) -> str:
    return format_number(row["details"].get(key)) if row["status"] == "ok" else "n/a"


def _table(methods: list[str], cols: list[str], by: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The main table: per column its headline number (if it declares one) and the per-image mean, each headed by
    name, direction and unit."""
    headers, cells = [], []
    for col in cols:
        rows = [by[(m, col)] for m in methods]
        column = _column(rows[0])
        dirs = "/".join(sorted({r["direction"] for r in rows if r["direction"]}))
        if column.headline is not None:
            key, label = column.headline
            headers.append(" ".join(p for p in (col, label, dirs, column.unit) if p))
            cells.append([_headline_cell(r, key) for r in rows])
        headers.append(" ".join(p for p in (col, column.label, dirs, column.unit) if p))
        cells.append([_cell(r) for r in rows])
    lines = ["| method | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for i, m in enumerate(methods):
        name = f"{m} (chance)" if m == BASELINE else m
        lines.append(f"| {name} | " + " | ".join(c[i] for c in cells) + " |")
    return lines


def _index(summary: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """Methods (the ``random`` baseline last), columns and rows by (method, column) of summary rows."""
    methods = list(dict.fromkeys(r["method"] for r in summary))
    methods = [m for m in methods if m != BASELINE] + [m for m in methods if m == BASELINE]
    cols = list(dict.fromkeys(r["column"] for r in summary))
    return methods, cols, {(r["method"], r["column"]): r for r in summary}


def summary_table(summary: list[dict[str, Any]]) -> list[str]:
    """The method × column table of ``summary.md`` (lines) for any summary rows, e.g. those of several runs put
    together; every method needs a row for every column."""
    return _table(*_index(summary))


def markdown(summary: list[dict[str, Any]], notes: list[str], provenance: dict[str, Any]) -> str:
    """The content of ``summary.md``: the method × column table (the ``random`` baseline last), dataset-level
    numbers, costs and notes."""
    methods, cols, by = _index(summary)
    baseline = (f" The `{BASELINE}` row is the chance baseline: a seeded random map per image and class."
                if BASELINE in methods else "")

    data = provenance.get("data", {})
    model = provenance.get("model", {})
    opts = provenance.get("options", {})
    lines = ["# xvit evaluate", "",
             f"Model `{model.get('spec') or model.get('class')}`, data `{data.get('spec')}` ({data.get('n')} images), "
             f"class explained: {opts.get('class_explained')}, seed {opts.get('seed')}, device "
             f"{provenance.get('device')}.", "",
             "Mean ± half-width of the 95 % interval over images (dataset-level numbers such as mIoU: one value); "
             "↑ higher is better, ↓ lower is better, →1 ideal value 1; each header names the unit and the range "
             f"[low-high] of the column.{baseline}", "",
             *summary_table(summary)]
    extras = []
    for m in methods:
        for c in cols:
            r = by[(m, c)]
            if r["status"] != "ok":
                continue
            for k in _column(r).display:
                v = r["details"].get(k)
                if v is not None:
                    extras.append(f"| {m} | {c} | {k} | {_shown(k, v)} |")
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
