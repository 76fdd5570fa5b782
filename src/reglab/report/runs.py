"""Reading a sweep folder: one row per run, from its ``metrics.json`` and ``.hydra/overrides.yaml``,
and the comparison protocol's ``protocol.json`` when the sweep ran one.

Each run is labelled with a *setting* (data/model plus any other override that differs between
jobs, such as ``data.train_subset``) and a *technique* (its ``name``, refined by technique knobs
that differ, such as ``regularizer.l2.strength``): the report's rows are these pairs.

A run of the comparison protocol (``reglab.tune``) carries ``protocol: {stage, technique, trial,
params, study}`` in its metrics.json. Its technique is the protocol's (``l2``, ``cocktail``), its
knob values are ``params`` (not part of the label), and its stage says what it is for:
``search``, ``tune`` and ``cocktail_tune`` runs (validation only; a pruned one has
``tune/pruned: 1``, its status here becomes ``pruned``) feed the tuning section; ``test`` and
``cocktail_test`` runs (paired seeds) are the ones compared. Runs without a protocol (plain
``-m`` sweeps) are all compared, as before.

``protocol.json`` in the sweep folder, when there, is read for what the runs cannot say: the
``objective`` and ``direction`` of the tuning, each technique's search ``space`` (log or linear),
and the cocktail's members or why it was skipped. Per setting (``settings[i]``, found by the
prefix of the runs' study names): ``tune: {technique: {best_value, best_params, space}}``,
``tuned: {technique: params}``, ``cocktail: {members, techniques, best_params, skipped}``.
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
# Overrides the protocol sets per job, beside the trial's own parameters: what the job is for
# (protocol, tags, W&B job type, the pruning callback, no test in tuning) and the split of its
# seed, re-drawn per seed and so a replicate like the seed itself.
PROTOCOL_HEADS = {"protocol", "tags", "logger", "callbacks"}
PROTOCOL_KEYS = {"data.split_seed", "trainer.limit_test_batches"}
PRUNED_METRIC = "tune/pruned"  # 1 in the metrics.json of a trial the pruner stopped

TUNE_STAGES = ("search", "tune", "cocktail_tune")  # validation only: never in the compared table
TEST_STAGES = ("test", "cocktail_test")
BASELINE = "baseline"
COCKTAIL = "cocktail"
PROTOCOL_FILE = "protocol.json"
# Columns taken from each run's ``protocol`` mapping.
PROTOCOL_FIELDS = ("stage", "trial", "study", "params")


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
    relative), ``setting`` and ``technique`` (the row label in the report), and the protocol's
    ``stage``, ``trial``, ``study`` and ``params`` (None for runs of a plain sweep)."""
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
    if PRUNED_METRIC in df:
        pruned = (pd.to_numeric(df[PRUNED_METRIC], errors="coerce") > 0) & (df["status"] == "ok")
        df.loc[pruned, "status"] = "pruned"
    df["name"] = df["name"].fillna("?")
    df[["data", "model"]] = df[["data", "model"]].fillna("?")
    protocols = [p if isinstance(p, dict) else None for p in df.get("protocol", [None] * len(df))]
    for f in PROTOCOL_FIELDS:
        df[f] = [p.get(f) if p else None for p in protocols]
    df["params"] = [p if isinstance(p, dict) else None for p in df["params"]]
    df["trial"] = pd.to_numeric(df["trial"], errors="coerce").astype("Int64")
    df["setting"], df["technique"] = _labels(df, overrides, protocols)
    return df


