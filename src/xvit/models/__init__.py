"""Loading models: bundled checkpoints, timm, Hugging Face, and checkpoint directories.

A checkpoint directory holds ``model.safetensors`` and ``config.json``. xvit's own ``config.json`` has
``"architecture": "xvit-vit"`` (the mark of an xvit checkpoint, whatever the variant), the model variant
under ``"arch"`` (see :func:`variants`; checkpoints without it are ``"vit"``), its config under ``"model"``,
``"preprocessing"`` (size, mean, std, interpolation, and ``crop_pct``/``crop_mode`` when the model crops),
``"class_names"`` and free-form training metadata; a directory whose ``config.json`` has a Hugging Face
``model_type`` is loaded with transformers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from xvit.models import (
    svda,  # noqa: F401  (registers the 'svda' variant)
    winft,  # noqa: F401  (registers the 'winft' variant)
)
from xvit.models._registry import (
    DEFAULT_ARCH,
    MODEL_VARIANTS,
    ModelVariant,
    create_model,
    get_variant,
    register_model,
    variant_of,
    variants,
)
from xvit.models.vit import VIT_PRESETS, VisionTransformer, ViTConfig, create_vit

__all__ = [
    "CheckpointError", "Preprocessing", "VisionTransformer", "ViTConfig", "VIT_PRESETS", "create_vit", "load_model",
    "save_checkpoint", "bundled_models", "bundled_model_dir", "preprocessing_for", "hf_preprocessing",
    "class_names_for",
    "model_card", "ModelVariant", "MODEL_VARIANTS", "DEFAULT_ARCH", "register_model", "get_variant", "variant_of",
    "variants", "create_model",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_DIR = ASSETS / "models"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded: its message names the file and what is wrong with it."""


def _read_json(path: Path, what: str = "config") -> dict[str, Any]:
    """The JSON object in ``path``; a :class:`CheckpointError` naming the file for anything else. Only regular files
    are opened (a FIFO would block)."""
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"{path} {state}; a checkpoint directory holds it as a JSON file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); fix or "
                              "re-create the file (xvit.models.save_checkpoint writes it).") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Cannot read {path} as UTF-8 text ({type(e).__name__}: {e}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, but a {what} file is a JSON object "
                              "({...}).")
    return data


def _refuse_pickles(path: Path) -> None:
    """A directory with pickled weights but no safetensors file: xvit never unpickles (it can run code)."""
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles and not any(p.suffix == ".safetensors" for p in path.iterdir()):
        raise CheckpointError(
            f"{path / pickles[0]} holds pickled weights, and xvit never unpickles files (loading a pickle can run "
            "arbitrary code). If you trust the file, convert it once: python -c \"import torch; from "
            f"safetensors.torch import save_file; save_file(torch.load('{path / pickles[0]}', weights_only=True), "
            f"'{path / 'model.safetensors'}')\"")


