"""Ensembles of a sweep's checkpoints: each row's runs (the seeds or folds of one technique in one
setting) evaluated together, mean of softmax, against their best single member.

``write_ensemble`` re-evaluates the checkpoints and writes ``ensemble.json``; ``load_ensemble``
reads it back as a table for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from reglab.core.io import write_json_atomic
from reglab.core.names import TEST_ACC, TEST_ECE
from reglab.report.runs import compared, load_runs

ENSEMBLE_FILE = "ensemble.json"
# Columns of load_ensemble's table that the renderers show.
ENSEMBLE_ACC, ENSEMBLE_ECE = f"ensemble {TEST_ACC}", f"ensemble {TEST_ECE}"
BEST_MEMBER_ACC, MEAN_MEMBER_ACC = f"best member {TEST_ACC}", f"mean member {TEST_ACC}"
MEAN_MEMBER_ECE = f"mean member {TEST_ECE}"


def checkpoint_of(run_dir: Path, metrics: dict) -> Path | None:
    """The weights the run was tested with: the best checkpoint, or last.ckpt for final weights."""
    best = metrics.get("best_checkpoint")
    if best and metrics.get("tested") == "best checkpoint":
        # The recorded path, or the same file where the sweep folder was moved to.
        for p in (Path(best), run_dir / "checkpoints" / Path(best).name):
            if p.is_file():
                return p
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def write_ensemble(sweep_dir: str | Path) -> list[dict]:
    """Evaluate the ensemble (mean of softmax) of each row's runs; write ``ensemble.json``."""
    # Here, not at the top: evaluating loads torch, Lightning, the data and the models, which
    # reading and plotting a report never needs.
    from reglab.eval import evaluate

    sweep_dir = Path(sweep_dir)
    runs = compared(load_runs(sweep_dir))  # a protocol's tuning trials are no members
    entries = []
    for (setting, technique), group in runs[runs["status"] == "ok"].groupby(
        ["setting", "technique"], sort=False
    ):
        members = {}  # checkpoint path -> run folder
        for _, r in group.iterrows():
            ckpt = checkpoint_of(sweep_dir / r["run"], r.to_dict())
            if ckpt is not None:
                members[str(ckpt)] = r["run"]
        if len(members) < 2:
            continue
        result = evaluate(list(members))
        entries.append(
            {
                "setting": setting,
                "technique": technique,
                "members": [
                    {"run": members[p], "checkpoint": p, **m} for p, m in result["members"].items()
                ],
                "ensemble": result["ensemble"],
                "best_member": result["best_member"],
            }
        )
    write_json_atomic(sweep_dir / ENSEMBLE_FILE, {"ensembles": entries})
    return entries


def load_ensemble(sweep_dir: str | Path) -> pd.DataFrame:
    """ensemble.json as a table: ensemble vs best (and mean) single member, per row."""
    path = Path(sweep_dir) / ENSEMBLE_FILE
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for e in json.loads(path.read_text()).get("ensembles", []):
        accs = [m[TEST_ACC] for m in e["members"]]
        ens_acc = e["ensemble"][TEST_ACC]
        rows.append(
            {
                "setting": e["setting"],
                "technique": e["technique"],
                "members": len(accs),
                ENSEMBLE_ACC: ens_acc,
                BEST_MEMBER_ACC: max(accs),
                MEAN_MEMBER_ACC: float(np.mean(accs)),
                "ensemble - best": ens_acc - max(accs),
                ENSEMBLE_ECE: e["ensemble"][TEST_ECE],
                MEAN_MEMBER_ECE: float(np.mean([m[TEST_ECE] for m in e["members"]])),
            }
        )
    return pd.DataFrame(rows)
