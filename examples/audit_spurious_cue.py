"""Audit a spurious cue: does the model use a shortcut, and which explanation methods reveal it?

``shapes-vit-tiny-spurious`` was trained on images where a magenta corner marker came with class 0 (``circle``)
90 % of the time. On test images the marker appears independently of the class. The script first shows the
shortcut in the model's behaviour (marked images of other classes called ``circle`` far more often than unmarked
ones), then runs the spurious-marker audit: the share of each method's map on the marker, beside the chance level
(the marker's share of the image) and split by whether the image is explained as ``circle``. A method that shows
how the model decides puts much more than chance on the marker where the model takes the shortcut.

    python examples/audit_spurious_cue.py --n 64 --out out/examples/spurious
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import xvit
from xvit.data import make_shapes
from xvit.evaluate import evaluate

METHODS = ("random", "rollout", "transformer_attribution", "attnlrp", "gradcam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="test images (default: 64)")
    parser.add_argument("--out", type=Path, default=Path("out/examples/spurious"), help="output folder")
    args = parser.parse_args()

    model = xvit.load_model("shapes-vit-tiny-spurious")
    batch = make_shapes("spurious", args.n, split="test", marker="random")
    x, _ = xvit.load_images([image.permute(1, 2, 0).numpy() for image in batch.images], model)
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    others = batch.labels != 0
    print(f"{args.n} spurious test images, marker on {int(batch.marker.sum())} of them (independent of the class)")
    for marked, name in ((True, "with the marker"), (False, "without the marker")):
        subset = others & (batch.marker == marked)
        rate = f"{(predicted[subset] == 0).float().mean().item():6.1%}" if subset.any() else "     -"
        print(f"other-class images {name:<19} called circle: {rate} (of {int(subset.sum())})")

    result = evaluate(model, f"xvit-shapes:spurious:test:{args.n}:marker=random", methods=METHODS,
                      metrics=("marker_share",), out_dir=args.out, batch_size=min(args.n, 16))
    print(f"{'method':<26}{'share on marker':>16}{'chance':>9}{'lift':>7}{'explained as circle':>21}"
          f"{'other images':>14}")
    for row in result.summary:
        if row["column"] != "marker_share" or row["status"] != "ok":
            continue
        d = row["details"]
        print(f"{row['method']:<26}{_fmt(row['value'], 16, 3)}{_fmt(d['chance'], 9, 3)}{_fmt(d['lift'], 7, 1)}"
              f"{_fmt(d['shortcut_share'], 21, 3)}{_fmt(d['other_share'], 14, 3)}")
    print(f"summary, per-image shares and provenance: {result.out_dir}")


def _fmt(value: float | None, width: int, digits: int) -> str:
    """``value`` right-aligned in ``width`` characters, or ``-`` where no image of the subset was included."""
    if value is None or value != value:  # None or NaN
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


if __name__ == "__main__":
    main()
