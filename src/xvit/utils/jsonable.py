"""JSON conversion for results, summaries and provenance."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor


def jsonable(obj: Any) -> Any:
    """``obj`` with tensors as lists, non-finite floats as ``None`` and anything else unknown as its ``repr``."""
    if isinstance(obj, Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
