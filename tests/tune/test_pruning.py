"""The pruning callback: Optuna's own pruner, fed only the trials of earlier rounds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from reglab.tune.pruning import PruningCallback, reference, study_of

MEDIAN = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1}


def fake_trainer(epoch: int, value: float):
    return SimpleNamespace(
        sanity_checking=False,
        current_epoch=epoch,
        callback_metrics={"val/loss": torch.tensor(value)},
        should_stop=False,
    )


def run(tmp_path, curves, values, pruner=MEDIAN):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(reference(pruner, "minimize", curves)))
    cb = PruningCallback(str(ref), str(tmp_path / "job" / "pruned.json"))
    cb.on_fit_start(None, None)
    for epoch, value in enumerate(values):
        trainer = fake_trainer(epoch, value)
        cb.on_validation_end(trainer, None)
        if trainer.should_stop:
            return epoch
    return None


def test_a_losing_trial_is_stopped_after_the_warm_up(tmp_path):
    good = {0: 1.0, 1: 0.5, 2: 0.3, 3: 0.2}
    curves = [("COMPLETE", 0.2, good), ("COMPLETE", 0.25, good)]
    assert run(tmp_path, curves, [2.0, 1.9, 1.8, 1.7]) == 1  # epoch 0 is the warm-up
    assert json.loads((tmp_path / "job" / "pruned.json").read_text()) == {"epoch": 1}


def test_a_winning_trial_and_too_few_references_go_on(tmp_path):
    good = {0: 1.0, 1: 0.5, 2: 0.3}
    curves = [("COMPLETE", 0.3, good), ("COMPLETE", 0.3, good)]
    assert run(tmp_path, curves, [0.9, 0.4, 0.2]) is None
    assert run(tmp_path, curves[:1], [2.0, 2.0, 2.0]) is None  # n_startup_trials=2
    assert not (tmp_path / "job" / "pruned.json").exists()


def test_the_rebuilt_study_holds_the_references(tmp_path):
    curves = [("COMPLETE", 0.2, {0: 1.0}), ("PRUNED", None, {0: 3.0})]
    study = study_of(reference(MEDIAN, "minimize", curves))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert study.trials[1].intermediate_values == {0: 3.0}


def test_runs_that_overfit_are_compared_by_their_best_so_far(tmp_path):
    """Validation loss falls, then rises as a run overfits. Compared raw, a trial's best so far
    beat the others' risen values at the first step past the warm-up, and the median pruner
    pruned none of 200 trials in a full comparison."""
    overfit = {0: 1.0, 1: 0.4, 2: 0.3, 3: 0.5, 4: 0.7}  # best 0.3 at epoch 2
    curves = [("COMPLETE", 0.3, overfit), ("COMPLETE", 0.3, overfit)]
    pruner = {**MEDIAN, "n_warmup_steps": 3}  # first judged at epoch 3, where they rose to 0.5

    # Worse than both all along (best 0.45 against their 0.3), yet below their raw 0.5.
    assert run(tmp_path, curves, [1.2, 0.9, 0.8, 0.45, 0.6], pruner) == 3
    assert run(tmp_path, curves, [1.0, 0.35, 0.25, 0.3, 0.4], pruner) is None  # goes on
    assert reference(pruner, "minimize", curves)["trials"][0]["curve"] == {
        0: 1.0,
        1: 0.4,
        2: 0.3,
        3: 0.3,
        4: 0.3,
    }
