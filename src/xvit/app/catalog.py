"""What the browser may choose from: models (bundled, random-weight architectures, checkpoints under the allowed
folders) and bundled sample images, each by an opaque id; and the bounded cache of loaded models.

The browser only ever sends ids from these listings; an id is looked up in a table built here, so no string from
a client reaches the file system.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xvit.models import ASSETS, RANDOM_HF_CONFIGS, bundled_models, load_model, model_card, preprocessing_for

RANDOM_XVIT = ("nano", "tiny", "small")
RANDOM_TIMM = ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch16_224")


class UnknownEntryError(KeyError):
    """A model or sample id that the listings do not hold."""


@dataclass(frozen=True)
class ModelEntry:
    """A model the browser may pick: ``id`` (opaque), what the picker shows, and how to build it."""

    id: str
    label: str
    kind: str  # "bundled", "random" or "checkpoint"
    description: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "kind": self.kind, "description": self.description}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return lines[0] if lines else ""


def model_entries(allow_dirs: tuple[Path, ...] = ()) -> dict[str, ModelEntry]:
    """Every model the server offers, by id: bundled checkpoints, random-weight architectures (timm and
    transformers ones only where installed) and checkpoint directories directly under ``allow_dirs``."""
    entries: dict[str, ModelEntry] = {}

    def add(entry: ModelEntry) -> None:
        entries[entry.id] = entry

    for name in bundled_models():
        add(ModelEntry(name, name, "bundled", _first_line(model_card(name)) or "bundled checkpoint",
                       lambda name=name: load_model(name)))
    for preset in RANDOM_XVIT:
        spec = f"xvit-random:{preset}"
        add(ModelEntry(spec, f"xvit ViT-{preset} (random weights)", "random", "built-in ViT, seed 0",
                       lambda spec=spec: load_model(spec)))
    if _installed("timm"):
        for name in RANDOM_TIMM:
            spec = f"timm-random:{name}"
            add(ModelEntry(spec, f"timm {name} (random weights)", "random", "timm architecture, seed 0",
                           lambda spec=spec: load_model(spec)))
    if _installed("transformers"):
        for name in RANDOM_HF_CONFIGS:
            spec = f"hf-random:{name}"
            add(ModelEntry(spec, f"Hugging Face ViT {name} (random weights)", "random",
                           "transformers ViTForImageClassification, seed 0", lambda spec=spec: load_model(spec)))
    for i, folder in enumerate(allow_dirs):
        for path in _checkpoints(Path(folder)):
            rel = path.name if path != Path(folder) else Path(folder).name
            add(ModelEntry(f"checkpoint:{i}:{rel}", f"{Path(folder).name}/{rel}" if path != Path(folder) else rel,
                           "checkpoint", "checkpoint from an allowed folder", lambda path=path: load_model(path)))
    return entries


def _checkpoints(folder: Path) -> list[Path]:
    """``folder`` itself and its direct sub-directories that hold a ``config.json`` next to weights."""
    def is_checkpoint(d: Path) -> bool:
        return (d / "config.json").is_file() and any(d.glob("*.safetensors"))

    if not folder.is_dir():
        return []
    found = [folder] if is_checkpoint(folder) else []
    return found + sorted(d for d in folder.iterdir() if d.is_dir() and not d.is_symlink() and is_checkpoint(d))


@dataclass(frozen=True)
class Sample:
    """A bundled sample image."""

    id: str
    group: str
    label: str | None
    path: Path = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "label": self.label}


def sample_entries() -> dict[str, Sample]:
    """The bundled sample images (``assets/samples/<group>/samples.json``), by id (the file's stem)."""
    out: dict[str, Sample] = {}
    for index in sorted((ASSETS / "samples").glob("*/samples.json")):
        meta = json.loads(index.read_text())
        for item in meta.get("items", []):
            path = index.parent / item["file"]
            names = item.get("class_names") or []
            sample_id = path.stem if path.stem not in out else f"{index.parent.name}-{path.stem}"
            out[sample_id] = Sample(sample_id, index.parent.name, " + ".join(names) or None, path)
    return out


@dataclass
class LoadedModel:
    """A model in the cache with the lock that serialises jobs on it (explainers switch its flags)."""

    id: str
    model: nn.Module
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict[str, Any]:
        prep = preprocessing_for(self.model)
        return {"id": self.id, "preprocessing": prep.to_dict(),
                "parameters": sum(p.numel() for p in self.model.parameters())}


class ModelCache:
    """At most ``capacity`` loaded models, least recently used dropped first; each id is loaded once even when
    several jobs ask for it at the same time."""

    def __init__(self, capacity: int, device: str = "cpu") -> None:
        self.capacity = max(1, capacity)
        self.device = torch.device(device)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, entry: ModelEntry) -> LoadedModel:
        with self._lock:
            if entry.id in self._models:
                self._models.move_to_end(entry.id)
                return self._models[entry.id]
            loading = self._loading.setdefault(entry.id, threading.Lock())
        with loading:
            with self._lock:
                if entry.id in self._models:
                    return self._models[entry.id]
            loaded = LoadedModel(entry.id, entry.build().to(self.device).eval())
            with self._lock:
                self._models[entry.id] = loaded
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                self._loading.pop(entry.id, None)
            return loaded

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
