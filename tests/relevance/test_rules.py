"""Relevance rules against slow textbook versions, and conservation properties."""

import pytest
import torch

import xvit
from tests.tiny_models import make
from xvit.adapters import get_adapter
from xvit.capture import record
from xvit.relevance import COMPOSITES, propagate
from xvit.relevance.rules import (
    AlphaBeta,
    BackwardMode,
    DetachedStdNorm,
    HalfBilinear,
    ZAdd,
    safe_divide,
    scale_gradient,
)


def _relevance(fn, inputs, r):
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    return torch.autograd.grad(out, inputs, grad_outputs=r)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("conservative", [True, False])
def test_alpha_beta_matches_the_sum_formula(conservative, with_bias):
    torch.manual_seed(0)
    x, w, r = torch.randn(2, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 3,
                                                                                                         dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64) if with_bias else None  # ignored by the rule
    (ours,) = _relevance(lambda t: AlphaBeta(BackwardMode(), conservative)(t, w, bias), [x], r)
    expect = torch.zeros_like(x)
    for b in range(2):
        for k in range(3):
            pos = [max(x[b, j], 0) * max(w[k, j], 0) for j in range(5)]
            neg = [min(x[b, j], 0) * min(w[k, j], 0) for j in range(5)]
            zp, zn = sum(pos), sum(neg)
            for j in range(5):
                if conservative:
                    expect[b, j] += (pos[j] + neg[j]) * r[b, k] / (zp + zn + 1e-9)
                else:
                    expect[b, j] += pos[j] * r[b, k] / (zp + 1e-9) + neg[j] * r[b, k] / (zn + 1e-9)
    torch.testing.assert_close(ours, expect)
    if conservative:
        torch.testing.assert_close(ours.sum(1), r.sum(1), rtol=1e-6, atol=1e-9)


def test_safe_divide_shifts_the_denominator_and_zeroes_where_it_is_zero():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([0.5, 0.0, -1e-9, -2.0])
    out = safe_divide(a, b)
    torch.testing.assert_close(out, torch.tensor([1.0 / (0.5 + 1e-9), 0.0, 3.0 / 1e-9, 4.0 / (-2.0 + 1e-9)]))


@pytest.mark.parametrize("detach_mean", [False, True])
def test_detached_std_norm_is_layer_norm_with_a_constant_std(detach_mean):
    torch.manual_seed(3)
    norm = torch.nn.LayerNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, g = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)

    def explicit(t):
        mu = t.mean(-1, keepdim=True)
        mu = mu.detach() if detach_mean else mu
        std = torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + norm.eps).detach()
        return (t - mu) / std * norm.weight + norm.bias

    rule = DetachedStdNorm(detach_mean)
    torch.testing.assert_close(rule(x, norm), norm(x))
    (ours,) = _relevance(lambda t: rule(t, norm), [x], g)
    (expect,) = _relevance(explicit, [x], g)
    torch.testing.assert_close(ours, expect)


def test_rescaled_add_conserves_per_sample_and_keeps_the_ratio():
    torch.manual_seed(1)
    a, b, r = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(
        2, 4, 3, dtype=torch.float64)
    ra, rb = _relevance(ZAdd(BackwardMode(), rescale=True), [a, b], r)
    za, zb = _relevance(ZAdd(BackwardMode(), rescale=False), [a, b], r)
    torch.testing.assert_close((ra + rb).sum(dim=(1, 2)), r.sum(dim=(1, 2)))
    ratio = za.sum(dim=(1, 2)).abs() / zb.sum(dim=(1, 2)).abs()
    torch.testing.assert_close(ra.sum(dim=(1, 2)).abs() / rb.sum(dim=(1, 2)).abs(), ratio)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((6, 2), (2, 6))], ids=["A·V-like", "Q·Kᵀ-like"])
def test_half_bilinear_is_half_the_z_rule(shapes):
    """Both shapes: the product kept or recomputed, the halving on either side."""
    torch.manual_seed(2)
    (m, k), (_, n) = shapes
    a, b = torch.randn(2, m, k, dtype=torch.float64), torch.randn(2, k, n, dtype=torch.float64)
    r = torch.randn(2, m, n, dtype=torch.float64)
    ra, rb = _relevance(HalfBilinear(BackwardMode()), [a, b], r)
    s = safe_divide(r, a @ b)
    expect_a = torch.einsum("bik,bkj,bij->bik", a, b, s) / 2
    expect_b = torch.einsum("bik,bkj,bij->bkj", a, b, s) / 2
    torch.testing.assert_close(ra, expect_a)
    torch.testing.assert_close(rb, expect_b)


@pytest.mark.parametrize("family", ["xvit", "xvit_svda"])
def test_chefer_conservative_rules_conserve_relevance_through_every_block(family):
    """On SVDA models too: its normalisers count as constants and its spectrum as a diagonal scaling."""
    model = make(family).double()
    adapter = get_adapter(model)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    for start in range(len(adapter.blocks())):
        rec = record(adapter, x, None, block_inputs=(start,))
        prop = propagate(adapter, COMPOSITES.get("chefer2021")(), rec.targets, z=rec.block_inputs[start],
                         start=start)
        torch.testing.assert_close(prop.start.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64), rtol=1e-6,
                                   atol=1e-8)


def test_attnlrp_gamma_changes_the_map_not_the_logits():
    model = make("xvit")
    x = torch.randn(2, 3, 32, 32)
    plain = xvit.explain(model, x, "attnlrp", target=1)
    gamma = xvit.explain(model, x, "attnlrp", target=1, conv_gamma=0.25, linear_gamma=0.05)
    torch.testing.assert_close(plain.logits, gamma.logits)
    assert (plain.raw - gamma.raw).abs().max() > 1e-3 * plain.raw.abs().max()


def test_cp_lrp_without_mlp_and_bias_terms_conserves_the_logit():
    """With the identity rule on GELU, σ held constant and attention constant, gradient x input is
    conservative except where biases, the class token and position embeddings absorb relevance; with
    all of those zeroed the input relevance equals the explained logit."""
    model = make("xvit")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("cls_token", "pos_embed"):
                p.zero_()
    x = torch.randn(2, 3, 32, 32)
    e = xvit.explain(model, x, "cp_lrp", target=2)
    torch.testing.assert_close(e.meta["relevance_sum"], e.meta["explained_logit"], rtol=1e-3, atol=1e-4)


def test_gradient_mode_of_the_relevance_graph_gives_the_true_attention_gradient():
    """Transformer Attribution takes ∂y_c/∂A from the relevance graph switched to true gradients; it must
    equal the gradient recorded on the real model."""
    model = make("timm_deit_distilled").double()
    adapter = get_adapter(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with xvit.Explainer(model, "rollout"):
        rec = record(adapter, x, torch.tensor([1, 3]), attention=True, grads=True, block_inputs=(0,))
    prop = propagate(adapter, COMPOSITES.get("chefer2021")(), rec.targets, z=rec.block_inputs[0],
                     attention_blocks=range(2), attention_gradients=True)
    for b in range(2):
        torch.testing.assert_close(prop.attention_grads[b], rec.attention_grads[b])


def test_scale_gradient_keeps_the_value_without_a_copy_and_scales_the_gradient():
    x = torch.randn(2, 3, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x) and y.data_ptr() == x.data_ptr()
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(g, torch.full_like(x, 0.25))
