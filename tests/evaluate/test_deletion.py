import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xvit.evaluate import DeletionInsertion, deletion_insertion
from xvit.utils.filters import gaussian_blur

from .stubs import HALF, bright_count_model, data, tiny_cnn


def rise_blur(x):
    return gaussian_blur(x, 11, 5.0, kernel="folded", padding="zeros")


def tis_blur(x):
    return gaussian_blur(x, 11, 5.0, kernel="truncated", padding="reflect")


# 2x2 image: pixels 0, 1 dark (-1), pixels 2, 3 bright (+1); the map ranks them 0, 2, 3, 1.
X = torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
MAP = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])
T0 = torch.tensor([0])


def test_rise_deletion_hand_computed():
    # q = (1 + #bright) / 6 over states k = 0..4 with "mean" (0) as substrate: 3/6, 3/6, 2/6, 1/6, 1/6.
    r = deletion_insertion(bright_count_model, X, MAP, T0, mode="deletion", pixels_per_step=1)
    assert r.curves[0].tolist() == pytest.approx([3 / 6, 3 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert r.curve_x.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert r.value == pytest.approx(1 / 3)  # (10/6 - (3/6 + 1/6)/2) / 4
    assert r.higher_is_better is False and r.forward_passes == 5


def test_rise_insertion_hand_computed():
    # RISE inserts into the blurred image; with substrate="mean" the start has no bright pixel.
    r = deletion_insertion(bright_count_model, X, MAP, T0, mode="insertion", substrate="mean", pixels_per_step=1)
    assert r.curves[0].tolist() == pytest.approx([1 / 6, 1 / 6, 2 / 6, 3 / 6, 3 / 6])
    assert r.value == pytest.approx(1 / 3)
    assert r.higher_is_better is True


def test_tis_preset_skips_the_start_state():
    r = deletion_insertion(bright_count_model, X, MAP, T0, preset="tis", substrate="mean", steps=4)
    assert r.curves[0].tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert r.curve_x.tolist() == [0.25, 0.5, 0.75, 1]
    assert r.value == pytest.approx(0.25 * (5 / 12 + 3 / 12 + 2 / 12))


def test_black_substrate_and_step_rounding():
    # Black (-1 after 0.5/0.5) on a white image; 3 pixels per step on 4 pixels: states remove 0, 3, 4 pixels.
    white = torch.ones(1, 3, 2, 2)
    r = deletion_insertion(bright_count_model, white, MAP, T0, substrate="black", mean=HALF, std=HALF,
                           pixels_per_step=3)
    assert r.curves[0].tolist() == pytest.approx([5 / 6, 2 / 6, 1 / 6])
    assert r.curve_x.tolist() == pytest.approx([0, 0.5, 1])


def test_default_step_sizes_follow_the_presets():
    x = torch.zeros(1, 3, 20, 20)  # HW = 400
    maps = torch.zeros(1, 20, 20)
    rise = deletion_insertion(bright_count_model, x, maps, T0)  # s = 224 -> n = 2, states 0..2
    tis = deletion_insertion(bright_count_model, x, maps, T0, preset="tis", substrate="mean")  # s = 2, n = 200
    assert rise.curves.shape == (1, 3) and tis.curves.shape == (1, 200)
    assert rise.forward_passes == 3 and tis.forward_passes == 200
    # 224 x 224: both presets change 224 pixels per step; rise also scores the unperturbed start.
    assert DeletionInsertion().forward_passes_per_image(224, 224) == 225
    assert DeletionInsertion(preset="tis").forward_passes_per_image(224, 224) == 224
    assert DeletionInsertion(steps=10).forward_passes_per_image(224, 224) == 11


def test_matches_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    d = data(n=5, size=6)
    model = tiny_cnn(size=6)
    maps = d["maps"]
    # Quantus flips 3 channel entries per pixel: 12 features = 4 pixels per step, constant baseline 0 = "mean".
    pf = quantus.PixelFlipping(features_in_step=12, perturb_baseline=0.0, normalise=False, abs=False,
                               disable_warnings=True)
    ref = np.asarray(pf(model=model, x_batch=d["x"].numpy(), y_batch=d["targets"].numpy(),
                        a_batch=maps[:, None].numpy(), device="cpu", softmax=True, channel_first=True))
    ours = deletion_insertion(model, d["x"], maps, d["targets"], preset="tis", substrate="mean",
                              pixels_per_step=4)
    np.testing.assert_allclose(ours.curves.numpy(), ref, rtol=0, atol=1e-6)
    # Quantus' AUC is trapz with dx = 1; ours is on the [1/n, 1] axis.
    np.testing.assert_allclose(ours.scores.numpy(), np.trapezoid(ref, dx=1, axis=1) / 9, atol=1e-6)


def test_rise_blur_equals_the_reference_gkern():
    ndimage = pytest.importorskip("scipy.ndimage")
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    k = torch.from_numpy(ndimage.gaussian_filter(delta, 5)).float()  # RISE gkern(11, 5)
    x = torch.randn(2, 3, 16, 16)
    ref = F.conv2d(x, k.expand(3, 1, 11, 11), padding=5, groups=3)
    torch.testing.assert_close(rise_blur(x), ref, rtol=0, atol=1e-5)


def test_tis_blur_equals_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(tis_blur(x), tvf.gaussian_blur(x, kernel_size=[11, 11], sigma=[5, 5]),
                               rtol=0, atol=1e-5)


def test_blur_substrates_follow_the_preset():
    d = data(n=2, size=16)
    seen = []

    def model(x):
        seen.append(x)
        return torch.zeros(x.shape[0], 2)

    for preset, blur in (("rise", rise_blur), ("tis", tis_blur)):
        seen.clear()
        deletion_insertion(model, d["x"], d["maps"], torch.tensor([0, 1]), mode="insertion", preset=preset,
                           substrate="blur", steps=2)
        first = torch.cat(seen)[0]  # image 0 with one step (k = 0 for rise, k = 1 for tis) inserted
        from_substrate = first[0] != d["x"][0, 0]
        torch.testing.assert_close(first[:, from_substrate], blur(d["x"])[0][:, from_substrate])


def test_tis_blur_refuses_tiny_images():
    with pytest.raises(ValueError, match="substrate='mean'"):
        deletion_insertion(bright_count_model, X, MAP, T0, preset="tis")


def test_batches_of_another_size_are_refused():
    m = DeletionInsertion(substrate="mean", pixels_per_step=1)
    m.update(bright_count_model, X, MAP, T0)
    with pytest.raises(ValueError, match="states"):
        m.update(bright_count_model, torch.zeros(1, 3, 3, 3), torch.zeros(1, 3, 3), T0)
