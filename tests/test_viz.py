"""Overlays, colour scales, colour bars, the comparison grid and the Explanation's reprs."""

import base64
import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import xvit
from xvit.result import Explanation
from xvit.viz import (
    colour_bar_figure,
    comparison_grid,
    explanation_overlays,
    explanation_scale,
    map_scale,
    overlay_explanation,
    plot_attribution,
    plot_curves,
    save_grid,
    show_on_image,
)

GREY = Image.new("RGB", (32, 24), (128, 128, 128))
GREY_PX = np.asarray(GREY).astype(int)


def _explanation(signed: bool, batch: int = 2, method: str = "m", raw: torch.Tensor | None = None,
                 layout: dict | None = None) -> Explanation:
    if raw is None:
        raw = torch.zeros(batch, 1, 3, 4)
        raw[..., :2] = 1.0
        raw[..., 2:] = -1.0 if signed else 0.0
    maps = torch.nn.functional.interpolate(raw.flatten(0, 1)[:, None], size=(24, 32), mode="bilinear")
    maps = maps.reshape(*raw.shape[:2], 24, 32)
    lo, hi = maps.amin((2, 3), keepdim=True), maps.amax((2, 3), keepdim=True)
    maps = (maps - lo) / (hi - lo).clamp(min=1e-12)
    logits = torch.tensor([[0.0, 3.0, 1.0]]).repeat(raw.shape[0], 1)
    meta = {"signed": signed, **({"layout": layout} if layout else {})}
    return Explanation(raw=raw, maps=maps, targets=torch.ones(raw.shape[0], raw.shape[1], dtype=torch.long),
                       logits=logits, method=method, params={}, meta=meta)


