"""The console of a plain multirun (``reglab-train -m a=1,2 b=3,4``, Hydra's basic sweeper, on
any launcher): the view a comparison has (``reglab.core.progress``), from a Hydra callback.

- Hydra's per-job override lines go to ``<sweep>/sweep.log``; one line says where.
- One progress line: runs done out of planned, failed, running, elapsed, ETA and the best score
  so far. A thread counts the runs' ``metrics.json`` as they land in the sweep folder
  (``<job>/metrics.json``, or ``<job>/seed_S/metrics.json`` for a ``seeds=[...]`` job), which
  works on every launcher, SLURM included. Where the jobs print to another place (submitit's log
  files) and the console is a terminal, the line updates in place; where the jobs print to this
  console too, it is a plain line after each finished run (at most one a minute when the console
  is a file), so it never cuts into a job's own output. The last one is printed at the end.
- Each job's logging, Python warnings included, goes to the job's own ``train.log``; the console
  gets one line per distinct warning, the first time any job of the sweep logs it.

A comparison or search (``hydra/sweeper=reglab``) has this view of its own: there the callback
does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from reglab.core.progress import PREFIX, WIDTH, Progress, clear, draw, route_launcher_logs, say

STAGE = "sweep"
SCORES = ("test/acc", "val/acc_best")  # "best so far": the first of these the runs have
WARNED = ".warned"  # under the sweep folder: one empty file per warning the console has shown


# ----------------------------------------------------------------------------- the plan


def _members(seeds: Any) -> int:
    """Runs in one job: one per seed of ``seeds=[...]`` (trained together), else one."""
    return len(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else 1


def planned_runs(
    overrides: Sequence[str], default_seeds: Any = None, config_loader: Any = None
) -> tuple[int, int]:
    """(jobs, runs) Hydra's basic sweeper launches for ``overrides`` (``hydra.sweeper.params``
    first, then the command line's): the product of the swept keys' choices, one value per key,
    the last one given winning, as the sweeper does. A job of ``seeds=[...]`` is one run per seed;
    a job without ``seeds`` runs ``default_seeds`` (the config's). (0, 0): a sweep the basic
    sweeper cannot run (an interval), or a ``glob`` without the ``config_loader`` to expand it."""
    parser = OverridesParser.create(config_loader=config_loader)
    try:
        parsed = {o.get_key_element(): o for o in parser.parse_overrides(list(overrides))}
        values = {}
        for key, o in parsed.items():
            if not o.is_sweep_override():
                values[key] = [o.value()]
            elif o.is_discrete_sweep():
                values[key] = list(o.sweep_iterator())
            else:
                return 0, 0
    except Exception:  # noqa: BLE001 (Hydra will say what is wrong with the command)
        return 0, 0
    seeds = values.pop("seeds", [default_seeds])
    jobs = math.prod(len(v) for v in values.values())
    return jobs * len(seeds), jobs * sum(_members(s) for s in seeds)


def _plan(config: DictConfig) -> tuple[int, int]:
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return 0, 0  # another sweeper decides as it goes: the line counts without "of N"
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    return planned_runs(lines, OmegaConf.select(config, "seeds"), loader)


def _own_view(config: DictConfig) -> bool:
    """A sweeper that shows its own progress: reglab's (comparisons and searches)."""
    return "reglab_sweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_") or "")


def _plain_multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode")
    return getattr(mode, "name", str(mode)) == "MULTIRUN" and not _own_view(config)


# ----------------------------------------------------------------------------- the runs


@dataclass
class Landed:
    """One finished run: its folder relative to the sweep, whether it ran, its scores."""

    run: str
    ok: bool
    scores: dict[str, float]


class Scan:
    """The runs that landed in ``sweep_dir``, and the jobs started there that have not."""

    def __init__(self, sweep_dir: Path, name: str = "metrics.json"):
        self.sweep_dir, self.name = sweep_dir, name
        self.landed: dict[Path, Landed] = {}
        self.running = 0  # jobs started (their folder exists) with no metrics.json yet
        # A sweep into an existing folder (hydra.sweep.dir=...): what is there counts only when
        # a job of this sweep writes it again.
        self.before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob(name)}

    def update(self, deep: bool = False) -> None:
        """Read what landed since the last call. Jobs are the sweep folder's subfolders (each
        job's folder appears when the job starts); ``deep``: every file below, wherever a
        custom ``hydra.sweep.subdir`` put it."""
        self.running = 0
        if deep:
            self._read(list(self.sweep_dir.rglob(self.name)))
            return
        try:
            jobs = [d for d in os.scandir(self.sweep_dir) if d.is_dir() and d.name[0] != "."]
        except OSError:
            return
        for job in jobs:
            top = Path(job.path) / self.name
            files = [top] if top.is_file() else sorted(Path(job.path).glob(f"seed_*/{self.name}"))
            self.running += not files
            self._read(files)

    def _read(self, files: list[Path]) -> None:
        for path in files:
            if path in self.landed:
                continue
            try:
                if self.before.get(path) == path.stat().st_mtime_ns:
                    continue
                m = json.loads(path.read_text())
            except (OSError, ValueError):  # not complete yet (a copy in progress): next time
                continue
            scores = {k: float(m[k]) for k in SCORES if isinstance(m.get(k), (int, float))}
            run = path.parent.relative_to(self.sweep_dir).as_posix()
            self.landed[path] = Landed(run, m.get("status", "ok") == "ok", scores)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.landed.values())

    def best(self) -> str:
        ok = [r for r in self.landed.values() if r.ok]
        for key in SCORES:
            scored = [(r.scores[key], r.run) for r in ok if key in r.scores]
            if scored:  # a tie: the first to land
                value, run = max(scored, key=lambda s: s[0])
                return f"{key} {value:.4f} ({run})"
        return ""


