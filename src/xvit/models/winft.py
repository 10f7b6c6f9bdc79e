"""The window-free transformer (WinfT), inspired by Ma et al., "Visualizing and Understanding Patch Interactions in
Vision Transformer" (IEEE TNNLS 2023, arXiv:2203.05922; reading of analysis-methods.md §1.5, experimental): the
built-in ViT in which every patch attends only within its own adaptive window.

* ``mode='hard'``: target patch ``i`` may attend to source patch ``j`` only where the block's window allows it (an
  additive ``−∞`` logit mask); prefix tokens (CLS, registers) attend to everything and everything attends to them.
* ``mode='soft'``: ``β^l_h · log(κ^l(π(j) − π(i)) + 1e-6)`` is added to the logits, ``β^l_h`` learnable per block
  and head, initialised to 1.

The window comes from a ``window_mask`` file (``window_mask.safetensors``, written by ``xvit analyse erf ... --out
DIR`` from a trained reference ViT: the relative kernel ``kernel`` and the masks ``kernel_mask`` — the kernel
thresholded at mass ``τ``, translation-shared — and ``erf_mask`` — per-patch ERFs) or is a hard ``window × window``
square (``window``). The masks are buffers of the model, so a checkpoint carries them and
:func:`xvit.load_model` restores them without the file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from xvit.models._registry import register_model
from xvit.models.vit import VIT_PRESETS, Attention, VisionTransformer, ViTConfig
from xvit.utils.context import set_attributes

__all__ = ["WinfTConfig", "WinfT", "WindowAttention", "MASK_SOURCES", "square_window_mask", "read_window_file"]

MASK_SOURCES = ("kernel_mask", "erf_mask")
FLOOR = 1e-6  # the soft variant's floor inside the log


@dataclass
class WinfTConfig(ViTConfig):
    """A built-in ViT config plus the window: ``window_mask`` (path of a ``window_mask.safetensors``; ``mask_source``
    picks ``kernel_mask`` or ``erf_mask`` from it for the hard mode) or ``window`` (a hard square of this many
    patches per side, centred, clipped at the borders); ``mode`` ``hard`` or ``soft``."""

    window: int | None = None
    window_mask: str | None = None
    mask_source: str = "kernel_mask"
    mode: str = "hard"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WinfTConfig:
        """From a checkpoint's ``config.json``: the window then comes from the weights file (its buffers), not from
        ``window_mask``, which may no longer exist."""
        cfg = super().from_dict(d)
        cfg.window_in_weights = True
        return cfg


def square_window_mask(grid: tuple[int, int], window: int) -> Tensor:
    """``(N, N)`` bool: ``[i, j]`` where ``j`` lies in the ``window × window`` box centred on ``i`` (clipped)."""
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    lo, hi = -((window - 1) // 2), window // 2
    dr = rows[None, :] - rows[:, None]
    dc = cols[None, :] - cols[:, None]
    return (dr >= lo) & (dr <= hi) & (dc >= lo) & (dc <= hi)


def read_window_file(path: str | Path, grid: tuple[int, int], depth: int) -> dict[str, Tensor]:
    """The tensors of a ``window_mask.safetensors`` file, checked against the model's grid and depth."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"WinfT window_mask {path} {'is not a regular file' if path.exists() else 'does not exist'}; "
                         "write one with `xvit analyse erf DATA --model REFERENCE --out DIR` "
                         "(DIR/window_mask.safetensors).")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise ValueError(f"WinfT window_mask {path} is not a readable safetensors file ({e}).") from None
    missing = [k for k in ("kernel", *MASK_SOURCES) if k not in tensors]
    if missing:
        raise ValueError(f"WinfT window_mask {path} lacks {missing}; it holds kernel, kernel_mask and erf_mask.")
    file_grid = tuple(json.loads(meta.get("grid", "[]")))
    n = grid[0] * grid[1]
    if file_grid != tuple(grid) or tensors["kernel_mask"].shape != (depth, n, n):
        raise ValueError(f"WinfT window_mask {path} was estimated for a {file_grid} patch grid and "
                         f"{tensors['kernel_mask'].shape[0]} blocks; this model has a {tuple(grid)} grid and {depth} "
                         "blocks (estimate it from a reference ViT of the same grid and depth).")
    return tensors


