"""Reading a sweep folder: one row per run (every ``metrics.json`` below it, stacked jobs'
``<job>/seed_<s>/metrics.json`` included) and the sweep's config (``multirun.yaml``).

A run of a comparison carries the ``protocol`` record of ``reglab.core.plan.RECORD_KEYS``: its
``stage`` (tuning stages read validation only; test stages are the ones compared), its ``arm``
(the row it belongs to), the tuning ``trial``, the ``params`` it ran, the arm's search ``space``
and, in test stages, the ``look`` its seed was added in. ``hydra.sweeper.protocol`` of
multirun.yaml is the comparison's ``Protocol`` (design, metric, cocktail) and
``hydra.sweeper.n_trials`` its tuning budget per arm.

A plain ``-m`` sweep has no protocol: each run is labelled with a *setting* (data/model plus any
other override that differs between jobs, such as ``data.train_subset``) and a *technique* (its
``name``, refined by technique knobs that differ, such as ``regularizer.l2.strength``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reglab.core.errors import ConfigError
from reglab.core.names import GAP_ACC, SPARSITY, TEST_ACC, TEST_ECE
from reglab.core.plan import RECORD_KEYS, Design, Protocol, Stage

# The per-run fields the report averages, beside the compared metric.
METRICS = (TEST_ACC, GAP_ACC, TEST_ECE, SPARSITY, "epochs_trained", "wall_time_s")
VAL_LOSS_BEST = "val/loss_best"  # the tuning objective and the selection score (lower: better)
PRUNED_METRIC = "tune/pruned"  # 1 in the metrics.json of a trial the pruner stopped
# Overrides that are what a row compares (technique) or what it averages over (seed, fold): they
# never define a setting of their own.
REPLICATE_KEYS = {"seed", "data.fold"}
TECHNIQUE_KEYS = {"technique", "regularizer", "augmentation"}
NAMED_KEYS = {"data", "model", "experiment", "hparams_search", "debug", "logger", "callbacks"}


@dataclass
class Sweep:
    """What multirun.yaml says: the comparison's ``protocol`` (None for a plain sweep), the
    tuning budget per arm ``n_trials`` and the report callback's ``note``."""

    protocol: Protocol | None = None
    n_trials: int | None = None
    note: str | None = None

    @property
    def design(self) -> Design:
        return self.protocol.design if self.protocol else Design()

    @property
    def metric(self) -> str:
        return self.protocol.metric if self.protocol else TEST_ACC


def higher_is_better(metric: str) -> bool:
    return not any(word in metric for word in ("loss", "ece", "error", "nll"))


def chance(metric: str, num_classes: float) -> float:
    """What a run that failed scores: a uniform guess over the classes (accuracy 1/C,
    cross-entropy ln C); NaN for any other metric or an unknown number of classes."""
    if not num_classes or math.isnan(num_classes) or num_classes < 1:
        return math.nan
    if metric.endswith("acc") or metric.endswith("acc_best"):
        return 1.0 / num_classes
    if metric.endswith("loss") or metric.endswith("loss_best"):
        return math.log(num_classes)
    return math.nan


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
    """One row per ``metrics.json`` under ``sweep_dir``: its fields plus ``run`` (the folder,
    relative), ``setting`` and ``technique`` (the row label: the arm of a comparison), and the
    protocol record's fields (None for runs of a plain sweep)."""
    sweep_dir = Path(sweep_dir)
    records, overrides = [], []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            data = {"status": "failed", "error": f"unreadable metrics.json: {e}"}
        data = data if isinstance(data, dict) else {"status": "failed", "error": "not a mapping"}
        data["run"] = str(path.parent.relative_to(sweep_dir)) or "."
        records.append(data)
        # A stacked job's seeds share the job folder's overrides.
        job = next((p for p in (path.parent, path.parent.parent) if (p / ".hydra").is_dir()), None)
        overrides.append(read_overrides(job) if job else {})
    columns = ["run", "status", "name", "setting", "technique", "seed", *METRICS, *RECORD_KEYS]
    if not records:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(records)
    for col in (
        "status",
        "name",
        "data",
        "model",
        "error",
        "seed",
        "fold",
        "num_classes",
        VAL_LOSS_BEST,
        *METRICS,
    ):
        if col not in df:
            df[col] = np.nan
    df["status"] = df["status"].fillna("failed")
    if PRUNED_METRIC in df:
        pruned = (pd.to_numeric(df[PRUNED_METRIC], errors="coerce") > 0) & (df["status"] == "ok")
        df.loc[pruned, "status"] = "pruned"
    df["name"] = df["name"].fillna("?")
    df[["data", "model"]] = df[["data", "model"]].fillna("?")
    records_ = [p if isinstance(p, dict) else None for p in df.get("protocol", [None] * len(df))]
    for key in RECORD_KEYS:
        df[key] = [p.get(key) if p else None for p in records_]
    for key in ("params", "space"):
        df[key] = [p if isinstance(p, dict) else {} for p in df[key]]
    for key in ("trial", "look"):
        df[key] = pd.to_numeric(df[key], errors="coerce").astype("Int64")
    df["num_classes"] = pd.to_numeric(df["num_classes"], errors="coerce")
    df["setting"], df["technique"] = _labels(df, overrides, records_)
    return df


def _labels(
    df: pd.DataFrame, overrides: list[dict[str, str]], records: list[dict | None]
) -> tuple[list[str], list[str]]:
    # A comparison's row is its arm, its setting the data and model (one comparison per folder;
    # several get their name in front). A plain sweep's overrides that differ between jobs:
    # technique knobs (regularizer.l2.strength=...) refine the technique's label, everything
    # else (data.train_subset=..., optimizer.lr=...) the setting.
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    comparisons = {r.get("comparison") for r in records if r}
    settings, techniques = [], []
    for (_, row), o, record in zip(df.iterrows(), overrides, records, strict=True):
        setting = [f"{row['data']}/{row['model']}"]
        if record is not None and record.get("arm"):
            if len(comparisons) > 1:
                setting.insert(0, f"{record.get('comparison')}:")
            settings.append(" ".join(setting))
            techniques.append(str(record["arm"]))
            continue
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


def compared(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the table compares: plain sweep runs and the comparison's test stages."""
    return runs[runs["stage"].isna() | runs["stage"].isin(Stage.TESTING)]


def tuning_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The comparison's tuning trials (validation only)."""
    return runs[runs["stage"].isin(Stage.TUNING)]


def is_comparison(runs: pd.DataFrame) -> bool:
    return bool(runs["stage"].isin(Stage.TESTING).any())


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """multirun.yaml's ``hydra.sweeper.protocol`` (typed), ``n_trials`` and the report note.
    A plain sweep, or a folder without multirun.yaml, gives ``Sweep()``."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return Sweep()
    try:
        hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML: {str(e).splitlines()[0]}") from None
    sweeper = hydra.get("sweeper") or {}
    note = ((hydra.get("callbacks") or {}).get("report") or {}).get("note")
    protocol = None
    if isinstance(sweeper.get("protocol"), dict):
        try:
            merged = OmegaConf.merge(OmegaConf.structured(Protocol), sweeper["protocol"])
            protocol = OmegaConf.to_object(merged)
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            raise ConfigError(f"{path}: hydra.sweeper.protocol: {msg}") from None
    n_trials = sweeper.get("n_trials")
    return Sweep(protocol, int(n_trials) if isinstance(n_trials, int) else None, note)
