"""The relevance engine's streaming reduction equals the full propagation, and still conserves."""

import pytest
import torch

from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.methods._rollout import gradient_weighted
from xvit.relevance import COMPOSITES, propagate, residual_stream, vit_graph


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


@pytest.mark.parametrize("kind", ["timm_deit_distilled", "xvit_svda", "xvit_winft"])
@pytest.mark.parametrize("composite", ["gradient", "attnlrp", "cp_lrp"])
def test_fused_attention_gives_the_explicit_graphs_logits_and_relevance(kind, composite):
    """Blocks whose probabilities nobody reads run ``scaled_dot_product_attention`` under composites that leave
    the attention core plain; logits and input relevance equal the explicit graph's."""
    adapter = get_adapter(make(kind).double())
    c = COMPOSITES.get(composite)()
    assert c.plain_attention and not COMPOSITES.get("chefer2021")().plain_attention
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    outputs = []
    for fused in (False, True):
        origin = x.clone().requires_grad_(True)
        logits = vit_graph(adapter, c, x=origin, fused_attention=fused)
        outputs.append((logits, torch.autograd.grad(logits[:, 1].sum(), origin)[0]))
    for explicit, fused in zip(*outputs):
        torch.testing.assert_close(fused, explicit)


def test_only_the_asked_blocks_record_attention():
    adapter = get_adapter(make("timm_vit"))
    attn: list[torch.Tensor] = []
    vit_graph(adapter, COMPOSITES.get("attnlrp")(), x=torch.randn(1, 3, SIZE, SIZE), attn_out=attn,
              attention_blocks=(1,), fused_attention=True)
    assert len(attn) == 1 and attn[0].shape[-1] == attn[0].shape[-2]
    torch.testing.assert_close(attn[0].sum(-1), torch.ones_like(attn[0][..., 0]))
