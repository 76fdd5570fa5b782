"""The models, registered by name, all built from the data's ``input_shape`` and ``num_classes``.

Every model takes the same model-level technique arguments, so technique configs only set them:

- ``dropout``: dropout probability after each hidden layer (0 turns it off);
- ``input_dropout``: dropout on the input (the classic MLP case study drops 20% of pixels);
- ``batch_norm``: a BatchNorm after each hidden linear/conv layer, before the activation;
- ``activation_noise``: std of Gaussian noise added to hidden activations in training mode;
- ``stochastic_depth``: drop probability of the last residual block (resnet only; linear decay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reglab.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode."""

    def __init__(self, std: float):
        super().__init__()
        if std < 0:
            raise ConfigError(f"noise std={std} must be >= 0")
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.{name}={p} must be in [0, 1)")
    return p


def _check_noise(std: float) -> float:
    # Checked here: a negative std never reaches GaussianNoise, which is built only for std > 0.
    if std < 0:
        raise ConfigError(f"model.activation_noise={std} must be >= 0 (a standard deviation)")
    return std


def _hidden(layer: nn.Module, features: int, bn: bool, dim: int, p: float, noise: float):
    """layer -> [BatchNorm] -> ReLU -> [noise] -> [Dropout]"""
    parts: list[nn.Module] = [layer]
    if bn:
        parts.append(nn.BatchNorm1d(features) if dim == 1 else nn.BatchNorm2d(features))
    parts.append(nn.ReLU(inplace=True))
    if noise > 0:
        parts.append(GaussianNoise(noise))
    if p > 0:
        parts.append(nn.Dropout(p) if dim == 1 else nn.Dropout2d(p))
    return parts


def _input_layers(
    dropout: float, input_dropout: float, noise: float, stochastic_depth: float, residual: bool
) -> list[nn.Module]:
    """Check the model-level technique arguments every model shares; return the input layers
    (input dropout, if any)."""
    _check_p("dropout", dropout), _check_p("input_dropout", input_dropout)
    _check_noise(noise)
    if residual:
        _check_p("stochastic_depth", stochastic_depth)
    elif stochastic_depth:
        raise ConfigError(
            "stochastic_depth needs residual blocks: use model=resnet18, or drop the regularizer"
        )
    return [nn.Dropout(input_dropout)] if input_dropout > 0 else []


@register("mlp")
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
    inputs = _input_layers(dropout, input_dropout, activation_noise, stochastic_depth, False)
    if not widths or any(int(w) <= 0 for w in widths):
        raise ConfigError(f"model.widths={list(widths)} must be a non-empty list of positive ints")
    layers: list[nn.Module] = [nn.Flatten(), *inputs]
    fan_in = int(torch.tensor(input_shape).prod())
    for w in widths:
        layers += _hidden(
            nn.Linear(fan_in, w, bias=not batch_norm), w, batch_norm, 1, dropout, activation_noise
        )
        fan_in = w
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


@register("mlp_5x500")
def mlp_5x500(input_shape, num_classes, **kwargs) -> nn.Module:
    """Five hidden ReLU layers of 500: the network of the classic Keras MNIST case study."""
    kwargs.setdefault("widths", (500,) * 5)
    return mlp(input_shape, num_classes, **kwargs)


@register("cnn")
def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    batch_norm: bool = False,
    activation_noise: float = 0.0,
    stochastic_depth: float = 0.0,
) -> nn.Module:
    """Conv blocks (two 3x3 convs, then 2x2 max-pool while the image is >= 8 px), then an MLP head."""
    layers = _input_layers(dropout, input_dropout, activation_noise, stochastic_depth, False)
    c_in, size = input_shape[0], input_shape[1]
    for c in channels:
        for _ in range(2):
            conv = nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm)
            layers += _hidden(conv, c, batch_norm, 2, 0.0, activation_noise)
            c_in = c
        if size >= 8:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    # Keep up to 8x8 of the final map: averaging Fashion-MNIST's 7x7 down to 4x4 cost 2.7 points
    # of test accuracy after one epoch (0.851 vs 0.877).
    head = min(size, 8)
    layers += [nn.AdaptiveAvgPool2d(head), nn.Flatten()]
    fan_in = c_in * head**2
    layers += _hidden(
        nn.Linear(fan_in, hidden, bias=not batch_norm),
        hidden,
        batch_norm,
        1,
        dropout,
        activation_noise,
    )
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block with optional stochastic depth (per-sample drop of the residual branch)."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, bn: bool, drop_prob: float, noise: float
    ):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not bn),
            norm(c_out),
            nn.ReLU(inplace=True),
            GaussianNoise(noise) if noise > 0 else nn.Identity(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not bn),
            norm(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=not bn), norm(c_out)
            )
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.training and self.drop_prob > 0:
            keep = 1.0 - self.drop_prob
            mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return torch.relu(out + self.shortcut(x))


@register("resnet18")
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
    """ResNet-18, CIFAR variant: 3x3 stem, no max-pool; dropout before the classifier."""
    layers = _input_layers(dropout, input_dropout, activation_noise, stochastic_depth, True)
    stem = [nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=not batch_norm)]
    stem += [nn.BatchNorm2d(width)] if batch_norm else []
    layers += [*stem, nn.ReLU(inplace=True)]
    c_in, n_blocks, i = width, 8, 0
    for stage, mult in enumerate((1, 2, 4, 8)):
        for b in range(2):
            stride = 2 if stage > 0 and b == 0 else 1
            drop = stochastic_depth * i / (n_blocks - 1)  # linear decay: first block never dropped
            layers.append(
                BasicBlock(c_in, width * mult, stride, batch_norm, drop, activation_noise)
            )
            c_in, i = width * mult, i + 1
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register("speednet")
def speednet(
    input_shape: Sequence[int],
    num_classes: int,
    stem: int = 32,
    widths: Sequence[int] = (64, 128, 256),
    depth: int = 2,
    logit_scale: float = 0.125,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    batch_norm: bool = True,
    activation_noise: float = 0.0,
    stochastic_depth: float = 0.0,
) -> nn.Module:
    """The speedrun net (after Keller Jordan's airbench): a 3x3 stem, then per entry of
    ``widths`` a block of ``depth`` 3x3 convs with a 2x2 max-pool after the first (pooling before
    BatchNorm and the activation: 4x less work for them), global max-pool, a linear layer and a
    fixed logit scale (softer logits early in training)."""
    layers = _input_layers(dropout, input_dropout, activation_noise, stochastic_depth, False)
    if depth < 1 or not widths or any(int(w) <= 0 for w in [stem, *widths]):
        raise ConfigError(
            f"model.widths={list(widths)}, stem={stem}, depth={depth}: need positive widths and "
            "depth >= 1"
        )
    norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())

    def act() -> list[nn.Module]:
        return [nn.GELU(), *([GaussianNoise(activation_noise)] if activation_noise else [])]

    layers += [nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=not batch_norm), norm(stem)]
    layers += act()
    c_in, size = stem, input_shape[1]
    for w in widths:
        layers.append(nn.Conv2d(c_in, w, 3, padding=1, bias=not batch_norm))
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [norm(w), *act()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(w, w, 3, padding=1, bias=not batch_norm), norm(w), *act()]
        c_in = w
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(c_in, num_classes, bias=False), Scale(logit_scale)]
    return nn.Sequential(*layers)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is not a model; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](tuple(input_shape), num_classes, **kwargs)
    except TypeError as e:
        raise ConfigError(f"model={name}: {e}") from e
