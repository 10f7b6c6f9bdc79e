"""The one pixel path: conversion, resizing and cropping with the model's geometry, normalisation and its inverse."""

import json
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data.images import load_images
from xvit.data.preprocess import (
    ImageLoadError,
    channels,
    crop_geometry,
    denormalise,
    normalise,
    open_image,
    prepare_image,
    resize_mask,
    to_display,
    to_rgb,
    to_tensor,
)
from xvit.data.sources.base import EvalDataset
from xvit.models import Preprocessing, hf_preprocessing, load_model, preprocessing_for

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


# ------------------------------------------------------------------------------------- geometry: resize and crop

TIMM_LIKE = Preprocessing(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", crop_pct=0.875)


def test_crop_geometry_resizes_the_shorter_side_and_cuts_the_centre():
    # 32 / 0.875 = 36.57 -> 36; a 60 x 40 (W x H) image: height binds, width 60 * 36 / 40 = 54
    assert crop_geometry(40, 60, TIMM_LIKE) == ((36, 54), (2, 11, 34, 43))
    assert crop_geometry(60, 40, TIMM_LIKE) == ((54, 36), (11, 2, 43, 34))
    squash = Preprocessing(size=(224, 224), crop_pct=224 / 256, crop_mode="squash")
    assert crop_geometry(100, 300, squash) == ((256, 256), (16, 16, 240, 240))
    assert crop_geometry(40, 60, Preprocessing(size=(32, 32))) == ((32, 32), (0, 0, 32, 32))  # no crop_pct


def test_prepare_image_keeps_the_aspect_ratio_and_display_equals_the_input():
    # a wide image whose left and right thirds differ: a straight resize would keep all three; the crop drops the
    # outer parts, and the display image is the model's input pixel for pixel
    a = np.zeros((40, 120, 3), np.uint8)
    a[:, :40] = (255, 0, 0)
    a[:, 40:80] = (0, 255, 0)
    a[:, 80:] = (0, 0, 255)
    crop = Preprocessing(size=(16, 16), crop_pct=1.0, interpolation="nearest")
    img = prepare_image(a, crop)
    assert img.size == (16, 16) and np.all(np.asarray(img) == (0, 255, 0))
    squashed = np.asarray(prepare_image(a, Preprocessing(size=(16, 16), interpolation="nearest")))
    assert (squashed[:, 0] == (255, 0, 0)).all() and (squashed[:, -1] == (0, 0, 255)).all()
    x, (display,) = load_images(a, crop)
    assert torch.equal(to_tensor([display]), (denormalise(x, crop) * 255).round().to(torch.uint8))


def test_the_geometry_matches_timms_evaluation_transform():
    from xvit._compat.torchvision_ops import ensure_torchvision_importable

    ensure_torchvision_importable()
    timm = pytest.importorskip("timm")
    from timm.data import create_transform

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    for crop_pct in (0.875, 0.9, 1.0):
        prep = Preprocessing(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                             interpolation="bicubic", crop_pct=crop_pct)
        theirs = create_transform(input_size=(3, 32, 32), crop_pct=crop_pct, interpolation="bicubic",
                                  mean=prep.mean, std=prep.std)(photo)
        ours = normalise(to_tensor([prepare_image(photo, prep)]), prep)[0]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    prep = preprocessing_for(model)
    assert (prep.size, prep.crop_pct, prep.crop_mode, prep.interpolation) == ((32, 32), 0.9, "center", "bicubic")


def test_hugging_face_processor_configs_become_the_same_geometry():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (44, 70, 3), dtype=np.uint8))
    processors = {"convnext": transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875),
                  "deit": transformers.DeiTImageProcessor(size={"height": 40, "width": 40},
                                                          crop_size={"height": 32, "width": 32}),
                  "vit": transformers.ViTImageProcessor(size={"height": 32, "width": 32})}
    expected = {"convnext": (0.875, "center"), "deit": (0.8, "squash"), "vit": (None, "squash")}
    for name, proc in processors.items():
        prep = hf_preprocessing(json.loads(proc.to_json_string()))
        assert prep.size == (32, 32) and (prep.crop_pct, prep.crop_mode) == expected[name], name
        theirs = proc(photo, return_tensors="pt")["pixel_values"][0]
        ours = normalise(to_tensor([prepare_image(photo, prep)]), prep)[0]
        assert (ours - theirs).abs().max() <= 1.01 / 255 / 0.5, name  # at most one 8-bit level (their rounding)


def test_preprocessing_keeps_old_configs_and_round_trips_the_crop():
    old = {"size": [48, 48], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    assert Preprocessing.from_dict(old).crop_pct is None and Preprocessing.from_dict(old).to_dict() == {
        **old, "size": (48, 48), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    crop = Preprocessing(size=(32, 32), crop_pct=0.9, crop_mode="squash")
    assert Preprocessing.from_dict(json.loads(json.dumps(crop.to_dict()))) == crop
    with pytest.raises(ValueError, match="crop_pct"):
        Preprocessing(crop_pct=0.0)
    with pytest.raises(ValueError, match="crop_mode"):
        Preprocessing(crop_mode="border")


def test_masks_and_markers_go_through_the_same_resize_and_crop():
    # a non-square image with a red object that straddles the part the crop cuts away, and a marker in a corner
    # that the crop removes altogether
    h, w = 40, 64
    image = np.full((h, w, 3), 200, np.uint8)
    obj = np.zeros((h, w), bool)
    obj[10:30, 2:30] = True
    marker = np.zeros((h, w), bool)
    marker[0:6, 58:64] = True
    image[obj] = (255, 0, 0)
    image[marker] = (0, 0, 255)
    prep = Preprocessing(size=(20, 20), crop_pct=0.8, interpolation="nearest")
    got = resize_mask(obj, prep)
    red = np.all(np.asarray(prepare_image(image, prep)) == (255, 0, 0), axis=-1)
    assert got.shape == (20, 20) and np.array_equal(got, red)
    straight = resize_mask(obj, (20, 20))
    assert got.sum() != straight.sum() and got[:, 0].any()  # the crop changed the mask and cut the object
    assert not resize_mask(marker, prep).any() and resize_mask(marker, (20, 20)).any()

    data = EvalDataset(spec="by-hand", ids=["a"], labels=torch.tensor([0]), class_names=["x"], has_masks=True,
                       pair=False, reader=lambda i: (image, [obj]), marker_reader=lambda i: marker)
    batch = data.load([0], prep)
    pixels = (denormalise(batch.x, prep)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert torch.equal(batch.masks[0], torch.from_numpy(np.all(pixels == (255, 0, 0), axis=-1)))
    assert not batch.marker_masks.any()


def test_a_hugging_face_checkpoint_directory_brings_its_processors_crop(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=8, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    transformers.DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32},
                                    resample=3).save_pretrained(tmp_path)
    prep = preprocessing_for(load_model(str(tmp_path)))
    assert (prep.size, prep.crop_pct, prep.crop_mode, prep.interpolation) == ((32, 32), 0.8, "squash", "bicubic")
