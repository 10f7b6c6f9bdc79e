"""ViT-CX: the causal score with noise, computed by hand on the method's own masks.

Parity with the authors' code (noise sigma = 0) is in test_reference_fixtures.py."""

import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.methods.base import Context
from xvit.methods.vit_cx import ViTCX
from xvit.perturb import GaussianNoise
from xvit.utils.maps import normalise_maps


def test_causal_score_with_noise_equals_the_formula():
    torch.manual_seed(0)
    model, x, targets = make("xvit"), torch.randn(1, 3, SIZE, SIZE) * 0.5, torch.tensor([[1, 3]])
    e = xvit.explain(model, x, "vit_cx", target=targets, sigma=0.1, seed=2, distance_threshold=0.3)
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    features = ctx.record(x, None, modules={"f": adapter.norm1(1)}).outputs["f"][0]
    masks = ViTCX(distance_threshold=0.3).cluster_masks(ctx, features, (SIZE, SIZE))
    k = masks.shape[0]
    assert e.meta["n_clusters"].tolist() == [k] and e.meta["n_forwards"].tolist() == [1 + 2 * k] and k > 1
    eps = GaussianNoise(0.1, seed=2).noise(x.expand(k, -1, -1, -1), torch.arange(k))
    m = masks[:, None]
    with torch.no_grad():
        p = model(x).softmax(1)[0, targets[0]]
        masked = model(x * m + eps * (1 - m)).softmax(1)[:, targets[0]]
        noisy = model(x + eps * (1 - m)).softmax(1)[:, targets[0]]
    causal = masked - noisy + p  # (K, targets)
    expected = torch.einsum("mk,mhw->khw", causal, masks) / masks.sum(0) / k
    torch.testing.assert_close(e.raw[0], expected, rtol=1e-4, atol=1e-6)


def test_rows_are_min_max_normalised_as_vit_cx_needs_constant_rows_to_zero():
    rows = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(normalise_maps(rows, 1), torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))
