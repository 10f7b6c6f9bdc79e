"""RISE: randomized input sampling (Petsiuk, Das & Saenko, BMVC 2018, arXiv:1806.07421)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.methods._masked import TensorOrNone, clean_pass, pass_counts
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable
from xvit.perturb import Masks, as_masks, score


class RiseMasks(Masks):
    """RISE's masks, built lazily chunk by chunk (eclique/RISE ``generate_masks``): a binary ``s × s`` grid with
    ``P(1) = p1``, upsampled bilinearly to ``(s + 1)·c`` with cell ``c = ⌈H/s⌉`` per axis, then cropped to ``H × W``
    at a random shift in ``[0, c)²``. Only the grids and shifts are stored, so memory does not grow with ``H·W``."""

    def __init__(self, n_masks: int, grid_size: int, p1: float, shape: tuple[int, int], seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.shape = tuple(shape)
        self.num_masks = n_masks
        self.cell = tuple(math.ceil(side / grid_size) for side in shape)
        self.grids = torch.rand(n_masks, grid_size, grid_size, generator=gen) < p1
        self.shifts = torch.stack([torch.randint(0, c, (n_masks,), generator=gen) for c in self.cell], 1)
        self.up = tuple((grid_size + 1) * c for c in self.cell)

    @property
    def binary(self) -> bool:
        return False

    def rows(self, image: Tensor, index: Tensor) -> Tensor:
        index = index.cpu()
        up = F.interpolate(self.grids[index, None].float(), size=self.up, mode="bilinear", align_corners=False)[:, 0]
        up = up.clamp_(0, 1)  # rounding may exceed 1 by an ulp
        (h, w), shifts = self.shape, self.shifts[index]
        rows = torch.arange(h)[None] + shifts[:, :1]
        cols = torch.arange(w)[None] + shifts[:, 1:]
        return up[torch.arange(len(index))[:, None, None], rows[:, :, None], cols[:, None, :]]

    def kept_counts(self, batch: int) -> Tensor:
        raise TypeError("RISE masks are soft; they are not token masks.")


@register_method("rise", citation="Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of "
                 "Black-box Models, BMVC 2018, arXiv:1806.07421", passes="n_masks x F")
class Rise(Method):
    """``S_c = (1 / (N_m·p1)) Σ_i p_c(x ⊙ M_i) · M_i`` over random smooth masks (Petsiuk et al. 2018, Eq. 6),
    masked pixels filled with normalised 0 (the mean colour); every class is scored from the same passes.

    Args:
        n_masks: number of masks ``N_m`` (4000 in the ViT harness of Englebert et al.).
        grid_size: cells per side ``s`` of the random grid.
        p1: probability that a cell is kept.
        internal_batch_size: masked images per forward pass (the memory bound; 16 on a CPU, 128 elsewhere).
        seed: seed of the masks; they depend only on ``(seed, H, W)`` and are shared by every image.
        masks: ``(M, H, W)`` masks in ``[0, 1]`` to use instead (1 keeps the pixel); the map is still divided by
            ``M·p1``.
    """

    resolution = "pixels"
    per_target_pass = False
    memory_factor = None  # its passes run internal_batch_size rows at a time
    accelerator_rows = 128
    needs_attention_probs = False
    param_constraints = {"n_masks": Interval(1, None, integer=True), "grid_size": Interval(1, None, integer=True),
                         "p1": Interval(0, 1, closed="right"),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True)),
                         "seed": Interval(0, None, integer=True), "masks": TensorOrNone()}

    def __init__(self, *, n_masks: int = 4000, grid_size: int = 8, p1: float = 0.1,
                 internal_batch_size: int | None = None, seed: int = 0, masks: Tensor | None = None) -> None:
        super().__init__(n_masks=n_masks, grid_size=grid_size, p1=p1, internal_batch_size=internal_batch_size,
                         seed=seed, masks=masks)


    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p = self.params
        logits, targets = clean_pass(ctx, x, targets)
        shape = tuple(x.shape[-2:])
        if p["masks"] is None:
            masks: Masks = RiseMasks(p["n_masks"], p["grid_size"], p["p1"], shape, p["seed"])
        else:
            masks = as_masks(p["masks"], x.shape[0], shape)
            if getattr(masks, "per_image", False):
                raise ValueError("rise takes masks (M, H, W) shared by every image of the batch.")
        scores = score(ctx.adapter, x, masks, targets, substrate="mean", readout="softmax",
                       batch_size=self.rows_per_pass(x))  # (B, M, K)
        saliency = x.new_zeros(x.shape[0], targets.shape[1], *shape, dtype=torch.float32)
        everyone = torch.zeros(1, dtype=torch.long)
        for index in torch.arange(masks.num_masks).split(self.rows_per_pass(x)):
            chunk = masks.rows(everyone.expand(len(index)), index).to(x.device, torch.float32)
            saliency += torch.einsum("bmk,mhw->bkhw", scores[:, index.to(x.device)], chunk)
        saliency /= masks.num_masks * p["p1"]
        return Attribution(saliency.flatten(0, 1), logits, targets.reshape(-1),
                           pass_counts(x.shape[0], masks.num_masks))
