"""The LitModule: model + techniques -> loss; torchmetrics; weight statistics once per epoch.

A training batch arrives as uint8 images on the device and goes:
``/255 -> augmentation (train only) -> normalize -> technique batch hooks -> model -> loss +
penalties``. Validation and test batches skip the training-only steps.
"""

from __future__ import annotations

import math
import os
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


def fused_ok(model: torch.nn.Module) -> bool:
    """Whether torch has fused optimizer kernels for every parameter (float, on cpu/cuda/...)."""
    try:  # the list grows with torch versions (cpu since 2.4)
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = _get_fused_kernels_supported_devices()
    except ImportError:
        return False
    return all(p.device.type in devices and p.is_floating_point() for p in model.parameters())


def check_steps_per_execution(k) -> int:
    """``trainer.steps_per_execution``, checked: an integer >= 1."""
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ConfigError(f"trainer.steps_per_execution={k!r} must be an integer >= 1")
    return k


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
        steps_per_execution: int = 1,
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
        # How the network runs, not what it is (README "Speed"): NHWC memory layout (faster
        # convolutions with oneDNN and tensor cores), torch.compile, and test-time augmentation
        # (logits averaged with those of the mirror image) in validation and test.
        self.channels_last = bool(model.pop("channels_last", False))
        self.tta = bool(model.pop("tta", False))
        compile_model = bool(model.pop("compile", False))
        for t in self.techniques.values():
            model = t.model_kwargs(model)
        self.model = build_model(name, input_shape, num_classes, **model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile_model:
            self.model.compile()  # in place: parameter names and checkpoints stay the same

        self.loss_kwargs: dict = {}
        for t in self.techniques.values():
            self.loss_kwargs = t.loss_kwargs(self.loss_kwargs)

        # trainer.steps_per_execution=k: each training item holds k batches (data.IndexBatches),
        # stepped through here with manual optimization; Lightning's per-batch work (~1 ms of
        # Python, 8% of an mlp_5x500 CPU step) is then paid once per k optimizer steps.
        self.steps_per_execution = check_steps_per_execution(steps_per_execution)
        self.micro_batch = int((data or {}).get("batch_size") or 0)
        if steps_per_execution > 1:
            if self.micro_batch <= 0:
                raise ConfigError("trainer.steps_per_execution > 1 needs data.batch_size")
            self.automatic_optimization = False

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
        self.register_buffer("scale", 1.0 / (255.0 * self.std), persistent=False)
        self.register_buffer("shift", -self.mean / self.std, persistent=False)

        acc = lambda: MulticlassAccuracy(num_classes, average="micro")  # noqa: E731
        self.val_acc, self.test_acc, self.train_eval_acc = acc(), acc(), acc()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # Training loss and accuracy: summed on the device every step (a few tiny ops, no sync),
        # handed to these metrics once per epoch as weighted means, which torchmetrics reduces
        # across DDP ranks. Updating a torchmetrics object every step costs ~0.25 ms, over 1% of
        # a small model's CPU step.
        self.train_loss, self.train_acc = MeanMetric(), MeanMetric()
        # Plain tensors, not buffers: DDP copies rank 0's buffers to every rank before each step.
        self._loss_sum = self._correct = self._nonfinite = None
        self._seen = 0
        self.test_ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best
        self.history: list[dict] = []  # one row per epoch, for curves in the report

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets plain attributes of the module (``_current_fx_name``, ...) ~20 times a
        # step, and so do the training sums below; nn.Module.__setattr__ first checks each value
        # against parameters, buffers and submodules (~1.3 us a call). A name already in
        # __dict__ is none of those, so a value that is no tensor or module goes straight in.
        if name in self.__dict__ and not isinstance(value, (torch.Tensor, torch.nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ the data path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> float, augmented (train only), normalized."""
        if len(self.augment) == 0:  # one fused pass, (x / 255 - mean) / std: ~4x faster on CPU
            return x.float().mul_(self.scale).add_(self.shift)
        x = x.float().div_(255.0)
        x = self.augment.apply(x, train, after_normalize=False)
        x = (x - self.mean) / self.std
        return self.augment.apply(x, train, after_normalize=True)

    def on_fit_start(self) -> None:
        if self.augment.needs_fit():
            x = self.trainer.datamodule.train.images.to(self.device).float().div_(255.0)
            self.augment.fit(x, (x - self.mean) / self.std)

    def on_train_start(self) -> None:
        # lightning_fabric sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import, so that looking for
        # CUDA never spoils a later fork; torch's Adam/AdamW then query NVML on every step
        # (~0.1 ms, more on a busy CPU). Processes are launched by now: use the plain check.
        self._nvml_check = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"

    def on_train_end(self) -> None:
        if self._nvml_check is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = self._nvml_check

    def training_step(self, batch, batch_idx):
        if self.steps_per_execution == 1:
            return self._train_loss(*batch)
        # Manual optimization over the batches of this item, each a full optimizer step, in the
        # order and with the hooks (backward, optimizer step, precision) of automatic mode.
        opt, summed = self.optimizers(), None
        for x, y in zip(*(t.split(self.micro_batch) for t in batch), strict=True):
            total = self._train_loss(x, y)
            opt.zero_grad()
            self.manual_backward(total)
            opt.step()
            self._step_schedulers("step")
            for t in self.techniques.values():
                t.after_step(self.model)
            summed = total.detach() if summed is None else summed + total.detach()
        return summed  # non-finite if any step's loss was

    def _step_schedulers(self, interval: str) -> None:
        """What Lightning does for schedulers in automatic optimization (SWA's SWALR included)."""
        count = self.global_step if interval == "step" else self.current_epoch + 1
        for cfg in self.trainer.lr_scheduler_configs:
            if cfg.interval == interval and count % cfg.frequency == 0:
                cfg.scheduler.step()

    def _train_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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
        with torch.no_grad():
            if self._loss_sum is None:
                self._reset_train_sums(loss.device)
            self._loss_sum.add_(loss, alpha=len(hard))
            self._correct.add_((logits.argmax(1) == hard).sum())
        self._seen += len(hard)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            # Reading a value off an accelerator waits for it: there, a non-finite loss sets a
            # flag on the device that is read every 16 steps. On the CPU reading it is free, and
            # one .item() costs less than the flag's three tensor ops.
            if loss.device.type == "cpu":
                if not math.isfinite(loss.item()):
                    self._nonfinite.fill_(True)
                    self._check_finite(loss)
            else:
                self._nonfinite.logical_or_(~torch.isfinite(loss.detach()))
                if batch_idx % 16 == 15:
                    self._check_finite(loss)
        if self.steps_per_execution == 1:  # else after each step, in training_step
            for t in self.techniques.values():
                t.after_step(self.model)

    def _reset_train_sums(self, device: torch.device) -> None:
        self._loss_sum = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self._seen = 0

    def _check_finite(self, loss: torch.Tensor) -> None:
        if self._nonfinite is not None and self._nonfinite:
            raise DivergenceError(
                f"loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}): "
                "lower optimizer.lr or the penalty strength",
                step=self.global_step,
            )

    def _eval_step(self, batch, loss_metric, acc_metric, ece=None):
        x, y = batch
        x = self.prepare(x, train=False)
        logits = self(x)
        if self.tta:
            logits = (logits + self(x.flip(-1))) / 2
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

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            self._step_schedulers("epoch")
        self._check_finite(self._loss_sum)
        if self._seen:
            self.train_loss.update(self._loss_sum / self._seen, weight=self._seen)
            self.train_acc.update(self._correct / self._seen, weight=self._seen)
        self._reset_train_sums(self.device)
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
        # Without decay the two groups would be alike: one group, one optimizer kernel call.
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        if wd == 0:
            groups = [{"params": [*self.model.parameters()], "weight_decay": 0.0}]
        # One fused kernel per parameter instead of ~10 ops: the same update, ~4x faster on the
        # CPU (Adam on mlp_5x500: 1.6 ms instead of 6 ms a step).
        fused = {"fused": True} if fused_ok(self.model) else {}
        if name == "sgd":
            opt = torch.optim.SGD(
                groups,
                lr=lr,
                momentum=cfg.get("momentum", 0.9),
                nesterov=cfg.get("nesterov", True),
                **fused,
            )
        elif name == "adamw":
            opt = torch.optim.AdamW(
                groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), **fused
            )
        else:
            opt = torch.optim.Adam(
                groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), **fused
            )
        sched = cfg.get("scheduler", "none")
        if sched == "none":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if self.steps_per_execution > 1:  # Lightning counts items of k steps; count the steps
            total = self.trainer.num_training_batches * self.steps_per_execution
            dm = self.trainer.datamodule
            if dm is not None:
                total = min(total, dm.train_dataloader().num_steps)
            epochs, max_steps = self.trainer.max_epochs, self.trainer.max_steps
            total = total * epochs if epochs and epochs > 0 else max_steps
            if max_steps > 0:
                total = min(total, max_steps)
        if sched == "cosine":
            s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        else:
            s = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=max(total, 1), pct_start=cfg.get("pct_start", 0.25)
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "step"}}
