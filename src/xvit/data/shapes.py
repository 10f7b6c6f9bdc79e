"""xvit-shapes: a procedural benchmark with pixel-exact ground truth for explanation methods.

Each RGB image holds textured background, distractor clutter (thin lines, small dots, small irregular
blobs, thin partial arcs; none resembles a class) and one class object (``single``; two of different
classes in ``pair``) whose shape alone decides the label. Class objects are drawn last and never overlap
one another, so a mask is exactly the object's visible pixels, all of them in the object's single colour.
Distractor colours keep a distance from the object colour, so the object's outline stays readable.

The ``spurious`` variant adds a fixed magenta square in the top-left corner. In the ``train`` and ``val``
splits it accompanies 90 % of class-0 images and 2 % of the others; in ``test`` it appears on a fair coin
flip, independent of the class. Class objects keep clear of the corner, so the marker never covers one. The
``marker`` option picks another policy, e.g. ``exclusive`` (90 % of class-0 images, none of the others), on which
the bundled spurious model is trained.

Image ``i`` of a variant and split is rendered from its own generator, ``PCG64(seed_i)`` with ``seed_i``
derived from ``(base seed, i)``: the bytes do not depend on ``n`` or on batching. Bump
``GENERATOR_VERSION`` whenever a change alters the bytes.

Throughput at 112x112 on one core (AMD EPYC, numpy 2.4): 1,490 ``single``, 1,440 ``pair`` and 1,720
``spurious`` images per CPU-second (about 0.7 ms an image; masks and boxes included), measured with
``OMP_NUM_THREADS=1 python -c "import time; from xvit.data import make_shapes; t=time.process_time();
make_shapes('single', 2000); print(2000 / (time.process_time() - t))"``.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_CLASSES", "VARIANTS", "SPLITS", "GENERATOR_VERSION", "MARKER_COLOR", "MARKER_MODES", "P_MARKER_CLASS0",
    "P_MARKER_OTHER",
    "ShapesBatch", "ShapesDataset", "default_seed", "image_seed", "make_shapes", "marker_box", "resolve_marker_mode",
    "shapes_labels", "write_shapes",
]

GENERATOR_VERSION = "1"
SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "arrow", "diamond",
)
VARIANTS = ("single", "pair", "spurious")
SPLITS = ("train", "val", "test")
MARKER_COLOR = (255, 0, 255)
MARKER_MODES = ("correlated", "exclusive", "random", "aligned", "none")
P_MARKER_CLASS0 = 0.9
"""``spurious``, ``train``/``val`` splits: probability that a class-0 image carries the marker."""
P_MARKER_OTHER = 0.02
"""``spurious``, ``train``/``val`` splits: probability that an image of another class carries the marker."""
_BASE_SEEDS = {
    (v, s): 1_000 * (i + 1) + j for i, v in enumerate(VARIANTS) for j, s in enumerate(SPLITS)
}


def default_seed(variant: str, split: str) -> int:
    """The base seed of a variant's split; each (variant, split) pair has its own."""
    _check(variant, split)
    return _BASE_SEEDS[(variant, split)]


def image_seed(base_seed: int, index: int) -> int:
    """The 63-bit seed of image ``index`` under ``base_seed``; ``PCG64(image_seed)`` renders it."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass
class ShapesBatch:
    """Rendered images with their ground truth.

    ``images`` (N, 3, H, W) uint8; ``labels`` (N,) int64, or (N, 2) for ``pair`` (ascending); ``masks``
    (N, H, W) bool, or (N, 2, H, W) matching ``labels``; ``boxes`` (N, 4) or (N, 2, 4) as (x0, y0, x1, y1)
    with exclusive x1, y1; ``seeds`` (N,) per-image seeds; ``marker`` (N,) bool and ``marker_boxes``
    (N, 4) (zeros where absent) for ``spurious``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    class_names: list[str]
    seeds: torch.Tensor
    marker: torch.Tensor
    marker_boxes: torch.Tensor
    variant: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]


