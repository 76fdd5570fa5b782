"""The comparison protocol's tuning stage, per (setting, technique): its trials, the validation
score that chose among them, the tuned values, and how the best score compares with the
baseline's. Read from the trials' metrics.json, with protocol.json where the runs cannot say.
"""

from __future__ import annotations

import math

import pandas as pd

from reglab.core.names import VAL_ACC, VAL_ACC_BEST
from reglab.report.runs import (
    BASELINE,
    COCKTAIL,
    TEST_STAGES,
    compared,
    protocol_entry,
    tuning_runs,
)

TESTED = "tested"  # reglab.tune's default objective


def objective(protocol: dict | None = None) -> str:
    """The validation score the tuning maximized (or minimized): protocol.json's ``objective``,
    by default ``tested`` as in reglab.tune."""
    protocol = protocol or {}
    return str(protocol.get("objective") or protocol.get("metric") or TESTED)


def direction(protocol: dict | None = None) -> int:
    """+1 where a higher score is better, -1 for a minimized objective (a loss)."""
    return -1 if (protocol or {}).get("direction") == "minimize" else 1


def scores(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's score as the tuning read it. ``tested``: the validation accuracy of the weights
    the test would use (``val/acc_best`` for a run tested with its best checkpoint, else the
    final ``val/acc``)."""

    def column(name: str) -> pd.Series:
        if name not in runs:
            return pd.Series(math.nan, index=runs.index)
        return pd.to_numeric(runs[name], errors="coerce")

    if metric != TESTED:
        return column(metric)
    best = runs.get("tested", pd.Series(None, index=runs.index, dtype=object)) == "best checkpoint"
    return column(VAL_ACC_BEST).where(best, column(VAL_ACC))


def short_key(key: str) -> str:
    """``regularizer.l2.strength`` -> ``l2.strength``: the group is clear from the technique."""
    head, _, rest = key.partition(".")
    return rest if head in ("regularizer", "augmentation") and rest else key


def format_params(params: dict | None) -> str:
    if not params:
        return ""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{short_key(k)}={fmt(v)}" for k, v in params.items())


def _tuned(tested: pd.DataFrame, entry: dict, best: pd.Series | None) -> tuple[dict, str]:
    # What the test stage ran is what was tuned; protocol.json and the best trial stand in for
    # it when the test stage is missing (a tuning-only sweep, or one still running).
    for p in tested.get("params", []):
        if isinstance(p, dict):
            return p, "test runs"
    if isinstance(entry.get("params"), dict):
        return entry["params"], "protocol.json"
    if best is not None and isinstance(best.get("params"), dict):
        return best["params"], "best trial"
    return {}, ""


def tuning(runs: pd.DataFrame, protocol: dict | None = None) -> pd.DataFrame:
    """Per (setting, technique) of the protocol: its tuning ``trials`` (``pruned``, ``failed``),
    the validation ``metric`` and its best value over the finished trials (``val_tuned``), how
    much better that is than the baseline's (``val_delta``, > 0: better), the ``knobs``
    searched, the tuned ``params`` (and their ``source``), ``tuned`` as text, the protocol.json
    ``entry``. Empty for a plain sweep."""
    protocol = protocol or {}
    trials = tuning_runs(runs)
    tested = compared(runs)
    tested = tested[tested["stage"].isin(TEST_STAGES)] if "stage" in tested else tested.iloc[0:0]
    keys = dict.fromkeys([*zip(trials["setting"], trials["technique"], strict=True),
                          *zip(tested["setting"], tested["technique"], strict=True)])  # fmt: skip
    if not keys:
        return pd.DataFrame()
    metric, sign = objective(protocol), direction(protocol)
    score = sign * scores(trials, metric)
    rows = []
    for setting, technique in keys:
        t = trials[(trials["setting"] == setting) & (trials["technique"] == technique)]
        mine = tested[(tested["setting"] == setting) & (tested["technique"] == technique)]
        s = score[t.index[t["status"] == "ok"]].dropna()  # pruned trials never win (Optuna's rule)
        best = t.loc[s.idxmax()] if len(s) else None
        study = next((x for x in [*t["study"], *mine["study"]] if isinstance(x, str)), None)
        entry = protocol_entry(protocol, technique, study)
        params, source = _tuned(mine, entry, best)
        knobs = dict.fromkeys(k for p in t["params"] if isinstance(p, dict) for k in p)
        text = format_params(params)
        if technique == COCKTAIL:
            members = next(iter(mine["name"]), None) or "+".join(entry.get("techniques") or [])
            text = f"{members}: {text}" if members and text else members or text
        rows.append({
            "setting": setting, "technique": technique, "trials": len(t),
            "pruned": int((t["status"] == "pruned").sum()),
            "failed": int((~t["status"].isin(["ok", "pruned"])).sum()),
            "metric": metric,
            "val_tuned": sign * float(s.max()) if len(s) else entry.get("value"),
            "best_trial": best["trial"] if best is not None else None,
            "knobs": list(knobs or params), "params": params, "source": source, "tuned": text,
            "entry": entry,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table["val_tuned"] = pd.to_numeric(table["val_tuned"], errors="coerce")
    base = table[table["technique"] == BASELINE].set_index("setting")["val_tuned"]
    table["val_delta"] = sign * (table["val_tuned"] - table["setting"].map(base))
    table.loc[table["technique"] == BASELINE, "val_delta"] = math.nan
    # The baseline first, the cocktail last, the single techniques best first.
    order = table["technique"].map(lambda t: 0 if t == BASELINE else 2 if t == COCKTAIL else 1)
    return (
        table.assign(_order=order, _score=sign * table["val_tuned"])
        .sort_values(
            ["setting", "_order", "_score"],
            ascending=[True, True, False],
            kind="stable",
            na_position="last",
        )  # fmt: skip
        .drop(columns=["_order", "_score"])
        .reset_index(drop=True)
    )
