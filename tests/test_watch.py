"""The console of a plain multirun (reglab.report.watch.SweepWatch): Hydra's per-job lines in the
sweep's log, one progress line, each job's warnings in its own log and once on the console."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reglab.core.progress import LAUNCHER_LOGGERS
from reglab.report.watch import SweepWatch, planned_runs

from .conftest import ONE_SHORT_EPOCH, cli

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@pytest.mark.parametrize(
    ("overrides", "default_seeds", "expected"),
    [
        ([], None, (1, 1)),  # no sweep: one job
        (["a=1"], None, (1, 1)),
        (["a=1,2", "b=3,4"], None, (4, 4)),
        (["a=range(0,3)"], None, (3, 3)),
        (["a=range(1,10,2)", "b=choice(x,y)"], None, (10, 10)),
        (["a=1,2", "a=3"], None, (1, 1)),  # one value per key: the last one given
        (["+technique=baseline,l2", "seed=1,2,3"], None, (6, 6)),
        (["regularizer=[l1,l2]", "seed=1,2"], None, (2, 2)),  # a list is one value
        (["seeds=[1,2,3]", "a=1,2"], None, (2, 6)),  # a stacked job: one run per seed
        (["seeds=[1,2],[3]", "a=1,2"], None, (4, 6)),
        (["a=1,2"], [1, 2, 3], (2, 6)),  # the config's seeds=[...]
        (["a=interval(0,1)"], None, (0, 0)),  # not the basic sweeper's: unknown
    ],
)
def test_planned_runs_are_the_basic_sweepers_product(overrides, default_seeds, expected):
    assert planned_runs(overrides, default_seeds) == expected


@pytest.fixture
def launcher_loggers():
    """route_launcher_logs rewires Hydra's launcher loggers: put them back after the test."""
    saved = {
        n: (lg.handlers[:], lg.propagate, lg.level)
        for n in LAUNCHER_LOGGERS
        for lg in [logging.getLogger(n)]
    }
    yield
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        for h in lg.handlers:
            h.close()
        lg.handlers, lg.propagate, lg.level = handlers, propagate, level


def sweep_config(sweep: Path, task: list[str], sweeper: str = BASIC):
    return OmegaConf.create(
        {
            "task_name": "train",
            "seeds": None,
            "hydra": {
                "mode": "MULTIRUN",
                "sweep": {"dir": str(sweep)},
                "sweeper": {"_target_": sweeper, "params": None},
                "launcher": {
                    "_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
                },
                "overrides": {"task": task},
            },
        }
    )


def write_metrics(path: Path, **values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "ok", **values}))


def test_the_line_counts_runs_failures_the_lost_and_the_best(tmp_path, capsys, launcher_loggers):
    sweep = tmp_path / "sweep"
    write_metrics(sweep / "old" / "metrics.json", **{"test/acc": 0.99})  # an earlier sweep's
    watch = SweepWatch(every=0, interval=0.05)  # a line each time runs land, as on a terminal
    watch.on_multirun_start(sweep_config(sweep, ["a=1,2,3", "seeds=[1,2],[3]"]))
    assert watch.progress.planned == 9  # 3 jobs of 2 seeds, 3 jobs of 1
    write_metrics(sweep / "0_a" / "seed_1" / "metrics.json", **{"test/acc": 0.8})
    write_metrics(sweep / "0_a" / "seed_2" / "metrics.json", **{"test/acc": 0.9})
    write_metrics(sweep / "1_b" / "metrics.json", **{"test/acc": 0.85})
    write_metrics(sweep / "2_c" / "metrics.json", status="failed", **{"test/acc": 0.95})
    (sweep / "3_d").mkdir()  # started, nothing yet: 1.5 runs per job of this sweep
    err, deadline = "", time.monotonic() + 10
    while "4/9 runs done" not in err and time.monotonic() < deadline:
        time.sleep(0.05)
        err += capsys.readouterr().err
    line = next(x for x in err.splitlines() if "4/9 runs done" in x)
    assert line.startswith("reglab: [sweep] 4/9 runs done | 1 failed | 2 running | ")
    assert line.endswith("| best: test/acc 0.9000 (0_a/seed_2)")  # not a failed run's, nor old
    assert f"jobs' launch lines: {sweep / 'sweep.log'}" in err

    watch.on_multirun_end(sweep_config(sweep, []))
    # 5 runs never wrote a metrics.json (3_d and the jobs that never started): failed.
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"reglab: \[sweep\] 9/9 runs done \| 6 failed \| .* elapsed, ETA", line)


def test_a_comparison_keeps_its_own_view(tmp_path, capsys):
    reglab = "hydra_plugins.reglab_sweeper.reglab_sweeper.ReglabSweeper"
    watch = SweepWatch()
    config = sweep_config(tmp_path, ["a=1,2"], sweeper=reglab)
    watch.on_multirun_start(config)
    watch.on_job_start(config)
    watch.on_multirun_end(config)
    assert not watch.active and not list(tmp_path.iterdir()) and capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_plain_multiruns_console(tmp_path):
    """Four jobs on the basic launcher, each warning the same (flip on digits, whose data says
    mirror_safe: false): the console has one line for the launch lines' file, the warning once,
    one line per job and the progress line; no line is over 200 characters."""
    r = cli(
        "reglab-train",
        "-m",
        "regularizer=l1,l2",
        "seed=1,2",
        "data=digits",
        "model=mlp",
        "augmentation=[flip]",
        "data.train_subset=64",
        *ONE_SHORT_EPOCH,
        f"paths.log_dir={tmp_path}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    console = (r.stdout + r.stderr).splitlines()
    (sweep,) = (tmp_path / "sweeps").iterdir()
    assert max(len(line) for line in console) <= 200, max(console, key=len)

    progress = [x for x in console if x.startswith("reglab: [sweep] ")]
    assert progress and progress[-1].startswith("reglab: [sweep] 4/4 runs done | 0 failed |")
    assert "best: test/acc" in progress[-1]

    # Hydra's per-job override lines: in sweep.log, not on the console.
    launched = (sweep / "sweep.log").read_text()
    assert all(f"#{i} : regularizer=l" in launched for i in range(4))
    assert not [x for x in console if re.search(r"#\d+ : ", x)]
    assert f"jobs' launch lines: {sweep / 'sweep.log'}" in r.stderr

    # The warning: once on the console, in every job's own log.
    warned = [x for x in console if "mirror_safe" in x]
    assert len(warned) == 1 and warned[0].startswith("reglab: warning in 0_l1"), warned
    logs = sorted(sweep.glob("*/train.log"))
    assert len(logs) == 4 and all("mirror_safe" in p.read_text() for p in logs)
    assert len([x for x in console if x.startswith("reglab: l")]) == 4  # one line per job
