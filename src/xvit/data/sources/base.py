"""Data specs, the data-source registry and the opened data set with its lazily read items.

A :class:`DataSpec` names a data set (frozen, JSON-able: it can be shipped to worker processes). Each registered
:class:`DataSource` class parses and formats the specs of its family; an instance is one opened data set whose
:meth:`~DataSource.read` returns one item by index, so nothing is read before a limit applies and the opened data
set pickles without closures. :func:`load_dataset` turns a spec into an :class:`EvalDataset`, whose
:meth:`~EvalDataset.load` feeds the items through the one pixel path of :mod:`xvit.data.preprocess`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from xvit.data.preprocess import ImageSource, normalise, prepare_image, resize_mask, to_tensor
from xvit.models import Preprocessing
from xvit.registry import Registry

__all__ = ["DATA_SOURCES", "DataNotFoundError", "DataSource", "DataSpec", "DataSpecError", "EvalBatch", "EvalDataset",
           "data_sources", "load_dataset", "parse_data_spec", "register_source"]

# A reader returns item ``i``: the image (path, PIL image or array, as xvit.data.preprocess.to_rgb takes it) and
# its masks, a list of (H, W) bool arrays (one per labelled object; empty when the data set has no masks).
Reader = Callable[[int], tuple[ImageSource, list[np.ndarray]]]


class DataSpecError(ValueError):
    """A data spec names nothing readable; the message says what was expected."""


class DataNotFoundError(DataSpecError, FileNotFoundError):
    """A data spec names a path that does not exist."""


@dataclass(frozen=True)
class DataSpec:
    """A data set by name: the registered source ``kind`` and its fields (``None`` where the kind has none).

    ``str(spec)`` is the spec's text (``xvit-shapes:single:test:200``, a folder path, ...), which
    :func:`parse_data_spec` reads back; :meth:`to_dict` / :meth:`from_dict` give its JSON form.

    Attributes:
        kind: the registered source name (see :func:`data_sources`).
        path: file or folder of file-based sources.
        variant: generator variant (xvit-shapes).
        split: split name (xvit-shapes: ``train``/``val``/``test``; MNIST: ``train``/``test``, ``None`` = all).
        n: number of items (the first ``n``); ``None`` = the source's default.
        marker: xvit-shapes ``spurious`` marker policy; ``None`` = the split's default.
    """

    kind: str
    path: str | None = None
    variant: str | None = None
    split: str | None = None
    n: int | None = None
    marker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown or "kind" not in d:
            raise DataSpecError(f"a data spec dict needs 'kind' and takes {[f.name for f in fields(cls)]}; "
                                f"got {sorted(d)}.")
        return parse_data_spec(cls(**d))

    def __str__(self) -> str:
        return _source(self.kind).format(self)


class DataSource(ABC):
    """A family of data sets. The class parses and formats the family's specs; an instance is one opened data set.

    Subclasses register with :func:`register_source`, set :attr:`forms` (the spec grammar shown in errors),
    implement :meth:`parse`, :meth:`format` and :meth:`read`, and in ``__init__`` fill :attr:`ids` and, where the
    data has them, :attr:`labels`, :attr:`class_names`, :attr:`has_masks`, :attr:`pair`, :attr:`info`. Sources
    with spurious markers set :attr:`has_markers` and implement :meth:`read_marker`. Instances hold plain data
    (paths, arrays), never closures or open handles that cannot be pickled.
    """

    name: ClassVar[str] = ""
    forms: ClassVar[str] = ""
    fallback: ClassVar[bool] = False

    def __init__(self, spec: DataSpec, *, size: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.ids: list[str] = []
        self.labels: Tensor | None = None
        self.class_names: list[str] | None = None
        self.has_masks = False
        self.pair = False
        self.has_markers = False
        self.info: dict[str, Any] = {}

    @classmethod
    @abstractmethod
    def parse(cls, text: str) -> DataSpec:
        """The spec that ``text`` (with or without the ``<name>:`` prefix) names; raises :class:`DataSpecError`."""

    @classmethod
    @abstractmethod
    def format(cls, spec: DataSpec) -> str:
        """The text of ``spec``, which :meth:`parse` reads back."""

    @classmethod
    def unprefixed(cls, text: str) -> str:
        """``text`` without this source's ``<name>:`` prefix (a bare path is returned as it is)."""
        return text[len(cls.name) + 1:] if text.startswith(cls.name + ":") else text

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether an existing ``path`` given without a prefix is data of this family."""
        return False

    @abstractmethod
    def read(self, i: int) -> tuple[ImageSource, list[np.ndarray]]:
        """Item ``i``: its image and its masks (one ``(H, W)`` bool array per labelled object, or none)."""

    def read_marker(self, i: int) -> np.ndarray:
        """Item ``i``'s ``(H, W)`` bool spurious-marker mask (all ``False`` without a marker)."""
        raise NotImplementedError(f"{self.name} data has no spurious markers.")

    def dataset(self, text: str | None = None) -> EvalDataset:
        """The opened data set; ``text`` is the spec as the user wrote it (``str(self.spec)`` by default)."""
        return EvalDataset(spec=str(self.spec) if text is None else text, ids=self.ids, labels=self.labels,
                           class_names=self.class_names, has_masks=self.has_masks, pair=self.pair, reader=self.read,
                           info=dict(self.info), marker_reader=self.read_marker if self.has_markers else None,
                           data_spec=self.spec)