class WindowAttention(Attention):
    """The built-in attention with a per-patch window: a bias on the patch-to-patch logits (``−∞`` outside the
    window in hard mode, ``β_h log(κ + 1e-6)`` in soft mode); the explicit path records the masked probabilities."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, num_prefix: int, num_patches: int, mode: str
                 ) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.mode = mode
        self.num_prefix = num_prefix
        self.kept: Tensor | None = None  # (B, k) patch indices while a shortened sequence runs (WinfT.kept_patches)
        n = num_patches
        if mode == "hard":
            self.register_buffer("window_allowed", torch.ones(n, n, dtype=torch.bool))
        else:
            self.register_buffer("log_kernel", torch.zeros(n, n))
            self.beta = nn.Parameter(torch.ones(num_heads))

    def patch_bias(self) -> Tensor:
        """``(1 or H, N, N)`` additive logit term between patches."""
        if self.mode == "hard":
            return torch.zeros(self.window_allowed.shape, device=self.window_allowed.device).masked_fill(
                ~self.window_allowed, float("-inf"))[None]
        return self.beta[:, None, None] * self.log_kernel[None]

    def logit_bias(self, batch: int, tokens: int) -> Tensor:
        """``(B or 1, H or 1, T, T)`` additive term for a sequence of ``tokens`` tokens."""
        p = self.num_prefix
        n = self.window_allowed.shape[0] if self.mode == "hard" else self.log_kernel.shape[0]
        bias = self.patch_bias()
        if tokens != p + n:
            if self.kept is None or self.kept.shape != (batch, tokens - p):
                raise ValueError(f"WinfT windows are defined on {n} patch tokens; got a sequence of {tokens - p}. "
                                 "Run other input sizes or shortened sequences inside WinfT.kept_patches(index) "
                                 "(token removal) with the kept patch indices.")
            k = self.kept.to(bias.device)
            bias = bias[None].expand(batch, -1, -1, -1)
            rows = torch.gather(bias, 2, k[:, None, :, None].expand(-1, bias.shape[1], -1, n))
            bias = torch.gather(rows, 3, k[:, None, None, :].expand(-1, bias.shape[1], k.shape[1], -1))
        else:
            bias = bias[None]
        full = bias.new_zeros(*bias.shape[:2], tokens, tokens)
        full[..., p:, p:] = bias
        return full

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attention of ``x`` ``(B, T, D)``; ``attn_mask`` is a further additive logit term (as timm's attention
        takes; attention guidance passes one)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.logit_bias(B, N).to(q.dtype)
        if attn_mask is not None:
            bias = bias + attn_mask.to(q.dtype)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


@register_model("winft", config_class=WinfTConfig, presets=VIT_PRESETS, default_preset="tiny", vit_compatible=True,
                citation="Ma et al., Visualizing and Understanding Patch Interactions in Vision Transformer, IEEE "
                "TNNLS 2023, arXiv:2203.05922 (window-free transformer, inspired by; analysis-methods.md §1.5)")
class WinfT(VisionTransformer):
    """The built-in ViT with per-patch attention windows (see the module docstring); same parameters plus the
    window buffers (and ``beta`` in soft mode), same layout, so the built-in adapter explains it."""

    def __init__(self, config: WinfTConfig | None = None, **kwargs: Any) -> None:
        cfg = config if config is not None else WinfTConfig(**kwargs)
        if cfg.mode not in ("hard", "soft"):
            raise ValueError(f"WinfT mode must be 'hard' or 'soft'; got {cfg.mode!r}.")
        if cfg.mask_source not in MASK_SOURCES:
            raise ValueError(f"WinfT mask_source must be one of {', '.join(MASK_SOURCES)}; got {cfg.mask_source!r}.")
        if cfg.window is not None and (isinstance(cfg.window, bool) or not isinstance(cfg.window, int)
                                       or cfg.window < 1):
            raise ValueError(f"WinfT window must be a positive int (patches per side); got {cfg.window!r}.")
        in_weights = getattr(cfg, "window_in_weights", False)
        if not in_weights and (cfg.window is None) == (cfg.window_mask is None):
            raise ValueError("WinfT needs exactly one of window (a square of this many patches per side) and "
                             "window_mask (a window_mask.safetensors written by `xvit analyse erf`).")
        super().__init__(cfg)
        n = self.grid_size[0] * self.grid_size[1]
        for block in self.blocks:
            old = block.attn
            block.attn = WindowAttention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, self.num_prefix_tokens, n,
                                         cfg.mode)
            block.attn.load_state_dict(old.state_dict(), strict=False)
        if not in_weights:
            self.set_windows(*self._windows(cfg))

    def _windows(self, cfg: WinfTConfig) -> tuple[Tensor, Tensor]:
        """Per block: the allowed ``(L, N, N)`` mask and the relative-kernel values ``(L, N, N)`` at ``π(j) − π(i)``."""
        depth = cfg.depth
        if cfg.window is not None:
            allowed = square_window_mask(self.grid_size, cfg.window).expand(depth, -1, -1)
            return allowed, allowed.float()
        tensors = read_window_file(cfg.window_mask, self.grid_size, depth)
        h, w = self.grid_size
        rows = torch.arange(h).repeat_interleave(w)
        cols = torch.arange(w).repeat(h)
        index = (rows[None, :] - rows[:, None] + h - 1) * (2 * w - 1) + cols[None, :] - cols[:, None] + w - 1
        kernel = tensors["kernel"].float().reshape(depth, -1)[:, index]
        return tensors[cfg.mask_source].bool(), kernel

    @torch.no_grad()
    def set_windows(self, allowed: Tensor, kernel: Tensor) -> None:
        """Set every block's window: ``allowed`` ``(L, N, N)`` bool (hard; the diagonal is always allowed) and the
        kernel values ``(L, N, N)`` (soft: the logit term is ``β log(kernel + 1e-6)``)."""
        eye = torch.eye(allowed.shape[-1], dtype=torch.bool)
        for l, block in enumerate(self.blocks):
            if self.config.mode == "hard":
                block.attn.window_allowed.copy_(allowed[l] | eye)
            else:
                block.attn.log_kernel.copy_(torch.log(kernel[l].clamp(min=0) + FLOOR))

    def windows(self) -> Tensor:
        """The allowed ``(L, N, N)`` masks (hard) or the patch logit terms ``(L, H, N, N)`` (soft)."""
        return torch.stack([b.attn.window_allowed if self.config.mode == "hard" else b.attn.patch_bias().detach()
                            for b in self.blocks])

    @contextlib.contextmanager
    def kept_patches(self, index: Tensor) -> Iterator[None]:
        """Inside the context, sequences of ``prefix + k`` tokens carry the patches ``index`` ``(B, k)`` (row-major
        patch indices in sequence order), so token removal keeps each kept patch's window; restored on exit."""
        with set_attributes([(b.attn, "kept", index) for b in self.blocks]):
            yield

    def mean_window_size(self) -> float:
        """Mean number of allowed source patches per target patch (hard mode; ``N`` in soft mode)."""
        if self.config.mode != "hard":
            return float(self.grid_size[0] * self.grid_size[1])
        return float(torch.stack([b.attn.window_allowed.sum(-1).float().mean() for b in self.blocks]).mean())

