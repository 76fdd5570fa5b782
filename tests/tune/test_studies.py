"""Budgets, heartbeats and recovery of a study shared by several workers (no training here:
two ``BudgetStudy`` objects with their own storage connection play two processes)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from reglab.tune.studies import (
    INTERRUPTED,
    PRUNED_EPOCH,
    SURPLUS,
    BudgetStudy,
    Heartbeat,
    counted,
    create,
    objective_of,
    open_storage,
    storage_url,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(trial):
    return {"x": trial.suggest_float("x", 0.0, 1.0)}


@pytest.fixture(params=["sqlite", "journal"])
def url(request, tmp_path):
    kind = "sqlite:///" if request.param == "sqlite" else "journal:"
    return storage_url(f"{kind}{tmp_path / 'db' / 'study.x'}", tmp_path)


def worker(url, n_trials=3, grace=60.0, finished_run=lambda study, number: None) -> BudgetStudy:
    """A new process's view of the study: its own connection, heartbeat and sampler."""
    storage = open_storage(url)
    study = create(storage, "s", "maximize", optuna.samplers.RandomSampler(seed=0), None)
    return BudgetStudy(
        study, n_trials, sample, Heartbeat(storage, 3600), grace, "val/acc", finished_run
    )


def ok(value):
    return {"status": "ok", "val/acc": value}


def test_storage_url_default_and_folders(tmp_path):
    assert storage_url(None, tmp_path / "logs") == f"sqlite:///{tmp_path}/logs/optuna/optuna.db"
    assert (tmp_path / "logs" / "optuna").is_dir()
    assert storage_url("journal:rel/j.log", tmp_path).startswith("journal:/")
    assert storage_url("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"


def test_objective_is_the_validation_score_of_the_tested_weights():
    m = {"status": "ok", "val/acc": 0.8, "val/acc_best": 0.9, "test/acc": 0.99}
    assert objective_of({**m, "tested": "final weights"}, "tested") == 0.8
    assert objective_of({**m, "tested": "best checkpoint"}, "tested") == 0.9
    assert objective_of({**m, "status": "failed"}, "tested") is None
    assert objective_of({"status": "ok", "val/acc": float("nan")}, "val/acc") is None


def test_two_workers_fill_the_budget_exactly(url):
    a, b = worker(url), worker(url)
    asked = [a.ask(), b.ask(), a.ask(), b.ask(), a.ask()]
    assert [x[0] for x in asked if x] == [0, 1, 2] and asked[3:] == [None, None]
    for w, (number, params) in zip([a, b, a], asked[:3], strict=True):
        w.tell(number, ok(params["x"]))
    assert [t.state for t in a.trials()] == [TrialState.COMPLETE] * 3


def test_a_racing_ask_beyond_the_budget_is_surplus(url, monkeypatch):
    """Both workers saw a free slot; the one whose trial got the higher number stands down."""
    a, b = worker(url, n_trials=1), worker(url, n_trials=1)
    snapshot = a.trials()  # a's view before b asks
    assert b.ask()[0] == 0
    real, stale = a.trials, [snapshot]
    monkeypatch.setattr(a, "trials", lambda: stale.pop() if stale else real())
    assert a.ask() is None
    (first, second) = real()
    assert first.state == TrialState.RUNNING and second.state == TrialState.FAIL
    assert second.system_attrs[SURPLUS] and not counted(second)


def test_a_dead_workers_trials_run_again_with_the_same_values(url):
    dead = worker(url, n_trials=2)
    lost = [dead.ask(), dead.ask()]
    dead.heartbeat.close()  # the process is killed: no more beats, nothing told
    live = worker(url, n_trials=2, grace=0.0)
    assert live.recover() == 2
    retried = [live.ask(), live.ask()]
    assert live.ask() is None
    assert [p for _, p in retried] == [p for _, p in lost]
    assert [n for n, _ in retried] == [2, 3]
    for number, params in retried:
        live.tell(number, ok(params["x"]))
    trials = live.trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert all(t.system_attrs[INTERRUPTED] for t in trials[:2])
    assert [t.user_attrs.get("retry_of") for t in trials[2:]] == [0, 1]
    assert sum(counted(t) for t in trials) == 2


def test_a_finished_job_of_a_dead_worker_is_told_not_rerun(url):
    dead = worker(url, n_trials=2)
    number, _ = dead.ask()
    dead.heartbeat.close()
    live = worker(
        url, n_trials=2, grace=0.0, finished_run=lambda s, n: ok(0.75) if n == number else None
    )
    assert live.recover() == 0
    assert live.trials()[0].state == TrialState.COMPLETE and live.trials()[0].value == 0.75
    assert live.ask()[0] == 1 and live.ask() is None


def test_a_live_workers_trials_are_left_alone(url):
    busy = worker(url, n_trials=2)
    busy.ask()
    other = worker(url, n_trials=2)  # default grace: 60 s
    assert other.recover() == 0 and other.running_elsewhere() == 1
    assert busy.running_elsewhere() == 0


def test_tell_reads_pruning_and_failure(url):
    w = worker(url, n_trials=3)
    (a, _), (b, _), (c, _) = w.ask(), w.ask(), w.ask()
    w.storage.set_trial_system_attr(
        w.storage.get_trial_id_from_study_id_trial_number(w.study_id, a), PRUNED_EPOCH, 2
    )
    assert w.tell(a, ok(0.5)) == TrialState.PRUNED
    assert (
        w.tell(b, {"status": "failed", "error": "regularizer.l2.strength=-1 must be >= 0"})
        == TrialState.FAIL
    )
    assert w.tell(c, None) == TrialState.FAIL
    trials = w.trials()
    assert trials[1].user_attrs["error"].startswith("regularizer.l2.strength=-1")
    assert trials[2].user_attrs["error"] == "the job wrote no metrics.json"
    assert w.best() is None and w.summary()["trials"] == {"complete": 0, "pruned": 1, "fail": 2}
