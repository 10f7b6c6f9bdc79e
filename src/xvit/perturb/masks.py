"""Masks for the perturbation engine: a stack of ``M`` masks, shared by every image or one stack per image.

A mask gives, for every pixel (pixel space) or patch token (token space), the weight of the image: 1 keeps the
image, 0 replaces it by the substrate (pixel space) or removes the token (token space); soft values in between
blend (pixel space only). The engine asks a mask stack for the rows it is about to score, chunk by chunk, so
lazily defined stacks (:class:`RankMasks`: the states of a deletion curve) never materialise all ``B·M`` masks.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

__all__ = ["Masks", "RankMasks", "TensorMasks", "as_masks", "pixel_ranks"]


class Masks(abc.ABC):
    """``num_masks`` masks over a ``shape`` (``(H, W)`` pixels or ``(N,)`` patch tokens)."""

    num_masks: int
    shape: tuple[int, ...]

    @abc.abstractmethod
    def rows(self, image: Tensor, index: Tensor) -> Tensor:
        """Mask ``index[r]`` of image ``image[r]`` for each row ``r``: ``(n, *shape)``, bool or float in [0, 1]."""

    @abc.abstractmethod
    def kept_counts(self, batch: int) -> Tensor:
        """``(batch, num_masks)`` number of entries each mask keeps (binary masks; used to group token rows)."""

    @property
    @abc.abstractmethod
    def binary(self) -> bool:
        """Whether every mask is 0/1 (bool rows)."""


class TensorMasks(Masks):
    """Masks given as a tensor: ``(M, *shape)`` shared by all images or ``(B, M, *shape)`` per image; bool or
    float with values in [0, 1]."""

    def __init__(self, masks: Tensor, batch: int, shape: tuple[int, ...]) -> None:
        shape = tuple(shape)
        if not isinstance(masks, Tensor):
            raise TypeError(f"masks must be a tensor or a Masks object; got {type(masks).__name__}.")
        if masks.ndim == len(shape) + 1 and tuple(masks.shape[1:]) == shape:
            self.per_image = False
        elif masks.ndim == len(shape) + 2 and tuple(masks.shape[2:]) == shape and masks.shape[0] == batch:
            self.per_image = True
        else:
            raise ValueError(f"masks must have shape (M, {', '.join(map(str, shape))}) shared by all images or "
                             f"({batch}, M, {', '.join(map(str, shape))}) per image; got {tuple(masks.shape)}.")
        if masks.dtype != torch.bool:
            if not masks.is_floating_point():
                raise ValueError(f"masks must be bool or float in [0, 1]; got {masks.dtype}.")
            if masks.numel() and (not torch.isfinite(masks).all() or masks.min() < 0 or masks.max() > 1):
                raise ValueError("Soft masks must hold values in [0, 1] (1 keeps the image, 0 the substrate).")
        self.masks = masks
        self.shape = shape
        self.num_masks = masks.shape[1] if self.per_image else masks.shape[0]

    @property
    def binary(self) -> bool:
        return self.masks.dtype == torch.bool

    def rows(self, image: Tensor, index: Tensor) -> Tensor:
        index = index.to(self.masks.device)
        return self.masks[image.to(self.masks.device), index] if self.per_image else self.masks[index]

    def kept_counts(self, batch: int) -> Tensor:
        counts = self.masks.flatten(-len(self.shape)).sum(-1)
        return counts if self.per_image else counts.expand(batch, -1)


class RankMasks(Masks):
    """The states of a deletion or insertion curve, built lazily: state ``k`` of image ``b`` hides the
    ``counts[k]`` entries ranked first by ``ranks[b]`` (``reveal=False``, deletion) or keeps only them
    (``reveal=True``, insertion). Petsiuk et al. 2018 (arXiv:1806.07421); evaluation.md §1–2.

    Args:
        ranks: ``(B, *shape)`` rank of every entry, 0 first (:func:`pixel_ranks`, reshaped; or use
            :meth:`from_scores`).
        counts: ``(S,)`` number of ranked entries changed per state.
        reveal: keep the top-ranked entries instead of hiding them.
    """

    @classmethod
    def from_scores(cls, scores: Tensor, counts: Tensor, *, reveal: bool = False) -> RankMasks:
        """States ranked by ``scores`` ``(B, *shape)``, highest first, ties broken by flat index."""
        return cls(pixel_ranks(scores).view(scores.shape), counts, reveal=reveal)

    def __init__(self, ranks: Tensor, counts: Tensor, *, reveal: bool = False) -> None:
        self.shape = tuple(ranks.shape[1:])
        self.ranks = ranks.flatten(1)
        self.counts = torch.as_tensor(counts, device=ranks.device).long()
        self.reveal = reveal
        self.num_masks = self.counts.numel()

    @property
    def binary(self) -> bool:
        return True

    def rows(self, image: Tensor, index: Tensor) -> Tensor:
        first = self.ranks[image.to(self.ranks.device)] < self.counts[index.to(self.ranks.device), None]
        return (first if self.reveal else ~first).view(-1, *self.shape)

    def kept_counts(self, batch: int) -> Tensor:
        total = self.ranks.shape[1]
        changed = self.counts.clamp(0, total)
        return (changed if self.reveal else total - changed).expand(batch, -1)


def as_masks(masks: Tensor | Masks, batch: int, shape: tuple[int, ...]) -> Masks:
    """``masks`` as a :class:`Masks` stack over ``shape``, validated against ``batch`` images."""
    if isinstance(masks, Masks):
        if tuple(masks.shape) != tuple(shape):
            raise ValueError(f"masks are over {tuple(masks.shape)} but the input needs {tuple(shape)}.")
        return masks
    return TensorMasks(masks, batch, shape)


def pixel_ranks(maps: Tensor) -> Tensor:
    """Rank of every entry, 0 for the most relevant: stable sort on (−value, flat index) (evaluation.md §0).

    Args:
        maps: ``(B, ...)`` (``(B, H, W)`` pixel maps or ``(B, N)`` token scores).

    Returns:
        ``(B, P)`` long tensor over the flattened entries; a state that changes ``n`` entries changes entry
        ``p`` of image ``b`` iff ``ranks[b, p] < n``.
    """
    order = torch.sort(-maps.flatten(1), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks
