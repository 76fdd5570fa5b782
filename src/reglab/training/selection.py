"""Which weights a run tests, and what it reports about them.

A run tests the weights of its best validation epoch: the lowest ``val/loss`` (the validation
NLL, continuous, unlike val/acc on a few hundred images), or early stopping's own ``monitor``
when that technique is chosen (Keras' ``restore_best_weights``). A technique that tests its
final weights (SWA, EMA: ``final_weights``) tests those. Either way ``val/loss_best`` is the
validation NLL of the weights tested and ``best_epoch`` their epoch.

``Best`` is the one rule, used by a single run (``BestWeights``, a callback) and by each member
of a stacked job (``reglab.training.stack``): the same epochs count as improvements as for
Lightning's ``EarlyStopping`` (strictly better than the best by more than ``min_delta``).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn

from reglab.regularizers import EarlyStopping
from reglab.training.metrics import Sums

VAL_LOSS = "val/loss"
VAL_LOSS_BEST = "val/loss_best"
BEST_EPOCH = "best_epoch"


class Best:
    """The best value of ``monitor`` so far, its epoch, a copy of its weights, and how many
    epochs have passed without an improvement (``wait``)."""

    def __init__(self, monitor: str = VAL_LOSS, mode: str = "min", min_delta: float = 0.0):
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.value: float | None = None
        self.epoch: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.wait = 0

    @classmethod
    def of(cls, techniques) -> Best:
        """By early stopping's monitor where that technique is chosen, else by val/loss."""
        for t in techniques:
            if isinstance(t, EarlyStopping):
                return cls(t.monitor, t.mode, t.min_delta)
        return cls()

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        if self.mode == "min":
            return value < self.value - self.min_delta
        return value > self.value + self.min_delta

    def update(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Record an epoch's value; keep a copy of ``model``'s weights if it is the best."""
        if not self.improves(value):
            self.wait += 1
            return False
        self.value, self.epoch, self.wait = value, epoch, 0
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict:
        return {
            "value": self.value,
            "epoch": self.epoch,
            "weights": self.weights,
            "wait": self.wait,
        }

    def load_state_dict(self, state: dict) -> None:
        self.value, self.epoch = state["value"], state["epoch"]
        self.weights, self.wait = state["weights"], state["wait"]


class BestWeights(pl.Callback):
    """A single run's ``Best``, updated after each validation from the logged metric; kept in
    checkpoints, so a resumed run still knows its best epoch."""

    def __init__(self, best: Best):
        self.best = best

    @property
    def state_key(self) -> str:
        return f"BestWeights[{self.best.monitor}]"

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.best.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.best.update(float(value), trainer.current_epoch, pl_module.model)

    def state_dict(self) -> dict:
        return self.best.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.best.load_state_dict(state_dict)


@torch.no_grad()
def evaluate(module, loader, prefix: str = "val") -> dict[str, float]:
    """``prefix/loss`` and ``prefix/acc`` of the module's current weights on a loader, in eval
    mode: the same prediction path and sums as Lightning's validation."""
    was_training = module.training
    module.eval()
    sums = Sums()
    for x, y in loader:
        module.score(sums, module.predict_logits(x.to(module.device)), y.to(module.device))
    module.train(was_training)
    return {k: float(v) for k, v in sums.means(prefix, module.reduce_sum).items()}


@torch.no_grad()
def test(module, dm) -> dict[str, float]:
    """What ``trainer.test`` logs (``Classifier.test_step`` and ``test_row``), without a Trainer."""
    was_training = module.training
    module.eval()
    loaders = dm.test_dataloader()
    for loader, scores in zip(loaders, (module.test_scores, module.train_eval_scores), strict=True):
        for x, y in loader:
            scores.update(module.predict_logits(x.to(module.device)), y.to(module.device))
    module.train(was_training)
    return {k: float(v) for k, v in module.test_row().items()}
