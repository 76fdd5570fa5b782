"""The dashboards users already have: optuna-dashboard on a study's SQLite file, a W&B sweep
(scripts/wandb_sweep.yaml) whose command the agent builds the way these tests do, and a
comparison's W&B runs, grouped by comparison and typed by stage."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from reglab.core.paths import ROOT_DIR

from .conftest import ONE_SHORT_EPOCH, cli, compose_cfg, read_wandb_run

SWEEP_YAML = ROOT_DIR / "scripts" / "wandb_sweep.yaml"
# Test-only overrides appended to the sweep's command: one short epoch.
SHORT = ONE_SHORT_EPOCH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None):
    """GET ``url`` as JSON, retrying while the server starts (stops early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if proc is not None and proc.poll() is not None:
                output = proc.communicate()[0][-2000:]
                raise AssertionError(f"the server exited: {output}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_optuna_dashboard_lists_a_sqlite_study(tmp_path):
    db = tmp_path / "optuna.db"
    study = optuna.create_study(
        study_name="digits_mlp_regularizer.l2.strength",
        storage=f"sqlite:///{db}",
        direction="maximize",
    )
    study.optimize(lambda t: 1.0 - abs(t.suggest_float("x", -1, 1)), n_trials=3)

    port = free_port()
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is not installed: pip install -e '.[dev]'"
    proc = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--quiet", f"sqlite:///{db}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        listed = get_json(f"http://127.0.0.1:{port}/api/studies", proc=proc)["study_summaries"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (summary,) = listed
    assert summary["study_name"] == study.study_name
    assert summary["directions"] == ["maximize"]


def sweep_command(sweep: dict, values: dict) -> list[str]:
    """The command ``wandb agent`` runs for one trial of ``sweep`` with ``values``: wandb's own
    ``create_sweep_command_args`` for the macros, then the agent's replacement of each
    ``${macro}`` word (wandb/wandb_agent.py)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    assert set(values) == set(sweep["parameters"])
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros.update(env=["/usr/bin/env"], program=[sweep["program"]])
    words = []
    for word in sweep["command"]:
        words += macros[word[2:-1]] if word.startswith("${") and word.endswith("}") else [word]
    return words


def a_value(spec: dict) -> float:
    """A value W&B could draw: the geometric middle of a log-uniform range."""
    assert spec["distribution"] == "log_uniform_values"
    return round((float(spec["min"]) * float(spec["max"])) ** 0.5, 8)


def test_wandb_sweep_command_composes_and_runs_offline(tmp_path):
    sweep = yaml.safe_load(SWEEP_YAML.read_text())
    values = {name: a_value(spec) for name, spec in sweep["parameters"].items()}
    command = sweep_command(sweep, values)
    assert command[:2] == ["/usr/bin/env", "reglab-train"]
    overrides = command[2:]
    assert set(overrides) >= {f"{k}={v}" for k, v in values.items()}

    cfg = compose_cfg(overrides, tmp_path / "compose")
    assert "wandb" in cfg.logger and list(cfg.regularizer) == ["l2"]
    assert cfg.regularizer.l2.strength == values["regularizer.l2.strength"]
    assert cfg.optimizer.lr == values["optimizer.lr"]

    bin_dir = str(Path(sys.executable).parent)  # the agent finds reglab-train on PATH
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    r = subprocess.run(
        [*command, *SHORT, f"paths.log_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*/wandb/offline-run-*")
    assert len(list(run_dir.glob("run-*.wandb"))) == 1  # what `wandb sync` uploads
    run = read_wandb_run(run_dir)
    assert run["config"]["regularizer"]["l2"]["strength"] == values["regularizer.l2.strength"]
    assert run["config"]["optimizer"]["lr"] == values["optimizer.lr"]
    assert sweep["metric"]["name"] in run["summary"]


def test_env_file_sets_the_wandb_project_and_entity(tmp_path, monkeypatch):
    """``cp .env.example .env`` and uncomment: the W&B logger's project and entity follow it."""
    from reglab.training.loggers import load_env_file

    for var in ("WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)  # so that teardown also removes what .env sets
    example = (ROOT_DIR / ".env.example").read_text()
    assert "# WANDB_PROJECT=" in example and "# WANDB_ENTITY=" in example
    env = example.replace("# WANDB_PROJECT=reglab", "WANDB_PROJECT=mine")
    (tmp_path / ".env").write_text(env.replace("# WANDB_ENTITY=", "WANDB_ENTITY="))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("reglab.training.loggers.ROOT_DIR", tmp_path)  # not this checkout's
    load_env_file()
    cfg = compose_cfg(["logger=wandb"], tmp_path / "run")
    assert cfg.logger.wandb.project == "mine"
    assert cfg.logger.wandb.entity == "your-team"


# ----------------------------------------------------------------------------- a comparison on W&B


@pytest.mark.slow
def test_a_comparisons_wandb_runs_are_grouped_by_comparison_and_typed_by_stage(tmp_path):
    """The smallest comparison (baseline and l2: one tuning trial each, then 2 tested seeds each)
    logged to W&B offline: each job's run says its comparison (group) and stage (job type)."""
    r = cli(
        "reglab-train",
        "-m",
        "experiment=compare",
        "hydra/launcher=basic",
        "hydra.sweeper.protocol.arms=[l2]",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.protocol.design.looks=[2]",
        "hydra.sweeper.protocol.cocktail.trials=0",
        "hydra.sweeper.protocol.shared.trainer.max_epochs={type:int,low:1,high:1}",
        "data.train_subset=50",
        "logger=wandb",
        f"paths.log_dir={tmp_path}",
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "OMP_NUM_THREADS": "1"},
    )
    (sweep,) = (tmp_path / "sweeps").iterdir()
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna' / 'optuna.db'}")
    (name,) = {s.study_name.partition("/")[0] for s in studies}  # <comparison>/<stage>/<arm>
    jobs = {}  # each launched job's W&B run (one per job, all its members) and their records
    report = []
    for run_dir in sweep.rglob("wandb/offline-run-*"):
        job = run_dir.parents[1]
        if job == sweep:  # the sweep's own run holds the report table
            report.append(read_wandb_run(run_dir)["run"])
            continue
        listed = job / "variants.json"  # a job of several arms or trials lists their folders
        folders = (
            [Path(v["dir"]) for v in json.loads(listed.read_text())] if listed.is_file() else [job]
        )
        members = [
            json.loads(p.read_text()) for f in folders for p in f.glob("seed_*/metrics.json")
        ]
        jobs[job.relative_to(sweep).as_posix()] = (read_wandb_run(run_dir)["run"], members)
    # The basic launcher runs one job at a time: each stage's arms share one job.
    assert sorted(k.split("/")[0] for k in jobs) == ["test", "tune"], sorted(jobs)
    arms = {(m["protocol"]["stage"], m["protocol"]["arm"]) for _, ms in jobs.values() for m in ms}
    assert arms == {(st, a) for st in ("tune", "test") for a in ("baseline", "l2")}
    for subdir, (run, members) in jobs.items():
        assert members, subdir
        assert run["group"] == name == members[0]["protocol"]["comparison"], subdir
        assert (
            {run["job_type"]} == {subdir.split("/")[0]} == {m["protocol"]["stage"] for m in members}
        )
        assert "stage:" + run["job_type"] in set(run["tags"]), subdir

    # Every run trained (a stacked job logs its first member's images), and the report run sits
    # in the comparison's group with its runs.
    failed = [m for _, members in jobs.values() for m in members if m["status"] != "ok"]
    assert [m.get("error") for m in failed] == []
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(run["group"], run["job_type"]) for run in report] == [(name, "report")]
