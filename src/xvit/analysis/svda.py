"""SVDA's six interpretability indicators per block and head (Arampatzakis et al., Interpretable Vision Transformers
in Image Classification via SVDA, arXiv:2602.10994, 2026), on SVDA models and on any supported ViT; readings of
analysis-methods.md §2.2 (``svda-ind-p1``: the papers give names, not formulas).

Parameter-only (no data): 1 spectral entropy ``H/log r`` of the energy ``p_k = σ_k²/Σσ²``, 2 effective rank
``exp(H)``, 3 spectral sparsity (Hoyer ``(√r − ‖a‖₁/‖a‖₂)/(√r − 1)`` of ``a = |σ|``). On an SVDA model ``σ`` is
the learned spectrum; on a plain ViT the top-``r`` singular values of the head's bilinear form ``W_Q^h W_K^hᵀ``.
On a probe batch: 4 angular alignment ``mean_i Σ_j A_ij q̂_iᵀk̂_j``, 5 selectivity ``mean_i 1 − H(A_i·)/log T``,
6 perturbation robustness ``1 − E‖A' − A‖_F/‖A‖_F`` — with input noise (every model; comparable across arms) and,
on SVDA models, with spectrum noise ``δ_k ~ N(0, (η|σ_k|)²)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from xvit.adapters.base import ViTAdapter
from xvit.analysis.base import Analysis, AnalysisResult, register_analysis
from xvit.methods.base import Context
from xvit.models.svda import unit_rows
from xvit.params import Interval, Options
from xvit.relevance import COMPOSITES, vit_graph

__all__ = ["SVDAIndicators", "spectral_indicators", "spectra", "layer_summary", "INDICATORS", "DEFINITION_VERSION"]

DEFINITION_VERSION = "svda-ind-p1"
PARAMETER_INDICATORS = ("spectral_entropy", "effective_rank", "spectral_sparsity")
DATA_INDICATORS = ("angular_alignment", "selectivity", "robustness_input")
INDICATORS = PARAMETER_INDICATORS + DATA_INDICATORS + ("robustness_spectrum",)
"""Tensor names of the indicators; ``robustness_spectrum`` exists on SVDA models only."""


def spectra(adapter: ViTAdapter) -> Tensor:
    """``(L, H, r)`` spectrum magnitudes ``a = |σ|`` per block and head: SVDA's learned spectrum, or the top-``r``
    singular values of ``W_Q^h W_K^hᵀ`` (computed as those of ``R_Q R_Kᵀ`` from QR factors) on a plain ViT."""
    out = []
    for i in range(len(adapter.blocks())):
        p = adapter.block_parts(i)
        if p.spectrum is not None:
            out.append(p.spectrum.detach().abs().float())
            continue
        H = p.num_heads
        w = p.qkv_weight.detach().double()
        r = w.shape[0] // 3 // H
        wq = w[: H * r].reshape(H, r, -1).transpose(1, 2)  # (H, D, r): the D×r per-head projections
        wk = w[H * r: 2 * H * r].reshape(H, r, -1).transpose(1, 2)
        rq, rk = torch.linalg.qr(wq).R, torch.linalg.qr(wk).R
        out.append(torch.linalg.svdvals(rq @ rk.transpose(1, 2)).float())
    return torch.stack(out)


def spectral_indicators(a: Tensor, energy: str = "sigma2") -> dict[str, Tensor]:
    """Indicators 1–3 of a spectrum ``(..., r)`` through its magnitudes ``a = |σ|``: ``spectral_entropy``
    (``H/log r`` of ``p``, ``p_k = a_k²/Σa²``, or ``a_k/Σa`` with ``energy="abs"``), ``effective_rank`` ``exp(H)``,
    ``spectral_sparsity`` (Hoyer) and ``spectral_sparsity_fraction`` (share of ``a_k < 0.05·max a``). An all-zero
    spectrum gives NaN."""
    a = a.double().abs()
    r = a.shape[-1]
    e = a.pow(2) if energy == "sigma2" else a
    total = e.sum(-1, keepdim=True)
    p = e / total
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    h = -plogp.sum(-1)
    h = torch.where(total[..., 0] > 0, h, torch.full_like(h, math.nan))
    ratio = a.sum(-1) / a.norm(dim=-1)
    hoyer = (math.sqrt(r) - ratio) / (math.sqrt(r) - 1) if r > 1 else torch.zeros_like(ratio)
    small = (a < 0.05 * a.amax(-1, keepdim=True)).double().mean(-1)
    return {"spectral_entropy": (h / math.log(r) if r > 1 else torch.zeros_like(h)).float(),
            "effective_rank": h.exp().float(), "spectral_sparsity": hoyer.float(),
            "spectral_sparsity_fraction": small.float()}


def _attention(q: Tensor, k: Tensor, scale: float, spectrum: Tensor | None) -> Tensor:
    """``(B, H, T, T)`` probabilities of plain (``spectrum`` None) or SVD-inspired attention from raw ``q``, ``k``."""
    if spectrum is not None:
        q, k = unit_rows(q) * spectrum[..., None, :], unit_rows(k)
    return ((q * scale) @ k.transpose(-2, -1)).softmax(-1)


def _relative_change(a: Tensor, ref: Tensor) -> Tensor:
    """``‖a − ref‖_F/‖ref‖_F`` over the last two dimensions."""
    return (a - ref).flatten(-2).norm(dim=-1) / ref.flatten(-2).norm(dim=-1).clamp_min(1e-12)


@register_analysis("svda", citation="Arampatzakis et al., Interpretable Vision Transformers in Image Classification "
                   "via SVDA, arXiv:2602.10994 (2026): six indicators; reading svda-ind-p1 (analysis-methods.md §2.2)",
                   cost="(1 + draws)·F")
class SVDAIndicators(Analysis):
    """SVDA's six indicators per block and head: spectral entropy, effective rank, spectral sparsity (parameters
    only) and angular alignment, selectivity, perturbation robustness (on the batch); see the module docstring.

    Tensors: ``spectral_entropy``, ``effective_rank``, ``spectral_sparsity``, ``spectral_sparsity_fraction``
    ``(L, H)``; ``angular_alignment``, ``selectivity``, ``robustness_input`` and, on SVDA models,
    ``robustness_spectrum`` ``(B, L, H)`` per image (means over its query tokens and the ``draws``); ``spectrum``
    ``(L, H, r)`` the magnitudes ``a``; ``layer_mean`` and ``layer_std`` ``(I, L)``: each indicator (in
    ``meta["indicators"]`` order, data ones averaged over the batch) as mean and std over heads.

    Args:
        eta: relative noise scale ``η`` of the perturbations (§2.2: 0.1).
        draws: noise draws per perturbation (§2.2: 8).
        energy: ``sigma2`` (``p_k ∝ σ_k²``, default) or ``abs`` (``p_k ∝ |σ_k|``).
        seed: seed of the noise; the same noise is used for every image, so results are batch invariant.
    """

    definition_version = DEFINITION_VERSION
    param_constraints = {"eta": Interval(0, None, closed="neither"), "draws": Interval(1, None, integer=True),
                         "energy": Options(("sigma2", "abs")), "seed": Interval(0, None, integer=True)}

    def __init__(self, *, eta: float = 0.1, draws: int = 8, energy: str = "sigma2", seed: int = 0) -> None:
        super().__init__(eta=eta, draws=draws, energy=energy, seed=seed)

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        p = self.params
        adapter = ctx.adapter
        depth = len(adapter.blocks())
        plain = COMPOSITES.get("gradient")()
        gen = torch.Generator().manual_seed(p["seed"])
        spec = spectra(adapter)
        tensors: dict[str, Tensor] = dict(spectral_indicators(spec, p["energy"]))
        is_svda = all(adapter.block_parts(i).spectrum is not None for i in range(depth))
        with torch.no_grad():
            e = vit_graph(adapter, plain, x=x, stop=0)  # (B, T, D): block 1's input
            B, T, D = e.shape
            xi = torch.randn(p["draws"], T, D, generator=gen).to(e)
            noise = p["eta"] * e.norm(dim=-1, keepdim=True)[None] * xi[:, None] / math.sqrt(D)  # (draws, B, T, D)
            z, noisy = e, (e[None] + noise).flatten(0, 1)
            align, select, rob_in, rob_sigma = [], [], [], []
            for i in range(depth):
                parts = adapter.block_parts(i)
                H = parts.num_heads
                qkv = F.linear(parts.norm1(z), parts.qkv_weight, parts.qkv_bias)
                q, k, _ = qkv.reshape(B, T, 3, H, -1).permute(2, 0, 3, 1, 4).unbind(0)
                sigma = None if parts.spectrum is None else parts.spectrum.detach()
                attn = _attention(q, k, parts.scale, sigma)  # (B, H, T, T)
                cos = unit_rows(q) @ unit_rows(k).transpose(-2, -1)
                align.append((attn * cos).sum(-1).mean(-1))
                ent = -(attn * attn.clamp_min(1e-30).log()).sum(-1)
                select.append((1 - ent / math.log(T)).mean(-1))
                if sigma is not None:
                    delta = torch.randn(p["draws"], *sigma.shape, generator=gen).to(sigma) * p["eta"] * sigma.abs()
                    moved = torch.stack([_attention(q, k, parts.scale, sigma + d) for d in delta])
                    rob_sigma.append(1 - _relative_change(moved, attn[None]).mean(0))
                got: list[Tensor] = []
                z = vit_graph(adapter, plain, z=z, start=i, stop=i + 1)
                noisy = vit_graph(adapter, plain, z=noisy, start=i, stop=i + 1, attn_out=got)
                moved = got[0].view(p["draws"], B, *got[0].shape[1:])
                rob_in.append(1 - _relative_change(moved, attn[None]).mean(0))
        tensors["angular_alignment"] = torch.stack(align, 1).float()
        tensors["selectivity"] = torch.stack(select, 1).float()
        tensors["robustness_input"] = torch.stack(rob_in, 1).float()
        if is_svda:
            tensors["robustness_spectrum"] = torch.stack(rob_sigma, 1).float()
        names = [n for n in INDICATORS if n in tensors]
        tensors.update(_layer_stats(tensors, names))
        tensors["spectrum"] = spec
        return tensors, {"indicators": names, "svda": is_svda, "tokens": T, "images": B,
                         "spectrum_source": "learned SVDA spectrum" if is_svda else "singular values of W_Q^h W_K^hᵀ"}

    @classmethod
    def merge(cls, results: list[AnalysisResult]) -> AnalysisResult:
        """One result for several batches of a data set (``xvit analyse svda DATA``): per-image indicators
        concatenated, the layer statistics recomputed over all images."""
        first = results[0]
        tensors = dict(first.tensors)
        for name in (*DATA_INDICATORS, "robustness_spectrum"):
            if name in first.tensors:
                tensors[name] = torch.cat([r.tensors[name] for r in results])
        tensors.update(_layer_stats(tensors, first.meta["indicators"]))
        return AnalysisResult(first.name, tensors, first.params,
                              {**first.meta, "images": sum(r.meta["images"] for r in results)})

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        return plot_layer_curves({name: (result.tensors["layer_mean"][i], result.tensors["layer_std"][i])
                                  for i, name in enumerate(result.meta["indicators"])},
                                 title="SVDA indicators (mean ± std over heads)")


def _layer_stats(tensors: dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    """``layer_mean``/``layer_std`` ``(I, L)``: each indicator's mean and std over heads (data ones averaged over
    the images first)."""
    per_head = [tensors[n] if tensors[n].ndim == 2 else tensors[n].mean(0) for n in names]
    return {"layer_mean": torch.stack([t.mean(-1) for t in per_head]),
            "layer_std": torch.stack([t.std(-1, unbiased=False) for t in per_head])}


def layer_summary(result: AnalysisResult) -> dict[str, tuple[Tensor, Tensor]]:
    """Indicator name -> ``(mean, std)`` over heads, each ``(L,)``, from a ``svda`` analysis result."""
    return {name: (result.tensors["layer_mean"][i], result.tensors["layer_std"][i])
            for i, name in enumerate(result.meta["indicators"])}


def plot_layer_curves(curves: dict[str, tuple[Tensor, Tensor]], title: str) -> Figure:
    """One panel per indicator: value per block with a ± std band over heads."""
    names = list(curves)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.6 * rows), layout="constrained")
    for n, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, n + 1)
        mean, std = (t.float().numpy() for t in curves[name])
        blocks = range(len(mean))
        ax.plot(blocks, mean, marker="o", ms=3)
        ax.fill_between(blocks, mean - std, mean + std, alpha=0.25)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("block", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
