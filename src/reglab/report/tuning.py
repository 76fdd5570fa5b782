"""The comparison's tuning, per (setting, arm): the trials it ran (its budget, counted from the
tune-stage metrics.json), the best validation objective (``val/loss_best``, lower is better), the
tuned values the test stage ran, and which of them sit at the edge of their declared range.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reglab.core.plan import COCKTAIL, Stage
from reglab.report.runs import VAL_LOSS_BEST, compared, tuning_runs

EDGE = 0.05  # a tuned value within 5% of its range (log scale where log) is at its edge


def short_key(key: str) -> str:
    """``regularizer.l2.strength`` -> ``l2.strength``: the group is clear from the arm."""
    head, _, rest = key.partition(".")
    return rest if head in ("regularizer", "augmentation") and rest else key


def format_params(params: dict | None) -> str:
    def fmt(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{short_key(k)}={fmt(v)}" for k, v in (params or {}).items())


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def edge(value, spec: dict) -> str | None:
    """``"top"`` or ``"bottom"`` where ``value`` lies within EDGE of the range of its search
    ``spec`` ({type, low, high, log}), measured on a log scale where ``log`` is true; else None
    (inside, a choice, or no range)."""
    v, low, high = _number(value), _number(spec.get("low")), _number(spec.get("high"))
    if v is None or low is None or high is None or not low < high:
        return None
    if spec.get("log"):
        if min(v, low) <= 0:
            return None
        v, low, high = math.log(v), math.log(low), math.log(high)
    position = (v - low) / (high - low)
    return "bottom" if position <= EDGE else "top" if position >= 1 - EDGE else None


def edges(params: dict, space: dict) -> list[str]:
    """``["regularizer.zca.eps at top", ...]``: the tuned values at an edge of their range."""
    out = []
    for key, value in (params or {}).items():
        spec = (space or {}).get(key)
        where = edge(value, spec) if isinstance(spec, dict) else None
        if where:
            out.append(f"{key} at {where}")
    return out


def _first_dict(values) -> dict:
    return next((v for v in values if isinstance(v, dict) and v), {})


def trials_of(t: pd.DataFrame) -> pd.DataFrame:
    """One row per tuning trial of an arm (its members: one run per tuning split): ``status``
    (pruned or failed if any member was), ``objective`` (the members' mean val/loss_best, as the
    tuning scored it; NaN unless every member finished), ``score`` (the same over the members
    that have one: a pruned trial's score when stopped, for the plots), ``params``."""
    # A run without a trial number (a plain search's) is a trial of its own.
    unnumbered = pd.Series(-1.0 - np.arange(len(t)), index=t.index)
    trial = pd.to_numeric(t["trial"], errors="coerce").astype(float).fillna(unnumbered)
    rows = {}
    for number, members in t.groupby(trial, sort=True):
        status = set(members["status"])
        status = "failed" if "failed" in status else "pruned" if "pruned" in status else "ok"
        values = pd.to_numeric(members[VAL_LOSS_BEST], errors="coerce")
        rows[number] = {
            "status": status,
            "objective": values.mean(skipna=False) if status == "ok" else math.nan,
            "score": values.mean(),
            "params": members["params"].iloc[0],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def tuning(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, arm) of a comparison: ``trials`` run in its tuning stage (``pruned``,
    ``failed`` among them), ``val_best`` (the best finished trial's val/loss_best), the tuned
    ``params`` (what the test stage ran; the best trial's where no test ran yet), ``tuned`` as
    text, the searched ``space`` and the ``at_edge`` flags. Empty for a plain sweep."""
    trials, tested = tuning_runs(runs), compared(runs)
    tested = tested[tested["stage"].isin(Stage.TESTING)]
    keys = dict.fromkeys(
        [
            *zip(trials["setting"], trials["technique"], strict=True),
            *zip(tested["setting"], tested["technique"], strict=True),
        ]
    )
    rows = []
    for setting, arm in keys:
        stage = Stage.COCKTAIL_TUNE if arm == COCKTAIL else Stage.TUNE
        t = trials[(trials["setting"] == setting) & (trials["technique"] == arm)]
        t = t[t["stage"].isin([stage, Stage.SEARCH])]
        mine = tested[(tested["setting"] == setting) & (tested["technique"] == arm)]
        per_trial = trials_of(t) if len(t) else pd.DataFrame(columns=["status", "objective"])
        score = per_trial["objective"].dropna()
        best = per_trial.loc[score.idxmin()] if len(score) else None
        params = _first_dict(mine["params"]) or (best["params"] if best is not None else {})
        space = _first_dict([*mine["space"], *t["space"]])
        flags = edges(params, space)
        rows.append(
            {
                "setting": setting,
                "technique": arm,
                "trials": len(per_trial),
                "pruned": int((per_trial["status"] == "pruned").sum()),
                "trials_failed": int((per_trial["status"] == "failed").sum()),
                "val_best": float(score.min()) if len(score) else math.nan,
                "params": params,
                "space": space,
                "tuned": format_params(params),
                "at_edge": ", ".join(flags),
            }
        )
    return pd.DataFrame(rows)
