import math

import numpy as np
import pytest
import torch

from xvit.evaluate import PointingGame, class_sensitivity, energy_pointing_game, marker_share, pointing_game

from .stubs import data


def _point_and_mask(point, mask_pixel, size=10):
    maps = torch.zeros(1, size, size)
    maps[0, point[0], point[1]] = 1.0
    masks = torch.zeros(1, size, size, dtype=torch.bool)
    masks[0, mask_pixel[0], mask_pixel[1]] = True
    return maps, masks


@pytest.mark.parametrize(("tol", "hit"), [(0, 0.0), (4, 0.0), (4.01, 1.0), (15, 1.0)])
def test_tolerance_is_a_strict_disc(tol, hit):
    maps, masks = _point_and_mask((2, 2), (2, 6))  # distance exactly 4
    assert pointing_game(maps, masks, torch.tensor([0]), tol=tol).scores.item() == hit


def test_diagonal_distance_is_euclidean():
    maps, masks = _point_and_mask((2, 2), (5, 6))  # distance 5
    assert pointing_game(maps, masks, torch.tensor([0]), tol=5).scores.item() == 0.0
    assert pointing_game(maps, masks, torch.tensor([0]), tol=5.1).scores.item() == 1.0


def test_any_tied_maximum_may_hit():
    maps, masks = _point_and_mask((0, 0), (9, 9))
    maps[0, 9, 9] = 1.0
    assert pointing_game(maps, masks, torch.tensor([0]), tol=0).scores.item() == 1.0


def test_per_class_mean_and_exclusions():
    maps = torch.zeros(5, 4, 4)
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = masks[2, 0, 0] = True  # hits
    masks[1, 3, 3] = True  # miss
    masks[4] = True  # covers the image: excluded with max_overlap = 0.5; image 3 has an empty mask
    r = pointing_game(maps, masks, torch.tensor([0, 0, 1, 1, 2]), tol=0, max_overlap=0.5)
    assert r.scores[:3].tolist() == [1.0, 0.0, 1.0] and math.isnan(r.scores[3]) and math.isnan(r.scores[4])
    assert r.value == pytest.approx((0.5 + 1.0) / 2)  # classes 0 and 1 only
    assert r.summary["image_mean"] == pytest.approx(2 / 3) and r.summary["excluded"] == 2
    assert r.n == 3


def test_matches_quantus_pointing_game():
    quantus = pytest.importorskip("quantus")
    d = data(n=12, size=8)
    maps = (d["maps"] * 2).round()  # coarse values: several maxima per image
    masks = d["masks"]
    q = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
    ref = q(model=None, x_batch=d["x"].numpy(), y_batch=d["labels"].numpy(), a_batch=maps[:, None].numpy(),
            s_batch=masks[:, None].numpy().astype(float), channel_first=True)
    ours = pointing_game(maps, masks, d["labels"], tol=0)  # tol 0: the maximal pixel itself, as Quantus
    assert ours.scores.tolist() == [float(h) for h in ref]
    assert 0 < ours.mean < 1


def test_energy_hand_computed():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # min-max -> [0, 1/3, 2/3, 1], sum 2
    masks = torch.tensor([[[False, False], [False, True]]])
    assert energy_pointing_game(maps, masks).value == pytest.approx(0.5)
    assert energy_pointing_game(-maps, masks).value == pytest.approx(0.5)  # |.| for signed maps
    assert energy_pointing_game(maps, masks, normalise=False).value == pytest.approx(0.5)
    big = torch.tensor([[[False, True], [True, True]]])  # 75 % of the image
    assert math.isnan(energy_pointing_game(maps, big).value)
    assert energy_pointing_game(maps, big, max_overlap=None).value == pytest.approx(1.0)


