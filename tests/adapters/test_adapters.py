"""The uniform view of every supported family: layout, canonical graph, eager attention, errors."""

import pytest
import torch
from torch import nn

import xvit
from tests.tiny_models import FACTORIES, make
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.capture import record
from xvit.models.svda import SVDAVisionTransformer
from xvit.models.winft import WinfT
from xvit.relevance import COMPOSITES, vit_graph

EXPECTED = {  # family -> (prefix tokens, pool)
    "xvit": (1, "token"), "xvit_reg_avg": (2, "avg"), "timm_vit": (1, "token"),
    "timm_deit_distilled": (2, "token_distilled"), "timm_reg_avg_dynamic": (5, "avg"), "hf_vit": (1, "token"),
    "hf_deit": (2, "token"), "hf_deit_teacher": (2, "token_distilled"),
    "xvit_winft": (1, "token"), "xvit_svda": (1, "token"), "timm_svda": (1, "token"),
}
OTHER_SIZE_OK = {"xvit", "xvit_reg_avg", "timm_reg_avg_dynamic", "hf_vit", "hf_deit", "hf_deit_teacher", "xvit_svda"}


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
    (torch.randn(32, 32), r"\(B, 3, H, W\)"),  # one (3, H, W) image is accepted as a batch of one
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
    (1.5, TypeError, "Unsupported target"), ("cat", ValueError, "this model has no class names"),
    (-1, ValueError, "out of range"),
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


def _timm_twin(model):
    """The built-in ViT as a timm model with the same weights (its blocks take an attention mask)."""
    from xvit.models.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return model
    timm = pytest.importorskip("timm")
    c = model.config
    twin = timm.models.vision_transformer.VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
        num_classes=c.num_classes, reg_tokens=c.reg_tokens, global_pool=c.global_pool, class_token=c.class_token,
        no_embed_class=c.no_embed_class, dynamic_img_size=True, fc_norm=c.global_pool == "avg").eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin


def _masked_reference(model, x, keep, at_block):
    """Logits with the removed patches kept in the sequence but invisible: masked out as attention keys from
    block ``at_block`` on and left out of ``avg`` pooling — a model whose input lacks those patches."""
    adapter = get_adapter(model)
    p = adapter.layout(x).num_prefix
    visible = torch.cat([torch.ones(x.shape[0], p, dtype=torch.bool), keep], 1)
    bias = torch.zeros(visible.shape).masked_fill(~visible, float("-inf"))[:, None, None, :]
    if isinstance(model, (WinfT, SVDAVisionTransformer)):  # attention takes an additive attn_mask (WinfT: a
        # further term; every patch keeps its window)
        h = model.embed(x)
        for i, block in enumerate(model.blocks):
            h = h + block.attn(block.norm1(h), attn_mask=bias if i >= at_block else None)
            h = h + block.mlp(block.norm2(h))
        return model.forward_head(model.norm(h))
    if hasattr(model, "blocks"):
        m = _timm_twin(model)
        h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for i, block in enumerate(m.blocks):
            h = block(h, attn_mask=bias if i >= at_block else None)
        h = m.norm(h)
        if m.global_pool == "avg":
            w = keep[..., None].float()
            return m.head(m.fc_norm((h[:, p:] * w).sum(1) / w.sum(1)))
        return m.forward_head(h)
    h = adapter.backbone.embeddings(x)
    for i, layer in enumerate(adapter.blocks()):
        h = layer(h, bias if i >= at_block else None)
    h = adapter.backbone.layernorm(h)
    if adapter.teacher:
        return (model.cls_classifier(h[:, 0]) + model.distillation_classifier(h[:, 1])) / 2
    return model.classifier(h[:, 0])


@pytest.mark.parametrize("family", list(FACTORIES))
def test_token_removal_equals_a_model_that_cannot_see_the_removed_patches(family):
    model = make(family)
    adapter = get_adapter(model)
    x = torch.randn(3, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(16, generator=g) < 9 for _ in range(3)])
    with torch.no_grad():
        logits = adapter.forward(x)
        for at_block in range(len(adapter.blocks()) + 1):
            everything = adapter.forward_tokens(x, torch.ones(3, 16, dtype=torch.bool), at_block)
            assert torch.equal(everything, logits)
            removed = adapter.forward_tokens(x, keep, at_block)
            torch.testing.assert_close(removed, _masked_reference(model, x, keep, at_block), rtol=1e-5, atol=1e-6)
            indices = keep.nonzero()[:, 1].view(3, 9)
            assert torch.equal(adapter.forward_tokens(x, indices, at_block), removed)
        assert not torch.allclose(adapter.forward_tokens(x, keep), logits)
    if family in OTHER_SIZE_OK:  # another input size: position embeddings resampled as in the model's forward
        x = torch.randn(2, 3, 48, 24)
        with torch.no_grad():
            assert torch.equal(adapter.forward_tokens(x, torch.ones(2, 18, dtype=torch.bool)), adapter.forward(x))


@pytest.mark.parametrize("keep,match", [
    (torch.tensor([[True] * 8 + [False] * 8, [True] * 9 + [False] * 7]), "same number"),
    (torch.ones(2, 15, dtype=torch.bool), "16 patch tokens"),
    (torch.tensor([[0, 16], [1, 2]]), r"0\.\.15"),
    (torch.ones(2, 16), "bool or integer"),
    (torch.ones(3, 16, dtype=torch.bool), r"\(2, 16\)"),
])
def test_token_removal_rejects_bad_keep_masks(keep, match):
    with pytest.raises(ValueError, match=match):
        get_adapter(make("xvit")).forward_tokens(torch.randn(2, 3, 32, 32), keep)
