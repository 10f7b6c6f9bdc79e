"""Shared maths of the rollout-style methods: products of per-block token-mixing matrices, read out at one row.

A rollout-style map is ``s^T · M^(L) · … · M^(start)`` restricted to the patch columns, where ``s`` is the
read-out vector of the layout (the class-token row; the mean of the class and distillation rows; the mean of
the patch rows for average pooling). Since the map is linear in ``s``, one row vector propagated from the last
block down (``v ← v · M^(b)``, O(T²) per block) gives exactly the row of the full product (O(T³) per block);
the full matrix is computed only where a caller asks for every token's row (:func:`rollout_matrix`,
:func:`residual_rollout_matrix`).

Two products occur: Abnar & Zuidema's attention rollout ``J = Π_b M^(b)`` with row-normalised factors
(ACL 2020, Eq. 1), and Chefer et al.'s residual rollout ``R = Π_b (I + Ā^(b))`` without normalisation
(CVPR 2021 Eq. 14; ICCV 2021 rule 6). Both take the per-block matrices in forward order (first block first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xvit.adapters.base import TokenLayout


def fuse_heads(a: Tensor, how: str) -> Tensor:
    """``(B, heads, T, T)`` -> ``(B, T, T)`` by mean, max or min over heads."""
    if how == "mean":
        return a.mean(1)
    return a.amax(1) if how == "max" else a.amin(1)


def gradient_weighted(attention: Tensor, weight: Tensor) -> Tensor:
    """``E_h[(weight ⊙ A)⁺]``: ``(B, heads, T, T)`` twice -> ``(B, T, T)`` (Chefer et al. 2021b rule 5, Eq. 13 of
    Chefer et al. 2021 with ``weight`` the attention relevance)."""
    return (weight * attention).clamp(min=0).mean(1)


def rollout_factor(fused: Tensor, discard_ratio: float = 0.0) -> Tensor:
    """``M = (Ā + I) / rowsum`` for one block's fused attention ``(B, T, T)``, optionally first setting the
    ``discard_ratio`` share of the smallest weights per image to 0, the class token's self-attention excepted
    (vit-explain's discarding)."""
    B, T, _ = fused.shape
    if discard_ratio > 0:
        flat = fused.reshape(B, -1).clone()
        k = int(discard_ratio * T * T)
        low = flat.topk(k, dim=-1, largest=False).indices
        keep0 = flat[:, 0].clone()
        flat.scatter_(1, low, 0.0)
        flat[:, 0] = keep0
        fused = flat.view(B, T, T)
    m = fused + torch.eye(T, dtype=fused.dtype, device=fused.device)
    return m / m.sum(-1, keepdim=True)


def readout_vector(layout: TokenLayout, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(B, 1, T)`` read-out vector ``s``: ``layout.readout(M) == layout.tokens_to_grid(s · M)`` for any ``M``."""
    s = torch.zeros(layout.num_tokens, dtype=dtype, device=device)
    if layout.pool == "token":
        s[0] = 1.0
    elif layout.pool == "token_distilled":
        s[:2] = 0.5
    else:
        s[layout.num_prefix:] = 1.0 / layout.num_patches
    return s.expand(batch, 1, -1)


def rollout_row(layout: TokenLayout, factors: Sequence[Tensor]) -> Tensor:
    """``(B, h, w)`` read-out row of ``J = M^(L) ⋯ M^(start)``; ``factors`` in forward order."""
    v = readout_vector(layout, factors[0].shape[0], factors[0].dtype, factors[0].device)
    for m in reversed(factors):
        v = v @ m
    return layout.tokens_to_grid(v[:, 0])


def residual_rollout_row(layout: TokenLayout, fused: Sequence[Tensor]) -> Tensor:
    """``(B, h, w)`` read-out row of ``R = (I + Ā^(L)) ⋯ (I + Ā^(start))``; ``fused`` in forward order."""
    v = readout_vector(layout, fused[0].shape[0], fused[0].dtype, fused[0].device)
    for a in reversed(fused):
        v = v + v @ a
    return layout.tokens_to_grid(v[:, 0])


def diagonal_rollout_row(layout: TokenLayout, fused: Sequence[Tensor], diagonals: Sequence[Tensor]) -> Tensor:
    """``(B, h, w)`` read-out row of ``R = (diag(g^(L)) + Ā^(L)) ⋯ (diag(g^(s)) + Ā^(s))``; both in forward order."""
    v = readout_vector(layout, fused[0].shape[0], fused[0].dtype, fused[0].device)
    for a, g in zip(reversed(fused), reversed(diagonals)):
        v = v * g[:, None, :] + v @ a
    return layout.tokens_to_grid(v[:, 0])


def rollout_matrix(factors: Sequence[Tensor]) -> Tensor:
    """Full ``(B, T, T)`` product ``J = M^(L) ⋯ M^(start)`` (every token's row); ``factors`` in forward order."""
    joint = factors[0]
    for m in factors[1:]:
        joint = m @ joint
    return joint


def residual_rollout_matrix(fused: Sequence[Tensor]) -> Tensor:
    """Full ``(B, T, T)`` product ``R = (I + Ā^(L)) ⋯ (I + Ā^(start))``; ``fused`` in forward order."""
    B, T, _ = fused[0].shape
    r = torch.eye(T, dtype=fused[0].dtype, device=fused[0].device).expand(B, T, T)
    for a in fused:
        r = r + a @ r
    return r
