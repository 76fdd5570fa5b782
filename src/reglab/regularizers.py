"""Regularization techniques: one class each, one YAML each in ``conf/regularizer/``.

Each implements a few hooks of ``reglab.core.technique.Technique`` (the table of hooks is there);
the LitModule calls every hook of every selected technique. The model-level techniques act on the
built ``nn.Module``, so they reach any model (one brought by ``_target_`` included), or refuse in
one line naming the model and what it lacks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import nn

from reglab.core import checks
from reglab.core.errors import ConfigError, warn
from reglab.core.technique import Technique  # defined in the core: augment implements it too


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

# What "hidden activation", "weight layer" and "norm" mean to the model hooks below. They read a
# model's leaf modules in registration order, which is the order they run in nn.Sequential and in
# the usual model code (torchvision's included); an activation called as a function (F.relu) is
# not a module and is not seen.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.PReLU, nn.ELU)
ACTIVATIONS += (nn.SELU, nn.CELU, nn.Tanh, nn.Hardswish, nn.Softplus)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
NORM_FOR = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
NORM_FOR[nn.Conv3d] = nn.BatchNorm3d
# torchvision's residual blocks: the module that ends their residual branch (before the sum).
# reglab's own blocks say it themselves, in a ``residual_branch`` attribute.
TORCHVISION_BRANCH_ENDS = {"BasicBlock": "bn2", "Bottleneck": "bn3"}


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]


def _output_index(leaves: list[tuple[str, nn.Module]]) -> int:
    """Index of the last weight layer (the one producing the logits): what is not hidden."""
    found = [i for i, (_, m) in enumerate(leaves) if isinstance(m, WEIGHT_LAYERS)]
    return found[-1] if found else len(leaves)


def hidden_activations(model: nn.Module) -> list[str]:
    leaves = _leaves(model)
    return [n for n, m in leaves[: _output_index(leaves)] if isinstance(m, ACTIVATIONS)]


def unnormalized_hidden_layers(model: nn.Module) -> list[str]:
    """Hidden Linear/Conv layers with no norm between them and the next activation or layer."""
    leaves = _leaves(model)
    out = []
    for i, (name, m) in enumerate(leaves[: _output_index(leaves)]):
        if not isinstance(m, WEIGHT_LAYERS):
            continue
        after = (
            n
            for n, nxt in leaves[i + 1 :]
            if isinstance(nxt, (*NORMS, *ACTIVATIONS, *WEIGHT_LAYERS))
        )
        nxt = next(after, None)
        if nxt is None or not isinstance(model.get_submodule(nxt), NORMS):
            out.append(name)
    return out


def residual_branch_ends(model: nn.Module) -> list[str]:
    """The module ending each residual branch the model has, in order."""
    out = []
    for name, m in model.named_modules():
        end = getattr(m, "residual_branch", None)
        if end is None and type(m).__module__ == "torchvision.models.resnet":
            end = TORCHVISION_BRANCH_ENDS.get(type(m).__name__)
        if end:
            out.append(f"{name}.{end}" if name else end)
    return out


def insert_after(model: nn.Module, name: str, new: nn.Module, tag: str) -> None:
    """Put ``new`` right after the submodule ``name``: appended inside it if it is an
    nn.Sequential, next to it (as ``<name>_<tag>``) if its parent is one (the existing keys stay
    as they are), else wrapped with it (``<name>.0``, ``<name>.1``)."""
    target = model.get_submodule(name)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(target, nn.Sequential):
        target.add_module(tag, new)
    elif isinstance(parent, nn.Sequential):
        items = list(parent._modules.items())
        at = [k for k, _ in items].index(child) + 1
        parent._modules.clear()
        parent._modules.update([*items[:at], (f"{child}_{tag}", new), *items[at:]])
    else:
        setattr(parent, child, nn.Sequential(target, new))


def with_input_layer(model: nn.Module, layer: nn.Module, tag: str) -> nn.Module:
    """``layer`` applied to the model's input first."""
    if isinstance(model, nn.Sequential):
        items = list(model._modules.items())
        model._modules.clear()
        model._modules.update([(tag, layer), *items])
        return model
    return nn.Sequential(OrderedDict([(tag, layer), ("model", model)]))


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode. reglab's one noise
    layer: ``activation_noise`` puts it after hidden activations, ``gaussian_noise`` applies it
    to training batches."""

    def __init__(self, std: float):
        super().__init__()
        self.std = checks.nonnegative("GaussianNoise.std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


class DropPath(nn.Module):
    """Zeroes the whole input of each sample with probability ``p`` in training mode (and scales
    the kept ones by 1 / (1 - p)); the identity in eval mode. On a residual branch: stochastic
    depth."""

    def __init__(self, p: float):
        super().__init__()
        self.p = checks.probability("DropPath.p", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.rand(shape, device=x.device, dtype=x.dtype) < keep
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _refuse(technique: str, model: str, lacks: str) -> ConfigError:
    return ConfigError(f"regularizer={technique}: model {model} has no {lacks}")


class Dropout(Technique):
    """Dropout after every hidden activation (``p``) and on the input (``input_p``)."""

    def __init__(self, p: float = 0.5, input_p: float = 0.2):
        self.p = checks.probability("regularizer.dropout.p", p)
        self.input_p = checks.probability("regularizer.dropout.input_p", input_p)

    def model(self, module: nn.Module, name: str) -> nn.Module:
        if self.p > 0:
            activations = hidden_activations(module)
            if not activations:
                lacks = "hidden activation layer (nn.ReLU, nn.GELU, ...) to put dropout after"
                raise _refuse(
                    "dropout", name, f"{lacks}; regularizer.dropout.p=0 drops inputs only"
                )
            for a in activations:
                insert_after(module, a, nn.Dropout(self.p), "dropout")
        if self.input_p > 0:
            module = with_input_layer(module, nn.Dropout(self.input_p), "input_dropout")
        return module


class ActivationNoise(Technique):
    """Gaussian noise N(0, std^2) added after every hidden activation, in training mode only."""

    def __init__(self, std: float = 0.1):
        self.std = checks.nonnegative("regularizer.activation_noise.std", std)

    def model(self, module: nn.Module, name: str) -> nn.Module:
        activations = hidden_activations(module)
        if not activations:
            raise _refuse("activation_noise", name, "hidden activation layer (nn.ReLU, ...)")
        for a in activations:
            insert_after(module, a, GaussianNoise(self.std), "noise")
        return module


class BatchNorm(Technique):
    """A BatchNorm after every hidden Linear/Conv layer that has no norm yet, before its
    activation."""

    def model(self, module: nn.Module, name: str) -> nn.Module:
        layers = unnormalized_hidden_layers(module)
        if not layers:
            lacks = "hidden Linear/Conv layer without a norm after it (each is normalized already)"
            raise _refuse("batch_norm", name, lacks)
        for layer_name in layers:
            layer = module.get_submodule(layer_name)
            features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            insert_after(module, layer_name, NORM_FOR[type(layer)](features), "bn")
        return module


class StochasticDepth(Technique):
    """Drops whole residual branches per sample in training; ``p`` is the drop rate of the last
    block, decaying linearly to 0 for the first. Acts on reglab's residual blocks and
    torchvision's BasicBlock/Bottleneck."""

    def __init__(self, p: float = 0.1):
        self.p = checks.probability("regularizer.stochastic_depth.p", p)

    def model(self, module: nn.Module, name: str) -> nn.Module:
        ends = residual_branch_ends(module)
        if not ends:
            lacks = "residual blocks (reglab's, torchvision's BasicBlock/Bottleneck) to drop"
            raise _refuse(
                "stochastic_depth", name, f"{lacks}: use model=resnet18 or torchvision_resnet18"
            )
        for i, end in enumerate(ends):
            p = self.p * i / (len(ends) - 1) if len(ends) > 1 else self.p
            if p > 0:
                insert_after(module, end, DropPath(p), "drop_path")
        return module


