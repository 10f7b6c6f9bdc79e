"""The ``svda`` analysis (analysis-methods.md §2.2): indicator values on hand-computable cases, the plain-ViT
variants, batch invariance and restoring on SVDA models."""

import json
import math

import pytest
import torch

import xvit
from xvit.adapters import get_adapter
from xvit.analysis.svda import DEFINITION_VERSION, layer_summary, spectra, spectral_indicators
from xvit.models import create_model

from ..tiny_models import SIZE, make


def test_spectral_indicators_of_hand_computable_spectra():
    one = spectral_indicators(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    assert one["spectral_entropy"].item() == pytest.approx(0.0, abs=1e-7)
    assert one["effective_rank"].item() == pytest.approx(1.0)
    assert one["spectral_sparsity"].item() == pytest.approx(1.0)
    assert one["spectral_sparsity_fraction"].item() == pytest.approx(0.75)
    flat = spectral_indicators(torch.full((2, 8), 0.7))
    torch.testing.assert_close(flat["spectral_entropy"], torch.ones(2))
    torch.testing.assert_close(flat["effective_rank"], torch.full((2,), 8.0))
    torch.testing.assert_close(flat["spectral_sparsity"], torch.zeros(2), atol=1e-6, rtol=0)
    # two equal directions of energy: H = log 2, rank 2; |σ| energy (flag) gives the same here
    two = spectral_indicators(torch.tensor([1.0, -1.0, 0.0, 0.0]), energy="abs")
    assert two["spectral_entropy"].item() == pytest.approx(math.log(2) / math.log(4))
    assert two["effective_rank"].item() == pytest.approx(2.0)
    # σ² vs |σ| energies differ on unequal spectra: p = (0.8, 0.2) vs (2/3, 1/3)
    a = torch.tensor([2.0, 1.0])
    h2 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    h1 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert spectral_indicators(a)["effective_rank"].item() == pytest.approx(math.exp(h2), rel=1e-6)
    assert spectral_indicators(a, "abs")["effective_rank"].item() == pytest.approx(math.exp(h1), rel=1e-6)


def test_svda_model_uses_its_learned_spectrum():
    model = make("xvit_svda")
    with torch.no_grad():
        model.blocks[1].attn.sigma.zero_()
        model.blocks[1].attn.sigma[:, 2] = -4.0  # one direction per head
    result = xvit.analyse(model, torch.randn(2, 3, SIZE, SIZE), "svda")
    assert result.meta["svda"] and result.meta["definition_version"] == DEFINITION_VERSION == "svda-ind-p1"
    torch.testing.assert_close(result.tensors["spectrum"][1], model.blocks[1].attn.sigma.abs())
    torch.testing.assert_close(result.tensors["spectral_entropy"][1], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.tensors["effective_rank"][1], torch.ones(3))
    torch.testing.assert_close(result.tensors["effective_rank"][0], torch.full((3,), 16.0))  # c·√r everywhere
    assert result.tensors["robustness_spectrum"].shape == (2, 2, 3)


def test_plain_vit_spectrum_is_the_singular_values_of_the_bilinear_form():
    model = make("timm_deit_distilled")
    got = spectra(get_adapter(model))
    w = model.blocks[0].attn.qkv.weight.detach().double()
    D, H, r = 48, 3, 16
    for h in range(H):
        wq, wk = w[h * r:(h + 1) * r].T, w[D + h * r:D + (h + 1) * r].T  # D×r
        expect = torch.linalg.svdvals(wq @ wk.T)[:r].float()
        torch.testing.assert_close(got[0, h], expect, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["xvit", "xvit_svda"])
def test_uniform_attention_has_selectivity_zero(family):
    model = make(family)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.qkv.weight[:2 * 48] = 0  # queries and keys zero: every logit equal
            b.attn.qkv.bias[:2 * 48] = 0
    result = xvit.analyse(model, torch.randn(2, 3, SIZE, SIZE), "svda")
    torch.testing.assert_close(result.tensors["selectivity"], torch.zeros(2, 2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.tensors["angular_alignment"], torch.zeros(2, 2, 3))
    assert not result.meta["svda"] or (result.tensors["robustness_spectrum"] == 1).all()


def test_alignment_and_selectivity_equal_the_formulas_on_the_first_block():
    model = make("xvit_svda").double()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64)
    result = xvit.analyse(model, x, "svda")
    with torch.no_grad():
        inner = model.blocks[0].attn.internals(model.blocks[0].norm1(model.embed(x)))
    a = inner["attention"]
    cos = inner["q_hat"] @ inner["k_hat"].transpose(-2, -1)
    align = (a * cos).sum(-1).mean(-1)
    select = (1 + (a * a.log()).sum(-1) / math.log(a.shape[-1])).mean(-1)
    torch.testing.assert_close(result.tensors["angular_alignment"][:, 0], align.float())
    torch.testing.assert_close(result.tensors["selectivity"][:, 0], select.float())


def test_robustness_is_one_without_noise_and_falls_with_it():
    model = make("xvit_svda")
    x = torch.randn(2, 3, SIZE, SIZE)
    small = xvit.analyse(model, x, "svda", eta=1e-7)
    torch.testing.assert_close(small.tensors["robustness_input"], torch.ones(2, 2, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(small.tensors["robustness_spectrum"], torch.ones(2, 2, 3), atol=1e-4, rtol=0)
    large = xvit.analyse(model, x, "svda", eta=1.0)
    assert (large.tensors["robustness_input"] < small.tensors["robustness_input"]).all()
    assert (large.tensors["robustness_spectrum"] < 1).all()


@pytest.mark.parametrize("family", ["xvit_svda", "timm_svda"])
def test_batch_invariant_serialisable_and_restoring_on_svda_models(family):
    model = make(family)
    model.train()
    flags = [b.attn.fused_attn for b in model.blocks]
    x = torch.randn(3, 3, SIZE, SIZE)
    result = xvit.analyse(model, x, "svda")
    one = xvit.analyse(model, x[2:], "svda")
    for key in ("angular_alignment", "selectivity", "robustness_input", "robustness_spectrum"):
        torch.testing.assert_close(one.tensors[key][0], result.tensors[key][2], rtol=1e-4, atol=1e-5)
    json.dumps(result.to_dict())
    summary = layer_summary(result)
    assert list(summary) == result.meta["indicators"] and len(summary) == 7
    mean, std = summary["selectivity"]
    torch.testing.assert_close(mean, result.tensors["selectivity"].mean(0).mean(-1))
    assert result.plot().axes
    assert model.training and flags == [b.attn.fused_attn for b in model.blocks]


def test_refuses_bad_parameters():
    with pytest.raises(xvit.params.InvalidParameterError, match="energy"):
        xvit.analyse(create_model("svda", "nano", img_size=16, patch_size=8), torch.randn(1, 3, 16, 16), "svda",
                     energy="l1")


def test_cli_runs_on_a_data_spec_and_merges_the_batches(tmp_path):
    from xvit.cli import main

    model = make("xvit_svda")
    xvit.models.save_checkpoint(model, tmp_path / "m", preprocessing=xvit.models.Preprocessing(size=(SIZE, SIZE)),
                                class_names=[str(i) for i in range(5)])
    assert main(["analyse", "svda", "xvit-shapes:single:test:5", "--model", str(tmp_path / "m"), "--batch-size", "2",
                 "--param", "svda.draws=2", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["meta"]["images"] == 5 and len(result["tensors"]["selectivity"]) == 5
    assert result["meta"]["definition_version"] == "svda-ind-p1"
    assert (tmp_path / "out" / "figure.png").stat().st_size > 0
