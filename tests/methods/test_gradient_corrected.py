"""gradient_corrected_attention (Cui et al. 2026, reading cui2026-p1) against grad_attention_rollout and a
hand-written full-matrix implementation."""

import pytest
import torch

import xvit
from xvit.methods import METHODS

from ..tiny_models import FACTORIES, SIZE, make


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    return torch.randn(2, 3, SIZE, SIZE) * 0.5


@pytest.mark.parametrize("family", list(FACTORIES))
@pytest.mark.parametrize("start_layer", [0, 1])
def test_pos_incomplete_equals_grad_attention_rollout_exactly(batch, family, start_layer):
    model = make(family)
    targets = torch.tensor([[1, 3], [4, 2]])
    reference = xvit.explain(model, batch, "grad_attention_rollout", targets, start_layer=start_layer).raw
    ours = xvit.explain(model, batch, "gradient_corrected_attention", targets, correction="pos", scheme="incomplete",
                        start_layer=start_layer).raw
    assert torch.equal(ours, reference)


def _full_matrix_reference(model, x, target, correction, scheme):
    """Every block's attention, gradient, input and input gradient by plain hooks; the full T x T product."""
    attn, inputs, handles = {}, {}, []
    for i, block in enumerate(model.blocks):
        handles.append(block.attn.attn_drop.register_forward_hook(lambda m, a, out, i=i: attn.__setitem__(i, out)))
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])))
    with xvit.Explainer(model, "raw_attention"):  # eval mode and the explicit attention path
        logits = model(x)
    for h in handles:
        h.remove()
    L = len(model.blocks)
    grads = torch.autograd.grad(logits[0, target], [attn[i] for i in range(L)] + [inputs[i] for i in range(L)])
    phi = {"pos": lambda t: t.clamp(min=0), "abs": torch.abs, "signed": lambda t: t}[correction]
    T = attn[0].shape[-1]
    r = torch.eye(T)
    for b in range(L):
        a_bar = phi(grads[b][0] * attn[b][0]).mean(0)
        if scheme == "complete":
            g = phi((inputs[b][0] * grads[L + b][0]).sum(-1))
            d = torch.diag(g / g.abs().mean())
        else:
            d = torch.eye(T)
        r = (d + a_bar) @ r
    return r[0, 1:].reshape(4, 4).detach()


@pytest.mark.parametrize("correction", ["pos", "abs", "signed"])
@pytest.mark.parametrize("scheme", ["incomplete", "complete"])
def test_all_six_combinations_match_the_full_matrix_product(correction, scheme):
    model = make("xvit")
    torch.manual_seed(0)
    x = torch.randn(1, 3, SIZE, SIZE) * 0.5
    e = xvit.explain(model, x, "gradient_corrected_attention", 2, correction=correction, scheme=scheme)
    expected = _full_matrix_reference(model, x, 2, correction, scheme)
    torch.testing.assert_close(e.raw[0, 0], expected, rtol=1e-4, atol=1e-6)


def test_signed_output_keeps_its_sign_and_declares_it(batch):
    model = make("timm_vit")
    e = xvit.explain(model, batch, "gradient_corrected_attention", correction="signed", scheme="complete")
    assert e.meta["signed"] and (e.raw < 0).any() and (e.raw > 0).any()
    assert not METHODS.get("gradient_corrected_attention")(correction="abs").signed
    assert xvit.methods()["gradient_corrected_attention"]["signed"] is False


def test_corrections_differ_and_abs_dominates_pos(batch):
    model = make("hf_vit")
    maps = {c: xvit.explain(model, batch, "gradient_corrected_attention", 1, correction=c).raw
            for c in ("pos", "abs", "signed")}
    assert not torch.allclose(maps["pos"], maps["abs"]) and not torch.allclose(maps["abs"], maps["signed"])
    # |t| >= t⁺ entry-wise and both products have non-negative factors, so abs >= pos entry-wise
    assert (maps["abs"] >= maps["pos"] - 1e-6).all()


def test_complete_scheme_removes_its_taps_after_an_error(batch):
    model = make("xvit")
    before = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())

    def boom(*_):
        raise RuntimeError("boom")

    handle = model.blocks[-1].mlp.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        xvit.explain(model, batch, "gradient_corrected_attention", scheme="complete")
    handle.remove()
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == before
