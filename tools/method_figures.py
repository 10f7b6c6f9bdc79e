"""Draw the documentation's method-family figures from the bundled model, offline.

Each figure is a comparison grid (one row per bundled ``single`` sample image, one column per method of the family)
of ``shapes-vit-tiny`` explaining its predicted class with every method at its defaults. Run from the repository
root; it rewrites ``docs/img/methods/<family>.png``:

    python tools/method_figures.py                      # every family
    python tools/method_figures.py --family attention --images 1 --out /tmp/figs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

import xvit
from xvit.data.shapes import SHAPE_CLASSES
from xvit.models import bundled_model_dir
from xvit.viz import comparison_grid, save_grid

# Each documentation page of docs/families/ and the registered methods it describes, in the order they are drawn.
FAMILIES: dict[str, list[str]] = {
    "attention": ["raw_attention", "rollout", "attention_flow"],
    "gradient-attention": ["grad_attention_rollout", "gradient_corrected_attention", "attention_gradcam", "gradcam"],
    "relevance": ["transformer_attribution", "partial_lrp", "full_lrp", "attnlrp", "cp_lrp"],
    "input-gradients": ["input_x_gradient", "integrated_gradients", "smoothgrad"],
    "token-attributions": ["bt_h", "bt_t", "tam"],
    "perturbation": ["occlusion", "rise", "tis", "vit_cx", "rcut"],
}
# Registered methods that are baselines rather than attribution methods; the overview page describes them.
BASELINES = ("random",)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = bundled_model_dir("shapes-vit-tiny").parents[1] / "samples" / "single"


def draw_family(family: str, n_images: int, out: Path) -> Path:
    """Explain the first ``n_images`` bundled samples with every method of ``family`` and save the grid."""
    model = xvit.load_model("shapes-vit-tiny")
    files = sorted(SAMPLES.glob("single_0[0-9].png"))[:n_images]
    x, display = xvit.load_images(files, model)
    explanations = {name: xvit.explain(model, x, method=name) for name in FAMILIES[family]}
    fig = comparison_grid(display, explanations, class_names=SHAPE_CLASSES, cell_inches=1.6)
    path = save_grid(fig, out / f"{family}.png", dpi=72)
    with Image.open(path) as image:  # a 256-colour palette keeps the committed PNGs small
        quantised = image.convert("RGB").quantize(colors=256)
    quantised.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), nargs="*", default=sorted(FAMILIES),
                        help="families to draw (default: all)")
    parser.add_argument("--images", type=int, default=3, help="sample images per figure (default: 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "methods",
                        help="output folder (default: docs/img/methods)")
    args = parser.parse_args(argv)
    if not 1 <= args.images <= 6:
        parser.error("--images must be between 1 and 6 (the bundled single samples)")
    args.out.mkdir(parents=True, exist_ok=True)
    for family in args.family:
        start = time.perf_counter()
        path = draw_family(family, args.images, args.out)
        print(f"{path} ({time.perf_counter() - start:.1f} s, {path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
