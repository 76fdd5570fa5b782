"""The LitModule: model + techniques -> loss; torchmetrics; weight statistics once per epoch.

A training batch arrives as uint8 images on the device and goes:
``/255 -> augmentation (train only) -> normalize -> technique batch hooks -> model -> loss +
penalties``. Validation and test batches skip the training-only steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from reglab.augment import Pipeline
from reglab.errors import ConfigError, DivergenceError
from reglab.models import build_model
from reglab.regularizers import Technique, penalized_weights

SPARSITY_THRESHOLD = 1e-3
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")


def instantiate_named(cfg: Mapping | None, group: str) -> dict:
    """Instantiate every ``name: {_target_: ...}`` entry of a multi-select group."""
    out = {}
    for name, sub in (cfg or {}).items():
        if sub is None:
            continue
        try:
            out[name] = instantiate(sub)
        except Exception as e:  # hydra wraps constructor errors; surface ours as they are
            cause = e
            while cause.__cause__ is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__
            if isinstance(cause, ConfigError):
                raise ConfigError(f"{group}={name}: {cause}") from e
            raise ConfigError(f"{group}={name}: {e}") from e
    return out


@torch.no_grad()
def weight_stats(model: torch.nn.Module) -> dict[str, float]:
    """L1 norm, L2 norm and sparsity (|w| < 1e-3) over weight matrices and kernels."""
    l1 = l2sq = small = count = 0.0
    for w in penalized_weights(model):
        l1 += w.abs().sum().item()
        l2sq += w.pow(2).sum().item()
        small += (w.abs() < SPARSITY_THRESHOLD).sum().item()
        count += w.numel()
    return {
        "weights/l1": l1,
        "weights/l2": math.sqrt(l2sq),
        "weights/sparsity": small / max(count, 1),
    }


class Classifier(pl.LightningModule):
    def __init__(
        self,
        model: Mapping,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        optimizer: Mapping,
        regularizer: Mapping | None = None,
        augmentation: Mapping | None = None,
        data: Mapping | None = None,  # kept in the checkpoint so reglab-eval can rebuild the data
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
            data=(data or {}).get("name"),  # dataset-aware checks, e.g. flips on digits
            input_shape=input_shape,
        )

        model = dict(model)
        name = model.pop("name")
        for t in self.techniques.values():
            model = t.model_kwargs(model)
        self.model = build_model(name, input_shape, num_classes, **model)

        self.loss_kwargs: dict = {}
        for t in self.techniques.values():
            self.loss_kwargs = t.loss_kwargs(self.loss_kwargs)

        self.opt_cfg = dict(optimizer)
        if self.opt_cfg.get("name") not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer.name={self.opt_cfg.get('name')!r} is not an optimizer; choose one of {list(OPTIMIZERS)}"
            )
        if not self.opt_cfg.get("lr", 0) > 0:
            raise ConfigError(f"optimizer.lr={self.opt_cfg.get('lr')} must be > 0")
        if self.opt_cfg.get("weight_decay", 0) < 0:
            raise ConfigError(f"optimizer.weight_decay={self.opt_cfg['weight_decay']} must be >= 0")
        if self.opt_cfg.get("scheduler", "none") not in SCHEDULERS:
            raise ConfigError(
                f"optimizer.scheduler={self.opt_cfg.get('scheduler')!r}; choose one of {list(SCHEDULERS)}"
            )

        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

        acc = lambda: MulticlassAccuracy(num_classes, average="micro")  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc, self.train_eval_acc = (
            acc(),
            acc(),
            acc(),
            acc(),
        )
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.test_ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best
        self.history: list[dict] = []  # one row per epoch, for curves in the report

    # ------------------------------------------------------------------ the data path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> float, augmented (train only), normalized."""
        x = x.float().div_(255.0)
        x = self.augment.apply(x, train, after_normalize=False)
        x = (x - self.mean) / self.std
        return self.augment.apply(x, train, after_normalize=True)

    def on_fit_start(self) -> None:
        if self.augment.needs_fit():
            x = self.trainer.datamodule.train.images.to(self.device).float().div_(255.0)
            self.augment.fit(x, (x - self.mean) / self.std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self.prepare(x, train=True)
        for t in self.techniques.values():
            x, y = t.batch(x, y)
        logits = self(x)
        loss = F.cross_entropy(logits, y, **self.loss_kwargs)
        total = loss
        for t in self.techniques.values():
            p = t.penalty(self.model)
            if p is not None:
                total = total + p
        hard = y if y.ndim == 1 else y.argmax(1)
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), hard)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is not None and not torch.isfinite(loss):
            raise DivergenceError(
                f"loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}): "
                "lower optimizer.lr or the penalty strength",
                step=self.global_step,
            )
        for t in self.techniques.values():
            t.after_step(self.model)

    def _eval_step(self, batch, loss_metric, acc_metric, ece=None):
        x, y = batch
        logits = self(self.prepare(x, train=False))
        if loss_metric is not None:
            loss_metric.update(F.cross_entropy(logits, y))
        acc_metric.update(logits, y)
        if ece is not None:
            ece.update(logits.softmax(-1), y)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_loss, self.val_acc)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        if dataloader_idx == 0:
            self._eval_step(batch, self.test_loss, self.test_acc, self.test_ece)
        else:
            self._eval_step(batch, None, self.train_eval_acc)

    # ------------------------------------------------------------------ epoch-level logging

    def _log_epoch(self, values: dict[str, float]) -> None:
        self.log_dict(values, prog_bar=False, sync_dist=False)

    def on_train_epoch_end(self) -> None:
        row = {"train/loss": self.train_loss.compute(), "train/acc": self.train_acc.compute()}
        self.train_loss.reset(), self.train_acc.reset()
        row.update(weight_stats(self.model))
        self.log_dict(row, prog_bar=False)
        self._history_row(row)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_loss.reset(), self.val_acc.reset()
            return
        acc = self.val_acc.compute()
        self.val_acc_best.update(acc)
        row = {
            "val/loss": self.val_loss.compute(),
            "val/acc": acc,
            "val/acc_best": self.val_acc_best.compute(),
        }
        self.val_loss.reset(), self.val_acc.reset()
        self.log_dict(row, prog_bar=True)
        self._history_row(row)

    def _history_row(self, row: dict) -> None:
        epoch = self.current_epoch
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        self.history[-1].update({k: float(v) for k, v in row.items()})

    def on_test_epoch_end(self) -> None:
        test_acc = self.test_acc.compute()
        row = {
            "test/loss": self.test_loss.compute(),
            "test/acc": test_acc,
            "test/ece": self.test_ece.compute(),
        }
        if self.train_eval_acc.update_count:
            row["train_eval/acc"] = self.train_eval_acc.compute()
            row["gap/acc"] = row["train_eval/acc"] - test_acc
        row.update(weight_stats(self.model))
        for m in (self.test_loss, self.test_acc, self.test_ece, self.train_eval_acc):
            m.reset()
        self.log_dict(row)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Testing the best checkpoint of this run must not cut its history back to that epoch.
        if self._trainer is not None and self.trainer.state.fn != "fit" and self.history:
            return
        self.history = list(checkpoint.get("history", []))

    # ------------------------------------------------------------------ optimization

    def configure_optimizers(self):
        cfg = dict(self.opt_cfg)
        for t in self.techniques.values():
            cfg = t.optimizer_kwargs(cfg)
        name, lr, wd = cfg["name"], float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
        if lr <= 0 or wd < 0:
            raise ConfigError(f"optimizer.lr={lr} must be > 0 and weight_decay={wd} >= 0")
        # Weight decay on weight matrices and kernels only, never on biases or norm parameters.
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        if name == "sgd":
            opt = torch.optim.SGD(
                groups, lr=lr, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", True)
            )
        elif name == "adamw":
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))))
        else:
            opt = torch.optim.Adam(groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))))
        sched = cfg.get("scheduler", "none")
        if sched == "none":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if sched == "cosine":
            s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        else:
            s = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=max(total, 1), pct_start=cfg.get("pct_start", 0.25)
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step"}}
