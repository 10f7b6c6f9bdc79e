"""Image folders as a data source: the layout :func:`xvit.data.write_shapes` writes, manifests, class sub-folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from xvit.data.preprocess import ImageLoadError, open_image, to_rgb
from xvit.data.sources.base import DataNotFoundError, DataSource, DataSpec, DataSpecError, register_source

__all__ = ["IMAGE_EXTENSIONS", "FolderSource", "read_mask"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")
_PREFIX = "folder"


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()  # is_file: no pipes, sockets or devices


def read_mask(path: Path) -> np.ndarray:
    """A mask file as an ``(H, W)`` bool array: every non-zero pixel is on the object (16-bit masks included)."""
    try:
        with open_image(path) as im:
            im = ImageOps.exif_transpose(im)
            values = np.asarray(im) if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F", "1") \
                else np.asarray(im.convert("L"))
    except (ImageLoadError, OSError) as e:
        raise DataSpecError(f"cannot read mask {path}: {e}") from None
    return values > 0


@register_source(_PREFIX, fallback=True, description="image folders: write_shapes layout, manifest.json, "
                 "one sub-folder per class")
class FolderSource(DataSource):
    """An image folder. Either the layout :func:`xvit.data.write_shapes` writes (``images/``, ``masks/``,
    ``manifest.json`` whose ``items`` give ``file``, ``labels`` and ``masks``), or a generic folder: images in
    ``images/``, in the folder itself or in one sub-folder per class (the class is the sub-folder's name; images
    in nested folders below it count), with same-named masks (any image extension) in ``masks/`` and labels,
    where given, from a ``manifest.json`` (``{"items": [{"file": ..., "label": int | name}, ...]}``) or the
    sub-folder names. Images are converted as :func:`xvit.load_images` converts them (16-bit, transparency,
    EXIF rotation).
    """

    forms = "[folder:]DIR (images/, masks/, manifest.json, or one sub-folder per class)"

    def __init__(self, spec: DataSpec, *, size: tuple[int, int] | None = None) -> None:
        super().__init__(spec, size=size)
        root = Path(spec.path)
        if not root.is_dir():
            raise DataNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder.")
        self.files: list[Path] = []
        self.mask_files: list[list[Path]] = []
        manifest = root / "manifest.json"
        if manifest.is_file():
            self._open_manifest(root, manifest)
        else:
            self._open_folder(root)
        if spec.n is not None:
            self.files, self.mask_files, self.ids = self.files[:spec.n], self.mask_files[:spec.n], self.ids[:spec.n]
            self.labels = None if self.labels is None else self.labels[:spec.n]

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        path = cls.unprefixed(text)
        if not path:
            raise DataSpecError(f"expected {cls.forms}; got {text!r}.")
        return DataSpec(_PREFIX, path=str(Path(path)))

    @classmethod
    def format(cls, spec: DataSpec) -> str:
        return str(spec.path)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_dir()

    def read(self, i: int) -> tuple[Image.Image, list[np.ndarray]]:
        try:
            image = to_rgb(self.files[i])
        except ImageLoadError as e:
            raise DataSpecError(f"cannot read image {self.files[i]}: {e}") from None
        return image, [read_mask(m) for m in self.mask_files[i]] if self.has_masks else []

    def _open_folder(self, root: Path) -> None:
        mask_dir = root / "masks"
        image_dir = root / "images" if (root / "images").is_dir() else root
        files = sorted(p for p in image_dir.iterdir() if _is_image(p))
        if not files:  # one sub-folder per class
            class_dirs = sorted(p for p in image_dir.iterdir() if p.is_dir() and p.name != "masks")
            self.class_names = [d.name for d in class_dirs]
            pairs = [(f, k) for k, d in enumerate(class_dirs) for f in sorted(d.rglob("*")) if _is_image(f)]
            files = [f for f, _ in pairs]
            self.labels = torch.tensor([k for _, k in pairs], dtype=torch.long)
        if not files:
            raise DataSpecError(f"folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in images/, in "
                                "itself or in class sub-folders.")
        rel = [f.relative_to(image_dir) for f in files]
        found_masks = [_find_mask(mask_dir, r) for r in rel] if mask_dir.is_dir() else [None] * len(files)
        found = sum(m is not None for m in found_masks)
        if 0 < found < len(files):
            missing = next(r for r, m in zip(rel, found_masks, strict=True) if m is None)
            raise DataSpecError(f"{root}/masks holds masks for {found} of {len(files)} images; {missing} has none. "
                                "Give every image a same-named mask, or none.")
        self.files, self.ids = files, [str(r) for r in rel]
        self.mask_files = [[] if m is None else [m] for m in found_masks]
        self.has_masks = found == len(files)
        self.info = {"format": "image-folder" + (" (class sub-folders)" if self.class_names else "")}

    def _open_manifest(self, root: Path, manifest: Path) -> None:
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
            self.labels = labels[:, 0] if lengths == {1} else labels
        self.pair = self.labels is not None and self.labels.ndim == 2
        files = [root / it["file"] for it in items]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DataSpecError(f"{manifest} lists {len(missing)} missing image(s), e.g. {missing[0]}.")
        for it, f in zip(items, files, strict=True):
            given = it.get("masks", it.get("mask"))
            if given is not None:
                self.mask_files.append([root / m for m in (given if isinstance(given, list) else [given])])
            else:
                found = _find_mask(root / "masks", f.relative_to(root / "images") if (root / "images") in f.parents
                                   else Path(f.name))
                self.mask_files.append([found] if found is not None else [])
        self.files, self.ids = files, [str(it["file"]) for it in items]
        self.has_masks = all(ms and all(m.is_file() for m in ms) for ms in self.mask_files)
        self.class_names = list(class_names) if class_names else None
        self.info = {"format": "image-folder (manifest.json)"}
        if isinstance(meta, dict):
            self.info.update({k: meta[k] for k in ("dataset", "variant", "split", "generator_version", "base_seed")
                              if k in meta})


def _find_mask(mask_dir: Path, rel: Path) -> Path | None:
    for base in (mask_dir / rel.parent, mask_dir):
        for ext in IMAGE_EXTENSIONS:
            candidate = base / (rel.stem + ext)
            if candidate.is_file():
                return candidate
    return None
