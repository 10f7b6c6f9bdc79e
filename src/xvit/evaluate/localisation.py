"""Localisation of maps against ground-truth masks: pointing game, energy pointing game, class sensitivity
(evaluation.md §4), and the share of a map on a spurious marker (the spurious-marker audit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.evaluate.base import (
    Metric,
    MetricResult,
    check_classes,
    check_maps,
    check_masks,
    register_metric,
    summarize,
)
from xvit.evaluate.inputs import MetricInput, energy_maps
from xvit.params import Interval, Nullable, Options
from xvit.utils.maps import normalise_maps

__all__ = [
    "ClassSensitivity",
    "EnergyPointingGame",
    "MarkerShare",
    "PointingGame",
    "class_sensitivity",
    "energy_pointing_game",
    "marker_share",
    "pointing_game",
]


def _excluded(masks: Tensor, max_overlap: float | None) -> Tensor:
    """Images with an empty mask, or whose mask covers at least ``max_overlap`` of the image (TIS rule)."""
    area = masks.flatten(1).float().mean(1)
    out = area == 0
    return out | (area >= max_overlap) if max_overlap is not None else out


def _energy(maps: Tensor, normalise: bool) -> Tensor:
    """``|map|`` (no-op for non-negative maps), min-max normalised per image if ``normalise``; ``(B, HW)``."""
    m = maps.abs().float().flatten(1)
    return normalise_maps(m, 1) if normalise else m


@register_metric("pointing_game", citation="Zhang et al., Top-down Neural Attention by Excitation Backprop, "
                 "ECCV 2016, arXiv:1608.00507")
class PointingGame(Metric):
    """Pointing game (Zhang et al. 2016, arXiv:1608.00507; TorchRay ``pointing_game.py``; evaluation.md §4).

    A hit when the disc of radius ``tol`` (pixels at Euclidean distance ``< tol``; ``tol = 0`` is the pixel
    itself) around any maximal pixel of the map touches the mask of the explained class (Quantus semantics
    for ties). Per-class accuracy ``hits / (hits + misses)``, averaged over classes. Images with an empty
    mask, or a mask covering ``≥ max_overlap`` of the image, are excluded (NaN score). The TIS preset is
    ``tol=0, max_overlap=0.5`` read from ``summary["image_mean"]`` (it takes the first argmax only; the two
    differ only on ties).

    Args:
        tol: disc radius in pixels (default 15).
        max_overlap: exclusion threshold on the mask's area fraction, or ``None`` for no exclusion.

    ``compute()``: ``value`` = per-class mean; ``scores`` per-image hit (1/0/NaN); ``summary`` has
    ``class_mean``, ``image_mean`` and ``excluded``; ``per_image["classes"]``.
    """

    higher_is_better = True
    requires = frozenset({"masks"})
    display = ("class_mean", "excluded")
    unit = "hit rate [0-1]"
    param_constraints = {
        "tol": Interval(0, None),
        "max_overlap": Nullable(Interval(0, 1, closed="right")),
    }

    def __init__(self, *, tol: float = 15, max_overlap: float | None = None) -> None:
        super().__init__(tol=tol, max_overlap=max_overlap)

    def update(self, maps: Tensor, masks: Tensor, targets: Tensor) -> None:
        """Score one batch.

        Args:
            maps: ``(B, H, W)`` maps at input resolution.
            masks: ``(B, H, W)`` bool masks of the explained class (union of its boxes or segments).
            targets: ``(B,)`` explained classes, for the per-class mean.
        """
        check_maps(maps)
        check_masks(masks, tuple(maps.shape))
        check_classes(targets, maps.shape[0], "targets")
        masks = masks.to(maps.device)
        r = max(math.ceil(self.tol) - 1, 0)  # |offset| < tol in each axis
        d = torch.arange(-r, r + 1, device=maps.device)
        dist2 = d[:, None] ** 2 + d[None, :] ** 2
        disc = ((dist2 < self.tol**2) | (dist2 == 0)).float()
        # Dilating the mask by the disc and testing the maxima = testing each maximum's disc against the mask.
        near = F.conv2d(masks.float()[:, None], disc[None, None], padding=r)[:, 0] > 0.5
        flat = maps.flatten(1)
        is_max = flat == flat.max(1, keepdim=True).values
        hits = (is_max & near.flatten(1)).any(1).float()
        hits[_excluded(masks, self.max_overlap)] = math.nan
        self._append(hits=hits, classes=targets.to(maps.device))

    def update_from(self, inp: MetricInput) -> None:
        """The run's maps against the mask of the explained class."""
        self.update(inp.maps, inp.masks, inp.targets)

    def compute(self) -> MetricResult:
        hits, classes = self._cat("hits").cpu(), self._cat("classes").cpu()
        valid = torch.isfinite(hits)
        counts = torch.bincount(classes[valid])
        sums = torch.bincount(classes[valid], weights=hits[valid].double())
        present = counts > 0
        class_mean = float((sums[present] / counts[present]).mean()) if present.any() else math.nan
        summary = {"class_mean": class_mean, "image_mean": summarize(hits)["mean"],
                   "excluded": int((~valid).sum())}
        return self._result(hits, value=class_mean, summary=summary, per_image={"classes": classes})


