"""The one pixel path from an image to model input, and back for display.

Every loader (``load_images``, the data sources of ``xvit evaluate`` and ``xvit train``, ``xvit bench``) goes
through these functions, so ``explain``, ``evaluate`` and training feed a model the same pixels:

1. :func:`to_rgb`: files, PIL images and arrays to an RGB PIL image (EXIF rotation applied, grayscale
   replicated, transparency composited on white, 16-bit and float images scaled with their contrast kept).
2. :func:`prepare_image`: the model's colour mode (RGB, or ``L`` for a one-channel model) and its geometry
   (:func:`crop_geometry`): resized straight to the input size, or, for models with a ``crop_pct`` (timm, Hugging
   Face image processors), resized so that ``size / crop_pct`` is covered without changing the aspect ratio and
   centre-cropped to the input size, so photos are not squashed. The display image is this very crop.
   :func:`resize_mask` takes a ground-truth mask through the same resize (nearest neighbour) and crop.
3. :func:`to_tensor` and :func:`normalise`: ``(B, C, H, W)`` uint8, then ``(pixels / 255 - mean) / std``.
4. :func:`denormalise` and :func:`to_display` invert step 3 for display.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from xvit.models import Preprocessing

__all__ = ["ImageLoadError", "ImageSource", "RESAMPLE", "apply_geometry", "channels", "crop_geometry", "denormalise",
           "normalise", "open_image", "prepare_image", "resize_mask", "to_display", "to_rgb",
           "to_tensor"]

ImageSource = str | os.PathLike | Image.Image | np.ndarray

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
"""Interpolation names of :class:`~xvit.models.Preprocessing` (timm's vocabulary) to Pillow filters; other
names resize bilinearly."""


class ImageLoadError(ValueError):
    """An image could not be turned into model input; the message names the image and the fix."""


def channels(preprocessing: Preprocessing) -> int:
    """Number of input channels a model takes: one per entry of its normalisation mean (1 or 3)."""
    c = len(preprocessing.mean)
    if c not in (1, 3) or len(preprocessing.std) != c:
        raise ValueError(f"Preprocessing needs 1 or 3 channels with one mean and std each; got mean "
                         f"{preprocessing.mean} and std {preprocessing.std}.")
    return c


def prepare_image(src: ImageSource, preprocessing: Preprocessing) -> Image.Image:
    """An image in the model's colour mode (``RGB``, or ``L`` for one channel) at its input size (H, W): resized
    with its interpolation and, for a model with a ``crop_pct``, centre-cropped (:func:`apply_geometry`)."""
    image = to_rgb(src)
    if image.width == 0 or image.height == 0:
        name = repr(str(src)) if isinstance(src, (str, os.PathLike)) else f"the {type(src).__name__}"
        raise ImageLoadError(f"Image {name} has zero size ({image.width}x{image.height}); pass an image with at "
                             "least one pixel.")
    if channels(preprocessing) == 1:
        image = image.convert("L")
    return apply_geometry(image, preprocessing, RESAMPLE.get(preprocessing.interpolation, Image.Resampling.BILINEAR))


def crop_geometry(height: int, width: int, preprocessing: Preprocessing
                  ) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where an ``height`` x ``width`` image goes: ``((H', W'), (top, left, bottom, right))``, the size it is resized
    to and the box of the model's input cut out of the resized image.

    Without ``crop_pct`` the image is resized straight to ``preprocessing.size`` (the box is all of it). With it,
    the scaled size is ``floor(size / crop_pct)`` per side (timm's evaluation transform); ``crop_mode="center"``
    scales the image by one factor so that it covers the scaled size (the shorter side, for a square input,
    reaches it exactly; the other keeps the aspect ratio, truncated as torchvision does), ``"squash"`` resizes to
    the scaled size. The box is the centred input size (offsets rounded like torchvision's ``CenterCrop``); with
    ``crop_pct > 1`` it reaches past the resized image, and :func:`apply_geometry` pads with zeros there.
    """
    out_h, out_w = (int(s) for s in preprocessing.size)
    if preprocessing.crop_pct is None:
        return (out_h, out_w), (0, 0, out_h, out_w)
    # a small tolerance so that e.g. 224 / (224 / 256) is 256, not 255
    scaled_h, scaled_w = (math.floor(s / preprocessing.crop_pct + 1e-6) for s in (out_h, out_w))
    if preprocessing.crop_mode == "squash":
        new_h, new_w = scaled_h, scaled_w
    elif scaled_h / height >= scaled_w / width:  # the height binds
        new_h, new_w = scaled_h, max(1, int(width * scaled_h / height))
    else:
        new_h, new_w = max(1, int(height * scaled_w / width)), scaled_w
    top, left = int(round((new_h - out_h) / 2)), int(round((new_w - out_w) / 2))
    return (new_h, new_w), (top, left, top + out_h, left + out_w)


def apply_geometry(image: Image.Image, preprocessing: Preprocessing,
                   resample: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
    """``image`` resized with ``resample`` and cropped by :func:`crop_geometry`: the model's input grid. Images and
    their masks (nearest neighbour) go through this one function, so they stay aligned."""
    (new_h, new_w), (top, left, bottom, right) = crop_geometry(image.height, image.width, preprocessing)
    if (new_h, new_w) != (image.height, image.width):
        image = image.resize((new_w, new_h), resample)
    if (top, left, bottom, right) != (0, 0, new_h, new_w):
        image = image.crop((left, top, right, bottom))
    return image


def resize_mask(mask: np.ndarray, target: tuple[int, int] | Preprocessing) -> np.ndarray:
    """A boolean ``(h, w)`` mask on the model's input grid, with nearest neighbour.

    ``target`` is the model's :class:`~xvit.models.Preprocessing` (the resize and crop of :func:`prepare_image`
    for the image the mask belongs to, by :func:`apply_geometry`) or a plain size ``(H, W)`` to resize straight
    to.
    """
    prep = target if isinstance(target, Preprocessing) else Preprocessing(size=tuple(int(s) for s in target))
    mask = np.asarray(mask)
    if mask.shape[:2] == tuple(prep.size) and prep.crop_pct is None:
        return mask.astype(bool, copy=False)
    return np.asarray(apply_geometry(Image.fromarray(mask.astype(np.uint8)), prep, Image.Resampling.NEAREST)) > 0


def to_tensor(images: Sequence[Image.Image]) -> Tensor:
    """Same-sized PIL images (``RGB`` or ``L``) as a contiguous uint8 batch ``(B, C, H, W)`` (channels-first in
    memory too: a channels-last view would send convolutions down another kernel, with other rounding)."""
    pixels = np.stack([np.asarray(im) for im in images])
    pixels = pixels[..., None] if pixels.ndim == 3 else pixels
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def normalise(images: Tensor, preprocessing: Preprocessing) -> Tensor:
    """``(pixels - mean) / std`` per channel of a ``(B, C, H, W)`` batch: uint8 pixels are first divided by
    255, float pixels are taken to lie in [0, 1]. Float32 unless ``images`` is another float type."""
    pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean, std = _stats(preprocessing, pixels)
    return (pixels - mean) / std


def denormalise(x: Tensor, preprocessing: Preprocessing) -> Tensor:
    """The inverse of :func:`normalise`: pixels in [0, 1] (clamped) of a normalised batch."""
    mean, std = _stats(preprocessing, x)
    return (x * std + mean).clamp(0.0, 1.0)


def to_display(x: Tensor, preprocessing: Preprocessing) -> list[Image.Image]:
    """Display images (``RGB``, or ``L`` for one channel) of a normalised batch ``(B, C, H, W)``."""
    pixels = (denormalise(x.detach().float().cpu(), preprocessing) * 255.0).round().to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def _stats(preprocessing: Preprocessing, like: Tensor) -> tuple[Tensor, Tensor]:
    c = channels(preprocessing)
    if like.ndim != 4 or like.shape[1] != c:
        raise ValueError(f"Expected a batch (B, {c}, H, W) for a {c}-channel model; got {tuple(like.shape)}.")
    dtype = like.dtype if like.is_floating_point() else torch.float32
    mean = torch.tensor(preprocessing.mean, dtype=dtype, device=like.device).view(1, c, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=dtype, device=like.device).view(1, c, 1, 1)
    return mean, std


# ------------------------------------------------------------------------------------------- conversion


def to_rgb(src: ImageSource) -> Image.Image:
    """An RGB PIL image from a file path, a PIL image, or an ``(H, W, 3)`` / ``(H, W, 4)`` / ``(H, W)`` array
    (uint8, uint16, or float in [0, 1]).

    Grayscale becomes RGB; transparency is composited on white; 16-bit images are scaled to 8 bits, keeping
    their contrast; CMYK and palette images are converted; EXIF orientation is applied.

    Raises:
        ImageLoadError: a file is missing, not a regular file, unreadable, truncated, too large or not an
            image, or an array has the wrong shape, type or range.
    """
    if isinstance(src, (str, os.PathLike)):
        return _pil_to_rgb(open_image(src), str(src))
    if isinstance(src, Image.Image):
        name = getattr(src, "filename", "") or f"PIL image ({src.mode}, {src.width}x{src.height})"
        return _pil_to_rgb(src, name)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        raise ImageLoadError(
            f"Got {len(src)} raw bytes; images are file paths, PIL images or (H, W, 3) arrays. Decode encoded bytes "
            "first with PIL.Image.open(io.BytesIO(data)), or save them to a file and pass its path."
        )
    if isinstance(src, Tensor):
        raise ImageLoadError(
            f"Got a torch.Tensor {tuple(src.shape)}; images are file paths, PIL images or (H, W, 3) arrays. "
            "A tensor already normalised for the model can go to the explainer directly."
        )
    raise ImageLoadError(f"Cannot load an image from {type(src).__name__}; pass a file path, a PIL image or "
                         "an (H, W, 3) array.")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and decode an image file, turning Pillow's exceptions into messages that name the file and the fix.
    Only regular files are opened (a FIFO or device would block or stream forever)."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"Image file {str(path)!r} does not exist.")
    if path.is_dir():
        raise ImageLoadError(f"{str(path)!r} is a directory; pass the image files in it (e.g. {path}/*.png).")
    if not path.is_file():
        raise ImageLoadError(f"{str(path)!r} is not a regular file (a pipe, socket or device); pass an image file.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = Image.open(path)
            img.load()
        except Image.DecompressionBombError as e:
            raise ImageLoadError(
                f"{str(path)!r} is too large to load safely ({e}). If you trust the file, raise "
                "PIL.Image.MAX_IMAGE_PIXELS (None disables the check) or downscale the image first."
            ) from None
        except UnidentifiedImageError:
            raise ImageLoadError(f"{str(path)!r} is not an image file Pillow can read "
                                 f"(formats: PNG, JPEG, BMP, GIF, TIFF, WebP, ...).") from None
        except PermissionError:
            raise ImageLoadError(f"No permission to read {str(path)!r}.") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageLoadError(
                f"{str(path)!r} is truncated or corrupt ({e}). Re-export or re-download it; to load what is "
                "there anyway, set PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True."
            ) from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn(f"{str(path)!r} has {img.width * img.height:,} pixels, above Pillow's "
                          f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,}; loading it anyway.",
                          UserWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return img


def _pil_to_rgb(img: Image.Image, name: str) -> Image.Image:
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except OSError as e:
        raise ImageLoadError(f"{name!r} is truncated or corrupt ({e}). "
                             "Re-export or re-download it.") from None
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _array_to_rgb(_high_depth_to_float(np.asarray(img), img.mode, name))
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageLoadError(f"{name!r} has image mode {img.mode!r}, which cannot be converted to RGB ({e}). "
                             "Convert it to RGB with an image editor first.") from None


def _high_depth_to_float(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Grayscale with more than 8 bits to floats in [0, 1], keeping the contrast."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageLoadError(f"{name!r} holds NaN or infinite pixel values.")
    if mode.startswith("I;16"):
        return a / 65535.0
    lo, hi = float(a.min()), float(a.max())
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return a
    if mode == "I" and lo >= 0.0 and hi <= 65535.0:  # Pillow opens some 16-bit files as 32-bit "I"
        return a / (255.0 if hi <= 255.0 else 65535.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _array_to_rgb(a: np.ndarray) -> Image.Image:
    shape = tuple(a.shape)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"Array of shape {shape} looks channel-first; pass (H, W, 3), "
                             "e.g. a.transpose(1, 2, 0).")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageLoadError(f"Expected an image array (H, W, 3), (H, W, 4) or (H, W); got shape {shape}.")
    if a.dtype == np.uint8:
        pixels = a
    elif a.dtype == np.uint16:
        pixels = np.round(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageLoadError(f"Image array {shape} holds NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(f"Float image arrays must lie in [0, 1]; got values in "
                                 f"[{lo:.3g}, {hi:.3g}]. Divide 0-255 pixels by 255 (or pass them as uint8).")
        pixels = np.round(a * 255.0).astype(np.uint8)
    else:
        raise ImageLoadError(f"Image arrays must be uint8, uint16 or float in [0, 1]; got dtype {a.dtype}.")
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return _pil_to_rgb(img, f"array {shape}") if img.mode != "RGB" else img

