"""``seeds=[1,2,3]``: several seeds of one configuration trained as members of one job.

One Hydra composition, one Trainer, one loop; member ``s`` is exactly the run ``seed=s
data.split_seed=s``: its own DataModule (split, subset and batch order of seed s), its own
Classifier built right after ``seed_everything(s)``, its own optimizer, and its own torch random
state, put in place around each of its steps (dropout, noise, mixup, augmentation draw from it
as they would alone). A Lightning batch is one step of every live member; the validation loop
scores every live member, and the Trainer's ``callback_metrics`` hold the mean over them, so an
ordinary callback (Optuna's pruning) reads one number per epoch.

Per member, as in a single run (``reglab.training.selection``): the best epoch by val/loss (or
early stopping's monitor) is kept in memory and tested; early stopping freezes the member alone;
gradient clipping clips the member's own gradient; a non-finite loss freezes it as failed while
the others go on; EMA keeps one average per member. Not stacked (``not_stackable``; the seeds
then run one after another as single runs): SWA (Lightning's callback anneals the learning rate
of one optimizer), ``execution.steps_per_execution > 1``, checkpoints and resume, a scheduler
that monitors a metric, more than one device, callbacks that act on the whole job.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.optim.swa_utils import AveragedModel

from reglab.core import names
from reglab.core.config import to_plain
from reglab.core.errors import ConfigError
from reglab.core.technique import overrides
from reglab.regularizers import (
    EMA,
    EarlyStopping,
    GradientClipping,
    warmup_ema_avg_fn,
)
from reglab.training.assemble import build, config_callbacks, quiet_lightning
from reglab.training.loggers import finish_wandb, make_loggers, tracking_callbacks
from reglab.training.module import Classifier
from reglab.training.selection import BEST_EPOCH, VAL_LOSS, VAL_LOSS_BEST, Best, evaluate, test
from reglab.training.speed import FastSetattr, PlainCudaCheck
from reglab.training.vectorize import Shared, signature
from reglab.training.vectorize import forward as batched_forward

MEAN_KEYS = (VAL_LOSS, names.VAL_ACC, names.VAL_ACC_BEST)


def check_seeds(seeds) -> list[int]:
    """``seeds``, checked: distinct integers >= 0 (each is also a split seed)."""
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(
            f"seeds={seeds!r} must be a non-empty list of integers, e.g. seeds=[1,2,3]"
        )
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"seeds={list(seeds)}: each seed must be an integer >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={list(seeds)} lists a seed twice")
    return list(seeds)


def not_stackable(cfg: DictConfig) -> str | None:
    """What in ``cfg`` a stacked job cannot run (its seeds then run one after another), or None."""
    execution = cfg.get("execution") or {}
    reasons = {
        "regularizer=swa (Lightning's callback averages one module)": any(
            getattr(t, "final_weights", False) and t is not EMA for t in _technique_cfgs(cfg)
        ),
        "execution.steps_per_execution > 1": execution.get("steps_per_execution", 1) != 1,
        "resume / ckpt_path (a stacked job writes no checkpoints)": bool(
            cfg.get("resume") or cfg.get("ckpt_path")
        ),
        "a scheduler with a monitor": bool((cfg.get("scheduler") or {}).get("monitor")),
        "trainer.accumulate_grad_batches != 1": cfg.trainer.get("accumulate_grad_batches", 1)
        not in (1, None),
        "trainer.max_steps": cfg.trainer.get("max_steps") not in (None, -1),
        "trainer.precision other than 32": str(cfg.trainer.get("precision") or "32")
        not in ("32", "32-true"),
        "more than one device": str(cfg.trainer.get("devices") or 1) not in ("1", "auto"),
        "callbacks that act on the whole job (early stopping, weight averaging)": any(
            "EarlyStopping" in str(c.get("_target_", ""))
            or "WeightAveraging" in str(c.get("_target_", ""))
            for c in (cfg.get("callbacks") or {}).values()
            if c is not None
        ),
    }
    return next((what for what, bad in reasons.items() if bad), None)


def _technique_cfgs(cfg: DictConfig) -> list:
    """The technique classes chosen, without building them (for the checks above)."""
    out = []
    for sub in (cfg.get("regularizer") or {}).values():
        if sub is not None and sub.get("_target_"):
            out.append(get_class(sub._target_))
    return out


def member_config(cfg: DictConfig | dict, seed: int) -> dict:
    """The config of the single run that member ``seed`` is: ``seed=S data.split_seed=S``, as
    plain dicts (``assemble.build`` takes them).

    From ``cfg`` resolved once to plain containers (``resolved``): copying and resolving the
    composed config per member cost ~90 ms each, and creating a DictConfig of it ~20 ms, more
    than a digits member's training."""
    base = copy.deepcopy(resolved(cfg) if isinstance(cfg, DictConfig) else cfg)  # its own
    return {**base, "seed": seed, "seeds": None, "data": {**base["data"], "split_seed": seed}}


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def check_variants(variants) -> list[tuple[str, dict]]:
    """``variants=[{dir: D, set: {key: value, ...}}, ...]``, checked: (dir, values) pairs, or
    one unnamed variant without values. Each variant is the configuration with its ``set``
    values; member S of variant D writes ``D/seed_S/metrics.json`` (D relative to the job's
    folder, or absolute). ``variants=/path/to/file.json`` reads that list from a JSON file (a
    comparison passes a few dozen variants so: Hydra's parser takes seconds on a long override)."""
    if variants is None:
        return [("", {})]
    if isinstance(variants, str):
        try:
            variants = json.loads(Path(variants).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"variants={variants}: not a readable JSON list ({e})") from e
    example = "e.g. variants=[{dir: a, set: {optimizer.lr: 0.01}},{dir: b, set: {}}]"
    if not isinstance(variants, (list, tuple)) or not variants:
        raise ConfigError(f"variants must be a non-empty list of {{dir, set}} entries, {example}")
    out = []
    for v in variants:
        ok = isinstance(v, dict) and set(v) <= {"dir", "set"} and isinstance(v.get("dir"), str)
        if not ok or not v["dir"] or ".." in Path(v["dir"]).parts:
            raise ConfigError(f"variants: {v!r} must be {{dir: <folder>, set: {{...}}}}, {example}")
        values = v.get("set") or {}
        trainer = [k for k in values if k.startswith("trainer.") and k != "trainer.max_epochs"]
        if trainer:
            raise ConfigError(
                f"variants: {trainer[0]} is the whole job's Trainer setting; among trainer keys "
                "a variant may set trainer.max_epochs only"
            )
        out.append((v["dir"], dict(values)))
    if len({d for d, _ in out}) != len(out):
        raise ConfigError(f"variants: two variants share a dir ({[d for d, _ in out]})")
    return out


