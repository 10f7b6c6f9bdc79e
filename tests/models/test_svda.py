"""SVDA attention (analysis-methods.md §2.1): the formula by hand, the spectrum options, the penalty and its
gradient, the timm swap, checkpoints, the relevance rule (conservation) and spectral pruning (§2.4)."""

import math

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.capture import record
from xvit.models import create_model, load_model, save_checkpoint, variants
from xvit.models.svda import SVDAConfig, SVDAttention, SVDAVisionTransformer, spectral_prune, swap_in_svda
from xvit.relevance import COMPOSITES, propagate, vit_graph
from xvit.training import TrainConfig, TrainConfigError


def _attention_by_hand(attn: SVDAttention, x: torch.Tensor) -> torch.Tensor:
    """``softmax_j(Σ_k σ_k q̂_ik k̂_jk / √r)`` head by head with explicit sums."""
    B, T, D = x.shape
    H, r = attn.num_heads, attn.head_dim
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    out = torch.empty(B, H, T, T, dtype=x.dtype)
    sigma = attn.spectrum()
    for h in range(H):
        q = qkv[..., h * r:(h + 1) * r]
        k = qkv[..., D + h * r:D + (h + 1) * r]
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        s = torch.einsum("bik,k,bjk->bij", q, sigma[h], k)
        out[:, h] = (s / math.sqrt(r)).softmax(-1)
    return out


@pytest.mark.parametrize("spectrum", ["signed", "softplus"])
def test_attention_equals_the_formula_on_both_paths(spectrum):
    torch.manual_seed(0)
    attn = SVDAttention(24, 3, spectrum=spectrum).double()
    with torch.no_grad():
        attn.sigma.normal_(0, 3)
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    expect = _attention_by_hand(attn, x)
    torch.testing.assert_close(attn.internals(x)["attention"], expect)
    captured = []
    handle = attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
    attn.fused_attn = False
    eager = attn(x)
    handle.remove()
    torch.testing.assert_close(captured[0], expect)
    attn.fused_attn = True
    torch.testing.assert_close(attn(x), eager)
    v = (x @ attn.qkv.weight.T + attn.qkv.bias)[..., 48:].reshape(2, 7, 3, 8).transpose(1, 2)
    torch.testing.assert_close(eager, attn.proj((expect @ v).transpose(1, 2).reshape(2, 7, 24)))


def test_spectrum_initialisation_sets_the_logit_scale():
    r = 8
    assert torch.allclose(SVDAttention(32, 4).spectrum(), torch.full((4, r), 5 * math.sqrt(r)))
    soft = SVDAttention(32, 4, spectrum="softplus", spectrum_init_c=2.0)
    torch.testing.assert_close(soft.spectrum(), torch.full((4, r), 2 * math.sqrt(r)))
    temp = SVDAttention(32, 4, spectrum_init="temperature")
    torch.testing.assert_close(temp.sigma, torch.ones(4, r))
    torch.testing.assert_close(temp.spectrum(), torch.full((4, r), 5 * math.sqrt(r)))
    # identical q and k directions give logits of c = 5 exactly: the init's purpose
    attn = SVDAttention(8, 1, qkv_bias=False)
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.cat([torch.eye(8), torch.eye(8), torch.eye(8)]))
    logits = attn.internals(torch.randn(1, 3, 8))["logits"] * attn.scale
    torch.testing.assert_close(logits.diagonal(dim1=-2, dim2=-1), torch.full((1, 1, 3), 5.0))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="spectrum must be one of"):
        SVDAttention(16, 2, spectrum="relu")
    with pytest.raises(ValueError, match="spectrum_init_c"):
        SVDAConfig(spectrum_init_c=0)
    with pytest.raises(TrainConfigError, match="orth_weight"):
        TrainConfig(arch="svda", model_args={"orth_weight": -1}, data="xvit-shapes:single").validate()


