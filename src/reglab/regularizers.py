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

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import nn

from reglab.core import checks
from reglab.core.errors import ConfigError, warn


class Technique:
    """Base class: every hook is a no-op; a technique overrides the ones it needs."""

    # Test the weights held at the end of training (weight averaging: SWA, EMA) instead of
    # reloading the best checkpoint.
    final_weights: bool = False
    # Set by the LitModule from the data; batch hooks that build soft targets need it.
    num_classes: int | None = None

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


# ----------------------------------------------------------------------------- knob checks


def _params(model: nn.Module, weights_only: bool) -> Iterator[torch.Tensor]:
    return penalized_weights(model) if weights_only else model.parameters()


# ----------------------------------------------------------------------------- loss penalties


class L1(Technique):
    """``strength * sum |w|``: drives unneeded weights towards zero (sparsity)."""

    def __init__(self, strength: float = 1e-4, weights_only: bool = True):
        self.strength = checks.nonnegative("regularizer.l1.strength", strength)
        self.weights_only = checks.flag("regularizer.l1.weights_only", weights_only)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.strength * sum(p.abs().sum() for p in _params(model, self.weights_only))


class L2(Technique):
    """``strength * sum w^2`` added to the loss (Keras' ``l2(strength)``): shrinks all weights."""

    def __init__(self, strength: float = 1e-3, weights_only: bool = True):
        self.strength = checks.nonnegative("regularizer.l2.strength", strength)
        self.weights_only = checks.flag("regularizer.l2.weights_only", weights_only)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.strength * sum(p.pow(2).sum() for p in _params(model, self.weights_only))


class ElasticNet(Technique):
    """``strength * (l1_ratio * sum |w| + (1 - l1_ratio) * sum w^2)``: L1 sparsity, L2 grouping."""

    def __init__(self, strength: float = 1e-4, l1_ratio: float = 0.5, weights_only: bool = True):
        self.strength = checks.nonnegative("regularizer.elastic_net.strength", strength)
        self.l1_ratio = checks.probability("regularizer.elastic_net.l1_ratio", l1_ratio, one=True)
        self.weights_only = checks.flag("regularizer.elastic_net.weights_only", weights_only)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = list(_params(model, self.weights_only))
        l1 = sum(p.abs().sum() for p in params)
        l2 = sum(p.pow(2).sum() for p in params)
        return self.strength * (self.l1_ratio * l1 + (1 - self.l1_ratio) * l2)


class LabelSmoothing(Technique):
    """Cross-entropy against ``(1 - smoothing) * one_hot + smoothing / num_classes``."""

    def __init__(self, smoothing: float = 0.1):
        self.smoothing = checks.probability("regularizer.label_smoothing.smoothing", smoothing)

    def loss_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "label_smoothing": self.smoothing}


# ----------------------------------------------------------------------------- optimizer


class WeightDecay(Technique):
    """Decoupled weight decay: ``w <- w - lr * strength * w`` outside the adaptive gradient step.

    Adam becomes AdamW; AdamW and SGD take ``strength`` as their ``weight_decay`` (for plain SGD,
    decoupled decay and an L2 penalty are the same update up to the factor lr). Other optimizers
    take it as their own ``weight_decay``, whatever that means for them.
    """

    COUPLED_TO_DECOUPLED = {"torch.optim.Adam": "torch.optim.AdamW"}

    def __init__(self, strength: float = 0.1):
        self.strength = checks.nonnegative("regularizer.weight_decay.strength", strength)

    def optimizer_kwargs(self, kwargs: dict) -> dict:
        target = kwargs.get("_target_")
        target = self.COUPLED_TO_DECOUPLED.get(target, target)
        return {**kwargs, "_target_": target, "weight_decay": self.strength}


# ----------------------------------------------------------------------------- model


class Dropout(Technique):
    """Dropout after every hidden layer (``p``) and on the input (``input_p``)."""

    def __init__(self, p: float = 0.5, input_p: float = 0.2):
        self.p = checks.probability("regularizer.dropout.p", p)
        self.input_p = checks.probability("regularizer.dropout.input_p", input_p)

    def model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "dropout": self.p, "input_dropout": self.input_p}