DATA_SOURCES: Registry[type[DataSource]] = Registry("data source", "xvit.data.data_sources()")


def register_source(name: str, *, fallback: bool = False, **info: Any) -> Callable[[type[DataSource]],
                                                                                   type[DataSource]]:
    """Class decorator: register a :class:`DataSource` under ``name``, the prefix of its specs (``name:...``).

    A bare path goes to the one source whose :meth:`~DataSource.detect` accepts it; a ``fallback`` source (image
    folders) takes paths that no other source detects.
    """
    def decorator(cls: type[DataSource]) -> type[DataSource]:
        cls.name, cls.fallback = name, fallback
        DATA_SOURCES.add(name, cls, forms=cls.forms, **info)
        return cls

    return decorator


def data_sources() -> dict[str, dict[str, Any]]:
    """The registered data sources: name -> info (``forms``: the spec grammar, and what the source registered)."""
    return {name: DATA_SOURCES.info(name) for name in DATA_SOURCES}


def _source(kind: str) -> type[DataSource]:
    try:
        return DATA_SOURCES.get(kind)
    except KeyError as e:
        raise DataSpecError(e.args[0]) from None


def _forms() -> str:
    return "; ".join(cls.forms for cls in map(DATA_SOURCES.get, DATA_SOURCES))


def _prefix(text: str) -> str | None:
    """The registered source that ``text`` names by its ``<name>:`` prefix, if any."""
    return next((name for name in DATA_SOURCES if text == name or text.startswith(name + ":")), None)


def parse_data_spec(spec: str | os.PathLike | DataSpec) -> DataSpec:
    """The :class:`DataSpec` a text names: ``<source>:...`` for a registered source, or an existing path that a
    source detects (a folder that no other source claims is an image folder). A :class:`DataSpec` is checked.

    Raises:
        DataSpecError: the text is malformed or names nothing readable (:class:`DataNotFoundError` for a missing
            path).
    """
    if isinstance(spec, DataSpec):
        cls = _source(spec.kind)
        checked = cls.parse(cls.format(spec))  # fills in defaults, normalises paths
        given = {k: str(Path(v)) if k == "path" else v for k, v in spec.to_dict().items() if v is not None}
        if any(getattr(checked, k) != v for k, v in given.items()):
            raise DataSpecError(f"{spec!r} is not a valid {spec.kind} spec; {cls.forms} reads it as {checked!r}.")
        return checked
    text = str(spec)
    prefix = _prefix(text)
    if prefix is not None:
        return DATA_SOURCES.get(prefix).parse(text)
    path = Path(text)
    if not path.exists():
        raise DataNotFoundError(f"data {text!r} is neither an existing folder or file nor a spec of a registered "
                                f"source; --data takes {_forms()}.")
    classes = [DATA_SOURCES.get(name) for name in DATA_SOURCES]
    found = [cls for cls in classes if not cls.fallback and cls.detect(path)] or \
            [cls for cls in classes if cls.fallback and cls.detect(path)]
    if not found:
        raise DataSpecError(f"data {'file' if path.is_file() else 'path'} {text!r} is in no format a data source "
                            f"reads; --data takes {_forms()}.")
    if len(found) > 1:
        names = [cls.name for cls in found]
        raise DataSpecError(f"data {text!r} could be read as {' or '.join(names)}; name the source, e.g. "
                            f"{names[0]}:{text}.")
    return found[0].parse(text)


def load_dataset(spec: str | os.PathLike | DataSpec, *, size: tuple[int, int] | None = None,
                 limit: int | None = None) -> EvalDataset:
    """Open the data set a spec names (:func:`data_sources` lists the forms).

    Args:
        spec: a spec text (``xvit-shapes:<variant>:<split>[:N][:marker=MODE]``, ``mnist:PATH[:SPLIT][:N]``, an
            image folder, a ``gtsegs_ijcv.mat`` file, ...) or a :class:`DataSpec`.
        size: ``(H, W)`` of the model's input; generated data (xvit-shapes) is rendered at that size where it
            can be, so no resize happens. Other sources are resized when loaded.
        limit: keep only the first ``limit`` items; applied when opening, before anything is read.

    Raises:
        DataSpecError: the spec is malformed or names nothing readable.
        ImportError: reading the format needs a package that is not installed (h5py for ``.mat`` files).
    """
    data_spec = parse_data_spec(spec)
    if limit is not None:
        if limit < 1:
            raise DataSpecError(f"limit must be a positive number of images; got {limit}.")
        data_spec = replace(data_spec, n=limit if data_spec.n is None else min(data_spec.n, limit))
    source = _source(data_spec.kind)(data_spec, size=size)
    # A prefixed spec keeps the user's text (e.g. without the default N); a path is shown normalised.
    data = source.dataset(spec if isinstance(spec, str) and _prefix(spec) is not None else None)
    if len(data) == 0:
        raise DataSpecError(f"data {data.spec!r} holds no images.")
    if limit is not None:
        data.info["limit"] = len(data)
    return data


