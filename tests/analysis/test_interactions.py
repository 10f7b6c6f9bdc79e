"""Patch interactions (Ma et al. 2022 reading): the indicator's ground truth on hard-windowed models, the Jacobian
estimator against the exact Jacobian, kernels, coverage, ERFs, patch removal and the restoring of the model."""

import pytest
import torch

import xvit
from xvit.adapters import get_adapter
from xvit.analysis.coverage import square_windows, swin_windows
from xvit.analysis.erf import direction, erf_of_rows
from xvit.analysis.interactions import kernel_to_mask, normalise_rows, relative_kernel
from xvit.models import create_model
from xvit.models.winft import square_window_mask

from ..tiny_models import make

GRID = (6, 6)


def _windowed(window=3, depth=3, **kw):
    """A hard-windowed WinfT (6x6 patches) with sharp, random attention."""
    torch.manual_seed(0)
    model = create_model("winft", "nano", img_size=48, patch_size=8, num_classes=4, embed_dim=32, depth=depth,
                         num_heads=2, window=window, **kw).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "qkv.weight" in n:
                p.normal_(0, 0.4)
    return model


def _inside(ind, window):
    """Share of each row's mass inside the ``window × window`` box, for rows with mass: ``(rows,)``."""
    w = square_window_mask(GRID, window).float()
    rows = ind.reshape(-1, *ind.shape[-2:])
    has = rows.sum(-1) > 0
    return (rows * w).sum(-1)[has]


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_grad_attention_mass_lies_inside_a_hard_window_in_every_block(pool):
    kw = {"class_token": False, "global_pool": "avg"} if pool == "avg" else {}
    model = _windowed(**kw)
    x = torch.randn(3, 3, 48, 48)
    ind = xvit.analyse(model, x, "interactions").tensors["indicator"]  # (B, L, N, N)
    for block in range(ind.shape[1]):
        inside = _inside(ind[:, block], 3)
        if pool == "avg" or block < ind.shape[1] - 1:  # token pooling: the last block's patch rows have no gradient
            assert inside.numel() >= 0.9 * 3 * 36  # a row may have no positive gradient-attention product
        assert bool((inside >= 0.99).all()), (block, inside.min())
    # the same model without its window spreads mass outside the 3x3 box
    free = _windowed(window=11, **kw)
    free_ind = xvit.analyse(free, x, "interactions").tensors["indicator"]
    assert _inside(free_ind[:, 0], 3).min() < 0.9


@pytest.mark.parametrize("exact", [True, False])
def test_jacobian_mass_lies_inside_the_window_then_the_composed_window(exact):
    # No class token: the class token would carry every patch to every other from the second block on.
    model = _windowed(class_token=False, global_pool="avg")
    x = torch.randn(2, 3, 48, 48)
    ind = xvit.analyse(model, x, "interactions", method="jacobian", exact=exact, probes=4).tensors["indicator"]
    for block in range(3):
        composed = 3 + 2 * block  # two 3x3 windows compose to 5x5, three to 7x7
        assert bool((_inside(ind[:, block], composed) >= 0.99).all())
        if block < 2:
            assert _inside(ind[:, block + 1], composed).min() < 0.99  # the composed window is needed
    assert bool((_inside(ind[:, 0], 3) >= 0.99).all())


def test_jacobian_estimate_agrees_with_the_exact_jacobian():
    model = make("xvit")
    x = torch.randn(2, 3, 32, 32)
    exact = xvit.analyse(model, x, "interactions", method="jacobian", exact=True).tensors["indicator"]
    est = xvit.analyse(model, x, "interactions", method="jacobian", probes=256, seed=1).tensors["indicator"]
    assert (est - exact).abs().max() < 0.03
    corr = torch.corrcoef(torch.stack([est.flatten(), exact.flatten()]))[0, 1]
    assert corr > 0.995
    # exact: the squared Frobenius norm from autograd for one (target, source) pair
    adapter = get_adapter(model)
    e = adapter.block_input(x[:1], 0).detach()
    p = 1

    def first_block(tokens):
        return adapter.blocks()[0](tokens)

    jac = torch.autograd.functional.jacobian(first_block, e)[0, p + 5, :, 0, p:, :]  # dz_5 / de_j: (D, N, D)
    raw = jac.permute(1, 0, 2).flatten(1).norm(dim=1)
    torch.testing.assert_close(exact[0, 0, 5], raw / raw.sum(), rtol=1e-4, atol=1e-5)


def test_jacobian_is_batch_invariant_and_chunking_does_not_change_it():
    model = make("timm_deit_distilled")
    x = torch.randn(3, 3, 32, 32)
    full = xvit.analyse(model, x, "interactions", method="jacobian", probes=3).tensors["indicator"]
    one = xvit.analyse(model, x[2:], "interactions", method="jacobian", probes=3, chunk=5).tensors["indicator"]
    torch.testing.assert_close(one[0], full[2], rtol=1e-4, atol=1e-5)


