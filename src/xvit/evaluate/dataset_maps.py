"""Explanation maps for a whole data set, streamed to Parquet: :func:`explain_dataset` and :func:`load_maps`.

Every chunk of images goes through the one explanation pipeline (:func:`xvit.pipeline.explain_batch`) on an
engine of :mod:`xvit.evaluate.engines` (this process or Ray actors that each load the model once) and becomes one
row group of ``maps.parquet``, so memory stays bounded by a few chunks. One row per image:

* ``index``, ``id`` (the data set's image id; for folders the file's path relative to the folder), ``labels``
  (the data set's labels, ``null`` without them), ``predicted``, ``predicted_name``, ``probability``,
  ``top5`` and ``top5_probability``;
* per method ``M``: ``M/target`` (the explained class), ``M/map`` (the raw map as a flat float32 or float16
  list, patch grid or pixels as the method gives it), ``M/shape`` (its shape), ``M/min``, ``M/max``, ``M/mean``,
  ``M/sum``, ``M/top10_mass`` (:func:`xvit.pipeline.map_statistics`), ``M/seconds_per_image`` and, with
  overlays, ``M/overlay`` (a PNG path relative to the output folder).

The local engine writes rows in data set order; Ray writes chunks in the order they finish (``index`` gives the
position). ``maps.json`` records model, data, methods, parameters and engine. Needs pyarrow (``pip install
'xvit[ray]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xvit.data.sources import EvalDataset, load_dataset
from xvit.evaluate.engines import Engine, LocalEngine
from xvit.models import load_model, preprocessing_for
from xvit.pipeline import explain_batch
from xvit.utils.jsonable import jsonable
from xvit.utils.progress import Progress
from xvit.version import __version__

__all__ = ["MapRecord", "MapsReader", "MapsWorker", "explain_dataset", "load_maps"]

MAPS_FILE, INFO_FILE = "maps.parquet", "maps.json"
STATISTICS = ("min", "max", "mean", "sum", "top10_mass")
MAP_DTYPES = ("float32", "float16")


def import_pyarrow() -> Any:
    """``pyarrow.parquet``, or an ImportError that says how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("explain-dataset writes Parquet and needs pyarrow; install it with "
                          "pip install 'xvit[ray]' (or pip install pyarrow).") from None
    return pq


class MapsWorker:
    """Explains one chunk: ``worker((start, stop))`` returns the chunk's rows as columns (name -> list or array).

    Built from plain arguments, it opens model and data itself, once (:meth:`from_opened` wraps opened ones).
    """

    def __init__(self, model: str, data: str, methods: Sequence[str], method_params: Mapping[str, Mapping[str, Any]],
                 device: str = "cpu", max_images: int | None = None, out_dir: str | None = None,
                 overlays: bool = False, map_dtype: str = "float32", seed: int = 0) -> None:
        opened = load_model(model).to(device)
        prep = preprocessing_for(opened)
        dataset = load_dataset(data, size=tuple(prep.size), limit=max_images)
        self._setup(opened, dataset, methods, method_params, out_dir, overlays, map_dtype, seed)

    @classmethod
    def from_opened(cls, model: nn.Module, data: EvalDataset, methods: Sequence[str],
                    method_params: Mapping[str, Mapping[str, Any]], out_dir: str | None = None,
                    overlays: bool = False, map_dtype: str = "float32", seed: int = 0) -> MapsWorker:
        """A worker on an already opened model and data set."""
        worker = cls.__new__(cls)
        worker._setup(model, data, methods, method_params, out_dir, overlays, map_dtype, seed)
        return worker

    def _setup(self, model: nn.Module, data: EvalDataset, methods: Sequence[str],
               method_params: Mapping[str, Mapping[str, Any]], out_dir: str | None, overlays: bool,
               map_dtype: str, seed: int) -> None:
        self.model, self.data, self.methods = model, data, list(methods)
        self.method_params = {k: dict(v) for k, v in method_params.items()}
        self.prep = preprocessing_for(model)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.out_dir, self.overlays, self.map_dtype, self.seed = out_dir, overlays, np.dtype(map_dtype), seed

    def __call__(self, task: tuple[int, int]) -> dict[str, Any]:
        start, stop = task
        batch = self.data.load(range(start, stop), self.prep)
        display = []
        if self.overlays:
            display = [img.permute(1, 2, 0).numpy() for img in self.data.images(batch.indices, self.prep)]
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)  # every chunk alike, whichever worker runs it
            result = explain_batch(self.model, batch.x.to(self.device), self.methods,
                                   method_params=self.method_params, display=display, names=batch.ids)
        labels = None if batch.labels is None else batch.labels.reshape(len(batch.ids), -1).tolist()
        cols: dict[str, Any] = {
            "index": batch.indices, "id": batch.ids, "labels": labels or [None] * len(batch.ids),
            "predicted": [r.prediction.index for r in result.records],
            "predicted_name": [r.prediction.name for r in result.records],
            "probability": [r.prediction.probability for r in result.records],
            "top5": [[c.index for c in r.top5] for r in result.records],
            "top5_probability": [[c.probability for c in r.top5] for r in result.records]}
        for m, explanation in result.explanations.items():
            raw = explanation.raw[:, 0].detach().float().cpu().numpy().astype(self.map_dtype)
            cols[f"{m}/target"] = [r.methods[m].target.index for r in result.records]
            cols[f"{m}/map"] = raw.reshape(raw.shape[0], -1)
            cols[f"{m}/shape"] = [list(raw.shape[1:])] * raw.shape[0]
            for key in STATISTICS:
                cols[f"{m}/{key}"] = [r.methods[m].stats[key] for r in result.records]
            cols[f"{m}/seconds_per_image"] = [r.methods[m].seconds_per_image for r in result.records]
            if self.overlays:
                from xvit.viz import overlay_explanation

                folder = Path(self.out_dir) / "overlays"
                folder.mkdir(parents=True, exist_ok=True)
                paths = []
                for b, images in enumerate(overlay_explanation(explanation, display)):
                    path = f"overlays/{batch.indices[b]:07d}_{m}.png"
                    images[0].save(Path(self.out_dir) / path)
                    paths.append(path)
                cols[f"{m}/overlay"] = paths
        return cols


