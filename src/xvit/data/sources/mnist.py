"""MNIST-style IDX files (``*-images-idx3-ubyte[.gz]`` with ``*-labels-idx1-ubyte[.gz]``) as a data source."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xvit.data.sources.base import DataNotFoundError, DataSource, DataSpec, DataSpecError, register_source

__all__ = ["MNIST_SPLITS", "MNIST_SPLIT_SEED", "MNIST_TEST_FRACTION", "MnistSource", "read_idx", "split_indices"]

_PREFIX = "mnist"
MNIST_SPLITS = ("all", "train", "test")
MNIST_SPLIT_SEED = 0
"""Seed of the fixed permutation that splits one IDX file into ``train`` and ``test``."""
MNIST_TEST_FRACTION = 0.2
_UBYTE = 0x08


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(f: Any, path: Path) -> tuple[int, ...]:
    magic = f.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0":
        raise DataSpecError(f"{path} is not an IDX file (it does not start with two zero bytes).")
    if magic[2] != _UBYTE:
        raise DataSpecError(f"{path} holds IDX type 0x{magic[2]:02x}; only unsigned bytes (0x08) are read.")
    ndim = magic[3]
    dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    return dims


def read_idx(path: str | Path, *, header_only: bool = False) -> np.ndarray | tuple[int, ...]:
    """An unsigned-byte IDX file (LeCun et al.'s MNIST format, optionally gzipped) as a uint8 array of its
    dimensions, or only the dimensions with ``header_only``."""
    path = Path(path)
    if not path.is_file():  # a pipe or device would block
        raise DataSpecError(f"{path} {'is not a regular file' if path.exists() else 'does not exist'}; pass an IDX "
                            "file such as train-images-idx3-ubyte(.gz).")
    with _open(path) as f:
        try:
            dims = _header(f, path)
            if header_only:
                return dims
            data = f.read()
        except (OSError, EOFError, struct.error) as e:
            raise DataSpecError(f"cannot read IDX file {path}: {e}") from None
    count = int(np.prod(dims))
    if len(data) < count:
        raise DataSpecError(f"{path} is truncated: dimensions {dims} need {count} bytes, found {len(data)}.")
    return np.frombuffer(data, dtype=np.uint8, count=count).reshape(dims)


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if "idx3-ubyte" in p.name and p.is_file())


@register_source(_PREFIX, description="MNIST-style IDX files (1-channel images, digit labels)",
                 citation="LeCun, Bottou, Bengio & Haffner, Gradient-Based Learning Applied to Document Recognition, "
                 "Proc. IEEE 1998")
class MnistSource(DataSource):
    """``mnist:PATH[:SPLIT][:N]``: the images of an IDX file (``PATH`` is the ``*-images-idx3-ubyte[.gz]`` file or
    a folder holding exactly one) with the labels of the same-named ``labels-idx1`` file, where present.

    ``SPLIT`` is ``all`` (default), or ``train`` / ``test``: a fixed partition of the file (a permutation seeded
    with :data:`MNIST_SPLIT_SEED`, :data:`MNIST_TEST_FRACTION` of the images to ``test``), each in file order.
    ``N`` keeps the first ``N`` images of the split. Gray images are brought to the model's channels when loaded
    (replicated to RGB, or kept as one channel for a one-channel model) and resized to its input size.
    """

    forms = "mnist:PATH[:SPLIT][:N] (IDX files; SPLIT all, train or test)"

    def __init__(self, spec: DataSpec, *, size: tuple[int, int] | None = None) -> None:
        super().__init__(spec, size=size)
        self.images_file = _find_images(Path(spec.path))
        dims = read_idx(self.images_file, header_only=True)
        if len(dims) != 3:
            raise DataSpecError(f"{self.images_file} holds an array of shape {dims}; images need (N, H, W).")
        self.dims = dims
        self.index = split_indices(dims[0], spec.split)
        if spec.n is not None:
            self.index = self.index[:spec.n]
        self.ids = [f"mnist:{i}" for i in self.index]
        labels_file = self.images_file.with_name(self.images_file.name.replace("images-idx3", "labels-idx1")
                                                 .replace("idx3", "idx1"))
        if labels_file != self.images_file and labels_file.is_file():
            labels = read_idx(labels_file)
            if labels.shape != (dims[0],):
                raise DataSpecError(f"{labels_file} holds {labels.shape} labels for {dims[0]} images.")
            self.labels = torch.from_numpy(labels[self.index].astype(np.int64))
            self.class_names = [str(k) for k in range(int(labels.max()) + 1)]
        self.info = {"format": "mnist-idx", "file": self.images_file.name, "split": spec.split or "all",
                     "split_seed": MNIST_SPLIT_SEED, "test_fraction": MNIST_TEST_FRACTION, "file_images": dims[0]}
        self._pixels: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}  # read again from the file on first use

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        usage = f"expected {cls.forms}, e.g. mnist:data/mnist-test:test:500; got {text!r}."
        parts = cls.unprefixed(text).split(":")
        n = split = None
        if len(parts) > 1 and parts[-1].lstrip("-").isdigit():
            n = int(parts.pop())
            if n < 1:
                raise DataSpecError(f"N in {text!r} must be a positive integer; " + usage)
        if len(parts) > 1 and parts[-1] in MNIST_SPLITS:
            split = parts.pop()
        path = ":".join(parts)
        if not path:
            raise DataSpecError(usage)
        return DataSpec(_PREFIX, path=str(Path(path)), split=None if split == "all" else split, n=n)

    @classmethod
    def format(cls, spec: DataSpec) -> str:
        split = "" if spec.split is None else f":{spec.split}"
        n = "" if spec.n is None else f":{spec.n}"
        return f"{_PREFIX}:{spec.path}{split}{n}"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return ("idx3-ubyte" in path.name and path.is_file()) or (path.is_dir() and bool(_image_files(path)))

    def read(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if self._pixels is None:  # a plain file is mapped, not read; a gzipped one is decompressed once
            self._pixels = read_idx(self.images_file) if self.images_file.suffix == ".gz" else np.memmap(
                self.images_file, dtype=np.uint8, mode="r", offset=4 + 4 * len(self.dims), shape=self.dims)
        return np.array(self._pixels[self.index[i]]), []


def _find_images(path: Path) -> Path:
    if not path.exists():
        raise DataNotFoundError(f"MNIST data {str(path)!r} does not exist; expected {MnistSource.forms}.")
    if path.is_file():
        return path
    files = _image_files(path)
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise DataSpecError(f"{path} must hold exactly one *-images-idx3-ubyte[.gz] file (found: {found}); name "
                            "the file, e.g. mnist:DIR/t10k-images-idx3-ubyte.gz.")
    return files[0]


def split_indices(n: int, split: str | None) -> list[int]:
    """Positions of a split's images in an IDX file of ``n`` images, in file order (see :class:`MnistSource`)."""
    if split in (None, "all"):
        return list(range(n))
    order = np.random.default_rng(MNIST_SPLIT_SEED).permutation(n)
    n_test = round(MNIST_TEST_FRACTION * n)
    return sorted(int(i) for i in (order[:n_test] if split == "test" else order[n_test:]))
