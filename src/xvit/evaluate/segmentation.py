"""ImageNet-segmentation test: pixel accuracy, mIoU and mAP of thresholded maps (evaluation.md §3).

Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization", CVPR 2021,
arXiv:2012.09838; reference hila-chefer/Transformer-Explainability ``baselines/ViT/imagenet_seg_eval.py``,
``utils/metrices.py``.
Masks of Guillaumin et al., "ImageNet Auto-Annotation with Segmentation Propagation", IJCV 2014.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import Column, Metric, MetricResult, check_maps, check_masks, register_metric
from xvit.evaluate.inputs import MetricInput
from xvit.utils.maps import normalise_maps

__all__ = ["Segmentation", "average_precision", "segmentation_scores"]


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Row-wise average precision, equal to ``sklearn.metrics.average_precision_score``.

    ``AP = Σ_k (R_k − R_{k−1}) P_k`` over distinct score thresholds (tied scores form one threshold). Each
    positive contributes ``P / (#positives)`` at the end of its tie group, which gives the same sum batched.

    Args:
        scores: ``(B, N)`` float scores.
        targets: ``(B, N)`` bool labels.

    Returns:
        ``(B,)`` float64 AP; 0 for a row without positives (as scikit-learn returns).
    """
    s, order = torch.sort(scores, dim=1, descending=True)
    t = targets.gather(1, order).double()
    tp = t.cumsum(1)
    n = s.shape[1]
    # Index of the last element of each element's tie group: (number of scores >= s_i) - 1.
    end = n - 1 - torch.searchsorted(s.flip(1).contiguous(), s.contiguous(), right=False)
    precision_at_end = tp.gather(1, end) / (end + 1).double()
    positives = tp[:, -1]
    ap = (t * precision_at_end).sum(1) / positives.clamp(min=1)
    return torch.where(positives > 0, ap, 0.0)


@register_metric("segmentation", citation="Chefer et al., Transformer Interpretability Beyond Attention "
                 "Visualization, CVPR 2021, arXiv:2012.09838")
class Segmentation(Metric):
    """ImageNet-segmentation test (Chefer et al. 2021, arXiv:2012.09838; evaluation.md §3).

    Each map is min-max normalised to ``m ∈ [0, 1]`` and thresholded at its own mean: foreground
    ``m > mean(m)`` (a constant map predicts all background). Pixel accuracy ``Σ correct / Σ labelled`` and
    the mIoU (mean of the background and foreground IoUs, intersections and unions summed over the dataset)
    are dataset-level; AP is per image on the soft scores ``[1 − m, m]`` against the one-hot mask
    ``[bg, fg]``, both channels flattened together, and mAP is their mean. All three in percent.

    ``compute()``: ``value`` = mAP = ``scores.mean()`` (per-image AP, %); ``summary`` holds
    ``pixel_accuracy``, ``miou`` and ``map``; ``per_image`` holds ``correct``, ``labelled``, ``intersection``
    and ``union`` ``(N, 2)`` [bg, fg], so results of several runs can be merged exactly.
    """

    higher_is_better = True
    param_constraints: dict[str, Any] = {}
    requires = frozenset({"masks"})
    # mAP is near 100 for every method that finds the object on simple images; the mIoU of the thresholded map
    # still separates them, so it heads the table and mAP stands beside it.
    columns = (Column("segmentation", higher_is_better=True, display=("pixel_accuracy",), unit="% [0-100]",
                      label="mAP", headline=("miou", "mIoU")),)

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Score one batch.

        Args:
            maps: ``(B, H, W)`` maps of the predicted class at input resolution.
            masks: ``(B, H, W)`` bool foreground masks.
        """
        check_maps(maps)
        check_masks(masks, tuple(maps.shape))
        m = normalise_maps(maps.float()).flatten(1)
        gt = masks.flatten(1).to(m.device)
        fg = m > m.mean(1, keepdim=True)
        pred = torch.stack([~fg, fg], 1)  # (B, 2, HW) one-hot prediction [bg, fg]
        label = torch.stack([~gt, gt], 1)
        inter = (pred & label).sum(2)
        union = pred.sum(2) + label.sum(2) - inter
        ap = average_precision(torch.cat([1 - m, m], 1), torch.cat([~gt, gt], 1))
        self._append(correct=(fg == gt).sum(1), labelled=torch.full_like(inter[:, 0], gt.shape[1]),
                     intersection=inter, union=union, ap=100 * ap)

    def update_from(self, inp: MetricInput) -> None:
        """The run's maps against the union of the object masks."""
        self.update(inp.maps, inp.foreground)

    def compute(self) -> MetricResult:
        correct, labelled = self._cat("correct").cpu(), self._cat("labelled").cpu()
        inter, union = self._cat("intersection").cpu(), self._cat("union").cpu()
        scores = self._cat("ap").cpu()
        total_union = union.sum(0).double()
        iou = torch.where(total_union > 0, inter.sum(0).double() / total_union.clamp(min=1), 0.0)
        summary = {"pixel_accuracy": float(100 * correct.sum() / labelled.sum()),
                   "miou": float(100 * iou.mean()), "map": float(scores.mean())}
        return self._result(scores, summary=summary,
                            per_image={"correct": correct, "labelled": labelled, "intersection": inter,
                                       "union": union})


def segmentation_scores(maps: Tensor, masks: Tensor) -> MetricResult:
    """Functional twin of :class:`Segmentation` (one ``update`` and ``compute``)."""
    metric = Segmentation()
    metric.update(maps, masks)
    return metric.compute()
