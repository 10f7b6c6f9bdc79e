"""Measuring a classifier: loss and accuracy on held images, accuracy on freshly rendered xvit-shapes images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.data.preprocess import normalise
from xvit.data.shapes import make_shapes
from xvit.models import Preprocessing, VisionTransformer, load_model, preprocessing_for
from xvit.utils.context import eval_mode

__all__ = ["loss_and_accuracy", "shapes_accuracy", "shapes_predictions"]


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, images: Tensor, labels: Tensor, preprocessing: Preprocessing, bf16: bool,
                      batch_size: int = 250) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on uint8 images normalised as ``preprocessing`` says;
    leaves the model in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(labels), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalise(images[i:i + batch_size], preprocessing)).float()
        y = labels[i:i + batch_size]
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / len(labels), correct / len(labels)


def shapes_accuracy(model: nn.Module | str, variant: str = "single", n: int = 2_000, seed: int | None = None,
                    split: str = "test", marker: str | None = None) -> float:
    """Top-1 accuracy (fp32) of a model, or a model spec for :func:`xvit.models.load_model`, on ``n``
    freshly rendered xvit-shapes images of ``variant`` at the model's input size."""
    labels, preds = shapes_predictions(model, variant, n, seed=seed, split=split, marker=marker)[:2]
    return (preds == labels).sum().item() / n


@torch.no_grad()
def shapes_predictions(model: nn.Module | str, variant: str = "single", n: int = 2_000, seed: int | None = None,
                       split: str = "test", marker: str | None = None, batch_size: int = 250
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """``(labels, top-1 predictions, marker flags)`` of a model (fp32, eval mode), or a model spec for
    :func:`xvit.models.load_model`, on ``n`` freshly rendered xvit-shapes images of ``variant`` at the
    model's input size, normalised with the model's own mean and std (:func:`xvit.models.preprocessing_for`);
    what :func:`shapes_accuracy` and the model cards measure. The model's train/eval mode is restored
    afterwards."""
    if isinstance(model, str):
        model = load_model(model)
    size = model.config.img_size if isinstance(model, VisionTransformer) else 112
    batch = make_shapes(variant, n, seed=seed, size=size, split=split, marker=marker)
    preprocessing = preprocessing_for(model)
    with eval_mode(model):
        preds = torch.cat([model(normalise(batch.images[i:i + batch_size], preprocessing)).float().argmax(1)
                           for i in range(0, n, batch_size)])
    return batch.labels, preds, batch.marker