@register_metric("energy_pointing_game", citation="Wang et al., Score-CAM, CVPR Workshops 2020, arXiv:1910.01279")
class EnergyPointingGame(Metric):
    """Energy-based pointing game (Wang et al., Score-CAM, 2020, arXiv:1910.01279; evaluation.md §4).

    ``E = Σ_{p ∈ mask} m(p) / Σ_p m(p)`` with ``m = |map|`` min-max normalised per image (``normalise=False``
    keeps ``|map|``, as the TIS harness does). Images with an empty mask, a mask covering ``≥ max_overlap`` of
    the image, or a zero map are excluded (NaN).

    Args:
        normalise: min-max normalise ``|map|`` per image first.
        max_overlap: exclusion threshold on the mask's area fraction (default 0.5), or ``None``.

    ``compute()``: ``value`` = ``scores.mean()`` over included images.
    """

    higher_is_better = True
    requires = frozenset({"masks"})
    unit = "share [0-1]"
    param_constraints = {
        "normalise": Options((True, False)),
        "max_overlap": Nullable(Interval(0, 1, closed="right")),
    }

    def __init__(self, *, normalise: bool = True, max_overlap: float | None = 0.5) -> None:
        super().__init__(normalise=normalise, max_overlap=max_overlap)

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Score one batch: ``maps`` ``(B, H, W)``, ``masks`` ``(B, H, W)`` bool."""
        check_maps(maps)
        check_masks(masks, tuple(maps.shape))
        masks = masks.to(maps.device)
        m = _energy(maps, self.normalise)
        total = m.sum(1)
        e = (m * masks.flatten(1)).sum(1) / total.clamp(min=torch.finfo(m.dtype).tiny)
        e[_excluded(masks, self.max_overlap) | (total == 0)] = math.nan
        self._append(energy=e)

    def update_from(self, inp: MetricInput) -> None:
        """``|raw|`` of signed methods (see :func:`~xvit.evaluate.inputs.energy_maps`) against the mask of the
        explained class."""
        self.update(energy_maps(inp.explanation, "abs")[:, 0], inp.masks)

    def compute(self) -> MetricResult:
        return self._result(self._cat("energy").cpu())


@register_metric("class_sensitivity",
                 citation="xvit: energy of the map of class A on object A versus on object B, both directions")
class ClassSensitivity(Metric):
    """Class sensitivity on images showing two objects A and B of different classes.

    With ``E_A(M) = Σ_{p ∈ M} m_A(p)`` the energy of the (``|·|``, min-max normalised) map for class A inside
    mask ``M``, the score of direction A is ``E_A(A) / (E_A(A) + E_A(B))``; the per-image score averages both
    directions. 0.5 means the map ignores the class, 1 that each map lands only on its own object. NaN where
    a map has no energy on either object.

    Args:
        normalise: min-max normalise ``|map|`` per image first.
    """

    higher_is_better = True
    requires = frozenset({"pairs"})
    unit = "share [0-1], chance 0.5"
    param_constraints = {"normalise": Options((True, False))}

    def __init__(self, *, normalise: bool = True) -> None:
        super().__init__(normalise=normalise)

    def update(self, maps_a: Tensor, maps_b: Tensor, masks_a: Tensor, masks_b: Tensor) -> None:
        """Score a batch of pair images: maps for class A and B ``(B, H, W)`` and bool masks ``(B, H, W)``."""
        check_maps(maps_a, name="maps_a")
        check_maps(maps_b, name="maps_b")
        if maps_b.shape != maps_a.shape:
            raise ValueError(f"maps_b {tuple(maps_b.shape)} must have the shape of maps_a "
                             f"{tuple(maps_a.shape)}.")
        check_masks(masks_a, tuple(maps_a.shape), name="masks_a")
        check_masks(masks_b, tuple(maps_a.shape), name="masks_b")
        ma, mb = _energy(maps_a, self.normalise), _energy(maps_b, self.normalise)
        a, b = masks_a.flatten(1).to(ma.device), masks_b.flatten(1).to(ma.device)
        own_a, other_a = (ma * a).sum(1), (ma * b).sum(1)
        own_b, other_b = (mb * b).sum(1), (mb * a).sum(1)
        # 0/0 gives NaN: the map has no energy on either object.
        score_a, score_b = own_a / (own_a + other_a), own_b / (own_b + other_b)
        self._append(score=(score_a + score_b) / 2, score_a=score_a, score_b=score_b)

    def update_from(self, inp: MetricInput) -> None:
        """The positive part of ``raw`` of signed methods for both labelled classes against both objects."""
        maps = energy_maps(inp.pair_explanation, "positive")
        self.update(maps[:, 0], maps[:, 1], inp.object_masks[:, 0], inp.object_masks[:, 1])

    def compute(self) -> MetricResult:
        per_image = {"score_a": self._cat("score_a").cpu(), "score_b": self._cat("score_b").cpu()}
        return self._result(self._cat("score").cpu(), per_image=per_image)


@register_metric("marker_share", citation="xvit: energy pointing game (Wang et al., Score-CAM, arXiv:1910.01279) "
                 "on a known spurious marker, the known-spurious-artifact setting of Adebayo et al., ICLR 2022")
class MarkerShare(Metric):
    """Share of a map's energy on a spurious marker (the spurious-marker audit of xvit-shapes ``spurious``).

    ``S = Σ_{p ∈ marker} m(p) / Σ_p m(p)``, the energy pointing game (Wang et al. 2020, arXiv:1910.01279) with
    the marker box as the mask and the same ``m`` (``|map|``, min-max normalised per image unless
    ``normalise=False``). Beside it the chance level ``A = |marker| / |image|``, the share of a map spread
    evenly over the image. Images without a marker (empty mask) or with a zero map (constant maps are zero after
    min-max normalisation) are excluded (NaN).

    No direction: a map that shows how the model decides should score high where the model relies on the
    marker (``shapes-vit-tiny-spurious`` calling a marked image ``shortcut_class``) and near chance where it
    does not; hence the separate share over images explained as ``shortcut_class``.

    Args:
        normalise: min-max normalise ``|map|`` per image first.
        shortcut_class: the class the marker stands for (0, ``circle``, on xvit-shapes).

    ``compute()``: ``value`` = ``scores.mean()`` over included images; ``summary`` has ``chance`` (mean ``A``
    over included images), ``lift`` (``value / chance``), ``shortcut_share``/``shortcut_ci95``/``shortcut_n``
    and ``other_share``/``other_ci95``/``other_n`` (mean share, half-width of its 95 % interval and count over
    included images whose target is / is not ``shortcut_class``) and ``excluded``; ``per_image["chance"]``
    (NaN without a marker) and ``per_image["targets"]``.
    """

    higher_is_better = None
    requires = frozenset({"markers"})
    unit = "share [0-1]"
    display = ("chance", "lift", "shortcut_share", "shortcut_ci95", "shortcut_n", "other_share", "other_ci95",
               "other_n")
    default = False  # an audit of xvit-shapes spurious data: runs only when named
    param_constraints = {
        "normalise": Options((True, False)),
        "shortcut_class": Interval(0, None, integer=True),
    }

    def __init__(self, *, normalise: bool = True, shortcut_class: int = 0) -> None:
        super().__init__(normalise=normalise, shortcut_class=shortcut_class)

    def update(self, maps: Tensor, marker_masks: Tensor, targets: Tensor) -> None:
        """Score one batch.

        Args:
            maps: ``(B, H, W)`` maps at input resolution.
            marker_masks: ``(B, H, W)`` bool marker masks, all ``False`` on images without a marker.
            targets: ``(B,)`` explained classes.
        """
        check_maps(maps)
        check_masks(marker_masks, tuple(maps.shape), name="marker_masks")
        check_classes(targets, maps.shape[0], "targets")
        masks = marker_masks.to(maps.device).flatten(1)
        m = _energy(maps, self.normalise)
        total = m.sum(1)
        share = (m * masks).sum(1) / total.clamp(min=torch.finfo(m.dtype).tiny)
        chance = masks.float().mean(1)
        absent = chance == 0
        share[absent | (total == 0)] = math.nan
        chance[absent] = math.nan
        self._append(share=share, chance=chance, targets=targets.to(maps.device))

    @classmethod
    def run_notes(cls, available: frozenset[str], data_info: Mapping[str, Any]) -> list[str]:
        if data_info.get("marker") == "none":
            return ["marker_share: marker=none puts no marker on any image, so every image is excluded."]
        return []

    def update_from(self, inp: MetricInput) -> None:
        """``|raw|`` of signed methods (see :func:`~xvit.evaluate.inputs.energy_maps`) against the markers."""
        self.update(energy_maps(inp.explanation, "abs")[:, 0], inp.markers, inp.targets)

    def compute(self) -> MetricResult:
        share, chance, targets = self._cat("share").cpu(), self._cat("chance").cpu(), self._cat("targets").cpu()
        valid = torch.isfinite(share)
        value = summarize(share)["mean"]
        mean_chance = float(chance[valid].double().mean()) if valid.any() else math.nan
        shortcut = targets == self.shortcut_class
        summary = {"chance": mean_chance, "lift": value / mean_chance}
        for prefix, subset in (("shortcut", shortcut), ("other", ~shortcut)):
            s = summarize(share[subset])
            summary |= {f"{prefix}_share": s["mean"], f"{prefix}_ci95": s["high"] - s["mean"], f"{prefix}_n": s["n"]}
        summary["excluded"] = int((~valid).sum())
        return self._result(share, value=value, summary=summary, per_image={"chance": chance, "targets": targets})


def pointing_game(maps: Tensor, masks: Tensor, targets: Tensor, **params: Any) -> MetricResult:
    """Functional twin of :class:`PointingGame` (one ``update`` and ``compute``)."""
    metric = PointingGame(**params)
    metric.update(maps, masks, targets)
    return metric.compute()


def energy_pointing_game(maps: Tensor, masks: Tensor, **params: Any) -> MetricResult:
    """Functional twin of :class:`EnergyPointingGame` (one ``update`` and ``compute``)."""
    metric = EnergyPointingGame(**params)
    metric.update(maps, masks)
    return metric.compute()


def class_sensitivity(maps_a: Tensor, maps_b: Tensor, masks_a: Tensor, masks_b: Tensor,
                      **params: Any) -> MetricResult:
    """Functional twin of :class:`ClassSensitivity` (one ``update`` and ``compute``)."""
    metric = ClassSensitivity(**params)
    metric.update(maps_a, maps_b, masks_a, masks_b)
    return metric.compute()


def marker_share(maps: Tensor, marker_masks: Tensor, targets: Tensor, **params: Any) -> MetricResult:
    """Functional twin of :class:`MarkerShare` (one ``update`` and ``compute``)."""
    metric = MarkerShare(**params)
    metric.update(maps, marker_masks, targets)
    return metric.compute()
