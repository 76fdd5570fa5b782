"""The report's numbers, as pure functions of the runs table: no files, no plots.

Each row (setting, technique) holds mean ± std over its finished runs, and every technique is
compared with the ``baseline`` row of its setting:

- paired by seed when the runs pair up (the protocol's test stage: every seed gives each technique
  the same split, initialization and batch order; a plain sweep whose technique and baseline ran
  the same seeds): Δ is the mean of the per-seed differences, with the 95% t interval and the
  p-value of the paired t-test (``scipy.stats.ttest_rel``);
- otherwise (folds, unequal seeds) Welch's t-test of the two groups (unequal variances);
- the p-values of a setting are adjusted together with Holm's step-down method, and the
  ``significance`` mark is read from the adjusted value;
- ``p_better``: the probability that the technique beats the baseline on a seed (the fraction of
  seeds with a positive difference, ties count half; unpaired: over all pairs of runs), with a
  seeded percentile bootstrap interval;
- ``rank`` by mean test accuracy within the setting (ties share the better rank).

With a comparison protocol the table also takes each technique's tuned values (``tuning.py``),
and ``cocktail_vs_best`` puts the best combination against the best single technique.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from reglab.core.names import TEST_ACC
from reglab.report.runs import BASELINE, COCKTAIL, METRICS, TEST_STAGES, compared, protocol_entry
from reglab.report.tuning import tuning

CONFIDENCE = 0.95
ALPHA = 0.05  # the level the significance marks and the report's sentences use
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # a fixed stream: the same runs give the same interval, byte for byte
NO_TEST = {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
NO_P_BETTER = {"p_better": math.nan, "p_better_low": math.nan, "p_better_high": math.nan}
PAIRED, WELCH = "paired t", "Welch t"


def welch(values: np.ndarray, baseline: np.ndarray, confidence: float = CONFIDENCE) -> dict:
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


def paired_t(values: np.ndarray, baseline: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Mean of the paired differences (values[i] - baseline[i], same seed), its t interval and
    the paired t-test's p-value. NaN below two pairs."""
    diffs = np.asarray(values, float) - np.asarray(baseline, float)
    out = {**NO_TEST, "delta": float(diffs.mean()) if len(diffs) else math.nan}
    if len(diffs) < 2:
        return out
    if not diffs.any():
        # Equal on every seed (a technique that never acted): t is 0/0, but the data show no
        # difference at all, which is what p = 1 and an interval of [0, 0] say.
        out.update(ci_low=0.0, ci_high=0.0, p_value=1.0)
        return out
    res = stats.ttest_rel(values, baseline)
    ci = res.confidence_interval(confidence)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(res.pvalue))
    return out


