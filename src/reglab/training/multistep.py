"""``execution.steps_per_execution=k``: k optimizer steps per Lightning batch.

Lightning's per-batch work (~1 ms of Python, 8% of an mlp_5x500 CPU step) is then paid once per
k steps. The training loader hands Lightning k consecutive batches at once (``IndexBatches`` with
``steps=k``, one ``index_select``); ``MultiStepClassifier`` splits them again and makes a full
optimizer step for each, through ``manual_backward`` and ``LightningOptimizer.step`` so that
Lightning's backward, optimizer-step and precision hooks still run; schedulers are stepped as
Lightning steps them. Same batches, same order, same results as k=1 (tests/training/test_multistep.py).

This file is the whole mode: ``reglab.training.assemble.build`` checks k once (``check``) and
picks ``MultiStepClassifier``, ``build_trainer`` calls ``configure``; delete the file and those
uses to remove it.
"""

from __future__ import annotations

import pytorch_lightning as pl

from reglab.core import checks
from reglab.core.errors import ConfigError
from reglab.training.module import Classifier

# Callbacks that act after every optimizer step, which k > 1 would thin out to every k-th.
PER_BATCH_CALLBACKS = (pl.callbacks.EMAWeightAveraging, pl.callbacks.GradientAccumulationScheduler)


class MultiStepClassifier(Classifier):
    """The Classifier, stepping through the k batches of each Lightning batch itself."""

    automatic_optimization = False
    steps_per_execution = (
        1  # set by ``assemble.build``; not a hyperparameter: checkpoints stay plain
    )
    micro_batch = 0

    def training_step(self, batch, batch_idx):
        opt, summed = self.optimizers(), None
        for x, y in zip(*(t.split(self.micro_batch) for t in batch), strict=True):
            total = self.step_loss(x, y)
            opt.zero_grad()
            self.manual_backward(total)
            opt.step()
            self._step_schedulers("step")
            self.after_step()
            summed = total.detach() if summed is None else summed + total.detach()
        return summed  # non-finite if any step's loss was

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")
        super().on_train_epoch_end()

    def _step_schedulers(self, interval: str) -> None:
        """What Lightning does for schedulers in automatic optimization (SWA's SWALR included)."""
        count = self.global_step if interval == "step" else self.current_epoch + 1
        for cfg in self.trainer.lr_scheduler_configs:
            if cfg.interval == interval and count % cfg.frequency == 0:
                cfg.scheduler.step()

    def optimizer_steps(self) -> int:
        """Lightning counts its batches (groups of k steps); count the optimizer steps."""
        trainer, k = self.trainer, self.steps_per_execution
        per_epoch = trainer.num_training_batches * k
        if trainer.datamodule is not None:
            per_epoch = min(per_epoch, trainer.datamodule.train_dataloader().num_steps)
        epochs, max_steps = trainer.max_epochs, trainer.max_steps
        total = per_epoch * epochs if epochs and epochs > 0 else max_steps
        return min(total, max_steps) if max_steps > 0 else total


def check(execution) -> int:
    """``execution.steps_per_execution``, checked: an integer >= 1."""
    return checks.number(
        "execution.steps_per_execution",
        execution.get("steps_per_execution", 1),
        low=1,
        integer=True,
    )


def configure(dm, model: MultiStepClassifier, trainer_kwargs: dict, callbacks: list) -> None:
    """Set the module's k (``build`` checked it) on the loader; refuse what needs Lightning's
    hooks after every step."""
    k = model.steps_per_execution
    per_batch = [type(c).__name__ for c in callbacks if isinstance(c, PER_BATCH_CALLBACKS)]
    clip = trainer_kwargs.get("gradient_clip_val")
    accumulate = trainer_kwargs.get("accumulate_grad_batches", 1)
    if per_batch or clip or accumulate != 1:
        what = per_batch[0] if per_batch else ("gradient clipping" if clip else "accumulation")
        raise ConfigError(
            f"execution.steps_per_execution={k} does not work with {what} (it acts once per "
            "Lightning batch); use execution.steps_per_execution=1"
        )
    dm.steps_per_item = k
    model.micro_batch = dm.batch_size
