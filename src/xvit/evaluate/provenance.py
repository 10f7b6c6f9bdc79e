"""Provenance of an evaluation run (``provenance.json``): versions, seeds, model and weight hashes, data, parameters,
command line and timings."""

from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from xvit.utils.jsonable import jsonable

if TYPE_CHECKING:
    from xvit.evaluate.plan import Plan

__all__ = ["model_info", "provenance"]


def model_info(model: nn.Module, spec: str | None) -> dict[str, Any]:
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


def provenance(plan: Plan, chunks: list[tuple[int, int]], units: dict[tuple[str, int], Any],
               wall: dict[str, float], reused: int, command: str | None, notes: list[str]) -> dict[str, Any]:
    """The JSON-ready provenance record; ``wall`` is this run's seconds per method, ``reused`` the resumed units."""
    compute = {m: sum(sum(units[(m, s)]["seconds"].values()) for s, _ in chunks) for m in plan.methods}
    return jsonable({
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
