"""Mean attention distance against hand-computable attention patterns."""

import torch

import xvit

from ..tiny_models import SIZE, make


def _mean_pairwise_patch_distance(grid: int, patch: int) -> float:
    centres = torch.stack(torch.meshgrid(torch.arange(grid * 1.0), torch.arange(grid * 1.0), indexing="ij"), -1)
    centres = centres.reshape(-1, 2) * patch
    return float(torch.cdist(centres, centres).mean())


def test_uniform_attention_gives_the_mean_pairwise_patch_distance():
    model = make("xvit")  # 32 px, patch 8: a 4 x 4 grid
    with torch.no_grad():
        for block in model.blocks:  # zero queries and keys: every score is 0, attention is uniform
            n = block.attn.qkv.weight.shape[0] // 3
            block.attn.qkv.weight[: 2 * n].zero_()
            block.attn.qkv.bias[: 2 * n].zero_()
    result = xvit.analyse(model, torch.randn(2, 3, SIZE, SIZE), "attention_distance")
    expected = _mean_pairwise_patch_distance(4, 8)
    torch.testing.assert_close(result.tensors["distance"], torch.full((2, 2, 3), expected))
    assert result.meta["grid"] == [4, 4] and result.meta["patch_size"] == [8, 8]


def test_sharper_local_attention_gives_a_shorter_distance():
    model = make("xvit")
    x = torch.randn(1, 3, SIZE, SIZE)
    before = xvit.analyse(model, x, "attention_distance").tensors["mean"]
    assert ((before > 0) & (before < _mean_pairwise_patch_distance(4, 8) * 2)).all()
