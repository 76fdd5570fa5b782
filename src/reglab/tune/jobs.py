"""Jobs: what the driver hands to Hydra's launcher, and what it reads back.

A job is an ordinary ``reglab-train`` run of one configuration with one member per seed
(``seeds=[...]``: trained together, each exactly the run it would be alone). It writes
``<sweep>/<subdir>/seed_<s>/metrics.json`` per member; ``subdir`` is fixed by what the job is
(``tune/l2/3``: trial 3 of l2's tuning), so a job that a kill interrupted runs again into the
same folder. Its overrides say what it is for:

- ``++protocol={comparison, stage, arm, trial, params, space, look}``: copied into every
  member's metrics.json and its W&B config;
- ``tags=[..., stage:S, arm:A]`` and, with a W&B logger, the W&B group (the comparison) and
  job type (the stage);
- in tuning stages, the pruning callback and ``++trainer.limit_test_batches=0``: a trial is
  scored on validation only and never touches the test set.

Hydra's launchers log every job's full override line; those lines go to ``<sweep>/sweep.log``
and the console gets one progress line per round instead (``Progress``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from reglab.core.io import write_json_atomic
from reglab.core.plan import USE, Stage
from reglab.core.progress import Progress, route_launcher_logs, say  # noqa: F401 (say: re-exported)
from reglab.training.loggers import is_wandb
from reglab.tune.pruning import PRUNED_FILE
from reglab.tune.space import override_value


@dataclass
class Job:
    stage: str
    arm: str
    subdir: str  # relative to the sweep folder
    seeds: list[int]
    overrides: list[str]  # the technique choice and the parameter values
    record: dict  # the protocol record (reglab.core.plan.RECORD_KEYS)
    reference: Path | None = None  # the pruning reference (tuning stages)
    trials: list = field(default_factory=list)  # the Optuna trials it answers, one per member
    # Its technique groups as config values ({group: {option: node}}), which let jobs of
    # different arms share one launched job; None: only its own overrides compose it.
    groups: dict | None = None


@dataclass
class Result:
    members: list[dict | None]  # each seed's metrics.json (None: the job died before writing it)
    pruned: bool

    @property
    def ok(self) -> list[dict]:
        return [m for m in self.members if m and m.get("status") == "ok"]


def read_result(folder: Path, seeds: list[int]) -> Result:
    members = []
    for seed in seeds:
        path = folder / f"seed_{seed}" / "metrics.json"
        try:
            members.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            members.append(None)
    return Result(members, (folder / PRUNED_FILE).is_file())


class Runner:
    """Hands jobs to the configured Hydra launcher, one batch at a time."""

    def __init__(self, sweeper, fixed: list[str], sweep_dir: Path, monitor: str):
        self.sweeper, self.fixed, self.monitor = sweeper, fixed, monitor
        self.sweep_dir = Path(sweep_dir)
        cfg = sweeper.config
        self.tags = [str(t) for t in (cfg.get("tags") or [])]
        self.wandb_keys = [k for k, v in (cfg.get("logger") or {}).items() if is_wandb(v)]
        self.extra: list[str] = [f"hydra.sweep.dir={override_value(str(self.sweep_dir))}"]
        self.next_idx = 0
        self.validated: set[str] = set()
        self.progress = Progress()
        pruner = str((cfg.hydra.sweeper.get("pruner") or {}).get("_target_", ""))
        self.stack_trials = pruner in ("", "optuna.pruners.NopPruner")
        self.parts = local_workers(cfg.hydra.get("launcher") or {})
        route_launcher_logs(self.sweep_dir / "sweep.log")

    def job_tags(self, job: Job) -> list[str]:
        return list(dict.fromkeys([*self.tags, f"stage:{job.stage}", f"arm:{job.arm}"]))

    def overrides(self, job: Job) -> list[str]:
        tags = self.job_tags(job)
        out = [
            *self.fixed,
            *job.overrides,
            f"seeds={override_value(job.seeds)}",
            f"++protocol={override_value(job.record)}",
            f"tags={override_value(tags)}",
            f"hydra.sweep.subdir={override_value(job.subdir)}",
            # The job's logging, its warnings included, goes to its own log file only: the
            # console keeps one line per job and the progress line.
            "hydra.job_logging.root.handlers=[file]",
        ]
        group = job.record.get("comparison") or "search"
        for key in self.wandb_keys:
            out.append(f"++logger.{key}.group={override_value(group)}")
            out.append(f"++logger.{key}.job_type={job.stage}")
        if job.stage in Stage.TUNING and job.reference is not None:  # None: nothing pruned
            callback = {
                "_target_": "reglab.tune.pruning.PruningCallback",
                "reference": str(job.reference),
                "flag": str(self.sweep_dir / job.subdir / PRUNED_FILE),
                "monitor": self.monitor,
            }
            out.append(f"++callbacks.optuna_pruning={override_value(callback)}")
        if job.stage in Stage.TUNING:
            out.append("++trainer.limit_test_batches=0")
        return [*out, *self.extra]

    def stacked(self, jobs: list[Job]) -> list[str]:
        """The overrides of one launched job that trains several jobs as the variants of one
        stack (``variants=[...]``): each with its values, technique groups, protocol record and
        tags, in its own folder. No pruning callback: a stack cannot stop one member alone."""
        variants = []
        for j in jobs:
            # The groups first: a value may be a key inside them (regularizer.l2.strength).
            values = {**(j.groups or {}), **trial_values(j.record["params"])}
            values.update(protocol=j.record, tags=self.job_tags(j))
            variants.append({"dir": str(self.sweep_dir / j.subdir), "set": values})
        arms = {j.arm for j in jobs}
        name = digest([j.subdir for j in jobs], jobs[0].seeds)
        one = Job(
            jobs[0].stage,
            jobs[0].arm if len(arms) == 1 else "several",
            f"{Path(jobs[0].subdir).parts[0]}/jobs/{name}",  # its own .hydra and train.log
            jobs[0].seeds,
            shared(jobs[0]),
            jobs[0].record,
        )
        path = self.sweep_dir / one.subdir / "variants.json"  # read by the job (run_stack)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, variants)
        return [*self.overrides(one), f"variants={override_value(str(path))}"]

    def launches(self, jobs: list[Job]) -> list[list[Job]]:
        """``jobs`` as launched. Jobs of one stage on the same seeds whose technique groups can
        be set as values share ``parts`` launched jobs (one per local worker), arms mixed; with
        other launchers, tuning trials of one arm share one. Tuning trials are merged only when
        nothing is pruned (``hydra/sweeper/pruner=none``): a stack cannot stop one member."""
        out: dict[tuple, list[Job]] = {}
        for i, j in enumerate(jobs):
            tuning = j.stage in Stage.TUNING
            if tuning and not self.stack_trials:
                key = (i,)
            elif j.groups is not None and self.parts:
                key = ("mixed", j.stage, tuple(j.seeds), tuple(shared(j)))
            elif tuning:
                key = (j.stage, j.arm, str(Path(j.subdir).parent), tuple(j.seeds), tuple(shared(j)))
            else:
                key = (i,)
            out.setdefault(key, []).append(j)
        launches = []
        for key, group in out.items():
            launches += balanced(group, self.parts) if key[0] == "mixed" else [group]
        # Fewer launched jobs than workers (the last looks, the cocktail's): halve the seeds of
        # the biggest single job, so no core idles. Each half runs as a stack of its own.
        while len(launches) < self.parts:
            big = max(launches, key=lambda g: sum(len(j.seeds) for j in g))
            if len(big) > 1 or len(big[0].seeds) < 2:
                break
            seeds = big[0].seeds
            launches.remove(big)
            half = len(seeds) // 2
            launches += [
                [replace(big[0], seeds=seeds[:half])],
                [replace(big[0], seeds=seeds[half:])],
            ]
        return launches

    def run(self, jobs: list[Job]) -> list[Result]:
        """Launch ``jobs`` as one batch and read each job's members back. A member folder that
        exists already belongs to a run that a kill interrupted: it is emptied first."""
        if not jobs:
            return []
        folders = [self.sweep_dir / j.subdir for j in jobs]
        for folder, job in zip(folders, jobs, strict=True):
            (folder / PRUNED_FILE).unlink(missing_ok=True)
            for seed in job.seeds:
                shutil.rmtree(folder / f"seed_{seed}", ignore_errors=True)
        launches = self.launches(jobs)
        whole = {id(j) for j in jobs}  # a launched job not among these is half of one
        batch = [
            self.stacked(g) if len(g) > 1 or id(g[0]) not in whole else self.overrides(g[0])
            for g in launches
        ]
        # Composing costs a fraction of a second: check one job per stage here, so a bad
        # override stops the sweep with Hydra's message before anything is launched.
        stages = [group[0].stage for group in launches]
        first = {st: b for st, b in zip(stages, batch, strict=True) if st not in self.validated}
        if first:
            self.sweeper.validate_batch_is_legal(list(first.values()))
            self.validated.update(first)
        members = sum(len(j.seeds) for j in jobs)
        with self.progress.watching(folders, members):
            self.sweeper.launcher.launch(batch, initial_job_idx=self.next_idx)
        self.next_idx += len(batch)
        return [read_result(f, j.seeds) for f, j in zip(folders, jobs, strict=True)]


def trial_values(params: dict) -> dict:
    """A trial's parameter values as config keys (the cocktail's on/off switches are group
    choices, not values)."""
    return {k: v for k, v in params.items() if not k.startswith(USE)}


def shared(job: Job) -> list[str]:
    """A job's overrides less its trial's values (and its technique choice, where its groups
    are set as values): what the jobs launched with it share."""
    values = {f"{k}=" for k in trial_values(job.record.get("params") or {})}
    values |= {f"{g}=" for g in job.groups or {}}
    return [o for o in job.overrides if not any(o.startswith(v) for v in values)]


def digest(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def local_workers(launcher) -> int:
    """How many launched jobs run at once on this machine (jobs of different arms are merged
    into that many); 0 for a launcher that sends them elsewhere (SLURM: each arm its own)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("BasicLauncher"):
        return 1
    if target.endswith("JoblibLauncher"):
        n = launcher.get("n_jobs") or -1
        return os.cpu_count() or 1 if n < 1 else int(n)
    return 0


def balanced(jobs: list[Job], parts: int) -> list[list[Job]]:
    """``jobs`` in ``parts`` groups of about equal work (members x epochs), each in the
    original order."""

    def work(j: Job) -> int:
        return len(j.seeds) * int((j.record.get("params") or {}).get("trainer.max_epochs") or 1)

    bins: list[list[int]] = [[] for _ in range(max(1, min(parts, len(jobs))))]
    load = [0] * len(bins)
    for i in sorted(range(len(jobs)), key=lambda i: -work(jobs[i])):
        k = load.index(min(load))
        bins[k].append(i)
        load[k] += work(jobs[i])
    return [[jobs[i] for i in sorted(b)] for b in bins if b]
