"""Occlusion against Captum's ``Occlusion`` and against token removal done by hand."""

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.adapters.base import ViTAdapter
from xvit.methods.base import Context
from xvit.methods.occlusion import Occlusion, window_masks

PATCH = 8
GRID = SIZE // PATCH


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return make("xvit"), torch.randn(2, 3, SIZE, SIZE) * 0.5, torch.tensor([[1, 3], [4, 2]])


@pytest.mark.parametrize("window,stride", [(1, 1), (2, 1), (2, 2)])
def test_occlusion_equals_captum_on_patch_aligned_windows(setup, window, stride):
    captum = pytest.importorskip("captum.attr")
    model, x, targets = setup
    e = xvit.explain(model, x, "occlusion", target=targets, window=window, stride=stride)
    occ = captum.Occlusion(model)
    for k in range(2):
        theirs = occ.attribute(x, sliding_window_shapes=(3, window * PATCH, window * PATCH),
                               strides=(3, stride * PATCH, stride * PATCH), baselines=0, target=targets[:, k])
        torch.testing.assert_close(e.raw[:, k], theirs[:, 0, ::PATCH, ::PATCH], rtol=1e-4, atol=1e-5)
    windows = ((GRID - window) // stride + 1) ** 2
    assert e.meta["n_masks"].tolist() == [windows] * 2 and e.meta["n_forwards"].tolist() == [windows + 1] * 2


def test_token_drop_removes_each_patch_token(setup):
    model, x, targets = setup
    e = xvit.explain(model, x, "occlusion", target=targets, mode="token_drop", readout="softmax")
    adapter = get_adapter(model)
    with torch.no_grad():
        clean = model(x).softmax(1)
        for n in range(GRID * GRID):
            keep = torch.ones(2, GRID * GRID, dtype=torch.bool)
            keep[:, n] = False
            dropped = adapter.forward_tokens(x, keep).softmax(1)
            expected = (clean - dropped).gather(1, targets)
            torch.testing.assert_close(e.raw[:, :, n // GRID, n % GRID], expected, rtol=1e-4, atol=1e-6)


def test_user_masks_equal_the_windows_they_describe(setup):
    model, x, targets = setup
    keep = window_masks((GRID, GRID), 2, 1).view(-1, GRID, GRID)
    pixels = keep.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    for mode in ("pixel", "token_drop"):
        windows = xvit.explain(model, x, "occlusion", target=targets, window=2, mode=mode)
        given = xvit.explain(model, x, "occlusion", target=targets, masks=pixels, mode=mode)
        torch.testing.assert_close(given.raw, windows.raw)
    with pytest.raises(ValueError, match="constant 0 or 1 on every patch"):
        xvit.explain(model, x, "occlusion", masks=torch.ones(1, SIZE, SIZE).index_fill(1, torch.tensor([3]), 0),
                     mode="token_drop")
    with pytest.raises(ValueError, match="shared by the batch"):
        xvit.explain(model, x, "occlusion", masks=torch.ones(2, 1, SIZE, SIZE))


def test_token_drop_on_a_model_without_token_removal_names_the_method(setup):
    model, x, targets = setup

    class PixelOnly(type(get_adapter(model))):
        block_input = ViTAdapter.block_input

    adapter = PixelOnly(model)
    with pytest.raises(UnsupportedModelError, match="occlusion with mode='token_drop'.*token removal"):
        Occlusion(mode="token_drop").attribute(Context(adapter, adapter.layout(x)), x, targets)
