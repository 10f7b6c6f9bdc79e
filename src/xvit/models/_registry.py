"""The model-variant registry: every model family xvit builds, trains and loads from a checkpoint.

A variant is a model class built from its config dataclass, with named size presets, a citation and a
declaration of whether it keeps the built-in ViT's layout (``vit_compatible``: a
:class:`~xvit.models.vit.VisionTransformer` subclass whose blocks, attention and head the built-in adapter
reads unchanged). A module that defines a variant registers it with :func:`register_model`, as timm's
``@register_model`` does; :func:`xvit.models.load_model`, ``xvit train --arch NAME`` and the adapters
look it up here. A checkpoint's ``config.json`` records the variant under ``"arch"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from xvit.registry import Registry

__all__ = ["ModelVariant", "MODEL_VARIANTS", "DEFAULT_ARCH", "register_model", "get_variant",
           "variant_of", "variants", "create_model"]

DEFAULT_ARCH = "vit"  # the variant of checkpoints whose config.json records no "arch"

M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class ModelVariant:
    """One registered model family: ``model_class(config)`` builds it from a ``config_class`` instance, a
    dataclass with ``from_dict``/``to_dict`` that round-trips through ``config.json``."""

    name: str
    model_class: type[nn.Module]
    config_class: type[Any]
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_preset: str | None = None
    vit_compatible: bool = False

    def config(self, preset: str | None = None, **overrides: Any) -> Any:
        """The config of ``preset`` (default: the variant's default preset) with ``overrides`` applied."""
        preset = preset or self.default_preset
        if preset is not None and preset not in self.presets:
            raise ValueError(f"Unknown {self.name} preset {preset!r}; choose one of {sorted(self.presets)}.")
        return self.config_class(**{**(self.presets[preset] if preset else {}), **overrides})

    def build(self, config: Any) -> nn.Module:
        """A freshly initialised model of this variant from its config object."""
        return self.model_class(config)

    def from_dict(self, d: dict[str, Any]) -> nn.Module:
        """A freshly initialised model from a config dict, as stored under ``"model"`` in ``config.json``."""
        return self.build(self.config_class.from_dict(d))


MODEL_VARIANTS: Registry[ModelVariant] = Registry("model variant", "xvit.models.variants()")


def register_model(name: str, *, config_class: type[Any], citation: str, presets: Mapping[str, Mapping[str, Any]]
                   | None = None, default_preset: str | None = None, vit_compatible: bool = False
                   ) -> Callable[[M], M]:
    """Class decorator: register a model class, built as ``cls(config_class(...))``, as variant ``name``.

    ``vit_compatible`` declares that the class keeps the built-in ViT's module layout and forward (the
    built-in adapter then explains it); ``citation`` is the paper the variant implements."""

    def decorator(cls: M) -> M:
        if default_preset is not None and default_preset not in (presets or {}):
            raise ValueError(f"default_preset {default_preset!r} of {name!r} is not one of its presets.")
        variant = ModelVariant(name, cls, config_class, dict(presets or {}), default_preset, vit_compatible)
        MODEL_VARIANTS.add(name, variant, citation=citation, model_class=f"{cls.__module__}.{cls.__qualname__}",
                           presets=list(variant.presets), default_preset=default_preset,
                           vit_compatible=vit_compatible)
        return cls

    return decorator


def get_variant(name: str) -> ModelVariant:
    """The registered variant ``name``; ``KeyError`` naming close matches otherwise."""
    return MODEL_VARIANTS.get(name)


def variant_of(model: nn.Module) -> ModelVariant | None:
    """The variant whose model class is exactly ``type(model)``, or None (unregistered classes, other libraries)."""
    for name in MODEL_VARIANTS:
        variant = MODEL_VARIANTS.get(name)
        if type(model) is variant.model_class:
            return variant
    return None


def variants() -> dict[str, dict[str, Any]]:
    """Registered model variants: name -> citation, model class, presets, default preset, vit_compatible."""
    return {name: MODEL_VARIANTS.info(name) for name in MODEL_VARIANTS}


def create_model(arch: str = DEFAULT_ARCH, preset: str | None = None, **overrides: Any) -> nn.Module:
    """A freshly initialised model of variant ``arch`` from a size preset and config overrides."""
    variant = get_variant(arch)
    return variant.build(variant.config(preset, **overrides))
