"""xvit: explain, evaluate and analyse Vision Transformer predictions."""

from xvit._compat.torchvision_ops import ensure_torchvision_importable

ensure_torchvision_importable()

from xvit.models import load_model  # noqa: E402
from xvit.result import Explanation  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Explanation", "ensure_torchvision_importable", "load_model", "__version__"]
