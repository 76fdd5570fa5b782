"""What every reglab model shares: the technique arguments, their checks, and the layers they add.

The technique arguments (``model_kwargs`` hooks of ``reglab.regularizers`` set them):

- ``dropout``: dropout probability after each hidden layer (0 turns it off);
- ``input_dropout``: dropout on the input (the classic MLP case study drops 20% of pixels);
- ``batch_norm``: a BatchNorm after each hidden linear/conv layer, before the activation;
- ``activation_noise``: std of Gaussian noise added to hidden activations in training mode;
- ``stochastic_depth``: drop probability of the last residual block (resnet only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reglab.core import checks
from reglab.core.errors import ConfigError


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode."""

    def __init__(self, std: float):
        super().__init__()
        self.std = checks.nonnegative("GaussianNoise.std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


def check_technique_args(
    dropout: float,
    input_dropout: float,
    batch_norm: bool,
    activation_noise: float,
    stochastic_depth: float = 0.0,
    residual: bool = False,
) -> None:
    """Check the technique arguments; ``residual``: the model has blocks to drop."""
    checks.probability("model.dropout", dropout)
    checks.probability("model.input_dropout", input_dropout)
    checks.flag("model.batch_norm", batch_norm)
    checks.nonnegative("model.activation_noise", activation_noise)
    checks.probability("model.stochastic_depth", stochastic_depth)
    if stochastic_depth and not residual:
        raise ConfigError(
            f"stochastic_depth needs residual blocks (model.stochastic_depth={stochastic_depth}):"
            " use model=resnet18, or drop the regularizer stochastic_depth"
        )


def sizes(key: str, value) -> list[int]:
    """A non-empty list of layer widths (or channel counts), each a positive integer."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{key}={value!r} must be a non-empty list of positive integers")
    return [checks.positive(f"{key}[{i}]", w, integer=True) for i, w in enumerate(value)]


def input_layers(input_dropout: float) -> list[nn.Module]:
    return [nn.Dropout(input_dropout)] if input_dropout > 0 else []


def hidden_block(
    layer: nn.Module, features: int, batch_norm: bool, dim: int, dropout: float, noise: float
) -> list[nn.Module]:
    """layer -> [BatchNorm] -> ReLU -> [noise] -> [Dropout]; ``dim`` 1 (linear) or 2 (conv)."""
    parts: list[nn.Module] = [layer]
    if batch_norm:
        parts.append(nn.BatchNorm1d(features) if dim == 1 else nn.BatchNorm2d(features))
    parts.append(nn.ReLU(inplace=True))
    if noise > 0:
        parts.append(GaussianNoise(noise))
    if dropout > 0:
        parts.append(nn.Dropout(dropout) if dim == 1 else nn.Dropout2d(dropout))
    return parts


def norm2d(batch_norm: bool, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
