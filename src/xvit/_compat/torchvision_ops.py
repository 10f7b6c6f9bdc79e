"""Make ``import torchvision`` work next to a CPU-only torch.

The torchvision wheel on PyPI may be a CUDA build whose compiled extension cannot load against a CPU
torch; ``import torchvision`` then fails with ``operator torchvision::nms does not exist``, and with it
timm, transformers (when torchvision is installed) and pytorch-grad-cam. Before torchvision is first
imported we try to load its native extension; only if that fails do we declare the two operator schemas
it checks for. Where the extension loads (a matching install) this is a no-op. Detection ops such as
``torchvision.ops.nms`` stay unavailable; xvit never needs them.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

_fragment: torch.library.Library | None = None


def ensure_torchvision_importable() -> str:
    """Return ``"absent"``, ``"native"`` or ``"shimmed"`` after making torchvision importable."""
    global _fragment
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "absent"
    if _fragment is not None:
        return "shimmed"
    for lib in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib)
            return "native"
        except (OSError, RuntimeError):
            continue
    _fragment = torch.library.Library("torchvision", "DEF")
    for schema in (
        "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
    ):
        _fragment.define(schema)
    return "shimmed"
