"""Fully connected ReLU networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from reglab.models.layers import sizes


def mlp(
    input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (256, 256)
) -> nn.Module:
    """Flatten, then per entry of ``widths`` a hidden layer (linear, ReLU)."""
    widths = sizes("model.widths", widths)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for w in widths:
        layers += [nn.Linear(fan_in, w), nn.ReLU(inplace=True)]
        fan_in = w
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def mlp_5x500(input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Five hidden ReLU layers of 500: the network of the classic Keras MNIST case study.
    Takes the arguments of ``mlp``."""
    kwargs.setdefault("widths", (500,) * 5)
    return mlp(input_shape, num_classes, **kwargs)