class SmallModel(Technique):
    """Simplify the model: keep ``depth_factor`` of the layers, each ``width_factor`` as wide.

    The model's config names its size arguments in ``_size_``: ``width``, the keys of widths (a
    number or a list of numbers, each narrowed), and ``depth``, the key whose length (a list of
    layers) or value (a count) is the depth. A model without ``depth`` only gets narrower.
    """

    def __init__(self, width_factor: float = 0.25, depth_factor: float = 0.5):
        self.width_factor = checks.fraction("regularizer.small_model.width_factor", width_factor)
        self.depth_factor = checks.fraction("regularizer.small_model.depth_factor", depth_factor)

    def _narrow(self, n: int) -> int:
        return max(1, round(int(n) * self.width_factor))

    def _fewer(self, n: int) -> int:
        return max(1, math.ceil(n * self.depth_factor))

    def model_config(self, cfg: dict) -> dict:
        label = cfg.get("name") or cfg.get("_target_")
        size = cfg.get("_size_")
        if not isinstance(size, dict) or not size.get("width"):
            raise ConfigError(
                f"regularizer=small_model: model {label} does not say which arguments are its "
                "size: give its config a _size_ entry, e.g. _size_: {width: [widths], depth: "
                "widths}"
            )
        widths, depth = size["width"], size.get("depth")
        widths = [widths] if isinstance(widths, str) else list(widths)
        out = dict(cfg)
        for key in [*widths, *([depth] if depth else [])]:
            if out.get(key) is None:
                raise ConfigError(f"model._size_ names {key}, which model {label} does not set")
        if depth:
            value = out[depth]
            if isinstance(value, (list, tuple)):
                out[depth] = list(value)[: self._fewer(len(value))]
            else:
                out[depth] = self._fewer(int(value))
        for key in widths:
            value = out[key]
            many = isinstance(value, (list, tuple))
            out[key] = [self._narrow(w) for w in value] if many else self._narrow(value)
        return out


