"""One registry mechanism for everything xvit looks up by name (methods, metrics, adapters, models)."""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'a', 'b'?`` with the close matches of ``name`` among ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


# A full stop that ends a sentence: followed by a capital, not after an abbreviation such as "Eq." or "et al.".
_SENTENCE_END = re.compile(r"(?<!\bEq)(?<!\bEqs)(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bcf)(?<!\bFig)(?<!\bvs)"
                           r"\. (?=[A-Z])")


def summary_of(entry: object) -> str:
    """The first sentence of an entry's docstring, on one line (what listings show)."""
    paragraph = " ".join((getattr(entry, "__doc__", None) or "").strip().split("\n\n")[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph if end is None else paragraph[:end.start() + 1]


class Registry(Generic[T]):
    """A name -> entry mapping. Registering a taken name raises; unknown names get close matches."""

    def __init__(self, kind: str, listing_hint: str) -> None:
        self.kind = kind
        self.listing_hint = listing_hint
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            self.add(name, entry, **info)
            return entry

        return decorator

    def add(self, name: str, entry: T, **info: Any) -> None:
        if name in self._entries:
            raise ValueError(f"A {self.kind} named {name!r} is already registered.")
        self._entries[name] = entry
        self._info[name] = info

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry (e.g. a method registered for one notebook session or test)."""
        entry = self.get(name)
        del self._entries[name], self._info[name]
        return entry

    @contextlib.contextmanager
    def registered(self, name: str, entry: T, **info: Any) -> Iterator[T]:
        """Register ``entry`` for the duration of a ``with`` block, also removed after an error."""
        self.add(name, entry, **info)
        try:
            yield entry
        finally:
            self.remove(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"Unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} See {self.listing_hint} for "
                "the full list."
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._info[name])

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
