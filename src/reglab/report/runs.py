"""Reading a sweep folder: one row per run, from its ``metrics.json`` and ``.hydra/overrides.yaml``.

Each run is labelled with a *setting* (data/model plus any other override that differs between
jobs, such as ``data.train_subset``) and a *technique* (its ``name``, refined by technique knobs
that differ, such as ``regularizer.l2.strength``): the report's rows are these pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from reglab.core.names import GAP_ACC, SPARSITY, TEST_ACC, TEST_ECE

# The per-run fields the report summarizes, in the order of its columns.
METRICS = (TEST_ACC, GAP_ACC, TEST_ECE, SPARSITY, "epochs_trained", "wall_time_s")
# Overrides that are what a row compares (technique) or what it averages over (seed, fold): they
# never define a setting of their own.
REPLICATE_KEYS = {"seed", "data.fold"}
TECHNIQUE_KEYS = {"technique", "regularizer", "augmentation"}
NAMED_KEYS = {"data", "model", "experiment", "hparams_search", "debug", "logger", "callbacks"}


def read_overrides(run_dir: Path) -> dict[str, str]:
    """The command-line overrides of one job (``key=value``; ``+``/``~`` prefixes dropped)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def load_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per ``metrics.json`` under ``sweep_dir``: its fields plus ``run`` (the job folder,
    relative), ``setting`` and ``technique`` (the row label in the report)."""
    sweep_dir = Path(sweep_dir)
    records, overrides = [], []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            data = {"status": "failed", "error": f"unreadable metrics.json: {e}"}
        run_dir = path.parent
        data["run"] = str(run_dir.relative_to(sweep_dir)) or "."
        records.append(data)
        overrides.append(read_overrides(run_dir))
    if not records:
        return pd.DataFrame(columns=["run", "status", "name", "setting", "technique", *METRICS])
    df = pd.DataFrame(records)
    for col in ("status", "name", "data", "model", "error", "seed", "fold", *METRICS):
        if col not in df:
            df[col] = np.nan
    df["status"] = df["status"].fillna("failed")
    df["name"] = df["name"].fillna("?")
    df[["data", "model"]] = df[["data", "model"]].fillna("?")
    df["setting"], df["technique"] = _labels(df, overrides)
    return df


def _labels(df: pd.DataFrame, overrides: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    # Overrides that differ between jobs: technique knobs (regularizer.l2.strength=...) refine the
    # technique's label, everything else (data.train_subset=..., optimizer.lr=...) the setting.
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    settings, techniques = [], []
    for (_, row), o in zip(df.iterrows(), overrides, strict=True):
        setting = [f"{row['data']}/{row['model']}"]
        knobs = []
        for k in varying:
            # Group choices (technique=l2, model=cnn, experiment/keras_case_study=zca) are already
            # in the name, data and model fields.
            if k in REPLICATE_KEYS or k in TECHNIQUE_KEYS or k in NAMED_KEYS or "/" in k:
                continue
            if k in o:
                (knobs if k.split(".")[0] in TECHNIQUE_KEYS else setting).append(f"{k}={o[k]}")
        settings.append(" ".join(setting))
        techniques.append(row["name"] + (f" ({', '.join(knobs)})" if knobs else ""))
    return settings, techniques


def sweep_note(sweep_dir: Path) -> str | None:
    """``hydra.callbacks.report.note`` of the sweep (e.g. techniques left out, and where they run)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
        return (((cfg.get("hydra") or {}).get("callbacks") or {}).get("report") or {}).get("note")
    except yaml.YAMLError:
        return None
