"""The console of a sweep: one progress line (stage, runs done / planned, failed, running,
elapsed, ETA, best so far), and Hydra's per-job launch lines routed to the sweep's log file.

Used by the comparison and search driver (``reglab.tune.jobs.Runner``) and, for plain multiruns,
by ``reglab.report.watch.SweepWatch``."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from pathlib import Path

LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins")


def route_launcher_logs(path: Path) -> None:
    """Hydra's per-job override lines (hundreds of long lines) go to ``path`` only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    say(f"jobs' launch lines: {path} (each job's log and warnings: its train.log)")


PREFIX = "reglab: "
WIDTH = 200  # the longest console line a sweep prints (its prefix included)


def say(msg: str) -> None:
    print(f"{PREFIX}{msg}", file=sys.stderr, flush=True)


def draw(text: str) -> None:
    """``text`` in place of the terminal's current line, cut to the terminal's width (a line
    that wraps could not be redrawn in place)."""
    width = min(shutil.get_terminal_size().columns - 1, WIDTH)
    print(f"\r\033[K{PREFIX}{text}"[: width + 4], end="", file=sys.stderr, flush=True)


def clear() -> None:
    print("\r\033[K", end="", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class Progress:
    """One line about the whole sweep: stage, runs done / planned, failed, running, elapsed,
    ETA, best so far. Printed after every round; on a terminal it also updates in place while a
    round runs, counting the members' metrics.json as they land (on any launcher, SLURM too)."""

    def __init__(self):
        self.start = time.time()
        self.stage, self.planned, self.done, self.failed, self.best = "", 0, 0, 0, ""
        self.live = sys.stderr.isatty()

    def line(self, running: int = 0) -> str:
        elapsed = time.time() - self.start
        left = max(self.planned - self.done - running, 0) + running
        eta = _clock(elapsed / self.done * left) if self.done and self.planned else "?"
        of = f"/{self.planned}" if self.planned else ""  # 0: not known (another sweeper's)
        parts = [
            f"[{self.stage}] {self.done}{of} runs done",
            f"{self.failed} failed",
            *([f"{running} running"] if running else []),
            f"{_clock(elapsed)} elapsed, ETA {eta}",
            *([f"best: {self.best}"] if self.best else []),
        ]
        return " | ".join(parts)[: WIDTH - len(PREFIX)]

    def count(self, members: list[dict | None]) -> None:
        """Runs that finished: each one's metrics.json (None: it died before writing one)."""
        for m in members:
            self.done += 1
            self.failed += not m or m.get("status") != "ok"
        say(self.line())

    def watching(self, folders: list[Path], members: int):
        return _Watch(self, folders, members)


class _Watch:
    def __init__(self, progress: Progress, folders: list[Path], members: int):
        self.progress, self.folders, self.members = progress, folders, members
        self.stop = threading.Event()

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            landed = sum(1 for f in self.folders for _ in f.glob("seed_*/metrics.json"))
            p = self.progress
            p.done += landed
            text = p.line(running=self.members - landed)
            p.done -= landed
            draw(text)

    def __enter__(self):
        if self.progress.live:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.progress.live:
            self.thread.join()
            clear()
