"""reglab-train's multiruns on a real SLURM cluster, through Hydra's submitit launcher.

Each test is a command a user types on a login node: a job array with a report at the end, a
job that outlives its time limit and is requeued, a job that crashes among others that finish.
Skipped (with the reason) where no cluster answers `sinfo`; CI starts one with .ci/slurm-up.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from .conftest import job_logs, start_reglab_train

pytestmark = pytest.mark.slurm

# Seconds on digits with one thread; the CSV logger only, and checkpoints without a progress bar.
TINY = [
    "trainer.max_epochs=2",
    "num_threads=1",
    "trainer.accelerator=cpu",
    "callbacks=model_checkpoint",
    "logger=csv",
]


def metrics_of(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def results_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def tail(text: str, lines: int = 60) -> str:
    """The end of a command's output, without submitit's warnings that sacct does not answer
    (the test cluster keeps no accounting)."""
    kept = [x for x in text.splitlines() if "sacct" not in x and "accounting storage" not in x]
    return "\n".join(kept[-lines:])


def test_seed_sweep_is_one_job_array_with_a_report(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    code, out = cluster.sweep(
        "hydra/launcher=slurm",  # the real-cluster file, CPU-sized
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY,
        "seed=1,2",
        log=tmp_path / "sweep.log",
    )
    assert code == 0, tail(out)

    # submitit keeps one folder per task of an array, named <array job id>_<task index>.
    tasks = [re.fullmatch(r"(\d+)_(\d+)", p.name) for p in (sweep / ".submitit").iterdir()]
    tasks = [m.groups() for m in tasks if m]
    assert len({array for array, _ in tasks}) == 1, tasks
    assert sorted(int(i) for _, i in tasks) == [0, 1]

    runs = metrics_of(sweep)
    assert sorted(m["seed"] for m in runs.values()) == [1, 2]
    assert all(m["status"] == "ok" and m["epochs_trained"] == 2 for m in runs.values()), runs

    assert (sweep / "report.md").is_file()
    rows = results_rows(sweep)
    assert [(row["technique"], row["n"]) for row in rows] == [("baseline", "2")]


def test_crashing_job_is_reported_while_the_others_finish(cluster, tmp_path):
    # 99999 training examples: digits has 1212, which only the job finds out, at run time.
    sweep = tmp_path / "sweep"
    code, out = cluster.sweep(
        "hydra/launcher=slurm_local",
        f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY,
        "data.train_subset=300,99999",
        log=tmp_path / "sweep.log",
    )
    assert code == 1, tail(out)

    runs = metrics_of(sweep)
    by_status = {m["status"]: m for m in runs.values()}
    assert sorted(m["status"] for m in runs.values()) == ["failed", "ok"], runs
    assert "train_subset=99999" in by_status["failed"]["error"]
    assert by_status["ok"]["epochs_trained"] == 2

    report = (sweep / "report.md").read_text()
    assert "train_subset=99999" in report  # the failed run, with its error
    assert sum(int(row["n"]) for row in results_rows(sweep)) == 1  # the finished run only


# About a minute of training on a 2-core machine, a checkpoint at every epoch end.
LONG = [
    "model=cnn",
    "model.channels=[64,128]",
    "data.batch_size=32",
    "num_threads=1",
    "trainer.accelerator=cpu",
    "callbacks=model_checkpoint",
    "logger=csv",
    "seed=1",
]


def assert_same_metrics(resumed: dict, reference: dict) -> None:
    assert resumed["status"] == reference["status"] == "ok", resumed.get("error")
    for key in ("epochs_trained", "global_step", "tested", "seed"):
        assert resumed[key] == reference[key], key
    numbers = [k for k, v in reference.items() if isinstance(v, float) and k != "wall_time_s"]
    assert "test/acc" in numbers and "weights/l2" in numbers
    for key in numbers:
        assert key in resumed, key
        assert math.isclose(resumed[key], reference[key], rel_tol=1e-6, abs_tol=1e-7), key
    assert len(resumed["history"]) == len(reference["history"])
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=1e-6, abs_tol=1e-7), (key, got)
    assert Path(resumed["best_checkpoint"]).name == Path(reference["best_checkpoint"]).name


def train_with_time_limit(cluster, folder: Path, epochs: int) -> tuple[Path, Path]:
    """The same training twice, side by side: as a SLURM job with a 1-minute time limit, and
    without SLURM (the reference). Returns both run folders."""
    folder.mkdir()
    overrides = [*LONG, f"trainer.max_epochs={epochs}", f"paths.log_dir={folder / 'logs'}"]
    reference = start_reglab_train(
        f"hydra.run.dir={folder / 'reference'}", *overrides, log=folder / "reference.log"
    )
    try:
        # SLURM checks time limits every 30 s, so with its shortest limit and signal_delay_s=1
        # each attempt gets SIGUSR2 29 to 59 s after it starts; submitit then requeues the job,
        # up to max_num_timeout times, and the next attempt continues from last.ckpt.
        code, out = cluster.sweep(
            "hydra/launcher=slurm_local",
            "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=1",
            "hydra.launcher.max_num_timeout=6",  # attempts are short on a loaded machine
            f"hydra.sweep.dir={folder / 'sweep'}",
            *overrides,
            "resume=true",
            log=folder / "sweep.log",
            timeout=900,
        )
    finally:
        try:
            reference.wait(timeout=900)
        finally:
            reference.kill()
    assert code == 0, tail(out) + "\n--- jobs\n" + tail(job_logs(folder / "sweep"))
    assert reference.returncode == 0, tail((folder / "reference.log").read_text())
    return folder / "sweep", folder / "reference"


def test_time_limit_requeues_and_resumes_to_the_same_metrics(cluster, tmp_path):
    # A fast machine may finish 60 epochs before the first signal: then twice as many.
    for epochs in (60, 120):
        sweep, reference = train_with_time_limit(cluster, tmp_path / f"{epochs}_epochs", epochs)
        logs = job_logs(sweep)
        if "this job is timed-out" in logs:
            break
    else:
        pytest.fail(f"{epochs} epochs finished within the first 1-minute time limit")

    requeues = logs.count("Requeued job")
    assert requeues >= 1, tail(logs)
    # Each attempt that finds no checkpoint says so; at least one attempt continued from one.
    assert logs.count("training from the start") < requeues + 1, tail(logs)
    # submitit's requeue is the only one: Lightning's own (SLURMEnvironment's auto-requeue,
    # on SIGUSR1) would have saved an hpc_ckpt_*.ckpt first.
    assert not list(sweep.rglob("hpc_ckpt_*.ckpt"))

    (resumed,) = metrics_of(sweep).values()
    assert_same_metrics(resumed, json.loads((reference / "metrics.json").read_text()))
