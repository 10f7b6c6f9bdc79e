"""Evaluation of class rewriting (analysis ``rewrite_class``, reading cui2026-r1; analysis-methods.md §3): an
``ε × q`` sweep over a data set, each arm (explanation-restricted, unrestricted, random support of equal area) in the
same run, processed in chunks of images that are saved as JSON when finished, so a rerun skips them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xvit.analysis.rewrite import ARMS, ClassRewriting
from xvit.data.sources.base import EvalDataset
from xvit.models import preprocessing_for

RECORD_FIELDS = ("success", "steps", "target_prob", "linf", "l2", "psnr", "ssim", "patches")


def chunk_path(out_dir: Path, epsilon: float, q: float, start: int, size: int) -> Path:
    """File of one finished chunk: images ``start .. start+size-1`` at budget ``epsilon`` and support ``q``."""
    return Path(out_dir) / f"eps{epsilon * 255:g}_q{q:g}" / f"images_{start:05d}_{start + size:05d}.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename, so a killed run leaves no partial chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def read_chunk(path: Path) -> list[dict[str, Any]] | None:
    """The records of a finished chunk, or None when it is missing or unreadable (then it is recomputed)."""
    try:
        return json.loads(Path(path).read_text())["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def rewrite_records(model: nn.Module, x: torch.Tensor, *, epsilon: float, q: float, steps: int,
                    **params: Any) -> list[dict[str, Any]]:
    """Run ``rewrite_class`` with its controls on the normalised batch ``x``: one record per image and arm with
    success, steps, final target probability, L∞, L2, PSNR (None when unchanged), SSIM and patches touched."""
    result = ClassRewriting(epsilon=epsilon, q=q, steps=steps, controls=True, **params)(model, x)
    t = result.tensors
    records = []
    for i in range(x.shape[0]):
        for a, arm in enumerate(result.meta["arms"]):
            rec: dict[str, Any] = {"image": i, "arm": arm, "source": int(t["source"][i]),
                                   "target": int(t["target"][i])}
            for name in RECORD_FIELDS:
                v = t[name][i, a].item()
                rec[name] = None if isinstance(v, float) and not math.isfinite(v) else v
            rec["success"] = bool(rec["success"])
            records.append(rec)
    return records


def run_rewrite_eval(model: nn.Module, data: EvalDataset, out_dir: Path, *, epsilons: Sequence[float],
                     qs: Sequence[float], steps: int, chunk: int = 16, reverse: bool = False,
                     device: str | torch.device = "cpu", log: Callable[[str], None] = print,
                     **params: Any) -> list[dict[str, Any]]:
    """The ``ε × q`` sweep of ``rewrite_class`` on every image of ``data``: chunks of ``chunk`` images, each saved
    to :func:`chunk_path` when finished and read back instead of recomputed on a rerun; ``reverse`` works through
    each setting's chunks from the last, so a second run can share the folder with a first one. Returns every
    record, in data order, with its ``epsilon``, ``q`` and ``index`` (position in ``data``) added."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of images; got {chunk}.")
    prep = preprocessing_for(model)
    model = model.to(device)
    out: list[dict[str, Any]] = []
    for epsilon in epsilons:
        for q in qs:
            done: dict[int, list[dict[str, Any]]] = {}
            starts = range(0, len(data), chunk)
            for start in reversed(starts) if reverse else starts:
                size = min(chunk, len(data) - start)
                path = chunk_path(out_dir, epsilon, q, start, size)
                records = read_chunk(path)
                if records is None:
                    batch = data.load(range(start, start + size), prep)
                    records = rewrite_records(model, batch.x.to(device), epsilon=epsilon, q=q, steps=steps, **params)
                    for r in records:
                        r["index"] = start + r.pop("image")
                    write_json_atomic(path, {"epsilon": epsilon, "q": q, "steps": steps, "params": params,
                                             "ids": data.ids[start:start + size], "records": records})
                    log(f"rewrite ε={epsilon * 255:g}/255 q={q:g} images {start}-{start + size - 1}: done")
                done[start] = records
            out.extend({**r, "epsilon": epsilon, "q": q} for start in starts for r in done[start])
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise_rewrite(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (ε, q, arm): images, success rate, and means over the successful images of steps, final target
    probability, L∞, L2, PSNR, SSIM and patches touched; and, for the explanation and random arms, the mean L2 over
    the images where both succeed (a paired comparison)."""
    groups: dict[tuple[float, float, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["epsilon"], r["q"], r["arm"]), []).append(r)
    both: dict[tuple[float, float], set[int]] = {}
    for (eps, q, arm), rs in groups.items():
        if arm in ("explanation", "random"):
            won = {r["index"] for r in rs if r["success"]}
            both[(eps, q)] = won if (eps, q) not in both else both[(eps, q)] & won
    rows = []
    for (eps, q, arm), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], ARMS.index(kv[0][2]))):
        won = [r for r in rs if r["success"]]
        row: dict[str, Any] = {"epsilon": eps, "q": q, "arm": arm, "n": len(rs),
                               "success": len(won) / len(rs) if rs else None}
        for name in ("steps", "target_prob", "linf", "l2", "psnr", "ssim", "patches"):
            row[name] = _mean([r[name] for r in won if r[name] is not None])
        paired = both.get((eps, q), set()) if arm in ("explanation", "random") else set()
        row["paired_n"] = len(paired) if arm in ("explanation", "random") else None
        row["paired_l2"] = _mean([r["l2"] for r in rs if r["index"] in paired]) if paired else None
        rows.append(row)
    return rows