@dataclass(frozen=True)
class EvalBatch:
    """Images ``indices`` of an :class:`EvalDataset`, ready for a model.

    Attributes:
        x: ``(B, C, H, W)`` float32, normalised with the model's mean and std.
        masks: ``(B, H, W)`` bool (one object per image) or ``(B, 2, H, W)`` (pair data, matching ``labels``);
            ``None`` without masks.
        labels: ``(B,)`` or ``(B, 2)`` long in the data set's class indexing; ``None`` without labels.
        ids: image ids.
        indices: positions in the data set.
        marker_masks: ``(B, H, W)`` bool masks of a spurious marker (all ``False`` on images without one);
            ``None`` for data without markers (only xvit-shapes ``spurious`` has them).
    """

    x: Tensor
    masks: Tensor | None
    labels: Tensor | None
    ids: list[str]
    indices: list[int]
    marker_masks: Tensor | None = None


@dataclass
class EvalDataset:
    """A data set: ids, labels and masks, with images read on demand.

    Attributes:
        spec: the data spec it came from, as text.
        ids: one id per image (file path relative to the folder, ``shapes:<variant>:<split>:<i>``, ``gtsegs:<i>``,
            ``mnist:<i>``).
        labels: ``(N,)`` or ``(N, 2)`` (pair data) long, or ``None`` when the data set has no labels.
        class_names: names of the data set's class indices, if known.
        has_masks: whether every image has ground-truth masks.
        pair: whether images show two labelled objects (``labels`` and masks have a second axis of 2).
        reader: returns item ``i``: its image (path, PIL image or array) and its list of masks.
        info: provenance (format, generator version, seeds …).
        marker_reader: returns image ``i``'s ``(H, W)`` bool marker mask (empty without a marker); ``None``
            for data without markers.
        data_spec: the :class:`DataSpec` it was opened from (``None`` for a data set built by hand).
    """

    spec: str
    ids: list[str]
    labels: Tensor | None
    class_names: list[str] | None
    has_masks: bool
    pair: bool
    reader: Reader = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    marker_reader: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    data_spec: DataSpec | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_markers(self) -> bool:
        """Whether images carry spurious-marker masks (xvit-shapes ``spurious``)."""
        return self.marker_reader is not None

    def subset(self, n: int) -> EvalDataset:
        """The first ``n`` images."""
        n = min(int(n), len(self))
        spec = None if self.data_spec is None else replace(self.data_spec, n=n)
        return replace(self, ids=self.ids[:n], labels=None if self.labels is None else self.labels[:n],
                       info={**self.info, "limit": n}, data_spec=spec)

    def images(self, indices: Sequence[int], preprocessing: Preprocessing) -> Tensor:
        """Images ``indices`` as uint8 ``(B, C, H, W)`` at the model's size, before normalisation."""
        return to_tensor([prepare_image(self.reader(int(i))[0], preprocessing) for i in indices])

    def load(self, indices: Sequence[int], preprocessing: Preprocessing) -> EvalBatch:
        """Read, resize and normalise images ``indices`` (and their masks) for a model.

        Images are resized (and, for a model with a ``crop_pct``, centre-cropped) with the model's interpolation,
        and masks and marker masks go through the same resize (nearest neighbour) and crop
        (:func:`~xvit.data.preprocess.apply_geometry`).

        Args:
            indices: positions in the data set.
            preprocessing: the model's :class:`~xvit.models.Preprocessing` (size, mean, std, interpolation).
        """
        indices = [int(i) for i in indices]
        images, masks, markers = [], [], []
        for i in indices:
            image, image_masks = self.reader(i)
            images.append(prepare_image(image, preprocessing))
            if self.has_masks:
                if len(image_masks) != (2 if self.pair else 1):
                    raise DataSpecError(f"{self.ids[i]}: expected {2 if self.pair else 1} mask(s), found "
                                        f"{len(image_masks)}.")
                masks.append(np.stack([resize_mask(m, preprocessing) for m in image_masks]))
            if self.marker_reader is not None:
                markers.append(resize_mask(self.marker_reader(i), preprocessing))
        mask_tensor = None
        if self.has_masks:
            mask_tensor = torch.from_numpy(np.stack(masks))
            mask_tensor = mask_tensor if self.pair else mask_tensor[:, 0]
        return EvalBatch(x=normalise(to_tensor(images), preprocessing), masks=mask_tensor,
                         labels=None if self.labels is None else self.labels[indices],
                         ids=[self.ids[i] for i in indices], indices=indices,
                         marker_masks=torch.from_numpy(np.stack(markers)) if markers else None)

    def describe(self) -> dict[str, Any]:
        """Provenance: spec, size, kind and format details."""
        return {"spec": self.spec, "n": len(self), "pair": self.pair, "has_labels": self.labels is not None,
                "has_masks": self.has_masks, "has_markers": self.has_markers, "class_names": self.class_names,
                **self.info}
