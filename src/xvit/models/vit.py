"""The built-in Vision Transformer.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
ICLR 2021, arXiv:2010.11929; register tokens after Darcet et al., "Vision Transformers Need
Registers", ICLR 2024, arXiv:2309.16588.

Parameter names equal those of timm's ``VisionTransformer`` (``cls_token``, ``reg_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.i.norm1``, ``blocks.i.attn.qkv``, ``blocks.i.attn.proj``,
``blocks.i.mlp.fc1``/``fc2``, ``norm``, ``fc_norm``, ``head``), so a state dict moves between the two
with ``strict=True``. The position embedding is resampled (bicubic, antialiased, like timm's
``dynamic_img_size``) for inputs of another size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.models._registry import register_model

__all__ = ["ViTConfig", "VisionTransformer", "VIT_PRESETS", "create_vit", "resample_pos_embed"]


@dataclass
class ViTConfig:
    """Architecture of a built-in ViT; stored in a checkpoint's ``config.json``."""

    img_size: int = 112
    patch_size: int = 8
    in_chans: int = 3
    num_classes: int = 10
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    reg_tokens: int = 0
    global_pool: str = "token"
    no_embed_class: bool = False
    layer_norm_eps: float = 1e-6
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


VIT_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(embed_dim=96, depth=4, num_heads=3),
    "tiny": dict(embed_dim=192, depth=6, num_heads=3),
    "small": dict(embed_dim=384, depth=8, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix: int) -> Tensor:
    """Resample a learned (1, prefix + h*w, D) position embedding to another patch grid.

    Prefix entries are kept; the grid part is resized bicubically with antialiasing, as timm's
    ``resample_abs_pos_embed`` does, so dynamic-size outputs agree with timm.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, h, w, D)
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention. ``fused_attn`` selects PyTorch's SDPA kernel; the explicit path
    materialises the attention probabilities and passes them through ``attn_drop``, the point at
    which xvit records them."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: ``U = Z + MSA(LN1(Z))``, ``Z' = U + MLP(LN2(U))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_model("vit", config_class=ViTConfig, presets=VIT_PRESETS, default_preset="tiny", vit_compatible=True,
                citation="Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021, arXiv:2010.11929")
class VisionTransformer(nn.Module):
    """A plain ViT classifier; see the module docstring. Input ``(B, in_chans, H, W)`` with ``H`` and
    ``W`` multiples of the patch size; output logits ``(B, num_classes)``."""

    def __init__(self, config: ViTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = config if config is not None else ViTConfig(**kwargs)
        if cfg.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg'; got {cfg.global_pool!r}.")
        if cfg.global_pool == "token" and not cfg.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without one.")
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}.")
        self.config = cfg
        d = cfg.embed_dim
        self.num_prefix_tokens = int(cfg.class_token) + cfg.reg_tokens
        self.global_pool = cfg.global_pool
        self.no_embed_class = cfg.no_embed_class
        self.grid_size = (cfg.img_size // cfg.patch_size,) * 2
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        embed_len = self.grid_size[0] * self.grid_size[1] + (0 if cfg.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, d))
        self.blocks = nn.Sequential(
            *[Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.layer_norm_eps) for _ in range(cfg.depth)]
        )
        use_fc_norm = cfg.global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(d, cfg.num_classes)
        self.reset_parameters()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def reset_parameters(self) -> None:
        """timm-style initialisation: truncated normal (std 0.02) for embeddings and Linear weights."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=math.sqrt(1.0 / w[0].numel()))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def prefix_tokens(self, batch: int) -> list[Tensor]:
        out = []
        if self.cls_token is not None:
            out.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            out.append(self.reg_token.expand(batch, -1, -1))
        return out

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """Position embedding for a patch grid, resampled when it differs from the training grid."""
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return resample_pos_embed(self.pos_embed, grid, self.grid_size, prefix)

    def embed(self, x: Tensor) -> Tensor:
        """Patch tokens, prefix tokens and position embedding: the input of the first block."""
        p = self.patch_embed(x)
        B, h, w, D = p.shape
        p = p.reshape(B, h * w, D)
        pos = self.position_embedding((h, w))
        if self.no_embed_class:
            return torch.cat([*self.prefix_tokens(B), p + pos], dim=1)
        return torch.cat([*self.prefix_tokens(B), p], dim=1) + pos

    def forward_features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] % self.config.patch_size or x.shape[-2] % self.config.patch_size:
            raise ValueError(
                f"Expected input (B, {self.config.in_chans}, H, W) with H and W multiples of "
                f"{self.config.patch_size}; got {tuple(x.shape)}."
            )
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, x: Tensor) -> Tensor:
        x = x[:, self.num_prefix_tokens:].mean(1) if self.global_pool == "avg" else x[:, 0]
        return self.head(self.fc_norm(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def create_vit(preset: str = "tiny", **overrides: Any) -> VisionTransformer:
    """Build a built-in ViT (variant ``"vit"``) from a size preset (``nano``, ``tiny``, ``small``, ``base``)
    and overrides."""
    if preset not in VIT_PRESETS:
        raise ValueError(f"Unknown ViT preset {preset!r}; choose one of {sorted(VIT_PRESETS)}.")
    return VisionTransformer(ViTConfig(**{**VIT_PRESETS[preset], **overrides}))
