"""Normalising the ``target`` argument once, for every method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

ACCEPTED = ("None (the predicted class), an int, one int per image, a (B, K) tensor/nested list of ints, "
            "or objects with a 'category' attribute such as pytorch-grad-cam's ClassifierOutputTarget")


def _as_int(t: Any) -> int:
    if hasattr(t, "category"):  # grad-cam's ClassifierOutputTarget, duck-typed
        t = t.category
    if isinstance(t, Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, (int,)) and not (hasattr(t, "__index__")):
        raise TypeError(f"Unsupported target {t!r}. A target is {ACCEPTED}.")
    return int(t.__index__())


def resolve_targets(target: Any, batch: int, num_classes: int, device: torch.device | None = None) -> Tensor | None:
    """Return ``None`` (explain each image's predicted class) or a ``(B, K)`` long tensor of classes.

    Raises:
        TypeError: for target types that are not accepted (the message lists the accepted forms).
        ValueError: for a wrong number of per-image targets, or classes outside ``[0, num_classes)``.
    """
    if target is None:
        return None
    if isinstance(target, Tensor):
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"Unsupported target tensor of dtype {target.dtype}. A target is {ACCEPTED}.")
        if target.is_floating_point() and not bool((target == target.round()).all()):
            raise ValueError(f"Target tensor {target.tolist() if target.numel() <= 8 else tuple(target.shape)} "
                             "holds non-integer values (or NaN/Inf), which would be truncated to class indices; "
                             "pass integer classes, e.g. target.round().long() if that is what you mean.")
        t = target.to(torch.long)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t.view(-1, 1) if t.shape[0] == batch else t.view(1, -1).expand(batch, -1)
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        if len(target) != batch:
            raise ValueError(f"Got {len(target)} targets for {batch} images; give one target (or one list of "
                             f"targets) per image, or a single int for all. A target is {ACCEPTED}.")
        rows = [[_as_int(u) for u in r] if isinstance(r, (Sequence, Tensor)) and not hasattr(r, "category")
                else [_as_int(r)] for r in target]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("Every image needs the same number of targets.")
        t = torch.tensor(rows, dtype=torch.long)
    else:
        t = torch.full((batch, 1), _as_int(target), dtype=torch.long)
    if t.ndim != 2 or t.shape[0] != batch:
        raise ValueError(f"Targets of shape {tuple(t.shape)} do not fit {batch} images; expected (B, K) with "
                         f"B = {batch}.")
    if t.shape[1] == 0:
        raise ValueError(f"Got an empty target; give at least one class per image. A target is {ACCEPTED}.")
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.numel():
        raise ValueError(f"Target class {bad[0].item()} is out of range: the model has {num_classes} classes "
                         f"(0..{num_classes - 1}).")
    return t.to(device) if device is not None else t


def explained_classes(logits: Tensor, targets: Tensor | None) -> Tensor:
    """The classes to explain for a flat batch: ``targets`` on the logits' device, or, for ``None``, each row's
    predicted class (arg-max of its logits). The one place where "the predicted class" is decided."""
    return logits.argmax(-1) if targets is None else targets.to(logits.device)
