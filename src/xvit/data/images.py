"""Loading images into a model's normalised input batch, with errors that name the file and the fix.

``load_images`` brings every image to the model's input size with the model's own geometry (a straight resize
for xvit's checkpoints; resize and centre crop by ``crop_pct`` for timm and Hugging Face models, so photos are not
squashed) and returns the display images at that size, cropped the same way, so an overlay lines up with the
map. The pixel path itself is :mod:`xvit.data.preprocess`, shared with the data sources.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from xvit.data.preprocess import ImageLoadError, ImageSource, normalise, prepare_image, to_tensor
from xvit.models import Preprocessing, preprocessing_for

__all__ = ["ImageLoadError", "ImageSource", "load_images", "warn_if_unnormalised"]


def load_images(images: ImageSource | Sequence[ImageSource],
                model_or_preprocessing: nn.Module | Preprocessing) -> tuple[Tensor, list[Image.Image]]:
    """Read, convert to RGB, resize (and centre-crop, where the model's preprocessing does) and normalise images
    for a model.

    Args:
        images: one image or a sequence of them: file paths, PIL images, or ``(H, W, 3)`` / ``(H, W)``
            arrays (uint8, uint16, or float in [0, 1]). Grayscale becomes RGB; transparency is
            composited on white; 16-bit images are scaled to 8 bits; CMYK and palette images are converted.
        model_or_preprocessing: the model (its preprocessing comes from
            :func:`xvit.models.preprocessing_for`) or a :class:`~xvit.models.Preprocessing`.

    Returns:
        ``(x, display)``: ``x`` a float32 batch ``(B, 3, H, W)`` normalised with the model's mean and
        std, on the CPU; ``display`` the RGB PIL images at size ``(H, W)`` (exactly the pixels of ``x``, the same
        crop), one per input. A one-channel
        model (one mean and std) gets ``(B, 1, H, W)`` and grayscale (``L``) display images.

    Raises:
        ImageLoadError: a file is missing, unreadable, truncated, too large, or not an image, or an
            array has the wrong shape or range.
    """
    prep = _preprocessing(model_or_preprocessing)
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, bytes, bytearray, memoryview)):
        images = [images]
    if len(images) == 0:
        raise ImageLoadError("No images given; pass at least one path, PIL image or array.")
    display = [prepare_image(src, prep) for src in images]
    return normalise(to_tensor(display), prep), display


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
