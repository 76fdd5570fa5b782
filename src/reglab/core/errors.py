"""The errors reglab reports as one line (no traceback) before exiting non-zero."""

from __future__ import annotations

import importlib
import sys


class ReglabError(Exception):
    """Base class: the message is the whole story, printed as one line."""


class ConfigError(ReglabError, ValueError):
    """A config value that cannot work: names the key, the value and what is allowed."""


class DataError(ReglabError):
    """A dataset that is missing or whose files are corrupt."""


class DivergenceError(ReglabError):
    """The loss became NaN or infinite; ``step`` is the optimizer step where it was seen."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class MissingExtraError(ReglabError):
    """An optional path whose package is not installed: names the extra that brings it."""


def require_extra(module: str, extra: str, needed_by: str) -> None:
    """Raise ``MissingExtraError`` unless ``module`` (an optional dependency) imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{needed_by} needs the {extra} extra: pip install 'reglab[{extra}]'"
        ) from None


def fail(msg: str, code: int = 2) -> None:
    """Print ``reglab: error: MSG`` on stderr and exit with ``code``."""
    print(f"reglab: error: {msg}", file=sys.stderr)
    sys.exit(code)


def warn(msg: str) -> None:
    """Print ``reglab: warning: MSG`` on stderr: a legal value that will not do what it says."""
    print(f"reglab: warning: {msg}", file=sys.stderr)
