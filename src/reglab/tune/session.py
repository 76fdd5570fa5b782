"""What a search and a comparison share: the storage, the heartbeat, the job runner, and the
loop that fills the budgets of several studies in rounds of jobs."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reglab.tune.jobs import Job, Runner, finished_runs
from reglab.tune.studies import BudgetStudy, Heartbeat, create, open_storage, storage_url


@dataclass
class Options:
    """``hydra.sweeper``'s knobs (conf: the plugin's ReglabSweeperConf)."""

    n_trials: int = 20
    n_jobs: int = 1
    direction: str = "maximize"
    objective: str = "tested"
    monitor: str = "val/acc"
    study_name: str | None = None
    storage: str | None = None
    sampler: dict = field(default_factory=dict)
    pruner: dict | None = None
    heartbeat_interval: float = 10.0
    grace_period: float = 60.0
    protocol: dict | None = None

    @classmethod
    def of(cls, cfg) -> Options:
        plain = OmegaConf.to_container(cfg, resolve=True)
        return cls(**{k: plain[k] for k in cls.__dataclass_fields__ if k in plain})


class Session:
    def __init__(self, sweeper, fixed: list[str]):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # QMCSampler and the journal storage are "experimental" in Optuna's sense only.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.sweeper, self.config = sweeper, sweeper.config
        self.opts = Options.of(self.config.hydra.sweeper)
        self.url = storage_url(self.opts.storage, self.config.paths.log_dir)
        self.storage = open_storage(self.url)
        self.heartbeat = Heartbeat(self.storage, self.opts.heartbeat_interval)
        self.runner = Runner(sweeper, fixed, self.url, self.opts.monitor)
        self.run_dirs: list[Path] = []  # folders that may hold this session's studies' runs

    def study(self, name: str, n_trials: int, suggest: Callable) -> BudgetStudy:
        sampler = instantiate(self.opts.sampler) if self.opts.sampler else None
        study = create(self.storage, name, self.opts.direction, sampler, self.opts.pruner)
        return BudgetStudy(study, n_trials, suggest, self.heartbeat, self.opts.grace_period,
                           self.opts.objective, self.finished_run)  # fmt: skip

    def finished_run(self, study: str, number: int) -> dict | None:
        """The metrics.json of trial ``number`` of ``study`` if its job finished (a process
        that died after the job and before telling Optuna leaves such trials behind)."""
        for folder in self.run_dirs:
            for m in finished_runs(folder, ok_only=False):
                p = m["protocol"]
                if p.get("study") == study and p.get("trial") == number:
                    return m
        return None

    def compose(self, overrides: list[str]):
        """The task config of a job with ``overrides`` (on top of the command line's)."""
        loader = self.sweeper.hydra_context.config_loader
        return loader.load_sweep_config(self.config, [*self.runner.fixed, *overrides])

    def close(self) -> None:
        self.heartbeat.close()


def say(msg: str) -> None:
    print(f"reglab: {msg}", file=sys.stderr, flush=True)


def optimize(
    session: Session,
    studies: list[tuple[BudgetStudy, Callable[[int, dict], Job]]],
    per_round: int = 1,
    poll: float = 2.0,
) -> None:
    """Fill every study's budget: each round asks up to ``per_round`` trials of each study and
    launches them together (one launcher batch, so all cores or array slots are busy); the
    results are told before the next round asks, so a model-based sampler learns from them.

    Ends when no study can ask and no other process is still running one of their trials."""
    waited = False
    while True:
        for s, _ in studies:
            s.recover()
        # Interleaved (the 1st trial of every study, then the 2nd, ...): a study's trials do not
        # run side by side, so each finds the earlier ones complete and the pruner can compare.
        batch: list[tuple[BudgetStudy, int, Job]] = []
        open_ = list(studies)
        for _ in range(max(1, per_round)):
            for s, make in list(open_):
                asked = s.ask()
                if asked is None:
                    open_.remove((s, make))
                else:
                    batch.append((s, asked[0], make(*asked)))
        if batch:
            try:
                results = session.runner.run([job for _, _, job in batch])
            except BaseException:  # Ctrl-C or a launcher error: hand the trials back at once
                for s, number, _ in batch:
                    s.interrupt(number)
                raise
            for (s, number, _), result in zip(batch, results, strict=True):
                s.tell(number, result)
            continue
        elsewhere = sum(s.running_elsewhere() for s, _ in studies)
        if not elsewhere:
            return
        if not waited:
            say(f"waiting for {elsewhere} trial(s) that another process runs (or ran: a trial "
                f"without a heartbeat for {session.opts.grace_period:g} s is run again)")  # fmt: skip
            waited = True
        time.sleep(poll)


def describe_space(space: Mapping) -> dict:
    """A search space for protocol.json / optimization_results.yaml: one readable line per key."""
    out = {}
    for key, dist in space.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            out[key] = {"type": "choice", "choices": list(dist.choices)}
        else:
            kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
            out[key] = {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}
    return out
