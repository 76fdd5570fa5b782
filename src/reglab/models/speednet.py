"""The speedrun net, after Keller Jordan's airbench."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reglab.core import checks
from reglab.models.layers import sizes


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def speednet(
    input_shape: Sequence[int],
    num_classes: int,
    stem: int = 32,
    widths: Sequence[int] = (64, 128, 256),
    depth: int = 2,
    logit_scale: float = 0.125,
) -> nn.Module:
    """A 3x3 stem, then per entry of ``widths`` a block of ``depth`` 3x3 convs with a 2x2
    max-pool after the first (pooling before BatchNorm and the activation: 4x less work for
    them), global max-pool, a linear layer and a fixed logit scale (softer logits early in
    training)."""
    stem = checks.positive("model.stem", stem, integer=True)
    widths = sizes("model.widths", widths)
    depth = checks.positive("model.depth", depth, integer=True)
    logit_scale = checks.positive("model.logit_scale", logit_scale)

    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=False)]
    layers += [nn.BatchNorm2d(stem), nn.GELU()]
    c_in, size = stem, input_shape[1]
    for w in widths:
        layers.append(nn.Conv2d(c_in, w, 3, padding=1, bias=False))
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [nn.BatchNorm2d(w), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
        c_in = w
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    layers += [nn.Linear(c_in, num_classes, bias=False), Scale(logit_scale)]
    return nn.Sequential(*layers)
