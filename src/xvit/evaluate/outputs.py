"""Tables and files of an evaluation run: summary and per-image rows, ``summary.md``, ``summary.json``,
``per_image.csv``/``.parquet``, ``curves/*.png`` and ``provenance.json``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from xvit.evaluate.base import MetricResult
from xvit.utils.jsonable import jsonable

if TYPE_CHECKING:
    from xvit.evaluate.columns import Column
    from xvit.evaluate.plan import Plan
    from xvit.evaluate.runner import EvaluationResult

__all__ = ["markdown", "per_image_rows", "skipped_row", "summary_row", "write_outputs"]

# Figure name -> (columns drawn side by side, x label, y label).
_PLOTS = {
    "perturbation": (("perturbation_pos", "perturbation_neg"), "fraction of pixels removed", "top-1 accuracy"),
    "deletion_insertion": (("deletion", "insertion"), "fraction of pixels changed", "probability of the class"),
    "randomization": (("randomization",), "units randomised (output → input)", "Spearman similarity of |map|"),
}


# ------------------------------------------------------------------------------------------------- rows


def summary_row(method: str, col: Column, res: MetricResult, seconds: float | None) -> dict[str, Any]:
    """The summary row of one method × column: statistics, direction, passes per image and details."""
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
            "seconds": seconds, "details": jsonable(details), "note": None}


def skipped_row(method: str, col: Column, reason: str) -> dict[str, Any]:
    """The summary row of a method × column that was not evaluated, with the reason."""
    return {"method": method, "metric": col.metric, "column": col.name, "status": "skipped", "direction": None,
            "value": None, "mean": None, "ci95_low": None, "ci95_high": None, "n": 0, "passes_per_image": None,
            "passes_unit": None, "seconds": None, "details": {}, "note": reason}


def _direction(res: MetricResult) -> str:
    if res.name == "conservation" and res.summary.get("quantity") == "ratio":
        return "→1"
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
                name = "cost_seconds" if col.metric == "cost" else col.name
                row[name] = None if s is None or not math.isfinite(float(s[i])) else float(s[i])
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
    _write_plots(curves, out_dir / "curves")
    (out_dir / "provenance.json").write_text(json.dumps(result.provenance, indent=1, ensure_ascii=False) + "\n")


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _write_plots(curves: dict[str, dict[str, dict[str, Any]]], folder: Path) -> None:
    """One PNG per entry of ``_PLOTS`` that has curves, a panel per column and a line per method."""
    from xvit.viz import plot_curves, save_grid

    for name, (cols, xlabel, ylabel) in _PLOTS.items():
        present = {c: curves[c] for c in cols if c in curves}
        if present:
            save_grid(plot_curves(present, xlabel, ylabel), folder / f"{name}.png")


def _mean_curves(result: EvaluationResult) -> dict[str, dict[str, dict[str, Any]]]:
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


# --------------------------------------------------------------------------------------------- markdown


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


def markdown(summary: list[dict[str, Any]], notes: list[str], provenance: dict[str, Any]) -> str:
    """The content of ``summary.md``: the method × column table, dataset-level numbers, costs and notes."""
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
                  "marker_share": ("chance", "lift", "shortcut_share", "shortcut_ci95", "shortcut_n",
                                   "other_share", "other_ci95", "other_n"),
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
