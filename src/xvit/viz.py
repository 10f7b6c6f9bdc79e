"""Colour maps, overlays, comparison figures and curve plots: the only xvit module that uses matplotlib.

Non-negative maps are min-max scaled and coloured with a perceptually uniform map (``inferno``; pass
``cmap="jet"`` for the Grad-CAM look). Signed maps are divided by the 99th percentile of their
magnitude (clipped to [-1, 1], so a few extreme pixels do not wash out the rest, as Captum's
``outlier_perc`` does) and coloured with a diverging map centred on zero (``RdBu_r``: red supports the
class, blue opposes it). Maps stay
torch tensors until they are coloured. Figures are built without pyplot, so nothing needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from xvit.utils.maps import normalise_maps, upsample_maps

__all__ = ["DEFAULT_CMAP", "DIVERGING_CMAP", "overlay", "overlay_explanation", "comparison_grid", "plot_curves",
           "save_grid"]

DEFAULT_CMAP = "inferno"
DIVERGING_CMAP = "RdBu_r"


def overlay(image: Image.Image | np.ndarray, map2d: Tensor | np.ndarray, signed: bool = False,
            alpha: float = 0.5, cmap: str | Colormap | None = None) -> Image.Image:
    """Blend a coloured heat map over an image.

    Args:
        image: the display image: PIL, or an ``(H, W, 3)`` array (uint8, or float in [0, 1]).
        map2d: a map ``(h, w)`` at any resolution; it is upsampled bilinearly to ``(H, W)``.
        signed: colour with a diverging map centred on zero (``map2d`` over the 99th percentile of
            ``|map2d|``, clipped to [-1, 1]) instead of min-max scaling.
        alpha: weight of the heat map, in [0, 1].
        cmap: a matplotlib colormap or its name; defaults to ``inferno`` (``RdBu_r`` when signed).

    Returns:
        An RGB PIL image of the display image's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}.")
    rgb = _rgb_array(image)
    colours = _colorize(map2d, rgb.shape[:2], signed, cmap)
    return Image.fromarray(np.round((1.0 - alpha) * rgb + alpha * colours).astype(np.uint8))


def overlay_explanation(exp: Any, images: Sequence[Any], alpha: float = 0.5,
                        cmap: str | Colormap | None = None) -> list[list[Image.Image]]:
    """Overlays for every image and explained class of ``exp``: ``result[b][k]``.

    Signed methods are drawn from ``exp.raw`` (sign kept), the others from ``exp.maps``.
    """
    batch, num_targets = exp.maps.shape[:2]
    if len(images) != batch:
        raise ValueError(f"The explanation covers {batch} image(s) but {len(images)} display image(s) "
                         "were given.")
    source = exp.raw if exp.signed else exp.maps
    return [[overlay(images[b], source[b, k], signed=exp.signed, alpha=alpha, cmap=cmap)
             for k in range(num_targets)] for b in range(batch)]


def comparison_grid(images: Sequence[Any], explanations: Mapping[str, Any],
                    class_names: Sequence[str] | None = None, *, true_labels: Sequence[str] | None = None,
                    k: int = 0, alpha: float = 0.5, cmap: str | Colormap | None = None,
                    cell_inches: float = 2.2) -> Figure:
    """A figure with one row per image and one column per method, after a column of the images.

    Args:
        images: display images, one per row.
        explanations: method name -> :class:`~xvit.Explanation` of those images (same batch).
        class_names: names indexed by class; indices are shown without them.
        true_labels: optional ground-truth label per image, shown under the prediction.
        k: which explained class of each explanation to draw.
        alpha, cmap: as in :func:`overlay`.
        cell_inches: size of one panel.

    The first column is titled with the predicted class and its probability, every other panel with
    the method name and the explained class with its probability.
    """
    if not explanations:
        raise ValueError("comparison_grid needs at least one explanation.")
    first = next(iter(explanations.values()))
    probs = first.logits.detach().float().softmax(-1).cpu()
    rows, cols = len(images), len(explanations) + 1
    if rows != probs.shape[0]:
        raise ValueError(f"{rows} image(s) given for explanations of {probs.shape[0]} image(s).")

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    fig = Figure(figsize=(cols * cell_inches, rows * cell_inches * 1.15), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    overlays = {m: overlay_explanation(e, images, alpha=alpha, cmap=cmap) for m, e in explanations.items()}
    for b in range(rows):
        pred = int(probs[b].argmax())
        title = f"pred: {name(pred)} ({probs[b, pred]:.2f})"
        if true_labels is not None:
            title += f"\ntrue: {true_labels[b]}"
        _panel(axes[b, 0], _rgb_array(images[b]) / 255.0, title)
        for j, (method, exp) in enumerate(explanations.items(), start=1):
            target = int(exp.targets[b, k])
            _panel(axes[b, j], overlays[method][b][k], f"{method}\n{name(target)} ({probs[b, target]:.2f})")
    if any(e.signed for e in explanations.values()):
        fig.supxlabel("signed maps: red supports the class, blue opposes it", fontsize=8)
    return fig


def plot_curves(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], xlabel: str, ylabel: str) -> Figure:
    """Line plots side by side: one 5 × 3.8 inch panel per entry of ``curves``, one line per series.

    Args:
        curves: ``{panel title: {series label: curve}}``; a curve maps ``"x"`` and ``"y"`` to sequences of
            equal length and may map ``"labels"`` to tick labels at ``x`` (drawn rotated, e.g. the units of a
            randomisation test). Other keys are ignored.
        xlabel, ylabel: axis labels of every panel.

    Returns:
        The figure; write it with :func:`save_grid` (``xvit evaluate`` draws its ``curves/*.png`` this way).
    """
    if not curves:
        raise ValueError("plot_curves needs at least one panel.")
    fig = Figure(figsize=(5 * len(curves), 3.8), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (title, series) in zip(axes, curves.items(), strict=True):
        for label, c in series.items():
            ax.plot(c["x"], c["y"], marker="o", markersize=3, label=label)
            if "labels" in c:
                ax.set_xticks(c["x"], c["labels"], rotation=60, fontsize=7)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def save_grid(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a figure to ``path`` (format from the suffix), creating folders; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def _panel(ax: Any, image: Any, title: str) -> None:
    ax.imshow(image)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _rgb_array(image: Any) -> np.ndarray:
    """A display image as float ``(H, W, 3)`` in [0, 255]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"Expected a PIL image or an (H, W, 3) array; got shape {a.shape}.")
    return a.astype(np.float64) if a.dtype == np.uint8 else np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0


def _colorize(map2d: Tensor | np.ndarray, size: tuple[int, int], signed: bool,
              cmap: str | Colormap | None) -> np.ndarray:
    """``map2d`` upsampled to ``size``, scaled to [0, 1] and coloured: ``(H, W, 3)`` in [0, 255]."""
    m = torch.as_tensor(map2d).detach().to("cpu", torch.float32)
    if m.ndim != 2:
        raise ValueError(f"Expected a 2-D map (h, w); got shape {tuple(m.shape)}.")
    if not torch.isfinite(m).all():
        raise ValueError("The map holds NaN or infinite values.")
    m = upsample_maps(m, size)
    if signed:
        scale = torch.quantile(m.abs().flatten(), 0.99)
        scale = scale if scale > 0 else m.abs().max()
        v = ((m / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(m)) * 0.5 + 0.5
    else:
        v = normalise_maps(m)
    if cmap is None:
        cmap = DIVERGING_CMAP if signed else DEFAULT_CMAP
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colormap(v.numpy())[..., :3] * 255.0
