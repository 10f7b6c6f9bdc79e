"""Overlays, colormaps and the comparison grid."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from xvit.result import Explanation
from xvit.viz import comparison_grid, overlay, overlay_explanation, plot_curves, save_grid

GREY = Image.new("RGB", (32, 24), (128, 128, 128))


def _explanation(signed: bool, batch: int = 2, method: str = "m") -> Explanation:
    raw = torch.zeros(batch, 1, 3, 4)
    raw[..., :2] = 1.0
    raw[..., 2:] = -1.0 if signed else 0.0
    maps = torch.nn.functional.interpolate(raw, size=(24, 32), mode="bilinear")
    lo, hi = maps.amin((2, 3), keepdim=True), maps.amax((2, 3), keepdim=True)
    maps = (maps - lo) / (hi - lo)
    logits = torch.tensor([[0.0, 3.0, 1.0]]).repeat(batch, 1)
    return Explanation(raw=raw, maps=maps, targets=torch.ones(batch, 1, dtype=torch.long), logits=logits,
                       method=method, params={}, meta={"signed": signed})


def test_overlay_upsamples_to_the_image_and_returns_rgb():
    out = overlay(GREY, torch.rand(3, 4))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (32, 24)
    arr = overlay(np.full((24, 32, 3), 0.5), np.random.rand(6, 8), alpha=0.3)
    assert arr.size == (32, 24)


def test_signed_map_is_red_where_positive_and_blue_where_negative():
    m = torch.zeros(24, 32)
    m[:, :16] = 2.0
    m[:, 16:] = -1.0
    px = np.asarray(overlay(GREY, m, signed=True, alpha=0.7)).astype(int)
    left, right = px[12, 4], px[12, 28]
    assert left[0] > left[2] + 30 and left[0] > left[1] + 30, f"positive region should be reddish, got {left}"
    assert right[2] > right[0] + 30 and right[2] > right[1], f"negative region should be bluish, got {right}"


def test_zero_map_gives_finite_output_and_alpha_zero_is_identity():
    for signed in (False, True):
        px = np.asarray(overlay(GREY, torch.zeros(3, 4), signed=signed))
        assert px.shape == (24, 32, 3) and np.all(np.isfinite(px))
    assert np.array_equal(np.asarray(overlay(GREY, torch.rand(3, 4), alpha=0.0)), np.asarray(GREY))
    with pytest.raises(ValueError, match="alpha"):
        overlay(GREY, torch.rand(3, 4), alpha=1.5)
    with pytest.raises(ValueError, match="NaN"):
        overlay(GREY, torch.full((3, 4), float("nan")))


def test_cmap_option_changes_the_colours():
    m = torch.linspace(0, 1, 32).repeat(24, 1)
    default = np.asarray(overlay(GREY, m, alpha=1.0))
    jet = np.asarray(overlay(GREY, m, alpha=1.0, cmap="jet"))
    assert tuple(default[12, 0]) == (0, 0, 4)  # inferno starts near black
    assert jet[12, 0, 2] > 100 and not np.array_equal(default, jet)  # jet starts dark blue


def test_overlay_explanation_uses_raw_sign_for_signed_methods():
    exp = _explanation(signed=True)
    result = overlay_explanation(exp, [GREY, GREY], alpha=0.7)
    assert len(result) == 2 and len(result[0]) == 1 and result[1][0].size == (32, 24)
    px = np.asarray(result[0][0]).astype(int)
    assert px[12, 2, 0] > px[12, 2, 2] and px[12, 30, 2] > px[12, 30, 0]
    with pytest.raises(ValueError, match="2 image"):
        overlay_explanation(exp, [GREY])


def test_comparison_grid_layout_titles_and_save(tmp_path):
    exps = {"rollout": _explanation(False, method="rollout"), "attnlrp": _explanation(True, method="attnlrp")}
    fig = comparison_grid([GREY, GREY], exps, ["cat", "dog", "fox"], true_labels=["dog", "fox"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("pred: dog (0.84)") and "true: dog" in titles[0]
    assert titles[1] == "rollout\ndog (0.84)" and titles[2].startswith("attnlrp")
    path = save_grid(fig, tmp_path / "sub" / "grid.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.width > 300


def test_plot_curves_draws_one_panel_per_entry_and_saves_a_png(tmp_path):
    curves = {"deletion": {"a": {"x": [0.0, 0.5, 1.0], "y": np.array([1.0, 0.4, 0.1])},
                           "b": {"x": [0.0, 0.5, 1.0], "y": [0.9, 0.6, 0.2], "n": 3}},
              "randomization": {"a": {"x": [1, 2], "y": torch.tensor([0.8, 0.1]), "labels": ["head", "block 0"]}}}
    fig = plot_curves(curves, "fraction", "probability")
    assert [ax.get_title() for ax in fig.axes] == ["deletion", "randomization"]
    assert len(fig.axes[0].get_lines()) == 2
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["head", "block 0"]
    path = save_grid(fig, tmp_path / "curves" / "c.png")
    assert path.stat().st_size > 0
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (1000, 380)  # two 5 x 3.8 inch panels at 100 dpi
    with pytest.raises(ValueError, match="at least one panel"):
        plot_curves({}, "x", "y")


def test_upsample_maps_resizes_any_leading_shape_bilinearly():
    import torch.nn.functional as F

    from xvit.utils.maps import upsample_maps

    maps = torch.rand(2, 3, 4, 5)
    up = upsample_maps(maps, (8, 10))
    expected = F.interpolate(maps.reshape(6, 1, 4, 5), size=(8, 10), mode="bilinear", align_corners=False)
    assert up.shape == (2, 3, 8, 10) and torch.allclose(up, expected.reshape(2, 3, 8, 10))
    assert upsample_maps(maps, (4, 5)) is maps
    assert torch.allclose(upsample_maps(maps[0, 0], (8, 10)), expected[0, 0])
