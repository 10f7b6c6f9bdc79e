"""TIS: its k-means, the cap on n_masks, per-image masks and the error for models without token removal.

Parity with the authors' code (on the masks they drew) is in test_reference_fixtures.py."""

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.adapters.base import ViTAdapter
from xvit.methods.base import Context
from xvit.methods.tis import TransformerInputSampling, kmeans

N = (SIZE // 8) ** 2


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return make("xvit"), torch.randn(2, 3, SIZE, SIZE) * 0.5, torch.tensor([[1, 3], [4, 2]])


def test_kmeans_finds_separated_clusters_and_is_a_fixed_point():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 20, 2)).flatten(0, 1)
    found = kmeans(points, 3, torch.Generator().manual_seed(1))
    assert torch.cdist(found, centres).min(0).values.max() < 0.2
    assign = torch.cdist(points, found).argmin(1)
    for k in range(3):
        torch.testing.assert_close(found[k], points[assign == k].mean(0))


def test_n_masks_is_capped_at_the_clustered_vectors_and_seeded(setup):
    model, x, targets = setup
    e = xvit.explain(model, x, "tis", target=targets)  # L·D = 2·48 = 96 < 1024
    assert e.meta["n_masks"].tolist() == [96, 96] and e.meta["n_masks_capped"].all()
    assert e.meta["n_forwards"].tolist() == [1, 1] and e.meta["n_short_forwards"].tolist() == [96, 96]
    few = xvit.explain(model, x, "tis", target=targets, n_masks=10, seed=1)
    assert few.meta["n_masks"].tolist() == [10, 10] and not few.meta["n_masks_capped"].any()
    torch.testing.assert_close(xvit.explain(model, x, "tis", target=targets, n_masks=10, seed=1).raw, few.raw)


def test_per_image_masks_equal_separate_calls(setup):
    model, x, targets = setup
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 6, N, generator=gen).argsort(-1) < N // 2  # (B, M, N), half the tokens each
    both = xvit.explain(model, x, "tis", target=targets, masks=masks)
    for b in range(2):
        alone = xvit.explain(model, x[b:b + 1], "tis", target=targets[b:b + 1], masks=masks[b])
        torch.testing.assert_close(both.raw[b], alone.raw[0])
    adapter = get_adapter(model)
    with torch.no_grad():  # token 0's value: the mean probability over the masks that keep it
        probs = torch.stack([adapter.forward_tokens(x[:1], m[None]).softmax(1)[0] for m in masks[0]])
    kept = masks[0][:, 0]
    torch.testing.assert_close(both.raw[0, :, 0, 0], probs[kept][:, targets[0]].mean(0))


def test_tis_on_a_model_without_token_removal_names_the_method(setup):
    model, x, targets = setup

    class PixelOnly(type(get_adapter(model))):
        block_input = ViTAdapter.block_input

    adapter = PixelOnly(model)
    with pytest.raises(UnsupportedModelError, match="tis cannot run.*token removal"):
        TransformerInputSampling(n_masks=4).attribute(Context(adapter, adapter.layout(x)), x, targets)
