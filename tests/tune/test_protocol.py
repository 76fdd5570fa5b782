"""A tiny comparison end to end: tune, paired test seeds, cocktail, protocol.json, rerun."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ..conftest import cli

SEEDS = [1, 2]
# The basic launcher runs the jobs one after the other in the sweeper's process: the quickest
# for a dozen tiny runs. min_delta=-1 lets every technique into the cocktail.
COMMAND = [
    "reglab-train", "-m", "experiment=compare", "hydra/launcher=basic", "+technique=l2,batch_norm",
    f"seed={','.join(map(str, SEEDS))}", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.protocol.cocktail.trials=2", "hydra.sweeper.protocol.cocktail.min_delta=-1",
    "trainer.max_epochs=2", "data.train_subset=50",
]  # fmt: skip


def load_runs(sweep: Path) -> list[dict]:
    runs = []
    for path in sorted(sweep.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        m["config"] = yaml.safe_load((path.parent / ".hydra" / "config.yaml").read_text())
        runs.append(m)
    return runs


def of(runs, stage, technique=None):
    return [r for r in runs if r["protocol"]["stage"] == stage
            and technique in (None, r["protocol"]["technique"])]  # fmt: skip


@pytest.mark.slow
def test_tiny_comparison_end_to_end(tmp_path):
    r = cli(*COMMAND, f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    record = json.loads((sweep / "protocol.json").read_text())
    runs = load_runs(sweep)
    (setting,) = record["settings"]
    assert record["complete"] and record["seeds"] == SEEDS
    assert record["techniques"] == ["baseline", "l2", "batch_norm"]
    assert record["budget"] == {"tune": 2, "cocktail": 2, "per_round": 2, "cocktail_per_round": 4}
    assert setting["stages"] == ["tune", "test", "cocktail"]

    # Stage 1: the same budget for a technique with a space, a single trial without one;
    # validation only, on the tuning split (seed 0), never tested.
    storage = record["storage"]
    tune = of(runs, "tune")
    assert sorted(r["protocol"]["technique"] for r in tune) == [
        "baseline",
        "batch_norm",
        "l2",
        "l2",
    ]
    for run in tune:
        assert run["config"]["seed"] == 0 and run["config"]["data"]["split_seed"] == 0
        assert not any(k.startswith("test/") for k in run) and "tune/pruned" in run
        assert {"stage:tune", f"technique:{run['protocol']['technique']}"} <= set(
            run["config"]["tags"]
        )
    l2 = optuna.load_study(study_name=setting["tune"]["l2"]["study"], storage=storage)
    assert len(l2.trials) == 2 and all(t.state == TrialState.COMPLETE for t in l2.trials)
    best = max(l2.trials, key=lambda t: t.value)
    assert setting["tuned"]["l2"] == best.params == setting["tune"]["l2"]["best_params"]
    assert setting["tune"]["batch_norm"]["n_trials"] == 1 and setting["tuned"]["batch_norm"] == {}

    # Stage 2: every technique at its tuned values, on each paired seed: the seed also draws
    # the split (digits: the test split too); this is where the test set is used.
    test = of(runs, "test")
    assert sorted((r["protocol"]["technique"], r["seed"]) for r in test) == sorted(
        (t, s) for t in record["techniques"] for s in SEEDS
    )
    for run in test:
        assert run["config"]["data"]["split_seed"] == run["seed"] and "test/acc" in run
        assert run["protocol"]["params"] == setting["tuned"][run["protocol"]["technique"]]
        for key, value in run["protocol"]["params"].items():
            group, name, knob = key.split(".")
            assert run["config"][group][name][knob] == pytest.approx(value)

    # Stage 3: members chosen on stage-2 *validation*, paired by seed, best first.
    val = {(r["protocol"]["technique"], r["seed"]): r["val/acc"] for r in test}
    deltas = {t: mean(val[t, s] - val["baseline", s] for s in SEEDS) for t in ("l2", "batch_norm")}
    assert setting["validation_delta"] == pytest.approx(deltas)
    assert setting["cocktail"]["members"] == sorted(deltas, key=lambda t: -deltas[t])
    cocktail_tune = of(runs, "cocktail_tune")
    assert len(cocktail_tune) == 2 and not any("test/acc" in r for r in cocktail_tune)
    first = min(cocktail_tune, key=lambda r: r["protocol"]["trial"])
    assert sorted(first["techniques"]["regularizer"]) == [
        "batch_norm",
        "l2",
    ]  # all on, at tuned values
    assert first["protocol"]["params"] == setting["tuned"]["l2"]
    cocktail_test = of(runs, "cocktail_test")
    assert sorted(r["seed"] for r in cocktail_test) == SEEDS
    assert all(sorted(r["techniques"]["regularizer"]) == sorted(setting["cocktail"]["techniques"])
               for r in cocktail_test)  # fmt: skip

    # The same command again, after it finished, is a new comparison (a replicate) in a new
    # folder; continuing a killed one is tested in test_shared.py.
    again = cli(*COMMAND, f"paths.log_dir={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    (other,) = [p for p in (tmp_path / "sweeps").iterdir() if p != sweep]
    assert json.loads((other / "protocol.json").read_text())["name"] == f"{record['name']}.2"
    assert len(list(other.glob("*/metrics.json"))) == len(runs)
