"""R-Cut: the weightings, the cut against scipy's generalised eigen-solver, the seed component, degenerate graphs.

Parity with the authors' code is in test_reference_fixtures.py."""

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make
from xvit.adapters import get_adapter
from xvit.methods.base import Context
from xvit.methods.rcut import Cut, RCut, normalized_cut, seed_component


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model, x = make("xvit"), torch.randn(2, 3, SIZE, SIZE) * 0.5
    adapter = get_adapter(model)
    ctx = Context(adapter, adapter.layout(x))
    rec = ctx.record(x, None, modules={"f": adapter.norm1(1)})
    return model, x, torch.tensor([[1, 3], [4, 2]]), ctx, rec.outputs["f"][:, 1:], rec.logits


def test_weightings(setup):
    model, x, targets, ctx, features, logits = setup
    raw, passes = RCut(weighting="score_raw").channel_weights(ctx, x, features, logits, targets)
    soft, _ = RCut(weighting="score_softmax").channel_weights(ctx, x, features, logits, targets)
    torch.testing.assert_close(soft, raw.softmax(-1))
    assert passes.tolist() == [48, 48]
    # gradcam: mean over the grid of d p_c / d F, by autograd through a hook
    grads, _ = RCut(weighting="gradcam").channel_weights(ctx, x, features, logits, targets)
    store = {}
    handle = get_adapter(model).norm1(1).register_forward_hook(lambda m, i, o: store.update(f=o))
    for k in range(2):
        p = model(x).softmax(1).gather(1, targets[:, k:k + 1]).sum()
        (g,) = torch.autograd.grad(p, store["f"])
        torch.testing.assert_close(grads[:, k], g[:, 1:].mean(1), rtol=1e-4, atol=1e-7)
    handle.remove()
    # cosine: cos of the masked and clean logits over the top-5 classes of x plus the class, for channel 0
    cos, _ = RCut(weighting="cosine").channel_weights(ctx, x, features, logits, targets)
    channel = features[0, :, 0].reshape(1, 1, 4, 4)
    mask = torch.nn.functional.interpolate(channel, size=(SIZE, SIZE), mode="bilinear", align_corners=True)[0, 0]
    mask = (mask - mask.min()) / (mask.max() - mask.min())
    with torch.no_grad():
        masked = model(x[:1] * mask)[0]
    for k in range(2):
        keep = torch.zeros(5, dtype=torch.bool)
        keep[logits[0].topk(5).indices] = True
        keep[targets[0, k]] = True
        expected = torch.nn.functional.cosine_similarity(masked[keep], logits[0][keep], dim=0)
        torch.testing.assert_close(cos[0, k, 0], expected, rtol=1e-4, atol=1e-6)


def test_cut_solves_the_generalised_eigenproblem():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(0)
    tokens = torch.randn(30, 8)
    cut = normalized_cut(tokens, 0.2)
    unit = torch.nn.functional.normalize(tokens.double(), dim=1)
    w = torch.where(unit @ unit.T > 0.2, 1.0, 1e-5).double()
    degree = torch.diag(w.sum(1))
    values, vectors = scipy_linalg.eigh((degree - w).numpy(), degree.numpy(), subset_by_index=[1, 2])
    y = torch.tensor(vectors[:, 0])
    if not (y > y.mean())[y.abs().argmax()]:
        y = -y
    torch.testing.assert_close(cut.fiedler, y, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(cut.eigvals, torch.tensor(values), rtol=1e-9, atol=1e-12)
    assert torch.equal(cut.bipartition, y > y.mean()) and not cut.degenerate
    assert normalized_cut(torch.ones(5, 3) + 0.01 * torch.randn(5, 3), 0.2).degenerate  # every edge above tau


def test_seed_component_keeps_the_seed_region_only():
    fore = torch.zeros(4, 4, dtype=torch.bool)
    fore[0, :2] = fore[1, 0] = True  # the seed's region
    fore[3, 3] = True  # another foreground region
    cut = Cut(torch.zeros(16), fore.flatten(), torch.tensor(0), torch.zeros(2), torch.tensor(False))
    region = seed_component(cut, (4, 4)).view(4, 4)
    expected = fore.clone()
    expected[3, 3] = False
    assert torch.equal(region, expected)


@pytest.mark.parametrize("output", ["bipartition", "seed_component", "base_cam", "ncut"])
def test_outputs(setup, output):
    model, x, targets, *_ = setup
    with xvit.Explainer(model, "rcut", output=output) as explainer:
        e = explainer(x, targets)
    assert e.raw.shape == (2, 2, 4, 4) and torch.isfinite(e.raw).all()
    if output in ("bipartition", "seed_component"):
        assert set(e.raw.unique().tolist()) <= {0.0, 1.0}
    if output == "ncut":
        torch.testing.assert_close(e.raw[:, 0], e.raw[:, 1])  # class-agnostic
        assert e.meta["n_forwards"].tolist() == [1, 1]
    assert e.params["output"] == output and explainer.method.signed == (output == "base_cam")


def test_default_weighting_is_batch_invariant_and_class_dependent_before_the_cut(setup):
    model, x, targets, *_ = setup
    with xvit.Explainer(model, "rcut") as explainer:
        both = explainer(x, targets)
        alone = explainer(x[1:], targets[1:])
    torch.testing.assert_close(alone.raw[0], both.raw[1])
    assert both.meta["n_forwards"].tolist() == [49, 49]  # 1 + D = 48 masked passes
    base = xvit.explain(model, x, "rcut", target=targets, output="base_cam")
    assert (base.raw[:, 0] - base.raw[:, 1]).abs().max() > 0
