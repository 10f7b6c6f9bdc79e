"""External attention guidance (analysis ``guide``, reading cui2026-g1): the identity invariant, the exact
mask_renorm equivalence, region coverage, per-row guidance and restoring on every family."""

import pytest
import torch

import xvit
from xvit.adapters import get_adapter
from xvit.analysis.guide import guidance_bias, guided_attention, region_coverage
from xvit.capture import record
from xvit.params import InvalidParameterError
from xvit.utils.context import eval_mode

from ..tiny_models import FACTORIES, SIZE, make


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(5)
    return torch.randn(2, 3, SIZE, SIZE) * 0.5


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", list(FACTORIES))
@pytest.mark.parametrize("mode", ["logit_bias", "mask_renorm"])
def test_all_ones_region_reproduces_the_unguided_logits_exactly(batch, family, mode):
    model = make(family)
    result = xvit.analyse(model, batch, "guide", masks=torch.ones(1, SIZE, SIZE), mode=mode, beta=3.0, top_k=2)
    assert torch.equal(result.tensors["logits"][:, 0], result.tensors["unguided_logits"])
    with torch.no_grad():
        plain = get_adapter(model).forward(batch)
    torch.testing.assert_close(result.tensors["unguided_logits"], plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", list(FACTORIES))
def test_guidance_changes_the_logits_and_restores_the_model_after_an_error(batch, family):
    model = make(family)
    before = _hooks(model)
    result = xvit.analyse(model, batch, "guide", boxes=[(0, 0, 0.5, 0.5)], beta=4.0, top_k=2)
    assert (result.tensors["logits"][:, 0] - result.tensors["unguided_logits"]).abs().max() > 1e-3
    assert result.tensors["maps"].shape == (2, 1, 2, 4, 4) and torch.isfinite(result.tensors["maps"]).all()

    def boom(*_):
        raise RuntimeError("boom")

    handle = get_adapter(model).blocks()[-1].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        xvit.analyse(model, batch, "guide", top_k=1)
    handle.remove()
    assert _hooks(model) == before
    assert not any("forward" in vars(m) for m in model.modules())


def test_mask_renorm_equals_multiplying_the_attention_row_and_renormalising(batch):
    model = make("timm_vit")
    adapter = get_adapter(model)
    layout = adapter.layout(batch)
    coverage = torch.rand(2, *layout.grid)
    bias = guidance_bias(layout, coverage, "mask_renorm", 1.0)
    with eval_mode(model), adapter.eager_attention():
        plain = record(adapter, batch, None, attention=True).attentions[0]
        with guided_attention(adapter, bias, [0]):
            guided = record(adapter, batch, None, attention=True).attentions[0]
    m = torch.cat([torch.ones(2, layout.num_prefix), coverage.flatten(1)], 1)[:, None, :]
    expected = plain[:, :, 0] * m
    torch.testing.assert_close(guided[:, :, 0], expected / expected.sum(-1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guided[:, :, 1:], plain[:, :, 1:])  # only the class-token row is guided


def test_guidance_is_per_row_so_each_image_sees_only_its_own_region(batch):
    model = make("hf_vit")
    masks = torch.zeros(2, 1, SIZE, SIZE)
    masks[0, 0, :, :16] = 1
    masks[1, 0, 16:] = 1
    both = xvit.analyse(model, batch, "guide", masks=masks, top_k=2)
    alone = xvit.analyse(model, batch[1:], "guide", masks=masks[1:], top_k=2)
    torch.testing.assert_close(alone.tensors["logits"][0], both.tensors["logits"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone.tensors["maps"][0], both.tensors["maps"][1], rtol=1e-4, atol=1e-6)


def test_region_coverage_of_boxes_and_masks():
    x = torch.zeros(1, 3, SIZE, SIZE)
    layout = get_adapter(make("xvit")).layout(x)
    halves = region_coverage(x, layout)
    assert torch.equal(halves[0, 0], torch.tensor([[1.0, 1, 0, 0]] * 4))
    assert torch.equal(halves[0, 0] + halves[0, 1], torch.ones(4, 4))
    quarter = region_coverage(x, layout, boxes=[(0, 0, 0.125, 0.25)])  # 4 x 8 pixels of the top-left 8 x 8 patch
    assert quarter[0, 0, 0, 0] == 0.5 and quarter[0, 0].sum() == 0.5
    mask = torch.zeros(1, 64, 64)
    mask[:, :16, :16] = 1  # a mask at twice the resolution, resized to the image
    assert region_coverage(x, layout, masks=mask)[0, 0, 0, 0] == 1
    with pytest.raises(ValueError, match="covers no patch"):
        region_coverage(x, layout, masks=torch.zeros(1, SIZE, SIZE))


def test_invalid_parameters_are_refused(batch):
    with pytest.raises(InvalidParameterError, match="not both"):
        xvit.analyse(make("xvit"), batch, "guide", boxes=[(0, 0, 1, 1)], masks=torch.ones(1, SIZE, SIZE))
    with pytest.raises(InvalidParameterError, match="'boxes' parameter"):
        xvit.analyse(make("xvit"), batch, "guide", boxes=[(0.5, 0, 0.2, 1)])
    with pytest.raises(InvalidParameterError, match="block indices in \\[-2, 2\\)"):
        xvit.analyse(make("xvit"), batch, "guide", blocks=[3])
    with pytest.raises(InvalidParameterError, match="one pass per target"):
        xvit.analyse(make("xvit"), batch, "guide", method="rollout")
