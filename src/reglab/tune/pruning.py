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

What is reported after each epoch is the BEST value of ``monitor`` so far (the running minimum
of val/loss), for the trial and in the reference curves alike. Optuna's percentile pruners
compare a trial's best intermediate value with the other trials' values at the same step; with
the raw val/loss of a run that overfits (it falls, then rises), the others' values at step 8
were already past their minimum while the trial's best was its minimum, so the median pruner
pruned none of 200 trials in a full comparison. The running best is also what the objective
(``val/loss_best``) scores.
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
    """The content of a reference file: ``curves`` is ``(state, value, {epoch: value})``, each
    curve turned into its running best."""
    return {
        "pruner": pruner,
        "direction": direction,
        "trials": [
            {"state": s, "value": v, "curve": running_best(c, direction)} for s, v, c in curves
        ],
    }


def running_best(curve: dict, direction: str) -> dict:
    """``{epoch: the best value up to that epoch}``."""
    better = min if direction == "minimize" else max
    out, best = {}, None
    for epoch in sorted(curve, key=int):
        value = float(curve[epoch])
        best = value if best is None else better(best, value)
        out[int(epoch)] = best
    return out


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
        self.better, self.best = min, None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ref = json.loads(self.path.read_text())
        self.better = min if ref["direction"] == "minimize" else max
        self.trial = study_of(ref).ask()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.trial is None or self.pruned_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return  # the divergence check fails the run; a NaN would poison the median
        epoch = trainer.current_epoch
        self.best = float(value) if self.best is None else self.better(self.best, float(value))
        self.trial.report(self.best, epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True
            self.flag.parent.mkdir(parents=True, exist_ok=True)
            self.flag.write_text(json.dumps({"epoch": epoch}))
