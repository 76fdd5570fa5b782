"""The validators every constructor uses: each config value is checked once, by its owner.

Each takes the full key (``regularizer.l2.strength``) and the value, returns the value as the
type it should be, and raises ``ConfigError`` with one line: ``KEY=VALUE must be ...``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable, Sequence

from reglab.core.errors import ConfigError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(
    key: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
):
    """A number (an int with ``integer``) in [low, high]; ``*_open`` excludes that end."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else _is_number(value)
    if ok and value != value:  # NaN
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return int(value) if integer else float(value)
    if low is not None and high is not None:
        where = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        where = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        where = f"{'<' if high_open else '<='} {high}"
    else:
        where = ""
    raise ConfigError(f"{key}={value!r} must be {kind} {where}".rstrip())


def positive(key: str, value, *, integer: bool = False):
    return number(key, value, low=0, low_open=True, integer=integer)


def nonnegative(key: str, value, *, integer: bool = False):
    return number(key, value, low=0, integer=integer)


def probability(key: str, value, *, one: bool = False) -> float:
    """A probability in [0, 1) (or [0, 1] with ``one``): a drop rate of 1 drops everything."""
    return number(key, value, low=0, high=1, high_open=not one)


def fraction(key: str, value) -> float:
    """A fraction in (0, 1]: how much of something to keep."""
    return number(key, value, low=0, high=1, low_open=True)


def interval(key: str, value, low: float, high: float) -> tuple[float, float]:
    """A range ``[a, b]`` to draw from, with ``low <= a <= b <= high``."""
    try:
        a, b = (number(key, v, low=low, high=high) for v in value)
    except (TypeError, ValueError):  # not a pair of numbers in [low, high] (ConfigError included)
        a = b = None
    if a is None or a > b:
        raise ConfigError(f"{key}={value!r} must be [a, b] with {low} <= a <= b <= {high}")
    return a, b


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value


def choice(key: str, value, options: Iterable[str]) -> str:
    options = list(options)
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not an option; choose one of {options}")
    return value


# ----------------------------------------------------------------------------- types of a section


def _matches(value, hint) -> bool:
    """Whether a config value fits a simple annotation; unknown hints are left to the callee."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return len(inner) != 1 or all(_matches(v, inner[0]) for v in value)
    return True


def _wording(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wording(a) for a in args)
    if origin in (list, tuple, Sequence):
        inner = [a for a in args if a is not Ellipsis]
        if len(inner) == 1:
            return f"a list of {_wording(inner[0]).removeprefix('a ').removeprefix('an ')}s"
        return "a list"
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_kwargs(fn, kwargs: dict, prefix: str, skip: tuple[str, ...] = ()) -> None:
    """Unknown keys and wrongly typed values of a config section, against ``fn``'s signature.

    Ranges stay with the constructors; this catches ``data.batch_size=abc`` before it turns into
    a ``TypeError`` deep inside a run.
    """
    params = inspect.signature(fn).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - annotations we cannot evaluate: check names only
        hints = {}
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    allowed = [n for n, p in params.items() if p.kind in named and n not in (*skip, "self")]
    for key, value in kwargs.items():
        if key in skip or key.startswith("_"):
            continue
        if key not in params:
            if open_ended:
                continue
            raise ConfigError(f"{prefix}.{key} is not a setting here; allowed: {allowed}")
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{prefix}.{key}={value!r} must be {_wording(hints[key])}")
