"""ViT-CX: causal explanation from clustered feature masks (Xie, Li, Cao & Zhang, IJCAI 2023, arXiv:2211.03064;
vaynexie/CausalX-ViT ``ViT_CX.py``, ``causal_score.py``; attribution-methods.md §5.3)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable
from xvit.perturb import GaussianNoise, score
from xvit.targets import explained_classes
from xvit.utils.maps import normalise_maps


def cosine_distance(rows: Tensor) -> Tensor:
    """``1 − cos`` between the rows of ``(D, P)`` (a zero row has similarity 0), ``(D, D)``."""
    unit = F.normalize(rows.double(), dim=1)
    return 1 - unit @ unit.T


def cluster_labels(distance: Tensor, threshold: float) -> np.ndarray:
    """Complete-linkage agglomerative clustering of a precomputed distance matrix cut at ``threshold``."""
    from sklearn.cluster import AgglomerativeClustering

    clustering = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, metric="precomputed",
                                         linkage="complete")
    return clustering.fit_predict(distance.cpu().numpy())


@register_method("vit_cx", citation="Xie, Li, Cao & Zhang, ViT-CX: Causal Explanation of Vision Transformers, "
                 "IJCAI 2023, arXiv:2211.03064", passes="F + 2 x n_clusters x F")
class ViTCX(Method):
    """Masks from the last block's LN1 features, clustered, scored with the causal score
    ``s_k = p_c(x⊙M_k + ε_k⊙(1−M_k)) − p_c(x + ε_k⊙(1−M_k)) + p_c(x)``;
    ``raw = (1/K) Σ_k s_k M_k / Σ_j M_j`` (pixel-wise coverage), not normalised, as the reference returns it.

    Each feature channel of ``LN1(Z^(L−1))`` (prefix tokens dropped) is upsampled bilinearly to the input and
    min-max normalised; channels are clustered (complete linkage on ``1 − cos``, cut at ``distance_threshold``);
    each cluster's channels are summed and min-max normalised into a mask ``M_k``.

    Args:
        distance_threshold: cut of the dendrogram.
        sigma: std of the noise ``ε_k`` in normalised units (0.1 in the paper); with 0 the second term is
            ``p_c(x)`` and its passes are skipped.
        internal_batch_size: masked images per forward pass (16 on a CPU, 50 elsewhere).
        seed: seed of the noise (one draw per mask).
    """

    resolution = "pixels"
    per_target_pass = False
    memory_factor = None  # its passes run internal_batch_size rows at a time
    accelerator_rows = 50
    needs_attention_probs = False
    param_constraints = {"distance_threshold": Interval(0, None, closed="neither"), "sigma": Interval(0, None),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True)),
                         "seed": Interval(0, None, integer=True)}

    def __init__(self, *, distance_threshold: float = 0.1, sigma: float = 0.1, internal_batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(distance_threshold=distance_threshold, sigma=sigma, internal_batch_size=internal_batch_size,
                         seed=seed)


    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p = self.params
        last = len(ctx.adapter.blocks()) - 1
        rec = ctx.record(x, None, modules={"features": ctx.adapter.norm1(last)})
        logits = rec.logits.float()
        targets = explained_classes(logits, None)[:, None] if targets is None else targets
        clean = logits.softmax(1).gather(1, targets)  # (B, K)
        maps, clusters, solver = [], [], []
        for b, features in enumerate(rec.outputs["features"]):
            start = time.perf_counter()
            masks = self.cluster_masks(ctx, features, tuple(x.shape[-2:]))
            solver.append(time.perf_counter() - start)
            masked = score(ctx.adapter, x[b:b + 1], masks, targets[b:b + 1], batch_size=self.rows_per_pass(x),
                           substrate=GaussianNoise(p["sigma"], seed=p["seed"]))[0]  # (M, K)
            if p["sigma"] > 0:
                noisy = score(ctx.adapter, x[b:b + 1], masks, targets[b:b + 1], batch_size=self.rows_per_pass(x),
                              substrate=GaussianNoise(p["sigma"], additive=True, seed=p["seed"]))[0]
                causal = masked - noisy + clean[b]
            else:
                causal = masked
            coverage = masks.sum(0)
            sal = torch.einsum("mk,mhw->khw", causal, masks) / coverage.clamp(min=torch.finfo(masks.dtype).tiny)
            maps.append(sal / masks.shape[0])
            clusters.append(masks.shape[0])
        n = torch.tensor(clusters)
        extras = {"n_clusters": n, "n_masks": n, "n_forwards": 1 + n * (2 if p["sigma"] > 0 else 1),
                  "solver_seconds": torch.tensor(solver)}
        return Attribution(torch.cat(maps), logits, targets.reshape(-1), extras)

    def cluster_masks(self, ctx: Context, features: Tensor, size: tuple[int, int]) -> Tensor:
        """``(K, H, W)`` cluster masks of one image's features ``(T, D)``."""
        grid = ctx.layout.tokens_to_grid(features.T.float())  # (D, h, w)
        channels = normalise_maps(F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0]
                                  .flatten(1), 1)
        labels = torch.as_tensor(cluster_labels(cosine_distance(channels), self.params["distance_threshold"]),
                                 device=channels.device)
        sums = channels.new_zeros(int(labels.max()) + 1, channels.shape[1])
        sums.index_add_(0, labels, channels)
        return normalise_maps(sums, 1).view(-1, *size)
