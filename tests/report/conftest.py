"""Sweep folders written by hand: metrics.json files with chosen accuracies, no training.

``fixed_sweep`` is a plain ``-m`` sweep; ``protocol_sweep`` is what the comparison protocol leaves
behind (stage-1 trials, some pruned, without test metrics; stage-2 runs on paired seeds; the
cocktail's search and test; protocol.json), with numbers chosen so every statistic can be worked
out by hand in the tests.
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from reglab.core.paths import ROOT_DIR

BASE = [0.90, 0.92, 0.94]
L2 = [0.96, 0.97, 0.98]


def write_run(sweep: Path, job: str, name: str, acc: float | None, seed: int = 0, **extra) -> None:
    run = sweep / job
    run.mkdir(parents=True)
    if acc is None:
        data = {
            "status": "failed",
            "name": name,
            "seed": seed,
            "data": "digits",
            "model": "mlp",
            "error": "boom: diverged",
        }
    else:
        data = {"status": "ok", "name": name, "seed": seed, "data": "digits", "model": "mlp",
                "test/acc": acc, "gap/acc": 1.0 - acc, "test/ece": 0.05, "weights/sparsity": 0.1,
                "epochs_trained": 3, "wall_time_s": 2.0,
                "history": [{"epoch": e, "val/acc": acc * (e + 1) / 3} for e in range(3)]}  # fmt: skip
    data.update(extra)
    (run / "metrics.json").write_text(json.dumps(data))


@pytest.fixture
def fixed_sweep(tmp_path) -> Path:
    """baseline and l2 with three seeds each, dropout with one, and one failed l1 run."""
    sweep = tmp_path / "sweep"
    for i, acc in enumerate(BASE):
        write_run(sweep, f"{i}_baseline", "baseline", acc, seed=i)
    for i, acc in enumerate(L2):
        write_run(sweep, f"{3 + i}_l2", "l2", acc, seed=i)
    write_run(sweep, "6_dropout", "dropout", 0.91, seed=0)
    write_run(sweep, "7_l1", "l1", None, seed=0)
    return sweep


# ----------------------------------------------------------------------------- the protocol

SEEDS = [1, 2, 3, 4, 5]
BASELINE_TEST = [0.900, 0.910, 0.920, 0.905, 0.915]
# Per-seed differences from the baseline, picked for the tests: l2 clearly better; dropout
# p < 0.05 alone but not after Holm's correction (and one tie); flip clearly worse;
# early_stopping identical on every seed; the cocktail better than the baseline but not than l2.
DIFFS = {
    "l2": [0.030, 0.025, 0.035, 0.030, 0.020],
    "dropout": [0.010, 0.020, 0.000, 0.015, 0.005],
    "flip": [-0.030, -0.040, -0.035, -0.030, -0.045],
    "early_stopping": [0.0, 0.0, 0.0, 0.0, 0.0],
    "cocktail": [0.035, 0.030, 0.030, 0.040, 0.025],
}
NAMES = {"cocktail": "dropout+l2"}
L2_KEY, DROPOUT_KEY, PATIENCE_KEY = (
    "regularizer.l2.strength",
    "regularizer.dropout.p",
    "regularizer.early_stopping.patience",
)
# Stage 1: (params, validation score, status) per trial. The chosen values: l2 1e-4, dropout 0.3,
# early_stopping 5. Dropout tunes better than the baseline on validation (0.942 vs 0.930) but
# does not hold up on test: the report must say so.
TRIALS = {
    "baseline": [({}, 0.930, "ok")],
    "l2": [({L2_KEY: 1e-6}, 0.931, "ok"), ({L2_KEY: 1e-4}, 0.945, "ok"),
           ({L2_KEY: 1e-2}, 0.938, "ok"), ({L2_KEY: 1e-1}, 0.700, "pruned")],
    "dropout": [({DROPOUT_KEY: 0.1}, 0.935, "ok"), ({DROPOUT_KEY: 0.3}, 0.942, "ok"),
                ({DROPOUT_KEY: 0.5}, 0.936, "ok"), ({DROPOUT_KEY: 0.7}, 0.900, "pruned")],
    "early_stopping": [({PATIENCE_KEY: 2}, 0.925, "ok"), ({PATIENCE_KEY: 5}, 0.930, "ok")],
    "flip": [({}, 0.910, "ok")],
}  # fmt: skip
COCKTAIL_TRIALS = [({L2_KEY: 1e-4, DROPOUT_KEY: 0.3}, 0.950, "ok"),
                   ({L2_KEY: 1e-3, DROPOUT_KEY: 0.5}, 0.940, "ok")]  # fmt: skip
TUNED = {"baseline": {}, "l2": {L2_KEY: 1e-4}, "dropout": {DROPOUT_KEY: 0.3},
         "early_stopping": {PATIENCE_KEY: 5}, "flip": {}, "cocktail": COCKTAIL_TRIALS[0][0]}  # fmt: skip
SPACES = {"l2": {L2_KEY: {"low": 1e-6, "high": 1e-1, "log": True}},
          "dropout": {DROPOUT_KEY: {"low": 0.0, "high": 0.7, "log": False}},
          "early_stopping": {PATIENCE_KEY: {"low": 1, "high": 8, "type": "int"}}}  # fmt: skip


def test_acc(technique: str) -> list[float]:
    diffs = DIFFS.get(technique, [0.0] * len(SEEDS))
    return [b + d for b, d in zip(BASELINE_TEST, diffs, strict=True)]


test_acc.__test__ = False  # a helper, not a test


def study_of(technique: str) -> str:
    return "compare/cocktail" if technique == "cocktail" else f"compare/tune/{technique}"


def protocol_of(stage: str, technique: str, trial, params: dict) -> dict:
    return {"stage": stage, "technique": technique, "trial": trial, "params": params,
            "study": study_of(technique)}  # fmt: skip


def write_trial(sweep: Path, job: str, stage: str, technique: str, trial: int, params: dict,
                val: float, status: str) -> None:  # fmt: skip
    """A tuning trial as reglab.tune writes it: validation only (stage 1 never touches the test
    set), tested with its final weights, so its score is val/acc. A pruned one stopped after its
    first epoch and says so with ``tune/pruned``."""
    run = sweep / job
    run.mkdir(parents=True)
    epochs = 1 if status == "pruned" else 3
    data = {"status": "ok", "name": NAMES.get(technique, technique), "seed": 0, "data": "digits",
            "model": "mlp", "val/acc": val, "val/acc_best": val + 0.002, "tested": "final weights",
            "epochs_trained": epochs, "wall_time_s": 1.0, "tune/pruned": float(status == "pruned"),
            "protocol": protocol_of(stage, technique, trial, params),
            "history": [{"epoch": e, "val/acc": val} for e in range(epochs)]}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(data))


def curves(train_end: float, val_end: float, epochs: int = 4) -> list[dict]:
    """A run's history rising linearly to its final train and validation accuracy."""
    return [{"epoch": e, "train/acc": train_end * (e + 1) / epochs,
             "val/acc": val_end * (e + 1) / epochs} for e in range(epochs)]  # fmt: skip


