"""Row propagation of the rollout-style methods equals the read-out of the full matrix product."""

import pytest
import torch

from xvit.adapters.base import TokenLayout
from xvit.methods._rollout import (
    fuse_heads,
    gradient_weighted,
    readout_vector,
    residual_rollout_matrix,
    residual_rollout_row,
    rollout_factor,
    rollout_matrix,
    rollout_row,
)

LAYOUTS = {
    "class_token": TokenLayout(1, (3, 4), "token", (8, 8)),
    "class_and_registers": TokenLayout(5, (3, 3), "token", (8, 8)),
    "distillation_token": TokenLayout(2, (4, 4), "token_distilled", (8, 8)),
    "avg_pool": TokenLayout(0, (4, 3), "avg", (8, 8)),
    "avg_pool_registers": TokenLayout(3, (2, 5), "avg", (8, 8)),
}


def _attention(layout: TokenLayout, blocks: int = 4, batch: int = 2, heads: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(layout.num_tokens)
    T = layout.num_tokens
    return [torch.randn(batch, heads, T, T, generator=g, dtype=torch.float64).softmax(-1) for _ in range(blocks)]


@pytest.mark.parametrize("name", LAYOUTS)
def test_readout_vector_selects_the_readout_row(name):
    layout = LAYOUTS[name]
    m = torch.randn(2, layout.num_tokens, layout.num_tokens, dtype=torch.float64)
    s = readout_vector(layout, 2, m.dtype, m.device)
    torch.testing.assert_close(layout.tokens_to_grid((s @ m)[:, 0]), layout.readout(m))


@pytest.mark.parametrize("discard_ratio", [0.0, 0.3])
@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize("name", LAYOUTS)
def test_rollout_row_equals_the_full_product(name, how, discard_ratio):
    layout = LAYOUTS[name]
    factors = [rollout_factor(fuse_heads(a, how), discard_ratio) for a in _attention(layout)]
    torch.testing.assert_close(rollout_row(layout, factors), layout.readout(rollout_matrix(factors)))


@pytest.mark.parametrize("name", LAYOUTS)
def test_residual_rollout_row_equals_the_full_product(name):
    layout = LAYOUTS[name]
    attention = _attention(layout)
    weights = [torch.randn_like(a) for a in attention]
    fused = [gradient_weighted(a, w) for a, w in zip(attention, weights)]
    expect = layout.readout(residual_rollout_matrix(fused))
    torch.testing.assert_close(residual_rollout_row(layout, fused), expect)
    # The full product multiplies later blocks on the left: one block alone is I + Ā.
    eye = torch.eye(layout.num_tokens, dtype=torch.float64)
    torch.testing.assert_close(residual_rollout_matrix(fused[:1]), eye + fused[0])


def test_rollout_factor_rows_sum_to_one_and_discarding_zeroes_weights():
    a = _attention(LAYOUTS["class_token"], blocks=1)[0].mean(1)
    m = rollout_factor(a, 0.5)
    torch.testing.assert_close(m.sum(-1), torch.ones(2, a.shape[-1], dtype=torch.float64))
    assert (m == 0).sum() >= a[0].numel() // 2 - a.shape[-1]