class ActivationNoise(Technique):
    """Gaussian noise N(0, std^2) added to hidden activations, in training mode only."""

    def __init__(self, std: float = 0.1):
        self.std = checks.nonnegative("regularizer.activation_noise.std", std)

    def model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "activation_noise": self.std}


class BatchNorm(Technique):
    """A BatchNorm after every hidden linear/conv layer, before its activation."""

    def model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "batch_norm": True}


class StochasticDepth(Technique):
    """Drops whole residual branches per sample in training (resnet18 only); ``p`` is the drop
    rate of the last block, decaying linearly to 0 for the first."""

    def __init__(self, p: float = 0.1):
        self.p = checks.probability("regularizer.stochastic_depth.p", p)

    def model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "stochastic_depth": self.p}


class SmallModel(Technique):
    """Simplify the model: keep ``depth_factor`` of the layers, each ``width_factor`` as wide.

    Acts on whichever width arguments the chosen model has: ``widths`` (MLPs), ``channels`` and
    ``hidden`` (cnn), ``width`` (resnet18, whose depth is fixed, so it only gets narrower).
    """

    def __init__(self, width_factor: float = 0.25, depth_factor: float = 0.5):
        self.width_factor = checks.fraction("regularizer.small_model.width_factor", width_factor)
        self.depth_factor = checks.fraction("regularizer.small_model.depth_factor", depth_factor)

    def _narrow(self, n: int) -> int:
        return max(1, round(int(n) * self.width_factor))

    def _fewer(self, layers) -> list[int]:
        keep = max(1, math.ceil(len(layers) * self.depth_factor))
        return [self._narrow(w) for w in list(layers)[:keep]]

    def model_kwargs(self, kwargs: dict) -> dict:
        out = dict(kwargs)
        for key in ("widths", "channels"):
            if out.get(key):
                out[key] = self._fewer(out[key])
        for key in ("hidden", "width"):
            if out.get(key):
                out[key] = self._narrow(out[key])
        if not any(out.get(k) for k in ("widths", "channels", "hidden", "width")):
            raise ConfigError(
                "regularizer=small_model: the model has none of the width arguments "
                "widths / channels / hidden / width to shrink"
            )
        return out


# ----------------------------------------------------------------------------- batch (training)


class GaussianNoise(Technique):
    """Gaussian noise N(0, std^2) added to the (normalized) inputs of training batches."""

    def __init__(self, std: float = 0.1):
        self.std = checks.nonnegative("regularizer.gaussian_noise.std", std)

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + torch.randn_like(x) * self.std, y


def _soft_targets(y: torch.Tensor, num_classes: int | None, name: str) -> torch.Tensor:
    """Class indices -> one-hot floats; probabilities (from an earlier mixing step) pass through."""
    if y.ndim == 2:
        return y
    if num_classes is None:
        raise ConfigError(
            f"regularizer.{name}.num_classes is not set and the module did not set it"
        )
    return torch.nn.functional.one_hot(y, num_classes).float()


