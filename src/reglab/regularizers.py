"""Regularization techniques: one class each, one YAML each in ``conf/regularizer/``.

A technique acts at one (or more) of a few points. The LitModule calls every hook of every
selected technique and knows nothing about any technique in particular:

========================  ==========================================  ===========================
point                     hook                                        example
========================  ==========================================  ===========================
model                     ``model_kwargs(kwargs) -> kwargs``          dropout, batch norm
batch (training only)     ``batch(x, y) -> (x, y)``                   noise, mixup, cutmix
loss                      ``penalty(model) -> tensor``                L1, L2
loss                      ``loss_kwargs(kwargs) -> kwargs``           label smoothing
optimizer                 ``optimizer_kwargs(kwargs) -> kwargs``      decoupled weight decay
training procedure        ``callbacks() -> [Callback]``               early stopping, SWA, EMA
training procedure        ``trainer_kwargs(kwargs) -> kwargs``        gradient clipping
training procedure        ``after_step(model)``                       max-norm
========================  ==========================================  ===========================

In ``batch``, ``y`` is either int64 class indices ``(N,)`` or float class probabilities
``(N, num_classes)``; a technique that mixes targets returns probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class Technique:
    """Base class: every hook is a no-op; a technique overrides the ones it needs."""

    # Test the weights held at the end of training (weight averaging: SWA, EMA) instead of
    # reloading the best checkpoint.
    final_weights: bool = False

    def model_kwargs(self, kwargs: dict) -> dict:
        return kwargs

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def loss_kwargs(self, kwargs: dict) -> dict:
        return kwargs

    def optimizer_kwargs(self, kwargs: dict) -> dict:
        return kwargs

    def callbacks(self) -> list:
        return []

    def trainer_kwargs(self, kwargs: dict) -> dict:
        return kwargs

    def after_step(self, model: nn.Module) -> None:
        return None


def penalized_weights(model: nn.Module) -> Iterator[torch.Tensor]:
    """Weight matrices and conv kernels: parameters with >= 2 dims (no biases, no norm scales)."""
    for p in model.parameters():
        if p.ndim >= 2:
            yield p
