"""The LitModule: model + techniques -> loss; torchmetrics; weight statistics once per epoch.

A training batch arrives as uint8 images on the device and goes:
``/255 -> batch hooks on [0, 1] images (augmentations) -> normalize -> batch hooks on normalized
inputs (ZCA, noise, mixup) -> model -> loss + penalties`` (``transform``: one loop over the
augmentations and regularizers alike). Validation and test batches go ``/255 -> normalize ->
[preprocessing such as ZCA] -> model`` (``predict_logits``), the one prediction path that
``trainer.test``, ``reglab-eval`` and ensembles share.

Techniques act only through their hooks (``reglab.regularizers.Technique``); the optimizer and
scheduler are ``_partial_`` configs (``reglab.training.optim``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from reglab import models
from reglab.augment import Pipeline
from reglab.core import checks, names
from reglab.core.errors import ConfigError, DivergenceError
from reglab.core.technique import Technique, overrides
from reglab.training.metrics import Scores, Sums, weight_stats
from reglab.training.optim import build_optimizer, build_scheduler, check_optimizer
from reglab.training.speed import FastSetattr


def instantiate_named(cfg: Mapping | None, group: str) -> dict:
    """Instantiate every ``name: {_target_: ...}`` entry of a multi-select group; a technique's
    search space (``_search_``, read by the tuning protocol) is no constructor argument."""
    out = {}
    for name, sub in (cfg or {}).items():
        if sub is None:
            continue
        try:
            out[name] = instantiate({k: v for k, v in sub.items() if k != "_search_"})
        except Exception as e:  # hydra wraps constructor errors; surface ours as they are
            cause = e
            while cause.__cause__ is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__
            raise ConfigError(
                f"{group}={name}: {cause if isinstance(cause, ConfigError) else e}"
            ) from e
    return out


class Classifier(FastSetattr, pl.LightningModule):
    def __init__(
        self,
        model: Mapping,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        regularizer: Mapping | None = None,
        augmentation: Mapping | None = None,
        data: Mapping | None = None,  # kept in the checkpoint so reglab-eval can rebuild the data
        execution: Mapping | None = None,
    ):
        super().__init__()
        # Plain containers only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.techniques: dict[str, Technique] = instantiate_named(regularizer, "regularizer")
        for t in self.techniques.values():
            if t.num_classes is None:  # unless the config set it; mixing hooks build soft targets
                t.num_classes = num_classes
        self.augment = Pipeline(
            instantiate_named(augmentation, "augmentation"),
            data=data,  # what the data says about itself, e.g. mirror_safe: false (no flips)
            input_shape=input_shape,
        )

        model = dict(model)
        execution = execution or {}
        self.channels_last = checks.flag(
            "execution.channels_last", execution.get("channels_last", False)
        )
        self.tta = checks.flag("execution.tta", execution.get("tta", False))
        label = str(model.get("name") or model.get("_target_"))
        for t in self.techniques.values():
            model = t.model_config(model)
        self.model = models.build(model, input_shape, num_classes)
        for t in self.techniques.values():
            self.model = t.model(self.model, label)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if checks.flag("execution.compile", execution.get("compile", False)):
            self.model.compile()  # in place: parameter names and checkpoints stay the same

        self.loss_kwargs: dict = {}
        for t in self.techniques.values():
            self.loss_kwargs = t.loss_kwargs(self.loss_kwargs)
        if optimizer is not None:
            check_optimizer(optimizer)

        # (x / 255 - mean) / std as one fused multiply-add: ~4x faster on the CPU.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", 1.0 / (255.0 * self.std), persistent=False)
        self.register_buffer("shift", -self.mean / self.std, persistent=False)

        # Each epoch's training and validation loss and accuracy are sums on the device
        # (``Sums``), val/acc_best is read off ``history``; the test's scores are torchmetrics,
        # made when the test starts (``test_scores``).
        self.sums, self.val_sums = Sums(), Sums()
        self._batch_steps: dict[tuple[bool, bool], list[Technique]] = {}
        self.history: list[dict] = []  # one row per epoch, for curves in the report

    # ------------------------------------------------------------------ the data path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def batch_steps(self, train: bool, targets: bool = True) -> list[Technique]:
        """The techniques whose ``batch`` hook runs on this batch: augmentations, then
        regularizers, in config order; without ``targets``, those that need none."""
        key = (train, targets)
        if key not in self._batch_steps:  # fixed once built; asked for every batch
            steps = [*self.augment.steps.values(), *self.techniques.values()]
            self._batch_steps[key] = [
                t
                for t in steps
                if overrides(t, "batch")
                and (train or not t.train_only)
                and (targets or not t.needs_targets)
            ]
        return self._batch_steps[key]

    def transform(
        self, x: torch.Tensor, y: torch.Tensor | None, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 batch -> model input: /255, the batch hooks of stage "pixels", normalize, those
        of stage "normalized" (``reglab.core.technique``)."""
        steps = self.batch_steps(train, targets=y is not None)
        if any(t.stage == "pixels" for t in steps):
            x = x.float().div_(255.0)
            for t in steps:
                if t.stage == "pixels":
                    x, y = t.batch(x, y)
            x = (x - self.mean) / self.std
        else:
            x = x.float().mul_(self.scale).add_(self.shift)
        for t in steps:
            if t.stage == "normalized":
                x, y = t.batch(x, y)
        return x, y

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> model input, through the batch hooks that need no targets (train:
        augmentations and input noise; eval: preprocessing such as ZCA only)."""
        return self.transform(x, None, train)[0]

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits of a uint8 batch; with ``execution.tta`` the mean over the image and
        its mirror image."""
        x = self.prepare(x, train=False)
        logits = self(x)
        return (logits + self(x.flip(-1))) / 2 if self.tta else logits

    def on_fit_start(self) -> None:
        self.fit_statistics(self.trainer.datamodule.train.images)

    def fit_statistics(self, images: torch.Tensor) -> None:
        """The ``fit`` hooks (ZCA) on the training images; ``reglab.training.stack`` calls it
        with each member's own."""
        steps = [*self.augment.steps.values(), *self.techniques.values()]
        steps = [t for t in steps if overrides(t, "fit")]
        if steps:
            x = images.to(self.device).float().div_(255.0)
            normalized = (x - self.mean) / self.std
            for t in steps:
                t.fit(normalized if t.stage == "normalized" else x)

    def training_step(self, batch, batch_idx):
        return self.step_loss(*batch)

    def step_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self.transform(x, y, train=True)
        return self.loss_of(self(x), y)

    def loss_of(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of ``logits`` (of a transformed batch): cross-entropy, plus the
        techniques' penalties; the cross-entropy is added to the epoch's training sums."""
        loss = self.data_loss(logits, y)
        self.sums.add(loss, logits, y if y.ndim == 1 else y.argmax(1))
        return self.penalized(loss)

    def data_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against hard or soft targets (label smoothing sets its kwargs)."""
        return F.cross_entropy(logits, y, **self.loss_kwargs)

    def penalized(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the techniques' penalties on the weights."""
        total = loss
        for t in self.techniques.values():
            p = t.penalty(self.model)
            if p is not None:
                total = total + p
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            # Reading a value off an accelerator waits for it: there, a non-finite loss sets a
            # flag on the device that is read every 16 steps. On the CPU one .item() is cheaper.
            if loss.device.type == "cpu":
                if not math.isfinite(loss.item()):
                    self.sums.nonfinite.fill_(True)
                    self.check_finite(loss)
            else:
                self.sums.nonfinite.logical_or_(~torch.isfinite(loss.detach()))
                if batch_idx % 16 == 15:
                    self.check_finite(loss)
        if self.automatic_optimization:  # the optimizer has stepped by now
            self.after_step()

    def after_step(self) -> None:
        for t in self.techniques.values():
            t.after_step(self.model)

    def check_finite(self, loss: torch.Tensor) -> None:
        if self.sums.nonfinite is not None and self.sums.nonfinite:
            raise DivergenceError(
                f"loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}): "
                "lower optimizer.lr or the penalty strength",
                step=self.global_step,
            )

    def validation_step(self, batch, batch_idx):
        self.score(self.val_sums, self.predict_logits(batch[0]), batch[1])

    @staticmethod
    def score(sums: Sums, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Adds an evaluation batch's loss and correct predictions to ``sums``."""
        sums.add(Classifier.eval_loss(logits, y), logits, y)

    @staticmethod
    def eval_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The validation loss: plain cross-entropy (no smoothing, no penalty)."""
        return F.cross_entropy(logits, y)

    @property
    def test_scores(self) -> Scores:
        """The test pool's scores (with calibration); made on first use, on the module's device:
        building the metric objects of every member of a stacked job cost ~3 ms each."""
        return self._scores("scores_test", "test", calibration=True)

    @property
    def train_eval_scores(self) -> Scores:
        """The scores of the training images in eval mode (the generalization gap)."""
        return self._scores("scores_train_eval", "train_eval")

    def use_scores_of(self, other: Classifier) -> None:
        """Test with ``other``'s metric objects, made already (each test resets them): a stacked
        job's members are tested one after another and need one set between them."""
        if other.hparams.num_classes != self.hparams.num_classes or other.device != self.device:
            return
        for name in ("scores_test", "scores_train_eval"):
            if name in other._modules and name not in self._modules:
                self.add_module(name, other._modules[name])

    def _scores(self, name: str, prefix: str, calibration: bool = False) -> Scores:
        if name not in self._modules:
            num_classes = self.hparams.num_classes
            self.add_module(name, Scores(num_classes, prefix, calibration).to(self.device))
        return self._modules[name]

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        scores = self.test_scores if dataloader_idx == 0 else self.train_eval_scores
        scores.update(self.predict_logits(batch[0]), batch[1])

    # ------------------------------------------------------------------ epoch-level logging

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_epoch_row(), prog_bar=False)

    def train_epoch_row(self) -> dict:
        """The epoch's training metrics and weight statistics, added to ``history``. Also called
        by ``reglab.training.stack`` for each member of a stacked job."""
        s = self.sums
        self.check_finite(s.loss)
        row = s.means("train", self.reduce_sum)
        s.reset(self.device)
        row.update(weight_stats(self.model))
        self._history_row(row)
        return row

    def on_validation_epoch_end(self) -> None:
        row = self.val_epoch_row(self.trainer.sanity_checking)
        if row:
            self.log_dict(row, prog_bar=True)

    def val_epoch_row(self, sanity_check: bool = False) -> dict:
        """The epoch's validation metrics (added to ``history``); empty for a sanity check."""
        row = self.val_sums.means("val", self.reduce_sum)
        self.val_sums.reset(self.device)
        if sanity_check:
            return {}
        # The best so far, this epoch's included: history comes back with a resumed run.
        earlier = [r[names.VAL_ACC] for r in self.history if names.VAL_ACC in r]
        row[names.VAL_ACC_BEST] = max([float(row[names.VAL_ACC]), *earlier])
        self._history_row(row)
        return row

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes of a distributed run (as is, in a single process)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def _history_row(self, row: dict) -> None:
        epoch = self.current_epoch
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        self.history[-1].update({k: float(v) for k, v in row.items()})

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_row())

    def test_row(self) -> dict:
        row = self.test_scores.compute()
        if self.train_eval_scores.seen:
            row.update(self.train_eval_scores.compute())
            row[names.GAP_ACC] = row["train_eval/acc"] - row[names.TEST_ACC]
        row.update(weight_stats(self.model))
        self.test_scores.reset(), self.train_eval_scores.reset()
        return row

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Older checkpoints kept val/acc_best in a torchmetrics MaxMetric; history holds it now.
        checkpoint.get("state_dict", {}).pop("val_acc_best.max_value", None)
        # Testing the best checkpoint of this run must not cut its history back to that epoch.
        if self._trainer is not None and self.trainer.state.fn != "fit" and self.history:
            return
        self.history = list(checkpoint.get("history", []))

    # ------------------------------------------------------------------ optimization

    def optimizer_steps(self) -> int:
        """Optimizer steps of the whole run, for schedules measured in steps."""
        return int(self.trainer.estimated_stepping_batches)

    def configure_optimizers(self):
        cfg = dict(self.hparams.optimizer or {})
        for t in self.techniques.values():
            cfg = t.optimizer_kwargs(cfg)
        opt = build_optimizer(cfg, self.model)
        if not self.hparams.scheduler:
            return opt
        epochs = max(self.trainer.max_epochs or 0, 1)  # -1 (no limit): an epoch schedule's unit
        sched = build_scheduler(self.hparams.scheduler, opt, self.optimizer_steps(), epochs)
        return {"optimizer": opt, "lr_scheduler": sched}
