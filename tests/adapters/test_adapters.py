"""The uniform view of every supported family: layout, canonical graph, eager attention, errors."""

import pytest
import torch
from torch import nn

import xvit
from tests.tiny_models import FACTORIES, make
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.capture import record
from xvit.relevance import COMPOSITES, vit_graph

EXPECTED = {  # family -> (prefix tokens, pool)
    "xvit": (1, "token"), "xvit_reg_avg": (2, "avg"), "timm_vit": (1, "token"),
    "timm_deit_distilled": (2, "token_distilled"), "timm_reg_avg_dynamic": (5, "avg"), "hf_vit": (1, "token"),
    "hf_deit": (2, "token"), "hf_deit_teacher": (2, "token_distilled"),
}
OTHER_SIZE_OK = {"xvit", "xvit_reg_avg", "timm_reg_avg_dynamic", "hf_vit", "hf_deit", "hf_deit_teacher"}


@pytest.mark.parametrize("family", list(FACTORIES))
def test_layout_and_canonical_graph_reproduce_the_model(family):
    model = make(family)
    adapter = get_adapter(model)
    sizes = [(32, 32)] + ([(48, 24)] if family in OTHER_SIZE_OK else [])
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        layout = adapter.layout(x)
        assert (layout.num_prefix, layout.pool) == EXPECTED[family]
        assert layout.grid == (h // 8, w // 8)
        with torch.no_grad():
            torch.testing.assert_close(vit_graph(adapter, COMPOSITES.get("gradient")(), x=x), adapter.forward(x),
                                       rtol=1e-4, atol=1e-5)
        with xvit.Explainer(model, "rollout") as e:
            rec = record(adapter, x, None, attention=True)
            assert len(rec.attentions) == len(adapter.blocks())
            assert rec.attentions[0].shape == (2, 3, layout.num_tokens, layout.num_tokens)
            torch.testing.assert_close(rec.attentions[0].sum(-1), torch.ones(2, 3, layout.num_tokens))
            assert e(x).raw.shape[-2:] == layout.grid


def test_builtin_state_dict_moves_to_timm_with_same_logits():
    timm = pytest.importorskip("timm")
    ours = make("xvit_reg_avg")
    theirs = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5, reg_tokens=2,
        global_pool="avg", class_token=False, no_embed_class=True, dynamic_img_size=True).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for size in [(32, 32), (40, 24)]:
        x = torch.randn(2, 3, *size)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_fused_attention_is_switched_only_inside_the_context():
    model = make("timm_vit")
    assert all(b.attn.fused_attn for b in model.blocks)
    with xvit.Explainer(model, "raw_attention"):
        assert not any(b.attn.fused_attn for b in model.blocks)
    assert all(b.attn.fused_attn for b in model.blocks)
    with pytest.raises(RuntimeError, match="fused attention kernel"):
        record(get_adapter(model), torch.randn(1, 3, 32, 32), None, attention=True)


def test_hf_attention_implementation_is_restored():
    model = make("hf_vit")
    before = model.config._attn_implementation
    with xvit.Explainer(model, "rollout") as e:
        assert model.config._attn_implementation == "eager"
        e(torch.randn(1, 3, 32, 32))
    assert model.config._attn_implementation == before


def test_a_cnn_gets_a_clear_error_naming_the_supported_families():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(UnsupportedModelError, match="Supported families: .*timm VisionTransformer"):
        xvit.Explainer(cnn, "rollout")


@pytest.mark.parametrize("bad,match", [
    (torch.randn(3, 32, 32), r"\(B, 3, H, W\)"),
    (torch.randn(1, 1, 32, 32), r"\(B, 3, H, W\)"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float image batch"),
    (torch.randn(1, 3, 30, 32), "multiple of the patch size"),
    (torch.randn(1, 3, 32, 32, dtype=torch.float64), "model is torch.float32"),
])
def test_bad_inputs_get_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        xvit.explain(make("xvit"), bad, "rollout")


def test_fixed_size_timm_model_explains_what_to_do_for_other_sizes():
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        xvit.explain(make("timm_vit"), torch.randn(1, 3, 48, 48), "rollout")


def test_timm_spec_offline_fails_with_a_clear_message():
    pytest.importorskip("timm")
    with pytest.raises(RuntimeError, match="offline"):
        xvit.load_model("timm:vit_tiny_patch16_224")


@pytest.mark.parametrize("target,err,match", [
    (7, ValueError, "out of range"), ([0, 1, 2], ValueError, "3 targets for 2 images"),
    ("cat", TypeError, "Unsupported target"), (-1, ValueError, "out of range"),
])
def test_bad_targets(target, err, match):
    with pytest.raises(err, match=match):
        xvit.explain(make("xvit"), torch.randn(2, 3, 32, 32), "gradcam", target=target)


def test_unnormalised_input_gets_a_warning():
    model = make("xvit")
    with pytest.warns(UserWarning, match="unscaled 0-255 pixels"):
        xvit.explain(model, torch.rand(1, 3, 32, 32) * 255, "rollout")
    with pytest.warns(UserWarning, match="All input values lie in \\[0, 1\\]"):
        xvit.explain(model, torch.rand(1, 3, 32, 32), "rollout")
