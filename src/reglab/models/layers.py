"""What reglab's models share: checks of their size arguments.

The models are plain architectures: dropout, batch norm, activation noise and stochastic depth are
techniques that act on the built module (``reglab.regularizers``), for any model alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from reglab.core import checks
from reglab.core.errors import ConfigError


def sizes(key: str, value) -> list[int]:
    """A non-empty list of layer widths (or channel counts), each a positive integer."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{key}={value!r} must be a non-empty list of positive integers")
    return [checks.positive(f"{key}[{i}]", w, integer=True) for i, w in enumerate(value)]
