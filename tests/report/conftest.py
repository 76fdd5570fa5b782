"""Sweep folders written by hand: metrics.json files with chosen numbers, no training.

``fixed_sweep`` is a plain ``-m`` sweep; ``comparison_sweep`` is what ``experiment=compare``
leaves behind (tune-stage trials with validation only, some pruned; test-stage runs on paired
seeds added in looks, two of them failed; the cocktail's trials and test; multirun.yaml with the
Protocol), with numbers chosen so that each arm's verdict is clear-cut and every other figure
can be worked out from the constants below.
"""

import itertools
import json
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

ROOT_DIR = Path(__file__).resolve().parents[2]

BASE = [0.90, 0.92, 0.94]
L2 = [0.96, 0.97, 0.98]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_run(sweep: Path, job: str, name: str, acc: float | None, seed: int = 0, **extra) -> None:
    """One plain run (``acc`` None: a failed one)."""
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
        data = {
            "status": "ok",
            "name": name,
            "seed": seed,
            "data": "digits",
            "model": "mlp",
            "test/acc": acc,
            "gap/acc": 1.0 - acc,
            "test/ece": 0.05,
            "weights/sparsity": 0.1,
            "epochs_trained": 3,
            "wall_time_s": 2.0,
            "history": [{"epoch": e, "val/acc": acc * (e + 1) / 3} for e in range(3)],
        }
    data.update(extra)
    assert not (sweep / job / "metrics.json").exists()
    write_json(sweep / job / "metrics.json", data)


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


# ----------------------------------------------------------------------------- a comparison

