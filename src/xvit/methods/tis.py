"""Transformer Input Sampling (Englebert et al., ICCV 2023 workshops, arXiv:2304.00621;
aenglebert/Transformer_Input_Sampling ``tis/tis.py``; attribution-methods.md §5.4)."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from xvit.adapters.base import UnsupportedModelError
from xvit.methods._masked import TensorOrNone, clean_pass
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable
from xvit.perturb import score
from xvit.targets import explained_classes


def kmeans(points: Tensor, n_clusters: int, generator: torch.Generator, max_iter: int = 100,
           tol: float = 1e-4) -> Tensor:
    """Lloyd's k-means (Euclidean) on ``points`` ``(P, N)``: ``(n_clusters, N)`` centroids. The initial centroids
    are distinct points drawn with ``generator`` (as fast-pytorch-kmeans draws them); an empty cluster keeps its
    centroid; the loop stops when no centroid moves more than ``tol``."""
    start = torch.randperm(points.shape[0], generator=generator)[:n_clusters].to(points.device)
    centroids = points[start].clone()
    for _ in range(max_iter):
        assign = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters)[:, None]
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        shift = (moved - centroids).norm(dim=1).max()
        centroids = moved
        if shift <= tol:
            break
    return centroids


def block_output_vectors(ctx: Context, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward that gives the logits ``(B, C)`` and the vectors TIS clusters: every block's output
    concatenated over the width, prefix tokens dropped and transposed, ``(B, L·D, N)``."""
    blocks = ctx.adapter.blocks()
    rec = ctx.record(x, None, modules={str(i): block for i, block in enumerate(blocks)})
    states = [out[0] if isinstance(out, tuple) else out for out in rec.outputs.values()]
    return rec.logits.float(), torch.cat(states, -1)[:, ctx.layout.num_prefix:].transpose(1, 2).float()


@register_method("tis", citation="Englebert, Stassin, Nanfack, Mahmoudi, Siebert, Cornu & De Vleeschouwer, "
                 "Explaining through Transformer Input Sampling, ICCV 2023 workshops, arXiv:2304.00621",
                 passes="F + n_masks x short F")
class TransformerInputSampling(Method):
    """Token-subset masks from k-means centroids of the block outputs, scored by removing the other tokens:
    ``patch_map = Σ_k p_c(x | m_k) m_k / Σ_k m_k`` (coverage-corrected; the reference then min-max normalises).

    The ``L·D`` columns of the concatenated block outputs (prefix tokens dropped) are clustered into ``n_masks``
    centroids over the ``N`` patch tokens; mask ``m_k`` keeps the top ``⌊tokens_ratio·N⌋`` tokens of centroid ``k``
    and the prefix tokens, removed after the position embedding (:meth:`~xvit.adapters.ViTAdapter.forward_tokens`).

    Args:
        n_masks: number of masks; capped at ``L·D`` (the number of clustered vectors), flagged in
            ``meta["n_masks_capped"]``.
        tokens_ratio: share of patch tokens each mask keeps.
        internal_batch_size: masked sequences per forward pass (16 on a CPU, 128 elsewhere).
        seed: seed of the k-means initialisation (each image its own generator).
        masks: ``(M, N)`` shared or ``(B, M, N)`` per-image bool token masks (True keeps the token) to use instead
            of the clustered ones.
    """

    per_target_pass = False
    memory_factor = None  # its passes run internal_batch_size rows at a time
    accelerator_rows = 128
    needs_attention_probs = False
    param_constraints = {"n_masks": Interval(1, None, integer=True),
                         "tokens_ratio": Interval(0, 1, closed="right"),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True)),
                         "seed": Interval(0, None, integer=True),
                         "masks": TensorOrNone()}

    def __init__(self, *, n_masks: int = 1024, tokens_ratio: float = 0.5, internal_batch_size: int | None = None,
                 seed: int = 0, masks: Tensor | None = None) -> None:
        super().__init__(n_masks=n_masks, tokens_ratio=tokens_ratio, internal_batch_size=internal_batch_size,
                         seed=seed, masks=masks)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p, layout = self.params, ctx.layout
        B = x.shape[0]
        capped = torch.zeros(B, dtype=torch.bool)
        solver = torch.zeros(B)
        if p["masks"] is None:  # the clean pass also records the block outputs to cluster
            logits, points = block_output_vectors(ctx, x)
            targets = explained_classes(logits, None)[:, None] if targets is None else targets
            masks, was_capped, solver[:] = self._sample_masks(points)
            capped[:] = was_capped
        else:
            logits, targets = clean_pass(ctx, x, targets)
            masks = p["masks"].to(x.device)
        try:
            scores = score(ctx.adapter, x, masks, targets, space="token", readout="softmax",
                           batch_size=self.rows_per_pass(x))  # (B, M, K)
        except UnsupportedModelError as error:
            raise UnsupportedModelError(f"tis cannot run on this model: {error}") from error
        per_image = masks if masks.ndim == 3 else masks.expand(x.shape[0], -1, -1)
        weights = per_image.float()
        total = torch.einsum("bmk,bmn->bkn", scores, weights)
        coverage = weights.sum(1)[:, None]
        raw = torch.where(coverage > 0, total / coverage.clamp(min=1), torch.zeros_like(total))
        n_masks = per_image.shape[1]
        extras = {"n_masks": torch.full((B,), n_masks), "n_forwards": torch.full((B,), 1),
                  "n_short_forwards": torch.full((B,), n_masks),
                  "short_tokens": layout.num_prefix + per_image.sum(-1).float().mean(-1),
                  "n_masks_capped": capped, "solver_seconds": solver}
        return Attribution(raw.reshape(-1, *layout.grid), logits, targets.reshape(-1), extras)

    def _sample_masks(self, points: Tensor) -> tuple[Tensor, bool, float]:
        """``(B, M, N)`` top-``k`` masks of the k-means centroids of every image's ``(L·D, N)`` block-output
        vectors, whether ``n_masks`` was capped, and the seconds per image spent in k-means."""
        p = self.params
        n_masks = min(p["n_masks"], points.shape[1])
        keep = max(1, math.floor(p["tokens_ratio"] * points.shape[2]))
        masks = []
        start = time.perf_counter()
        for image in points:
            centroids = kmeans(image, n_masks, torch.Generator().manual_seed(p["seed"]))
            top = centroids.topk(keep, dim=1).indices
            masks.append(torch.zeros_like(centroids, dtype=torch.bool).scatter_(1, top, True))
        return torch.stack(masks), n_masks < p["n_masks"], (time.perf_counter() - start) / len(points)