def _checkerboard(h: int = 24, w: int = 32) -> torch.Tensor:
    """A pixel map whose sign alternates pixel by pixel: the artefact of raw ViT pixel maps, nothing else."""
    return (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 * 2.0 - 1.0


# ---------------------------------------------------------------------------------------------- one map


def test_show_on_image_returns_uint8_of_the_image_size_from_any_map_resolution():
    out = show_on_image(GREY, torch.rand(3, 4))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    arr = show_on_image(np.full((24, 32, 3), 0.5), np.random.rand(6, 8), alpha=0.3)
    assert arr.shape == (24, 32, 3)
    gray = show_on_image(np.full((24, 32), 128, np.uint8), torch.rand(24, 32))
    assert gray.shape == (24, 32, 3)


def test_signed_map_is_red_where_positive_blue_where_negative_and_clear_where_zero():
    m = torch.zeros(24, 32)
    m[:, :10] = 2.0
    m[:, 22:] = -2.0
    px = show_on_image(GREY, m).astype(int)
    left, middle, right = px[12, 4], px[12, 16], px[12, 28]
    assert left[0] > left[2] + 40 and left[0] > left[1] + 40, f"positive region should be red, got {left}"
    assert right[2] > right[0] + 40 and right[2] > right[1] + 20, f"negative region should be blue, got {right}"
    assert np.array_equal(middle, GREY_PX[12, 16]), "zero relevance must leave the image untouched"
    assert map_scale(m) == (-2.0, 2.0)  # symmetric around zero


def test_opacity_grows_with_the_magnitude():
    m = torch.linspace(-1, 1, 32).repeat(24, 1)
    diff = np.abs(show_on_image(GREY, m, alpha=1.0).astype(int) - GREY_PX).sum(-1)[12]
    assert diff[15] < diff[8] < diff[0] and diff[16] < diff[24] < diff[31]
    assert diff[0] > 150 and diff[15] < 20


def test_robust_scaling_ignores_a_few_extreme_pixels():
    m = torch.ones(24, 32)
    m[0, 0] = 1000.0  # one outlier: under max scaling everything else would be nearly transparent
    robust = show_on_image(GREY, m, signed=True, alpha=1.0)
    full = show_on_image(GREY, torch.ones(24, 32), signed=True, alpha=1.0)
    assert np.array_equal(robust[12, 16], full[12, 16])
    assert map_scale(m, signed=True)[1] == pytest.approx(1.0)


def test_unsigned_maps_keep_a_sequential_colormap_at_constant_opacity():
    m = torch.linspace(0, 1, 32).repeat(24, 1)
    default = show_on_image(GREY, m, alpha=1.0)
    jet = show_on_image(GREY, m, alpha=1.0, cmap="jet")
    assert tuple(default[12, 0]) == (0, 0, 4)  # inferno starts near black
    assert jet[12, 0, 2] > 100 and not np.array_equal(default, jet)  # jet starts dark blue
    half = show_on_image(GREY, m).astype(int)  # alpha 0.5 everywhere, even where the map is smallest
    assert np.abs(half[12, 0] - GREY_PX[12, 0]).sum() > 100
    assert map_scale(m) == (0.0, 1.0)


def test_captum_style_signs_draw_one_part_or_the_magnitude():
    m = torch.zeros(24, 32)
    m[:, :10] = 1.0
    m[:, 22:] = -1.0
    pos = show_on_image(GREY, m, sign="positive").astype(int)
    assert pos[12, 4, 0] > pos[12, 4, 2] + 60 and np.array_equal(pos[12, 28], GREY_PX[12, 28])
    neg = show_on_image(GREY, m, sign="negative").astype(int)
    assert neg[12, 28, 2] > neg[12, 28, 0] + 60 and np.array_equal(neg[12, 4], GREY_PX[12, 4])
    mag = show_on_image(GREY, m, sign="absolute_value")
    assert np.array_equal(mag[12, 4], mag[12, 28]) and not np.array_equal(mag[12, 4], GREY_PX[12, 4])
    assert map_scale(m, sign="negative") == (0.0, 1.0)


def test_bad_arguments_say_what_is_allowed():
    assert np.array_equal(show_on_image(GREY, torch.rand(3, 4), alpha=0.0), np.asarray(GREY))
    with pytest.raises(ValueError, match="alpha"):
        show_on_image(GREY, torch.rand(3, 4), alpha=1.5)
    with pytest.raises(ValueError, match="NaN"):
        show_on_image(GREY, torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="sign must be one of all, positive"):
        show_on_image(GREY, torch.rand(3, 4), sign="pos")
    with pytest.raises(ValueError, match="2-D map"):
        show_on_image(GREY, torch.rand(1, 3, 4))
    for signed in (False, True):
        px = show_on_image(GREY, torch.zeros(3, 4), signed=signed)
        assert px.shape == (24, 32, 3)


def _signal_and_board(h: int = 24, w: int = 32) -> torch.Tensor:
    """Relevance on the left half under a checkerboard three times as strong."""
    return torch.cat([torch.ones(h, w // 2), torch.zeros(h, w - w // 2)], 1) + 3.0 * _checkerboard(h, w)


def _drawn(overlay: np.ndarray) -> np.ndarray:
    """How far each pixel of an overlay is from the grey image."""
    return np.abs(overlay.astype(int) - GREY_PX).sum(-1)


def test_pooling_and_smoothing_remove_a_pixel_checkerboard():
    m = _signal_and_board()
    raw = _drawn(show_on_image(GREY, m))
    assert raw[4:-4, 20:28].min() > 80  # drawn raw, the checkerboard covers the empty right half too
    for kw in ({"pool": 2}, {"smooth": 2.0}):
        clean = show_on_image(GREY, m, **kw)
        assert _drawn(clean)[4:-4, 20:28].max() < 15, kw  # the right half shows the image
        left = clean[12, 6].astype(int)
        assert left[0] > left[2] + 40, (kw, left)  # and the left half's relevance is red


# ---------------------------------------------------------------------------------------- explanations


def test_explanation_overlay_is_a_uint8_batch_and_keeps_the_sign():
    exp = _explanation(signed=True)
    out = exp.overlay([GREY, GREY], alpha=0.7)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 24, 32, 3)
    px = out[0, 0].astype(int)
    assert px[12, 2, 0] > px[12, 2, 2] and px[12, 30, 2] > px[12, 30, 0]
    stacked = exp.overlay(np.stack([np.asarray(GREY)] * 2), alpha=0.7)
    assert np.array_equal(stacked, out)
    maps_only = exp.overlay()
    assert maps_only.shape == (2, 1, 24, 32, 3) and not np.array_equal(maps_only[0, 0, 12, 2], px[12, 2])
    single = _explanation(signed=True, batch=1)
    assert np.array_equal(single.overlay(GREY), single.overlay([np.asarray(GREY)]))
    with pytest.raises(ValueError, match="2 image"):
        exp.overlay([GREY])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        exp.overlay(torch.zeros(2, 3, 24, 32))
    with pytest.raises(ValueError, match="different sizes"):
        exp.overlay([GREY, GREY.resize((16, 12))])
    pil = overlay_explanation(exp, [GREY, GREY], alpha=0.7)
    assert len(pil) == 2 and np.array_equal(np.asarray(pil[1][0]), out[1, 0])


def test_pixel_explanations_are_smoothed_by_default_or_pooled_by_patch():
    board = _signal_and_board()[None, None]
    exp = _explanation(True, raw=board, layout={"patch_size": [4, 4], "grid": [6, 8], "num_prefix": 1})
    assert _drawn(exp.overlay([GREY], smooth=0)[0, 0])[4:-4, 20:28].min() > 80
    assert _drawn(exp.overlay([GREY])[0, 0])[4:-4, 20:28].max() < 15  # half a patch of blur by default
    assert _drawn(exp.overlay([GREY], pool="patch")[0, 0])[:, 18:].max() == 0  # bilinear edge: 2 px
    # the colour bar's ends are those of the map as drawn (blurred), not of the raw pixels
    assert explanation_scale(exp, 0) == map_scale(board[0, 0], signed=True, smooth=2.0)
    assert explanation_scale(exp, 0, smooth=0) == map_scale(board[0, 0], signed=True) != explanation_scale(exp, 0)
    with pytest.raises(ValueError, match="layout"):
        _explanation(True, raw=board).overlay([GREY], pool="patch")
    with pytest.raises(ValueError, match="pool must be"):
        exp.overlay([GREY], pool="token")
    # patch-resolution maps are not blurred by default
    patchy = _explanation(True, layout={"patch_size": [8, 8]})
    assert np.array_equal(patchy.overlay([GREY, GREY]), explanation_overlays(patchy, [GREY, GREY], smooth=0.0))


def test_repr_is_one_line_without_tensors_and_html_has_a_table_and_a_thumbnail():
    exp = _explanation(signed=True)
    text = repr(exp)
    assert "\n" not in text and "tensor(" not in text and len(text) < 200
    for part in ("method='m'", "B=2, K=1, H=24, W=32", "native=(3, 4)", "targets=[[1], [1]]", "signed=True",
                 "device='cpu'"):
        assert part in text, text
    html = exp._repr_html_()
    assert "<table>" in html and "native resolution" in html
    png = base64.b64decode(html.split("base64,")[1].split("'")[0])
    with Image.open(io.BytesIO(png)) as thumb:
        assert thumb.format == "PNG" and thumb.height == 2 * 66  # two images, 64 px each with a border


# -------------------------------------------------------------------------------------------- figures


def test_plot_attribution_draws_a_colour_bar_in_the_maps_units():
    m = torch.zeros(24, 32)
    m[:, :10], m[:, 22:] = 3.0, -1.0
    fig = plot_attribution(m, GREY)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].get_ylim() == pytest.approx(map_scale(m))
    fig = plot_attribution(m, sign="positive", title="positive part")
    assert fig.axes[1].get_ylim() == pytest.approx((0.0, 3.0)) and fig.axes[0].get_title() == "positive part"
    unsigned = plot_attribution(torch.linspace(2, 5, 32).repeat(24, 1), GREY)
    assert unsigned.axes[1].get_ylim() == pytest.approx((2.0, 5.0))
    assert unsigned.axes[1].get_ylabel() == "relevance (min to max)"
    own = Figure()
    ax = own.add_subplot()
    assert plot_attribution(m, GREY, ax=ax, colorbar=False) is own and len(own.axes) == 1


def test_comparison_grid_layout_titles_colour_bars_and_save(tmp_path):
    exps = {"rollout": _explanation(False, method="rollout"), "attnlrp": _explanation(True, method="attnlrp")}
    fig = xvit.comparison_grid([GREY, GREY], exps, ["cat", "dog", "fox"], true_labels=["dog", "fox"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3 + 2  # the panels and one colour bar per kind
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("pred: dog (0.84)") and "true: dog" in titles[0]
    assert titles[1] == "rollout\ndog (0.84)" and titles[2].startswith("attnlrp")
    bars = [ax.get_xlabel() for ax in fig.axes[6:]]
    assert bars[0].startswith("signed maps: red for the class") and bars[1].startswith("unsigned maps")
    assert len(comparison_grid([GREY, GREY], exps, colorbar=False).axes) == 6
    path = save_grid(fig, tmp_path / "sub" / "grid.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.width > 300


def test_colour_bar_figure_for_pages_of_overlays(tmp_path):
    fig = colour_bar_figure(True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["−p99", "0", "+p99"]
    assert [t.get_text() for t in colour_bar_figure(False).axes[0].get_xticklabels()] == ["min", "max"]
    with Image.open(save_grid(fig, tmp_path / "bar.png")) as saved:
        assert saved.width == 320


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