def protocol_json() -> dict:
    """protocol.json as reglab.tune writes it for one setting."""
    tune = {}
    for t, trials in TRIALS.items():
        done = [(p, v) for p, v, s in trials if s == "ok"]
        best = max(range(len(done)), key=lambda i: done[i][1])
        tune[t] = {"study": study_of(t), "n_trials": len(trials),
                   "trials": {"complete": len(done), "pruned": len(trials) - len(done), "fail": 0},
                   "best_trial": best, "best_value": done[best][1], "best_params": done[best][0],
                   "space": SPACES.get(t, {})}  # fmt: skip
    cocktail = {"members": ["l2", "dropout"], "rule": "mean paired stage-2 validation ...",
                "study": study_of("cocktail"), "best_value": COCKTAIL_TRIALS[0][1],
                "best_params": {"use.l2": True, "use.dropout": True, **TUNED["cocktail"]},
                "techniques": ["l2", "dropout"]}  # fmt: skip
    return {"name": "compare", "objective": "tested", "direction": "maximize",
            "budget": {"tune": 4, "cocktail": 2, "per_round": 4}, "tune_seed": 0, "seeds": SEEDS,
            "techniques": list(TRIALS),
            "settings": [{"label": "", "overrides": [], "stages": ["tune", "test", "cocktail"],
                          "tune": tune, "tuned": {t: TUNED[t] for t in TRIALS},
                          "cocktail": cocktail}],
            "complete": True}  # fmt: skip


def write_protocol_sweep(sweep: Path, with_protocol_json: bool = True) -> Path:
    job = iter(range(1000))
    for technique, trials in TRIALS.items():
        for trial, (params, val, status) in enumerate(trials):
            write_trial(sweep / "tune", f"{next(job)}_{technique}", "tune", technique, trial,
                        params, val, status)  # fmt: skip
    for trial, (params, val, status) in enumerate(COCKTAIL_TRIALS):
        write_trial(sweep / "cocktail_tune", f"{next(job)}_cocktail", "cocktail_tune", "cocktail",
                    trial, params, val, status)  # fmt: skip
    for technique in ["baseline", *DIFFS]:
        stage = "cocktail_test" if technique == "cocktail" else "test"
        # The baseline overfits (train 1.0); a working regularizer closes the gap.
        train_end = 1.0 if technique == "baseline" else 0.97
        for seed, acc in zip(SEEDS, test_acc(technique), strict=True):
            write_run(sweep / stage, f"{next(job)}_{technique}_{seed}",
                      NAMES.get(technique, technique), acc, seed=seed,
                      protocol=protocol_of(stage, technique, None, TUNED[technique]),
                      history=curves(train_end, acc))  # fmt: skip
    if with_protocol_json:
        (sweep / "protocol.json").write_text(json.dumps(protocol_json()))
    return sweep


@pytest.fixture
def protocol_sweep(tmp_path) -> Path:
    return write_protocol_sweep(tmp_path / "protocol_sweep")


def run_notebook(sweep: Path, tmp_path: Path, monkeypatch) -> tuple[list, str]:
    """Execute notebooks/compare_techniques.ipynb on ``sweep``; its image outputs and its text.
    Fails if any cell raised."""
    monkeypatch.setenv("REGLAB_REPORT_DIR", str(sweep))
    nb = nbformat.read(ROOT_DIR / "notebooks" / "compare_techniques.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    return images, text