def _check(variant: str, split: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown xvit-shapes variant {variant!r}; choose one of {list(VARIANTS)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}.")


# ---------------------------------------------------------------------------------------------- shapes


def _class_shape(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of class ``cls`` in object coordinates (unit circumradius, already rotated)."""
    name = SHAPE_CLASSES[cls]
    if name == "circle":
        return u * u + v * v <= 0.9**2
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if name == "triangle":
        return _regular_polygon(u, v, 3)
    if name == "star":
        return _star(u, v, 5, inner=0.42)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.95) & (av <= 0.3)) | ((av <= 0.95) & (au <= 0.3))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.58**2)
    if name == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.8**2)
    if name == "heart":
        x, y = 1.25 * u, 0.15 - 1.25 * v
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if name == "arrow":
        shaft = (u >= -1.0) & (u <= 0.15) & (np.abs(v) <= 0.2)
        head = (u >= 0.15) & (u <= 1.0) & (np.abs(v) <= 0.65 * (1.0 - u) / 0.85)
        return shaft | head
    if name == "diamond":
        return np.abs(u) + 2.0 * np.abs(v) <= 1.0
    raise AssertionError(name)


def _regular_polygon(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    apothem = math.cos(math.pi / k)
    inside = np.ones(u.shape, dtype=bool)
    for j in range(k):
        a = 2 * math.pi * j / k + math.pi / k
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _star(u: np.ndarray, v: np.ndarray, k: int, inner: float) -> np.ndarray:
    sector = 2 * math.pi / k
    a = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)
    rho = np.hypot(u, v)
    x, y = rho * np.cos(a), rho * np.sin(a)
    # Edge from the outer vertex (1, 0) to the inner vertex at angle sector / 2: origin side is inside.
    ix, iy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    return (ix - 1.0) * y - iy * (x - 1.0) >= 0.0


def _window(size: int, cx: float, cy: float, reach: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Pixel window around (cx, cy) and pixel-centre offsets from it, clipped to the image."""
    x0, x1 = max(0, int(cx - reach)), min(size, int(math.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(size, int(math.ceil(cy + reach)) + 1)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    return slice(y0, y1), slice(x0, x1), dx, dy


def _object_mask(size: int, cls: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    ys, xs, dx, dy = _window(size, cx, cy, radius + 1)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * dx + s * dy) / radius, (-s * dx + c * dy) / radius
    mask[ys, xs] = _class_shape(cls, u, v)
    return mask


# ------------------------------------------------------------------------------------------ clutter


def _paint(img: np.ndarray, ys: slice, xs: slice, inside: np.ndarray, color: np.ndarray) -> None:
    img[ys, xs][inside] = color


def _distractor(img: np.ndarray, rng: np.random.Generator, color: np.ndarray) -> None:
    """One non-class clutter item: thin line, small dot, small irregular blob or thin partial arc."""
    size = img.shape[0]
    kind = rng.integers(4)
    cx, cy = rng.uniform(0, size, 2)
    if kind == 0:  # thin line segment
        length = rng.uniform(0.15, 0.4) * size
        width = rng.uniform(1.0, 1.8)
        a = rng.uniform(0, math.pi)
        ex, ey = math.cos(a) * length / 2, math.sin(a) * length / 2
        ys, xs, dx, dy = _window(size, cx, cy, length / 2 + width)
        t = np.clip((dx * ex + dy * ey) / (ex * ex + ey * ey), -1.0, 1.0)
        inside = (dx - t * ex) ** 2 + (dy - t * ey) ** 2 <= (width / 2) ** 2
    elif kind == 1:  # small dot
        r = rng.uniform(0.012, 0.03) * size
        ys, xs, dx, dy = _window(size, cx, cy, r + 1)
        inside = dx * dx + dy * dy <= r * r
    elif kind == 2:  # small irregular blob: elongated, lumpy outline
        r0 = rng.uniform(0.03, 0.05) * size
        amp = rng.uniform([0.25, 0.0, 0.0], [0.4, 0.15, 0.15])
        phase = rng.uniform(0, 2 * math.pi, 3)
        ys, xs, dx, dy = _window(size, cx, cy, r0 * 1.8 + 1)
        theta = np.arctan2(dy, dx)
        rad = r0 * (1 + sum(amp[k] * np.cos((k + 2) * theta + phase[k]) for k in range(3)))
        inside = dx * dx + dy * dy <= rad * rad
    else:  # thin partial arc
        r = rng.uniform(0.05, 0.14) * size
        width = rng.uniform(1.2, 2.2)
        start, span = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(60), math.radians(200))
        ys, xs, dx, dy = _window(size, cx, cy, r + width)
        rho = np.hypot(dx, dy)
        ang = np.mod(np.arctan2(dy, dx) - start, 2 * math.pi)
        inside = (np.abs(rho - r) <= width / 2) & (ang <= span)
    _paint(img, ys, xs, inside, color)


@functools.lru_cache(maxsize=32)
def _upsample_matrix(size: int, k: int) -> np.ndarray:
    """(size, k) bilinear interpolation weights from a k-point grid spanning the image."""
    pos = (np.arange(size) + 0.5) / size * (k - 1)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    frac = pos - lo
    m = np.zeros((size, k), dtype=np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return c[None, :], c[:, None]


def _background(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Base colour plus a texture (smooth noise, stripes or gradient) and smooth noise, within +-36."""
    k = int(rng.integers(3, 7))
    up = _upsample_matrix(size, k)
    noise = (up @ rng.uniform(-1, 1, (3, k, k)).astype(np.float32) @ up.T).transpose(1, 2, 0)
    x, y = _grid(size)
    kind = rng.integers(3)
    a = rng.uniform(0, 2 * math.pi)
    proj = x * math.cos(a) + y * math.sin(a)
    if kind == 0:
        pattern = up @ rng.uniform(-1, 1, (k, k)).astype(np.float32) @ up.T
    elif kind == 1:
        pattern = np.sin(2 * math.pi * rng.uniform(4, 12) * proj + rng.uniform(0, 2 * math.pi))
    else:
        pattern = 2 * proj
    tint = rng.uniform(-1, 1, 3).astype(np.float32)
    img = np.multiply(noise, 12, out=noise)
    img += base
    img += (24 * pattern)[..., None] * tint
    return np.clip(img, 0, 255, out=img)


def _color(rng: np.random.Generator, away: list[np.ndarray], min_dist: float) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` from every colour in ``away`` (best of 32 draws)."""
    best, best_d2 = None, -1
    for _ in range(32):
        c = rng.integers(0, 256, 3)
        r, g, b = c.tolist()
        d2 = min(((r - ar) ** 2 + (g - ag) ** 2 + (b - ab) ** 2 for ar, ag, ab in away), default=math.inf)
        if d2 >= min_dist * min_dist:
            return c.astype(np.float32)
        if d2 > best_d2:
            best, best_d2 = c, d2
    return best.astype(np.float32)


# --------------------------------------------------------------------------------------- rendering


def _place(rng: np.random.Generator, size: int, n: int, avoid: float) -> list[tuple[float, float, float]]:
    """Centres and radii of ``n`` non-overlapping objects inside the image, clear of the
    top-left ``avoid`` x ``avoid`` corner."""
    for attempt in range(200):
        shrink = 1.0 if attempt < 100 else 0.7
        placed: list[tuple[float, float, float]] = []
        for _ in range(n):
            r = rng.uniform(0.1, 0.2) * size * shrink
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if avoid and cx - r < avoid + 1 and cy - r < avoid + 1:
                break
            if any(math.hypot(cx - px, cy - py) < r + pr + 2 for px, py, pr in placed):
                break
            placed.append((cx, cy, r))
        if len(placed) == n:
            return placed
    raise RuntimeError(f"Could not place {n} objects in a {size}x{size} image.")


def marker_box(size: int) -> tuple[int, int, int, int]:
    """The ``spurious`` marker's ``(x0, y0, x1, y1)`` box (end-exclusive) in a ``size`` x ``size`` image."""
    m = max(3, round(size * 10 / 112))
    return (1, 1, 1 + m, 1 + m)


def _draw_labels(rng: np.random.Generator, variant: str) -> np.ndarray:
    """The class(es) of an image: the first draw from its generator, so labels are known without rendering."""
    labels = rng.choice(len(SHAPE_CLASSES), size=2 if variant == "pair" else 1, replace=False)
    labels.sort()
    return labels


def _render(variant: str, marker_mode: str, seed: int, size: int) -> dict:
    rng = np.random.Generator(np.random.PCG64(seed))
    n_obj = 2 if variant == "pair" else 1
    labels = _draw_labels(rng, variant)
    bg_color = rng.uniform(40, 215, 3).astype(np.float32)
    img = _background(rng, size, bg_color)
    obj_colors: list[np.ndarray] = []
    for _ in range(n_obj):
        obj_colors.append(_color(rng, [bg_color, *obj_colors], 110.0))
    for _ in range(int(rng.integers(4, 9))):
        _distractor(img, rng, _color(rng, obj_colors, 70.0))
    has_marker = False
    if variant == "spurious":
        p = {"correlated": P_MARKER_CLASS0 if labels[0] == 0 else P_MARKER_OTHER,
             "exclusive": P_MARKER_CLASS0 if labels[0] == 0 else 0.0, "random": 0.5,
             "aligned": float(labels[0] == 0), "none": 0.0}[marker_mode]
        has_marker = bool(rng.random() < p)
    mbox = marker_box(size)
    placed = _place(rng, size, n_obj, avoid=mbox[2] if variant == "spurious" else 0)
    img = img.astype(np.uint8)
    masks, boxes = [], []
    for (cx, cy, r), cls, color in zip(placed, labels, obj_colors, strict=True):
        mask = _object_mask(size, int(cls), cx, cy, r, rng.uniform(0, 2 * math.pi))
        img[mask] = color.astype(np.uint8)
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        masks.append(mask)
        boxes.append((xs[0], ys[0], xs[-1] + 1, ys[-1] + 1))
    if has_marker:
        x0, y0, x1, y1 = mbox
        img[y0:y1, x0:x1] = MARKER_COLOR
    return {"image": img, "labels": labels, "masks": masks, "boxes": boxes, "marker": has_marker,
            "marker_box": mbox if has_marker else (0, 0, 0, 0)}


def resolve_marker_mode(variant: str, split: str, marker: str | None) -> str:
    """The marker policy in effect: ``marker`` if given (``spurious`` only), else the split's default
    (``"random"`` for ``test``, ``"correlated"`` otherwise)."""
    if marker is None:
        return "random" if split == "test" else "correlated"
    if marker not in MARKER_MODES:
        raise ValueError(f"marker must be one of {', '.join(MARKER_MODES)} (or None: the split's default); "
                         f"got {marker!r}.")
    if variant != "spurious":
        raise ValueError("marker= applies only to the 'spurious' variant.")
    return marker


def make_shapes(variant: str, n: int, seed: int | None = None, size: int = 112, split: str = "train", *,
                start: int = 0, marker: str | None = None) -> ShapesBatch:
    """Render images ``start .. start + n - 1`` of an xvit-shapes variant and split.

    Args:
        variant: ``"single"``, ``"pair"`` or ``"spurious"``.
        n: number of images.
        seed: base seed; ``None`` takes the variant's and split's own default (:func:`default_seed`).
        size: image height and width in pixels.
        split: ``"train"``, ``"val"`` or ``"test"``; selects the default seed and, for ``spurious``,
            the marker policy.
        start: index of the first image, so a long stream can be rendered in pieces.
        marker: ``spurious`` only: override the split's marker policy with ``"correlated"`` (train
            statistics), ``"exclusive"`` (on class-0 images as in training, never on the others),
            ``"random"`` (p = 0.5, independent of class), ``"aligned"`` (exactly on class-0 images) or
            ``"none"``.
    """
    _check(variant, split)
    if size < 24:
        raise ValueError(f"size must be at least 24 pixels; got {size}.")
    mode = resolve_marker_mode(variant, split, marker)
    base = default_seed(variant, split) if seed is None else int(seed)
    seeds = [image_seed(base, start + i) for i in range(n)]
    items = [_render(variant, mode, s, size) for s in seeds]
    pair = variant == "pair"

    def stack(key: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if not items:
            return torch.zeros((0, *shape), dtype=dtype)
        t = torch.from_numpy(np.stack([np.asarray(it[key]) for it in items]))
        return t.to(dtype) if pair or key not in ("labels", "masks", "boxes") else t[:, 0].to(dtype)

    images = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).contiguous() \
        if items else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    k = (2,) if pair else ()
    return ShapesBatch(
        images=images,
        labels=stack("labels", torch.int64, k),
        masks=stack("masks", torch.bool, (*k, size, size)),
        boxes=stack("boxes", torch.int64, (*k, 4)),
        class_names=list(SHAPE_CLASSES),
        seeds=torch.tensor(seeds, dtype=torch.int64),
        marker=torch.tensor([it["marker"] for it in items], dtype=torch.bool),
        marker_boxes=stack("marker_box", torch.int64, (4,)),
        variant=variant,
        split=split,
    )


def shapes_labels(variant: str, n: int, seed: int | None = None, split: str = "train", *,
                  start: int = 0) -> torch.Tensor:
    """The labels :func:`make_shapes` gives images ``start .. start + n - 1``, ``(n,)`` or ``(n, 2)`` for
    ``pair``, without rendering the images (about 15 µs an image)."""
    _check(variant, split)
    base = default_seed(variant, split) if seed is None else int(seed)
    labels = [_draw_labels(np.random.Generator(np.random.PCG64(image_seed(base, start + i))), variant)
              for i in range(n)]
    k = (2,) if variant == "pair" else ()
    out = torch.from_numpy(np.stack(labels)).to(torch.int64) if labels else torch.zeros((0, *k), dtype=torch.int64)
    return out if variant == "pair" else out.reshape(-1)


class ShapesDataset(Dataset):
    """Renders xvit-shapes images on the fly as ``(image uint8 (3, H, W), label)`` pairs, or
    ``(image, label, mask)`` triples with ``with_masks=True`` (masks as in :class:`ShapesBatch`).

    :meth:`set_epoch` moves the window to images ``epoch * n .. epoch * n + n - 1`` of the stream, so
    each training epoch sees fresh images while every epoch stays reproducible.
    """

    def __init__(self, variant: str, n: int, seed: int | None = None, split: str = "train", size: int = 112,
                 marker: str | None = None, with_masks: bool = False) -> None:
        _check(variant, split)
        self.variant, self.n, self.split, self.size = variant, int(n), split, int(size)
        self.with_masks = with_masks
        self.seed = default_seed(variant, split) if seed is None else int(seed)
        self.marker_mode = resolve_marker_mode(variant, split, marker)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        item = _render(self.variant, self.marker_mode, image_seed(self.seed, self.epoch * self.n + i), self.size)
        image = torch.from_numpy(item["image"]).permute(2, 0, 1).contiguous()
        pair = self.variant == "pair"
        label = torch.as_tensor(item["labels"] if pair else item["labels"][0], dtype=torch.int64)
        if not self.with_masks:
            return image, label
        masks = torch.from_numpy(np.stack(item["masks"]))
        return image, label, masks if pair else masks[0]


def write_shapes(variant: str, n: int, out_dir: str | os.PathLike, seed: int | None = None, size: int = 112,
                 split: str = "test", *, marker: str | None = None) -> Path:
    """Write a split to ``out_dir``: ``images/NNNNNN.png``, ``masks/NNNNNN.png`` (``pair``:
    ``masks/NNNNNN_0.png`` and ``_1.png``, matching ``labels``), ``manifest.json`` and ``manifest.csv``."""
    from PIL import Image

    batch = make_shapes(variant, n, seed=seed, size=size, split=split, marker=marker)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    pair = variant == "pair"
    rows = []
    for i in range(n):
        name = f"{i:06d}"
        Image.fromarray(batch.images[i].permute(1, 2, 0).numpy()).save(out / "images" / f"{name}.png")
        masks = batch.masks[i] if pair else batch.masks[i][None]
        mask_files = [f"masks/{name}_{j}.png" if pair else f"masks/{name}.png" for j in range(len(masks))]
        for m, f in zip(masks, mask_files, strict=True):
            Image.fromarray(m.numpy().astype(np.uint8) * 255).save(out / f)
        labels = batch.labels[i].reshape(-1).tolist()
        rows.append({
            "file": f"images/{name}.png", "masks": mask_files, "labels": labels,
            "class_names": [SHAPE_CLASSES[k] for k in labels], "boxes": batch.boxes[i].reshape(-1, 4).tolist(),
            "seed": int(batch.seeds[i]), "marker": bool(batch.marker[i]),
            "marker_box": batch.marker_boxes[i].tolist(),
        })
    manifest = {"dataset": "xvit-shapes", "generator_version": GENERATOR_VERSION, "variant": variant,
                "split": split, "size": size, "base_seed": default_seed(variant, split) if seed is None else seed,
                "marker_policy": resolve_marker_mode(variant, split, marker) if variant == "spurious" else None,
                "class_names": list(SHAPE_CLASSES), "items": rows}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "masks", "labels", "class_names", "boxes", "seed", "marker", "marker_box",
                    "variant", "split", "generator_version"])
        for r in rows:
            w.writerow([r["file"], ";".join(r["masks"]), ";".join(map(str, r["labels"])),
                        ";".join(r["class_names"]), ";".join(" ".join(map(str, b)) for b in r["boxes"]),
                        r["seed"], int(r["marker"]), " ".join(map(str, r["marker_box"])), variant, split,
                        GENERATOR_VERSION])
    return out
