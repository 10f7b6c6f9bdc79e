"""Data: the xvit-shapes benchmark with ground-truth masks."""

from xvit.data.images import ImageLoadError, load_images
from xvit.data.shapes import SHAPE_CLASSES, ShapesBatch, ShapesDataset, make_shapes, write_shapes

__all__ = ["ImageLoadError", "load_images",
           "SHAPE_CLASSES", "ShapesBatch", "ShapesDataset", "make_shapes", "write_shapes"]
