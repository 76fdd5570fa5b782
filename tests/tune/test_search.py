"""A plain search (hparams_search=...): validation only, "nothing to do" only when the SAME
search is complete, a study name never reused by a different space, one driver at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ..conftest import cli, kill_when, popen_train

SEARCH = [
    "-m",
    "hparams_search=optuna",
    "hydra/launcher=basic",
    "hydra.sweeper.n_trials=2",
    "trainer.max_epochs=2",
    "data.train_subset=50",
]
LR = "+hydra.sweeper.search.optimizer={lr:{type:float,low:1e-4,high:1e-2,log:true}}"


def results(log_dir: Path) -> list[dict]:
    return [
        yaml.safe_load(p.read_text()) for p in log_dir.glob("sweeps/*/optimization_results.yaml")
    ]


@pytest.mark.slow
def test_a_search_is_validation_only_and_continues_not_repeats(tmp_path):
    r = cli("reglab-train", *SEARCH, f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    (first,) = results(tmp_path)
    assert set(first["best_params"]) == {"regularizer.l2.strength"}
    metrics = list(tmp_path.glob("sweeps/*/trials/*/seed_*/metrics.json"))
    assert len(metrics) == 2 and not any('"test/acc"' in p.read_text() for p in metrics)

    again = cli("reglab-train", *SEARCH, f"paths.log_dir={tmp_path}")
    assert again.returncode == 0 and "nothing to do" in again.stderr

    # Another space is another search, under a name of its own: it runs.
    other = cli("reglab-train", *SEARCH, LR, f"paths.log_dir={tmp_path}")
    assert other.returncode == 0 and "nothing to do" not in other.stderr
    assert any("optimizer.lr" in r["best_params"] for r in results(tmp_path))


@pytest.mark.slow
def test_a_name_used_by_another_space_is_refused_and_one_driver_runs_it(tmp_path):
    named = [*SEARCH, "hydra.sweeper.study_name=mine", f"paths.log_dir={tmp_path}"]
    assert cli("reglab-train", *named).returncode == 0
    r = cli("reglab-train", *named, LR)
    assert r.returncode != 0
    assert "study_name=mine was used by a different search" in r.stderr.strip().splitlines()[-1]

    busy = [*SEARCH, "hydra.sweeper.study_name=busy", "hydra.sweeper.n_trials=50"]
    log_dir = tmp_path / "busy"  # its own: sweep.log appears once the first driver holds the lock
    proc = popen_train(*busy, f"paths.log_dir={log_dir}")
    try:
        kill_when(
            proc,
            lambda: any(log_dir.glob("sweeps/*/sweep.log")) and _second_is_refused(busy, log_dir),
            "a second driver refused",
        )
    finally:
        proc.kill()


def _second_is_refused(busy: list[str], log_dir: Path) -> bool:
    r = cli("reglab-train", *busy, f"paths.log_dir={log_dir}")
    return r.returncode != 0 and "is being run by another process" in r.stderr
