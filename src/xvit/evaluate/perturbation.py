"""Positive / negative perturbation test of Chefer et al. 2021 (evaluation.md §1).

Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization", CVPR 2021,
arXiv:2012.09838; reference hila-chefer/Transformer-Explainability,
``baselines/ViT/pertubation_eval_from_hdf5.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import (
    CHANNEL_MEAN,
    CHANNEL_STD,
    Column,
    Metric,
    MetricResult,
    Plot,
    check_classes,
    check_images,
    check_maps,
    register_metric,
)
from xvit.evaluate.inputs import MetricInput, RunContext
from xvit.params import Interval, Options, Satisfies
from xvit.perturb import Black, Blur, MeanColour, RankMasks, Substrate, score

__all__ = ["Perturbation", "perturbation_curve"]

_CHEFER_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _is_fractions(v: Any) -> bool:
    return (isinstance(v, tuple) and len(v) > 0
            and all(isinstance(p, float) and 0 < p <= 1 for p in v)
            and all(v[i] < v[i + 1] for i in range(len(v) - 1)))


@register_metric("perturbation", citation="Chefer et al., Transformer Interpretability Beyond Attention "
                 "Visualization, CVPR 2021, arXiv:2012.09838")
class Perturbation(Metric):
    """Positive/negative perturbation test (Chefer et al. 2021, arXiv:2012.09838; evaluation.md §1).

    For each fraction ``p`` the ``int(p·H·W)`` pixels ranked highest by the map (``mode="positive"``) or
    by ``−map`` (``"negative"``) are set to black in all channels (``(0 − mean)/std`` in normalised space; other
    ``substrate`` s below) and the image is classified. The curve is top-1 correctness against ``labels`` (and,
    if given, against ``targets``) with the clean image at ``p = 0``; ``AUC = 100·trapz(y, x)`` with
    ``x = (0, fractions…)``. Per-image AUCs average to the dataset AUC because the trapezoid is linear. Positive:
    lower is better; negative: higher.

    Cost: ``N·(len(fractions) + 1)`` forward passes.

    Args:
        mean: per-channel normalisation mean of the checkpoint.
        std: per-channel normalisation std of the checkpoint.
        mode: ``"positive"`` (remove most relevant first) or ``"negative"`` (least relevant first).
        fractions: increasing fractions of pixels removed; default ``(0.1, …, 0.9)``.
        substrate: what a removed pixel becomes: ``"black"`` (Chefer et al.'s protocol), ``"mean"`` (0 in
            normalised space, the data set's mean colour) or ``"blur"`` (``x`` blurred by RISE's 11×11 Gaussian,
            σ = 5, zero padding; Petsiuk et al. 2018, arXiv:1806.07421). On images whose object is small and the
            background plain (xvit-shapes), black pixels create new shapes and every curve drops to chance within a
            few steps; a blurred or mean-colour fill removes information without drawing edges.
        batch_size: perturbed images per forward pass.

    ``compute()``: ``value`` = ``scores.mean()`` = AUC vs ``labels``; ``curves`` ``(N, S)`` 0/1 correctness;
    ``per_image["curves_target"]`` and ``summary["auc_target"]`` when ``targets`` were given.
    """

    higher_is_better = None  # set per mode
    columns = (Column("perturbation_pos", {"mode": "positive"}, higher_is_better=False,
                      display=("clean_accuracy", "auc_target"), unit="AUC [0-90]"),
               Column("perturbation_neg", {"mode": "negative"}, higher_is_better=True, display=("auc_target",),
                      unit="AUC [0-90]"))
    plots = (Plot("perturbation", ("perturbation_pos", "perturbation_neg"), "fraction of pixels removed",
                  "top-1 accuracy"),)
    param_constraints = {
        "mean": CHANNEL_MEAN,
        "std": CHANNEL_STD,
        "mode": Options(("positive", "negative")),
        "fractions": Satisfies(_is_fractions, "an increasing tuple of floats in (0, 1]"),
        "substrate": Options(("black", "mean", "blur")),
        "batch_size": Interval(1, None, integer=True),
    }

    def __init__(self, *, mean: tuple[float, ...], std: tuple[float, ...], mode: str = "positive",
                 fractions: tuple[float, ...] = _CHEFER_FRACTIONS, substrate: str = "black",
                 batch_size: int = 64) -> None:
        super().__init__(mean=mean, std=std, mode=mode, fractions=fractions, substrate=substrate,
                         batch_size=batch_size)

    @classmethod
    def from_run(cls, context: RunContext, params: Mapping[str, Any]) -> Perturbation:
        """The run's normalisation and forward batch size."""
        return cls(**{"mean": context.mean, "std": context.std, "batch_size": context.forward_rows(),
                      **params})

    @classmethod
    def run_notes(cls, available: frozenset[str], data_info: Mapping[str, Any]) -> list[str]:
        if "labels" in available:
            return []
        return ["perturbation: the data set has no labels; accuracy is measured against the clean prediction "
                "(clean accuracy 1 by construction)."]

    def update_from(self, inp: MetricInput) -> None:
        """The run's maps against the labels (the clean prediction without labels) and the explained classes."""
        self.update(inp.model, inp.x, inp.maps, inp.labels, inp.targets)

    def forward_passes_per_image(self, height: int, width: int) -> int:
        """Model forward passes per image (clean image plus one per fraction)."""
        return len(self.fractions) + 1

    def update(self, model: Any, x: Tensor, maps: Tensor, labels: Tensor,
               targets: Tensor | None = None) -> None:
        """Perturb and classify one batch.

        Args:
            model: callable mapping ``(B, C, H, W)`` normalised images to logits ``(B, classes)``.
            x: ``(B, C, H, W)`` normalised images.
            maps: ``(B, H, W)`` maps at input resolution (signed allowed).
            labels: ``(B,)`` ground-truth classes.
            targets: optional ``(B,)`` explained classes for a second curve.
        """
        check_images(x)
        check_maps(maps, tuple(x.shape))
        check_classes(labels, x.shape[0], "labels")
        if targets is not None:
            check_classes(targets, x.shape[0], "targets")
        hw = x.shape[2] * x.shape[3]
        # int(p·HW) with Python floats, exactly as the reference's torch.topk(vis, int(base_size * p)).
        counts = torch.tensor([0] + [int(hw * p) for p in self.fractions], device=x.device)
        maps = maps.to(x.device)
        states = RankMasks.from_scores(maps if self.mode == "positive" else -maps, counts)
        classes = torch.stack([c.to(x.device) for c in ([labels] if targets is None else [labels, targets])], 1)
        correct = score(model, x, states, classes, substrate=self._substrate(), readout="top1",
                        batch_size=self.batch_size)
        self._forward_passes += correct.shape[0] * correct.shape[1]
        self._append(correct=correct[..., 0])
        if targets is not None:
            self._append(correct_target=correct[..., 1])

    def _substrate(self) -> Substrate:
        if self.substrate == "blur":
            return Blur(11, 5.0, kernel="folded", padding="zeros")
        return MeanColour() if self.substrate == "mean" else Black(self.mean, self.std)

    def compute(self) -> MetricResult:
        xs = torch.tensor((0.0, *self.fractions))
        curves = self._cat("correct").cpu()
        scores = 100 * torch.trapezoid(curves, xs, dim=1)
        summary = {"auc": float(scores.mean()), "clean_accuracy": float(curves[:, 0].mean()),
                   "substrate": self.substrate}
        per_image = {}
        if self._has("correct_target"):
            curves_target = self._cat("correct_target").cpu()
            per_image["curves_target"] = curves_target
            summary["auc_target"] = float(100 * torch.trapezoid(curves_target.mean(0), xs))
        return self._result(scores, higher_is_better=self.mode == "negative", summary=summary, curves=curves,
                            curve_x=xs, per_image=per_image)


def perturbation_curve(model: Any, x: Tensor, maps: Tensor, labels: Tensor, targets: Tensor | None = None,
                       **params: Any) -> MetricResult:
    """Functional twin of :class:`Perturbation` (one ``update`` and ``compute``)."""
    metric = Perturbation(**params)
    metric.update(model, x, maps, labels, targets)
    return metric.compute()