def variant_config(cfg: DictConfig, values: dict) -> DictConfig:
    """``cfg`` with a variant's values (dotted keys that the config has); ``variants`` cleared."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.variants = None
    for key, value in values.items():
        if OmegaConf.select(out, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"variants: {key} is not a key of the config")
        OmegaConf.update(out, key, value, merge=False)
    return out


_ABSENT = object()


class Member:
    """One seed: its config, data, Classifier, optimizer, random state and selection."""

    def __init__(self, cfg: DictConfig | dict, seed: int, where: str | None = None):
        self.seed, self.cfg = seed, member_config(cfg, seed)
        self.where = where or f"seed_{seed}"  # its folder in the job's
        self.max_epochs = self.cfg["trainer"].get("max_epochs")
        pl.seed_everything(seed, workers=True, verbose=False)
        self.dm, self.module = build(self.cfg)
        self.rng = torch.get_rng_state()
        self.cuda_rng: torch.Tensor | None = None
        techniques = list(self.module.techniques.values())
        self.best = Best.of(techniques)
        self.stopper = next((t for t in techniques if isinstance(t, EarlyStopping)), None)
        self.clip = next((t for t in techniques if isinstance(t, GradientClipping)), None)
        self.ema_technique = next((t for t in techniques if isinstance(t, EMA)), None)
        self.ema: AveragedModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.params: list[nn.Parameter] = []  # the optimizer's
        self.schedulers: list[dict] = []
        self.steps = 0
        self.epochs_trained = 0
        self.stopped = False  # early stopping ended it, or it failed
        self.error: str | None = None

    # ------------------------------------------------------------------ random state

    def enter(self) -> None:
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.module.device)

    def leave(self) -> None:
        self.rng = torch.get_rng_state()
        if self.module.device.type == "cuda":
            self.cuda_rng = torch.cuda.get_rng_state(self.module.device)

    # ------------------------------------------------------------------ training

    def configure(self) -> None:
        if self.ema_technique is not None:  # as EMAWeightAveraging's setup: the whole module
            self.ema = AveragedModel(
                self.module, use_buffers=True, avg_fn=warmup_ema_avg_fn(self.ema_technique.decay)
            )
        out = self.module.configure_optimizers()
        if isinstance(out, dict):
            self.optimizer = out["optimizer"]
            self.schedulers = [out["lr_scheduler"]] if out.get("lr_scheduler") else []
        else:
            self.optimizer = out
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

    def step(self, x: torch.Tensor, y: torch.Tensor, batch_idx: int) -> None:
        """One optimizer step, in the order Lightning's automatic optimization takes it."""
        self.drop_gradients()
        loss = self.module.step_loss(x, y)
        loss.backward()
        self.update(loss, batch_idx)

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first half of ``step`` for a batched forward: the batch hooks, under the
        member's random state (untouched where no hook runs)."""
        self.drop_gradients()
        if not self.module.batch_steps(train=True):
            return self.module.transform(x, y, train=True)
        self.enter()
        x, y = self.module.transform(x, y, train=True)
        self.leave()
        return x, y

    def update(self, loss: torch.Tensor, batch_idx: int) -> None:
        """After the backward: clipping, the optimizer's step, then ``stepped``."""
        self.clip_gradients()
        self.step_optimizer()
        self.stepped(loss, batch_idx)

    def drop_gradients(self) -> None:
        """``optimizer.zero_grad()`` (to None), without its profiler scope: ~0.1 ms a call."""
        for p in self.params:
            p.grad = None

    def clip_gradients(self) -> None:
        if self.clip is not None:
            if self.clip.algorithm == "norm":
                nn.utils.clip_grad_norm_(self.params, self.clip.value)
            else:
                nn.utils.clip_grad_value_(self.params, self.clip.value)

    def step_optimizer(self) -> None:
        """The member's optimizer step; ``Stack`` may replace it with one step of all members'
        optimizers at once (``merge_optimizers``)."""
        self.optimizer.step()

    def stepped(self, loss: torch.Tensor, batch_idx: int) -> None:
        """After the optimizer's step: schedulers, the divergence check, the techniques'
        after-step hooks and the EMA update. The gradients are dropped: a merged step must
        only move the members that computed one since."""
        self.drop_gradients()
        self.steps += 1
        self._step_schedulers("step", batch_idx + 1)
        value = loss.item()
        if not math.isfinite(value):
            self.fail(
                f"loss became {value} at step {self.steps} (epoch {self.module.current_epoch}): "
                "lower optimizer.lr or the penalty strength"
            )
            return
        self.module.after_step()
        if self.ema is not None:  # EMAWeightAveraging.on_train_batch_end, after the module's
            self.ema.update_parameters(self.module)

    def _average_and_current(self):
        """Pairs (the EMA average's tensor, the module's tensor): parameters, then buffers."""
        average = itertools.chain(self.ema.module.parameters(), self.ema.module.buffers())
        current = itertools.chain(self.module.parameters(), self.module.buffers())
        return zip(average, current, strict=True)

    def swap_average(self) -> None:
        """EMAWeightAveraging._swap_models: validation scores the average."""
        if self.ema is None:
            return
        for a, c in self._average_and_current():
            tmp = a.data.clone()
            a.data.copy_(c.data)
            c.data.copy_(tmp)

    def end_training(self) -> None:
        """EMAWeightAveraging.on_train_end: the average becomes the weights tested."""
        if self.ema is None:
            return
        for a, c in self._average_and_current():
            c.data.copy_(a.data)

    def _step_schedulers(self, interval: str, count: int) -> None:
        for s in self.schedulers:
            if s.get("interval", "epoch") == interval and count % s.get("frequency", 1) == 0:
                s["scheduler"].step()

    def end_epoch(self, epoch: int) -> dict:
        row = self.module.train_epoch_row()
        self.epochs_trained = epoch + 1
        self._step_schedulers("epoch", epoch + 1)
        return row

    def validated(self, row: dict, epoch: int) -> None:
        """After the epoch's validation: selection, and early stopping's verdict."""
        self.best.update(float(row[self.best.monitor]), epoch, self.module.model)
        value = float(row[self.best.monitor])
        if self.stopper is not None and (
            self.best.wait >= self.stopper.patience or not math.isfinite(value)
        ):
            self.stopped = True

    def fail(self, error: str) -> None:
        self.error, self.stopped = error, True

    @property
    def live(self) -> bool:
        return not self.stopped


