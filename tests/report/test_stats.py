"""Every number of the report's statistics against the same number worked out by hand: the
paired t by its formula, Welch's by Satterthwaite, Holm's step-down by sorting, P(better) by
counting, its bootstrap interval from the exact bootstrap distribution (every resample listed)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reglab.report import build_report, cocktail_vs_best, load_runs, summarize, tuning
from reglab.report.stats import holm
from reglab.report.tuning import scores

from .conftest import BASE, BASELINE_TEST, L2, L2_KEY, SEEDS, TRIALS, test_acc, write_run


def paired_by_hand(a, b):
    """Mean difference, 95% t interval and two-sided p of the paired t-test, from the formula."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    return mean, mean - half, mean + half, 2 * stats.t.sf(abs(mean / se), n - 1)


def holm_by_hand(p):
    """Holm: sort ascending, multiply the i-th smallest (from 0) by m - i, keep the running max."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def wins(d):
    return sum(1.0 if x > 0 else 0.5 if x == 0 else 0.0 for x in d) / len(d)


def exact_bootstrap_interval(statistic, *samples):
    """The 95% percentile interval of the exact bootstrap distribution: every way of resampling
    each sample with replacement, equally likely. Also how far the discrete CDF stays from 2.5%
    and 97.5%, so that 9999 random resamples must land on the same two values."""
    outcomes = [
        statistic(*[[s[i] for i in pick] for s, pick in zip(samples, picks, strict=True)])
        for picks in itertools.product(
            *[itertools.product(range(len(s)), repeat=len(s)) for s in samples]
        )
    ]
    values, counts = np.unique(np.round(outcomes, 12), return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    margin = min(abs(cdf - q).min() for q in (0.025, 0.975))
    return values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)], margin


def test_holm_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04 -> kept
    # at 0.06 by the running maximum. NaN (no test) is not counted in m.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, math.nan]), [0.03, 0.06, 0.06, math.nan])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert holm_by_hand([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_plain_sweep_with_the_same_seeds_is_paired(fixed_sweep):
    table = build_report(fixed_sweep).set_index("technique")
    assert list(table.index) == ["baseline", "l2", "dropout", "l1"]  # baseline first, then by acc
    base, l2 = table.loc["baseline"], table.loc["l2"]
    assert base["n"] == 3 and l2["n"] == 3 and table.loc["l1", "n"] == 0
    assert table.loc["l1", "failed"] == 1
    assert math.isclose(base["test/acc mean"], 0.92) and math.isclose(base["test/acc std"], 0.02)
    assert math.isclose(l2["test/acc mean"], 0.97) and math.isclose(l2["test/acc std"], 0.01)

    # Differences 0.06, 0.05, 0.04: mean 0.05, sd 0.01, se 0.01/sqrt(3), t = 8.66 on 2 df.
    delta, low, high, p = paired_by_hand(L2, BASE)
    assert math.isclose(delta, 0.05) and 0.01 < p < 0.02
    assert l2["test"] == "paired t" and l2["pairs"] == 3
    assert math.isclose(l2["delta"], delta, rel_tol=1e-9)
    assert math.isclose(l2["ci_low"], low, rel_tol=1e-9)
    assert math.isclose(l2["ci_high"], high, rel_tol=1e-9)
    assert math.isclose(l2["p_value"], p, rel_tol=1e-9)
    # One technique tested: Holm leaves its p as it is.
    assert math.isclose(l2["p_holm"], p, rel_tol=1e-9) and l2["significance"] == "*"
    # l2 wins on every seed: P(better) = 1, and every bootstrap resample says 1.
    assert (l2["p_better"], l2["p_better_low"], l2["p_better_high"]) == (1.0, 1.0, 1.0)
    # One run cannot be tested: Δ is shown, p and CI are not; its P(better) counts the baseline
    # runs it beats (0.91 > 0.90 only: 1 of 3).
    drop = table.loc["dropout"]
    assert math.isclose(drop["delta"], -0.01, abs_tol=1e-12) and drop["significance"] == "n/a"
    assert math.isnan(drop["p_value"]) and math.isnan(drop["ci_low"]) and drop["test"] == ""
    assert math.isclose(drop["p_better"], 1 / 3) and math.isnan(drop["p_better_low"])
    assert list(table["rank"].astype("float")[:3]) == [2, 1, 3]
    assert table["rank"].isna()["l1"]


def test_unequal_seeds_fall_back_to_welch(tmp_path):
    sweep = tmp_path / "sweep"
    tech = [0.93, 0.95, 0.97]
    for i, (b, t) in enumerate(zip(BASE, tech, strict=True)):
        write_run(sweep, f"{i}_baseline", "baseline", b, seed=i)
        write_run(sweep, f"{i + 3}_l2", "l2", t, seed=i + 10)  # no seed in common
    row = build_report(sweep).set_index("technique").loc["l2"]
    assert row["test"] == "Welch t" and row["pairs"] == 0
    # Welch by hand: se^2 = s1^2/n1 + s2^2/n2, Welch-Satterthwaite df, t quantile for the CI.
    a = b = 0.02**2 / 3
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    half = stats.t.ppf(0.975, df) * se
    assert math.isclose(df, 4.0)
    assert math.isclose(row["delta"], 0.03, abs_tol=1e-12)
    assert math.isclose(row["ci_low"], 0.03 - half, rel_tol=1e-9)
    assert math.isclose(row["ci_high"], 0.03 + half, rel_tol=1e-9)
    assert math.isclose(row["p_value"], 2 * stats.t.sf(0.03 / se, df), rel_tol=1e-9)
    # Without pairs, P(better) is over all 9 (l2 run, baseline run) pairs: 0.93 beats 0.90 and
    # 0.92, 0.95 and 0.97 beat all three: 8 of 9. Its interval: each group resampled on its own.
    assert math.isclose(row["p_better"], 8 / 9)
    low, high, margin = exact_bootstrap_interval(
        lambda x, y: wins([u - v for u in x for v in y]), tech, BASE
    )
    assert margin > 0.005
    assert math.isclose(row["p_better_low"], low) and math.isclose(row["p_better_high"], high)
    assert low < 8 / 9 <= high


def test_folds_are_aggregated_with_welch_and_settings_kept_apart(tmp_path):
    sweep = tmp_path / "cv"
    for fold, acc in enumerate([0.90, 0.91, 0.92]):
        write_run(sweep, f"{fold}_baseline", "baseline", acc, fold=fold)
        write_run(sweep, f"{fold + 3}_l2", "l2", acc + 0.01, fold=fold)
    write_run(sweep, "9_baseline_cnn", "baseline", 0.5, model="cnn")
    table = build_report(sweep)
    mlp = table[table["setting"] == "digits/mlp"].set_index("technique")
    assert list(mlp["n"]) == [3, 3] and set(mlp["over"]) == {"folds"}
    assert math.isclose(mlp.loc["l2", "delta"], 0.01, abs_tol=1e-9)
    assert mlp.loc["l2", "test"] == "Welch t"  # folds share training data: never paired
    cnn = table[table["setting"] == "digits/cnn"]
    assert list(cnn["technique"]) == ["baseline"] and list(cnn["n"]) == [1]


def test_a_setting_without_baseline_is_marked_not_tested(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate([0.8, 0.9]):
        write_run(sweep, f"{seed}_l2", "l2", acc, seed=seed, data="fashion")
    (row,) = build_report(sweep).to_dict("records")
    assert row["significance"] == "no baseline" and row["n"] == 2
    assert math.isclose(row["test/acc mean"], 0.85) and math.isnan(row["delta"])


def test_protocol_statistics_by_hand(protocol_sweep):
    table = build_report(protocol_sweep).set_index("technique")
    # Only the test stages are compared; stage-1 trials have no test metrics and no row.
    assert sorted(table.index) == sorted(
        ["baseline", "l2", "dropout", "flip", "early_stopping", "cocktail"]
    )
    assert (table["n"] == len(SEEDS)).all() and (table.drop("baseline")["pairs"] == 5).all()
    base = test_acc("baseline")
    assert math.isclose(table.loc["baseline", "test/acc mean"], np.mean(BASELINE_TEST))
    techniques = ["l2", "dropout", "flip", "early_stopping", "cocktail"]
    # early_stopping equals the baseline on every seed: the t statistic is 0/0; the report
    # says what the data say, no difference at all (p = 1, interval [0, 0]).
    hand = {t: paired_by_hand(test_acc(t), base) for t in techniques if t != "early_stopping"}
    hand["early_stopping"] = (0.0, 0.0, 0.0, 1.0)
    for t in techniques:
        row = table.loc[t]
        assert row["test"] == "paired t"
        for col, value in zip(("delta", "ci_low", "ci_high", "p_value"), hand[t], strict=True):
            assert math.isclose(row[col], value, rel_tol=1e-9, abs_tol=1e-15), (t, col)
    # Holm over the 5 comparisons.
    adjusted = dict(zip(techniques, holm_by_hand([hand[t][3] for t in techniques]), strict=True))
    for t in techniques:
        assert math.isclose(table.loc[t, "p_holm"], adjusted[t], rel_tol=1e-9), t
    # dropout: p < 0.05 alone, not after the correction -> "ns"; its CI excludes 0.
    drop = table.loc["dropout"]
    assert drop["p_value"] < 0.05 <= drop["p_holm"] and drop["significance"] == "ns"
    assert drop["ci_low"] > 0
    assert table.loc["l2", "significance"] in ("*", "**", "***")
    assert (
        table.loc["flip", "significance"] in ("*", "**", "***") and table.loc["flip", "delta"] < 0
    )
    assert table.loc["early_stopping", "significance"] == "ns"

    # P(better) by counting seeds: dropout wins 4, ties 1 -> (4 + 0.5) / 5 = 0.9.
    for t in techniques:
        d = [x - y for x, y in zip(test_acc(t), base, strict=True)]
        assert math.isclose(table.loc[t, "p_better"], wins(d)), t
        low, high, margin = exact_bootstrap_interval(wins, d)
        assert margin > 0.005 or low == high
        assert (table.loc[t, "p_better_low"], table.loc[t, "p_better_high"]) == pytest.approx(
            (low, high)
        ), t
    assert table.loc["dropout", "p_better"] == 0.9
    # Exact bootstrap of dropout: the number of resampled ties Z ~ Bin(5, 1/5), P(better) =
    # 1 - Z/10; P(Z >= 4) = 0.0067 < 2.5% < P(Z >= 3) = 0.058, so the interval starts at 0.7.
    assert table.loc["dropout", "p_better_low"] == pytest.approx(0.7)
    assert table.loc["dropout", "p_better_high"] == 1.0
    # Ranks by mean test accuracy; early_stopping ties with the baseline and shares its rank.
    ranks = table["rank"].astype(int).to_dict()
    assert ranks == {"cocktail": 1, "l2": 2, "dropout": 3, "baseline": 4, "early_stopping": 4,
                     "flip": 6}  # fmt: skip


def test_protocol_pairs_only_the_seeds_both_have(tmp_path):
    sweep = tmp_path / "sweep"
    protocol = {"stage": "test", "technique": None, "trial": None, "params": {}}
    for seed, acc in zip(SEEDS, BASELINE_TEST, strict=True):
        write_run(sweep, f"b{seed}", "baseline", acc, seed=seed,
                  protocol={**protocol, "technique": "baseline"})  # fmt: skip
    l2 = test_acc("l2")
    for seed, acc in zip(SEEDS[:4], l2[:4], strict=True):
        write_run(sweep, f"l{seed}", "l2", acc, seed=seed, protocol={**protocol, "technique": "l2"})
    write_run(sweep, "l5", "l2", None, seed=5, protocol={**protocol, "technique": "l2"})
    row = build_report(sweep).set_index("technique").loc["l2"]
    delta, low, high, p = paired_by_hand(l2[:4], BASELINE_TEST[:4])
    assert row["pairs"] == 4 and row["n"] == 4 and row["failed"] == 1
    assert math.isclose(row["delta"], delta, rel_tol=1e-9)
    assert math.isclose(row["ci_low"], low, rel_tol=1e-9)
    assert math.isclose(row["p_value"], p, rel_tol=1e-9)


def test_cocktail_against_the_best_single_technique(protocol_sweep):
    runs = load_runs(protocol_sweep)
    (row,) = cocktail_vs_best(runs, summarize(runs)).to_dict("records")
    assert row["best_single"] == "l2"  # the highest mean test accuracy of the single techniques
    delta, low, high, p = paired_by_hand(test_acc("cocktail"), test_acc("l2"))
    # Differences +0.005, +0.005, -0.005, +0.010, +0.005: mean 0.004, 4 of 5 seeds won.
    assert math.isclose(delta, 0.004, abs_tol=1e-12)
    assert math.isclose(row["delta"], delta, rel_tol=1e-9)
    assert math.isclose(row["ci_low"], low, rel_tol=1e-9) and low < 0 < high
    assert math.isclose(row["p_value"], p, rel_tol=1e-9) and row["significance"] == "ns"
    assert math.isclose(row["p_better"], 0.8) and row["pairs"] == 5


def test_the_tuning_score_follows_the_objective(tmp_path):
    # "tested" (reglab.tune's default) reads the validation accuracy of the weights the test
    # uses: val/acc_best for a run tested with its best checkpoint, the final val/acc otherwise.
    runs = pd.DataFrame({"val/acc": [0.90, 0.90], "val/acc_best": [0.95, 0.95],
                         "tested": ["best checkpoint", "final weights"]})  # fmt: skip
    assert list(scores(runs, "tested")) == [0.95, 0.90]
    assert list(scores(runs, "val/acc_best")) == [0.95, 0.95]
    assert scores(runs, "val/loss").isna().all()


def test_tuning_picks_the_best_finished_trial_by_validation(protocol_sweep):
    for m in (protocol_sweep / "test").rglob("metrics.json"):  # no stage 2: the trials decide
        m.unlink()
    runs = load_runs(protocol_sweep)
    table = tuning(runs, {}).set_index("technique")
    # Each technique's best finished trial (a pruned one never wins), its validation score
    # (val/acc: the trials tested their final weights) and the difference from the baseline's.
    for technique, trials in TRIALS.items():
        best = max((t for t in trials if t[2] == "ok"), key=lambda t: t[1])
        row = table.loc[technique]
        assert row["params"] == best[0] and row["source"] == "best trial", technique
        assert math.isclose(row["val_tuned"], best[1]), technique
        assert row["trials"] == len(trials)
        assert row["pruned"] == sum(t[2] == "pruned" for t in trials)
    assert math.isclose(table.loc["dropout", "val_delta"], 0.942 - 0.930)
    assert math.isclose(table.loc["flip", "val_delta"], 0.910 - 0.930)
    assert math.isnan(table.loc["baseline", "val_delta"])
    # A minimized objective turns "better" around: the lowest score wins, Δ > 0 means lower.
    low = tuning(runs, {"objective": "val/acc", "direction": "minimize"}).set_index("technique")
    assert low.loc["l2", "params"] == {L2_KEY: 1e-6} and math.isclose(
        low.loc["l2", "val_tuned"], 0.931
    )
    assert math.isclose(low.loc["flip", "val_delta"], 0.930 - 0.910)
