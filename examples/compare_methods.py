"""Compare attribution methods on the bundled model: how long each takes and how well its maps find the object.

Each method explains the predicted class of the same synthetic test images (xvit-shapes ``single``, which come with
object masks). For each method the script prints the time per image, the pointing game (is the map's maximum on the
object? Zhang et al., ECCV 2016) and the energy pointing game (share of the map's energy on the object; Wang et al.,
CVPR-W 2020), beside the ``random`` baseline and the object's share of the image, and saves a comparison grid.

    python examples/compare_methods.py --n 16 --out out/examples/compare
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

import xvit
from xvit.data import make_shapes
from xvit.evaluate import energy_pointing_game, pointing_game
from xvit.evaluate.inputs import energy_maps
from xvit.viz import comparison_grid, save_grid

METHODS = ("random", "rollout", "grad_attention_rollout", "transformer_attribution", "attnlrp", "gradcam",
           "input_x_gradient")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="test images (default: 16)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="methods to compare")
    parser.add_argument("--out", type=Path, default=Path("out/examples/compare"), help="output folder")
    args = parser.parse_args()

    model = xvit.load_model("shapes-vit-tiny")
    batch = make_shapes("single", args.n, split="test")
    x, images = xvit.load_images([image.permute(1, 2, 0).numpy() for image in batch.images], model)
    print(f"{args.n} xvit-shapes test images; objects cover {batch.masks.float().mean().item():.1%} of the pixels "
          "(the energy share a map spread evenly would score)")

    with torch.no_grad():
        model(x)  # one warm-up pass, so the first method's time is not the first call's
    explanations = {}
    print(f"{'method':<26}{'ms / image':>12}{'pointing game ↑':>18}{'energy on object ↑':>21}")
    for method in args.methods:
        start = time.perf_counter()
        exp = xvit.explain(model, x, method=method)
        ms = 1000 * (time.perf_counter() - start) / args.n
        maps = energy_maps(exp, "abs")[:, 0]  # |raw| of signed maps, at the input resolution
        hit = pointing_game(maps, batch.masks, exp.targets[:, 0]).value
        energy = energy_pointing_game(maps, batch.masks).value
        print(f"{method:<26}{ms:>12.1f}{hit:>18.2f}{energy:>21.2f}")
        explanations[method] = exp

    args.out.mkdir(parents=True, exist_ok=True)
    shown = min(args.n, 4)
    grid = comparison_grid(images[:shown], {m: _first(e, shown) for m, e in explanations.items()},
                           class_names=batch.class_names)
    print(f"comparison grid of the first {shown} images: {save_grid(grid, args.out / 'compare_grid.png')}")


def _first(exp: xvit.Explanation, n: int) -> xvit.Explanation:
    """The explanation of the first ``n`` images."""
    return replace(exp, raw=exp.raw[:n], maps=exp.maps[:n], targets=exp.targets[:n], logits=exp.logits[:n])


if __name__ == "__main__":
    main()
