"""Pieces every ``xvit`` sub-command shares: the usage error, argument types, devices, model specs and the one
parameter syntax ``NAME.KEY=VALUE``."""

from __future__ import annotations

import argparse
import ast
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import xvit
from xvit.methods import validate_method_params
from xvit.registry import did_you_mean

DEFAULT_MODEL = "shapes-vit-tiny"
MAIN_METHODS = ["rollout", "grad_attention_rollout", "transformer_attribution", "attnlrp", "gradcam",
                "integrated_gradients"]


class UsageError(Exception):
    """A mistake in the command line or its inputs; shown as one line prefixed with the sub-command, exit 2."""


def _int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, described as a ``kind`` integer in the error."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {s!r}")
        return v
    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def rerun_command(words: Sequence[str], config: Any, flags: dict[str, str],
                  render: dict[str, Callable[[Any], list[str]]] | None = None) -> str:
    """The command line (``words`` then options) that rebuilds the dataclass ``config``: every field that differs
    from its default as ``--field-name VALUE``, a switch from ``flags`` (field -> flag) or the words of
    ``render[field](value)``; ``command`` and ``resume`` are left out."""
    default = type(config)()
    out = list(words)
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in ("command", "resume") or value == getattr(default, f.name):
            continue
        if render and f.name in render:
            out += render[f.name](value)
        else:
            out += [flags[f.name]] if f.name in flags else [f"--{f.name.replace('_', '-')}", str(value)]
    return shlex.join(out)


def config_from_namespace(cls: type, args: argparse.Namespace, command: Callable[[Any], str], **given: Any) -> Any:
    """The dataclass ``cls`` built from the parsed options that name its fields (``given`` ones passed as they are),
    with ``command`` set to the command line that rebuilds it."""
    names = {f.name for f in fields(cls)} - {"command", *given}
    config = cls(**{k: v for k, v in vars(args).items() if k in names}, **given)
    config.command = command(config)
    return config


def add_model_argument(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model SPEC``: every form of :data:`xvit.models.SPEC_FORMS` (the one model-spec grammar)."""
    from xvit.models import SPEC_FORMS

    default = DEFAULT_MODEL if default is None else default
    p.add_argument("--model", default=default,
                   help=f"model spec: {', '.join(form for form, _ in SPEC_FORMS)} (default: {default}; see "
                        "'xvit models')")


def add_run_arguments(p: argparse.ArgumentParser, batch_size: int = 8) -> None:
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"images per batch (default: {batch_size})")
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")


def add_param_argument(p: argparse.ArgumentParser, deprecated: Sequence[str] = (), owner: str = "method") -> None:
    """``--param METHOD.KEY=VALUE`` (repeatable), the one parameter option of every command that runs methods (or,
    with ``owner="analysis"``, analyses); ``deprecated`` spellings are accepted, hidden from the help, and noted by
    :func:`method_params_of`."""
    examples = ("rollout.head_fusion=max or integrated_gradients.n_steps=16" if owner == "method" else
                "guide.beta=2 or erf.probes=16")
    p.add_argument("--param", action="append", default=[], metavar=f"{owner.upper()}.KEY=VALUE",
                   help=f"a{'n' if owner[0] in 'aeiou' else ''} {owner} parameter, e.g. {examples} (repeatable)")
    for flag in deprecated:
        p.add_argument(flag, dest="deprecated_param", action="append", default=[], help=argparse.SUPPRESS)
    if deprecated:
        p.set_defaults(deprecated_flags=list(deprecated))


def method_params_of(args: argparse.Namespace, example: str = "rollout.head_fusion=max") -> dict[str, dict[str, Any]]:
    """The ``--param`` values of ``args`` as ``{METHOD: {KEY: value}}``, those given with a deprecated spelling
    (see :func:`deprecation_note`) included."""
    return parse_params([*args.param, *getattr(args, "deprecated_param", [])], "--param", example)


def deprecation_note(args: argparse.Namespace) -> str | None:
    """The note a command prints after its work when a deprecated ``--param`` spelling was used, else None."""
    if not getattr(args, "deprecated_param", []):
        return None
    return f"{' / '.join(args.deprecated_flags)} is deprecated; use --param METHOD.KEY=VALUE"


def check_methods(names: Sequence[str]) -> list[str]:
    """The method names, de-duplicated; an unknown name is a usage error with close matches."""
    registry = xvit.methods()
    for name in names:
        if name not in registry:
            raise UsageError(f"unknown method {name!r}.{did_you_mean(name, registry)} Run 'xvit methods' for the "
                             "list.")
    return list(dict.fromkeys(names))


def device(name: str) -> Any:
    """``torch.device(name)``, checked to exist on this machine."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device {name!r} cannot run a model here; use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA device is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name} does not exist; this machine has {torch.cuda.device_count()} CUDA "
                         "device(s), cuda:0 onwards")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was given but MPS is not available here; use --device cpu")
    return dev


def check_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image paths, each checked to be a regular file; the first that is not is named with what it is."""
    for p in map(Path, paths):
        if p.is_dir():
            raise UsageError(f"{str(p)!r} is a folder, not an image file; pass the images in it, e.g. {p}/*.png")
        if not p.exists():
            raise UsageError(f"image file {str(p)!r} does not exist")
        if not p.is_file():
            raise UsageError(f"{str(p)!r} is not a regular file (a pipe, socket or device); pass an image file")
    return [Path(p) for p in paths]


def output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The output folder, checked before any work starts and without creating anything: it is a writable folder,
    or it does not exist yet and its nearest existing parent is a writable folder."""
    out = Path(path)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = f"{existing} is a file" if existing.is_file() else f"{existing} is not a folder"
        raise UsageError(f"{flag} {out}: {what}; pass a folder that does not exist yet or an existing folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: no permission to write in {existing}; pass a folder you can write to")
    return out


def load_model(spec: str, image_size: int | None = None) -> Any:
    """The model for a spec of :data:`xvit.models.SPEC_FORMS`, in eval mode; errors become usage errors."""
    from xvit.models import bundled_models
    from xvit.models import load_model as load

    if not spec.strip():
        raise UsageError("--model is empty; give a bundled model name, a checkpoint directory or a spec such as "
                         "xvit-random:tiny ('xvit models' lists them)")
    if spec == DEFAULT_MODEL and spec not in bundled_models() and not Path(spec).is_dir():
        raise UsageError(f"the default model {spec!r} is not bundled with this copy of xvit. Pass --model "
                         "with a checkpoint directory, timm:NAME or hf:ID; 'xvit models' lists what is available.")
    try:
        return load(spec, image_size=image_size)
    except (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError, ImportError) as e:
        raise UsageError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from None


def parse_value(text: str) -> Any:
    """``5`` → int, ``0.5`` → float, ``(0.1, 0.2)`` → tuple, ``true``/``none`` → bool/None, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(items: Sequence[str], flag: str = "--param", example: str = "rollout.head_fusion=max"
                 ) -> dict[str, dict[str, Any]]:
    """``["NAME.KEY=VALUE", ...]`` → ``{NAME: {KEY: value}}``: the one parameter syntax of every command."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        owner, dot, key = target.partition(".")
        if not sep or not dot or not owner or not key:
            raise UsageError(f"{flag} expects NAME.KEY=VALUE, e.g. {example}; got {item!r}")
        out.setdefault(owner, {})[key] = parse_value(value)
    return out


def check_method_params(params: dict[str, dict[str, Any]], methods: Sequence[str]) -> None:
    """Every ``--param`` names a method that runs, and its values pass the method's constraints."""
    try:
        validate_method_params(params, methods)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--param: {e}") from None
