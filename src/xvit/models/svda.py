"""SVD-inspired attention (SVDA) and the SVDA Vision Transformer.

Arampatzakis, Pavlidis, Mitianoudis & Papamarkos, "Interpretable Vision Transformers in Image Classification via
SVDA", arXiv:2602.10994 (2026); the mechanism from "Geometry Meets Attention: Interpretable Transformers via SVD
Inspiration", IEEE Access 2025. Queries and keys are ℓ2-normalised per row, so their product is a cosine term; a
learned diagonal spectrum ``Σ = diag(σ_1..σ_r)`` per head re-weights the latent directions (analysis-methods.md
§2.1)::

    q̂_i = q_i/‖q_i‖,  k̂_j = k_j/‖k_j‖,  s_ij = Σ_k σ_k q̂_ik k̂_jk,  A_ij = softmax_j(s_ij/√r)

Values, output projection, MLP, norms and residuals are those of the plain ViT, and the projections are kept
soft-orthonormal by ``L_orth = Σ_{l,h} ‖W_Q^hᵀW_Q^h − I‖_F² + ‖W_K^hᵀW_K^h − I‖_F²`` (weight ``orth_weight``).
Since ``|s_ij| ≤ max|σ_k|``, ``σ_k = 1`` would give near-uniform attention: the spectrum starts at ``c·√r``
(logits about ``±c``) or, with ``spectrum_init="temperature"``, at 1 with a learnable per-head temperature that
starts at ``c·√r``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.models._registry import register_model
from xvit.models.vit import VIT_PRESETS, VisionTransformer, ViTConfig

__all__ = ["SVDAttention", "SVDAConfig", "SVDAVisionTransformer", "swap_in_svda", "svda_modules", "unit_rows",
           "spectral_prune", "model_macs", "SPECTRA", "SPECTRUM_INITS", "ENERGIES"]

SPECTRA = ("signed", "softplus")
SPECTRUM_INITS = ("scaled", "temperature")
UNIT_EPS = 1e-6
"""Floor of the row norm in :func:`unit_rows` (a zero row stays zero)."""


def unit_rows(t: Tensor) -> Tensor:
    """``t / max(‖t‖₂, UNIT_EPS)`` along the last dimension: the ℓ2 normalisation of queries and keys (§2.1).
    Computed as a product with the reciprocal norm (a broadcast division is several times slower on CPUs)."""
    return t * t.norm(dim=-1, keepdim=True).clamp_min(UNIT_EPS).reciprocal()


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _check_options(spectrum: str, spectrum_init: str, spectrum_init_c: float, orth_weight: float) -> None:
    if spectrum not in SPECTRA:
        raise ValueError(f"spectrum must be one of {SPECTRA}; got {spectrum!r}.")
    if spectrum_init not in SPECTRUM_INITS:
        raise ValueError(f"spectrum_init must be one of {SPECTRUM_INITS}; got {spectrum_init!r}.")
    if not (isinstance(spectrum_init_c, (int, float)) and spectrum_init_c > 0):
        raise ValueError(f"spectrum_init_c must be a positive number; got {spectrum_init_c!r}.")
    if not (isinstance(orth_weight, (int, float)) and orth_weight >= 0):
        raise ValueError(f"orth_weight must be a non-negative number; got {orth_weight!r}.")


class SVDAttention(nn.Module):
    """Multi-head SVD-inspired attention (analysis-methods.md §2.1), a drop-in for the ViT's attention.

    Same ``qkv``/``proj`` layout as timm's ``Attention`` (so the weights move between the two), ``sigma``
    ``(heads, r)`` the raw spectrum (``signed``: σ itself; ``softplus``: σ = softplus(raw)) and, with
    ``spectrum_init="temperature"``, ``temperature`` ``(heads,)``. ``fused_attn`` selects PyTorch's SDPA kernel;
    the explicit path passes the probabilities through ``attn_drop``, where xvit records them.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, *, spectrum: str = "signed",
                 spectrum_init: str = "scaled", spectrum_init_c: float = 5.0, orth_weight: float = 1e-4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}.")
        _check_options(spectrum, spectrum_init, spectrum_init_c, orth_weight)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.spectrum_kind = spectrum
        self.spectrum_init = spectrum_init
        self.spectrum_init_c = float(spectrum_init_c)
        self.orth_weight = float(orth_weight)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.sigma = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.temperature = nn.Parameter(torch.empty(num_heads)) if spectrum_init == "temperature" else None
        self.reset_spectrum()

    def reset_spectrum(self) -> None:
        """σ_k = c·√r (``scaled``), or σ_k = 1 and temperature c·√r (``temperature``) — §2.1's logit-scale fix."""
        start = self.spectrum_init_c * math.sqrt(self.head_dim)
        sigma = start if self.temperature is None else 1.0
        with torch.no_grad():
            self.sigma.fill_(_inverse_softplus(sigma) if self.spectrum_kind == "softplus" else sigma)
            if self.temperature is not None:
                self.temperature.fill_(start)

    def spectrum(self) -> Tensor:
        """The effective spectrum ``(heads, r)``: σ (softplus-mapped if so), times the temperature if any."""
        sigma = F.softplus(self.sigma) if self.spectrum_kind == "softplus" else self.sigma
        return sigma if self.temperature is None else sigma * self.temperature[:, None]

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unit queries and keys (in at least float32: under bfloat16 autocast the element-wise ops are slow and
        imprecise) and the values."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        wide = torch.promote_types(q.dtype, torch.float32)
        return unit_rows(q.to(wide)), unit_rows(k.to(wide)), v

    def internals(self, x: Tensor) -> dict[str, Tensor]:
        """What one forward computes on the attention input ``x`` ``(B, T, D)``: ``sigma`` ``(H, r)``, ``q_hat``
        and ``k_hat`` ``(B, H, T, r)``, ``logits`` ``S`` (before ``1/√r``) and ``attention`` ``A`` ``(B, H, T, T)``,
        and ``orth_residual`` ``(2, H)``."""
        q, k, _ = self._qkv(x)
        sigma = self.spectrum()
        logits = (q * sigma[:, None, :]) @ k.transpose(-2, -1)
        return {"sigma": sigma, "q_hat": q, "k_hat": k, "logits": logits,
                "attention": (logits * self.scale).softmax(-1), "orth_residual": self.orth_residual()}

    def orth_residual(self) -> Tensor:
        """``‖W^hᵀW^h − I_r‖_F²`` per head for the query (row 0) and key (row 1) projections, ``(2, heads)``;
        ``W^h`` is the ``D×r`` block of head ``h``."""
        H, r = self.num_heads, self.head_dim
        w = self.qkv.weight[: 2 * H * r].reshape(2, H, r, -1)
        gram = w @ w.transpose(-2, -1)
        eye = torch.eye(r, dtype=w.dtype, device=w.device)
        return (gram - eye).pow(2).sum((-2, -1))

    def regularization_loss(self) -> Tensor:
        """``orth_weight · Σ_h (‖W_Q^hᵀW_Q^h − I‖_F² + ‖W_K^hᵀW_K^h − I‖_F²)`` (§2.1)."""
        return self.orth_weight * self.orth_residual().sum()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``. ``attn_mask`` (bool: True = may attend, or additive) and ``is_causal``
        as in timm's attention."""
        B, N, _ = x.shape
        q, k, v = self._qkv(x)
        q, k = (q * self.spectrum()[:, None, :].to(q.dtype)).to(v.dtype), k.to(v.dtype)
        if self.fused_attn:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=is_causal,
                                               scale=self.scale)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if is_causal:
                logits = logits.masked_fill(~torch.ones(N, N, dtype=torch.bool, device=x.device).tril(), -math.inf)
            if attn_mask is not None:
                logits = (logits.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool
                          else logits + attn_mask)
            x = self.attn_drop(logits.softmax(dim=-1)) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)))


