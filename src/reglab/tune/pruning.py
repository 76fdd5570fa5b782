"""The Lightning callback that lets an Optuna pruner stop a losing trial after any epoch.

The sweeper runs each trial as an ordinary training job and adds this callback to it through
a config override::

    ++callbacks.optuna_pruning={_target_: reglab.tune.pruning.PruningCallback,
                                storage: URL, study: NAME, trial: N}

After every validation it reports ``monitor`` (validation only) as the trial's intermediate
value for that epoch and asks the study's pruner (stored in the study by the sweeper) whether to
go on. When told to stop, it ends training, marks the trial in the storage, and adds
``tune/pruned: 1`` to the run's metrics, so metrics.json shows it; the sweeper then tells Optuna
the trial was PRUNED.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

PRUNED_METRIC = "tune/pruned"


class PruningCallback(pl.Callback):
    def __init__(self, storage: str, study: str, trial: int, monitor: str = "val/acc"):
        self.url, self.study_name, self.number, self.monitor = storage, study, int(trial), monitor
        self.pruned_epoch: int | None = None
        self._study = None

    def _connect(self):
        """The study and the trial's id, opened once per job (not per epoch)."""
        if self._study is None:
            import optuna
            from hydra.utils import instantiate

            from reglab.tune.studies import PRUNER, open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = open_storage(self.url, in_job=True)
            study = optuna.load_study(study_name=self.study_name, storage=storage)
            cfg = storage.get_study_system_attrs(study._study_id).get(PRUNER) or {}  # noqa: SLF001
            study.pruner = instantiate(cfg) if cfg else optuna.pruners.NopPruner()
            # Before the warm-up the pruner says no anyway; asking it reads every trial.
            self._first = 0 if cfg.get("n_warmup_steps") is None else int(cfg["n_warmup_steps"])
            if not cfg or cfg.get("_target_", "").endswith("NopPruner"):
                self._first = None
            self._study = study
            self._trial_id = storage.get_trial_id_from_study_id_trial_number(
                study._study_id, self.number
            )  # noqa: SLF001
        return self._study

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        study = self._connect()
        storage, epoch = study._storage, trainer.current_epoch  # noqa: SLF001
        if not math.isfinite(value):
            return  # the divergence check fails the run; a NaN would poison the pruner's median
        storage.set_trial_intermediate_value(self._trial_id, epoch, value)
        if self._first is None or epoch < self._first:
            return
        if study.pruner.prune(study, storage.get_trial(self._trial_id)):
            from reglab.tune.studies import PRUNED_EPOCH

            storage.set_trial_system_attr(self._trial_id, PRUNED_EPOCH, epoch)
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # train.py copies the Trainer's callback metrics into metrics.json after fit.
        trainer.callback_metrics[PRUNED_METRIC] = torch.tensor(float(self.pruned_epoch is not None))