class Mixup(Technique):
    """Train on convex combinations of pairs: ``lam * (x_i, y_i) + (1 - lam) * (x_j, y_j)``,
    ``lam ~ Beta(alpha, alpha)`` once per batch, partners ``j`` a random permutation."""

    def __init__(self, alpha: float = 0.2, num_classes: int | None = None):
        self.alpha = checks.positive("regularizer.mixup.alpha", alpha)
        if num_classes is not None:
            self.num_classes = checks.positive(
                "regularizer.mixup.num_classes", num_classes, integer=True
            )

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = _soft_targets(y, self.num_classes, "mixup")
        a = torch.tensor(self.alpha)
        lam = float(torch.distributions.Beta(a, a).sample())
        perm = torch.randperm(x.shape[0], device=x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


class CutMix(Technique):
    """Paste a random box from a partner image; targets weighted by the pasted area.

    The box covers a fraction ``1 - lam`` of the image, ``lam ~ Beta(alpha, alpha)`` once per
    batch; after clipping the box to the image, the target weight is its exact area fraction.
    """

    def __init__(self, alpha: float = 1.0, num_classes: int | None = None):
        self.alpha = checks.positive("regularizer.cutmix.alpha", alpha)
        if num_classes is not None:
            self.num_classes = checks.positive(
                "regularizer.cutmix.num_classes", num_classes, integer=True
            )

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = _soft_targets(y, self.num_classes, "cutmix")
        a = torch.tensor(self.alpha)
        lam = float(torch.distributions.Beta(a, a).sample())
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        bh, bw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
        perm = torch.randperm(x.shape[0], device=x.device)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        pasted = (y1 - y0) * (x1 - x0) / (h * w)
        return x, (1 - pasted) * y + pasted * y[perm]


# ----------------------------------------------------------------------------- training procedure


class MaxNorm(Technique):
    """After every optimizer step, rescale each unit's incoming weight vector to norm <= c
    (the max-norm constraint of the dropout paper)."""

    def __init__(self, c: float = 3.0):
        self.c = checks.positive("regularizer.max_norm.c", c)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for w in penalized_weights(model):
            # Row i of a Linear weight, or kernel i of a conv, feeds unit (channel) i.
            norms = w.flatten(1).norm(dim=1).clamp_min(1e-12)
            scale = (self.c / norms).clamp(max=1.0)
            w.mul_(scale.view(-1, *([1] * (w.ndim - 1))))


class EarlyStopping(Technique):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; with the checkpoint callback
    (``callbacks=default``) the test then uses the best checkpoint, not the last weights."""

    def __init__(
        self, monitor: str = "val/acc", mode: str = "max", patience: int = 5, min_delta: float = 0.0
    ):
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"regularizer.early_stopping.monitor={monitor!r} must be a metric name such as "
                "val/acc"
            )
        self.monitor = monitor
        self.mode = checks.choice("regularizer.early_stopping.mode", mode, ("min", "max"))
        self.patience = checks.number(
            "regularizer.early_stopping.patience", patience, low=1, integer=True
        )
        self.min_delta = checks.nonnegative("regularizer.early_stopping.min_delta", min_delta)

    def callbacks(self) -> list:
        return [
            pl.callbacks.EarlyStopping(
                monitor=self.monitor,
                mode=self.mode,
                patience=self.patience,
                min_delta=self.min_delta,
            )
        ]

    def trainer_kwargs(self, kwargs: dict) -> dict:
        note = cannot_stop_early("regularizer.early_stopping.patience", self.patience, kwargs)
        if note:
            warn(note)
        return kwargs


def cannot_stop_early(key: str, patience: int, trainer_kwargs: dict) -> str | None:
    """Why early stopping with ``patience`` can never end a run before its last epoch, or None.

    The first validation sets the best value; ``patience`` more without a gain stop the run, and
    not before ``trainer.min_epochs``. Also read for ``callbacks=[..., early_stopping]``.
    """
    max_epochs = trainer_kwargs.get("max_epochs")
    if trainer_kwargs.get("fast_dev_run") or not isinstance(max_epochs, int) or max_epochs < 1:
        return None
    every = trainer_kwargs.get("check_val_every_n_epoch") or 1
    earliest = max((patience + 1) * every, trainer_kwargs.get("min_epochs") or 0)
    if earliest < max_epochs:
        return None
    return (
        f"{key}={patience} with trainer.max_epochs={max_epochs}: early stopping cannot end the run "
        f"early (the first validation sets the best, then {patience} without a gain: {earliest} "
        f"epochs at the least); lower the patience or raise trainer.max_epochs"
    )


class SWA(Technique):
    """Stochastic weight averaging (Lightning's callback): from ``epoch_start`` on, the learning
    rate is annealed to ``lr`` and the weights are averaged once per epoch; the test uses the
    average. Set ``lr`` to suit the optimizer (the default matches ``optimizer=adam``)."""

    final_weights = True

    def __init__(self, lr: float = 1e-3, epoch_start: float = 0.8, annealing_epochs: int = 1):
        self.lr = checks.positive("regularizer.swa.lr", lr)
        key = "regularizer.swa.epoch_start"
        if isinstance(epoch_start, int) and not isinstance(epoch_start, bool):  # an epoch
            self.epoch_start = checks.number(key, epoch_start, low=1, integer=True)
        else:  # a fraction of the epochs
            self.epoch_start = checks.fraction(key, epoch_start)
        self.annealing_epochs = checks.number(
            "regularizer.swa.annealing_epochs", annealing_epochs, low=1, integer=True
        )

    def callbacks(self) -> list:
        return [
            pl.callbacks.StochasticWeightAveraging(
                swa_lrs=self.lr,
                swa_epoch_start=self.epoch_start,
                annealing_epochs=self.annealing_epochs,
                device=None,  # keep the average on the training device
            )
        ]

    def first_epoch(self, max_epochs: int) -> int:
        """The 0-based epoch whose starting weights Lightning averages first (its own rule)."""
        start = self.epoch_start
        if isinstance(start, float):
            start = int(max_epochs * start)
        return max(start - 1, 0)

    def trainer_kwargs(self, kwargs: dict) -> dict:
        """Refuse settings under which the averaged weights the test uses are not trained ones.

        Lightning averages the weights held at the start of epochs ``first_epoch`` to the last.
        From epoch 0 that includes the untrained initial weights (with ``max_epochs=1`` it is
        nothing else); a start past the last epoch never averages, and Lightning then puts the
        initial weights in place all the same.
        """
        max_epochs, key = kwargs.get("max_epochs"), "regularizer.swa.epoch_start"
        if kwargs.get("fast_dev_run"):
            return kwargs
        if not isinstance(max_epochs, int) or max_epochs < 1:
            if isinstance(self.epoch_start, float):
                raise ConfigError(
                    f"{key}={self.epoch_start} is a fraction of trainer.max_epochs, which sets no "
                    f"limit here ({max_epochs}): give an epoch number >= 2"
                )
            return kwargs
        first = self.first_epoch(max_epochs)
        if 1 <= first <= max_epochs - 1:
            return kwargs
        if max_epochs < 3 and first == 0:
            raise ConfigError(
                f"regularizer=[swa] with trainer.max_epochs={max_epochs} would test the untrained "
                "initial weights (SWA averages the weights held at the start of each epoch from "
                f"{key}={self.epoch_start} on, the first before any training): use "
                "trainer.max_epochs >= 3"
            )
        if first == 0:
            raise ConfigError(
                f"{key}={self.epoch_start} makes SWA average the untrained initial weights in "
                f"with the trained ones (trainer.max_epochs={max_epochs}; Lightning averages the "
                f"weights held at the start of each epoch from there on): set {key} to an epoch "
                f"in [2, {max_epochs}] or a fraction >= {math.ceil(200 / max_epochs) / 100}"
            )
        raise ConfigError(
            f"{key}={self.epoch_start} is past the last epoch of trainer.max_epochs={max_epochs}: "
            "SWA never averages, and Lightning then puts the untrained initial weights in place "
            f"for the test; set {key} to an epoch in [2, {max_epochs}]"
        )


class EMA(Technique):
    """Exponential moving average of the weights after every step (Lightning's
    ``EMAWeightAveraging``); validation and the test use the average."""

    final_weights = True

    def __init__(self, decay: float = 0.99):
        self.decay = checks.number(
            "regularizer.ema.decay", decay, low=0, high=1, low_open=True, high_open=True
        )

    def callbacks(self) -> list:
        return [pl.callbacks.EMAWeightAveraging(decay=self.decay)]


class GradientClipping(Technique):
    """Clip the gradient before each step: its global norm to ``value`` (``algorithm: norm``) or
    each element to [-value, value] (``algorithm: value``)."""

    def __init__(self, value: float = 1.0, algorithm: str = "norm"):
        self.value = checks.positive("regularizer.gradient_clipping.value", value)
        self.algorithm = checks.choice(
            "regularizer.gradient_clipping.algorithm", algorithm, ("norm", "value")
        )

    def trainer_kwargs(self, kwargs: dict) -> dict:
        return {
            **kwargs,
            "gradient_clip_val": self.value,
            "gradient_clip_algorithm": self.algorithm,
        }
