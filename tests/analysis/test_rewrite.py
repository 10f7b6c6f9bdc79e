"""Class rewriting (analysis ``rewrite_class``, reading cui2026-r1): budget, support, stop rule, controls, norms."""

import math

import pytest
import torch

import xvit
from xvit.adapters import get_adapter
from xvit.analysis.rewrite import ssim
from xvit.models import preprocessing_for

from ..tiny_models import SIZE, make


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(11)
    return torch.rand(3, 3, SIZE, SIZE)


def _normalise(model, pixels):
    prep = preprocessing_for(model)
    return (pixels - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)


@pytest.mark.parametrize("family", ["xvit", "timm_vit"])
def test_budget_support_and_stop_rule(images, family):
    model = make(family)
    eps = 4 / 255
    result = xvit.analyse(model, _normalise(model, images), "rewrite_class", epsilon=eps, steps=8, q=0.25)
    t = result.tensors
    assert result.meta["arms"] == ["explanation", "unrestricted", "random"] and result.meta["support_patches"] == 4
    torch.testing.assert_close(t["pixels"], images, rtol=0, atol=1e-6)  # the model's normalisation is undone
    assert (t["linf"] <= eps + 1e-6).all()
    rewritten = t["pixels"] + t["delta"]
    assert rewritten.min() >= -1e-6 and rewritten.max() <= 1 + 1e-6
    # the explanation arm only touches its support; the support has ⌈q·N⌉ patches; the random control the same area
    outside = (1 - t["support"][:, 0]).repeat_interleave(8, -1).repeat_interleave(8, -2)[:, None]
    assert (t["delta"] * outside).abs().max() == 0
    assert (t["support"].flatten(2).sum(-1) == torch.tensor([4.0, 16.0, 4.0])).all()
    assert (t["patches"] <= t["support"].flatten(2).sum(-1)).all()
    # stop rule: an image stops when its target wins, else it uses every step
    assert ((t["steps"] < 8) | ~t["success"]).all() and (t["steps"][~t["success"]] == 8).all()
    with torch.no_grad():
        logits = get_adapter(model).forward(_normalise(model, rewritten))
    won = logits.argmax(-1) == t["target"]
    assert torch.equal(won, t["success"][:, 0])
    assert (t["target"] != t["source"]).all()  # the default target is the runner-up class


def test_large_budget_unrestricted_control_always_succeeds_with_margin(images):
    model = make("xvit")
    result = xvit.analyse(model, _normalise(model, images), "rewrite_class", epsilon=64 / 255, steps=30, margin=0.5,
                          step_size=8 / 255)
    t = result.tensors
    assert t["success"][:, 1].all() and (t["target_prob"][:, 1] > 0.2).all()
    with torch.no_grad():
        delta_rows = t["pixels"] + t["delta"]
        logits = get_adapter(model).forward(_normalise(model, delta_rows))
    gap = logits.gather(1, t["target"][:, None])[:, 0] - logits.scatter(1, t["target"][:, None], -math.inf).amax(1)
    assert (gap[t["success"][:, 0]] > 0.5).all()


def test_explicit_targets_mask_from_none_and_no_controls(images):
    model = make("hf_vit")
    x = _normalise(model, images)
    targets = torch.tensor([0, 1, 2])
    result = xvit.analyse(model, x, "rewrite_class", targets, mask_from="none", controls=False, steps=3)
    t = result.tensors
    assert torch.equal(t["target"], targets) and t["success"].shape == (3, 1)
    assert t["support"].shape == (3, 1, 4, 4) and t["support"].eq(1).all()
    assert t["maps_before"].shape == t["maps_after"].shape == (3, 2, 4, 4)


def test_already_target_images_stop_at_step_zero_unchanged(images):
    model = make("xvit")
    x = _normalise(model, images)
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    t = xvit.analyse(model, x, "rewrite_class", predicted, steps=3).tensors
    assert t["success"].all() and (t["steps"] == 0).all() and (t["linf"] == 0).all()
    assert torch.isinf(t["psnr"]).all() and torch.allclose(t["ssim"], torch.ones(3, 3))


def test_ssim_is_one_for_equal_images_and_drops_with_noise():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    assert (ssim(a, (a + 0.2 * torch.randn_like(a)).clamp(0, 1)) < 0.9).all()
