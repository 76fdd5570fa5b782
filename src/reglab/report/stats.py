"""The statistics of the report: pure functions of the runs table, no files, no plots.

Each row (setting, technique) holds mean ± std over its finished runs, and every technique is
compared with the ``baseline`` row of its setting: the difference of mean test accuracy, its 95%
confidence interval and the p-value of Welch's t-test (unequal variances). ``compare`` is the
one place that test is chosen, so a different one (paired by seed, corrected for the number of
techniques) replaces it without touching the rest of the report.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from reglab.core.names import TEST_ACC
from reglab.report.runs import METRICS

BASELINE = "baseline"
NO_TEST = {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}


def welch(values: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Difference of means (values - baseline), its Welch confidence interval and p-value.

    NaN where either group has fewer than two runs (no variance estimate, no test)."""
    delta = (
        float(np.mean(values) - np.mean(baseline)) if len(values) and len(baseline) else math.nan
    )
    out = {**NO_TEST, "delta": delta}
    if len(values) < 2 or len(baseline) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(values, baseline, equal_var=False)
        ci = res.confidence_interval(confidence)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(res.pvalue))
    return out


def significance(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def _numbers(runs: pd.DataFrame, metric: str) -> pd.Series:
    return pd.to_numeric(runs[metric], errors="coerce").dropna()


def compare(runs: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, float | str]:
    """A technique's finished runs against its setting's baseline runs: ``delta``, ``ci_low``,
    ``ci_high``, ``p_value`` and the ``significance`` mark."""
    base_acc = _numbers(baseline, TEST_ACC).to_numpy()
    if not len(base_acc):
        return {**NO_TEST, "significance": "no baseline"}
    test = welch(_numbers(runs, TEST_ACC).to_numpy(), base_acc)
    return {**test, "significance": significance(test["p_value"])}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, technique) over the runs that finished: mean/std of METRICS, n, and
    Δ test accuracy vs the setting's baseline with its 95% CI, Welch p-value and mark."""
    rows = []
    ok = runs[runs["status"] == "ok"]
    for (setting, technique), group in runs.groupby(["setting", "technique"], sort=False):
        done = ok[(ok["setting"] == setting) & (ok["technique"] == technique)]
        row = {"setting": setting, "technique": technique, "n": len(done),
               "failed": int((group["status"] != "ok").sum())}  # fmt: skip
        folds = done["fold"].dropna().nunique() if "fold" in done else 0
        row["over"] = "folds" if folds > 1 else "seeds"
        for m in METRICS:
            vals = _numbers(done, m)
            row[f"{m} mean"] = vals.mean() if len(vals) else math.nan
            row[f"{m} std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        if technique == BASELINE:
            row.update(NO_TEST, significance="")
        else:
            base = ok[(ok["setting"] == setting) & (ok["technique"] == BASELINE)]
            row.update(compare(done, base))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Baseline first in each setting, then the best mean test accuracy first.
    table["_base"] = table["technique"] != BASELINE
    table = table.sort_values(
        ["setting", "_base", f"{TEST_ACC} mean"], ascending=[True, True, False]
    )
    return table.drop(columns="_base").reset_index(drop=True)
