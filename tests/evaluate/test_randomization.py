import numpy as np
import pytest
import torch

from xvit.evaluate import Randomization, randomization_curve, spearman, vit_randomization_units
from xvit.models.vit import create_vit

from .stubs import data, grad_x_input, tiny_cnn


def _vit():
    """A built-in ViT whose parameters are all moved off their initial values, as training would."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        model = create_vit("nano", depth=2, img_size=16, patch_size=8, num_classes=3).eval()
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        return model


def _unit(key):
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


def test_vit_units_top_down():
    units = vit_randomization_units(_vit())
    assert units == [("head", ["head"]), ("norm", ["norm"]), ("blocks.1", ["blocks.1"]), ("blocks.0", ["blocks.0"]),
                     ("embed", ["patch_embed", "pos_embed", "cls_token"])]
    with pytest.raises(ValueError, match="units="):
        vit_randomization_units(tiny_cnn())


def test_spearman_equals_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(4, 50, generator=g) * 2).round()
    b = a + torch.randn(4, 50, generator=g)
    ref = [stats.spearmanr(u.numpy(), v.numpy())[0] for u, v in zip(a, b, strict=True)]
    np.testing.assert_allclose(spearman(a, b).numpy(), ref, rtol=0, atol=1e-12)
    assert torch.isnan(spearman(torch.ones(1, 5), torch.arange(5.0)[None])).all()


def test_cascading_randomises_one_more_unit_per_step_and_leaves_the_model_alone():
    model = _vit()
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def explain(m, x, t):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return grad_x_input(m, x, t)

    d = data(n=3, size=16)
    r = randomization_curve(model, d["x"], d["targets"], explain_fn=explain)
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    changed = [sorted({_unit(k) for k in s if not torch.equal(s[k], trained[k])}) for s in seen]
    assert changed == [[], ["head"], ["head", "norm"], ["blocks.1", "head", "norm"],
                       ["blocks.0", "blocks.1", "head", "norm"],
                       ["blocks.0", "blocks.1", "cls_token", "head", "norm", "patch_embed", "pos_embed"]]
    assert seen[2]["norm.weight"].eq(1).all() and seen[2]["norm.bias"].eq(0).all()
    assert r.curves.shape == (3, 5) and r.summary["units"][0] == "head"
    assert torch.equal(r.scores, r.curves[:, -1]) and r.value < 0.9
    assert r.summary["explain_calls"] == 6


def test_independent_restores_the_trained_weights_before_each_unit():
    model = _vit()
    trained = model.state_dict()
    seen = []

    def explain(m, x, t):
        state = m.state_dict()
        seen.append(sorted({_unit(k) for k, v in state.items() if not torch.equal(v, trained[k])}))
        return grad_x_input(m, x, t)

    d = data(n=2, size=16)
    randomization_curve(model, d["x"], d["targets"], explain_fn=explain, mode="independent")
    assert seen == [[], ["head"], ["norm"], ["blocks.1"], ["blocks.0"], ["cls_token", "patch_embed", "pos_embed"]]


def test_seeded_and_insensitive_maps_stay_at_one():
    d = data(n=3, size=16)
    a = randomization_curve(_vit(), d["x"], d["targets"], explain_fn=grad_x_input, seed=3)
    b = randomization_curve(_vit(), d["x"], d["targets"], explain_fn=grad_x_input, seed=3)
    assert torch.equal(a.curves, b.curves)
    c = randomization_curve(_vit(), d["x"], d["targets"], explain_fn=grad_x_input, seed=4)
    assert not torch.equal(a.curves, c.curves)
    blind = randomization_curve(_vit(), d["x"], d["targets"], explain_fn=lambda m, x, t: x.sum(1))
    assert torch.allclose(blind.curves, torch.ones(3, 5))


@pytest.mark.parametrize("absolute", [True, False])
def test_matches_quantus_mprt(absolute):
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(size=6)
    d = data(n=5, size=6)

    def quantus_explain(model, inputs, targets, **kwargs):
        return grad_x_input(model, torch.as_tensor(inputs), torch.as_tensor(targets).long()).numpy()[:, None]

    mprt = quantus.MPRT(seed=42, abs=absolute, normalise=False, disable_warnings=True)
    ref = mprt(model=model, x_batch=d["x"].numpy(), y_batch=d["targets"].numpy(), a_batch=None,
               explain_func=quantus_explain, device="cpu", batch_size=5, channel_first=True)
    ours = randomization_curve(model, d["x"], d["targets"], explain_fn=grad_x_input, units="module", seed=42)
    layers = [k for k in ref if k != "original"]
    assert ours.summary["units"] == layers == ["5", "2", "0"]
    curves = ours.curves if absolute else ours.per_image["curves_signed"]
    np.testing.assert_allclose(curves.numpy(), np.stack([ref[k] for k in layers], 1), rtol=0, atol=1e-5)


def test_module_mode_restores_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    d = data(n=2, size=6)
    Randomization(explain_fn=grad_x_input, units="module").update(tiny_cnn(), d["x"], d["targets"])
    assert torch.equal(torch.rand(3), expected)


def test_explicit_units():
    d = data(n=2, size=6)
    r = randomization_curve(tiny_cnn(), d["x"], d["targets"], explain_fn=grad_x_input,
                            units=[("top", ["5"]), ("rest", ["2", "0"])])
    assert r.summary["units"] == ["top", "rest"] and r.curves.shape == (2, 2)
