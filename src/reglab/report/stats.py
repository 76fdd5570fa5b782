"""The report's numbers: one row per (setting, arm), each ending in a verdict from ``reglab.stats``.

Every arm is compared with the baseline on ONE paired set: the seeds the arm has, paired with
the baseline's same seeds (and folds, for cross-validation). The arm's mean, its difference, its
interval, its rank and its validation score are all read on that set. In a comparison a failed
test run is an outcome, not a gap: it scores what a uniform guess would (accuracy 1/num_classes)
and the row says how many seeds failed. (A plain ``-m`` sweep leaves failed runs out, as before.)

The differences are oriented so that > 0 is better (a loss is negated) and go to
``reglab.stats.sequential`` with the comparison's ``Design``: better / worse under family-wise
error control, equivalent within +-delta, or undecided with the minimum detectable effect and the
seeds it would take. The cocktail, tested after the single arms were decided, is its own family.

Selection reads validation only: the best single technique is the one with the lowest mean
``val/loss_best`` of its test runs over the seeds every single arm ran; ``cocktail_vs_best``
puts the cocktail against it with a paired test on their common seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

from reglab.core.plan import BASELINE, COCKTAIL, Design
from reglab.report.runs import (
    METRICS,
    VAL_LOSS_BEST,
    Sweep,
    chance,
    compared,
    higher_is_better,
    is_comparison,
)
from reglab.report.tuning import tuning
from reglab.stats import paired_test, sequential

VERDICTS = ("better", "equivalent", "undecided", "worse")  # the table's order
BASELINE_VERDICT = "baseline"
VERDICT_FIELDS = (
    "verdict",
    "n",
    "look",
    "mean_diff",
    "ci_low",
    "ci_high",
    "mde",
    "seeds_needed",
    "p_value",
    "p_tost",
    "level",
    "test",
    "wins",
    "ties",
    "p_better",
    "p_better_low",
    "p_better_high",
)
NO_VERDICT = {f: math.nan for f in VERDICT_FIELDS} | {"verdict": "undecided", "test": ""}
TUNING_COLUMNS = ("trials", "pruned", "tuned", "at_edge")


def _num(series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def scored(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each compared run's ``metric``; a comparison's failed test run at chance (NaN for a plain
    sweep's failed run, which is left out)."""
    value = _num(runs[metric]) if metric in runs else pd.Series(math.nan, index=runs.index)
    value = value.where(runs["status"] == "ok")
    classes = _num(runs["num_classes"]).fillna(_num(runs["num_classes"]).max())
    failed = (runs["status"] == "failed") & runs["stage"].notna()
    at_chance = [chance(metric, c) for c in classes[failed]]
    value[failed] = at_chance
    return value


def _keys(runs: pd.DataFrame) -> pd.Series:
    """The pairing key of each run: its seed, and its fold where the sweep has folds."""
    seed = _num(runs["seed"])
    folds = _num(runs["fold"]) if "fold" in runs else pd.Series(math.nan, index=runs.index)
    if folds.notna().any():
        return pd.Series(list(zip(seed, folds, strict=True)), index=runs.index)
    return seed


def _by_key(values: pd.Series, keys: pd.Series) -> pd.Series:
    ok = values.notna() & pd.Series([k == k for k in keys], index=keys.index)  # NaN != NaN
    return values[ok].groupby(keys[ok]).mean()


def _design(sweep: Sweep, comparison: bool, diffs: dict[str, list]) -> Design:
    # A plain sweep ran its seeds at once: a look at each seed count its techniques have
    # (usually one).
    if comparison:
        return sweep.design
    return replace(sweep.design, looks=sorted({len(d) for d in diffs.values()}))


def _flags(row: dict, comparison: bool) -> str:
    out = []
    if row["failed"]:
        unit = "seeds" if comparison else "runs"
        fate = "scored at chance" if comparison else "left out"
        out.append(f"{row['failed']} of {row['seeds']} {unit} failed ({fate})")
    if row.get("at_edge"):
        out.append(f"at edge: {row['at_edge']}")
    return "; ".join(out)


