"""Optuna studies under a fixed budget of trials, shared by any number of worker processes.

A study lives in an Optuna storage (SQLite by default, any RDB URL, or a journal file for
workers on a shared filesystem), so the same command run again, or on a second machine,
continues it. Three rules keep the budget exact without a lock:

- **budget by rank**: a trial counts if fewer than ``n_trials`` counted trials have a smaller
  number; a worker whose new trial ranks beyond the budget marks it ``surplus`` (FAIL, never
  run) and stops. Two workers racing for the last slot therefore never both run it.
- **heartbeats**: the process that asked a trial (its owner) writes the time into the study
  every ``heartbeat_interval`` seconds until it has told all its trials (Optuna's own heartbeat
  exists for RDB storages only, and beats from the process that trains: here another one).
- **recovery**: a RUNNING trial whose owner has not beaten for ``grace_period`` seconds belonged
  to a process that died; it is marked FAIL + ``interrupted`` (not counted) and its parameters are enqueued
  again, so the next ask of any worker runs them. Nothing finished is ever run again.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from reglab.core.errors import ConfigError

HEARTBEAT = "reglab:heartbeat"  # + ":<owner>", a study attribute: the owner's last beat
OWNER = "reglab:owner"  # the process that asked a trial
INTERRUPTED = "reglab:interrupted"
SURPLUS = "reglab:surplus"
PRUNED_EPOCH = "reglab:pruned_epoch"  # written by the pruning callback inside the job
PRUNER = "reglab:pruner"  # the study's pruner config, read back by the pruning callback
RETRY_OF = "retry_of"
JOURNAL = "journal:"


def storage_url(spec: str | None, log_dir: str | Path) -> str:
    """The storage a study lives in: ``spec`` as given, ``None`` for SQLite under
    ``log_dir/optuna/optuna.db``. Local files become absolute (jobs may run elsewhere) and their
    folder is created: SQLite cannot create a missing directory."""
    spec = str(spec) if spec else f"sqlite:///{Path(log_dir) / 'optuna' / 'optuna.db'}"
    for prefix in ("sqlite:///", JOURNAL):
        if spec.startswith(prefix):
            path = Path(spec[len(prefix):]).expanduser().resolve()  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            return f"{prefix}{path}"
    if "://" not in spec:
        raise ConfigError(
            f"hydra.sweeper.storage={spec} is no storage URL; use sqlite:///PATH, "
            f"postgresql://..., mysql://... or journal:PATH (a journal file on a shared filesystem)"
        )
    return spec


def open_storage(url: str, in_job: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``. ``in_job``: a training job's connection, which skips the
    schema checks the sweeper already made (they cost a fraction of a second per job)."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL):]))  # fmt: skip
    # Several processes write one SQLite file (the sweeper, and every job's pruning reports):
    # wait for the lock instead of failing after SQLite's default 5 s.
    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": 60}} if sqlite else None
    storage = optuna.storages.RDBStorage(
        url, engine_kwargs=engine, skip_compatibility_check=in_job, skip_table_creation=in_job
    )
    if sqlite:
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_wal)
        storage.engine.dispose()  # connections opened before the listener: open them again
    return storage


def _sqlite_wal(connection, _record) -> None:
    """Write-ahead log, synced at checkpoints only: a commit no longer waits for the disk
    (each job commits once per epoch; with SQLite's default that cost 12 ms a commit here),
    and readers do not block the writer. The WAL needs a local disk: on a shared filesystem
    use a journal file (``journal:PATH``) or a database server."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def objective_of(result: Mapping | None, objective: str) -> float | None:
    """The score of a finished job's metrics.json; None if it failed or lacks the metric.

    ``tested``: the validation accuracy of the weights the test would use (the best checkpoint's
    ``val/acc_best`` when the run tests that, else the final ``val/acc``), so a technique is
    selected on the same weights it is later tested with."""
    if not result or result.get("status") != "ok":
        return None
    if objective == "tested":
        objective = "val/acc_best" if result.get("tested") == "best checkpoint" else "val/acc"
    value = result.get(objective)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class Heartbeat:
    """This process's sign of life, beaten into every study it has trials running in.

    Each asked trial records its owner (``host:pid:random``); a daemon thread writes the time
    into the owner's study attribute every ``interval`` seconds: one write per study, however
    many trials are in flight (a comparison launches hundreds at once)."""

    def __init__(self, storage, interval: float):
        self.storage, self.interval = storage, float(interval)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[int, set[int]] = {}  # study id -> trial ids in flight
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="reglab-heartbeat")
        self._thread.start()

    def key(self, owner: str | None = None) -> str:
        return f"{HEARTBEAT}:{owner or self.owner}"

    def add(self, study_id: int, trial_id: int) -> None:
        self.storage.set_trial_system_attr(trial_id, OWNER, self.owner)
        with self._lock:
            new = study_id not in self.running
            self.running.setdefault(study_id, set()).add(trial_id)
        if new:
            self._beat(study_id)

    def discard(self, study_id: int, trial_id: int) -> None:
        with self._lock:
            self.running.get(study_id, set()).discard(trial_id)

    def mine(self, trial: FrozenTrial) -> bool:
        return trial.system_attrs.get(OWNER) == self.owner

    def _beat(self, study_id: int) -> None:
        self.storage.set_study_system_attr(study_id, self.key(), time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = [s for s, trials in self.running.items() if trials]
            for study_id in ids:
                try:
                    self._beat(study_id)
                except Exception:  # noqa: BLE001 - a busy database: beat again next time
                    pass

    def close(self) -> None:
        self._stop.set()


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial uses the budget: everything but interrupted runs and surplus asks."""
    attrs = trial.system_attrs
    return not (trial.state == TrialState.FAIL and (INTERRUPTED in attrs or SURPLUS in attrs))


class BudgetStudy:
    """One Optuna study, ``n_trials`` trials in all, whatever the number of workers or restarts.

    ``suggest(trial) -> params`` samples a trial's parameters (define-by-run, so a cocktail's
    knobs can depend on which techniques it switches on)."""

    def __init__(
        self,
        study: optuna.Study,
        n_trials: int,
        suggest: Callable[[optuna.Trial], dict],
        heartbeat: Heartbeat,
        grace_period: float,
        objective: str = "tested",
        finished_run: Callable[[str, int], Mapping | None] = lambda study, number: None,
    ):
        self.study, self.n_trials, self.suggest = study, int(n_trials), suggest
        self.finished_run = finished_run
        self.heartbeat, self.grace_period, self.objective = (
            heartbeat,
            float(grace_period),
            objective,
        )
        self.storage = study._storage  # noqa: SLF001 - the trial-level writes Optuna keeps there
        self.study_id = study._study_id  # noqa: SLF001
        self.name = study.study_name

    # ---------------------------------------------------------------------------- asking

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def ask(self) -> tuple[int, dict] | None:
        """A new trial (number, params) within the budget, or None when the budget is used."""
        pool = [t for t in self.trials() if counted(t)]
        waiting = any(t.state == TrialState.WAITING for t in pool)
        if len(pool) >= self.n_trials and not waiting:
            return None
        trial = self.study.ask()
        rank = sum(1 for t in self.trials() if counted(t) and t.number < trial.number)
        if rank >= self.n_trials:  # another worker took the last slot first
            self.storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)  # noqa: SLF001
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            return None
        self.heartbeat.add(self.study_id, trial._trial_id)  # noqa: SLF001
        try:
            params = self.suggest(trial)
        except Exception:
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self.heartbeat.discard(self.study_id, trial._trial_id)  # noqa: SLF001
            raise
        return trial.number, params

    # ---------------------------------------------------------------------------- telling

    def tell(self, number: int, result: Mapping | None) -> TrialState:
        """Record a job's outcome: PRUNED if its pruning callback stopped it, COMPLETE with the
        objective, FAIL if the job failed (a legitimate outcome: e.g. a strength that diverges)."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        frozen = self.storage.get_trial(trial_id)
        value = objective_of(result, self.objective)
        if frozen.state.is_finished():
            state = frozen.state  # recovered by another worker meanwhile: its retry will run
        elif PRUNED_EPOCH in frozen.system_attrs and value is not None:
            state = self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True).state
        elif value is not None:
            state = self.study.tell(number, value, skip_if_finished=True).state
        else:
            error = (result or {}).get("error") or "the job wrote no metrics.json"
            self.storage.set_trial_user_attr(trial_id, "error", str(error)[:500])
            state = self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True).state
        self.heartbeat.discard(self.study_id, trial_id)
        return state

    def interrupt(self, number: int) -> None:
        """This process stops before the trial's job finished: give it back for a retry."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.heartbeat.discard(self.study_id, trial_id)
        self._retry(self.storage.get_trial(trial_id))

    # ---------------------------------------------------------------------------- recovery

    def _retry(self, trial: FrozenTrial) -> bool:
        try:
            self.storage.set_trial_system_attr(trial._trial_id, INTERRUPTED, True)  # noqa: SLF001
            self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
        except UpdateFinishedTrialError:
            return False  # another worker got there first and enqueued the retry
        self.study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        return True

    def recover(self) -> int:
        """Settle stale RUNNING trials (the process that asked them died): one whose job had
        finished (its metrics.json is there) is told its result, any other is given back for a
        retry. Returns how many were given back."""
        now, n = time.time(), 0
        beats = self.storage.get_study_system_attrs(self.study_id)
        for t in self.trials():
            if t.state != TrialState.RUNNING or self.heartbeat.mine(t):
                continue
            if now - self._last_beat(t, beats) <= self.grace_period:
                continue
            result = self.finished_run(self.name, t.number)
            if result is not None:
                self.tell(t.number, result)
            elif self._retry(t):
                n += 1
        return n

    def _last_beat(self, t: FrozenTrial, beats: Mapping) -> float:
        beat = beats.get(self.heartbeat.key(t.system_attrs.get(OWNER, "?")))
        start = t.datetime_start.timestamp() if t.datetime_start else 0.0
        return max(float(beat), start) if beat is not None else start

    def running_elsewhere(self) -> int:
        """Trials that other live processes are running (or that have not gone stale yet)."""
        return sum(
            1 for t in self.trials() if t.state == TrialState.RUNNING and not self.heartbeat.mine(t)
        )

    # ---------------------------------------------------------------------------- results

    def best(self) -> FrozenTrial | None:
        """The best COMPLETE trial (the lowest number among equals), or None."""
        done = [t for t in self.trials() if t.state == TrialState.COMPLETE]
        if not done:
            return None
        sign = 1 if self.study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
        return max(done, key=lambda t: (sign * t.value, -t.number))

    def summary(self) -> dict:
        """What protocol.json and optimization_results.yaml say about the study."""
        trials = [t for t in self.trials() if counted(t)]
        states = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in
                  (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}  # fmt: skip
        best = self.best()
        return {
            "study": self.name,
            "n_trials": self.n_trials,
            "trials": states,
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else None,
        }


def create(storage, name: str, direction: str, sampler, pruner_cfg: Mapping | None) -> optuna.Study:
    """Create or load the study ``name``; its pruner config is stored in it for the jobs."""
    from hydra.utils import instantiate

    pruner = instantiate(dict(pruner_cfg)) if pruner_cfg else optuna.pruners.NopPruner()
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler,
        pruner=pruner, load_if_exists=True,
    )  # fmt: skip
    stored = dict(pruner_cfg) if pruner_cfg else None
    storage, study_id = study._storage, study._study_id  # noqa: SLF001
    if storage.get_study_system_attrs(study_id).get(PRUNER) != stored:
        storage.set_study_system_attr(study_id, PRUNER, stored)
    return study
