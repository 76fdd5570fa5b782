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


def linear(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """No hidden layer: nothing for dropout or batch norm to act on."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def fixed(num_classes: int) -> nn.Module:
    """Made for 28x28 grey images only, whatever the data."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


class Net(nn.Module):
    """Layers as attributes and a functional activation, as hand-written models often are."""

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4 * input_shape[1] * input_shape[2], num_classes)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).flatten(1))


def net(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return Net(input_shape, num_classes)