def _check_config_fields(config_class: type[Any], values: dict[str, Any], where: str) -> None:
    """Type and range of each known field of a config dataclass, before any model is built: ints and floats whose
    default is positive must be positive (others non-negative), floats finite, and no bool passes for a number."""
    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):  # a registered variant's annotations may name types only its module resolves
        hints = {}
    for f in dataclasses.fields(config_class):
        if f.name not in values:
            continue
        v, kind = values[f.name], hints.get(f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        problem = None
        if kind is bool and not isinstance(v, bool):
            problem = "must be true or false"
        elif kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            problem = "must be an integer"
        elif kind is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            problem = "must be a finite number"
        elif kind is str and not isinstance(v, str):
            problem = "must be a string"
        elif kind in (int, float) and v < (1e-300 if isinstance(default, (int, float)) and default > 0 else 0):
            problem = "must be positive" if default and default > 0 else "must be >= 0"
        if problem:
            raise CheckpointError(f"{where}: {f.name} = {v!r} is invalid; it {problem}.")


CROP_MODES = ("center", "squash")
"""How :attr:`Preprocessing.crop_mode` reaches the scaled size before the centre crop (timm's names)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a model expects its input: its geometry (resize, optionally centre-crop, to ``size`` (H, W)), then
    pixels scaled to [0, 1] and normalised with ``mean`` and ``std``.

    ``crop_pct`` ``None`` resizes straight to ``size`` (the whole image, squashed if its aspect differs: xvit's
    own checkpoints). A number follows timm's evaluation transform and the Hugging Face image processors: scale
    to ``floor(size / crop_pct)``, keeping the aspect ratio (``crop_mode="center"``: the shorter side reaches it)
    or not (``"squash"``: both sides), then cut the centred ``size`` out of it. The geometry itself is
    :func:`xvit.data.preprocess.crop_geometry`.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float | None = None
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.crop_pct is not None and not (math.isfinite(self.crop_pct) and self.crop_pct > 0):
            raise ValueError(f"crop_pct must be a positive number or None; got {self.crop_pct!r}.")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {', '.join(CROP_MODES)}; got {self.crop_mode!r}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        size = d.get("size", (224, 224))
        size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        crop_pct = d.get("crop_pct")
        return cls(size=size, mean=tuple(float(m) for m in d.get("mean", cls.mean)),
                   std=tuple(float(s) for s in d.get("std", cls.std)),
                   interpolation=str(d.get("interpolation", "bilinear")),
                   crop_pct=None if crop_pct is None else float(crop_pct), crop_mode=str(d.get("crop_mode", "center")))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; the crop fields only when there is a crop (so configs without one read as before)."""
        d = asdict(self)
        if self.crop_pct is None:
            del d["crop_pct"], d["crop_mode"]
        return d


def bundled_models() -> dict[str, dict[str, Any]]:
    """Names of the checkpoints shipped inside the package, with their ``config.json``."""
    out = {}
    if BUNDLED_DIR.is_dir():
        for d in sorted(BUNDLED_DIR.iterdir()):
            if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
                out[d.name] = json.loads((d / "config.json").read_text())
    return out


def bundled_model_dir(name: str) -> Path:
    return BUNDLED_DIR / name


def model_card(name: str) -> str:
    """The model card (Markdown) of a bundled model."""
    path = BUNDLED_DIR / name / "MODEL_CARD.md"
    return path.read_text() if path.is_file() else ""


def save_checkpoint(model: nn.Module, directory: str | os.PathLike, *, preprocessing: Preprocessing,
                    class_names: list[str], **metadata: Any) -> Path:
    """Write ``model.safetensors`` and ``config.json`` for a model of a registered variant (see
    :func:`variants`); returns the directory."""
    variant = variant_of(model)
    if variant is None:
        raise ValueError(f"save_checkpoint writes models of registered variants ({', '.join(MODEL_VARIANTS)}); "
                         f"{type(model).__qualname__} is not one (see xvit.models.register_model).")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    config = {"architecture": "xvit-vit", "arch": variant.name, "model": model.config.to_dict(),
              "preprocessing": preprocessing.to_dict(), "class_names": list(class_names), **metadata}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _load_xvit_dir(path: Path) -> nn.Module:
    """An xvit checkpoint directory, its ``config.json`` validated before the model is built."""
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    config = _read_json(cfg_file)
    arch = config.get("arch", DEFAULT_ARCH)
    if not isinstance(arch, str) or arch not in MODEL_VARIANTS:
        raise CheckpointError(f"{cfg_file} names model variant {arch!r}, which is not registered (registered: "
                              f"{', '.join(MODEL_VARIANTS)}); import the module that registers it first.")
    if "model" not in config:
        raise CheckpointError(f"{cfg_file} has no \"model\" section (the architecture's config); re-create it with "
                              "xvit.models.save_checkpoint.")
    for key, kind in (("model", dict), ("preprocessing", dict), ("class_names", list)):
        if key in config and not isinstance(config[key], kind):
            raise CheckpointError(f"{cfg_file}: \"{key}\" is a JSON {type(config[key]).__name__}; it must be a "
                                  f"JSON {'object' if kind is dict else 'array'}.")
    variant = get_variant(arch)
    _check_config_fields(variant.config_class, config["model"], f"{cfg_file} \"model\"")
    try:
        preprocessing = Preprocessing.from_dict(config.get("preprocessing", {}))
        if len(preprocessing.size) != 2 or min(preprocessing.size) < 1 or min(preprocessing.std) <= 0:
            raise ValueError("size must be two positive integers and std positive")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_file}: \"preprocessing\" is invalid ({e}); it holds size [H, W], mean and std "
                              "(three numbers each) and interpolation.") from None
    try:
        model = variant.from_dict(config["model"])
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, AssertionError) as e:
        raise CheckpointError(f"{cfg_file}: the \"model\" section does not describe a buildable {arch} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).") from None
    _refuse_pickles(path)
    if not weights.is_file():
        state = "is not a regular file" if weights.exists() else "does not exist"
        raise CheckpointError(f"{weights} {state}; an xvit checkpoint holds its weights in model.safetensors.")
    try:
        state_dict = load_file(str(weights))
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception) for corrupt files
        raise CheckpointError(f"{weights} is not a readable safetensors file ({str(e).splitlines()[0]}); re-save "
                              "the weights with xvit.models.save_checkpoint or safetensors.torch.save_file.") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{weights} does not match the architecture in {cfg_file}: {detail}") from None
    model.xvit_preprocessing = preprocessing
    model.xvit_class_names = [str(c) for c in config.get("class_names", [])]
    return model.eval()


