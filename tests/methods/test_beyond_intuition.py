"""BT-H, BT-T and TAM: depth-scaled start layers, start-layer errors, chunked integration steps.

Parity with the authors' code is in test_reference_fixtures.py."""

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.methods import METHODS
from xvit.methods._feedback import resolve_start_layer
from xvit.methods.base import Context
from xvit.models.vit import create_vit
from xvit.params import InvalidParameterError


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return make("xvit"), torch.randn(2, 3, SIZE, SIZE) * 0.5, torch.tensor([[1, 3], [4, 2]])


@pytest.mark.parametrize("depth,expected", [(12, {"bt_h": 3, "bt_t": 6, "tam": 4}),
                                            (4, {"bt_h": 1, "bt_t": 2, "tam": 1}),
                                            (2, {"bt_h": 0, "bt_t": 1, "tam": 0})])
def test_default_start_layers_scale_with_depth(depth, expected):
    model = create_vit("nano", img_size=SIZE, patch_size=8, num_classes=5, embed_dim=48, depth=depth)
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(torch.zeros(1, 3, SIZE, SIZE)))
    for name, per_block in (("bt_h", 4), ("bt_t", 2), ("tam", 3)):
        assert resolve_start_layer(METHODS.get(name)(), ctx, per_block) == expected[name]


@pytest.mark.parametrize("method", ["bt_h", "bt_t", "tam"])
def test_default_equals_the_explicit_start_layer_and_chunks_do_not_matter(setup, method):
    model, x, targets = setup
    explicit = {"bt_h": 0, "bt_t": 1, "tam": 0}[method]  # 2 blocks
    default = xvit.explain(model, x, method, target=targets, steps=3)
    given = xvit.explain(model, x, method, target=targets, steps=3, start_layer=explicit,
                          internal_batch_size=3)
    torch.testing.assert_close(default.raw, given.raw, rtol=1e-4, atol=1e-6)
    assert default.raw.abs().max() > 0


@pytest.mark.parametrize("method", ["bt_h", "bt_t", "tam"])
def test_start_layer_beyond_the_depth_names_the_depth(setup, method):
    model, x, _ = setup
    with pytest.raises(InvalidParameterError, match="2-block model"):
        xvit.explain(model, x, method, start_layer=2)


def test_tam_without_integral_uses_the_gradient_at_x_only(setup):
    model, x, targets = setup
    plain = xvit.explain(model, x, "tam", target=targets, with_integral=False)
    one_step_at_zero = xvit.explain(model, x, "tam", target=targets, steps=1)  # α = 0 only
    assert not torch.allclose(plain.raw, one_step_at_zero.raw)


@pytest.mark.parametrize("method,options,forwards,forward_backward", [
    ("bt_h", {"steps": 3}, 0, 4), ("bt_t", {"steps": 3}, 1, 3), ("tam", {"steps": 3}, 1, 3),
    ("tam", {"with_integral": False}, 1, 1)])
def test_meta_counts_the_nominal_passes_per_image(setup, method, options, forwards, forward_backward):
    model, x, targets = setup
    e = xvit.explain(model, x, method, target=targets, **options)
    assert e.meta["n_forwards"].tolist() == [[forwards] * 2] * 2
    assert e.meta["n_forward_backward"].tolist() == [[forward_backward] * 2] * 2
