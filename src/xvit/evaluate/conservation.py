"""Conservation (LRP family) and completeness (integrated gradients) of raw relevance (evaluation.md §6).

Completeness: Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
arXiv:1703.01365.
Conservation: Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation", PLoS ONE 2015.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import METRICS, Metric, MetricResult, check_classes, check_images
from xvit.params import Interval, Options
from xvit.utils.logits import unwrap_logits

__all__ = ["Conservation", "conservation_scores"]


@METRICS.register("conservation", higher_is_better=None,
                  inputs=("model", "x", "relevance", "targets", "baselines"),
                  paper="Bach et al., PLoS ONE 2015 (LRP conservation); Sundararajan et al., ICML 2017, "
                        "arXiv:1703.01365 (completeness)")
class Conservation(Metric):
    """Relevance conservation ``Σ R / R_out`` and, given baselines, the completeness gap of IG.

    ``R`` is the raw signed relevance at its native resolution (any shape ``(B, ...)``), ``R_out`` the
    starting relevance: the explained logit ``y_c(x)`` (``start="logit"``, gradient×input-style LRP) or 1
    (``"one"``, Chefer's one-hot start). The ideal ratio is 1. With ``baselines`` ``x'`` the relative
    completeness gap ``|Σ R − (y_c(x) − y_c(x'))| / |y_c(x) − y_c(x')|`` is reported too, and the share of
    images whose gap is at most ``threshold``.

    Args:
        start: ``"logit"`` or ``"one"``.
        threshold: pass threshold on the completeness gap (default 0.05).

    ``compute()``: ``value`` = ``scores.mean()``, the mean ratio; ``per_image["logit"]`` and, with
    baselines, ``per_image["completeness_gap"]``, ``summary["completeness_gap"]`` (mean) and
    ``summary["completeness_pass"]``.
    """

    name = "conservation"
    higher_is_better = None  # ideal ratio is 1
    param_constraints = {
        "start": Options(("logit", "one")),
        "threshold": Interval(0, None),
    }

    def __init__(self, *, start: str = "logit", threshold: float = 0.05) -> None:
        super().__init__(start=start, threshold=threshold)

    @torch.no_grad()
    def update(self, model: Any, x: Tensor, relevance: Tensor, targets: Tensor,
               baselines: Tensor | None = None) -> None:
        """Score one batch.

        Args:
            model: callable mapping ``(B, C, H, W)`` normalised images to logits.
            x: ``(B, C, H, W)`` normalised images.
            relevance: ``(B, ...)`` raw relevance, not normalised.
            targets: ``(B,)`` explained classes.
            baselines: optional IG baselines ``x'``, broadcastable to ``x``.
        """
        check_images(x)
        check_classes(targets, x.shape[0], "targets")
        if not isinstance(relevance, Tensor) or relevance.ndim < 2 or relevance.shape[0] != x.shape[0]:
            got = tuple(relevance.shape) if isinstance(relevance, Tensor) else type(relevance).__name__
            raise ValueError(f"Expected relevance of shape ({x.shape[0]}, ...); got {got}.")
        idx = targets.to(x.device)[:, None]
        y = unwrap_logits(model(x)).float().gather(1, idx)[:, 0]
        total = relevance.detach().flatten(1).double().sum(1).float().to(y.device)
        self._forward_passes += x.shape[0]
        self._append(ratio=total / y if self.start == "logit" else total, logit=y)
        if baselines is not None:
            y0 = unwrap_logits(model(baselines.expand_as(x))).float().gather(1, idx)[:, 0]
            self._forward_passes += x.shape[0]
            self._append(gap=(total - (y - y0)).abs() / (y - y0).abs())

    def compute(self) -> MetricResult:
        per_image = {"logit": self._cat("logit").cpu()}
        summary: dict[str, Any] = {}
        if self._has("gap"):
            gap = self._cat("gap").cpu()
            if gap.shape[0] != per_image["logit"].shape[0]:
                raise RuntimeError(f"{self.name}: baselines were given for some batches only; give them "
                                   "always or never.")
            per_image["completeness_gap"] = gap
            summary = {"completeness_gap": float(gap.nanmean()),
                       "completeness_pass": float((gap <= self.threshold).float().mean())}
        return self._result(self._cat("ratio").cpu(), summary=summary, per_image=per_image)


def conservation_scores(model: Any, x: Tensor, relevance: Tensor, targets: Tensor,
                        baselines: Tensor | None = None, **params: Any) -> MetricResult:
    """Functional twin of :class:`Conservation` (one ``update`` and ``compute``)."""
    metric = Conservation(**params)
    metric.update(model, x, relevance, targets, baselines)
    return metric.compute()
