"""ResNet-18, CIFAR variant, with stochastic depth."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reglab.core import checks
from reglab.models.layers import GaussianNoise, check_technique_args, input_layers, norm2d


class BasicBlock(nn.Module):
    """ResNet basic block with optional stochastic depth (per-sample drop of the residual branch)."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, bn: bool, drop_prob: float, noise: float
    ):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not bn),
            norm2d(bn, c_out),
            nn.ReLU(inplace=True),
            GaussianNoise(noise) if noise > 0 else nn.Identity(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not bn),
            norm2d(bn, c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=not bn), norm2d(bn, c_out)
            )
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.training and self.drop_prob > 0:
            keep = 1.0 - self.drop_prob
            mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return torch.relu(out + self.shortcut(x))


def resnet18(
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 64,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    batch_norm: bool = True,
    activation_noise: float = 0.0,
    stochastic_depth: float = 0.0,
) -> nn.Module:
    """ResNet-18, CIFAR variant: 3x3 stem, no max-pool; dropout before the classifier.
    ``stochastic_depth`` is the drop rate of the last block, decaying linearly to 0 for the first."""
    check_technique_args(
        dropout, input_dropout, batch_norm, activation_noise, stochastic_depth, residual=True
    )
    width = checks.positive("model.width", width, integer=True)
    layers = input_layers(input_dropout)
    layers.append(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=not batch_norm))
    # No Identity in place of a missing BatchNorm here: layer indices are checkpoint keys.
    layers += [nn.BatchNorm2d(width)] if batch_norm else []
    layers.append(nn.ReLU(inplace=True))
    c_in, n_blocks, i = width, 8, 0
    for stage, mult in enumerate((1, 2, 4, 8)):
        for b in range(2):
            stride = 2 if stage > 0 and b == 0 else 1
            drop = stochastic_depth * i / (n_blocks - 1)
            layers.append(
                BasicBlock(c_in, width * mult, stride, batch_norm, drop, activation_noise)
            )
            c_in, i = width * mult, i + 1
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)
