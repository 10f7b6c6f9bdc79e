"""Checks every registered method on every supported model family (driven by the registries)."""

import pytest
import torch

import xvit
from tests.tiny_models import FACTORIES, SIZE, make
from xvit.adapters import get_adapter

FAST = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"n_samples": 3}, "rise": {"n_masks": 32},
        "bt_h": {"steps": 3}, "bt_t": {"steps": 3}, "tam": {"steps": 3},
        # R-Out's softmax weights are nearly uniform, so on tiny models the thresholded graph (and the cut) rarely
        # changes with the class; the gradient weighting does (the default weighting: tests/methods/test_rcut.py)
        "rcut": {"weighting": "gradcam"}}
METHODS = list(xvit.methods())


def _params(method):
    return FAST.get(method, {})


@pytest.fixture(scope="module")
def models():
    return {name: make(name) for name in FACTORIES}


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(2, 3, SIZE, SIZE)


@pytest.mark.parametrize("family", list(FACTORIES))
@pytest.mark.parametrize("method", METHODS)
def test_shapes_batch_invariance_and_targets(models, batch, family, method):
    model = models[family]
    if method == "attention_flow" and get_adapter(model).layout(batch).pool != "token":
        with pytest.raises(ValueError, match="class-token read-out"):
            xvit.explain(model, batch, method)
        return
    targets = torch.tensor([[1, 3], [4, 2]])
    with xvit.Explainer(model, method, **_params(method)) as explainer:
        e = explainer(batch, targets)
        info = xvit.methods()[method]
        grid = SIZE // 8
        native = (SIZE, SIZE) if info["resolution"] == "pixels" else (grid, grid)
        assert e.raw.shape == (2, 2, *native) and e.raw.dtype == torch.float32
        assert e.maps.shape == (2, 2, SIZE, SIZE)
        assert torch.all((e.maps >= 0) & (e.maps <= 1)) and torch.isfinite(e.raw).all()
        assert torch.equal(e.targets, targets)
        assert e.logits.shape == (2, 5)
        alone = explainer(batch[1:], targets[1:])  # an image explained alone equals it inside the batch
        torch.testing.assert_close(alone.raw[0], e.raw[1], rtol=1e-4, atol=1e-5 * e.raw.abs().max().item())
        pred = explainer(batch)
        assert torch.equal(pred.targets[:, 0], pred.logits.argmax(-1))
    # the maps of class-specific methods depend on the target
    if info["class_specific"] and method != "smoothgrad":
        assert (e.raw[0, 0] - e.raw[0, 1]).abs().max() > 0


@pytest.mark.parametrize("method", METHODS)
def test_method_restores_model_after_success_and_error(models, batch, method, monkeypatch):
    model = models["timm_vit"]
    flags = [b.attn.fused_attn for b in model.blocks]
    model.train()
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    class Boom(RuntimeError):
        pass

    def explode(*_):
        raise Boom

    xvit.explain(model, batch, method, **_params(method))
    # fail inside the real model's forward and inside the relevance engine's re-play, whichever runs
    handle = model.blocks[-1].register_forward_hook(explode)
    with monkeypatch.context() as m:
        m.setattr(type(get_adapter(model)), "block_parts", explode)
        with pytest.raises(Boom):
            xvit.explain(model, batch, method, **_params(method))
    handle.remove()
    assert [b.attn.fused_attn for b in model.blocks] == flags
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    model.eval()


def test_explain_under_no_grad_still_gives_gradients(models, batch):
    with torch.no_grad():
        e = xvit.explain(models["xvit"], batch, "grad_attention_rollout")
    assert e.raw.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_a_model_with_frozen_parameters_gives_the_same_maps(batch, method):
    """Inference code often freezes the parameters; gradient methods must not depend on them requiring grad."""
    model = make("timm_vit")
    torch.manual_seed(0)
    expect = xvit.explain(model, batch, method, target=[1, 3], **_params(method)).raw
    model.requires_grad_(False)
    torch.manual_seed(0)
    got = xvit.explain(model, batch, method, target=[1, 3], **_params(method)).raw
    torch.testing.assert_close(got, expect)
    assert not any(p.requires_grad for p in model.parameters())


def test_batch_size_chunks_give_the_same_maps(models, batch):
    full = xvit.explain(models["xvit"], batch, "transformer_attribution", target=[[0, 1]] * 2)
    chunked = xvit.explain(models["xvit"], batch, "transformer_attribution", target=[[0, 1]] * 2, batch_size=2)
    torch.testing.assert_close(chunked.raw, full.raw)


def test_two_explainers_do_not_interfere(models, batch):
    model = models["timm_vit"]
    alone = xvit.explain(model, batch, "input_x_gradient").raw
    with xvit.Explainer(model, "attnlrp") as lrp, xvit.Explainer(model, "input_x_gradient") as ixg:
        lrp(batch)
        both = ixg(batch).raw
    torch.testing.assert_close(both, alone)


def test_memory_is_released_over_many_calls(models, batch):
    import gc
    import weakref

    model = models["xvit"]
    refs = []
    with xvit.Explainer(model, "transformer_attribution") as explainer:
        for _ in range(5):
            e = explainer(batch)
            refs.append(weakref.ref(e.raw))
            del e
    gc.collect()
    assert all(r() is None for r in refs)


def test_methods_registry_describes_every_method():
    info = xvit.methods()
    assert len(info) == 24
    for name, d in info.items():
        assert d["citation"] and d["passes"] and isinstance(d["params"], dict), name
    assert info["rollout"]["params"] == {"head_fusion": "mean", "discard_ratio": 0.0, "start_layer": 0}
    assert info["attnlrp"]["signed"] and not info["rollout"]["signed"]
