"""Parameter validation with one message shape (after scikit-learn's ``_param_validation``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar


class InvalidParameterError(ValueError, TypeError):
    """A method or metric parameter has a value it cannot take."""


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, v: Any) -> bool:
        return any(v == o and type(v) is type(o) for o in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Interval:
    """A number in a range; ``integer`` restricts to ints. ``closed`` is "both", "left", "right" or "neither"."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    integer: bool = False

    def accepts(self, v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if self.integer and not isinstance(v, int):
            return False
        if not isinstance(v, (int, float)) or math.isnan(v):
            return False
        if self.low is not None and (v < self.low or (v == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (v > self.high or (v == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def describe(self) -> str:
        kind = "an int" if self.integer else "a float"
        if self.low is None and self.high is None:
            return kind
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in the range {left}{lo}, {hi}{right}"


@dataclass(frozen=True)
class Boxes:
    """A non-empty list of boxes ``(x0, y0, x1, y1)``, fractions of the image width and height with
    ``0 <= x0 < x1 <= 1`` and ``0 <= y0 < y1 <= 1``."""

    @staticmethod
    def is_box(b: Any) -> bool:
        return (isinstance(b, (list, tuple)) and len(b) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
                and 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1)

    def accepts(self, v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) > 0 and all(self.is_box(b) for b in v)

    def describe(self) -> str:
        return "a non-empty list of (x0, y0, x1, y1) fractions with x0 < x1 and y0 < y1"


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``predicate`` holds; ``description`` says what that is (for the message)."""

    predicate: Callable[[Any], bool]
    description: str

    def accepts(self, v: Any) -> bool:
        return bool(self.predicate(v))

    def describe(self) -> str:
        return self.description


@dataclass(frozen=True)
class Nullable:
    """``None`` or a value accepted by ``inner``."""

    inner: Any

    def accepts(self, v: Any) -> bool:
        return v is None or self.inner.accepts(v)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"


def validate_params(owner: str, params: dict[str, Any], constraints: dict[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` naming the first parameter that breaks its constraint."""
    for name, value in params.items():
        if name not in constraints:
            known = ", ".join(sorted(constraints)) or "none"
            raise InvalidParameterError(f"{owner} got an unexpected parameter {name!r}. Its parameters: {known}.")
        c = constraints[name]
        if c is not None and not c.accepts(value):
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be {c.describe()}. Got {value!r} instead."
            )


class Parameterized:
    """One parameter convention for methods, metrics and analyses (after scikit-learn's estimators).

    Parameters are the keyword-only arguments of ``__init__``; ``param_constraints`` declares what each may
    take. Subclasses call ``super().__init__(**params)`` with every parameter; the values are validated once,
    here, and stored in ``self.params`` with the defaults filled in. ``set_params`` validates the same way.
    ``owner_name`` names the object in messages (its registry name).
    """

    param_constraints: ClassVar[dict[str, Any]] = {}

    def __new__(cls, *args: Any, **params: Any) -> Parameterized:
        # Before the subclass's __init__, so an unknown keyword gets the one message, not Python's TypeError.
        validate_params(getattr(cls, "name", "") or cls.__name__, params, cls.param_constraints)
        return super().__new__(cls)

    def __init__(self, **params: Any) -> None:
        validate_params(self.owner_name(), params, self.param_constraints)
        self.params: dict[str, Any] = {**self.default_params(), **params}

    def owner_name(self) -> str:
        return getattr(self, "name", "") or type(self).__name__

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The defaults of the keyword-only ``__init__`` arguments."""
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}

    def get_params(self) -> dict[str, Any]:
        """Every parameter with its current value (defaults filled in)."""
        return dict(self.params)

    def set_params(self, **params: Any) -> Parameterized:
        """Change parameters after construction, validated as in ``__init__``; returns ``self``."""
        validate_params(self.owner_name(), params, self.param_constraints)
        self.params.update(params)
        return self