# ----------------------------------------------------------------------------- batch (training)


class InputNoise(Technique):
    """Gaussian noise N(0, std^2) added to the (normalized) inputs of training batches
    (``regularizer=gaussian_noise``), by the same layer activation_noise uses."""

    def __init__(self, std: float = 0.1):
        self.noise = GaussianNoise(checks.nonnegative("regularizer.gaussian_noise.std", std))

    def batch(self, x: torch.Tensor, y: torch.Tensor | None):
        return self.noise(x), y


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

    needs_targets = True

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

    needs_targets = True

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
    """Stop when ``monitor`` has not improved (by more than ``min_delta``) for ``patience``
    epochs, and put the weights of the best epoch back (Keras' ``restore_best_weights``): the
    test uses them. ``reglab.training.selection`` keeps the best weights; each member of a
    stacked job (``seeds=[...]``) stops on its own."""

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
    ):
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"regularizer.early_stopping.monitor={monitor!r} must be a metric name such as "
                "val/loss"
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


def warmup_ema_avg_fn(decay: float):
    """``torch.optim.swa_utils.AveragedModel``'s ``avg_fn`` for an EMA whose decay at update
    ``n`` is ``min(decay, (1 + n) / (10 + n))`` (TF's ``ExponentialMovingAverage`` with
    ``num_updates``). A fixed 0.99 in a 105-step run would keep a third of the untrained initial
    weights at the end (0.99^105 = 0.35); with the warm-up the average spans about the last ninth
    of the steps so far until ``decay`` binds, whatever the run's length."""

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return d * averaged + (1.0 - d) * current

    return avg_fn


class EMA(Technique):
    """Exponential moving average of the weights after every step (Lightning's
    ``EMAWeightAveraging``) with a warm-up decay (``warmup_ema_avg_fn``); validation and the test
    use the average."""

    final_weights = True

    def __init__(self, decay: float = 0.99):
        self.decay = checks.number(
            "regularizer.ema.decay", decay, low=0, high=1, low_open=True, high_open=True
        )

    def callbacks(self) -> list:
        cb = pl.callbacks.EMAWeightAveraging(decay=self.decay)
        cb._kwargs["avg_fn"] = warmup_ema_avg_fn(self.decay)  # passed on to AveragedModel
        return [cb]


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
