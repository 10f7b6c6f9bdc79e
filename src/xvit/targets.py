"""Normalising the ``target`` argument once, for every method: class indices, class names, ``"pred"`` and the
K best classes, per image or for all."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

ACCEPTED = ("None or 'pred' (the predicted class), an int or a class name, one of those per image (e.g. "
            "['tabby cat', 3, 'pred']), a (B, K) tensor/nested list, or objects with a 'category' attribute such as "
            "pytorch-grad-cam's ClassifierOutputTarget")
PREDICTED = ("pred", "predicted")
"""Strings that mean "this image's predicted class"."""

ClassNames = Sequence[str] | Callable[[], Sequence[str]]


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", name).casefold().split())


def class_index(name: str, class_names: Sequence[str]) -> int:
    """The index of class ``name`` among ``class_names``: an exact match, else the one match ignoring case,
    underscores and hyphens, else the one class whose name starts with the words of ``name`` (``tabby`` ->
    ``tabby cat``). Integer strings (``"3"``) are indices.

    Raises:
        ValueError: unknown (with the closest names) or ambiguous names.
    """
    text = name.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    names = [str(c) for c in class_names]
    if text in names:
        return names.index(text)
    query, normal = _normalise(text), [_normalise(c) for c in names]
    for matches in ([i for i, c in enumerate(normal) if c == query],
                    [i for i, c in enumerate(normal) if query and (c + " ").startswith(query + " ")]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(f"{names[i]!r} ({i})" for i in matches[:5])
            raise ValueError(f"Class name {name!r} is ambiguous: it matches {shown}"
                             f"{' and more' if len(matches) > 5 else ''}; give the full name or the index.")
    if all(c == str(i) for i, c in enumerate(names)):
        raise ValueError(f"Class name {name!r} cannot be resolved: this model has no class names (its classes are "
                         f"0..{len(names) - 1}); give a class index.")
    close = difflib.get_close_matches(query, normal, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(names[normal.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"Unknown class name {name!r}.{hint} Give a class index 0..{len(names) - 1} or one of the "
                     "model's class names (xvit.models.class_names_for(model)).")


def _out_of_range(c: int, num_classes: int) -> ValueError:
    return ValueError(f"Target class {c} is out of range: the model has {num_classes} classes (0..{num_classes - 1}).")


def _as_int(t: Any, names: Callable[[], Sequence[str]], num_classes: int) -> int:
    """One target as a class index, or -1 for "the predicted class"."""
    if hasattr(t, "category"):  # grad-cam's ClassifierOutputTarget, duck-typed
        t = t.category
    if isinstance(t, str):
        if t.strip().casefold() in PREDICTED:
            return -1
        t = class_index(t, names())
    if isinstance(t, Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, (int,)) and not (hasattr(t, "__index__")):
        raise TypeError(f"Unsupported target {t!r}. A target is {ACCEPTED}.")
    if int(t.__index__()) < 0:
        raise _out_of_range(int(t.__index__()), num_classes)
    return int(t.__index__())


def resolve_targets(target: Any, batch: int, num_classes: int, device: torch.device | None = None, *,
                    class_names: ClassNames | None = None, top_k: int | None = None) -> Tensor | None:
    """Return ``None`` (explain each image's predicted class) or a ``(B, K)`` long tensor of classes.

    Class names are looked up in ``class_names`` (:func:`class_index`). Entries ``-r`` stand for each image's
    r-th most probable class (``"pred"`` is ``-1``; ``top_k=K`` gives ``-1 .. -K``); :func:`fill_predicted` replaces
    them once the logits are known.

    Raises:
        TypeError: for target types that are not accepted (the message lists the accepted forms).
        ValueError: for a wrong number of per-image targets, classes outside ``[0, num_classes)``, or unknown class
            names.
    """
    if top_k is not None:
        if target is not None:
            raise ValueError("Give either target or top_k, not both.")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_classes:
            raise ValueError(f"top_k must be an int in 1..{num_classes} (the model's classes); got {top_k!r}.")
        return torch.arange(-1, -top_k - 1, -1, device=device).expand(batch, top_k).clone() if top_k > 1 else None
    cache: list[Sequence[str]] = []

    def names() -> Sequence[str]:
        if not cache:
            found = class_names() if callable(class_names) else class_names
            cache.append([str(i) for i in range(num_classes)] if found is None else list(found))
        return cache[0]

    if target is None or isinstance(target, str) and target.strip().casefold() in PREDICTED:
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
        rows = [[_as_int(u, names, num_classes) for u in r]
                if isinstance(r, (Sequence, Tensor)) and not isinstance(r, str) and not hasattr(r, "category")
                else [_as_int(r, names, num_classes)] for r in target]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("Every image needs the same number of targets.")
        t = torch.tensor(rows, dtype=torch.long)
    else:
        t = torch.full((batch, 1), _as_int(target, names, num_classes), dtype=torch.long)
    if t.ndim != 2 or t.shape[0] != batch:
        raise ValueError(f"Targets of shape {tuple(t.shape)} do not fit {batch} images; expected (B, K) with "
                         f"B = {batch}.")
    if t.shape[1] == 0:
        raise ValueError(f"Got an empty target; give at least one class per image. A target is {ACCEPTED}.")
    bad = t[(t >= num_classes) | (t < 0 if isinstance(target, Tensor) else t < -1)]  # -1 only from "pred"
    if bad.numel():
        raise _out_of_range(int(bad[0]), num_classes)
    if t.shape[1] == 1 and bool((t == -1).all()):
        return None
    return t.to(device) if device is not None else t


def explained_classes(logits: Tensor, targets: Tensor | None) -> Tensor:
    """The classes to explain for a flat batch: ``targets`` on the logits' device, or, for ``None``, each row's
    predicted class (arg-max of its logits). The one place where "the predicted class" is decided."""
    return logits.argmax(-1) if targets is None else targets.to(logits.device)


def fill_predicted(targets: Tensor, logits: Tensor) -> Tensor:
    """``targets`` with each entry ``-r`` replaced by the image's r-th most probable class under ``logits``
    ``(B, classes)``; the ranks come from :func:`explained_classes` for ``r = 1``."""
    targets = targets.to(logits.device)
    ranks = int(-targets.min()) if targets.numel() else 0
    if ranks <= 0:
        return targets
    order = logits.topk(ranks, -1).indices if ranks > 1 else explained_classes(logits, None)[:, None]
    picked = order.gather(1, (-targets - 1).clamp(min=0))
    return torch.where(targets < 0, picked, targets)