def test_energy_matches_quantus_attribution_localisation():
    quantus = pytest.importorskip("quantus")
    d = data(n=8, size=8)
    maps = d["maps"].clone()
    maps.view(8, -1)[:, 0] = 0.0  # min |map| = 0, so min-max normalisation is a pure rescaling
    q = quantus.AttributionLocalisation(abs=True, normalise=False, disable_warnings=True)
    ref = q(model=None, x_batch=d["x"].numpy(), y_batch=d["labels"].numpy(), a_batch=maps[:, None].numpy(),
            s_batch=d["masks"][:, None].numpy().astype(float), channel_first=True)
    ours = energy_pointing_game(maps, d["masks"], max_overlap=None)
    np.testing.assert_allclose(ours.scores.numpy(), np.asarray(ref, dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_class_sensitivity_hand_computed():
    maps_a = torch.tensor([[[4.0, 0.0], [1.0, 0.0]]])  # min-max -> [1, 0, .25, 0]
    maps_b = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # min-max -> [0, 0, 1, 0]
    masks_a = torch.tensor([[[True, False], [False, False]]])
    masks_b = torch.tensor([[[False, False], [True, False]]])
    r = class_sensitivity(maps_a, maps_b, masks_a, masks_b)
    assert r.per_image["score_a"].item() == pytest.approx(0.8)  # 1 / (1 + .25)
    assert r.per_image["score_b"].item() == pytest.approx(1.0)
    assert r.value == pytest.approx(0.9)
    swapped = class_sensitivity(maps_b, maps_a, masks_a, masks_b)
    assert swapped.value == pytest.approx(0.1)  # each map on the other object


def _marker_case():
    """Three 10x10 images with a 3x3 marker (chance 0.09) on the first two: a map exactly on the marker, a
    uniform map, and a random map on an image without a marker."""
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[:2, 1:4, 1:4] = True
    maps = torch.stack([masks[0].float(), torch.ones(10, 10), torch.rand(10, 10)])
    return maps, masks, torch.tensor([0, 3, 0])


def test_marker_share_hand_computed():
    maps, masks, targets = _marker_case()
    r = marker_share(maps, masks, targets, normalise=False)
    assert r.scores[:2].tolist() == pytest.approx([1.0, 0.09]) and math.isnan(r.scores[2])  # no marker: excluded
    assert r.n == 2 and r.value == pytest.approx(0.545) and r.higher_is_better is None
    assert r.per_image["chance"][:2].tolist() == pytest.approx([0.09, 0.09]) and math.isnan(r.per_image["chance"][2])
    assert r.summary["chance"] == pytest.approx(0.09) and r.summary["lift"] == pytest.approx(0.545 / 0.09)
    # Image 2 is explained as the shortcut class but has no marker, so only image 0 counts as a shortcut case.
    assert (r.summary["shortcut_share"], r.summary["shortcut_n"]) == (pytest.approx(1.0), 1)
    assert (r.summary["other_share"], r.summary["other_n"]) == (pytest.approx(0.09), 1)
    assert r.summary["excluded"] == 1 and math.isnan(r.summary["shortcut_ci95"])  # one image: no interval
    assert marker_share(-maps, masks, targets, normalise=False).scores[:2].tolist() == pytest.approx([1.0, 0.09])
    # Min-max normalisation (the default) makes a uniform map zero: excluded, as in the energy pointing game.
    normalised = marker_share(maps, masks, targets)
    assert normalised.scores[0].item() == pytest.approx(1.0) and normalised.n == 1
    assert normalised.summary["excluded"] == 2 and math.isnan(normalised.summary["other_share"])


def test_marker_share_normalises_like_the_energy_pointing_game():
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 1:4, 1:4] = True
    maps = torch.where(masks, 2.0, 1.0)
    maps[0, 9, 9] = 0.0  # min-max -> 1 on the marker (9 px), 0.5 on 90 px, 0 on one
    r = marker_share(maps, masks, torch.tensor([1]), shortcut_class=1)
    assert r.value == pytest.approx(9 / (9 + 0.5 * 90))
    assert r.value == pytest.approx(energy_pointing_game(maps, masks).value)
    assert r.summary["shortcut_share"] == pytest.approx(r.value) and r.summary["other_n"] == 0


def test_marker_share_gives_each_subset_a_95_percent_interval():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[:, 0:2, 0:5] = True  # 10 px of 100
    maps = torch.ones(4, 10, 10)
    maps[:, 0:2, 0:5] = torch.tensor([10.0, 30.0, 90.0, 90.0]).view(4, 1, 1)  # 10·v on the marker, 90 elsewhere
    r = marker_share(maps, masks, torch.tensor([0, 0, 2, 2]), normalise=False)
    shares = torch.tensor([100 / 190, 300 / 390, 900 / 990, 900 / 990], dtype=torch.float64)
    assert r.summary["shortcut_share"] == pytest.approx(float(shares[:2].mean()))
    assert r.summary["shortcut_ci95"] == pytest.approx(1.96 * float(shares[:2].std()) / math.sqrt(2))
    assert r.summary["other_ci95"] == pytest.approx(0.0, abs=1e-9) and r.summary["other_n"] == 2


def test_marker_share_checks_its_inputs():
    maps, masks, targets = _marker_case()
    with pytest.raises(ValueError, match="marker_masks"):
        marker_share(maps, masks.float(), targets)
    with pytest.raises(ValueError, match="targets"):
        marker_share(maps, masks, targets.float())


def test_pointing_game_rejects_float_masks():
    with pytest.raises(ValueError, match="bool"):
        PointingGame().update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.tensor([0]))
