"""Labelled images of any data source as a torch ``Dataset``, and a seeded hold-out split: what training reads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from xvit.data.sources.base import DataSpecError, EvalDataset
from xvit.models import Preprocessing

__all__ = ["LabelledImages", "holdout_split"]


class LabelledImages(Dataset):
    """``(image, label)`` pairs of an opened data set: uint8 ``(C, H, W)`` at the model's size (the pixel path of
    :mod:`xvit.data.preprocess`, before normalisation) and an int64 class index, read when indexed.

    Args:
        data: an opened data set with one label per image (:func:`xvit.data.load_dataset`).
        preprocessing: the model's size, channels and interpolation.
        indices: positions in ``data`` (all by default), in the order this dataset yields them.
    """

    def __init__(self, data: EvalDataset, preprocessing: Preprocessing, indices: Sequence[int] | None = None) -> None:
        if data.labels is None or data.labels.ndim != 1:
            kind = "no labels" if data.labels is None else "two labels per image"
            raise DataSpecError(f"{data.spec!r} has {kind}; training needs one class label per image.")
        self.data, self.preprocessing = data, preprocessing
        self.indices = list(range(len(data))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[Tensor, Tensor]:
        i = self.indices[j]
        return self.data.images([i], self.preprocessing)[0], self.data.labels[i]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images and labels at once: uint8 ``(N, C, H, W)`` and int64 ``(N,)``."""
        return self.data.images(self.indices, self.preprocessing), self.data.labels[self.indices]


def holdout_split(data: EvalDataset, preprocessing: Preprocessing, *, fraction: float,
                  seed: int) -> tuple[LabelledImages, LabelledImages]:
    """``(train, held_out)``: a seeded random ``fraction`` of ``data`` (at least one image) held out.

    The held-out images are the first ``max(1, round(fraction * N))`` of ``torch.randperm(N)`` under
    ``torch.Generator().manual_seed(seed)``; both parts keep that permuted order.

    Raises:
        DataSpecError: the data has no single labels, fewer than two classes, or too few images to split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1); got {fraction}.")
    LabelledImages(data, preprocessing)  # checks for one label per image
    n_classes = len(data.class_names) if data.class_names else int(data.labels.max()) + 1
    if n_classes < 2:
        raise DataSpecError(f"{data.spec!r} needs at least two classes to train a classifier; found "
                            f"{data.class_names or n_classes}.")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    n_hold = max(1, round(fraction * len(data)))
    if n_hold >= len(data):
        raise DataSpecError(f"{data.spec!r} has {len(data)} image(s): too few to hold out {fraction:.0%} and "
                            "train on the rest.")
    return (LabelledImages(data, preprocessing, order[n_hold:]), LabelledImages(data, preprocessing, order[:n_hold]))
