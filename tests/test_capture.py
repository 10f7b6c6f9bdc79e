"""Recording with a per-block reduction equals reducing the full recording."""

import pytest
import torch

import xvit
from xvit.adapters import get_adapter
from xvit.capture import record
from xvit.methods._rollout import gradient_weighted

from .tiny_models import SIZE, make


@pytest.mark.parametrize("grads", [False, True])
def test_reduced_recording_equals_the_reduced_full_recording(grads):
    model = make("timm_reg_avg_dynamic").double()
    adapter = get_adapter(model)
    x = torch.randn(3, 3, SIZE, SIZE, dtype=torch.float64)
    targets = torch.tensor([0, 2, 4])
    reduce = gradient_weighted if grads else (lambda a, g: a.amax(1))
    with xvit.Explainer(model, "rollout"):  # explicit attention
        full = record(adapter, x, targets, attention=True, grads=grads)
        part = record(adapter, x, targets, grads=grads, reduce=reduce, reduce_blocks=(0, 1))
    assert sorted(part.reduced) == [0, 1] and part.attentions == [] and part.attention_grads == []
    for b in (0, 1):
        expect = reduce(full.attentions[b], full.attention_grads[b] if grads else None)
        torch.testing.assert_close(part.reduced[b], expect)
    torch.testing.assert_close(part.logits, full.logits)


def test_reduced_recording_refuses_a_fused_kernel():
    model = make("timm_vit")
    with pytest.raises(RuntimeError, match="fused attention kernel"):
        record(get_adapter(model), torch.randn(1, 3, SIZE, SIZE), None, reduce=lambda a, g: a, reduce_blocks=(1,))


@pytest.mark.parametrize("kind", ["timm_deit_distilled", "hf_vit"])
def test_differentiating_from_a_later_block_gives_the_same_gradient_and_restores_grad_mode(kind):
    model = make(kind).double()
    for p in model.parameters():  # a frozen model: the graph must still start at the block's input
        p.requires_grad_(False)
    adapter = get_adapter(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    last = len(adapter.blocks()) - 1
    with xvit.Explainer(model, "rollout"):  # explicit attention
        full = record(adapter, x, None, grads=True, reduce=gradient_weighted, reduce_blocks=(last,))
        part = record(adapter, x, None, grads=True, reduce=gradient_weighted, reduce_blocks=(last,),
                      differentiate_from=last)
        assert torch.is_grad_enabled()
        with torch.no_grad():
            record(adapter, x, None, grads=True, reduce=gradient_weighted, reduce_blocks=(last,),
                   differentiate_from=last)
            assert not torch.is_grad_enabled()
        with pytest.raises(ValueError, match="differentiate_from"):
            record(adapter, x, None, grads=True, reduce=gradient_weighted, reduce_blocks=(0, last),
                   differentiate_from=last)
    torch.testing.assert_close(part.reduced[last], full.reduced[last])
    torch.testing.assert_close(part.logits, full.logits)
