"""A sweep folder written by hand: metrics.json files with chosen accuracies, no training."""

import json
from pathlib import Path

import pytest

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
