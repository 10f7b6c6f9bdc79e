"""RISE against an independent computation on the same masks, and its own mask generator."""

import pytest
import torch
import torch.nn.functional as F

import xvit
from tests.tiny_models import SIZE, make
from xvit.methods.rise import RiseMasks


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return make("xvit"), torch.randn(2, 3, SIZE, SIZE) * 0.5, torch.tensor([[1, 3], [4, 2]])


def test_rise_equals_the_saliency_sum_on_user_masks(setup):
    model, x, targets = setup
    masks = torch.rand(20, SIZE, SIZE)
    e = xvit.explain(model, x, "rise", target=targets, masks=masks, p1=0.5, internal_batch_size=7)
    with torch.no_grad():
        expected = torch.zeros(2, 2, SIZE, SIZE)
        for mask in masks:
            probs = model(x * mask).softmax(1).gather(1, targets)  # masked pixels become normalised 0
            expected += probs[..., None, None] * mask
    torch.testing.assert_close(e.raw, expected / (20 * 0.5), rtol=1e-4, atol=1e-6)
    assert e.meta["n_masks"].tolist() == [20, 20] and e.meta["n_forwards"].tolist() == [21, 21]
    with pytest.raises(ValueError, match="shared by every image"):
        xvit.explain(model, x, "rise", masks=torch.rand(2, 3, SIZE, SIZE))


def test_rise_masks_follow_the_reference_construction():
    masks = RiseMasks(50, 4, 0.3, (SIZE, SIZE), seed=3)
    cell = SIZE // 4
    rows = masks.rows(torch.zeros(50, dtype=torch.long), torch.arange(50))
    assert rows.shape == (50, SIZE, SIZE) and rows.min() >= 0 and rows.max() <= 1
    for i in (0, 17):  # the upsampled (s + 1)·c grid cropped at the mask's shift
        up = F.interpolate(masks.grids[i][None, None].float(), size=(5 * cell, 5 * cell), mode="bilinear")
        up = up[0, 0].clamp(0, 1)
        dy, dx = masks.shifts[i].tolist()
        assert 0 <= dy < cell and 0 <= dx < cell
        torch.testing.assert_close(rows[i], up[dy:dy + SIZE, dx:dx + SIZE])
    again = RiseMasks(50, 4, 0.3, (SIZE, SIZE), seed=3)
    assert torch.equal(again.grids, masks.grids) and torch.equal(again.shifts, masks.shifts)
    assert not torch.equal(RiseMasks(50, 4, 0.3, (SIZE, SIZE), seed=4).grids, masks.grids)
    assert abs(masks.grids.float().mean().item() - 0.3) < 0.1


def test_rise_scores_every_target_from_one_set_of_passes(setup):
    model, x, targets = setup
    both = xvit.explain(model, x, "rise", target=targets, n_masks=30, seed=5)
    for k in range(2):
        one = xvit.explain(model, x, "rise", target=targets[:, k], n_masks=30, seed=5)
        torch.testing.assert_close(both.raw[:, k], one.raw[:, 0])
    other_seed = xvit.explain(model, x, "rise", target=targets, n_masks=30, seed=6)
    assert not torch.allclose(other_seed.raw, both.raw)
