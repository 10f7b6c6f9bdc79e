"""Attribution methods, one module per family, registered by name in :data:`METHODS`."""

from xvit.methods import (  # noqa: F401 (register)
    attention,
    beyond_intuition,
    cam,
    chefer,
    gradient_attention,
    gradient_corrected,
    gradients,
    lrp,
    occlusion,
    random_map,
    rcut,
    rise,
    tam,
    tis,
    vit_cx,
)
from xvit.methods.base import METHODS, Attribution, Context, Method, register_method, validate_method_params
from xvit.registry import summary_of

__all__ = ["METHODS", "Attribution", "Context", "Method", "methods", "register_method", "validate_method_params"]


def methods() -> dict[str, dict]:
    """Registered methods: name -> citation, signed, class_specific, resolution, cost in passes, parameters."""
    out = {}
    for name in METHODS:
        cls = METHODS.get(name)
        default = cls()
        out[name] = {**METHODS.info(name), "signed": bool(default.signed), "class_specific": cls.class_specific,
                     "resolution": cls.resolution, "params": default.get_params(),
                     "summary": summary_of(cls)}
    return out
