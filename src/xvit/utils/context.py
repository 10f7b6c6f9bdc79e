"""Restoring contexts: every flag xvit touches on a model comes back on exit, also after an error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode (dropout off) and restore each module's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def set_attributes(objs_attrs: Sequence[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set ``obj.attr = value`` for each triple and restore every old value on exit, also on error."""
    old = [(o, a, getattr(o, a)) for o, a, _ in objs_attrs]
    try:
        for o, a, v in objs_attrs:
            setattr(o, a, v)
        yield
    finally:
        for o, a, v in reversed(old):
            setattr(o, a, v)
