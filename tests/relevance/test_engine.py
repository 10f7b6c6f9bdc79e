"""The relevance engine's streaming reduction equals the full propagation, and still conserves."""

import pytest
import torch

from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.methods._rollout import gradient_weighted
from xvit.relevance import COMPOSITES, propagate, residual_stream


@pytest.mark.parametrize("composite", ["chefer2021", "attnlrp"])
def test_reduced_propagation_equals_the_reduced_full_propagation(composite):
    model = make("timm_deit_distilled").double()
    adapter = get_adapter(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    gradients = composite == "chefer2021"
    z = residual_stream(adapter, x, 0)
    full = propagate(adapter, COMPOSITES.get(composite)(), torch.tensor([1, 3]), z=z, attention_blocks=(0, 1),
                     attention_gradients=gradients)
    reduce = gradient_weighted if gradients else (lambda r, g: r.sum(1))
    part = propagate(adapter, COMPOSITES.get(composite)(), torch.tensor([1, 3]), z=z, attention_blocks=(0, 1),
                     attention_gradients=gradients, reduce=reduce, start_relevance=False)
    assert part.start is None
    for b in (0, 1):
        expect = reduce(full.attention[b], full.attention_grads[b] if gradients else None)
        torch.testing.assert_close(part.attention[b], expect)


def test_conservative_rules_still_conserve_with_a_reduction():
    model = make("xvit").double()
    adapter = get_adapter(model)
    x = torch.randn(3, 3, SIZE, SIZE, dtype=torch.float64)
    prop = propagate(adapter, COMPOSITES.get("chefer2021")(), None, z=residual_stream(adapter, x, 1), start=1,
                     attention_blocks=(1,), attention_gradients=True, reduce=gradient_weighted)
    torch.testing.assert_close(prop.start.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-8)
    assert prop.attention[1].shape == (3, 17, 17)
