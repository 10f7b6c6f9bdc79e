"""Data sources in one registry: xvit-shapes, image folders and manifests, ImageNet segmentation, MNIST IDX files.

``load_dataset(spec, size=..., limit=...)`` opens any of them as an :class:`EvalDataset`; ``data_sources()`` lists
them; ``register_source`` adds one (a :class:`DataSource` subclass).
"""

from xvit.data.sources.base import (
    DATA_SOURCES,
    DataNotFoundError,
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
from xvit.data.sources.folders import IMAGE_EXTENSIONS, FolderSource
from xvit.data.sources.imagenet_segmentation import ImagenetSegmentationSource
from xvit.data.sources.mnist import MnistSource
from xvit.data.sources.shapes import DEFAULT_SHAPES_N, ShapesSource

__all__ = ["DATA_SOURCES", "DEFAULT_SHAPES_N", "IMAGE_EXTENSIONS", "DataNotFoundError", "DataSource", "DataSpec",
           "DataSpecError", "EvalBatch", "EvalDataset", "FolderSource", "ImagenetSegmentationSource", "MnistSource",
           "ShapesSource", "data_sources", "load_dataset", "parse_data_spec", "register_source"]
