"""The one explanation pipeline under ``xvit explain``, the demo report, the web app and dataset runs.

:func:`explain_batch` takes a normalised batch, runs each method once (the predicted class, or the given
targets, resolved once by the explainer), and returns a :class:`BatchResult`: the explanations and one typed
:class:`ImageRecord` per image (prediction, top-5, per-method explained class, map statistics and time).
:func:`explain_images` does the same for image files or PIL images batch by batch, and :func:`write_batch`
writes display images, overlays and a comparison grid, filling in the records' file names.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor, nn

from xvit.data.images import ImageSource, load_images
from xvit.explainer import Explainer
from xvit.models import class_names_for, preprocessing_for
from xvit.result import Explanation
from xvit.utils.progress import Progress

__all__ = ["BatchResult", "ClassScore", "ImageRecord", "MethodRecord", "TargetRecord", "explain_batch",
           "explain_images", "map_statistics", "output_files", "unique_names", "write_batch"]


@dataclass(frozen=True)
class ClassScore:
    """A class with its softmax probability."""

    index: int
    name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "probability": round(self.probability, 6)}


@dataclass(frozen=True)
class TargetRecord:
    """One explained class of one image: the class with its probability, statistics of its raw map and the
    overlay's path once written."""

    target: ClassScore
    stats: dict[str, float | None]
    overlay: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "overlay": self.overlay, "stats": self.stats}


@dataclass(frozen=True)
class MethodRecord:
    """One method's result for one image: every explained class (:class:`TargetRecord`, the first one also as
    ``target``, ``stats`` and ``overlay``), the sign convention and the method's time per image in its batch."""

    method: str
    explained: tuple[TargetRecord, ...]
    signed: bool
    seconds_per_image: float

    @property
    def target(self) -> ClassScore:
        return self.explained[0].target

    @property
    def stats(self) -> dict[str, float | None]:
        return self.explained[0].stats

    @property
    def overlay(self) -> str | None:
        return self.explained[0].overlay

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target.to_dict(), "overlay": self.overlay, "signed": self.signed,
                "stats": self.stats, "seconds_per_image": round(self.seconds_per_image, 6),
                "explained": [t.to_dict() for t in self.explained]}


@dataclass(frozen=True)
class ImageRecord:
    """Everything the pipeline knows about one explained image."""

    name: str
    prediction: ClassScore
    top5: tuple[ClassScore, ...]
    methods: dict[str, MethodRecord]
    file: str | None = None
    label: str | None = None
    group: str | None = None
    image: str | None = None  # the display image's path once written

    def to_dict(self) -> dict[str, Any]:
        """The record as in ``results.json``."""
        out = {"file": self.file, "name": self.name, "image": self.image, "label": self.label,
               "prediction": self.prediction.to_dict(), "top5": [c.to_dict() for c in self.top5],
               "methods": {m: r.to_dict() for m, r in self.methods.items()}}
        if self.group is not None:
            out["group"] = self.group
        return out


@dataclass
class BatchResult:
    """One batch through the pipeline: records, display images and the explanations (method -> Explanation)."""

    records: list[ImageRecord]
    display: list[Image.Image]
    explanations: dict[str, Explanation]
    class_names: list[str]
    grid: str | None = None
    labels: list[str | None] = field(default_factory=list)


def map_statistics(raw: Tensor) -> dict[str, float | None]:
    """Statistics of one raw map: ``min``, ``max``, ``mean``, ``sum`` and ``top10_mass``, the share of the absolute
    mass held by the top 10 % of map cells (tokens or pixels); None for an all-zero map."""
    v = raw.detach().double().flatten()
    a = v.abs()
    total = float(a.sum())
    top = float(a.topk(max(1, math.ceil(0.1 * a.numel()))).values.sum())
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "sum": float(v.sum()),
            "top10_mass": top / total if total > 0 else None}


def explain_batch(model: nn.Module, x: Tensor, methods: Sequence[str], *, target: Any = None,
                  top_k: int | None = None, method_params: Mapping[str, Mapping[str, Any]] | None = None,
                  display: Sequence[Image.Image] = (), names: Sequence[str] | None = None,
                  files: Sequence[str | None] | None = None, labels: Sequence[str | None] | None = None,
                  group: str | None = None) -> BatchResult:
    """Explain the normalised batch ``x`` with every method and collect one :class:`ImageRecord` per image.

    Args:
        model: a supported ViT on the device of ``x``.
        x: ``(B, C, H, W)`` normalised images.
        methods: registered method names.
        target: as for :class:`~xvit.Explainer` (None explains each image's predicted class; class indices or
            names, per image or for all); every explained class of each image goes into the records.
        top_k: explain each image's ``top_k`` most probable classes instead of ``target``.
        method_params: ``{method: {param: value}}``.
        display, names, files, labels, group: what the records show about each image.
    """
    method_params = method_params or {}
    explanations: dict[str, Explanation] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        start = time.perf_counter()
        with Explainer(model, method, **dict(method_params.get(method, {}))) as explainer:
            explanations[method] = explainer(x, target, top_k=top_k)
        seconds[method] = (time.perf_counter() - start) / x.shape[0]
    logits = next(iter(explanations.values())).logits.detach().float().cpu()
    probs = logits.softmax(-1)
    class_names = class_names_for(model, logits.shape[-1])
    B = x.shape[0]
    names = list(names) if names is not None else [f"image_{i:03d}" for i in range(B)]
    files = list(files) if files is not None else [None] * B
    labels = list(labels) if labels is not None else [None] * B

    def score(c: int, b: int) -> ClassScore:
        return ClassScore(c, class_names[c], float(probs[b, c]))

    records = []
    for b in range(B):
        top = probs[b].topk(min(5, probs.shape[-1])).indices.tolist()
        per_method = {m: MethodRecord(m, tuple(TargetRecord(score(int(c), b), map_statistics(e.raw[b, k]))
                                               for k, c in enumerate(e.targets[b].tolist())), e.signed, seconds[m])
                      for m, e in explanations.items()}
        records.append(ImageRecord(name=names[b], prediction=score(top[0], b), top5=tuple(score(c, b) for c in top),
                                   methods=per_method, file=files[b], label=labels[b], group=group))
    return BatchResult(records, list(display), explanations, class_names, labels=labels)


