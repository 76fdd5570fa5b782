"""Fully connected ReLU networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from reglab.models.layers import check_technique_args, hidden_block, input_layers, sizes


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (256, 256),
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    batch_norm: bool = False,
    activation_noise: float = 0.0,
    stochastic_depth: float = 0.0,
) -> nn.Module:
    """Flatten, then per entry of ``widths`` a hidden layer (linear, [BatchNorm], ReLU, ...)."""
    check_technique_args(dropout, input_dropout, batch_norm, activation_noise, stochastic_depth)
    widths = sizes("model.widths", widths)
    layers: list[nn.Module] = [nn.Flatten(), *input_layers(input_dropout)]
    fan_in = math.prod(input_shape)
    for w in widths:
        linear = nn.Linear(fan_in, w, bias=not batch_norm)  # BatchNorm brings its own shift
        layers += hidden_block(linear, w, batch_norm, 1, dropout, activation_noise)
        fan_in = w
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def mlp_5x500(input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Five hidden ReLU layers of 500: the network of the classic Keras MNIST case study.
    Takes the arguments of ``mlp``."""
    kwargs.setdefault("widths", (500,) * 5)
    return mlp(input_shape, num_classes, **kwargs)
