"""R-Cut: Relationship Weighted Out and Cut (Niu et al., Sensors 24(9):2695, 2024, arXiv:2307.09050;
oniu-uin0/R-Cut ``pytorch_grad_cam/base_cam.py`` (``ncut``), ``score_cam.py``; the Cut is TokenCut's ``ncut``,
YangtaoWANG95/TokenCut ``object_discovery.py``; attribution-methods.md §5.5)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable, Options
from xvit.perturb import Masks, score
from xvit.targets import explained_classes
from xvit.utils.maps import normalise_maps


class ChannelMasks(Masks):
    """R-Out masks built lazily: channel ``d`` of image ``b``'s features ``(B, D, h, w)`` upsampled bilinearly with
    ``align_corners=True`` (the reference's ``nn.UpsamplingBilinear2d``) and min-max normalised over its pixels."""

    def __init__(self, channels: Tensor, size: tuple[int, int]) -> None:
        self.channels = channels
        self.shape = tuple(size)
        self.num_masks = channels.shape[1]

    @property
    def binary(self) -> bool:
        return False

    def rows(self, image: Tensor, index: Tensor) -> Tensor:
        maps = self.channels[image, index][:, None]
        up = F.interpolate(maps, size=self.shape, mode="bilinear", align_corners=True)[:, 0].flatten(1)
        return normalise_maps(up, 1).view(-1, *self.shape)

    def kept_counts(self, batch: int) -> Tensor:
        raise TypeError("R-Out masks are soft; they are not token masks.")


@dataclass
class Cut:
    """Result of :func:`normalized_cut` for a stack of graphs: the sign-fixed Fiedler vector ``(..., N)`` (with
    ``yᵀDy = 1``), the bipartition, the seed token, ``[λ₂, λ₃]`` and whether the graph is degenerate."""

    fiedler: Tensor
    bipartition: Tensor
    seed: Tensor
    eigvals: Tensor
    degenerate: Tensor


def normalized_cut(tokens: Tensor, tau: float, eps: float = 1e-5) -> Cut:
    """TokenCut's normalised cut of tokens ``(..., N, D)``: ``W_ij = 1`` where ``cos(t_i, t_j) > tau`` else ``eps``
    (cosines in float64: one flipped edge changes the cut), ``(D − W) y = λ D y`` solved batched as
    ``eigh(D^{-1/2}(D − W)D^{-1/2})``, ``y = D^{-1/2} z`` for the second-smallest ``λ``; sign rule: the seed
    ``argmax |y|`` lies in the foreground ``y > mean(y)``. Degenerate: every edge above ``tau`` or no eigen-gap
    (``λ₂ = λ₃``): the Fiedler vector is then an arbitrary vector of a repeated eigenvalue."""
    unit = F.normalize(tokens.double(), dim=-1)
    cosine = unit @ unit.transpose(-1, -2)
    affinity = torch.where(cosine > tau, cosine.new_ones(()), cosine.new_full((), eps))
    degree = affinity.sum(-1)
    scale = degree.rsqrt()
    laplacian = (torch.diag_embed(degree) - affinity) * scale[..., :, None] * scale[..., None, :]
    eigvals, eigvecs = torch.linalg.eigh(laplacian)
    y = eigvecs[..., 1] * scale
    bipartition = y > y.mean(-1, keepdim=True)
    seed = y.abs().argmax(-1)
    flip = ~bipartition.gather(-1, seed[..., None])
    y = torch.where(flip, -y, y)
    bipartition = torch.where(flip, ~bipartition, bipartition)
    gap = eigvals[..., 2] - eigvals[..., 1]
    degenerate = (cosine > tau).all(-1).all(-1) | (gap <= 1e-8 * eigvals[..., 2].abs().clamp(min=1))
    return Cut(y, bipartition, seed, eigvals[..., 1:3], degenerate)


def seed_component(cut: Cut, grid: tuple[int, int]) -> Tensor:
    """The 4-connected component of the foreground that holds the seed (TokenCut's ``detect_box``), ``(..., N)``."""
    fore = cut.bipartition.reshape(-1, 1, *grid).float()
    region = F.one_hot(cut.seed.reshape(-1), fore[0].numel()).float().view_as(fore) * fore
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    while True:
        grown = (F.conv2d(region, cross.to(region), padding=1) > 0).float() * fore
        if torch.equal(grown, region):
            return region.view_as(cut.bipartition) > 0
        region = grown


@register_method("rcut", citation="Niu et al., R-Cut: Enhancing Explainability in Vision Transformers with "
                 "Relationship Weighted Out and Cut, Sensors 24(9):2695, 2024, arXiv:2307.09050",
                 passes="F + D x F (+ eigen-solve)")
class RCut(Method):
    """R-Out channel weights ``w`` from masked forwards, class-specific tokens ``t_{i,d} = w_d F_{i,d}`` of the last
    block's LN1 features, then the normalised cut of their cosine graph: ``patch_map = (y)⁺`` of the sign-fixed
    Fiedler vector ``y``.

    The target of R-Cut is the softmax probability ``p_c`` (the reference's ``ClassifierOutputSoftmaxTarget``).

    Args:
        weighting: ``"score_softmax"`` (R-Out: ``w = softmax_d p_c(x ⊙ M_d)``), ``"score_raw"`` (``w_d = p_c(x ⊙
            M_d)``), ``"gradcam"`` (the reference CLI's default: ``w_d = mean_grid ∂p_c/∂F_d``), ``"cosine"``
            (``w_d = cos(f(x ⊙ M_d), f(x))``, ``f`` the logits of the top-5 classes of ``x`` and ``c``).
        output: ``"fiedler"`` (``y⁺``), ``"bipartition"`` (``y > mean y``), ``"seed_component"`` (the foreground
            component holding the seed), ``"base_cam"`` (R-Out alone, ``Σ_d t_{i,d}``, signed, no ReLU as in the
            reference) or ``"ncut"`` (the Cut of the unweighted ``F`` at ``ncut_tau``, class-agnostic).
        tau: graph threshold of the weighted cut.
        ncut_tau: threshold of the unweighted ``ncut`` ablation.
        eps: weight of the edges below the threshold.
        internal_batch_size: masked images per forward pass (16 on a CPU, 48 elsewhere).
    """

    per_target_pass = False
    memory_factor = None  # its passes run internal_batch_size rows at a time
    accelerator_rows = 48
    needs_attention_probs = False
    param_constraints = {"weighting": Options(("score_softmax", "score_raw", "gradcam", "cosine")),
                         "output": Options(("fiedler", "bipartition", "seed_component", "base_cam", "ncut")),
                         "tau": Interval(-1, 1), "ncut_tau": Interval(-1, 1), "eps": Interval(0, 1, closed="right"),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True))}

    def __init__(self, *, weighting: str = "score_softmax", output: str = "fiedler", tau: float = 0.2,
                 ncut_tau: float = 0.25, eps: float = 1e-5, internal_batch_size: int | None = None) -> None:
        super().__init__(weighting=weighting, output=output, tau=tau, ncut_tau=ncut_tau, eps=eps,
                         internal_batch_size=internal_batch_size)

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return self.params["output"] == "base_cam"


    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p, layout = self.params, ctx.layout
        features_module = ctx.adapter.norm1(len(ctx.adapter.blocks()) - 1)
        rec = ctx.record(x, None, modules={"features": features_module})
        logits = rec.logits.float()
        targets = explained_classes(logits, None)[:, None] if targets is None else targets
        features = rec.outputs["features"][:, layout.num_prefix:]  # (B, N, D)
        B, K = targets.shape
        n_forwards = torch.ones(B, dtype=torch.long)
        solve_start = time.perf_counter()
        if p["output"] == "ncut":
            cut = normalized_cut(features, p["ncut_tau"], p["eps"])
            raw = cut.fiedler.clamp(min=0)[:, None].expand(B, K, -1)
            degenerate = cut.degenerate[:, None].expand(B, K)
        else:
            weights, passes = self.channel_weights(ctx, x, features, logits, targets)  # (B, K, D)
            n_forwards += passes
            solve_start = time.perf_counter()
            tokens = weights[:, :, None, :] * features[:, None]  # (B, K, N, D)
            if p["output"] == "base_cam":
                raw = tokens.sum(-1)
                degenerate = torch.zeros(B, K, dtype=torch.bool)
            else:
                cut = normalized_cut(tokens, p["tau"], p["eps"])
                degenerate = cut.degenerate
                if p["output"] == "fiedler":
                    raw = cut.fiedler.clamp(min=0)
                elif p["output"] == "bipartition":
                    raw = cut.bipartition
                else:
                    raw = seed_component(cut, layout.grid)
        solver = torch.full((B,), (time.perf_counter() - solve_start) / B)
        if bool(degenerate.any()):
            warnings.warn(f"rcut: {int(degenerate.sum())} of {degenerate.numel()} token graphs are degenerate (every "
                          "cosine above the threshold, or no eigen-gap), so their cut is arbitrary; see "
                          "meta['degenerate'], or raise tau.", RuntimeWarning, stacklevel=2)
        raw = raw.to(torch.float32).reshape(B * K, *layout.grid)
        return Attribution(raw, logits, targets.reshape(-1),
                           {"degenerate": degenerate.cpu(), "n_forwards": n_forwards, "solver_seconds": solver})

    def channel_weights(self, ctx: Context, x: Tensor, features: Tensor, logits: Tensor,
                        targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, K, D)`` channel weights and the number of extra passes per image."""
        p = self.params
        B, K = targets.shape
        if p["weighting"] == "gradcam":
            grads = []
            for k in range(K):  # the gradient of the probability p_c, one backward per target column
                rec = ctx.record(x, targets[:, k], grads=True, objective=_probability,
                                 modules={"features": ctx.adapter.norm1(len(ctx.adapter.blocks()) - 1)})
                grads.append(rec.output_grads["features"][:, ctx.layout.num_prefix:].mean(1))
            return torch.stack(grads, 1), torch.full((B,), K, dtype=torch.long)
        channels = features.transpose(1, 2).reshape(B, -1, *ctx.layout.grid)  # (B, D, h, w)
        masks = ChannelMasks(channels, tuple(x.shape[-2:]))
        if p["weighting"] == "cosine":
            readout = _cosine_readout(logits)
        else:
            readout = "softmax"
        scores = score(ctx.adapter, x, masks, targets, readout=readout, batch_size=self.rows_per_pass(x))
        weights = scores.softmax(1) if p["weighting"] == "score_softmax" else scores  # (B, D, K)
        return weights.transpose(1, 2), torch.full((B,), masks.num_masks, dtype=torch.long)


def _probability(logits: Tensor, targets: Tensor) -> Tensor:
    return logits.softmax(1).gather(1, targets.view(-1, 1)).squeeze(1)


def _cosine_readout(clean: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-class ``cos(f(masked), f(x))`` with ``f`` the logits of the top-5 classes of ``x`` plus the class;
    ``clean`` holds the logits ``(B, C)`` of every image, and each masked row is compared with its own image's."""
    top = torch.zeros_like(clean, dtype=torch.bool)
    top.scatter_(1, clean.topk(min(5, clean.shape[1]), dim=1).indices, True)

    def readout(masked: Tensor, image: Tensor) -> Tensor:
        masked = masked.float()
        ref = clean[image].to(masked)
        inside = top[image].to(masked.device)
        dot = (masked * ref * inside).sum(1, keepdim=True) + masked * ref * ~inside
        norm_m = (masked.square() * inside).sum(1, keepdim=True) + masked.square() * ~inside
        norm_r = (ref.square() * inside).sum(1, keepdim=True) + ref.square() * ~inside
        return dot / (norm_m * norm_r).sqrt().clamp(min=1e-12)

    return readout
