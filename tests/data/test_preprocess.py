"""The one pixel path: conversion, resizing with the model's interpolation, normalisation and its inverse."""

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data.preprocess import (
    ImageLoadError,
    channels,
    denormalise,
    normalise,
    open_image,
    prepare_image,
    resize_mask,
    to_display,
    to_rgb,
    to_tensor,
)
from xvit.models import Preprocessing

IMAGENET = Preprocessing(size=(12, 10), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         interpolation="bicubic")
GRAY = Preprocessing(size=(8, 8), mean=(0.1307,), std=(0.3081,))


def test_normalise_divides_uint8_by_255_and_applies_mean_and_std():
    pixels = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    expected = (pixels.float() / 255.0 - mean) / std
    assert torch.equal(normalise(pixels, IMAGENET), expected)
    assert torch.equal(normalise(pixels.float() / 255.0, IMAGENET), expected)
    assert normalise(pixels.double() / 255.0, IMAGENET).dtype == torch.float64


def test_denormalise_and_to_display_invert_normalise():
    pixels = torch.randint(0, 256, (2, 3, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = normalise(pixels, IMAGENET)
    torch.testing.assert_close(denormalise(x, IMAGENET), pixels.float() / 255.0)
    shown = to_display(x, IMAGENET)
    assert [im.mode for im in shown] == ["RGB", "RGB"] and shown[0].size == (7, 6)
    assert torch.equal(to_tensor(shown), pixels)
    assert to_display(normalise(pixels[:, :1], GRAY), GRAY)[0].mode == "L"


def test_prepare_image_resizes_with_the_model_interpolation():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    got = np.asarray(prepare_image(array, IMAGENET))
    bicubic = np.asarray(Image.fromarray(array).resize((10, 12), Image.Resampling.BICUBIC))
    bilinear = np.asarray(Image.fromarray(array).resize((10, 12), Image.Resampling.BILINEAR))
    assert got.shape == (12, 10, 3) and np.array_equal(got, bicubic) and not np.array_equal(got, bilinear)


def test_one_channel_models_get_grayscale_and_three_channel_models_replicate_gray():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    gray = prepare_image(digit, GRAY)
    assert gray.mode == "L" and gray.size == (8, 8)
    x = normalise(to_tensor([gray]), GRAY)
    assert x.shape == (1, 1, 8, 8)
    rgb = to_tensor([prepare_image(digit, Preprocessing(size=(8, 8)))])
    assert rgb.shape == (1, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert torch.equal(rgb[:, :1], to_tensor([gray]))  # gray replicated to RGB and back to L is exact
    with pytest.raises(ValueError, match="1 or 3 channels"):
        channels(Preprocessing(mean=(0.5, 0.5), std=(0.5, 0.5)))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        normalise(torch.zeros(1, 3, 8, 8), GRAY)


def test_masks_resize_with_nearest_neighbour_on_the_image_grid():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 0:12] = True
    got = resize_mask(mask, (10, 15))
    expected = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((15, 10), Image.Resampling.NEAREST)) > 0
    assert got.dtype == bool and np.array_equal(got, expected)
    assert np.array_equal(resize_mask(mask, (20, 30)), mask)


def test_sixteen_bit_and_transparent_images_convert_as_load_images_does(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    row = np.asarray(to_rgb(tmp_path / "deep.png"))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and 100 <= row[8] <= 155
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert np.asarray(to_rgb(rgba)).min() == 255  # fully transparent: white


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(pytest.raises(ImageLoadError, open_image, fifo)),
                              daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in str(outcome[0].value)
