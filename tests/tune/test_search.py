"""``reglab-train -m hparams_search=...``: a single search on the sweeper's machinery."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ..conftest import cli

EPOCHS = 4
# Real epochs (not fast_dev_run, which would force a test batch and report no epochs).
TINY = ["logger=csv", "callbacks=none", "trainer.accelerator=cpu", f"trainer.max_epochs={EPOCHS}",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "num_threads=1"]  # fmt: skip


def runs_of(folder: Path) -> dict[int, dict]:
    """{trial number: metrics.json} of a sweep folder."""
    out = {}
    for path in folder.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        out[m["protocol"]["trial"]] = m
    return out


@pytest.mark.slow
def test_pruned_trials_stop_early_and_never_see_the_test_set(tmp_path):
    """A pruner that prunes every trial after its second epoch: each trial is PRUNED in the
    study and trained fewer epochs than max_epochs; no trial ran a test batch."""
    r = cli(
        "reglab-train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY,
        "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=2.0",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="digits_mlp_regularizer.l2.strength",
                              storage=f"sqlite:///{tmp_path}/optuna/optuna.db")  # fmt: skip
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    (sweep,) = (tmp_path / "sweeps").iterdir()
    runs = runs_of(sweep)
    for t in study.trials:
        run = runs[t.number]
        assert sorted(t.intermediate_values) == [0, 1]
        assert run["status"] == "ok" and run["tune/pruned"] == 1.0
        assert run["epochs_trained"] < EPOCHS and len(run["history"]) == 2
        assert not any(k.startswith("test/") for k in run), sorted(run)
        assert run["protocol"]["params"] == t.params
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 0, "pruned": 2, "fail": 0}


@pytest.mark.slow
def test_searching_the_declared_spaces_of_the_selected_techniques(tmp_path):
    r = cli("reglab-train", "-m", "hparams_search=techniques", "regularizer=[l2,dropout]",
            "hydra.sweeper.n_trials=2", *TINY, f"paths.log_dir={tmp_path}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["study"] == "digits_mlp_regularizer.dropout.p+regularizer.l2.strength"
    assert set(results["space"]) == {"regularizer.l2.strength", "regularizer.dropout.p"}
    for run in runs_of(sweep).values():
        assert run["techniques"]["regularizer"] == ["dropout", "l2"]
        assert set(run["protocol"]["params"]) == set(results["space"])
        assert 0.0 <= run["protocol"]["params"]["regularizer.dropout.p"] <= 0.7
    assert results["trials"]["complete"] == 2