CLASSES = 10
LOOKS = [5, 10]
DELTA = 0.01
N_TRIALS = 4
TUNE_SEEDS = [1001, 1002]  # the tuning splits: each trial has a member on each
SEEDS = list(range(1, 11))
BASE_TEST = [0.900, 0.910, 0.920, 0.905, 0.915, 0.895, 0.925, 0.910, 0.900, 0.920]
BASE_VAL = 0.30  # every baseline seed's val/loss_best
L2_KEY, ZCA_KEY, DROP_KEY = (
    "regularizer.l2.strength",
    "regularizer.zca.eps",
    "regularizer.dropout.p",
)
# Per arm: the per-seed test differences from the baseline (their length: the seeds it ran, 5
# for an arm decided at the first look), its val/loss_best on every seed, its tuned params and
# searched space. l2 is clearly better on test; dropout is the best on validation but undecided
# on test (the two disagree: the best single technique must be dropout); zca is equivalent
# within delta, tuned at the top of its log range; flip is clearly worse; noise failed on two
# seeds, which count at chance (1/CLASSES); the cocktail is better than the baseline.
ARMS = {
    "l2": (
        [0.050, 0.048, 0.052, 0.049, 0.051],
        0.25,
        {L2_KEY: 1e-4},
        {L2_KEY: {"type": "float", "low": 1e-6, "high": 1e-1, "log": True}},
    ),
    "dropout": (
        [0.03, -0.03, 0.02, -0.025, 0.01, -0.01, 0.02, -0.02, 0.0, 0.015],
        0.20,
        {DROP_KEY: 0.3},
        {DROP_KEY: {"type": "float", "low": 0.0, "high": 0.7}},
    ),
    "zca": (
        [0.001, -0.001, 0.0005, -0.0005, 0.0, 0.001, -0.001, 0.0, 0.0005, -0.0005],
        0.30,
        {ZCA_KEY: 0.098},
        {ZCA_KEY: {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
    ),
    "flip": ([-0.050, -0.052, -0.048, -0.051, -0.049], 0.40, {}, {}),
    "noise": ([0.01] * 10, 0.29, {}, {}),
    "cocktail": (
        [0.040, 0.042, 0.038, 0.041, 0.039],
        0.22,
        {L2_KEY: 1e-4, DROP_KEY: 0.3, "use.l2": True},
        {},
    ),
}
FAILED_SEEDS = {"noise": [3, 7]}
PRUNED = {"l2": 1, "dropout": 2}  # tuning trials stopped by the pruner, per arm


def record(stage: str, arm: str, trial=None, params=None, space=None, look=None) -> dict:
    return {
        "comparison": "compare",
        "stage": stage,
        "arm": arm,
        "trial": trial,
        "params": params or {},
        "space": space or {},
        "look": look,
    }


def history(train_end: float, val_end: float, epochs: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "train/acc": train_end * (e + 1) / epochs,
            "val/acc": val_end * (e + 1) / epochs,
        }
        for e in range(epochs)
    ]


def arm_test(arm: str) -> list[float | None]:
    """The arm's test/acc per seed it ran (None: failed)."""
    diffs = ARMS[arm][0] if arm != "baseline" else [0.0] * len(SEEDS)
    return [
        None if SEEDS[i] in FAILED_SEEDS.get(arm, []) else BASE_TEST[i] + d
        for i, d in enumerate(diffs)
    ]


def write_comparison(sweep: Path) -> Path:
    """Stacked jobs (``<job>/seed_<s>/metrics.json``), one per stage and arm."""
    arms = {"baseline": ([0.0] * len(SEEDS), BASE_VAL, {}, {}), **ARMS}
    for arm, (_, val, params, space) in arms.items():
        tune_stage = "cocktail_tune" if arm == "cocktail" else "tune"
        for trial, split in itertools.product(range(N_TRIALS), TUNE_SEEDS):
            # A trial trains one member per tuning split; a pruned trial: its first member.
            pruned = trial < PRUNED.get(arm, 0) and split == TUNE_SEEDS[0]
            tried = {
                k: v * (2 ** (trial - 1)) if isinstance(v, float) else v for k, v in params.items()
            }
            write_json(
                sweep / f"{tune_stage}_{arm}_{trial}" / f"seed_{split}" / "metrics.json",
                {
                    "status": "ok",
                    "name": arm,
                    "seed": split,
                    "num_classes": CLASSES,
                    "data": "digits",
                    "model": "mlp",
                    "val/loss_best": val + 0.01 * (trial != 1),
                    "tune/pruned": float(pruned),
                    "history": history(0.99, 0.9),
                    "protocol": record(tune_stage, arm, trial, tried, space),
                },
            )
        stage = "cocktail_test" if arm == "cocktail" else "test"
        for i, acc in enumerate(arm_test(arm)):
            seed = SEEDS[i]
            data = {
                "status": "ok",
                "name": arm,
                "seed": seed,
                "num_classes": CLASSES,
                "data": "digits",
                "model": "mlp",
                "test/acc": acc,
                "gap/acc": 0.05,
                "val/loss_best": val + 0.001 * i,
                "history": history(0.99, acc or 0.0),
                "protocol": record(stage, arm, 1, params, space, look=int(i >= LOOKS[0])),
            }
            if acc is None:
                data = {
                    **data,
                    "status": "failed",
                    "error": "boom: diverged",
                    "test/acc": None,
                    "val/loss_best": None,
                    "history": [],
                }
            write_json(sweep / f"{stage}_{arm}" / f"seed_{seed}" / "metrics.json", data)
    protocol = {
        "metric": "test/acc",
        "tune_seeds": TUNE_SEEDS,
        "design": {
            "looks": LOOKS,
            "alpha": 0.05,
            "delta": DELTA,
            "power": 0.8,
            "spending": "pocock",
        },
    }
    cfg = {"hydra": {"sweeper": {"n_trials": N_TRIALS, "protocol": protocol}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(cfg))
    return sweep


@pytest.fixture
def comparison_sweep(tmp_path) -> Path:
    return write_comparison(tmp_path / "comparison")


def run_notebook(sweep: Path, tmp_path: Path, monkeypatch) -> tuple[list, str]:
    """Execute notebooks/compare_techniques.ipynb on ``sweep``; its image outputs and its text.
    Fails if any cell raised."""
    monkeypatch.setenv("REGLAB_REPORT_DIR", str(sweep))
    nb = nbformat.read(ROOT_DIR / "notebooks" / "compare_techniques.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    return images, text
