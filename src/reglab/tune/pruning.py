"""The Lightning callback that lets an Optuna pruner stop a losing trial after any epoch.

A job never opens the sweep's storage. The driver writes, before each round, a small JSON
file per study: the pruner's config, the direction, and the per-epoch curves of the trials that
finished in EARLIER rounds. The callback rebuilds that study in memory (Optuna's public
``create_trial`` / ``add_trials``), asks one trial, reports ``monitor`` after every validation
and stops training when the configured pruner says so. Two consequences:

- the decision depends only on earlier rounds, so a comparison killed and started again prunes
  exactly as one that never stopped;
- the job reports into no database: no lock contention, and jobs on SLURM nodes need no access
  to the driver's storage.

A pruned job writes ``flag`` (``pruned.json`` in its folder: the epoch); the driver tells the
trial PRUNED.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import optuna
import pytorch_lightning as pl
from hydra.utils import instantiate
from optuna.trial import TrialState, create_trial

PRUNED_FILE = "pruned.json"


def reference(pruner: dict | None, direction: str, curves: list[tuple[str, float | None, dict]]):
    """The content of a reference file: ``curves`` is ``(state, value, {epoch: value})``."""
    return {
        "pruner": pruner,
        "direction": direction,
        "trials": [{"state": s, "value": v, "curve": c} for s, v, c in curves],
    }


def study_of(ref: dict) -> optuna.Study:
    """The in-memory study a reference file describes, with its pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pruner = instantiate(ref["pruner"]) if ref.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.create_study(direction=ref["direction"], pruner=pruner)
    study.add_trials(
        create_trial(
            state=TrialState[t["state"]],
            value=t["value"] if t["state"] == "COMPLETE" else None,
            intermediate_values={int(k): float(v) for k, v in t["curve"].items()},
        )
        for t in ref["trials"]
    )
    return study


class PruningCallback(pl.Callback):
    def __init__(self, reference: str, flag: str, monitor: str = "val/loss"):
        self.path, self.flag, self.monitor = Path(reference), Path(flag), monitor
        self.trial: optuna.Trial | None = None
        self.pruned_epoch: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trial = study_of(json.loads(self.path.read_text())).ask()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.trial is None or self.pruned_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return  # the divergence check fails the run; a NaN would poison the median
        epoch = trainer.current_epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True
            self.flag.parent.mkdir(parents=True, exist_ok=True)
            self.flag.write_text(json.dumps({"epoch": epoch}))
