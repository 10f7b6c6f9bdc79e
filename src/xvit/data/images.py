"""Loading images into a model's normalised input batch, with errors that name the file and the fix.

``load_images`` resizes every image straight to the model's input size (no centre crop, so the whole
image is explained) and returns the display images at that size, so an overlay lines up with the map.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from xvit.models import Preprocessing, preprocessing_for

__all__ = ["ImageLoadError", "ImageSource", "load_images", "warn_if_unnormalised"]

ImageSource = str | os.PathLike | Image.Image | np.ndarray

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


class ImageLoadError(ValueError):
    """An image could not be turned into model input; the message names the image and the fix."""


def load_images(images: ImageSource | Sequence[ImageSource],
                model_or_preprocessing: nn.Module | Preprocessing) -> tuple[Tensor, list[Image.Image]]:
    """Read, convert to RGB, resize and normalise images for a model.

    Args:
        images: one image or a sequence of them: file paths, PIL images, or ``(H, W, 3)`` / ``(H, W)``
            arrays (uint8, uint16, or float in [0, 1]). Grayscale becomes RGB; transparency is
            composited on white; 16-bit images are scaled to 8 bits; CMYK and palette images are converted.
        model_or_preprocessing: the model (its preprocessing comes from
            :func:`xvit.models.preprocessing_for`) or a :class:`~xvit.models.Preprocessing`.

    Returns:
        ``(x, display)``: ``x`` a float32 batch ``(B, 3, H, W)`` normalised with the model's mean and
        std, on the CPU; ``display`` the RGB PIL images at size ``(H, W)``, one per input.

    Raises:
        ImageLoadError: a file is missing, unreadable, truncated, too large, or not an image, or an
            array has the wrong shape or range.
    """
    prep = _preprocessing(model_or_preprocessing)
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if len(images) == 0:
        raise ImageLoadError("No images given; pass at least one path, PIL image or array.")
    resample = _RESAMPLE.get(prep.interpolation, Image.Resampling.BILINEAR)
    height, width = prep.size
    display = [_to_rgb(src).resize((width, height), resample) for src in images]
    pixels = torch.from_numpy(np.stack([np.asarray(im) for im in display])).permute(0, 3, 1, 2)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std, display


def warn_if_unnormalised(x: Tensor, preprocessing: Preprocessing) -> bool:
    """Warn (UserWarning) when a batch does not look normalised with ``preprocessing``'s mean and std.

    Normalising pixels in [0, 1] gives values in ``[-mean/std, (1-mean)/std]`` per channel. Two
    symptoms are flagged: values well outside that range (0-255 pixels, or another normalisation),
    and all values inside [0, 1] when the normalisation should produce negative values (pixels
    scaled to [0, 1] but not normalised). Returns whether it warned.
    """
    mean = torch.tensor(preprocessing.mean, dtype=torch.float64)
    std = torch.tensor(preprocessing.std, dtype=torch.float64)
    low, high = float((-mean / std).min()), float(((1 - mean) / std).max())
    lo, hi = (float(v) for v in x.detach().aminmax())
    fix = "Build the batch with xvit.load_images(paths, model), or normalise as (pixels / 255 - mean) / std."
    stats = f"mean={tuple(preprocessing.mean)}, std={tuple(preprocessing.std)}"
    margin = 0.25 * (high - low)
    if lo < low - margin or hi > high + margin:
        hint = " They look like unscaled 0-255 pixels." if hi > 20 else ""
        warnings.warn(f"Input values span [{lo:.3g}, {hi:.3g}], but the model's normalisation ({stats}) "
                      f"maps [0, 1] pixels to [{low:.3g}, {high:.3g}].{hint} {fix}",
                      UserWarning, stacklevel=2)
        return True
    if lo >= 0.0 and hi <= 1.0 and low < -0.5:
        warnings.warn(f"All input values lie in [0, 1], but the model expects pixels normalised with {stats} "
                      f"(values in [{low:.3g}, {high:.3g}]). {fix}", UserWarning, stacklevel=2)
        return True
    return False


def _preprocessing(model_or_preprocessing: Any) -> Preprocessing:
    if isinstance(model_or_preprocessing, Preprocessing):
        return model_or_preprocessing
    if isinstance(model_or_preprocessing, nn.Module):
        return preprocessing_for(model_or_preprocessing)
    raise TypeError("load_images needs the model or an xvit.models.Preprocessing as its second argument; "
                    f"got {type(model_or_preprocessing).__name__}.")


def _to_rgb(src: Any) -> Image.Image:
    if isinstance(src, (str, os.PathLike)):
        return _pil_to_rgb(_open(Path(src)), str(src))
    if isinstance(src, Image.Image):
        name = getattr(src, "filename", "") or f"PIL image ({src.mode}, {src.width}x{src.height})"
        return _pil_to_rgb(src, name)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src)
    if isinstance(src, Tensor):
        raise ImageLoadError(
            f"load_images got a torch.Tensor {tuple(src.shape)}; it takes file paths, PIL images or "
            "(H, W, 3) arrays. A tensor already normalised for the model can go to the explainer directly."
        )
    raise ImageLoadError(f"Cannot load an image from {type(src).__name__}; pass a file path, a PIL image or "
                         "an (H, W, 3) array.")


def _open(path: Path) -> Image.Image:
    """Open and decode a file, turning Pillow's exceptions into messages that name the file and the fix."""
    if not path.exists():
        raise ImageLoadError(f"Image file {str(path)!r} does not exist.")
    if path.is_dir():
        raise ImageLoadError(f"{str(path)!r} is a directory; pass the image files in it (e.g. {path}/*.png).")
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
