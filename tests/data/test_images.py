"""load_images: conversions, resizing, normalisation and clear errors for bad files."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data import ImageLoadError, load_images
from xvit.data.images import warn_if_unnormalised
from xvit.models import Preprocessing, create_vit

PREP = Preprocessing(size=(16, 16))
IMAGENET = Preprocessing(size=(8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))).save(path)
    x, display = load_images(path, PREP)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert display[0].mode == "RGB" and display[0].size == (16, 16)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red left, fully transparent black right
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    _, (display,) = load_images([path], PREP)
    pixels = np.asarray(display)
    assert tuple(pixels[8, 2]) == (255, 0, 0)
    assert tuple(pixels[8, 13]) == (255, 255, 255)


def test_16bit_png_keeps_its_contrast(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    _, (display,) = load_images(path, PREP)
    row = np.asarray(display)[8, :, 0].astype(int)
    assert row[0] <= 2 and row[-1] >= 253
    assert 100 <= row[8] <= 155, "mid-grey must stay mid-grey, not clip to white"
    assert (row == 255).sum() <= 2


def test_cmyk_and_palette_images_load(tmp_path):
    Image.new("CMYK", (10, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (10, 12), (0, 0, 255)).convert("P").save(tmp_path / "pal.png")
    _, display = load_images([tmp_path / "cmyk.jpg", tmp_path / "pal.png"], PREP)
    red, blue = (np.asarray(d)[8, 8].astype(int) for d in display)
    assert red[0] > 200 and red[1] < 60 and blue[2] > 200 and blue[0] < 60


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ImageLoadError, match="cut.png.*truncated or corrupt"):
        load_images(path, PREP)


def test_missing_file_and_non_image(tmp_path):
    with pytest.raises(ImageLoadError, match="nothere.png.*does not exist"):
        load_images(tmp_path / "nothere.png", PREP)
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageLoadError, match="notes.png.*not an image"):
        load_images(tmp_path / "notes.png", PREP)
    with pytest.raises(ImageLoadError, match="directory"):
        load_images(tmp_path, PREP)


def test_huge_image_gives_a_clear_error_or_warning(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="big.png.*MAX_IMAGE_PIXELS"):
        load_images(path, PREP)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: Pillow only warns below 2x
    with pytest.warns(UserWarning, match="big.png.*decompression-bomb"):
        x, _ = load_images(path, PREP)
    assert x.shape == (1, 3, 16, 16)


def test_normalisation_uses_the_preprocessing_mean_and_std():
    img = Image.new("RGB", (20, 30), (255, 0, 51))
    x, (display,) = load_images(img, IMAGENET)
    assert display.size == (8, 8)
    expected = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225])
    torch.testing.assert_close(x[0, :, 4, 4], expected, atol=1e-5, rtol=0)


def test_resizes_to_non_square_size_from_model_or_preprocessing():
    img = Image.new("RGB", (50, 20), (10, 20, 30))
    x, (display,) = load_images([img], Preprocessing(size=(16, 24)))
    assert x.shape == (1, 3, 16, 24) and display.size == (24, 16)
    x, _ = load_images([img, img], create_vit("nano", img_size=32))
    assert x.shape == (2, 3, 32, 32)


def test_arrays_uint8_and_float_agree_and_bad_arrays_raise():
    a = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x8, _ = load_images(a, PREP)
    xf, _ = load_images(a.astype(np.float32) / 255.0, PREP)
    torch.testing.assert_close(x8, xf)
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_images(a.astype(np.float32), PREP)
    with pytest.raises(ImageLoadError, match="channel-first"):
        load_images(a.transpose(2, 0, 1), PREP)
    with pytest.raises(ImageLoadError, match="torch.Tensor"):
        load_images(torch.zeros(3, 16, 16), PREP)


def test_warn_if_unnormalised_flags_raw_pixels_but_not_a_correct_batch():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    x, _ = load_images(img, PREP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_unnormalised(x, PREP) is False
    raw = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
    with pytest.warns(UserWarning, match="0-255"):
        assert warn_if_unnormalised(raw, PREP) is True
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        assert warn_if_unnormalised(raw / 255.0, PREP) is True


@pytest.mark.parametrize("src", [b"\x89PNG...", bytearray(b"abc"), [b"abc"]])
def test_raw_bytes_say_how_to_decode_them(src):
    with pytest.raises(ImageLoadError, match=r"raw bytes.*BytesIO"):
        load_images(src, Preprocessing(size=(16, 16)))


@pytest.mark.parametrize("src", [np.zeros((0, 5, 3), np.uint8), Image.new("RGB", (0, 0))])
def test_zero_size_images_are_refused(src):
    with pytest.raises(ImageLoadError, match="zero size"):
        load_images(src, Preprocessing(size=(16, 16)))


def test_a_folder_or_a_fifo_given_as_an_image_says_what_it_is(tmp_path):
    import os

    with pytest.raises(ImageLoadError, match="is a directory"):
        load_images(tmp_path, Preprocessing(size=(16, 16)))
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ImageLoadError, match="not a regular file"):  # checked before opening: never blocks
        load_images(tmp_path / "pipe", Preprocessing(size=(16, 16)))


def test_a_timm_models_crop_keeps_photos_unsquashed_and_the_display_is_the_input():
    from xvit._compat.torchvision_ops import ensure_torchvision_importable

    ensure_torchvision_importable()
    timm = pytest.importorskip("timm")
    wide = np.zeros((32, 96, 3), np.uint8)  # red, green, blue thirds
    wide[:, :32, 0] = wide[:, 32:64, 1] = wide[:, 64:, 2] = 255
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, depth=1)
    x, (display,) = load_images(wide, model)  # crop_pct 0.9 from its pretrained_cfg: the green centre only
    pixels = np.asarray(display).reshape(-1, 3)
    assert x.shape == (1, 3, 16, 16) and (pixels[:, 1] > 200).all() and (pixels[:, [0, 2]] < 60).all()
    prep = Preprocessing(size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    _, (squashed,) = load_images(wide, prep)  # no crop_pct: all three thirds, squashed
    assert np.asarray(squashed)[8, 0, 0] > 200 and np.asarray(squashed)[8, -1, 2] > 200
