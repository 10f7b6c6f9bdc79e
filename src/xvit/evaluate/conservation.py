"""Conservation (LRP family) and completeness (integrated gradients) of raw relevance (evaluation.md §6).

Completeness: Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
arXiv:1703.01365.
Conservation: Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation", PLoS ONE 2015.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import (
    Metric,
    MetricResult,
    NotApplicable,
    check_classes,
    check_images,
    register_metric,
)
from xvit.evaluate.inputs import MetricInput
from xvit.params import Interval, Options
from xvit.utils.logits import unwrap_logits

__all__ = ["Conservation", "conservation_scores"]


@register_metric("conservation", citation="Bach et al., PLoS ONE 2015 (LRP conservation); Sundararajan et al., "
                 "ICML 2017, arXiv:1703.01365 (completeness)")
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

    In an evaluation run (:meth:`update_from`) the explanation already holds what is needed, so no forward pass
    is made: ``Σ R`` and ``R_out = y_c(x)`` in ``meta`` (``relevance_sum``/``explained_logit``: AttnLRP,
    CP-LRP), ``Σ R − Δ`` with ``Δ = y_c(x) − y_c(x')`` in ``meta["completeness_gap"]`` (integrated gradients,
    scored by the relative gap ``|Σ R − Δ| / |Δ|``; lower is better), or a method declaring
    ``relevance_start = "one_hot"`` (``R_out = 1``, full LRP). ``compute()`` then scores that one quantity and
    ``summary`` names it (``quantity``, with ``start`` or ``completeness_pass``/``threshold``). Other methods
    raise :class:`~xvit.evaluate.base.NotApplicable`.
    """

    higher_is_better = None  # ideal ratio is 1
    display = ("completeness_pass",)
    unit = "ratio (IG: gap)"
    param_constraints = {
        "start": Options(("logit", "one")),
        "threshold": Interval(0, None),
    }

    def __init__(self, *, start: str = "logit", threshold: float = 0.05) -> None:
        super().__init__(start=start, threshold=threshold)

    def reset(self) -> None:
        super().reset()
        self._read: dict[str, str] | None = None  # what update_from read: quantity and start

    def state_dict(self) -> dict[str, Any]:
        """The base state plus ``read`` (what :meth:`update_from` read, ``None`` for :meth:`update`)."""
        return {**super().state_dict(), "read": self._read}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """As :meth:`Metric.merge_state`; the first ``read`` seen is kept."""
        super().merge_state(state)
        if self._read is None:
            self._read = state["read"]

    def update_from(self, inp: MetricInput) -> None:
        """Read the conserved quantity from the explanation (see the class docstring); no forward pass."""
        exp = inp.explanation
        meta = exp.meta
        if "relevance_sum" in meta and "explained_logit" in meta:
            ratio = meta["relevance_sum"][:, 0].double() / meta["explained_logit"][:, 0].double()
            self._read_as("ratio", "logit")
            self._append(ratio=ratio.float())
        elif "completeness_gap" in meta:
            gap = meta["completeness_gap"][:, 0].double()
            delta = exp.raw[:, 0].flatten(1).double().sum(1) - gap
            self._read_as("completeness_gap", None)
            self._append(gap=(gap.abs() / delta.abs()).float())
        elif inp.relevance_start == "one_hot":
            self._read_as("ratio", "one-hot")
            self._append(ratio=exp.raw[:, 0].flatten(1).double().sum(1).float())
        else:
            raise NotApplicable("its explanations carry no conserved relevance")

    def _read_as(self, quantity: str, start: str | None) -> None:
        read = {"quantity": quantity} if start is None else {"quantity": quantity, "start": start}
        if self._read is not None and read != self._read:
            raise ValueError(f"{self.name}: this batch's explanations hold {read}, earlier ones {self._read}; "
                             "accumulate one method per metric.")
        self._read = read

    @classmethod
    def format_cell(cls, row: Mapping[str, Any]) -> str:
        quantity = row["details"].get("quantity")
        return super().format_cell(row) + (" (Σ R / R_out, →1)" if quantity == "ratio" else " (IG gap, ↓)")

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
        if self._read is not None:
            return self._compute_read()
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
        return self._result(self._cat("ratio").cpu(), summary=summary, per_image=per_image, ideal=1.0)


    def _compute_read(self) -> MetricResult:
        if self._read["quantity"] == "completeness_gap":
            scores = self._cat("gap").cpu()
            summary = {**self._read, "completeness_pass": float((scores <= self.threshold).float().mean()),
                       "threshold": self.threshold}
            return self._result(scores, higher_is_better=False, summary=summary)
        return self._result(self._cat("ratio").cpu(), summary=dict(self._read), ideal=1.0)


def conservation_scores(model: Any, x: Tensor, relevance: Tensor, targets: Tensor,
                        baselines: Tensor | None = None, **params: Any) -> MetricResult:
    """Functional twin of :class:`Conservation` (one ``update`` and ``compute``)."""
    metric = Conservation(**params)
    metric.update(model, x, relevance, targets, baselines)
    return metric.compute()