def _table(cols: dict[str, Any], schema: Any) -> Any:
    """The chunk's columns as a pyarrow table of ``schema``; maps become list arrays without a Python round trip."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        value = cols[field.name]
        if isinstance(value, np.ndarray):
            offsets = np.arange(value.shape[0] + 1, dtype=np.int32) * value.shape[1]
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(value.reshape(-1))))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _schema(methods: Sequence[str], overlays: bool, map_dtype: str) -> Any:
    import pyarrow as pa

    fields = [("index", pa.int64()), ("id", pa.string()), ("labels", pa.list_(pa.int64())),
              ("predicted", pa.int64()), ("predicted_name", pa.string()), ("probability", pa.float64()),
              ("top5", pa.list_(pa.int64())), ("top5_probability", pa.list_(pa.float64()))]
    for m in methods:
        fields += [(f"{m}/target", pa.int64()), (f"{m}/map", pa.list_(pa.from_numpy_dtype(np.dtype(map_dtype)))),
                   (f"{m}/shape", pa.list_(pa.int64()))]
        fields += [(f"{m}/{key}", pa.float64()) for key in STATISTICS]
        fields.append((f"{m}/seconds_per_image", pa.float64()))
        if overlays:
            fields.append((f"{m}/overlay", pa.string()))
    return pa.schema(fields)


def explain_dataset(model: str, data: str, methods: Sequence[str], out_dir: str | os.PathLike, *,
                    method_params: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int = 16,
                    max_images: int | None = None, overlays: bool = False, map_dtype: str = "float32", seed: int = 0,
                    engine: Engine | None = None, opened_model: nn.Module | None = None,
                    progress: bool = False) -> Path:
    """Explain every image of ``data`` with every method and stream the maps to ``out_dir/maps.parquet``.

    Args:
        model: a model spec (:func:`xvit.load_model`); workers re-open the model from it.
        data: a data spec (:func:`xvit.data.load_dataset`): an image folder, a manifest, ``xvit-shapes:...``,
            ``mnist:...``.
        methods: method names (:func:`xvit.methods`); each image's predicted class is explained.
        out_dir: output folder (``maps.parquet``, ``maps.json``, ``overlays/``).
        method_params: ``{method: {param: value}}``.
        batch_size: images per chunk (one explanation call and one Parquet row group).
        max_images: only the first images of ``data``.
        overlays: also write one overlay PNG per image and method.
        map_dtype: ``"float32"`` or ``"float16"`` for the stored maps.
        seed: ``torch.manual_seed`` before each chunk (for methods that draw random numbers).
        engine: where chunks run (default: this process).
        opened_model: the model of ``model``, already opened, for the local engine (saves loading it twice).
        progress: show progress on stderr (a bar on a terminal, else a status line every 10 s).

    Returns:
        The path of ``maps.parquet``.
    """
    pq = import_pyarrow()
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map_dtype must be one of {', '.join(MAP_DTYPES)}; got {map_dtype!r}.")
    engine = LocalEngine() if engine is None else engine
    method_params = {k: dict(v) for k, v in (method_params or {}).items()}
    opened = load_model(model) if opened_model is None else opened_model
    dataset = load_dataset(data, size=tuple(preprocessing_for(opened).size), limit=max_images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    param = next(opened.parameters(), None)
    device = str(param.device) if param is not None else "cpu"
    args = (model, data, list(methods), method_params, device, max_images, str(out.resolve()), overlays, map_dtype,
            seed)
    local = MapsWorker.from_opened(opened, dataset, methods, method_params, str(out.resolve()), overlays, map_dtype,
                                   seed)
    n = len(dataset)
    tasks = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    schema = _schema(methods, overlays, map_dtype)
    path, tmp = out / MAPS_FILE, out / f"{MAPS_FILE}.tmp"
    bar = Progress(n * len(methods), unit="map", desc="explain-dataset", enabled=progress)
    try:
        with engine, pq.ParquetWriter(tmp, schema) as writer:
            for cols in engine.map_unordered(MapsWorker, args, tasks, local_worker=local):
                writer.write_table(_table(cols, schema))
                bar.update(len(cols["index"]) * len(methods))
            described = engine.describe()
    finally:
        bar.close()
    os.replace(tmp, path)
    info = {"xvit": __version__, "model": model, "data": dataset.describe(), "methods": list(methods),
            "method_params": method_params, "batch_size": batch_size, "seed": seed, "map_dtype": map_dtype,
            "overlays": overlays, "rows": n, "engine": described}
    (out / INFO_FILE).write_text(json.dumps(jsonable(info), indent=2))
    return path


@dataclass(frozen=True)
class MapRecord:
    """One image's row of ``maps.parquet``: prediction, top 5, and per method the explained class, the raw map
    (its stored shape), its statistics and the overlay path (or ``None``)."""

    index: int
    id: str
    labels: list[int] | None
    predicted: int
    predicted_name: str
    probability: float
    top5: list[int]
    top5_probability: list[float]
    targets: dict[str, int]
    maps: dict[str, np.ndarray]
    stats: dict[str, dict[str, float | None]]
    overlays: dict[str, str | None]


class MapsReader:
    """Reads what :func:`explain_dataset` wrote, lazily: iterating yields :class:`MapRecord`\\ s one row group at a
    time; ``len()`` is the number of rows, :attr:`info` the run's ``maps.json``, :attr:`methods` its methods."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        pq = import_pyarrow()
        folder = Path(out_dir)
        path = folder / MAPS_FILE if folder.is_dir() else folder
        if not path.is_file():
            raise FileNotFoundError(f"no {MAPS_FILE} in {folder}; write one with 'xvit explain-dataset'.")
        self.path = path
        self.info: dict[str, Any] = json.loads((path.parent / INFO_FILE).read_text())
        self.methods: list[str] = list(self.info["methods"])
        self._file = pq.ParquetFile(path)

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def __iter__(self) -> Iterator[MapRecord]:
        for g in range(self._file.num_row_groups):
            table = self._file.read_row_group(g)
            cols = {name: table.column(name).combine_chunks() for name in table.column_names}
            maps = {m: np.asarray(cols[f"{m}/map"].values.to_numpy(zero_copy_only=False)) for m in self.methods}
            offsets = {m: cols[f"{m}/map"].offsets.to_numpy() for m in self.methods}
            plain = {k: v.to_pylist() for k, v in cols.items() if not k.endswith("/map")}
            for i in range(table.num_rows):
                yield MapRecord(
                    index=plain["index"][i], id=plain["id"][i], labels=plain["labels"][i],
                    predicted=plain["predicted"][i], predicted_name=plain["predicted_name"][i],
                    probability=plain["probability"][i], top5=plain["top5"][i],
                    top5_probability=plain["top5_probability"][i],
                    targets={m: plain[f"{m}/target"][i] for m in self.methods},
                    maps={m: maps[m][offsets[m][i]:offsets[m][i + 1]].reshape(plain[f"{m}/shape"][i])
                          for m in self.methods},
                    stats={m: {k: plain[f"{m}/{k}"][i] for k in STATISTICS} for m in self.methods},
                    overlays={m: plain.get(f"{m}/overlay", [None] * table.num_rows)[i] for m in self.methods})


def load_maps(out_dir: str | os.PathLike) -> MapsReader:
    """Open the maps :func:`explain_dataset` (``xvit explain-dataset``) wrote to ``out_dir``; iterate over the
    result for :class:`MapRecord`\\ s, read one Parquet row group (chunk) at a time::

        for record in xvit.load_maps("out/maps"):
            record.maps["rollout"]  # (h, w) raw map of the predicted class
    """
    return MapsReader(out_dir)