def svda_modules(model: nn.Module) -> list[SVDAttention]:
    """The :class:`SVDAttention` modules of ``model``, input to output."""
    return [m for m in model.modules() if isinstance(m, SVDAttention)]


def swap_in_svda(model: nn.Module, *, spectrum: str = "signed", spectrum_init: str = "scaled",
                 spectrum_init_c: float = 5.0, orth_weight: float = 1e-4) -> nn.Module:
    """Replace the attention of every block of a timm-style ViT (timm ``VisionTransformer``/DeiT or xvit's own)
    by :class:`SVDAttention`, in place, and return the model.

    The new attention takes over the block's ``qkv``, ``proj`` and dropout modules themselves, so every parameter
    of the model is kept; only the spectrum (and temperature) is new. Attention with query/key norms, a gate or a
    norm before the projection has no SVDA counterpart and is refused.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValueError(f"{type(model).__name__} has no 'blocks' with attention; swap_in_svda needs a timm-style "
                         "ViT (blocks[i].attn with qkv and proj).")
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if isinstance(attn, SVDAttention):
            continue
        if attn is None or not all(hasattr(attn, n) for n in ("qkv", "proj", "num_heads", "head_dim")):
            raise ValueError(f"Block {i} has no timm-style attention (qkv, proj, num_heads, head_dim).")
        for name in ("q_norm", "k_norm", "norm"):
            extra = getattr(attn, name, None)
            if extra is not None and not isinstance(extra, nn.Identity):
                raise ValueError(f"Block {i} uses attn.{name}; SVDA replaces plain attention only.")
        if getattr(attn, "gate", None) is not None:
            raise ValueError(f"Block {i} has a gated attention; SVDA replaces plain attention only.")
        heads, r = int(attn.num_heads), int(attn.head_dim)
        new = SVDAttention(heads * r, heads, attn.qkv.bias is not None, spectrum=spectrum,
                           spectrum_init=spectrum_init, spectrum_init_c=spectrum_init_c, orth_weight=orth_weight)
        new.qkv, new.proj, new.attn_drop = attn.qkv, attn.proj, attn.attn_drop
        new.proj_drop = getattr(attn, "proj_drop", new.proj_drop)
        new.fused_attn = bool(getattr(attn, "fused_attn", True))
        new.to(device=attn.qkv.weight.device, dtype=attn.qkv.weight.dtype)
        block.attn = new
    return model


ENERGIES = ("sigma2", "abs")


def _token_count(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    if isinstance(cfg, ViTConfig):
        return (cfg.img_size // cfg.patch_size) ** 2 + int(cfg.class_token) + cfg.reg_tokens
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is None:
        raise ValueError(f"Cannot tell the token count of {type(model).__name__}; pass tokens=.")
    return int(grid[0] * grid[1]) + int(getattr(model, "num_prefix_tokens", 1))


def model_macs(model: nn.Module, tokens: int) -> int:
    """Estimated multiply-accumulates of a timm-style ViT forward on ``tokens`` tokens: patch embedding, every
    block's attention and MLP, and the head (norms, softmax and additions left out)."""
    macs = 0
    proj = model.patch_embed.proj
    macs += (tokens - int(getattr(model, "num_prefix_tokens", 1))) * proj.weight[0].numel() * proj.out_channels
    for block in model.blocks:
        a = block.attn
        H, r = int(a.num_heads), int(a.head_dim)
        macs += tokens * (3 * H * r * a.qkv.in_features + H * r * a.proj.out_features) + 2 * H * tokens * tokens * r
        macs += H * tokens * r if isinstance(a, SVDAttention) else 0
        macs += tokens * (block.mlp.fc1.weight.numel() + block.mlp.fc2.weight.numel())
    return macs + model.head.weight.numel()