def _load_timm(name: str) -> nn.Module:
    from xvit._compat.torchvision_ops import ensure_torchvision_importable

    ensure_torchvision_importable()
    try:
        import timm
    except ImportError as e:
        raise ImportError("Loading 'timm:' models needs timm: pip install 'xvit[timm]' -c constraints.txt") from e
    if not timm.is_model(name):
        from xvit.registry import did_you_mean

        raise ValueError(f"timm has no model {name!r}.{did_you_mean(name, timm.list_models())} See "
                         "timm.list_models().")
    overlay = _timm_offline_weights(name)
    try:
        model = timm.create_model(name, pretrained=True, **overlay)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"timm has no model {name!r}; see timm.list_models().") from None
        raise
    except Exception as e:  # network / hub failures arrive as many exception types
        raise RuntimeError(
            f"Could not fetch pretrained weights for timm model {name!r} ({type(e).__name__}: {e}). "
            "This machine may be offline. Create the model yourself, e.g. "
            f"timm.create_model({name!r}, pretrained=False), load weights from a local file, and pass "
            "the model object to xvit."
        ) from None
    return model.eval()


HUB_PROBE_SECONDS = 3.0  # how long a connection to the Hugging Face Hub may take before it counts as unreachable


def _hub_offline() -> str | None:
    """Why the Hugging Face Hub cannot be reached (``HF_HUB_OFFLINE`` set, or no connection within
    :data:`HUB_PROBE_SECONDS`), or None. Behind a proxy nothing is probed: the Hub client knows the way."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set (offline mode)"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=HUB_PROBE_SECONDS).close()
    except OSError as e:
        return f"the Hugging Face Hub is not reachable, this machine looks offline ({type(e).__name__}: {e})"
    return None


def _timm_offline_weights(name: str) -> dict[str, Any]:
    """Offline, the cached weights of timm model ``name`` as ``create_model``'s ``pretrained_cfg_overlay`` (so timm
    reads the file instead of retrying the network for a minute); an error with the way out when none are cached.
    Online: ``{}``."""
    reason = _hub_offline()
    if reason is None:
        return {}
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None)
    for file in ("model.safetensors", "open_clip_model.safetensors"):
        cached = try_to_load_from_cache(repo, file) if repo else None
        if isinstance(cached, str):
            return {"pretrained_cfg_overlay": {"file": cached}}
    raise RuntimeError(
        f"timm:{name} needs pretrained weights from the Hugging Face Hub, but {reason} and they are not in the "
        f"local cache. Use timm-random:{name} for the architecture with random weights, pass a checkpoint "
        "directory, or download the weights once on a machine with network access"
        f"{' (unset HF_HUB_OFFLINE)' if reason.startswith('HF_HUB_OFFLINE') else ''}.")


def _load_hf(path_or_id: str) -> nn.Module:
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as e:
        raise ImportError("Loading 'hf:' models needs transformers: pip install 'xvit[hf]'") from e
    local = Path(path_or_id)
    if local.is_dir():
        _refuse_pickles(local)
    offline = None if local.is_dir() else _hub_offline()  # offline: the cache or a fast failure, not retries
    try:
        model = AutoModelForImageClassification.from_pretrained(path_or_id, local_files_only=offline is not None)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"Hugging Face checkpoint {path_or_id!r} cannot be loaded: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except OSError as e:
        if offline is not None:
            raise RuntimeError(
                f"hf:{path_or_id} is not in the local Hugging Face cache and {offline}. Pass a local directory "
                "that holds config.json and the weights, or use hf-random:vit-tiny for a random-weight ViT."
            ) from None
        raise RuntimeError(
            f"Could not load Hugging Face model {path_or_id!r}: {e}. Offline, pass a local directory "
            "that holds config.json and the weights."
        ) from None
    prep = Path(path_or_id) / "preprocessor_config.json"
    if prep.is_file():
        model.xvit_preprocessing = hf_preprocessing(_read_json(prep, "preprocessor"))
    return model.eval()


def hf_preprocessing(p: dict[str, Any]) -> Preprocessing:
    """A Hugging Face ``preprocessor_config.json`` as a :class:`Preprocessing`, with the image processors' geometry.

    ``size`` ``{"height", "width"}`` resizes straight to it; ``{"shortest_edge": S}`` keeps the aspect ratio. A
    centre crop to ``crop_size`` (``do_center_crop``) becomes ``crop_pct`` = crop / resize; ConvNeXt-style
    processors give ``crop_pct`` themselves (resize the shortest edge to ``S / crop_pct``, crop ``S``; none at
    ``S >= 384``). Without a crop the image is resized straight to the model's size.
    """
    def pair(v: Any, default: int) -> tuple[int, int]:
        if isinstance(v, dict):
            if "shortest_edge" in v:
                return int(v["shortest_edge"]), int(v["shortest_edge"])
            return int(v.get("height", default)), int(v.get("width", default))
        return (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(s) for s in v)

    raw_size = p.get("size", {"height": 224, "width": 224})
    size = pair(raw_size, 224)
    keep_aspect = isinstance(raw_size, dict) and "shortest_edge" in raw_size
    crop_pct = None
    if p.get("do_center_crop", "crop_size" in p) and "crop_size" in p:
        crop = pair(p["crop_size"], size[0])
        crop_pct, size = crop[0] / size[0], crop
    elif keep_aspect and "crop_pct" in p:
        crop_pct = float(p["crop_pct"]) if size[0] < 384 else None
    elif keep_aspect:
        crop_pct = 1.0  # the shortest edge reaches the size; the model's square input is its centre
    resample = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    return Preprocessing(size=size, mean=tuple(float(m) for m in p.get("image_mean", (0.5,) * 3)),
                         std=tuple(float(s) for s in p.get("image_std", (0.5,) * 3)),
                         interpolation=resample.get(p.get("resample", 2), "bilinear"),
                         crop_pct=crop_pct, crop_mode="center" if keep_aspect else "squash")


# Hugging Face architectures available as ``hf-random:NAME`` (random weights, nothing downloaded).
RANDOM_HF_CONFIGS = {"vit-tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                                      intermediate_size=768, image_size=224, patch_size=16, num_labels=1000)}
SPEC_FORMS = (
    ("NAME", "a bundled model (see 'xvit models')"),
    ("DIR", "a checkpoint directory with config.json and model.safetensors (xvit) or a Hugging Face model"),
    ("timm:NAME", "a timm model with pretrained weights (needs network access or a cache)"),
    ("hf:ID_OR_DIR", "a Hugging Face image classifier"),
    ("xvit-random:PRESET", "a built-in ViT with random weights (nano, tiny, small, base), seed 0"),
    ("timm-random:NAME", "timm.create_model(NAME, pretrained=False), seed 0"),
    ("hf-random:NAME", f"a Hugging Face ViT with random weights ({', '.join(RANDOM_HF_CONFIGS)}), seed 0"),
)


def _random_model(kind: str, name: str, image_size: int | None) -> nn.Module:
    """A random-weight model of ``kind`` (``xvit``, ``timm``, ``hf``) built under seed 0; the caller's random state
    is left as it was."""
    import torch

    size = {} if image_size is None else {"img_size": image_size}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "xvit":
            return create_vit(name, **size).eval()
        if kind == "timm":
            from xvit._compat.torchvision_ops import ensure_torchvision_importable

            ensure_torchvision_importable()
            import timm

            try:
                return timm.create_model(name, pretrained=False, **size).eval()
            except TypeError:  # models without an img_size argument take any input size
                return timm.create_model(name, pretrained=False).eval()
        from transformers import ViTConfig, ViTForImageClassification

        if name not in RANDOM_HF_CONFIGS:
            raise ValueError(f"Unknown hf-random architecture {name!r}; choose from {', '.join(RANDOM_HF_CONFIGS)}.")
        config = dict(RANDOM_HF_CONFIGS[name], **({} if image_size is None else {"image_size": image_size}))
        return ViTForImageClassification(ViTConfig(**config)).eval()


def load_model(spec: str | os.PathLike, *, image_size: int | None = None) -> nn.Module:
    """Load a model from a spec (:data:`SPEC_FORMS`) and put it in eval mode.

    Args:
        spec: a bundled model name (see :func:`bundled_models`), a checkpoint directory, ``timm:<name>``
            (pretrained weights, only where timm can reach them), ``hf:<path or hub id>``, or a random-weight
            architecture ``xvit-random:<preset>``, ``timm-random:<name>``, ``hf-random:<name>``.
        image_size: input side for the random-weight architectures (their default otherwise).
    """
    for prefix, kind in (("xvit-random:", "xvit"), ("timm-random:", "timm"), ("hf-random:", "hf")):
        if str(spec).startswith(prefix):
            return _random_model(kind, str(spec)[len(prefix):], image_size)
    s = str(spec)
    if not s.strip():
        raise ValueError("The model spec is empty; give a bundled model name, a checkpoint directory, timm:NAME, "
                         "hf:ID or a random-weight spec such as xvit-random:tiny ('xvit models' lists them).")
    if s.startswith("timm:"):
        return _load_timm(s[5:])
    if s.startswith("hf:"):
        return _load_hf(s[3:])
    bundled = bundled_models()
    if s in bundled:
        return _load_xvit_dir(BUNDLED_DIR / s)
    path = Path(s)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            _refuse_pickles(path)
            raise FileNotFoundError(f"{path} holds no config.json; a checkpoint directory needs config.json "
                                    "and model.safetensors.")
        cfg = _read_json(cfg_file)
        if cfg.get("architecture") == "xvit-vit":
            return _load_xvit_dir(path)
        if "model_type" in cfg:
            return _load_hf(str(path))
        raise CheckpointError(f"{cfg_file} is neither an xvit checkpoint (\"architecture\": \"xvit-vit\") nor a "
                              "Hugging Face config (\"model_type\").")
    if path.exists():
        kind = "a file" if path.is_file() else "not a regular file or directory"
        raise ValueError(f"{s!r} is {kind}; pass the checkpoint directory that holds config.json and "
                         "model.safetensors, or another spec form ('xvit models' lists them).")
    names = ", ".join(bundled) or "none installed"
    raise ValueError(
        f"Cannot load model {s!r}: not a bundled model ({names}), not a directory, and not one of the spec forms "
        f"{', '.join(form for form, _ in SPEC_FORMS[2:])}. Run 'xvit models' to list what is available."
    )


def preprocessing_for(model: nn.Module) -> Preprocessing:
    """The model's own preprocessing: xvit checkpoints, timm ``pretrained_cfg``, HF processor config."""
    prep = getattr(model, "xvit_preprocessing", None)
    if isinstance(prep, Preprocessing):
        return prep
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and "mean" in cfg:
        size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        if getattr(model, "dynamic_img_size", False) is False and hasattr(model, "patch_embed"):
            size = tuple(getattr(model.patch_embed, "img_size", size))
        crop = cfg.get("crop_pct")
        return Preprocessing(size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                             interpolation=str(cfg.get("interpolation", "bicubic")),
                             crop_pct=None if crop is None else float(crop),
                             crop_mode="squash" if cfg.get("crop_mode") == "squash" else "center")
    if isinstance(model, VisionTransformer):
        s = model.config.img_size
        return Preprocessing(size=(s, s))
    hf_cfg = getattr(model, "config", None)
    if hf_cfg is not None and hasattr(hf_cfg, "image_size"):
        s = hf_cfg.image_size
        return Preprocessing(size=(s, s) if isinstance(s, int) else tuple(s))
    return Preprocessing()


def class_names_for(model: nn.Module, num_classes: int) -> list[str]:
    """Human-readable class names, falling back to ImageNet labels for 1000 classes and indices otherwise."""
    names = getattr(model, "xvit_class_names", None)
    if names and len(names) == num_classes:
        return list(names)
    hf_cfg = getattr(model, "config", None)
    id2label = getattr(hf_cfg, "id2label", None)
    if id2label and len(id2label) == num_classes and not str(id2label.get(0, "")).startswith("LABEL_"):
        return [str(id2label[i]) for i in range(num_classes)]
    if num_classes == 1000 and (ASSETS / "imagenet_labels.json").is_file():
        return json.loads((ASSETS / "imagenet_labels.json").read_text())
    return [str(i) for i in range(num_classes)]

