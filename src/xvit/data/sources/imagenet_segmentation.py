"""The ImageNet-segmentation test set (``gtsegs_ijcv.mat``) as a data source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xvit.data.sources.base import DataNotFoundError, DataSource, DataSpec, DataSpecError, register_source

__all__ = ["ImagenetSegmentationSource"]

_PREFIX = "imagenet-segmentation"


def _h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError(f"Reading {path.name} (a MATLAB v7.3 / HDF5 file) needs h5py: pip install h5py") from None
    return h5py


@register_source(_PREFIX, description="ImageNet segmentation of Guillaumin et al. (IJCV 2014), gtsegs_ijcv.mat",
                 citation="Guillaumin, Küttel & Ferrari, ImageNet Auto-Annotation with Segmentation Propagation, "
                 "IJCV 2014; as used by Chefer, Gur & Wolf, CVPR 2021")
class ImagenetSegmentationSource(DataSource):
    """``gtsegs_ijcv.mat`` (MATLAB v7.3 = HDF5), read with h5py: ``value/img[i, 0]`` references a ``(3, W, H)``
    uint8 array (MATLAB's column-major ``H×W×3``), ``value/gt[i, 0]`` a 1×1 cell whose element references the
    ``(W, H)`` mask; as read by hila-chefer/Transformer-Explainability ``data/imagenet.py``
    (``Imagenet_Segmentation``). It has masks but no class labels. The file is opened on first read, so an
    opened data set pickles.
    """

    forms = "[imagenet-segmentation:]FILE.mat (gtsegs_ijcv.mat)"

    def __init__(self, spec: DataSpec, *, size: tuple[int, int] | None = None) -> None:
        super().__init__(spec, size=size)
        self.path = Path(spec.path)
        if not self.path.is_file():
            raise DataNotFoundError(f"{str(self.path)!r} is not a file; expected {self.forms}.")
        h5py = _h5py(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                n = len(f["value/img"])
                if len(f["value/gt"]) != n:
                    raise DataSpecError(f"{self.path}: value/img has {n} entries but value/gt {len(f['value/gt'])}.")
        except (OSError, KeyError) as e:
            raise DataSpecError(f"{self.path} is not the ImageNet-segmentation file gtsegs_ijcv.mat (a MATLAB v7.3 / "
                                f"HDF5 file with datasets value/img and value/gt): {e}") from None
        n = n if spec.n is None else min(n, spec.n)
        self.ids = [f"gtsegs:{i}" for i in range(n)]
        self.has_masks = True
        self.info = {"format": "imagenet-segmentation (gtsegs_ijcv.mat)", "file": self.path.name}
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # an open HDF5 handle does not pickle; reopened on first read

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        path = cls.unprefixed(text)
        if not path.lower().endswith(".mat"):
            raise DataSpecError(f"expected {cls.forms}; got {text!r}.")
        return DataSpec(_PREFIX, path=str(Path(path)))

    @classmethod
    def format(cls, spec: DataSpec) -> str:
        return str(spec.path)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".mat"

    def read(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        h5py = _h5py(self.path)
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        f = self._file
        img = np.asarray(f[f["value/img"][i, 0]])
        img = img.transpose(2, 1, 0) if img.ndim == 3 else np.repeat(img.T[:, :, None], 3, axis=2)
        cell = f[f["value/gt"][i, 0]]
        gt = np.asarray(f[cell[0, 0]]) if h5py.check_dtype(ref=cell.dtype) is not None else np.asarray(cell)
        return np.ascontiguousarray(img.astype(np.uint8)), [np.ascontiguousarray(gt.T > 0)]