def test_rows_are_normalised_and_the_kernel_is_the_mean_over_offsets():
    model = make("xvit")
    res = xvit.analyse(model, torch.randn(2, 3, 32, 32), "interactions", method="jacobian", probes=2)
    ind = res.tensors["indicator"]
    torch.testing.assert_close(ind.sum(-1), torch.ones(2, 2, 16))
    # κ(Δ) by brute force over pairs
    kernel = res.tensors["kernel"]
    pos = [(i // 4, i % 4) for i in range(16)]
    for d in [(0, 0), (1, -2), (-3, 3)]:
        vals = [ind[:, :, i, j] for i in range(16) for j in range(16)
                if (pos[j][0] - pos[i][0], pos[j][1] - pos[i][1]) == d]
        torch.testing.assert_close(kernel[:, 3 + d[0], 3 + d[1]], torch.stack(vals, -1).mean((0, 2)))
    assert normalise_rows(torch.zeros(1, 3, 3)).abs().sum() == 0


def test_a_thresholded_kernel_gives_the_window_it_came_from():
    model = _windowed(class_token=False, global_pool="avg", depth=1)
    ind = xvit.analyse(model, torch.randn(4, 3, 48, 48), "interactions").tensors["indicator"]
    sums, counts = relative_kernel(ind, GRID)
    mask = kernel_to_mask(sums / counts, GRID, tau=0.999)
    assert bool((mask[0] <= square_window_mask(GRID, 3)).all())  # never outside the true window
    assert mask[0].sum(-1).float().mean() > 1  # more than the diagonal
    with pytest.raises(ValueError, match="does not belong to a 6x6"):
        kernel_to_mask(torch.ones(1, 3, 3), GRID, 0.8)


def test_coverage_finds_the_hard_window_and_judges_designs():
    model = _windowed(class_token=False, global_pool="avg")
    x = torch.randn(2, 3, 48, 48)
    res = xvit.analyse(model, x, "coverage", design="square:3")
    t = res.tensors
    assert t["sizes"].tolist() == [1, 3, 5, 7, 9, 11]
    assert bool((t["square_mean"][:, 1] > 0.99).all()) and t["smallest_square"].tolist() == [3, 3, 3]
    assert res.meta["verdict"] == "pass"
    assert xvit.analyse(model, x, "coverage", design="square:7").meta["verdict"] == "over-provisioned"
    assert xvit.analyse(model, x, "coverage", design="square:1").meta["verdict"] == "fail"
    assert torch.all(t["square_mean"][:, -1] > 0.999)  # the largest square covers the grid
    # with a class token the last block's patch rows carry no gradient: left out, not counted as a failure
    token = xvit.analyse(_windowed(), x, "coverage", design="square:3")
    assert not token.tensors["has_mass"][:, -1].any() and token.tensors["square_mean"][-1].isnan().all()
    assert token.tensors["smallest_square"].tolist() == [3, 3, -1] and token.meta["verdict"] == "pass"


def test_window_rules():
    sq = square_windows((4, 4), [1, 3])
    assert sq[0].equal(torch.eye(16, dtype=torch.bool)) and int(sq[1][5].sum()) == 9 and int(sq[1][0].sum()) == 4
    plain = swin_windows((4, 4), [2], shifted=False)[0]
    assert int(plain[0].sum()) == 4 and bool(plain[0, 5]) and not bool(plain[0, 2])
    shifted = swin_windows((4, 4), [2], shifted=True)[0]
    # shifted by 1: groups rows/cols {0}, {1, 2}, {3}; patch 5 = (1, 1) shares with (1,2), (2,1), (2,2)
    assert sorted(shifted[5].nonzero()[:, 0].tolist()) == [5, 6, 9, 10]
    assert shifted[0].nonzero()[:, 0].tolist() == [0]


def test_erf_rows_size_and_direction():
    ind = torch.tensor([[[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    members = erf_of_rows(ind, 0.8)
    assert members[0, 0].tolist() == [True, True, False, False] and not members[0, 1].any()
    d = direction(torch.tensor([[0.0, 1.0, 0.0, 0.0]]).expand(4, 4), (2, 2))
    assert d[0].tolist() == [0.0, 1.0] and d[3].tolist() == [-1.0, 0.0]
    model = _windowed(class_token=False, global_pool="avg")
    res = xvit.analyse(model, torch.randn(2, 3, 48, 48), "erf", tau=0.9)
    box = res.tensors["bbox"][:, 0]  # block 1: inside the 3x3 window
    rows = torch.arange(6).repeat_interleave(6)
    assert bool(((rows - box[..., 0]) <= 1).all() and ((box[..., 2] - rows) <= 1).all())
    assert bool((res.tensors["size"][:, 0] <= 9).all())


@pytest.mark.parametrize("family", ["xvit", "xvit_winft"])
def test_patch_removal_at_keep_one_is_the_unmasked_accuracy(family):
    model = make(family)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        pred = model(x).argmax(1)
    labels = torch.tensor([pred[0], pred[1], (pred[2] + 1) % 5, pred[3], (pred[4] + 1) % 5, pred[5]])
    res = xvit.analyse(model, x, "patch_removal", targets=labels, keep=[1.0, 0.5, 0.25], at_block=1)
    acc = res.tensors["accuracy"]
    assert torch.allclose(acc[:, 0], torch.full((3,), 4 / 6))
    assert res.tensors["kept"].tolist() == [16, 8, 4] and res.meta["labelled"]
    nolabel = xvit.analyse(model, x, "patch_removal", keep=[1.0, 0.5])
    assert torch.equal(nolabel.tensors["accuracy"][:, 0], torch.ones(3))  # agreement with itself
    with pytest.raises(ValueError, match="at_block must be an int in 0..2"):
        xvit.analyse(model, x, "patch_removal", at_block=3)


def test_hooks_and_flags_are_restored_after_an_error():
    model = make("xvit")
    model.train()
    flags = [b.attn.fused_attn for b in model.blocks]

    def boom(*_):
        raise RuntimeError("boom")

    handle = model.blocks[1].register_forward_hook(boom)
    for method in ("jacobian", "grad_attention"):
        with pytest.raises(RuntimeError, match="boom"):
            xvit.analyse(model, torch.randn(1, 3, 32, 32), "interactions", method=method)
    handle.remove()
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())
    assert model.training and [b.attn.fused_attn for b in model.blocks] == flags
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():  # no dual level was left open
        pass
