"""Where a search or comparison keeps its state: Optuna studies in one storage.

Only the driver (the process that runs the sweeper) opens the storage; jobs never do. One
driver at a time per comparison or search (a lock file beside the storage says which), so a
trial found RUNNING when the driver starts was interrupted by a kill: it runs again with the
same parameters under the same number, and nothing is asked twice. Only Optuna's public API is
used: ``create_study``, ``ask``, ``tell``, ``enqueue_trial``, ``get_trials``, user attributes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import optuna
from hydra.utils import instantiate
from optuna.trial import FrozenTrial, TrialState

from reglab.core.errors import ConfigError
from reglab.tune.space import Space, suggest

JOURNAL = "journal:"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(spec: str | None, log_dir: str | Path) -> str:
    """``spec`` as given, or SQLite under ``log_dir/optuna/optuna.db``. Local files become
    absolute and their folder is created (SQLite cannot create a missing directory)."""
    spec = str(spec) if spec else f"sqlite:///{Path(log_dir) / 'optuna' / 'optuna.db'}"
    for prefix in ("sqlite:///", JOURNAL):
        if spec.startswith(prefix):
            path = Path(spec.removeprefix(prefix)).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return f"{prefix}{path}"
    if "://" not in spec:
        raise ConfigError(
            f"hydra.sweeper.storage={spec} is no storage URL; use sqlite:///PATH, "
            "postgresql://..., mysql://... or journal:PATH"
        )
    return spec


def open_storage(url: str) -> optuna.storages.BaseStorage:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # QMCSampler and the journal storage are "experimental" in Optuna's sense only.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith(JOURNAL):
        backend = optuna.storages.journal.JournalFileBackend(url.removeprefix(JOURNAL))
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


def lock(url: str, log_dir: str | Path, name: str):
    """Hold an exclusive lock for ``name`` while this process drives it (released at exit)."""
    digest = hashlib.sha1(f"{url}|{name}".encode()).hexdigest()[:16]
    path = Path(log_dir) / "optuna" / "locks" / f"{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        raise ConfigError(
            f"{name} is being run by another process ({handle.read().strip() or 'unknown'}); "
            "wait for it, or give this one another hydra.sweeper.study_name"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


class Study:
    """One Optuna study under a fixed budget of trials."""

    def __init__(self, storage, name: str, direction: str, sampler: Mapping | None = None):
        self.name = name
        self.study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction,
            sampler=instantiate(dict(sampler)) if sampler else None,
            load_if_exists=True,
        )

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def used(self) -> int:
        """Trials asked so far (enqueued ones wait to be asked: they are not counted yet)."""
        return len(self.trials(TrialState.RUNNING, *FINISHED))

    def interrupted(self) -> list[FrozenTrial]:
        """Trials a killed driver left RUNNING: they run again, same number, same values."""
        return self.trials(TrialState.RUNNING)

    def ask(self, space: Space | Callable) -> tuple[int, dict]:
        """A new trial and its values: from ``space``, or ``space(trial)`` (a conditional one)."""
        trial = self.study.ask()
        return trial.number, space(trial) if callable(space) else suggest(trial, space)

    def ask_seed(self, seed: int, look: int) -> int:
        """A test trial: a paired seed, and the look it was added in (one-point ranges)."""
        trial = self.study.ask()
        trial.suggest_int("seed", seed, seed)
        trial.suggest_int("look", look, look)
        return trial.number

    def tell(self, number: int, value: float | None, state: TrialState) -> None:
        self.study.tell(number, value if state == TrialState.COMPLETE else None, state=state)

    def best(self) -> FrozenTrial | None:
        done = self.trials(TrialState.COMPLETE)
        if not done:
            return None
        sign = 1 if self.study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        return min(done, key=lambda t: (sign * t.value, t.number))