def _pairs(tested: pd.DataFrame, sweep: Sweep):
    """One setting's compared runs scored (``_key``, ``_score``, ``_val`` columns added), each
    arm's score per key, the keys it shares with the baseline, and its oriented differences."""
    sign = 1.0 if higher_is_better(sweep.metric) else -1.0
    tested = tested.assign(
        _key=_keys(tested), _score=scored(tested, sweep.metric), _val=scored(tested, VAL_LOSS_BEST)
    )
    base = tested[tested["technique"] == BASELINE]
    base_score = _by_key(base["_score"], base["_key"])
    scores = {
        a: _by_key(g["_score"], g["_key"]) for a, g in tested.groupby("technique", sort=False)
    }
    common = {
        arm: s.index if arm == BASELINE else s.index.intersection(base_score.index)
        for arm, s in scores.items()
    }
    diffs = {a: (sign * (scores[a][common[a]] - base_score[common[a]])).tolist() for a in scores}
    return tested, scores, common, diffs


def paired_differences(runs: pd.DataFrame, sweep: Sweep) -> dict[str, dict[str, list[float]]]:
    """{setting: {arm: per-seed differences from the baseline, in seed order, > 0 better}}: what
    the report hands to ``reglab.stats.sequential`` (failed test runs at chance), for a driver
    that decides which arms get the next look on exactly the report's numbers."""
    out = {}
    for setting, group in compared(runs).groupby("setting", sort=False):
        diffs = _pairs(group, sweep)[3]
        out[setting] = {arm: d for arm, d in diffs.items() if arm != BASELINE}
    return out


def _setting(tested: pd.DataFrame, sweep: Sweep, tuned: pd.DataFrame) -> list[dict]:
    comparison, metric = is_comparison(tested), sweep.metric
    tested, scores, common, diffs = _pairs(tested, sweep)
    groups = dict(list(tested.groupby("technique", sort=False)))
    base = tested[tested["technique"] == BASELINE]
    base_score = scores.get(BASELINE, pd.Series(dtype=float))
    verdicts = {BASELINE: {"verdict": BASELINE_VERDICT, "mean_diff": 0.0}}
    singles = {a: d for a, d in diffs.items() if a not in (BASELINE, COCKTAIL) and len(d) >= 2}
    for family in (singles, {a: d for a, d in diffs.items() if a == COCKTAIL and len(d) >= 2}):
        if family:
            design = _design(sweep, comparison, family)
            for arm, verdict in sequential(family, design).items():
                verdicts[arm] = {k: v for k, v in asdict(verdict).items() if k != "arm"}
    rows = []
    for arm, group in groups.items():
        mean = float(np.mean(diffs[arm])) if diffs[arm] else math.nan  # untested: no interval
        verdict = {**NO_VERDICT, "n": len(common[arm]), "mean_diff": mean, **verdicts.get(arm, {})}
        if arm != BASELINE and base_score.empty:
            verdict["verdict"] = "undecided (no baseline)"
        # The verdict's seeds (the first n, in seed order, where it was decided at an earlier
        # look than the seeds ran) are the set every figure of the row is read on.
        keys = common[arm][: int(verdict["n"])] if verdict["n"] == verdict["n"] else common[arm]
        ok = group[group["_key"].isin(keys) & (group["status"] == "ok")]
        failed = set(group.loc[group["status"] == "failed", "_key"])
        val = _by_key(group["_val"], group["_key"]) - _by_key(base["_val"], base["_key"])
        row = {
            "technique": arm,
            "seeds": int(group["_key"].nunique()),
            "failed": int((group["status"] == "failed").sum()),
            **verdict,
            "over": "folds" if _num(group.get("fold", pd.Series())).nunique() > 1 else "seeds",
            f"{metric} mean": scores[arm][keys].mean(),
            f"{metric} std": scores[arm][keys].std(ddof=1) if len(keys) > 1 else math.nan,
            "baseline mean": base_score.reindex(keys).mean(),
            "val_diff": val.reindex(keys).mean(),
            **{f"{m} mean": _num(ok[m]).mean() for m in METRICS if m != metric},
            # Per seed, for the plots: the arm's score, the baseline's, their difference.
            "seed_scores": scores[arm][keys].tolist(),
            "seed_base": base_score.reindex(keys).tolist(),
            "diffs": [] if arm == BASELINE else diffs[arm][: len(keys)],
            "seed_failed": [k in failed for k in keys],
        }
        mine = tuned[tuned["technique"] == arm] if len(tuned) else tuned
        for col in TUNING_COLUMNS:
            empty = "" if col in ("tuned", "at_edge") else math.nan
            row[col] = mine[col].iloc[0] if len(mine) else empty
        row["flags"] = _flags(row, comparison)
        rows.append(row)
    return rows


def _order(table: pd.DataFrame) -> pd.DataFrame:
    verdict = table["verdict"].map(
        lambda v: -1 if v == BASELINE_VERDICT else VERDICTS.index(v) if v in VERDICTS else 9
    )
    table = table.assign(_v=verdict, _d=-table["mean_diff"].astype(float))
    table = table.sort_values(["setting", "_v", "_d"], kind="stable", na_position="last")
    return table.drop(columns=["_v", "_d"]).reset_index(drop=True)


