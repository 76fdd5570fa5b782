"""The pruning callback stops a losing trial inside a real training run."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from reglab.tune.space import override_value
from reglab.tune.studies import (
    PRUNED_EPOCH,
    BudgetStudy,
    Heartbeat,
    create,
    open_storage,
    storage_url,
)

from ..conftest import train

EPOCHS = 4
RUN = ["callbacks=none", "logger=csv", "trainer.accelerator=cpu", f"trainer.max_epochs={EPOCHS}",
       "num_threads=1", "data.train_subset=100", "++trainer.enable_progress_bar=false"]  # fmt: skip


def pruning_override(url: str, number: int) -> str:
    cb = {
        "_target_": "reglab.tune.pruning.PruningCallback",
        "storage": url,
        "study": "s",
        "trial": number,
    }
    return f"++callbacks.optuna_pruning={override_value(cb)}"


def test_median_pruner_stops_a_losing_trial(tmp_path):
    """Trial 0 (a working learning rate) sets the median; trial 1 (a learning rate that barely
    moves the weights) is below it after its first epoch and stops there."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    storage = open_storage(url)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = BudgetStudy(create(storage, "s", "maximize", None, pruner), 2,
                        lambda t: {"optimizer.lr": t.suggest_float("optimizer.lr", 1e-7, 1e-2, log=True)},
                        Heartbeat(storage, 3600), 60.0)  # fmt: skip
    study.study.enqueue_trial({"optimizer.lr": 3e-3})
    study.study.enqueue_trial({"optimizer.lr": 1e-7})
    runs = []
    for i in range(2):
        number, params = study.ask()
        runs.append(train([*RUN, f"optimizer.lr={params['optimizer.lr']}", pruning_override(url, number)],
                          tmp_path / str(i)))  # fmt: skip
        study.tell(number, runs[-1])

    good, bad = study.trials()
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == list(
        range(EPOCHS)
    )
    assert runs[0]["epochs_trained"] == EPOCHS and runs[0]["tune/pruned"] == 0.0
    assert bad.state == TrialState.PRUNED and bad.system_attrs[PRUNED_EPOCH] == 0
    assert list(bad.intermediate_values) == [0]
    assert bad.intermediate_values[0] < good.intermediate_values[0]
    assert runs[1]["epochs_trained"] < EPOCHS and runs[1]["tune/pruned"] == 1.0
    assert len(runs[1]["history"]) == 1  # one epoch was trained, then it stopped
    assert (
        "test/acc" in runs[1]
    )  # the callback only stops training; this run was not told to skip the test


def test_without_a_pruner_every_epoch_is_reported(tmp_path):
    url = storage_url(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    study = create(open_storage(url), "s", "maximize", None, None)
    trial = study.ask()
    summary = train([*RUN, pruning_override(url, trial.number)], tmp_path / "run")
    assert summary["epochs_trained"] == EPOCHS and summary["tune/pruned"] == 0.0
    values = study.trials[0].intermediate_values
    assert sorted(values) == list(range(EPOCHS))
    assert values[EPOCHS - 1] == summary["val/acc"]
