"""xvit: explain, evaluate and analyse Vision Transformer predictions."""

from xvit._compat.torchvision_ops import ensure_torchvision_importable

ensure_torchvision_importable()

from xvit.adapters import get_adapter  # noqa: E402
from xvit.analysis import analyse, analyses  # noqa: E402
from xvit.data.images import load_images  # noqa: E402
from xvit.evaluate.dataset_maps import load_maps  # noqa: E402
from xvit.explainer import Explainer, explain  # noqa: E402
from xvit.methods import methods  # noqa: E402
from xvit.models import load_model  # noqa: E402
from xvit.result import Explanation  # noqa: E402
from xvit.version import __version__  # noqa: E402
from xvit.viz import comparison_grid, plot_attribution, show_on_image  # noqa: E402

__all__ = ["Explainer", "Explanation", "analyse", "analyses", "ensure_torchvision_importable", "explain", "get_adapter",
           "load_images", "load_maps", "load_model", "methods", "__version__", "comparison_grid", "plot_attribution",
           "show_on_image"]
