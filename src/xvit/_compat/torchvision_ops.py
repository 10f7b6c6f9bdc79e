"""Make ``import torchvision`` work next to a CPU-only torch.

The torchvision wheel on PyPI may be a CUDA build whose compiled extension cannot load against a CPU
torch; ``import torchvision`` then fails with ``operator torchvision::nms does not exist``, and with it
timm, transformers (when torchvision is installed) and pytorch-grad-cam. Before torchvision is first
imported we try to load its native extension; only if that fails do we declare the two operator schemas
it checks for (``nms`` and ``qnms``, in a ``torchvision`` library fragment), and only those that no other
library has declared already. Where the extension loads (a matching install) this is a no-op. Detection
ops such as ``torchvision.ops.nms`` stay unavailable (declared, with no kernel); xvit never needs them.
Nothing else is changed.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

__all__ = ["ensure_torchvision_importable"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment: torch.library.Library | None = None
_status: str | None = None


def ensure_torchvision_importable() -> str:
    """Make ``import torchvision`` work and say how: ``"absent"`` (not installed), ``"native"`` (its compiled
    extension loads, nothing declared) or ``"shimmed"`` (the extension cannot load; the operator schemas
    torchvision checks for are declared, by xvit where no other library had declared them). Idempotent."""
    global _fragment, _status
    if _status is not None:
        return _status
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "absent"
    for lib in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib)
        except (OSError, RuntimeError):
            continue
        _status = "native"
        return _status
    missing = [schema for name, schema in _SCHEMAS.items() if not hasattr(torch.ops.torchvision, name)]
    if missing:
        # A fragment, not a definition: another library may define or extend the namespace too.
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing:
            _fragment.define(schema)
    _status = "shimmed"
    return _status
