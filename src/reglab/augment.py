"""Batched data augmentation on the training device: one class each, one YAML each in
``conf/augmentation/``.

An augmentation takes a float batch ``(N, C, H, W)`` on the [0, 1] scale and returns one of the
same shape, with random parameters drawn per sample. ``train_only`` augmentations touch training
batches only; a preprocessing step such as ZCA whitening sets ``train_only = False``, is fitted
once on the training split (``fit``) and is applied to every split.
"""

from __future__ import annotations

import torch
from torch import nn


class Augmentation(nn.Module):
    """Base class: identity. Subclasses override ``forward`` (and ``fit`` if they learn stats)."""

    train_only: bool = True
    # Applied after normalization (a preprocessing on standardized inputs) instead of before.
    after_normalize: bool = False

    def fit(self, images: torch.Tensor) -> None:
        """Learn statistics from the whole training split ([0, 1] scale, or normalized if
        ``after_normalize``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Pipeline(nn.Module):
    """The selected augmentations, applied in config order."""

    def __init__(self, augmentations: dict[str, Augmentation] | None = None):
        super().__init__()
        self.steps = nn.ModuleDict(augmentations or {})

    def __len__(self) -> int:
        return len(self.steps)

    def needs_fit(self) -> bool:
        return any(type(a).fit is not Augmentation.fit for a in self.steps.values())

    def fit(self, images: torch.Tensor, normalized: torch.Tensor) -> None:
        """Fit each step on the training split, in the representation that step sees."""
        for a in self.steps.values():
            a.fit(normalized if a.after_normalize else images)

    def apply(self, x: torch.Tensor, train: bool, after_normalize: bool) -> torch.Tensor:
        for a in self.steps.values():
            if a.after_normalize == after_normalize and (train or not a.train_only):
                x = a(x)
        return x
