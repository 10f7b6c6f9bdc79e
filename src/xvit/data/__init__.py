"""Data: the one preprocessing path, the data-source registry and the xvit-shapes benchmark."""

from xvit.data.images import ImageLoadError, load_images
from xvit.data.labelled import LabelledImages, holdout_split
from xvit.data.preprocess import denormalise, normalise, prepare_image, resize_mask, to_display, to_rgb, to_tensor
from xvit.data.shapes import SHAPE_CLASSES, ShapesBatch, ShapesDataset, make_shapes, shapes_labels, write_shapes
from xvit.data.sources import (
    DataSource,
    DataSpec,
    DataSpecError,
    EvalBatch,
    EvalDataset,
    data_sources,
    load_dataset,
    parse_data_spec,
    register_source,
)

__all__ = ["ImageLoadError", "load_images",
           "LabelledImages", "holdout_split",
           "denormalise", "normalise", "prepare_image", "resize_mask", "to_display", "to_rgb", "to_tensor",
           "SHAPE_CLASSES", "ShapesBatch", "ShapesDataset", "make_shapes", "shapes_labels", "write_shapes",
           "DataSource", "DataSpec", "DataSpecError", "EvalBatch", "EvalDataset", "data_sources", "load_dataset",
           "parse_data_spec", "register_source"]
