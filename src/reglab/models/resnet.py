"""ResNet-18, CIFAR variant."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reglab.core import checks


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(branch(x) + shortcut(x))``."""

    # The module whose output is the residual branch, before the sum: stochastic depth
    # (reglab.regularizers.StochasticDepth) drops it per sample.
    residual_branch = "branch"

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


def resnet18(input_shape: Sequence[int], num_classes: int, width: int = 64) -> nn.Module:
    """ResNet-18, CIFAR variant: 3x3 stem, no max-pool, BatchNorm after every conv."""
    width = checks.positive("model.width", width, integer=True)
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    c_in = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        for b in range(2):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(BasicBlock(c_in, width * mult, stride))
            c_in = width * mult
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