def _labels(
    df: pd.DataFrame, overrides: list[dict[str, str]], protocols: list[dict | None]
) -> tuple[list[str], list[str]]:
    # Overrides that differ between jobs: technique knobs (regularizer.l2.strength=...) refine the
    # technique's label, everything else (data.train_subset=..., optimizer.lr=...) the setting.
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    settings, techniques = [], []
    for (_, row), o, protocol in zip(df.iterrows(), overrides, protocols, strict=True):
        setting = [f"{row['data']}/{row['model']}"]
        knobs = []
        for k in varying:
            # Group choices (technique=l2, model=cnn, experiment/keras_case_study=zca) are already
            # in the name, data and model fields.
            if k in REPLICATE_KEYS or k in TECHNIQUE_KEYS or k in NAMED_KEYS or "/" in k:
                continue
            if protocol is not None and _protocol_own(k, protocol):
                continue
            if k in o:
                (knobs if k.split(".")[0] in TECHNIQUE_KEYS else setting).append(f"{k}={o[k]}")
        settings.append(" ".join(setting))
        if protocol is not None and protocol.get("technique"):
            techniques.append(str(protocol["technique"]))
        else:
            techniques.append(row["name"] + (f" ({', '.join(knobs)})" if knobs else ""))
    return settings, techniques


def _protocol_own(key: str, protocol: dict) -> bool:
    """An override the protocol sets per job (what the job is for, a trial's knob values, a
    seed's split), which must not split a protocol's runs into settings or label them."""
    head = key.split(".")[0]
    return (head in PROTOCOL_HEADS or head in TECHNIQUE_KEYS or key in PROTOCOL_KEYS
            or key in (protocol.get("params") or {}))  # fmt: skip


def compared(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the report's table compares: plain sweep runs and the protocol's test stages."""
    if "stage" not in runs:
        return runs
    return runs[runs["stage"].isna() | runs["stage"].isin(TEST_STAGES)]


def tuning_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The protocol's tuning trials (stage 1 and the cocktail's search): validation only."""
    if "stage" not in runs:
        return runs.iloc[0:0]
    return runs[runs["stage"].isin(TUNE_STAGES)]


def load_protocol(sweep_dir: str | Path) -> dict:
    """``protocol.json`` of the sweep, or {} (a plain sweep, or a file that cannot be read)."""
    path = Path(sweep_dir) / PROTOCOL_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def protocol_setting(protocol: dict, study: str | None) -> dict:
    """The ``settings`` entry of protocol.json that a run's study belongs to (studies are named
    ``<name>[/<setting label>]/<stage>/<technique>``), or {}."""
    settings = [e for e in protocol.get("settings") or [] if isinstance(e, dict)]
    if len(settings) == 1:
        return settings[0]
    prefixes = {f"{protocol.get('name')}/{e.get('label')}/": e for e in settings if e.get("label")}
    return next((e for pre, e in prefixes.items() if str(study or "").startswith(pre)), {})


def protocol_entry(protocol: dict, technique: str, study: str | None = None) -> dict:
    """What protocol.json says about one technique (of the setting of ``study``): ``params``
    (the tuned values), ``value`` (the best validation score), ``space``; for the cocktail also
    ``members`` and ``skipped``. {} where it says nothing."""
    entry = protocol_setting(protocol, study)
    if technique == COCKTAIL:
        c = entry.get(COCKTAIL) if entry else protocol.get(COCKTAIL)
        if not isinstance(c, dict):
            return {}
        params = c.get("params") or c.get("best_params")
        return {**c, "params": {k: v for k, v in (params or {}).items()
                                if not k.startswith("use.")} if params is not None else None}  # fmt: skip
    if entry:
        tune = (entry.get("tune") or {}).get(technique) or {}
        params = (entry.get("tuned") or {}).get(technique, tune.get("best_params"))
        return {"params": params, "value": tune.get("best_value"), "space": tune.get("space")}
    # A flat file: {techniques: {technique: {params, value, space} or {key: value}}}.
    flat = protocol.get("techniques") or protocol.get("tuned")
    found = flat.get(technique) if isinstance(flat, dict) else None
    if not isinstance(found, dict):
        return {}
    if "params" not in found and all(not isinstance(v, dict) for v in found.values()):
        return {"params": found}
    return found


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
