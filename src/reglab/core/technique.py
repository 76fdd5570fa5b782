"""The interface every technique implements: regularizers and augmentations alike.

It lives in the foundation because two sibling components implement it
(``reglab.regularizers`` and ``reglab.augment``) and siblings may not import each other. Every
hook is a no-op; a technique overrides the ones it needs, and the LitModule calls every hook of
every selected technique, knowing nothing about any technique in particular:

=====================  =============================================  ============================
point                  hook                                           example
=====================  =============================================  ============================
model config           ``model_config(cfg) -> cfg`` (before build)    small model (width, depth)
model                  ``model(module, name) -> module`` (built)      dropout, batch norm
batch                  ``batch(x, y) -> (x, y)``                      augmentation, noise, mixup
batch statistics       ``fit(images)`` (once, on the training split)  ZCA whitening
loss                   ``penalty(model) -> tensor``                   L1, L2
loss                   ``loss_kwargs(kwargs) -> kwargs``              label smoothing
optimizer              ``optimizer_kwargs(kwargs) -> kwargs``         decoupled weight decay
training procedure     ``callbacks() -> [Callback]``                  early stopping, SWA, EMA
training procedure     ``trainer_kwargs(kwargs) -> kwargs``           gradient clipping
training procedure     ``after_step(model)``                          max-norm
=====================  =============================================  ============================

A batch goes ``/255 -> batch hooks of stage "pixels" (on [0, 1] images) -> normalize -> batch
hooks of stage "normalized"``, in the order the techniques were selected (augmentations first).
In ``batch``, ``y`` is int64 class indices ``(N,)``, float class probabilities
``(N, num_classes)`` (after a mixing step), or None when only the inputs are prepared (for
display, or evaluation): a hook that reads or changes ``y`` sets ``needs_targets`` and is then
skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

STAGES = ("pixels", "normalized")


class Technique:
    """Base class: every hook is a no-op."""

    # Test the weights held at the end of training (weight averaging: SWA, EMA) instead of
    # reloading the best checkpoint.
    final_weights: bool = False
    # Set by the LitModule from the data; batch hooks that build soft targets need it.
    num_classes: int | None = None
    # Where ``batch`` runs (see STAGES), whether only on training batches, whether it needs y.
    stage: str = "normalized"
    train_only: bool = True
    needs_targets: bool = False

    def model_config(self, cfg: dict) -> dict:
        """The model config before it is built (``_size_`` names its size arguments)."""
        return cfg

    def model(self, module: nn.Module, name: str) -> nn.Module:
        """The built model (``name``: its label, for messages); may return a new module."""
        return module

    def fit(self, images: torch.Tensor) -> None:
        """Learn statistics once from the whole training split, as this stage sees it."""

    def batch(
        self, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
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


def overrides(technique: object, hook: str) -> bool:
    """Whether ``technique`` implements ``hook`` (the LitModule skips the no-ops)."""
    return getattr(type(technique), hook, None) is not getattr(Technique, hook)
