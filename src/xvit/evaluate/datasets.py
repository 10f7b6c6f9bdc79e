"""Evaluation data: images with labels and ground-truth masks, read lazily and resized for a model.

Data specs accepted by :func:`load_dataset` (and ``xvit evaluate --data``):

* ``xvit-shapes:<variant>:<split>[:N][:marker=MODE]``: ``N`` images (default 200) of an xvit-shapes variant
  (``single``, ``pair``, ``spurious``) and split, rendered with :func:`xvit.data.make_shapes`. ``spurious``
  data also carries the mask of its corner marker (:attr:`EvalBatch.marker_masks`); ``marker=MODE`` picks
  the marker policy (``correlated``, ``random``, ``aligned``, ``none``; default: ``random`` for ``test``,
  ``correlated`` otherwise), e.g. ``xvit-shapes:spurious:test:500:marker=random``.
* ``DIR``: an image folder. Either the layout :func:`xvit.data.write_shapes` writes (``images/``, ``masks/``,
  ``manifest.json`` whose ``items`` give ``file``, ``labels`` and ``masks``), or a generic folder: images in
  ``images/``, in the folder itself or in one sub-folder per class (the class is the sub-folder's name),
  with same-named masks (any image extension) in ``masks/`` and labels, where given, from a
  ``manifest.json`` (``{"items": [{"file": ..., "label": int | name}, ...]}``) or the sub-folder names.
* ``FILE.mat``: the ImageNet-segmentation test set of Guillaumin et al. (IJCV 2014) as used by Chefer et al.
  2021 (``gtsegs_ijcv.mat``, MATLAB v7.3 = HDF5; datasets ``value/img`` and ``value/gt`` hold object
  references to per-image arrays); read with h5py. It has masks but no class labels.

Images are resized to the model's input size bilinearly and masks with nearest neighbour (no crop), then
normalised with the model's own mean and std (evaluation.md §0, §3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xvit.models import Preprocessing

__all__ = ["DataSpecError", "EvalBatch", "EvalDataset", "load_dataset", "DEFAULT_SHAPES_N", "IMAGE_EXTENSIONS"]

DEFAULT_SHAPES_N = 200
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")
_SPEC_FORMS = ("xvit-shapes:<variant>:<split>[:N][:marker=MODE], an image folder (images/, masks/, manifest.json) "
               "or a gtsegs_ijcv.mat file")

# A reader returns image ``i`` as an (H, W, 3) uint8 array and its masks, a list of (H, W) bool arrays
# (one per labelled object; empty when the data set has no masks).
Reader = Callable[[int], tuple[np.ndarray, list[np.ndarray]]]


class DataSpecError(ValueError):
    """A data spec names nothing readable; the message says what was expected."""


@dataclass(frozen=True)
class EvalBatch:
    """Images ``indices`` of an :class:`EvalDataset`, ready for a model.

    Attributes:
        x: ``(B, 3, H, W)`` float32, normalised with the model's mean and std.
        masks: ``(B, H, W)`` bool (one object per image) or ``(B, 2, H, W)`` (pair data, matching ``labels``);
            ``None`` without masks.
        labels: ``(B,)`` or ``(B, 2)`` long in the data set's class indexing; ``None`` without labels.
        ids: image ids.
        indices: positions in the data set.
        marker_masks: ``(B, H, W)`` bool masks of a spurious marker (all ``False`` on images without one);
            ``None`` for data without markers (only xvit-shapes ``spurious`` has them).
    """

    x: Tensor
    masks: Tensor | None
    labels: Tensor | None
    ids: list[str]
    indices: list[int]
    marker_masks: Tensor | None = None


@dataclass
class EvalDataset:
    """An evaluation data set: ids, labels and masks, with images read on demand.

    Attributes:
        spec: the data spec it came from.
        ids: one id per image (file path relative to the folder, ``shapes:<variant>:<split>:<i>``, ``gtsegs:<i>``).
        labels: ``(N,)`` or ``(N, 2)`` (pair data) long, or ``None`` when the data set has no labels.
        class_names: names of the data set's class indices, if known.
        has_masks: whether every image has ground-truth masks.
        pair: whether images show two labelled objects (``labels`` and masks have a second axis of 2).
        info: provenance (format, generator version, seeds …).
        marker_reader: returns image ``i``'s ``(H, W)`` bool marker mask (empty without a marker); ``None``
            for data without markers.
    """

    spec: str
    ids: list[str]
    labels: Tensor | None
    class_names: list[str] | None
    has_masks: bool
    pair: bool
    reader: Reader = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    marker_reader: Callable[[int], np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_markers(self) -> bool:
        """Whether images carry spurious-marker masks (xvit-shapes ``spurious``)."""
        return self.marker_reader is not None

    def subset(self, n: int) -> EvalDataset:
        """The first ``n`` images."""
        n = min(int(n), len(self))
        return EvalDataset(self.spec, self.ids[:n], None if self.labels is None else self.labels[:n],
                           self.class_names, self.has_masks, self.pair, self.reader, {**self.info, "limit": n},
                           self.marker_reader)

    def load(self, indices: Sequence[int], preprocessing: Preprocessing) -> EvalBatch:
        """Read, resize and normalise images ``indices`` (and their masks) for a model.

        Args:
            indices: positions in the data set.
            preprocessing: the model's :class:`~xvit.models.Preprocessing` (size, mean, std).
        """
        indices = [int(i) for i in indices]
        height, width = preprocessing.size
        images, masks, markers = [], [], []
        for i in indices:
            image, image_masks = self.reader(i)
            images.append(_resize(image, (height, width), Image.Resampling.BILINEAR))
            if self.has_masks:
                if len(image_masks) != (2 if self.pair else 1):
                    raise DataSpecError(f"{self.ids[i]}: expected {2 if self.pair else 1} mask(s), found "
                                        f"{len(image_masks)}.")
                masks.append(np.stack([_resize(m.astype(np.uint8), (height, width), Image.Resampling.NEAREST) > 0
                                       for m in image_masks]))
            if self.marker_reader is not None:
                markers.append(_resize(self.marker_reader(i).astype(np.uint8), (height, width),
                                       Image.Resampling.NEAREST) > 0)
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1)
        mask_tensor = None
        if self.has_masks:
            mask_tensor = torch.from_numpy(np.stack(masks))
            mask_tensor = mask_tensor if self.pair else mask_tensor[:, 0]
        return EvalBatch(x=(pixels - mean) / std, masks=mask_tensor,
                         labels=None if self.labels is None else self.labels[indices],
                         ids=[self.ids[i] for i in indices], indices=indices,
                         marker_masks=torch.from_numpy(np.stack(markers)) if markers else None)

    def describe(self) -> dict[str, Any]:
        """Provenance: spec, size, kind and format details."""
        return {"spec": self.spec, "n": len(self), "pair": self.pair, "has_labels": self.labels is not None,
                "has_masks": self.has_masks, "has_markers": self.has_markers, "class_names": self.class_names,
                **self.info}


def _resize(a: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    height, width = size
    if a.shape[:2] == (height, width):
        return a
    return np.asarray(Image.fromarray(a).resize((width, height), resample))


# ------------------------------------------------------------------------------------------------ specs


def load_dataset(spec: str | os.PathLike, *, size: tuple[int, int] | None = None,
                 limit: int | None = None) -> EvalDataset:
    """Open the data set a spec names (see the module docstring for the forms).

    Args:
        spec: ``xvit-shapes:<variant>:<split>[:N][:marker=MODE]``, an image folder or a ``.mat`` file.
        size: ``(H, W)`` to render xvit-shapes at (the model's input size avoids a resize); other
            sources are resized when loaded.
        limit: keep only the first ``limit`` images.

    Raises:
        DataSpecError: the spec is malformed or names nothing readable.
        ImportError: a ``.mat`` file was given and h5py is not installed.
    """
    s = str(spec)
    if s.startswith("xvit-shapes"):
        data = _shapes(s, size)
    else:
        path = Path(s)
        if path.is_dir():
            data = _folder(path)
        elif path.is_file() and path.suffix.lower() == ".mat":
            data = _gtsegs(path)
        elif path.is_file():
            raise DataSpecError(f"data file {s!r} is not a .mat file; --data takes {_SPEC_FORMS}.")
        else:
            raise DataSpecError(f"data {s!r} is neither an existing folder or .mat file nor an xvit-shapes spec; "
                                f"--data takes {_SPEC_FORMS}.")
    if len(data) == 0:
        raise DataSpecError(f"data {s!r} holds no images.")
    if limit is not None:
        if limit < 1:
            raise DataSpecError(f"limit must be a positive number of images; got {limit}.")
        data = data.subset(limit)
    return data


def _shapes(spec: str, size: tuple[int, int] | None) -> EvalDataset:
    from xvit.data.shapes import (
        GENERATOR_VERSION,
        MARKER_MODES,
        SHAPE_CLASSES,
        SPLITS,
        VARIANTS,
        default_seed,
        make_shapes,
        resolve_marker_mode,
    )

    parts = spec.split(":")
    usage = (f"expected xvit-shapes:<variant>:<split>[:N][:marker=MODE] with variant in {', '.join(VARIANTS)}, "
             f"split in {', '.join(SPLITS)} and MODE (spurious only) in {', '.join(MARKER_MODES)}, e.g. "
             f"xvit-shapes:single:test:200 or xvit-shapes:spurious:test:500:marker=random; got {spec!r}.")
    if parts[0] != "xvit-shapes" or len(parts) < 3 or parts[1] not in VARIANTS or parts[2] not in SPLITS:
        raise DataSpecError(usage)
    variant, split, rest = parts[1], parts[2], parts[3:]
    n = DEFAULT_SHAPES_N
    if rest and "=" not in rest[0]:
        if not rest[0].isdigit() or int(rest[0]) < 1:
            raise DataSpecError(f"N in {spec!r} must be a positive integer. " + usage)
        n = int(rest.pop(0))
    options: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key != "marker":
            raise DataSpecError(f"{part!r} in {spec!r} is not an option: the only option is marker=MODE, after N. "
                                + usage)
        if key in options:
            raise DataSpecError(f"{spec!r} sets {key}= twice. " + usage)
        options[key] = value
    marker = options.get("marker")
    if marker is not None and variant != "spurious":
        raise DataSpecError(f"marker= in {spec!r} applies only to the spurious variant, e.g. "
                            f"xvit-shapes:spurious:{split}:{n}:marker={marker}.")
    try:
        marker_mode = resolve_marker_mode(variant, split, marker)
    except ValueError as err:
        raise DataSpecError(f"marker in {spec!r}: {err}") from None
    # Render at the model's size when it is square and large enough: masks stay pixel-exact.
    render = size[0] if size is not None and size[0] == size[1] and size[0] >= 24 else 112
    batch = make_shapes(variant, n, split=split, size=render, marker=marker)
    images = batch.images.permute(0, 2, 3, 1).numpy()
    masks = batch.masks.numpy()
    marker_boxes = batch.marker_boxes.numpy()
    pair = variant == "pair"

    def read(i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return images[i], list(masks[i]) if pair else [masks[i]]

    def read_marker(i: int) -> np.ndarray:
        x0, y0, x1, y1 = marker_boxes[i]  # zeros where the image has no marker
        out = np.zeros((render, render), dtype=bool)
        out[y0:y1, x0:x1] = True
        return out

    info = {"format": "xvit-shapes", "variant": variant, "split": split, "render_size": render,
            "base_seed": default_seed(variant, split), "generator_version": GENERATOR_VERSION}
    if variant == "spurious":
        info["marker"] = marker_mode
    return EvalDataset(spec=spec, ids=[f"shapes:{variant}:{split}:{i}" for i in range(n)], labels=batch.labels,
                       class_names=list(SHAPE_CLASSES), has_masks=True, pair=pair, reader=read, info=info,
                       marker_reader=read_marker if variant == "spurious" else None)


# ----------------------------------------------------------------------------------------------- folders


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataSpecError(f"cannot read image {path}: {e}") from None


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 0
    except OSError as e:
        raise DataSpecError(f"cannot read mask {path}: {e}") from None


def _folder(root: Path) -> EvalDataset:
    manifest = root / "manifest.json"
    if manifest.is_file():
        return _manifest_folder(root, manifest)
    mask_dir = root / "masks"
    image_dir = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in image_dir.iterdir() if _is_image(p))
    class_names = None
    labels = None
    if not files:  # one sub-folder per class
        class_dirs = sorted(p for p in image_dir.iterdir() if p.is_dir() and p.name != "masks")
        class_names = [d.name for d in class_dirs]
        pairs = [(f, k) for k, d in enumerate(class_dirs) for f in sorted(d.iterdir()) if _is_image(f)]
        files = [f for f, _ in pairs]
        labels = torch.tensor([k for _, k in pairs], dtype=torch.long)
    if not files:
        raise DataSpecError(f"folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in images/, in itself "
                            "or in class sub-folders.")
    rel = [f.relative_to(image_dir) for f in files]
    mask_files = [_find_mask(mask_dir, r) for r in rel] if mask_dir.is_dir() else [None] * len(files)
    found = sum(m is not None for m in mask_files)
    if 0 < found < len(files):
        missing = next(r for r, m in zip(rel, mask_files, strict=True) if m is None)
        raise DataSpecError(f"{root}/masks holds masks for {found} of {len(files)} images; {missing} has none. "
                            "Give every image a same-named mask, or none.")

    def read(i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        m = mask_files[i]
        return _read_rgb(files[i]), [] if m is None else [_read_mask(m)]

    return EvalDataset(spec=str(root), ids=[str(r) for r in rel], labels=labels, class_names=class_names,
                       has_masks=found == len(files), pair=False, reader=read,
                       info={"format": "image-folder" + (" (class sub-folders)" if class_names else "")})


def _find_mask(mask_dir: Path, rel: Path) -> Path | None:
    for base in (mask_dir / rel.parent, mask_dir):
        for ext in IMAGE_EXTENSIONS:
            candidate = base / (rel.stem + ext)
            if candidate.is_file():
                return candidate
    return None


def _manifest_folder(root: Path, manifest: Path) -> EvalDataset:
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise DataSpecError(f"cannot read {manifest}: {e}") from None
    items = meta.get("items") if isinstance(meta, dict) else meta
    if not isinstance(items, list) or not items or not all(isinstance(it, dict) and "file" in it for it in items):
        raise DataSpecError(f"{manifest} needs a non-empty 'items' list of objects with a 'file' key (and "
                            "'labels'/'label', 'masks').")
    class_names = meta.get("class_names") if isinstance(meta, dict) else None
    raw_labels = [it.get("labels", it.get("label")) for it in items]
    raw_labels = [r if isinstance(r, list) or r is None else [r] for r in raw_labels]
    labels = None
    if all(r is not None for r in raw_labels):
        if any(isinstance(v, str) for r in raw_labels for v in r):  # class names: index them
            if class_names is None:
                class_names = sorted({str(v) for r in raw_labels for v in r})
            try:
                raw_labels = [[class_names.index(str(v)) if isinstance(v, str) else int(v) for v in r]
                              for r in raw_labels]
            except ValueError as e:
                raise DataSpecError(f"{manifest}: a label is not among class_names ({e}).") from None
        lengths = {len(r) for r in raw_labels}
        if lengths not in ({1}, {2}):
            raise DataSpecError(f"{manifest}: every item needs 1 label (or 2 for two-object images); found "
                                f"{sorted(lengths)}.")
        labels = torch.tensor(raw_labels, dtype=torch.long)
        labels = labels[:, 0] if lengths == {1} else labels
    pair = labels is not None and labels.ndim == 2
    files = [root / it["file"] for it in items]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataSpecError(f"{manifest} lists {len(missing)} missing image(s), e.g. {missing[0]}.")
    mask_lists: list[list[Path]] = []
    for it, f in zip(items, files, strict=True):
        given = it.get("masks", it.get("mask"))
        if given is not None:
            mask_lists.append([root / m for m in (given if isinstance(given, list) else [given])])
        else:
            found = _find_mask(root / "masks", f.relative_to(root / "images") if (root / "images") in f.parents
                               else Path(f.name))
            mask_lists.append([found] if found is not None else [])
    has_masks = all(ms and all(m.is_file() for m in ms) for ms in mask_lists)

    def read(i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return _read_rgb(files[i]), [_read_mask(m) for m in mask_lists[i]] if has_masks else []

    info = {"format": "image-folder (manifest.json)"}
    if isinstance(meta, dict):
        info.update({k: meta[k] for k in ("dataset", "variant", "split", "generator_version", "base_seed")
                     if k in meta})
    return EvalDataset(spec=str(root), ids=[str(it["file"]) for it in items], labels=labels,
                       class_names=list(class_names) if class_names else None, has_masks=has_masks, pair=pair,
                       reader=read, info=info)


# ------------------------------------------------------------------------------------ ImageNet segmentation


def _gtsegs(path: Path) -> EvalDataset:
    """``gtsegs_ijcv.mat``: ``value/img[i, 0]`` references a ``(3, W, H)`` uint8 array (MATLAB's column-major
    ``H×W×3``), ``value/gt[i, 0]`` a 1×1 cell whose element references the ``(W, H)`` mask; as read by
    hila-chefer/Transformer-Explainability ``data/imagenet.py`` (``Imagenet_Segmentation``)."""
    try:
        import h5py
    except ImportError:
        raise ImportError(f"Reading {path.name} (a MATLAB v7.3 / HDF5 file) needs h5py: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            n = len(f["value/img"])
            if len(f["value/gt"]) != n:
                raise DataSpecError(f"{path}: value/img has {n} entries but value/gt {len(f['value/gt'])}.")
    except (OSError, KeyError) as e:
        raise DataSpecError(f"{path} is not the ImageNet-segmentation file gtsegs_ijcv.mat (a MATLAB v7.3 / "
                            f"HDF5 file with datasets value/img and value/gt): {e}") from None
    handle: dict[str, Any] = {}

    def read(i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if "file" not in handle:  # opened once, on first use
            handle["file"] = h5py.File(path, "r")
        f = handle["file"]
        img = np.asarray(f[f["value/img"][i, 0]])
        img = img.transpose(2, 1, 0) if img.ndim == 3 else np.repeat(img.T[:, :, None], 3, axis=2)
        cell = f[f["value/gt"][i, 0]]
        gt = np.asarray(f[cell[0, 0]]) if h5py.check_dtype(ref=cell.dtype) is not None else np.asarray(cell)
        return np.ascontiguousarray(img.astype(np.uint8)), [np.ascontiguousarray(gt.T > 0)]

    return EvalDataset(spec=str(path), ids=[f"gtsegs:{i}" for i in range(n)], labels=None, class_names=None,
                       has_masks=True, pair=False, reader=read,
                       info={"format": "imagenet-segmentation (gtsegs_ijcv.mat)", "file": path.name})
