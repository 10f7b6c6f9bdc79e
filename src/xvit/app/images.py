"""Uploaded images: decoded from their bytes (never trusting the name or content type), checked against the
pixel limit, and kept, encoded, in a store bounded by total size. Ids are generated; the client's file name is
kept only as a display label."""

from __future__ import annotations

import io
import re
import secrets
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from xvit.data.preprocess import ImageLoadError, to_rgb

THUMBNAIL = 160


class ImageTooLargeError(ValueError):
    """An image has more pixels than the server accepts (HTTP 413)."""


@dataclass(frozen=True)
class StoredImage:
    """An accepted image: its generated id, a display label, its size and its encoded bytes."""

    id: str
    name: str
    width: int
    height: int
    mode: str
    data: bytes = field(repr=False)
    thumbnail: bytes = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height, "mode": self.mode,
                "thumbnail": f"/api/images/{self.id}/thumbnail.png"}

    def open(self) -> Image.Image:
        """The image as uploaded, decoded lazily; :func:`xvit.load_images` converts it as it does a file (EXIF
        rotation, grayscale, transparency, 16 bits)."""
        return Image.open(io.BytesIO(self.data))


def display_name(filename: str | None, fallback: str) -> str:
    """A label for the page: the last path component of the client's name, reduced to safe characters."""
    stem = re.split(r"[\\/]", filename or "")[-1]
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip(" .")[:80]
    return stem or fallback


def decode(data: bytes, name: str, max_pixels: int) -> tuple[Image.Image, str]:
    """Decode ``data`` as an image: ``(RGB image, original mode)``.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (read from the header, before decoding).
        ImageLoadError: not an image, truncated or corrupt.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
            raise ImageLoadError(f"{name!r} is not an image file that can be read (PNG, JPEG, BMP, GIF, TIFF, "
                                 "WebP, ...).") from None
        if img.width * img.height > max_pixels:
            raise ImageTooLargeError(f"{name!r} has {img.width} x {img.height} = {img.width * img.height:,} "
                                     f"pixels; this server accepts at most {max_pixels:,}. Downscale it first.")
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageLoadError(f"{name!r} is truncated or corrupt ({e}). Re-export or re-download it.") from None
    mode = img.mode
    rgb = to_rgb(img)
    return rgb, mode


def _thumbnail(rgb: Image.Image) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_png(data: bytes) -> bytes:
    """A PNG thumbnail of an encoded image."""
    return _thumbnail(to_rgb(Image.open(io.BytesIO(data))))


class ImageStore:
    """Accepted images by generated id, least recently used dropped once ``max_bytes`` is exceeded."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, data: bytes, filename: str | None) -> StoredImage:
        """Decode, check and keep ``data``; raises as :func:`decode`."""
        name = display_name(filename, "image")
        rgb, mode = decode(data, name, self.max_pixels)
        image = StoredImage(secrets.token_hex(8), name, rgb.width, rgb.height, mode, bytes(data), _thumbnail(rgb))
        with self._lock:
            self._images[image.id] = image
            self._bytes += len(image.data) + len(image.thumbnail)
            while self._bytes > self.max_bytes and len(self._images) > 1:
                _, old = self._images.popitem(last=False)
                self._bytes -= len(old.data) + len(old.thumbnail)
        return image

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            if image_id not in self._images:
                raise KeyError(f"no image with id {image_id!r}; it may have been dropped to stay within the "
                               "server's memory limit. Upload it again.")
            self._images.move_to_end(image_id)
            return self._images[image_id]

    def __len__(self) -> int:
        return len(self._images)


__all__ = ["ImageLoadError", "ImageStore", "ImageTooLargeError", "StoredImage", "decode", "display_name",
           "thumbnail_png"]
