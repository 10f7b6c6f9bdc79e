"""Provenance of an evaluation run (``provenance.json``): versions, seeds, model and weight hashes, data, parameters,
command line and timings."""

from __future__ import annotations

import platform
import shlex
import sys
from typing import Any

import torch

from xvit.evaluate.plan import Plan
from xvit.utils.jsonable import jsonable

__all__ = ["provenance"]


def _versions() -> dict[str, str | None]:
    import numpy

    from xvit.version import __version__

    out = {"xvit": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
           "python": platform.python_version()}
    for name in ("timm", "transformers", "h5py"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", None)
    return out


def provenance(plan: Plan, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
               wall: dict[str, float], reused: int, command: str | None, notes: list[str],
               engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready provenance record; ``wall`` is this run's seconds per method, ``reused`` the resumed units,
    ``engine`` the engine's description (name, workers, cluster resources)."""
    compute = {m: sum(sum(units[(m, s)]["seconds"].values()) for s, _ in chunks) for m in plan.methods}
    return jsonable({
        "command": command if command is not None else shlex.join(sys.argv),
        "versions": _versions(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "device": str(plan.device), "engine": engine if engine is not None else {"name": "local"},
        "seeds": {"explanations": plan.options["seed"], **plan.seeds, "data": plan.data.info.get("base_seed")},
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