# Optimizers whose update is elementwise, parameter by parameter: one optimizer over every
# member's parameter groups updates each member exactly as its own would.
MERGEABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def merge_optimizers(members: list[Member]) -> torch.optim.Optimizer | None:
    """One optimizer over all members' parameters, so one fused kernel call steps them all:
    groups with the same settings (learning rate, betas, weight decay...) become one group, as
    the optimizer steps group by group. None where the members' optimizers are not all of one
    class in ``MERGEABLE`` or a scheduler holds one of them. A member without a gradient (early
    stopping froze it) is not moved: these optimizers skip parameters whose ``grad`` is None."""
    optimizers = [m.optimizer for m in members]
    kind = type(optimizers[0])
    if kind not in MERGEABLE or any(
        type(o) is not kind or m.schedulers for o, m in zip(optimizers, members, strict=True)
    ):
        return None
    groups: dict[str, dict] = {}
    for g in (g for o in optimizers for g in o.param_groups):
        settings = {k: v for k, v in g.items() if k != "params"}
        merged_group = groups.setdefault(repr(sorted(settings.items())), {**settings, "params": []})
        merged_group["params"] += g["params"]
    # The base constructor: the groups are set up already, and the class's own arguments
    # (e.g. AdamW's) need not round-trip through its defaults.
    merged = kind.__new__(kind)
    torch.optim.Optimizer.__init__(merged, list(groups.values()), dict(optimizers[0].defaults))
    return merged


