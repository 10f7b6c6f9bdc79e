"""The data of a training run: an endless xvit-shapes stream, or any labelled data source of
:func:`xvit.data.load_dataset` (image folders, manifests, MNIST IDX files) with a seeded hold-out split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from xvit.data.labelled import holdout_split
from xvit.data.shapes import (
    GENERATOR_VERSION,
    SHAPE_CLASSES,
    ShapesDataset,
    default_seed,
    make_shapes,
    resolve_marker_mode,
)
from xvit.data.sources import load_dataset
from xvit.training.config import TrainConfig, shapes_marker, shapes_variant

__all__ = ["TrainingData", "training_data"]


@dataclass
class TrainingData:
    """What the loop trains and validates on: uint8 training items ``(image, label[, mask])``, uint8
    validation images and labels, the class names, whether random flips keep the label, and the facts
    recorded in ``config.json`` under ``training.data``."""

    classes: list[str]
    train_set: Dataset
    val_images: Tensor
    val_labels: Tensor
    flip: bool
    info: dict[str, Any]
    shapes_variant: str | None


def training_data(cfg: TrainConfig) -> TrainingData:
    """The data ``cfg`` describes: a fresh xvit-shapes stream (masks included for token labelling) with a
    rendered validation split, or a labelled data source read through the one pixel path
    (:mod:`xvit.data.preprocess`) at the model's size, with a seeded held-out fraction."""
    variant = shapes_variant(cfg.data)
    if variant is None:
        data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
        prep = cfg.preprocessing
        data = load_dataset(cfg.data, size=prep.size)
        train_part, held_out = holdout_split(data, prep, fraction=cfg.holdout_fraction, seed=data_seed)
        (tr_x, tr_y), (val_x, val_y) = train_part.tensors(), held_out.tensors()
        classes = data.class_names or [str(k) for k in range(int(data.labels.max()) + 1)]
        kind = data.data_spec.kind
        info = {"dataset": kind, **({"path": str(cfg.data)} if kind == "folder" else {"spec": data.spec}),
                "train_size": len(tr_y), "holdout_size": len(val_y), "holdout_seed": data_seed}
        return TrainingData(classes, TensorDataset(tr_x, tr_y), val_x, val_y, cfg.flip, info, None)
    train_seed = default_seed(variant, "train") if cfg.data_seed is None else cfg.data_seed
    val_seed = default_seed(variant, "val")
    marker = shapes_marker(cfg.data)
    train_set = ShapesDataset(variant, cfg.train_size, seed=train_seed, split="train", size=cfg.img_size,
                              marker=marker, with_masks=cfg.token_loss > 0)
    val = make_shapes(variant, cfg.val_size, seed=val_seed, size=cfg.img_size, split="val", marker=marker)
    info = {"dataset": "xvit-shapes", "variant": variant, "generator_version": GENERATOR_VERSION,
            "train_seed": train_seed, "train_images_per_epoch": cfg.train_size,
            "fresh_images_every_epoch": cfg.fresh_data, "val_seed": val_seed, "val_size": cfg.val_size,
            "test_seed": default_seed(variant, "test"), "test_size": cfg.test_size,
            **({"marker": resolve_marker_mode(variant, "train", marker)} if variant == "spurious" else {})}
    # Flipping moves the spurious marker to another corner, so it is off for that variant.
    return TrainingData(list(SHAPE_CLASSES), train_set, val.images, val.labels, cfg.flip and variant != "spurious",
                        info, variant)