def summarize(runs: pd.DataFrame, sweep: Sweep | None = None) -> pd.DataFrame:
    """One row per (setting, arm) of the compared runs: ``verdict`` and its statistics (from
    ``reglab.stats``: n, look, mean_diff with ci_low/ci_high, mde, seeds_needed, p-values,
    P(better)), ``flags`` (failed seeds, tuned values at an edge), the metric's mean on the
    paired seeds beside the baseline's on the same seeds, ``val_diff`` (paired val/loss_best
    difference, < 0: better on validation), the tuning budget and tuned values, ``rank``."""
    sweep = sweep or Sweep()
    tested = compared(runs)
    if tested.empty:
        return pd.DataFrame()
    tuned = tuning(runs)
    rows = []
    for setting, group in tested.groupby("setting", sort=False):
        mine = tuned[tuned["setting"] == setting] if len(tuned) else tuned
        rows += [{"setting": setting, **r} for r in _setting(group, sweep, mine)]
    table = _order(pd.DataFrame(rows))
    table["rank"] = (
        table.groupby("setting", sort=False)["mean_diff"]
        .rank(method="min", ascending=False)
        .astype("Int64")
    )
    first = [
        "setting",
        "technique",
        "verdict",
        "flags",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "mde",
        "seeds_needed",
        "trials",
        "look",
        "seeds",
        "failed",
        "tuned",
        "at_edge",
    ]
    return table[first + [c for c in table.columns if c not in first]]


def _common(runs: pd.DataFrame, arms: list[str]) -> set:
    keys = None
    for arm in arms:
        mine = set(_keys(runs[runs["technique"] == arm]).dropna())
        keys = mine if keys is None else keys & mine
    return keys or set()


def best_on_validation(tested: pd.DataFrame, arms: list[str]) -> tuple[str | None, pd.Series]:
    """The arm with the lowest mean val/loss_best over the seeds all ``arms`` ran (each arm's
    own seeds where they share none), and every arm's mean."""
    common = _common(tested, arms)
    means = {}
    for arm in arms:
        mine = tested[tested["technique"] == arm]
        keys = _keys(mine)
        val = _by_key(scored(mine, VAL_LOSS_BEST), keys)
        means[arm] = val[val.index.isin(common)].mean() if common else val.mean()
    means = pd.Series(means, dtype=float).dropna()
    return (means.idxmin() if len(means) else None), means


def cocktail_vs_best(runs: pd.DataFrame, summary: pd.DataFrame, sweep: Sweep | None = None):
    """Per setting with a tested cocktail: the best single technique chosen on validation
    (``best_single``, its ``val_mean`` and the cocktail's) and the paired test of the cocktail
    minus it on their common seeds (> 0: the cocktail is better)."""
    sweep = sweep or Sweep()
    rows = []
    tested = compared(runs)
    sign = 1.0 if higher_is_better(sweep.metric) else -1.0
    for setting in dict.fromkeys(summary["setting"]) if len(summary) else []:
        mine = tested[tested["setting"] == setting]
        arms = [a for a in dict.fromkeys(mine["technique"]) if a not in (BASELINE, COCKTAIL)]
        if COCKTAIL not in set(mine["technique"]) or not arms:
            continue
        best, means = best_on_validation(mine, arms)
        if best is None:
            continue
        pair = mine[mine["technique"].isin([COCKTAIL, best])]
        pair = pair.assign(_key=_keys(pair), _score=scored(pair, sweep.metric))
        c, b = (
            _by_key(g["_score"], g["_key"])
            for g in (pair[pair["technique"] == t] for t in (COCKTAIL, best))
        )
        common = c.index.intersection(b.index)
        diffs = (sign * (c[common] - b[common])).to_numpy(float)
        design = sweep.design
        result = paired_test(diffs, design.alpha, design.delta) if len(diffs) >= 2 else {}
        _, cocktail_val = best_on_validation(pair, [COCKTAIL, best])
        rows.append(
            {
                "setting": setting,
                "best_single": best,
                "val_mean": means[best],
                "cocktail_val_mean": cocktail_val.get(COCKTAIL, math.nan),
                "n": len(diffs),
                "mean_diff": float(np.mean(diffs)) if len(diffs) else math.nan,
                **{k: v for k, v in result.items() if k not in ("n", "mean")},
            }
        )
    return pd.DataFrame(rows)