def _penalized(m: Member) -> bool:
    return any(overrides(t, "penalty") for t in m.module.techniques.values())


class GroupSums:
    """The training or validation sums (``metrics.Sums``, the Classifier's ``kind``) of an
    epoch's members as slices of two tensors: a group that shared a batched forward adds its
    members' losses and correct predictions in a few operations, instead of five per member.
    Each member's ``loss`` and ``correct`` are views into them, so a member scored alone adds to
    the same numbers, batch by batch, in the same order and with the same operations as its
    single run."""

    def __init__(self, members: list[Member], device: torch.device, kind: str = "sums"):
        self.kind = kind  # the Classifier's training "sums", or its "val_sums"
        self.loss = torch.zeros(len(members), device=device)
        self.correct = torch.zeros(len(members), device=device)
        self.index = {id(m): i for i, m in enumerate(members)}
        for i, m in enumerate(members):
            sums = getattr(m.module, kind)
            sums.reset(device)
            sums.loss, sums.correct = self.loss[i], self.correct[i]

    @torch.no_grad()
    def add(self, members: list[Member], losses: list, logits: torch.Tensor, ys) -> None:
        """``Sums.add`` of each member: ``logits`` stacked [member, batch, class], ``ys`` the
        members' hard or soft targets."""
        rows = torch.tensor([self.index[id(m)] for m in members], device=logits.device)
        # Soft targets (mixup, cutmix) count as the class they mostly are; members of one group
        # may have either (a comparison's arms share a stack).
        hard = torch.stack([y if y.ndim == 1 else y.argmax(1) for y in ys])
        n = hard.shape[1]
        self.loss.index_add_(0, rows, torch.stack(losses) * n)
        correct = (logits.argmax(2) == hard).sum(1)
        self.correct.index_add_(0, rows, correct.to(self.correct.dtype))
        for m in members:
            getattr(m.module, self.kind).seen += n