def spectral_prune(model: nn.Module, rho: float = 0.9, *, energy: str = "sigma2", tokens: int | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Spectral energy retention pruning (Arampatzakis, Sevetlidis & Pavlidis, arXiv:2609.24370;
    analysis-methods.md §2.4) of a model with :class:`SVDAttention`: per head keep the smallest prefix of
    directions, sorted by energy ``σ_k²`` (``energy="abs"``: ``|σ_k|``), holding at least ``rho`` of the head's
    energy, and drop the others' columns of ``W_Q^h`` and ``W_K^h``. Returns a pruned copy (``model`` is not
    changed) and a report.

    Dropping a column is done by zeroing its rows of ``qkv`` (weight and bias), so the ℓ2 norms run over the kept
    directions exactly as in a smaller ``r``; ``1/√r`` keeps the trained ``r`` (the spectrum was learned with it).
    ``rho >= 1`` keeps every direction. The report: ``kept`` ``(L, H)`` directions kept, ``directions`` and
    ``removed`` (counts and ``removed_fraction``), ``params_removed`` (weights and biases of the dropped columns)
    with ``params_removed_fraction`` of the model, and ``macs_removed``/``macs_removed_fraction`` per forward on
    ``tokens`` tokens (default: the model's own input size; see :func:`model_macs`).
    """
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not 0 < rho:
        raise ValueError(f"rho must be a number in (0, 1]; got {rho!r}.")
    if energy not in ENERGIES:
        raise ValueError(f"energy must be one of {ENERGIES}; got {energy!r}.")
    if not svda_modules(model):
        raise ValueError(f"{type(model).__name__} has no SVDAttention; spectral pruning needs an SVDA model "
                         "(xvit train --arch svda, or xvit.models.svda.swap_in_svda).")
    tokens = _token_count(model) if tokens is None else tokens
    pruned = copy.deepcopy(model)
    kept_rows, removed_params, removed_macs = [], 0, 0
    with torch.no_grad():
        for attn in svda_modules(pruned):
            H, r = attn.num_heads, attn.head_dim
            a = attn.spectrum().detach().abs().double()
            e = a.pow(2) if energy == "sigma2" else a
            order = e.argsort(dim=1, descending=True)
            share = e.gather(1, order).cumsum(1) / e.sum(1, keepdim=True).clamp_min(1e-300)
            n_keep = torch.full((H,), r, dtype=torch.long) if rho >= 1 else ((share < rho).sum(1) + 1).clamp(max=r)
            drop = torch.arange(r)[None, :] >= n_keep[:, None]  # in sorted order
            dropped = torch.zeros(H, r, dtype=torch.bool).scatter(1, order, drop)  # back to direction order
            rows = dropped.flatten().nonzero().flatten()
            for base in (0, H * r):  # query rows, key rows
                attn.qkv.weight[base + rows] = 0
                if attn.qkv.bias is not None:
                    attn.qkv.bias[base + rows] = 0
            if attn.spectrum_kind == "signed" and attn.temperature is None:
                attn.sigma[dropped] = 0
            n = int(dropped.sum())
            removed_params += 2 * n * (attn.qkv.in_features + int(attn.qkv.bias is not None))
            # per direction: its query and key projections, its spectrum scaling and its term of Q̂ΣK̂ᵀ
            removed_macs += n * (2 * tokens * attn.qkv.in_features + tokens + tokens * tokens)
            kept_rows.append(n_keep)
    kept = torch.stack(kept_rows)
    directions = sum(m.num_heads * m.head_dim for m in svda_modules(model))
    n_params = sum(p.numel() for p in model.parameters())
    total_macs = model_macs(model, tokens)
    removed = directions - int(kept.sum())
    return pruned, {"rho": float(rho), "energy": energy, "kept": kept, "directions": directions, "removed": removed,
                    "removed_fraction": removed / directions, "params_removed": removed_params,
                    "params_removed_fraction": removed_params / n_params, "tokens": tokens,
                    "macs_removed": removed_macs, "macs_removed_fraction": removed_macs / total_macs}


@dataclass
class SVDAConfig(ViTConfig):
    """A built-in ViT config plus SVDA's options (§2.1): ``spectrum`` (``signed`` or ``softplus``),
    ``spectrum_init`` (``scaled``: σ = c·√r; ``temperature``: σ = 1 and a per-head temperature c·√r),
    ``spectrum_init_c`` (c) and ``orth_weight`` (λ_orth)."""

    spectrum: str = "signed"
    spectrum_init: str = "scaled"
    spectrum_init_c: float = 5.0
    orth_weight: float = 1e-4

    def __post_init__(self) -> None:
        _check_options(self.spectrum, self.spectrum_init, self.spectrum_init_c, self.orth_weight)


@register_model("svda", config_class=SVDAConfig, presets=VIT_PRESETS, default_preset="tiny", vit_compatible=True,
                citation="Arampatzakis et al., Interpretable Vision Transformers in Image Classification via SVDA, "
                         "arXiv:2602.10994 (2026)")
class SVDAVisionTransformer(VisionTransformer):
    """The built-in ViT with :class:`SVDAttention` in every block; ``regularization_loss()`` is the orthonormality
    penalty, which ``xvit train`` adds to the loss."""

    def __init__(self, config: SVDAConfig | None = None, **kwargs: Any) -> None:
        cfg = config if config is not None else SVDAConfig(**kwargs)
        super().__init__(cfg)
        swap_in_svda(self, spectrum=cfg.spectrum, spectrum_init=cfg.spectrum_init,
                     spectrum_init_c=cfg.spectrum_init_c, orth_weight=cfg.orth_weight)

    def no_weight_decay(self) -> set[str]:
        """The spectrum and temperatures: singular-value-like scales that weight decay would shrink (timm's
        convention; ``xvit train`` reads it)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("attn.sigma", "attn.temperature"))}

    def regularization_loss(self) -> Tensor:
        """``λ_orth · L_orth`` summed over blocks and heads (§2.1)."""
        return torch.stack([m.regularization_loss() for m in svda_modules(self)]).sum()