def explain_images(model: nn.Module, images: Sequence[ImageSource], methods: Sequence[str], *, target: Any = None,
                   top_k: int | None = None, batch_size: int = 8,
                   method_params: Mapping[str, Mapping[str, Any]] | None = None,
                   labels: Sequence[str | None] | None = None, group: str | None = None,
                   progress: bool | None = None) -> Iterator[BatchResult]:
    """Load (with the model's own preprocessing), predict and explain ``images`` batch by batch.

    ``images`` are paths or PIL images. Records are named after the files (made unique) or ``image_NNN``.
    ``target`` is as for :func:`explain_batch`; a list (or tensor) with one entry per image is split with the
    batches. ``progress`` shows progress on stderr (:class:`~xvit.utils.progress.Progress`; None: only for 8 or more
    maps).
    """
    prep = preprocessing_for(model)
    param = next(model.parameters(), None)
    files = [str(p) if isinstance(p, (str, Path)) else None for p in images]
    names = unique_names(images, methods)
    per_image = (isinstance(target, Tensor) and target.ndim >= 1 or isinstance(target, Sequence)
                 and not isinstance(target, str)) and len(target) == len(images) and len(images) > batch_size
    total = len(images) * len(methods)
    with Progress(total, desc="explain", unit="map", enabled=(total >= 8) if progress is None else progress) as bar:
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            x, display = load_images(list(images[start:stop]), prep)
            if param is not None:
                x = x.to(device=param.device, dtype=param.dtype)
            result = explain_batch(model, x, methods, target=target[start:stop] if per_image else target,
                                   top_k=top_k, method_params=method_params, display=display,
                                   names=names[start:stop], files=files[start:stop],
                                   labels=None if labels is None else labels[start:stop], group=group)
            bar.update(len(display) * len(methods))
            yield result


GRID_NAME = re.compile(r"grid(_\d+)?")
"""Names of the comparison grids :func:`write_batch` writes (``grid.png``, ``grid_NNN.png``)."""


def output_files(name: str, methods: Sequence[str], targets: int = 1) -> list[str]:
    """The files :func:`write_batch` writes for an image named ``name``: its display image and one overlay per
    method and explained class (``NAME_METHOD.png`` for one class, ``NAME_METHOD_1.png``, ``NAME_METHOD_2.png``,
    ... in target order for several)."""
    suffixes = [""] if targets == 1 else [f"_{k + 1}" for k in range(targets)]
    return [f"{name}.png", *(f"{name}_{m}{s}.png" for m in methods for s in suffixes)]


def unique_names(images: Sequence[ImageSource], methods: Sequence[str] = ()) -> list[str]:
    """File stems (``image_NNN`` for non-file inputs), all prefixed with their position when two images' output
    files (:func:`output_files` with ``methods``) would collide or one would be named like a grid, so that no
    written file overwrites another."""
    stems = [Path(p).stem if isinstance(p, (str, Path)) else f"image_{i:03d}" for i, p in enumerate(images)]
    files = [f for s in stems for f in output_files(s, methods)]
    if len(set(files)) == len(files) and not any(GRID_NAME.fullmatch(s) for s in stems):
        return stems
    width = max(3, len(str(len(stems) - 1)))
    return [f"{i:0{width}d}_{s}" for i, s in enumerate(stems)]


def write_batch(result: BatchResult, out: str | Path, *, prefix: str = "", grid_name: str = "grid.png"
                ) -> BatchResult:
    """Write each display image, each overlay and a comparison grid under ``out/prefix``; return the result with
    the records' ``image``/``overlay`` paths (relative to ``out``) and ``grid`` filled in."""
    from xvit.viz import comparison_grid, save_grid

    out = Path(out)
    (out / prefix).mkdir(parents=True, exist_ok=True)
    overlays = {m: e.overlay(result.display) for m, e in result.explanations.items()}
    records = []
    for b, rec in enumerate(result.records):
        k = len(next(iter(rec.methods.values())).explained)
        image, *overlay_files = (prefix + f for f in output_files(rec.name, list(rec.methods), k))
        result.display[b].save(out / image)
        files = iter(overlay_files)
        methods = {}
        for m, mrec in rec.methods.items():
            explained = []
            for j, trec in enumerate(mrec.explained):
                path = next(files)
                Image.fromarray(np.asarray(overlays[m][b][j])).save(out / path)  # uint8 (H, W, 3)
                explained.append(replace(trec, overlay=path))
            methods[m] = replace(mrec, explained=tuple(explained))
        records.append(replace(rec, image=image, methods=methods))
    grid = f"{prefix}{grid_name}"
    known = result.labels if result.labels and None not in result.labels else None
    save_grid(comparison_grid(result.display, result.explanations, result.class_names, true_labels=known), out / grid)
    return replace(result, records=records, grid=grid)