class StackBatches:
    """Batch ``i`` of every member at once (None for a member that is frozen or done)."""

    batch_sampler = None

    def __init__(self, members: list[Member], loaders: list):
        self.members, self.loaders = members, loaders

    @property
    def sampler(self) -> StackBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __len__(self) -> int:
        return max(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[list]:
        iters = [iter(loader) for loader in self.loaders]
        for _ in range(len(self)):
            yield [
                next(it, None) if m.live else None
                for m, it in zip(self.members, iters, strict=True)
            ]


class Stack(FastSetattr, pl.LightningModule):
    """The members' Classifiers as one LightningModule, stepped by hand."""

    automatic_optimization = False

    def __init__(self, members: list[Member]):
        super().__init__()
        self.members = members
        self.member_modules = nn.ModuleList([m.module for m in members])
        self._training: list[Member] = []  # the members that train in the running epoch
        self._validated: list[Member] = []
        # Members that may share a batched forward have equal signatures (None: never).
        self._signatures = [
            None if m.module.channels_last else signature(m.module.model) for m in members
        ]
        self._shared: dict[int, Shared] = {}  # id(member) -> its group's shared weights
        self._sums: GroupSums | None = None  # the running epoch's training sums
        self._val_sums: GroupSums | None = None  # and validation's

    def train_dataloader(self):
        return StackBatches(self.members, [m.dm.train_dataloader() for m in self.members])

    def val_dataloader(self):
        return StackBatches(self.members, [m.dm.val_dataloader() for m in self.members])

    def setup(self, stage: str) -> None:
        for m in self.members:  # Lightning hands its Trainer to direct children only
            m.module.trainer = self.trainer

    # Lightning's defaults for these walk every module of every member (~1 ms per 30 modules
    # on the CPU, at every batch or validation): here only what they need to touch.

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return [None if b is None else [t.to(device) for t in b] for b in batch]

    def on_validation_model_zero_grad(self) -> None:
        """Nothing: every member drops its gradients after each step (``Member.stepped``)."""

    def on_validation_model_eval(self) -> None:
        for m in self.members:  # the networks: dropout, batch norm and noise layers
            m.module.model.eval()

    def on_validation_model_train(self) -> None:
        for m in self.members:
            m.module.model.train()

    def configure_optimizers(self):
        for m in self.members:
            m.configure()
        # Per group of members that share a batched forward: one optimizer over their groups
        # (a merged step walks every group it holds, so members stepped alone keep their own).
        by_signature: dict[tuple, list[Member]] = {}
        for m, key in zip(self.members, self._signatures, strict=True):
            if key is not None:
                by_signature.setdefault(key, []).append(m)
        for group in by_signature.values():
            # The members are on their device by now. A penalty adds its own gradient to the
            # weights', in an order autograd chooses: those members keep stacked copies.
            if len(group) > 1 and not any(_penalized(m) for m in group):
                shared = Shared([m.module.model for m in group])
                self._shared.update({id(m): shared for m in group})
            merged = merge_optimizers(group) if len(group) > 1 else None
            for m in group if merged is not None else []:
                m.step_optimizer = merged.step
        return None

    def on_fit_start(self) -> None:
        for m in self.members:  # as Classifier.on_fit_start, with the member's data
            m.enter()
            m.module.fit_statistics(m.dm.train.images)
            m.leave()

    def training_step(self, batch, batch_idx):
        alone = []
        for group in self._batches(batch):
            if len(group) == 1:
                alone.append(group[0])
                continue
            xs, ys = zip(*(m.inputs(*b) for m, b in group), strict=True)
            shared = self._shared.get(id(group[0][0]))
            logits = batched_forward([m.module.model for m, _ in group], xs, shared)
            members = [m for m, _ in group]
            losses = [m.module.data_loss(z, y) for m, z, y in zip(members, logits, ys, strict=True)]
            self._sums.add(members, losses, torch.stack(logits), ys)
            totals = [m.module.penalized(loss) for m, loss in zip(members, losses, strict=True)]
            torch.stack(totals).sum().backward()  # each member's own gradient, as alone
            if shared is not None:
                shared.hand_out_gradients()
            for m, _ in group:
                m.clip_gradients()
            # Members of a group share one merged optimizer (or each has its own): one call
            # per distinct step function moves every member that has a gradient.
            for step in dict.fromkeys(m.step_optimizer for m, _ in group):
                step()
            for (m, _), total in zip(group, totals, strict=True):
                m.stepped(total, batch_idx)
        for m, b in alone:
            m.enter()
            m.step(*b, batch_idx)
            m.leave()
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready(), progress.increment_completed()  # global_step, max_steps

    def on_train_epoch_start(self) -> None:
        self._training = [m for m in self.members if m.live]
        self._sums = GroupSums(self._training, self.device)

    def on_train_epoch_end(self) -> None:
        # Members early stopping froze in this epoch's validation end it, as a single run does.
        trained = [m for m in self._training if m.error is None]
        rows = [m.end_epoch(self.current_epoch) for m in trained]
        for m in trained:  # a variant with fewer epochs than the job's longest ends here
            if m.max_epochs not in (None, -1) and m.epochs_trained >= m.max_epochs:
                m.stopped = True
        if rows:
            self.log_dict(
                {k: sum(float(r[k]) for r in rows) / len(rows) for k in ("train/loss", "train/acc")}
            )
        if not any(m.live for m in self.members):
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        self._validated = [m for m in self.members if m.live]
        self._val_sums = GroupSums(self._validated, self.device, "val_sums")
        for m in self._validated:
            m.swap_average()

    def validation_step(self, batch, batch_idx):
        validated = [
            b if id(m) in self._val_sums.index else None
            for m, b in zip(self.members, batch, strict=True)
        ]
        for group in self._batches(validated, tta=False):
            if len(group) == 1:
                m, b = group[0]
                m.module.validation_step(b, batch_idx)
                continue
            xs = [m.module.prepare(b[0], train=False) for m, b in group]
            shared = self._shared.get(id(group[0][0]))
            logits = batched_forward([m.module.model for m, _ in group], xs, shared)
            ys = [b[1] for _, b in group]
            losses = [
                m.module.eval_loss(z, y) for (m, _), z, y in zip(group, logits, ys, strict=True)
            ]
            self._val_sums.add([m for m, _ in group], losses, torch.stack(logits), ys)

    # ------------------------------------------------------------------ batched forward

    def _batches(self, batch: list, tta: bool | None = None) -> list[list[tuple]]:
        """The live members with a batch, as (member, batch) pairs grouped by what can share
        one batched forward (``reglab.training.vectorize``); a group of one steps alone."""
        out: dict[tuple, list[tuple]] = {}
        for i, (m, b, key) in enumerate(zip(self.members, batch, self._signatures, strict=True)):
            if b is None:
                continue
            if key is None or not m.live or (tta is False and m.module.tta):
                key = ("alone", i)
            out.setdefault((key, tuple(b[0].shape), tuple(b[1].shape)), []).append((m, b))
        return list(out.values())

    def on_validation_epoch_end(self) -> None:
        rows = []
        for m in self._validated:
            m.swap_average()
            row = m.module.val_epoch_row(self.trainer.sanity_checking)
            if row:
                m.validated(row, self.current_epoch)
                rows.append(row)
        if rows:  # the mean over the members validated: one number for pruning callbacks
            self.log_dict(
                {k: sum(float(r[k]) for r in rows) / len(rows) for k in MEAN_KEYS}, prog_bar=True
            )


def build_stack_trainer(cfg: DictConfig, stack: Stack) -> pl.Trainer:
    """The Trainer of a stacked job: the config's callbacks less checkpoints, its loggers."""
    quiet_lightning()
    # The members' optimizers are their own (Member.configure), stepped by hand.
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` returned `None`.*")
    named = [
        (k, cb)
        for k, cb in config_callbacks(cfg)
        if not isinstance(cb, pl.callbacks.ModelCheckpoint)  # no checkpoint files: see module doc
    ]
    kwargs = dict(to_plain(cfg.trainer))
    kwargs.pop("_target_", None)
    epochs = [m.max_epochs for m in stack.members]
    if None not in epochs and -1 not in epochs:
        kwargs["max_epochs"] = max(epochs)  # variants may differ; each member stops at its own
    for t in stack.members[0].module.techniques.values():
        kwargs = t.trainer_kwargs(kwargs)  # the techniques' own checks and warnings
    for key in ("gradient_clip_val", "gradient_clip_algorithm"):  # per member (Member.step)
        kwargs.pop(key, None)
    loggers = make_loggers(cfg)
    kwargs.update(enable_checkpointing=False, num_sanity_val_steps=0, enable_model_summary=False)
    try:
        return pl.Trainer(
            **kwargs,
            callbacks=[cb for _, cb in named] + tracking_callbacks(loggers) + [PlainCudaCheck()],
            logger=loggers or False,
            use_distributed_sampler=False,
        )
    except (MisconfigurationException, TypeError, ValueError) as e:
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]}") from e


def as_logged(value) -> float:
    """A value as a single run's metrics.json holds it: Lightning logs scalars as float32."""
    return float(torch.tensor(float(value), dtype=torch.float32))


def summarize(m: Member, wall_time_s: float) -> dict:
    """Member ``m``'s metrics.json entries: the keys a single run writes (less ``describe``)."""
    module = m.module
    if m.error is not None:
        return {
            "status": "failed",
            "error": m.error,
            "global_step": m.steps,
            "history": module.history,
        }
    final = any(t.final_weights for t in module.techniques.values())
    m.end_training()
    fit_metrics = {
        k: v for k, v in (module.history[-1] if module.history else {}).items() if k != "epoch"
    }
    if not final and m.best.weights is not None:
        module.model.load_state_dict(m.best.weights)
        best_epoch = m.best.epoch
        val_loss_best = next(r[VAL_LOSS] for r in module.history if r["epoch"] == best_epoch)
    else:
        best_epoch = m.epochs_trained - 1
        val_loss_best = evaluate(module, m.dm.val_dataloader())[VAL_LOSS]
    # A tuning trial (trainer.limit_test_batches=0) is scored on validation and never tested.
    tests = m.cfg["trainer"].get("limit_test_batches") != 0
    metrics = {
        k: as_logged(v) for k, v in {**fit_metrics, **(test(module, m.dm) if tests else {})}.items()
    }
    metrics[VAL_LOSS_BEST] = float(val_loss_best)
    return {
        "status": "ok",
        **dict(sorted(metrics.items())),
        BEST_EPOCH: best_epoch,
        "epochs_trained": m.epochs_trained,
        "global_step": m.steps,
        "best_checkpoint": None,
        "tested": ("final weights" if final else "best epoch") if tests else None,
        "history": module.history,
        "wall_time_s": wall_time_s,
    }


def fit_stack(
    cfg: DictConfig, seeds: list[int], variants: list[tuple[str, DictConfig]] | None = None
) -> list[tuple[Member, dict]]:
    """Build every member (each seed of each variant: (dir, its config)), train them in one
    Trainer, and summarize each."""
    start = time.time()
    members = []
    for folder, variant in variants or [("", cfg)]:
        base = resolved(variant)
        members += [Member(base, s, f"{folder}/seed_{s}" if folder else None) for s in seeds]
    for m in members[1:]:
        if not isinstance(m.module, Classifier) or type(m.module) is not type(members[0].module):
            raise ConfigError("seeds=[...]: members must be plain Classifiers")
    stack = Stack(members)
    trainer = build_stack_trainer(cfg, stack)
    trainer.fit(stack)
    # Each member's share of the job: one process, one loop, so the time is not divisible
    # more finely; stack_wall_time_s keeps the whole.
    share = (time.time() - start) / len(members)
    out = []
    for m in members:
        m.module.use_scores_of(members[0].module)  # one set of test metrics, reset after each
        summary = summarize(m, share)
        summary.update(stack_size=len(members), stack_wall_time_s=share * len(members))
        out.append((m, summary))
    finish_wandb(trainer.loggers, job_summary([s for _, s in out]))  # the job's one W&B run
    return out


def job_summary(summaries: list[dict]) -> dict:
    """A stacked job's W&B summary: each metric's mean over the members that finished."""
    ok = [s for s in summaries if s["status"] == "ok"]
    keys = {k for s in ok for k, v in s.items() if isinstance(v, float) and k.startswith(PREFIXES)}
    out = {k: sum(s[k] for s in ok) / len(ok) for k in sorted(keys) if all(k in s for s in ok)}
    failed = len(summaries) - len(ok)
    return {
        "status": "failed" if failed else "ok",
        "stack_size": len(summaries),
        "failed": failed,
        **out,
    }


PREFIXES = ("train/", "val/", "test/", "train_eval/", "gap/", "weights/")
