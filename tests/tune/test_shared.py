"""A study survives its process and is shared by several: a search killed mid-way continues
when the same command runs again, and two workers fill one budget, no trial lost or run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from reglab.core.paths import ROOT_DIR
from reglab.tune.studies import INTERRUPTED, counted

STUDY = "digits_mlp_regularizer.l2.strength"
# Trials of a second or two each; beats every 0.5 s, so a dead process is noticed after 2 s.
SEARCH = [
    "-m", "hparams_search=optuna", "logger=csv", "callbacks=none", "trainer.accelerator=cpu",
    "trainer.max_epochs=15", "num_threads=1", "hydra/sweeper/pruner=none",
    "hydra.sweeper.heartbeat_interval=0.5", "hydra.sweeper.grace_period=2",
]  # fmt: skip


def start(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "reglab-train"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(exe), *args], cwd=ROOT_DIR, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def trial_runs(log_dir: Path) -> list[dict]:
    """Every finished run of the study, in any sweep folder."""
    out = []
    for path in log_dir.glob("**/metrics.json"):
        m = json.loads(path.read_text())
        m["folder"] = path.parent.parent
        out.append(m)
    return out


def load(log_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{log_dir}/optuna/optuna.db"
    ).trials


@pytest.mark.slow
def test_a_killed_search_continues_and_runs_no_trial_twice(tmp_path):
    command = [*SEARCH, "hydra.sweeper.n_trials=6", f"paths.log_dir={tmp_path}"]
    first = start(*command)
    deadline = time.time() + 600
    while len(trial_runs(tmp_path)) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, (
        f"finished before it could be killed: {first.stderr.read()[-2000:]}"
    )
    os.killpg(first.pid, signal.SIGKILL)  # the sweeper and its job, mid-study
    first.wait()
    before = {m["protocol"]["trial"] for m in trial_runs(tmp_path)}
    assert 2 <= len(before) < 6

    time.sleep(2.5)  # the killed process's heartbeat is now older than the grace period
    second = start(*command)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]

    trials = load(tmp_path)
    runs = trial_runs(tmp_path)
    in_budget = [t for t in trials if counted(t)]
    assert len(in_budget) == 6 and all(t.state == TrialState.COMPLETE for t in in_budget)
    # One finished run per trial, none twice; what the first run finished, the second left alone.
    per_trial = Counter(m["protocol"]["trial"] for m in runs)
    assert sorted(per_trial) == sorted(t.number for t in in_budget) and set(per_trial.values()) == {
        1
    }
    folders = {m["folder"] for m in runs}
    assert len(folders) == 2
    later = {m["protocol"]["trial"] for m in runs if m["folder"] != min(folders)}
    assert later and not (later & before)
    # A trial the kill interrupted is run again, with the same values, under a new number.
    for lost in (t for t in trials if t.state == TrialState.FAIL):
        assert lost.system_attrs[INTERRUPTED]
        (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
        assert retry.params == lost.params and retry.state == TrialState.COMPLETE


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    workers = [start(*SEARCH, "hydra.sweeper.n_trials=8", f"paths.log_dir={tmp_path}",
                     f"hydra.sweep.dir={tmp_path}/worker{i}") for i in (1, 2)]  # fmt: skip
    for w in workers:
        _, err = w.communicate(timeout=900)
        assert w.returncode == 0, err[-3000:]
    trials = load(tmp_path)
    in_budget = [t for t in trials if counted(t)]
    assert len(in_budget) == 8 and all(t.state == TrialState.COMPLETE for t in in_budget)
    runs = trial_runs(tmp_path)
    per_trial = Counter(m["protocol"]["trial"] for m in runs)
    assert sorted(per_trial) == sorted(t.number for t in in_budget) and set(per_trial.values()) == {
        1
    }
    by_worker = Counter(m["folder"].name for m in runs)
    assert set(by_worker) == {"worker1", "worker2"}, by_worker  # both took trials
    # Each told value is the run's own validation accuracy.
    values = {m["protocol"]["trial"]: m["val/acc"] for m in runs}
    assert all(t.value == pytest.approx(values[t.number]) for t in in_budget)


@pytest.mark.slow
def test_a_killed_comparison_continues_in_its_folder(tmp_path):
    command = [
        "-m", "experiment=compare", "hydra/launcher=basic", "+technique=l2,dropout", "seed=1,2",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.protocol.cocktail.trials=0",
        "trainer.max_epochs=5", "hydra.sweeper.heartbeat_interval=0.5",
        "hydra.sweeper.grace_period=2", f"paths.log_dir={tmp_path}",
    ]  # fmt: skip
    first = start(*command)
    deadline = time.time() + 600
    while len(trial_runs(tmp_path)) < 4 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, (
        f"finished before it could be killed: {first.stderr.read()[-2000:]}"
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = len(trial_runs(tmp_path))
    time.sleep(2.5)
    second = start(*command)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert "continuing the comparison" in err

    (sweep,) = {m["folder"] for m in trial_runs(tmp_path)}  # one folder: the first run's
    record = json.loads((sweep / "protocol.json").read_text())
    assert record["complete"] and record["settings"][0]["stages"] == ["tune", "test"]
    runs = trial_runs(tmp_path)
    assert len(runs) > before
    tune = Counter(
        (m["protocol"]["study"], m["protocol"]["trial"])
        for m in runs
        if m["protocol"]["stage"] == "tune"
    )
    assert set(tune.values()) == {1} and len(tune) == 1 + 3 + 3  # baseline: one trial
    test = Counter(
        (m["protocol"]["technique"], m["seed"]) for m in runs if m["protocol"]["stage"] == "test"
    )
    assert test == {(t, s): 1 for t in ("baseline", "l2", "dropout") for s in (1, 2)}
