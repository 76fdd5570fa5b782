"""What the sweeper adds to a job: protocol, tags, W&B job type, the pruning callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from reglab.tune.jobs import Job, Runner
from reglab.tune.studies import create, open_storage, storage_url

from ..conftest import compose_cfg, read_wandb_run, train
from ..test_tracking import TINY_WANDB, offline_runs


def runner_for(overrides: list[str], tmp_path) -> Runner:
    cfg = compose_cfg(overrides, tmp_path / "master")
    OmegaConf.set_struct(cfg, False)
    cfg.hydra = {"sweep": {"dir": str(tmp_path / "sweep")}}
    url = storage_url(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    create(open_storage(url), "cmp/tune/l2", "maximize", None, None).ask()  # trial 0
    return Runner(SimpleNamespace(config=cfg), [], url)


def test_a_tuning_job_is_tagged_validated_only_and_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    runner = runner_for(["logger=wandb", "tags=[compare]"], tmp_path)
    job = Job("tune", "l2", ["regularizer=[l2]", "regularizer.l2.strength=0.003"],
              {"regularizer.l2.strength": 0.003}, "cmp/tune/l2", 0)  # fmt: skip
    overrides = runner.overrides(job)
    assert "++trainer.limit_test_batches=0" in overrides
    out = tmp_path / "run"
    summary = train([*TINY_WANDB, *overrides], out)
    assert summary["protocol"] == {"stage": "tune", "technique": "l2", "trial": 0,
                                   "params": {"regularizer.l2.strength": 0.003}, "study": "cmp/tune/l2"}  # fmt: skip
    assert not any(k.startswith("test/") for k in summary) and summary["tune/pruned"] == 0.0

    (run_dir,) = offline_runs(out)
    rec = read_wandb_run(run_dir)
    assert {"compare", "stage:tune", "technique:l2", "trial:0"} <= set(rec["run"]["tags"])
    assert rec["run"]["job_type"] == "tune"
    assert rec["config"]["protocol"]["stage"] == "tune" and rec["config"]["protocol"]["trial"] == 0
    assert rec["config"]["regularizer"]["l2"]["strength"] == pytest.approx(0.003)


def test_a_test_job_has_no_pruning_and_no_trial(tmp_path):
    runner = runner_for(["logger=csv"], tmp_path)
    overrides = runner.overrides(
        Job("test", "baseline", ["seed=3", "data.split_seed=3"], {}, "cmp/tune/baseline")
    )
    assert not any("optuna_pruning" in o or "limit_test_batches" in o for o in overrides)
    assert "tags=['stage:test','technique:baseline']" in overrides
    assert not any(o.startswith("++logger.") for o in overrides)  # no W&B logger: no job type