def test_orthonormality_penalty_and_its_gradient():
    torch.manual_seed(0)
    attn = SVDAttention(12, 2, orth_weight=0.5).double()
    w = attn.qkv.weight
    loss = attn.regularization_loss()
    expect = 0.0
    for block in (0, 1):  # query and key projections
        for h in range(2):
            rows = w[block * 12 + h * 6: block * 12 + (h + 1) * 6]  # W^hᵀ, (r, D)
            expect = expect + ((rows @ rows.T - torch.eye(6, dtype=w.dtype)) ** 2).sum()
    torch.testing.assert_close(loss, 0.5 * expect)
    (grad,) = torch.autograd.grad(loss, w)
    rows = w[:6]
    torch.testing.assert_close(grad[:6], 0.5 * 4 * (rows @ rows.T - torch.eye(6, dtype=w.dtype)) @ rows)
    assert torch.equal(grad[24:], torch.zeros_like(grad[24:]))  # values are not penalised
    with torch.no_grad():  # orthonormal columns: no penalty
        q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
        w[:12] = q.T
        w[12:24] = q.T
    assert attn.regularization_loss().item() == pytest.approx(0.0, abs=1e-20)
    model = create_model("svda", "nano", img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    assert torch.isclose(model.regularization_loss(),
                         sum(b.attn.regularization_loss() for b in model.blocks))


def test_variant_is_registered_vit_compatible_and_starts_from_the_same_weights_as_the_vit():
    assert variants()["svda"]["vit_compatible"]
    torch.manual_seed(3)
    svda = create_model("svda", "nano", img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    torch.manual_seed(3)
    vit = create_model("vit", "nano", img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    ours = svda.state_dict()
    assert set(ours) - set(vit.state_dict()) == {"blocks.0.attn.sigma", "blocks.1.attn.sigma"}
    for name, value in vit.state_dict().items():
        assert torch.equal(ours[name], value), name
    assert svda.no_weight_decay() == {"blocks.0.attn.sigma", "blocks.1.attn.sigma"}
    assert get_adapter(svda).family == "xvit ViT"


def test_swap_keeps_every_other_parameter_of_a_timm_model():
    timm_model = make("timm_reg_avg_dynamic")
    before = {k: v.clone() for k, v in timm_model.state_dict().items()}
    modules = {n: m for n, m in timm_model.named_modules() if n.endswith(("attn.qkv", "attn.proj"))}
    swap_in_svda(timm_model)
    after = timm_model.state_dict()
    new = set(after) - set(before)
    assert new == {f"blocks.{i}.attn.sigma" for i in range(len(timm_model.blocks))}
    assert set(before) <= set(after)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    for name, module in modules.items():  # the very same modules, not copies
        assert timm_model.get_submodule(name) is module
    assert all(isinstance(b.attn, SVDAttention) for b in timm_model.blocks)
    assert get_adapter(timm_model).family == "timm VisionTransformer/DeiT"
    with pytest.raises(ValueError, match="no 'blocks'"):
        swap_in_svda(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family", ["xvit_svda", "timm_svda"])
def test_recorded_attention_and_the_relevance_graph_match_the_model(family):
    model = make(family).double()
    adapter = get_adapter(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with xvit.Explainer(model, "rollout"):
        rec = record(adapter, x, None, attention=True, block_inputs=(0,))
    attn = []
    logits = vit_graph(adapter, COMPOSITES.get("gradient")(), x=x, attn_out=attn)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    block = model.blocks[0]
    expect = block.attn.internals(block.norm1(rec.block_inputs[0]))["attention"]
    torch.testing.assert_close(rec.attentions[0], expect)
    torch.testing.assert_close(attn[0], expect)


# Conservation of Chefer's rules through SVDA blocks: tests/relevance/test_rules.py (parametrised by family).


def test_cp_lrp_conserves_the_logit_on_svda_without_bias_terms():
    model = make("xvit_svda")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("cls_token", "pos_embed"):
                p.zero_()
    e = xvit.explain(model, torch.randn(2, 3, SIZE, SIZE), "cp_lrp", target=2)
    torch.testing.assert_close(e.meta["relevance_sum"], e.meta["explained_logit"], rtol=1e-3, atol=1e-4)


def test_relevance_graph_gives_the_true_attention_gradient_on_svda():
    model = make("timm_svda").double()
    adapter = get_adapter(model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    with xvit.Explainer(model, "rollout"):
        rec = record(adapter, x, torch.tensor([1, 3]), attention=True, grads=True, block_inputs=(0,))
    prop = propagate(adapter, COMPOSITES.get("chefer2021")(), rec.targets, z=rec.block_inputs[0],
                     attention_blocks=range(2), attention_gradients=True)
    for b in range(2):
        torch.testing.assert_close(prop.attention_grads[b], rec.attention_grads[b])


def test_checkpoint_round_trip(tmp_path):
    model = make("xvit_svda")
    with torch.no_grad():
        model.blocks[0].attn.sigma.normal_()
    save_checkpoint(model, tmp_path / "ckpt", preprocessing=xvit.models.Preprocessing(size=(SIZE, SIZE)),
                    class_names=[str(i) for i in range(5)])
    loaded = load_model(str(tmp_path / "ckpt"))
    assert isinstance(loaded, SVDAVisionTransformer)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_pruning_with_rho_one_changes_nothing():
    model = make("xvit_svda")
    with torch.no_grad():
        for b in model.blocks:
            b.attn.sigma.normal_(0, 5)
    pruned, report = spectral_prune(model, 1.0)
    assert report["removed"] == 0 and report["params_removed"] == 0 and report["macs_removed"] == 0
    for (name, a), b in zip(model.state_dict().items(), pruned.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(pruned(x), model(x))


def test_pruning_keeps_the_smallest_energy_prefix_and_equals_dropped_columns():
    torch.manual_seed(0)
    model = create_model("svda", "nano", img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=1).double()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.sigma.copy_(torch.tensor([[0.5, 4.0, 0.0, -3.0, 1.0, 0.1, 0.2, 0.3]]))
    # energies 16, 9, 1, 0.25, 0.09, ...: total 26.39; cumulative shares 0.606, 0.947, 0.985, ...
    for rho, keep in ((0.5, [1]), (0.9, [1, 3]), (0.95, [1, 3, 4])):
        pruned, report = spectral_prune(model, rho)
        assert report["kept"].tolist() == [[len(keep)]]
        assert report["removed"] == 8 - len(keep) and report["params_removed"] == 2 * (8 - len(keep)) * 9
        assert 0 < report["params_removed_fraction"] < 1 and 0 < report["macs_removed_fraction"] < 1
        x = torch.randn(1, 5, 8, dtype=torch.float64)
        got = pruned.blocks[0].attn.internals(x)["attention"]
        qkv = x @ attn.qkv.weight.T + attn.qkv.bias
        q, k = qkv[..., keep], qkv[..., [8 + i for i in keep]]
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        s = torch.einsum("bik,k,bjk->bij", q, attn.sigma[0, keep], k) / math.sqrt(8)  # r of training kept
        torch.testing.assert_close(got[:, 0], s.softmax(-1))
    assert attn.sigma[0, 0].item() == 0.5  # the original is untouched
    with pytest.raises(ValueError, match="no SVDAttention"):
        spectral_prune(make("xvit"), 0.9)
    with pytest.raises(ValueError, match="rho"):
        spectral_prune(model, 0)
