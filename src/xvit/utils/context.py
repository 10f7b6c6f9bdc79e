"""Restoring contexts: every flag xvit touches on a model comes back on exit, also after an error.

The contexts are reference-counted per (object, attribute): nested, repeated, out-of-order and concurrent
(threads) uses of the same model share one saved original value, and the last context out restores it. While
several are open, the value of the most recently entered open context holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

_LOCK = threading.Lock()
# (id(obj), attr) -> [obj, original value, [(token, value), ...] of the open contexts, oldest first]
_OPEN: dict[tuple[int, str], list[Any]] = {}


def _acquire(objs_attrs: Sequence[tuple[Any, str, Any]], token: object) -> None:
    with _LOCK:
        for o, a, v in objs_attrs:
            entry = _OPEN.get((id(o), a))
            if entry is None:
                entry = _OPEN[(id(o), a)] = [o, getattr(o, a), []]
            entry[2].append((token, v))
            setattr(o, a, v)


def _release(objs_attrs: Sequence[tuple[Any, str, Any]], token: object) -> None:
    with _LOCK:
        for o, a, _ in reversed(objs_attrs):
            key = (id(o), a)
            entry = _OPEN.get(key)
            if entry is None:
                continue
            entry[2] = [(t, v) for t, v in entry[2] if t is not token]
            if entry[2]:
                setattr(o, a, entry[2][-1][1])
            else:
                del _OPEN[key]
                setattr(o, a, entry[1])


@contextlib.contextmanager
def set_attributes(objs_attrs: Sequence[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set ``obj.attr = value`` for each triple; the original values come back when the last open context on each
    attribute exits (reference-counted, so nesting, re-entry, out-of-order exits and threads are safe), also on
    error or KeyboardInterrupt."""
    objs_attrs = list(objs_attrs)
    token = object()
    try:
        _acquire(objs_attrs, token)
        yield
    finally:
        _release(objs_attrs, token)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode (dropout off); each module's own flag comes back when the last open context
    on it exits (see :func:`set_attributes`)."""
    with set_attributes([(m, "training", False) for m in model.modules()]):
        yield
