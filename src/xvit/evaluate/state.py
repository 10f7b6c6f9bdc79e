"""Resumable state of an evaluation run: one file per finished (method, chunk) in ``out_dir/state/``.

Each file holds a *unit* (:func:`xvit.evaluate.chunks.run_chunk`): the per-image outputs, timings and metric
states of one method on one chunk of images, with the image ids and a fingerprint of every setting the unit
depends on. A later run reuses a unit only where both match, and computes the others.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from xvit.data.sources import EvalDataset
    from xvit.evaluate.plan import Plan

__all__ = ["STATE_VERSION", "data_key", "fingerprint", "open_state_dir", "saved_units", "write_state"]

# Version 2: metric states are Metric.state_dict() ("pieces", "forward_passes", ...), no longer private attributes.
# Version 3: every column, conservation and cost included, is a metric state (or "not_applicable").
STATE_VERSION = 3


def fingerprint(plan: Plan, method: str) -> str:
    """Everything a (method, chunk) result depends on; a saved chunk is reused only on an exact match."""
    from xvit.version import __version__

    # Image ids are checked per chunk (saved_units), so a run over more images of the same data reuses chunks.
    key = {"state_version": STATE_VERSION, "xvit": __version__, "model": plan.model_info["state_dict_sha256"],
           "data": data_key(plan.data),
           "preprocessing": plan.prep.to_dict(), "method": method, "method_params": plan.methods[method],
           "columns": [c.name for c in plan.columns], "skipped": plan.skipped, "metric_params": plan.metric_params,
           **{k: v for k, v in plan.options.items() if k not in ("forward_batch_size", "max_images")}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()


def data_key(data: EvalDataset) -> Any:
    """The data part of a fingerprint: for xvit-shapes variant, split and marker policy (not N), else the spec."""
    if not data.spec.startswith("xvit-shapes"):
        return data.spec
    key = data.spec.split(":")[:3]
    return key + [f"marker={data.info['marker']}"] if "marker" in data.info else key


def open_state_dir(out_dir: Path) -> Path:
    """Create ``out_dir/state`` with a README saying what it is; returns its path."""
    state_dir = out_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "README.txt").write_text(
        "Finished (method, chunk) results of 'xvit evaluate'. Rerun the same command to resume; delete this "
        "folder to start over.\n")
    return state_dir


def saved_units(state_dir: Path, plan: Plan, chunks: list[tuple[int, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The reusable units in ``state_dir``, keyed by (method, chunk start); needs ``plan.fingerprints``."""
    units = {}
    for m in plan.methods:
        for start, stop in chunks:
            unit = _read_state(state_dir, m, start, stop, plan.fingerprints[m], plan.data.ids[start:stop])
            if unit is not None:
                units[(m, start)] = unit
    return units


def write_state(state_dir: Path, unit: dict[str, Any]) -> None:
    """Save one unit, atomically: an interruption leaves either the old file or the new one."""
    path = _state_path(state_dir, unit["method"], unit["start"], unit["stop"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(unit, tmp)
    os.replace(tmp, path)


def _state_path(state_dir: Path, method: str, start: int, stop: int) -> Path:
    return state_dir / method / f"{start:07d}-{stop:07d}.pt"


def _read_state(state_dir: Path, method: str, start: int, stop: int, expected: str, ids: list[str]
                ) -> dict[str, Any] | None:
    path = _state_path(state_dir, method, start, stop)
    if not path.is_file():
        return None
    try:
        unit = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a half-written or foreign file: recompute that chunk
        return None
    ok = isinstance(unit, dict) and unit.get("fingerprint") == expected and unit.get("ids") == ids
    return unit if ok else None
