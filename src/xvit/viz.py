"""Colour maps, overlays, colour bars, comparison figures and curve plots: the only xvit module that uses matplotlib.

How a map becomes a picture (``docs/pictures.md`` explains how to read one):

* **Unsigned maps** (rollout, Grad-CAM, ...) are min-max scaled and coloured with a perceptually uniform
  sequential map (``inferno``; pass ``cmap="jet"`` for the Grad-CAM look), blended at a constant opacity.
* **Signed maps** (gradients, LRP, ...) are divided by the 99th percentile of their magnitude and clipped to
  [-1, 1], so a few extreme pixels do not wash out the rest (Captum's ``outlier_perc`` plays this part, with a
  cumulative-sum threshold). They are coloured with a diverging map centred on zero (``RdBu_r``: red supports the
  class, blue opposes it), and each pixel's opacity grows with its magnitude, so the image shows through where
  the relevance is small. ``sign=`` draws only a part, as Captum's ``visualize_image_attr`` does: ``positive``
  (reds), ``negative`` (blues, the magnitude of the negative part) or ``absolute_value`` (``inferno``).
* Maps at a lower resolution than the image are upsampled bilinearly *before* they are coloured, so colours
  blend smoothly. Pixel maps of ViTs repeat a pattern in every patch (the gradient through the patch
  embedding); drawn raw it reads as a checkerboard, so ``smooth=`` blurs the map with a Gaussian first
  (explanations of pixel methods default to half a patch) and ``pool="patch"`` averages it over each patch.

Maps stay torch tensors until they are coloured. Figures are built without pyplot, so nothing needs a display.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from xvit.utils.filters import gaussian_blur
from xvit.utils.maps import normalise_maps, upsample_maps

__all__ = ["DEFAULT_CMAP", "DIVERGING_CMAP", "SIGNS", "SIGN_CMAPS", "colour_bar_figure", "comparison_grid",
           "explanation_overlays", "explanation_scale", "map_scale", "overlay_explanation", "plot_attribution",
           "plot_curves", "save_grid", "show_on_image", "thumbnail_png"]

DEFAULT_CMAP = "inferno"
DIVERGING_CMAP = "RdBu_r"
SIGNS = ("all", "positive", "negative", "absolute_value")
"""What of a signed map to draw (Captum's ``sign``): both signs, one of them, or the magnitude."""
SIGN_CMAPS = {"all": DIVERGING_CMAP, "positive": "Reds", "negative": "Blues", "absolute_value": DEFAULT_CMAP}
UNSIGNED_ALPHA = 0.5
"""Default opacity of an unsigned map's colours (constant over the image)."""
SIGNED_ALPHA = 0.8
"""Default opacity of a signed map's strongest pixels; weaker ones fade linearly to transparent at zero."""
PERCENTILE = 99.0
"""The percentile of the magnitude that maps to the ends of a signed colour scale."""


# ------------------------------------------------------------------------------------------------ one map


def map_scale(map2d: Tensor | np.ndarray, size: tuple[int, int] | None = None, *, signed: bool | None = None,
              sign: str | None = None, pool: int | tuple[int, int] | None = None, smooth: float = 0.0,
              percentile: float = PERCENTILE) -> tuple[float, float]:
    """The map values at the two ends of the colour bar of :func:`show_on_image` (same arguments): ``(-s, s)`` for
    ``sign="all"`` (``s`` the ``percentile`` of the magnitude of the map as drawn), ``(0, s)`` for the other signs,
    and the map's ``(min, max)`` for unsigned maps."""
    return _prepare(map2d, size, signed, sign, pool, smooth, percentile)[2]


def show_on_image(image: Any, map2d: Tensor | np.ndarray, *, signed: bool | None = None, sign: str | None = None,
                  alpha: float | None = None, cmap: str | Colormap | None = None,
                  pool: int | tuple[int, int] | None = None, smooth: float = 0.0,
                  percentile: float = PERCENTILE) -> np.ndarray:
    """A heat map blended over an image, as uint8 ``(H, W, 3)`` (what grad-cam's ``show_cam_on_image`` returns).

    Args:
        image: the display image: PIL, or an ``(H, W, 3)`` / ``(H, W)`` array (uint8, or float in [0, 1]).
        map2d: a map ``(h, w)`` at any resolution; it is upsampled bilinearly to ``(H, W)`` before colouring.
        signed: whether the map is signed; ``None`` reads it from the values (any negative value).
        sign: for signed maps, what to draw (:data:`SIGNS`; default ``"all"``). Any map may be drawn with a
            ``sign``; ``None`` draws an unsigned map min-max scaled.
        alpha: opacity in [0, 1]: constant for unsigned maps (default 0.5); for signed ones the opacity of the
            strongest pixels, fading with the magnitude (default 0.8).
        cmap: a matplotlib colormap or its name (default :data:`SIGN_CMAPS`, ``inferno`` for unsigned maps).
        pool: average the map over ``pool`` x ``pool`` blocks first (e.g. the patch size).
        smooth: standard deviation, in map pixels, of a Gaussian blur applied first (0: none).
        percentile: the percentile of the magnitude that saturates the colours of a signed map.
    """
    rgb = _rgb_array(image)
    values, weight, _, drawn = _prepare(map2d, rgb.shape[:2], signed, sign, pool, smooth, percentile)
    return _blend(rgb, values, weight, alpha, cmap, drawn)


def plot_attribution(map2d: Tensor | np.ndarray, image: Any = None, *, sign: str | None = None,
                     signed: bool | None = None, ax: Any = None, alpha: float | None = None,
                     cmap: str | Colormap | None = None, colorbar: bool = True, title: str | None = None,
                     pool: int | tuple[int, int] | None = None, smooth: float = 0.0,
                     percentile: float = PERCENTILE) -> Figure:
    """Draw one map, over ``image`` when given, with a colour bar in the map's own units.

    ``sign`` follows Captum's ``visualize_image_attr``: ``"all"`` (diverging, both signs), ``"positive"``,
    ``"negative"`` (the magnitude of the negative part) or ``"absolute_value"``; ``None`` draws signed maps with
    ``"all"`` and unsigned maps min-max scaled. The other arguments are those of :func:`show_on_image`.

    Returns:
        The figure drawn on: ``ax``'s, or a new 4 x 3.4 inch one.
    """
    if ax is None:
        fig = Figure(figsize=(4.0, 3.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    m = _as_map(map2d)
    size = tuple(m.shape) if image is None else _rgb_array(image).shape[:2]
    values, weight, (low, high), drawn = _prepare(m, size, signed, sign, pool, smooth, percentile)
    if image is None:
        colours = _colours(values, cmap, drawn)
    else:
        colours = _blend(_rgb_array(image), values, weight, alpha, cmap, drawn)
    ax.imshow(colours)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        label = {"all": "relevance (red: for, blue: against)", None: "relevance (min to max)"}.get(drawn)
        fig.colorbar(ScalarMappable(Normalize(low, high), _colormap(cmap, drawn)), ax=ax, shrink=0.85,
                     label=label or f"relevance ({str(drawn).replace('_', ' ')} part)")
    return fig


def colour_bar_figure(signed: bool, *, sign: str | None = None, cmap: str | Colormap | None = None,
                      width_inches: float = 3.2) -> Figure:
    """A stand-alone horizontal colour bar of the overlays, for pages that show overlay images (save it with
    :func:`save_grid`). Its scale is relative, as each overlay has its own: ``-p99 … 0 … +p99`` of ``|map|`` for
    signed maps, ``min … max`` for unsigned ones."""
    fig = Figure(figsize=(width_inches, 0.75), layout="constrained")
    _colour_bar(fig, signed, sign, cmap, cax=fig.add_subplot(), orientation="horizontal")
    return fig


def _colour_bar(fig: Figure, signed: bool, sign: str | None, cmap: Any, **kw: Any) -> None:
    """A colour bar of relative scale (``cax=`` to draw into an axes, ``ax=`` to take room from axes)."""
    drawn = sign if sign is not None else ("all" if signed else None)
    if drawn == "all":
        p = f"p{PERCENTILE:g}"
        norm, ticks, labels = Normalize(-1, 1), [-1, 0, 1], [f"−{p}", "0", f"+{p}"]
        label = f"signed maps: red for the class, blue against it ({p}: {PERCENTILE:g}th percentile of |map|)"
    elif drawn is None:
        norm, ticks, labels, label = Normalize(0, 1), [0, 1], ["min", "max"], "unsigned maps (min-max per map)"
    else:
        norm, ticks, labels = Normalize(0, 1), [0, 1], ["0", f"p{PERCENTILE:g}"]
        label = f"{drawn.replace('_', ' ')} part"
    bar = fig.colorbar(ScalarMappable(norm, _colormap(cmap, drawn)), **kw)
    bar.set_ticks(ticks, labels=labels)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(label, fontsize=7)


# ----------------------------------------------------------------------------------------- explanations


def explanation_overlays(exp: Any, images: Any = None, *, alpha: float | None = None,
                         cmap: str | Colormap | None = None, sign: str | None = None,
                         pool: int | tuple[int, int] | str | None = None, smooth: float | None = None,
                         percentile: float = PERCENTILE) -> np.ndarray:
    """Overlays of every image and explained class of an :class:`~xvit.Explanation`: uint8 ``(B, K, H, W, 3)``.

    Signed methods are drawn from ``exp.raw`` around zero (``sign`` as in :func:`show_on_image`), the others
    min-max scaled. ``images`` are the display images (PIL images or ``(H, W, 3)`` arrays, one ``(B, H, W, 3)``
    array, or for one image the image itself); ``None`` gives the coloured maps alone at the input size.
    ``pool="patch"`` averages over the model's patches; ``smooth=None`` blurs pixel maps with a Gaussian of half a
    patch (0 to draw them raw).
    """
    raw = exp.raw.detach().to("cpu", torch.float32)
    batch, num_targets = raw.shape[:2]
    sign, pool, smooth = _drawing(exp, sign, pool, smooth)
    if images is None:
        size = tuple(exp.maps.shape[-2:])
        out = np.empty((batch, num_targets, *size, 3), np.uint8)
        for b in range(batch):
            for k in range(num_targets):
                values, _, _, drawn = _prepare(raw[b, k], size, exp.signed, sign, pool, smooth, percentile)
                out[b, k] = _colours(values, cmap, drawn)
        return out
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]  # one display image
    rgbs = [_rgb_array(im) for im in images]
    if len(rgbs) != batch:
        raise ValueError(f"The explanation covers {batch} image(s) but {len(rgbs)} display image(s) were given.")
    if len({r.shape for r in rgbs}) != 1:
        raise ValueError("Display images of different sizes cannot be stacked; pass them one by one to "
                         "xvit.viz.show_on_image.")
    out = np.empty((batch, num_targets, *rgbs[0].shape), np.uint8)
    for b in range(batch):
        for k in range(num_targets):
            values, weight, _, drawn = _prepare(raw[b, k], rgbs[b].shape[:2], exp.signed, sign, pool, smooth,
                                                percentile)
            out[b, k] = _blend(rgbs[b], values, weight, alpha, cmap, drawn)
    return out


def explanation_scale(exp: Any, b: int, k: int = 0, size: tuple[int, int] | None = None, *, sign: str | None = None,
                      pool: int | tuple[int, int] | str | None = None, smooth: float | None = None,
                      percentile: float = PERCENTILE) -> tuple[float, float]:
    """The values of map ``(b, k)`` of ``exp`` at the two ends of its overlay's colour bar (the arguments of
    :func:`explanation_overlays`; ``size`` is the display size, the input size by default)."""
    sign, pool, smooth = _drawing(exp, sign, pool, smooth)
    size = tuple(exp.maps.shape[-2:]) if size is None else size
    return _prepare(exp.raw[b, k], size, exp.signed, sign, pool, smooth, percentile)[2]


def overlay_explanation(exp: Any, images: Sequence[Any], alpha: float | None = None,
                        cmap: str | Colormap | None = None, **kwargs: Any) -> list[list[Image.Image]]:
    """:func:`explanation_overlays` as PIL images, ``result[b][k]``, ready to ``.save``."""
    arrays = explanation_overlays(exp, images, alpha=alpha, cmap=cmap, **kwargs)
    return [[Image.fromarray(a) for a in per_image] for per_image in arrays]


def thumbnail_png(exp: Any, max_images: int = 4, max_targets: int = 4, side: int = 64) -> str:
    """A base64 PNG of the coloured maps of ``exp`` (first ``max_images`` rows x ``max_targets`` columns, each
    ``side`` pixels high), for an HTML ``<img>``; the thumbnail of :meth:`Explanation._repr_html_`."""
    maps = explanation_overlays(exp)[:max_images, :max_targets]
    rows, cols, h, w = maps.shape[:4]
    tw = max(1, round(side * w / h))
    sheet = Image.new("RGB", (cols * (tw + 2), rows * (side + 2)), (255, 255, 255))
    for b in range(rows):
        for k in range(cols):
            tile = Image.fromarray(maps[b, k]).resize((tw, side), Image.Resampling.BILINEAR)
            sheet.paste(tile, (k * (tw + 2) + 1, b * (side + 2) + 1))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def comparison_grid(images: Sequence[Any], explanations: Mapping[str, Any],
                    class_names: Sequence[str] | None = None, *, true_labels: Sequence[str] | None = None,
                    k: int = 0, alpha: float | None = None, cmap: str | Colormap | None = None,
                    cell_inches: float = 2.2, colorbar: bool = True) -> Figure:
    """A figure with one row per image and one column per method, after a column of the images.

    Args:
        images: display images, one per row.
        explanations: method name -> :class:`~xvit.Explanation` of those images (same batch).
        class_names: names indexed by class; indices are shown without them.
        true_labels: optional ground-truth label per image, shown under the prediction.
        k: which explained class of each explanation to draw.
        alpha, cmap: as in :func:`show_on_image`.
        cell_inches: size of one panel.
        colorbar: add a colour bar under the grid for each kind of map shown (signed, unsigned).

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

    bar_inches = 0.6 if colorbar else 0.0
    fig = Figure(figsize=(cols * cell_inches, rows * cell_inches * 1.15 + bar_inches), layout="constrained")
    panels, bars = fig.subfigures(2, 1, height_ratios=[rows * cell_inches * 1.15, bar_inches or 1e-6])
    axes = panels.subplots(rows, cols, squeeze=False)
    overlays = {m: explanation_overlays(e, images, alpha=alpha, cmap=cmap) for m, e in explanations.items()}
    for b in range(rows):
        pred = int(probs[b].argmax())
        title = f"pred: {name(pred)} ({probs[b, pred]:.2f})"
        if true_labels is not None:
            title += f"\ntrue: {true_labels[b]}"
        _panel(axes[b, 0], _rgb_array(images[b]) / 255.0, title)
        for j, (method, exp) in enumerate(explanations.items(), start=1):
            target = int(exp.targets[b, k])
            _panel(axes[b, j], overlays[method][b, k], f"{method}\n{name(target)} ({probs[b, target]:.2f})")
    # one colour bar per kind of map shown, side by side under the method columns
    kinds = sorted({bool(e.signed) for e in explanations.values()}, reverse=True) if colorbar else []
    if kinds:
        slots = bars.add_gridspec(1, 4 * cols)  # quarter columns: each bar leaves a quarter free at both ends
        bounds = np.linspace(4, 4 * cols, len(kinds) + 1).round().astype(int)
        for signed, start, stop in zip(kinds, bounds[:-1], bounds[1:], strict=True):
            _colour_bar(bars, signed, None, cmap, cax=bars.add_subplot(slots[0, start + 1:stop - 1]),
                        orientation="horizontal")
    return fig


# ------------------------------------------------------------------------------------------------ curves


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


# ------------------------------------------------------------------------------------------------ helpers


def _panel(ax: Any, image: Any, title: str) -> None:
    ax.imshow(image)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _rgb_array(image: Any) -> np.ndarray:
    """A display image as float ``(H, W, 3)`` in [0, 255]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"Expected a PIL image or an (H, W, 3) array; got shape {a.shape}.")
    return a.astype(np.float64) if a.dtype == np.uint8 else np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0


def _as_map(map2d: Tensor | np.ndarray) -> Tensor:
    m = torch.as_tensor(np.asarray(map2d) if not isinstance(map2d, Tensor) else map2d)
    m = m.detach().to("cpu", torch.float32)
    if m.ndim != 2:
        raise ValueError(f"Expected a 2-D map (h, w); got shape {tuple(m.shape)}. Pick one with exp.raw[b, k].")
    if not torch.isfinite(m).all():
        raise ValueError("The map holds NaN or infinite values.")
    return m


def _patch_size(exp: Any) -> tuple[int, int] | None:
    layout = exp.meta.get("layout") if isinstance(exp.meta, Mapping) else None
    patch = layout.get("patch_size") if isinstance(layout, Mapping) else None
    if patch is None:
        return None
    return (int(patch), int(patch)) if isinstance(patch, (int, float)) else tuple(int(p) for p in patch)


def _drawing(exp: Any, sign: str | None, pool: Any, smooth: float | None) -> tuple[str | None, Any, float]:
    """An explanation's drawing options resolved: ``"all"`` for signed methods, ``pool="patch"`` as the patch size,
    and by default half a patch of blur for maps at pixel resolution (none for patch maps)."""
    patch = _patch_size(exp)
    if isinstance(pool, str):
        if pool != "patch":
            raise ValueError(f"pool must be an int, (ph, pw), 'patch' or None; got {pool!r}.")
        if patch is None:
            raise ValueError("pool='patch' needs the explanation's token layout (meta['layout']); pass pool=P.")
        pool = patch
    if smooth is None:
        pixel_map = tuple(exp.raw.shape[-2:]) == tuple(exp.maps.shape[-2:]) and patch is not None and pool is None
        smooth = max(patch) / 2 if pixel_map else 0.0
    return (sign if sign is not None or not exp.signed else "all"), pool, smooth


def _prepare(map2d: Tensor | np.ndarray, size: tuple[int, int] | None, signed: bool | None, sign: str | None,
             pool: Any, smooth: float, percentile: float
             ) -> tuple[Tensor, Tensor | None, tuple[float, float], str | None]:
    """A map brought to ``size`` and scaled: ``(values in [0, 1] for the colormap, per-pixel opacity weights in
    [0, 1] (None: constant), the map values at the colour bar's ends, the sign drawn (None: min-max))``."""
    if sign is not None and sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(SIGNS)}; got {sign!r}.")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100]; got {percentile!r}.")
    m = _as_map(map2d)
    if signed is None:
        signed = bool((m < 0).any())
    if pool is not None:
        ph, pw = (int(pool), int(pool)) if isinstance(pool, (int, float)) else (int(pool[0]), int(pool[1]))
        if ph < 1 or pw < 1:
            raise ValueError(f"pool must be positive; got {pool!r}.")
        m = F.avg_pool2d(m[None, None], (ph, pw), ceil_mode=True)[0, 0]
    if smooth < 0 or not math.isfinite(smooth):
        raise ValueError(f"smooth is a standard deviation in map pixels (>= 0); got {smooth!r}.")
    if smooth > 0:
        k = 2 * math.ceil(3 * smooth) + 1
        padding = "reflect" if min(m.shape) > k // 2 else "zeros"
        m = gaussian_blur(m[None, None], k, smooth, padding=padding)[0, 0]
    m = upsample_maps(m, tuple(size)) if size is not None else m
    if sign is None and not signed:
        return normalise_maps(m), None, (float(m.min()), float(m.max())), None
    sign = sign or "all"
    part = {"all": m.abs(), "positive": m.clamp(min=0), "negative": (-m).clamp(min=0),
            "absolute_value": m.abs()}[sign]
    scale = float(np.percentile(part.numpy(), percentile)) or float(part.max())
    if scale <= 0:
        return torch.full_like(m, 0.5 if sign == "all" else 0.0), torch.zeros_like(m), (0.0, 0.0), sign
    if sign == "all":
        v = (m / scale).clamp(-1, 1)
        return v * 0.5 + 0.5, v.abs(), (-scale, scale), sign
    v = (part / scale).clamp(0, 1)
    return v, v, (0.0, scale), sign


def _colormap(cmap: str | Colormap | None, sign: str | None) -> Colormap:
    if cmap is None:
        cmap = SIGN_CMAPS[sign] if sign is not None else DEFAULT_CMAP
    return matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap


def _colours(values: Tensor, cmap: str | Colormap | None, sign: str | None) -> np.ndarray:
    """Coloured values as uint8 ``(H, W, 3)``."""
    return np.round(_colormap(cmap, sign)(values.numpy())[..., :3] * 255.0).astype(np.uint8)


def _blend(rgb: np.ndarray, values: Tensor, weight: Tensor | None, alpha: float | None,
           cmap: str | Colormap | None, sign: str | None) -> np.ndarray:
    """``rgb`` under the coloured ``values``: opacity ``alpha``, times ``weight`` per pixel where given."""
    if alpha is None:
        alpha = UNSIGNED_ALPHA if weight is None else SIGNED_ALPHA
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}.")
    colours = _colormap(cmap, sign)(values.numpy())[..., :3] * 255.0
    a = alpha * (weight.numpy()[..., None] if weight is not None else 1.0)
    return np.round((1.0 - a) * rgb + a * colours).astype(np.uint8)
