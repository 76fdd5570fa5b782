"""Model factories defined outside reglab, as a user's own module would: built by ``_target_``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


def tiny(input_shape: Sequence[int], num_classes: int, hidden: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def shapeless(num_classes: int) -> nn.Module:
    """Names no input_shape, so it must not be given one."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(num_classes))


def broken(num_classes: int) -> nn.Module:
    """A bug inside a factory: its TypeError is not about the config and must not read as one."""
    return nn.Linear(4, num_classes, colour="red")