# ----------------------------------------------------------------------------- the warnings


class FirstWarning(logging.Handler):
    """The console line of a job's warning, for the first job of the sweep that logs it; the
    sweep's jobs share what was shown through empty files in ``<sweep>/.warned`` (any launcher:
    the jobs may run in other processes or on other machines)."""

    def __init__(self, folder: Path, job: str):
        super().__init__(logging.WARNING)
        self.folder, self.job = folder, job

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().strip()
            key = hashlib.sha1(f"{record.name}\n{text}".encode()).hexdigest()[:16]
            self.folder.mkdir(exist_ok=True)
            os.close(os.open(self.folder / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # shown by an earlier job
        except Exception:  # noqa: BLE001
            self.handleError(record)
            return
        first = re.sub(r"^\S+:\d+: ", "", text.splitlines()[0])  # warnings.warn's "file:line: "
        head = f"warning in {self.job} (in each job's train.log): "
        room = WIDTH - len(PREFIX) - len(head)
        say(head + (first if len(first) <= room else first[: room - 3] + "..."))


# ----------------------------------------------------------------------------- the callback


class SweepWatch(Callback):
    """Registered in ``conf/hydra/default.yaml``; see the module's docstring.

    ``every``: seconds between two progress lines when the console is a file (a log);
    ``interval``: seconds between two looks at the sweep folder."""

    def __init__(self, every: float = 60.0, interval: float = 1.0):
        self.every, self.interval = every, interval
        self.active = False
        self.driver = os.getpid()
        self.inproc = False  # the jobs run in this process (the basic launcher)
        self._handlers: list[logging.Handler] = []

    # Hydra hands the callbacks to jobs in other processes (joblib, submitit): only the settings
    # and what the jobs need travel, never the thread.
    def __getstate__(self) -> dict:
        keep = ("every", "interval", "active", "driver")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.inproc, self._handlers = False, []

    # ------------------------------------------------------------------------- the driver

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _plain_multirun(config):
            return
        self.active = True
        sweep_dir = Path(str(config.hydra.sweep.dir))
        route_launcher_logs(sweep_dir / "sweep.log")
        name = "eval_metrics.json" if config.get("task_name") == "eval" else "metrics.json"
        self.scan = Scan(sweep_dir, name)
        self.progress = Progress()
        self.progress.stage = STAGE
        self.jobs, self.progress.planned = _plan(config)
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        # The jobs write to files of their own (submitit, SLURM): the line can stay in place.
        self.tty = sys.stderr.isatty()
        self.live = self.tty and "submitit" in launcher
        self.shown, self.shown_at = 0, time.monotonic()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._loop, name="reglab-sweep-watch", daemon=True)
        self.thread.start()

    def _update(self, deep: bool = False) -> None:
        with self.lock:
            self.scan.update(deep)
            p = self.progress
            p.done, p.failed, p.best = len(self.scan.landed), self.scan.failed, self.scan.best()

    def _running(self) -> int:
        """Runs in the jobs started and not landed (a seeds=[...] job: one per member)."""
        per_job = self.progress.planned / self.jobs if self.jobs else 1
        return round(self.scan.running * per_job)

    def _tell(self) -> None:
        """A progress line of its own when runs landed since the last one (on a file, at most
        every ``every`` seconds)."""
        p = self.progress
        if p.done == self.shown or (not self.tty and time.monotonic() - self.shown_at < self.every):
            return
        self.shown, self.shown_at = p.done, time.monotonic()
        say(p.line(self._running()))

    def _loop(self) -> None:
        wait = self.interval
        while not self.stop.wait(wait):
            start = time.monotonic()
            self._update()
            # A sweep folder on a slow shared file system: look less often.
            wait = max(self.interval, 20 * (time.monotonic() - start))
            if self.live:
                draw(self.progress.line(self._running()))
            elif not self.inproc:  # jobs in this process: their own end says it (on_job_end)
                self._tell()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.active or not hasattr(self, "thread"):
            return
        self.stop.set()
        self.thread.join()
        self._update(deep=True)
        p = self.progress
        lost = max(p.planned - p.done, 0)  # jobs that died before writing their metrics.json
        p.done, p.failed = p.done + lost, p.failed + lost
        if self.live:
            clear()
        if p.done != self.shown or lost:  # else the line after the last run said it already
            say(p.line())

    # ------------------------------------------------------------------------- each job

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: its logging to its log file only, but a warning's first time."""
        if not _plain_multirun(config):
            return
        self.inproc = self.inproc or os.getpid() == self.driver
        root = logging.getLogger()
        if not any(isinstance(h, logging.FileHandler) for h in root.handlers):
            return  # a job_logging without a file: leave it on the console
        self._handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
        for h in self._handlers:
            root.removeHandler(h)
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        job = Path(str(config.hydra.runtime.output_dir)).absolute()
        name = job.relative_to(sweep_dir).as_posix() if job.is_relative_to(sweep_dir) else job.name
        self._first = FirstWarning(sweep_dir / WARNED, name)
        root.addHandler(self._first)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not _plain_multirun(config):
            return
        root = logging.getLogger()
        if self._handlers:  # the driver's console, as Hydra left it (basic launcher)
            root.removeHandler(self._first)
            for h in self._handlers:
                root.addHandler(h)
            self._handlers = []
        if self.inproc and self.active and hasattr(self, "thread"):
            self._update()
            self._tell()
