"""Initialisations that shorten a ViT's slow start on small data."""

from __future__ import annotations

import torch
from torch import Tensor

from xvit.models import VisionTransformer

__all__ = ["sincos_pos_embed", "mimetic_init_"]


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sine-cosine position embedding, ``(H * W, dim)``: a quarter of the channels each for
    sin and cos of the row and of the column at frequencies ``10000 ** (-i / (dim / 4))`` (Chen, Xie and He,
    MoCo v3, arXiv:2104.02057, §4; Beyer et al., Better plain ViT baselines, arXiv:2205.01580)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4; got {dim}.")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    angles_r, angles_c = rows.flatten()[:, None] * omega, cols.flatten()[:, None] * omega
    return torch.cat([angles_c.sin(), angles_c.cos(), angles_r.sin(), angles_r.cos()], 1).float()


@torch.no_grad()
def mimetic_init_(model: VisionTransformer, seed: int = 0, qk: tuple[float, float] = (0.7, 0.7),
                  vo: tuple[float, float] = (0.4, 0.4)) -> VisionTransformer:
    """Mimetic initialisation (Trockman and Kolter, Mimetic Initialization of Self-Attention Layers, ICML 2023,
    arXiv:2305.09828): per head ``W_q^T W_k ~ a Z + b I`` and, over all heads, ``W_proj W_v ~ a' Z' - b' I``
    (``Z`` Gaussian with variance ``1 / dim``), factorised by SVD; the patch-grid position embedding starts
    as :func:`sincos_pos_embed`. Tokens then attend to nearby, similar tokens from the first step, a
    convolution-like prior that shortens a ViT's slow start on small data. The architecture is unchanged
    (all parameters stay trainable); ``(a, b)`` values are this module's choice."""
    gen = torch.Generator().manual_seed(seed)
    dim = model.config.embed_dim

    def factors(alpha: float, beta: float, rank: int) -> tuple[Tensor, Tensor]:
        m = alpha * torch.randn(dim, dim, generator=gen) / dim**0.5 + beta * torch.eye(dim)
        u, s, vh = torch.linalg.svd(m)
        root = s[:rank].sqrt()
        return u[:, :rank] * root, (vh[:rank].T * root)  # m ~ left @ right.T

    for block in model.blocks:
        attn = block.attn
        hd = attn.head_dim
        w = attn.qkv.weight  # rows: q (heads x head_dim), k, v
        for h in range(attn.num_heads):
            left, right = factors(*qk, hd)
            w[h * hd:(h + 1) * hd] = left.T  # q_h = left.T x, k_h = right.T x: q.k = x^T left right^T x'
            w[dim + h * hd:dim + (h + 1) * hd] = right.T
        left, right = factors(vo[0], -vo[1], dim)
        w[2 * dim:] = right.T
        attn.proj.weight.copy_(left)
        for b in (attn.qkv.bias, attn.proj.bias):
            if b is not None:
                b.zero_()
    prefix = model.num_prefix_tokens if not model.config.no_embed_class else 0
    model.pos_embed[0, prefix:] = sincos_pos_embed(dim, model.grid_size)
    model.pos_embed[0, :prefix] = 0
    return model