def _wins(diffs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Fraction of positive differences along ``axis``, a tie counting half."""
    return np.mean((diffs > 0) + 0.5 * (diffs == 0), axis=axis)


def _wins_all_pairs(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    d = x[..., :, None] - y[..., None, :]
    return _wins(d.reshape(*d.shape[:-2], -1))


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, paired: bool) -> tuple[float, float]:
    if min(len(s) for s in samples) < 2:
        return math.nan, math.nan
    res = stats.bootstrap(samples, statistic, vectorized=True, paired=paired,
                          n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                          method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED))  # fmt: skip
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def p_better_paired(values: np.ndarray, baseline: np.ndarray) -> dict:
    """P(technique beats baseline on a seed): the fraction of seeds with a positive difference,
    ties half, and its bootstrap interval (seeds resampled)."""
    diffs = np.asarray(values, float) - np.asarray(baseline, float)
    if not len(diffs):
        return dict(NO_P_BETTER)
    low, high = _bootstrap((diffs,), _wins, paired=False)
    return {"p_better": float(_wins(diffs)), "p_better_low": low, "p_better_high": high}


def p_better_unpaired(values: np.ndarray, baseline: np.ndarray) -> dict:
    """Without pairs: the fraction of (technique run, baseline run) pairs the technique wins,
    ties half, with a bootstrap interval that resamples each group on its own."""
    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    if not len(values) or not len(baseline):
        return dict(NO_P_BETTER)
    low, high = _bootstrap((values, baseline), _wins_all_pairs, paired=False)
    return {"p_better": float(_wins_all_pairs(values, baseline)), "p_better_low": low,
            "p_better_high": high}  # fmt: skip


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of the non-NaN p-values (NaN stays NaN)."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, math.nan)
    tested = ~np.isnan(p)
    if tested.any():
        out[tested] = multipletests(p[tested], alpha=ALPHA, method="holm")[1]
    return out


def significance(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < ALPHA else "ns"


def _numbers(runs: pd.DataFrame, metric: str) -> pd.Series:
    return pd.to_numeric(runs[metric], errors="coerce").dropna()


def _seeds(runs: pd.DataFrame) -> pd.Series | None:
    """The seeds of the runs with a test accuracy, or None where one of them has no seed."""
    seeds = pd.to_numeric(runs.loc[_numbers(runs, TEST_ACC).index, "seed"], errors="coerce")
    return None if seeds.isna().any() else seeds


def _pairs(runs: pd.DataFrame, baseline: pd.DataFrame, protocol: bool):
    """Aligned (technique, baseline) test accuracies by seed, or None when the runs do not pair.

    The protocol's test runs pair on the seeds both have (a seed run twice counts once, with its
    mean); a plain sweep pairs only when both ran exactly the same seeds, once each. Folds never
    pair here: they fall back to Welch, as the report always did."""
    if any("fold" in r and r["fold"].dropna().nunique() > 1 for r in (runs, baseline)):
        return None
    sa, sb = _seeds(runs), _seeds(baseline)
    if sa is None or sb is None:
        return None
    if not protocol and (sa.duplicated().any() or sb.duplicated().any() or set(sa) != set(sb)):
        return None
    a = _numbers(runs, TEST_ACC).groupby(sa).mean()
    b = _numbers(baseline, TEST_ACC).groupby(sb).mean()
    common = a.index.intersection(b.index).sort_values()
    if len(common) < 2:
        return None
    return a[common].to_numpy(), b[common].to_numpy()


def compare(runs: pd.DataFrame, baseline: pd.DataFrame, protocol: bool = False) -> dict:
    """A technique's finished runs against the baseline's: ``delta``, ``ci_low``, ``ci_high``,
    ``p_value`` (unadjusted), its ``significance`` mark, the ``test`` used, the number of
    ``pairs`` and ``p_better`` with its interval."""
    base_acc = _numbers(baseline, TEST_ACC).to_numpy()
    if not len(base_acc):
        return {**NO_TEST, **NO_P_BETTER, "significance": "no baseline", "test": "", "pairs": 0}
    pairs = _pairs(runs, baseline, protocol)
    if pairs is not None:
        out = {**paired_t(*pairs), **p_better_paired(*pairs), "test": PAIRED,
               "pairs": len(pairs[0])}  # fmt: skip
    else:
        acc = _numbers(runs, TEST_ACC).to_numpy()
        out = {**welch(acc, base_acc), **p_better_unpaired(acc, base_acc), "test": WELCH,
               "pairs": 0}  # fmt: skip
    if math.isnan(out["p_value"]):
        out["test"] = ""
    out["significance"] = significance(out["p_value"])
    return out


def _is_protocol(runs: pd.DataFrame) -> bool:
    return "stage" in runs and runs["stage"].isin(TEST_STAGES).any()


# results.csv: the columns as they were before the protocol, then the new ones, in this order.
NEW_COLUMNS = ["p_holm", "test", "pairs", "p_better", "p_better_low", "p_better_high", "rank"]
TUNING_COLUMNS = ["tuned", "val_tuned", "val_delta"]


def summarize(runs: pd.DataFrame, protocol: dict | None = None) -> pd.DataFrame:
    """One row per (setting, technique) over the compared runs that finished: mean/std of
    METRICS, n, Δ test accuracy vs the setting's baseline with its 95% CI, p-value, Holm-adjusted
    p-value and mark, P(better) with its interval, rank; with the protocol, the tuned values."""
    rows = []
    tested = compared(runs)
    ok = tested[tested["status"] == "ok"]
    for (setting, technique), group in tested.groupby(["setting", "technique"], sort=False):
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
            row.update(NO_TEST, significance="", test="", pairs=0, **NO_P_BETTER)
        else:
            base = ok[(ok["setting"] == setting) & (ok["technique"] == BASELINE)]
            row.update(compare(done, base, protocol=_is_protocol(group)))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Baseline first in each setting, then the best mean test accuracy first.
    table["_base"] = table["technique"] != BASELINE
    table = table.sort_values(
        ["setting", "_base", f"{TEST_ACC} mean"], ascending=[True, True, False]
    )
    table = _adjust(table.drop(columns="_base").reset_index(drop=True))
    old = [c for c in table.columns if c not in NEW_COLUMNS and c != "significance"]
    table = table[[*old, "significance", *NEW_COLUMNS]]
    tuned = tuning(runs, protocol)
    if len(tuned):
        table = table.merge(tuned[["setting", "technique", *TUNING_COLUMNS]], how="left",
                            on=["setting", "technique"])  # fmt: skip
    return table


def _adjust(table: pd.DataFrame) -> pd.DataFrame:
    """Holm over each setting's tested techniques, the marks from the adjusted p; the rank."""
    table["p_holm"] = math.nan
    for _, idx in table.groupby("setting", sort=False).groups.items():
        table.loc[idx, "p_holm"] = holm(table.loc[idx, "p_value"])
    tested = table["p_holm"].notna()
    table.loc[tested, "significance"] = table.loc[tested, "p_holm"].map(significance)
    table["rank"] = (
        table.groupby("setting", sort=False)[f"{TEST_ACC} mean"]
        .rank(method="min", ascending=False)
        .astype("Int64")
    )
    return table


def cocktail_vs_best(runs: pd.DataFrame, summary: pd.DataFrame,
                     protocol: dict | None = None) -> pd.DataFrame:  # fmt: skip
    """Per setting with a tested cocktail: the best combination against the best single
    technique (highest mean test accuracy), paired by seed. One comparison per setting, so its
    p-value is not adjusted. A setting whose cocktail protocol.json says was ``skipped`` gets a
    row with the reason alone."""
    rows = []
    if summary.empty:
        return pd.DataFrame()
    ok = compared(runs)
    ok = ok[ok["status"] == "ok"]
    for setting, s in summary.groupby("setting", sort=False):
        cocktail = s[(s["technique"] == COCKTAIL) & (s["n"] > 0)]
        singles = s[~s["technique"].isin([BASELINE, COCKTAIL]) & (s["n"] > 0)]
        mine = ok[ok["setting"] == setting]
        if cocktail.empty or singles.empty:
            study = next((x for x in mine.get("study", []) if isinstance(x, str)), None)
            skipped = protocol_entry(protocol or {}, COCKTAIL, study).get("skipped")
            if study and skipped:
                rows.append({"setting": setting, "skipped": str(skipped)})
            continue
        best = singles.sort_values(f"{TEST_ACC} mean", ascending=False, kind="stable").iloc[0]
        res = compare(mine[mine["technique"] == COCKTAIL],
                      mine[mine["technique"] == best["technique"]], protocol=True)  # fmt: skip
        rows.append({"setting": setting, "best_single": best["technique"], **res, "skipped": None})
    return pd.DataFrame(rows)
