"""reglab.stats on synthetic paired differences whose truth is known: the error rates the
module promises (false better/worse, false equivalence, both together), power, interval
coverage, the exact test for differences that do not vary, and the replay of looks.

Rates are Monte-Carlo estimates over seeded simulations; each bound is the promised rate plus
three standard errors of the estimate (``_bound``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import ttost_paired

from reglab.core.errors import ConfigError
from reglab.core.plan import Design
from reglab.stats import (
    look_levels,
    next_seeds,
    p_better_interval,
    paired_test,
    replay,
    sequential,
    spent,
)

DESIGN = Design()  # looks 5, 10, 20, 30; alpha 0.05; delta 0.01; power 0.8; Pocock
DELTA = DESIGN.delta


def _bound(rate: float, sims: int) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / sims)


def _any(verdicts: np.ndarray, *names: str) -> float:
    """The fraction of simulations (rows) with at least one arm given one of ``names``."""
    return float(np.isin(verdicts, names).any(axis=1).mean())


# --- spending -------------------------------------------------------------------------------


def test_pocock_spending_by_hand():
    # alpha * ln(1 + (e - 1) t) at t = 5/30, 10/30, 20/30, 1
    expected = [0.05 * math.log(1 + (math.e - 1) * n / 30) for n in (5, 10, 20, 30)]
    assert [spent(DESIGN, k) for k in range(4)] == pytest.approx(expected, rel=1e-12)
    assert spent(DESIGN, 0) == pytest.approx(0.012592, abs=1e-6)  # 0.05 * ln(1.286380)
    levels = look_levels(DESIGN)
    assert sum(levels) == pytest.approx(0.05, rel=1e-12)
    assert all(a > 0 for a in levels)
    assert levels[1] == pytest.approx(expected[1] - expected[0], rel=1e-12)


def test_obrien_fleming_spending_by_hand():
    design = Design(looks=[10, 20], spending="obrien_fleming")
    # 2 - 2 Phi(1.959964 / sqrt(1/2)) = 2 - 2 Phi(2.771808) = 0.005575
    assert spent(design, 0) == pytest.approx(0.005575, abs=2e-6)
    assert spent(design, 1) == 0.05
    assert sum(look_levels(design)) == pytest.approx(0.05, rel=1e-12)
    # O'Brien-Fleming keeps almost everything for the end, Pocock spends early
    assert look_levels(design)[0] < look_levels(Design(looks=[10, 20]))[0]


@pytest.mark.parametrize(
    "bad",
    [
        Design(looks=[]),
        Design(looks=[5, 5]),
        Design(looks=[1, 10]),
        Design(alpha=1.5),
        Design(delta=0),
        Design(power=1),
        Design(spending="haybittle"),
    ],
)
def test_an_impossible_design_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError) as err:
        look_levels(bad)
    assert "\n" not in str(err.value)


# --- one arm's test -------------------------------------------------------------------------


def test_paired_test_agrees_with_scipy_and_statsmodels():
    rng = np.random.default_rng(0)
    for n, shift in ((5, 0.004), (12, -0.02), (30, 0.0)):
        d = rng.normal(shift, 0.01, n)
        out = paired_test(d, 0.01)
        ref = sps.ttest_1samp(d, 0.0)
        ci = ref.confidence_interval(0.99)
        assert out["test"] == "paired t"
        assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (out["ci_low"], out["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        tost = ttost_paired(d, np.zeros(n), -DELTA, DELTA)[0]
        assert out["p_tost"] == pytest.approx(tost, rel=1e-9)


def test_a_constant_difference_gets_the_exact_sign_flip_test():
    # one test image more than the baseline on each of 5 seeds (450 images), as accuracies
    arm = np.array([301, 290, 322, 310, 299]) / 450
    base = np.array([300, 289, 321, 309, 298]) / 450
    out = paired_test(arm - base, 0.05)
    assert out["test"] == "exact sign-flip"
    assert out["p_value"] == pytest.approx(0.0625)
    assert out["p_value"] == pytest.approx(sps.binomtest(5, 5, 0.5).pvalue)
    assert out["p_tost"] == pytest.approx(0.5**5)  # 1/450 lies within +-0.01
    assert paired_test([0.02] * 5, 0.05)["p_tost"] == 1.0  # outside the margin
    zeros = paired_test([0.0] * 8, 0.05)
    assert (zeros["p_value"], zeros["p_tost"]) == (1.0, pytest.approx(0.5**8))
    # enough seeds decide it: better at the look where 2 * 0.5**n reaches the look's level
    v = sequential({"a": [1 / 450] * 30}, DESIGN)["a"]
    assert (v.verdict, v.n, v.test) == ("better", 10, "exact sign-flip")
    assert v.ci_low == v.ci_high == pytest.approx(1 / 450)


def test_non_finite_differences_are_refused():
    with pytest.raises(ConfigError, match="finite"):
        sequential({"a": [0.01, math.nan, 0.0, 0.01, 0.02]}, DESIGN)


# --- error rates and power ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sims", "arms", "sd"),
    [
        (5000, 10, 0.01),  # bound 0.05 + 3 se = 0.0592
        # many arms, most found equivalent early: the ones left are the extreme ones, and a
        # divisor of only the arms still tested reaches 0.071-0.079 here (seeds 1-3)
        (3000, 30, 0.008),  # bound 0.0619
    ],
)
def test_no_effect_gives_a_false_better_or_worse_rarely(sims, arms, sd):
    # every arm has true effect 0: the rate of simulations with ANY better/worse verdict
    block = np.random.default_rng(1).normal(0.0, sd, (sims, arms, 30))
    assert _any(replay(block, DESIGN)["verdict"], "better", "worse") <= _bound(DESIGN.alpha, sims)


def test_an_effect_beyond_the_margin_is_rarely_called_equivalent():
    # 1000 simulations x 5 arms with true effect 1.5 delta, SD 2 delta: any "equivalent"
    sims = 1000
    block = np.random.default_rng(2).normal(1.5 * DELTA, 2 * DELTA, (sims, 5, 30))
    assert _any(replay(block, DESIGN)["verdict"], "equivalent") <= _bound(DESIGN.alpha, sims)


def test_tost_is_exact_at_the_margin():
    # a mean exactly at delta: p_tost <= level must happen at rate <= level, and close to it
    # when the margin is many standard errors wide (the other one-sided test always rejects)
    sims, level = 4000, 0.05
    block = np.random.default_rng(3).normal(DELTA, DELTA / 10, (sims, 1, 10))
    rate = np.mean(replay(block, Design(looks=[10]))["p_tost"] <= level)
    assert rate <= _bound(level, sims)
    assert rate >= level - 3 * math.sqrt(level * (1 - level) / sims)


def test_null_arms_beside_an_arm_at_the_margin_keep_all_errors_below_alpha():
    # One arm with mean 0 (better/worse would be false) beside one at exactly delta
    # (equivalent would be false), over the four looks and over one look of 5 seeds (where
    # Holm on H alone plus a separate TOST reaches 0.053). 10000 simulations, bound 0.0565.
    sims = 10000
    rng = np.random.default_rng(4)
    sd = DELTA * math.sqrt(5) / 3  # the margin is 3 standard errors wide at 5 seeds
    block = np.stack([rng.normal(0, sd, (sims, 30)), rng.normal(DELTA, sd, (sims, 30))], axis=1)
    for design in (DESIGN, Design(looks=[5])):
        v = replay(block, design)["verdict"]
        wrong = np.isin(v[:, 0], ("better", "worse")) | (v[:, 1] == "equivalent")
        assert wrong.mean() <= _bound(DESIGN.alpha, sims)


def test_a_real_effect_is_found_and_a_null_with_small_spread_is_equivalent():
    # 500 simulations: one arm 1.2 SD better beside 4 null arms (SD 0.01), and one null arm
    # with SD delta/4 among 5; both must end as planted in >= 80% of the simulations
    sims = 500
    rng = np.random.default_rng(5)
    block = rng.normal(0.0, 0.01, (sims, 5, 30))
    block[:, 0] += 0.012
    assert np.mean(replay(block, DESIGN)["verdict"][:, 0] == "better") >= 0.8
    quiet = rng.normal(0.0, DELTA / 4, (sims, 5, 30))
    assert np.mean(replay(quiet, DESIGN)["verdict"][:, 0] == "equivalent") >= 0.8


def test_replay_gives_sequentials_rows():
    block = np.random.default_rng(12).normal(0.004, 0.01, (20, 3, 30))
    rows = replay(block, DESIGN, seeds=[30, 20, 3])
    for s, sim in enumerate(block):
        verdicts = sequential({"a": sim[0], "b": sim[1, :20], "c": sim[2, :3]}, DESIGN)
        for i, v in enumerate(verdicts.values()):
            for key in ("verdict", "look", "n", "level", "mean", "p_value", "ci_low", "eq_high"):
                assert getattr(v, "mean_diff" if key == "mean" else key) == rows[key][s, i]


# --- intervals ------------------------------------------------------------------------------


def test_the_interval_covers_the_true_mean_at_each_looks_level():
    # single arm: at look k the level is a_k (a one-look design of alpha a_k tests at a_k);
    # 2000 simulations per look
    sims, truth = 2000, 0.004
    rng = np.random.default_rng(6)
    for n, level in zip(DESIGN.looks, look_levels(DESIGN), strict=True):
        rows = replay(rng.normal(truth, 0.01, (sims, 1, n)), Design(looks=[n], alpha=level))
        assert (rows["level"] == level).all()
        covered = np.mean((rows["ci_low"] <= truth) & (truth <= rows["ci_high"]))
        assert covered >= 1 - _bound(level, sims)


def test_a_single_arms_reported_interval_covers_whatever_look_stopped_it():
    # The interval reported at the stopping look is chosen by the data; the looks' intervals
    # all hold together with probability >= 1 - alpha (union bound), so the reported one does.
    sims, truth = 2000, 0.006
    rows = replay(np.random.default_rng(7).normal(truth, 0.01, (sims, 1, 30)), DESIGN)
    assert set(rows["level"].ravel()) <= set(look_levels(DESIGN))  # one arm: the look's a_k
    covered = np.mean((rows["ci_low"] <= truth) & (truth <= rows["ci_high"]))
    assert covered >= 1 - _bound(DESIGN.alpha, sims)


def test_p_better_interval_is_clopper_pearson_and_covers():
    assert p_better_interval(3, 5) == pytest.approx(
        proportion_confint(3, 5, alpha=0.05, method="beta")
    )
    # a half win: the union of the intervals for 2 and 3 wins
    low, high = p_better_interval(2.5, 5)
    assert low == pytest.approx(proportion_confint(2, 5, method="beta")[0])
    assert high == pytest.approx(proportion_confint(3, 5, method="beta")[1])
    assert p_better_interval(5, 5)[1] == 1.0 and p_better_interval(0, 5)[0] == 0.0
    row = sequential({"a": [0.01, 0.0, -0.01, 0.02, 0.01]}, Design(looks=[5]))["a"]
    assert (row.wins, row.ties, row.p_better) == (3, 1, 0.7)
    assert (row.p_better_low, row.p_better_high) == p_better_interval(3.5, 5)
    # P(better) = 0.9 from 80% wins and 20% ties (half a win each); 4000 simulations each
    sims = 4000
    rng = np.random.default_rng(8)
    for n in (5, 20):
        outcome = rng.choice([1.0, 0.5], p=[0.8, 0.2], size=(sims, n)).sum(axis=1)
        covered = np.mean(
            [lo <= 0.9 <= hi for lo, hi in (p_better_interval(x, n) for x in outcome)]
        )
        assert covered >= 1 - _bound(0.05, sims)
    # without ties the exact coverage, summed over the binomial law
    for n in (5, 20):
        cover = sum(
            sps.binom.pmf(x, n, 0.9)
            for x in range(n + 1)
            if p_better_interval(x, n)[0] <= 0.9 <= p_better_interval(x, n)[1]
        )
        assert cover >= 0.95


# --- minimum detectable effect --------------------------------------------------------------


def test_an_undecided_arm_carries_its_minimum_detectable_effect():
    d = np.random.default_rng(9).normal(0.004, 0.03, 5)
    v = sequential({"a": d, "b": d[::-1] * 0.5}, Design(looks=[5, 10]))["a"]
    assert v.verdict == "undecided"
    final = look_levels(Design(looks=[5, 10]))[-1] / 2  # the last look's share for one arm
    sd = np.std(d, ddof=1)
    mde = (sps.t.ppf(1 - final / 2, 4) + sps.t.ppf(0.8, 4)) * sd / math.sqrt(5)
    assert v.mde == pytest.approx(mde, rel=1e-9)
    z = sps.norm.ppf(1 - final / 2) + sps.norm.ppf(0.8)
    assert v.seeds_needed == max(6, math.ceil((z * sd / DELTA) ** 2))
    # differences that do not vary use the metric's resolution (the smallest step seen)
    flat = sequential({"a": [1 / 450] * 5, "b": [2 / 450, 0.0, 1 / 450, 3 / 450, 0.0]}, DESIGN)
    assert flat["a"].mde > 0 and flat["a"].test == "exact sign-flip"
    assert flat["a"].mde == pytest.approx(
        (sps.t.ppf(1 - look_levels(DESIGN)[-1] / 4, 4) + sps.t.ppf(0.8, 4)) / 450 / math.sqrt(5)
    )


# --- replaying looks ------------------------------------------------------------------------


def _arms(rng) -> dict[str, np.ndarray]:
    effects = [0.0, 0.0, 0.003, 0.008, 0.015, -0.012, 0.0, 0.02]
    sds = [0.002, 0.01, 0.01, 0.01, 0.01, 0.01, 0.03, 0.005]
    return {
        f"arm{i}": rng.normal(e, s, 30) for i, (e, s) in enumerate(zip(effects, sds, strict=True))
    }


def test_rounds_of_seeds_replay_to_the_same_verdicts():
    deciding_looks = set()
    for seed in range(10):
        full = _arms(np.random.default_rng(100 + seed))
        # the driver: every arm gets the first look's seeds, then only what next_seeds asks
        have = dict.fromkeys(full, DESIGN.looks[0])
        seen: dict[str, str] = {}
        while True:
            verdicts = sequential({a: full[a][: have[a]] for a in full}, DESIGN)
            for arm, v in verdicts.items():  # a decided arm keeps its verdict
                assert seen.setdefault(arm, v.verdict) in ("undecided", v.verdict)
                seen[arm] = v.verdict
            more = next_seeds(verdicts, DESIGN)
            if not more:
                break
            assert all(n > have[a] and n in DESIGN.looks for a, n in more.items())
            have.update(more)
        # the report sees every seed of every arm; the verdicts are the driver's
        assert sequential(full, DESIGN) == verdicts
        # cut each decided arm at its deciding look: the same again
        cut = {
            a: full[a][: v.n] if v.verdict != "undecided" else full[a] for a, v in verdicts.items()
        }
        assert sequential(cut, DESIGN) == verdicts
        deciding_looks |= {v.look for v in verdicts.values() if v.verdict != "undecided"}
    assert len(deciding_looks) >= 3  # arms left at several looks: the replay had work to do


def test_next_seeds_asks_for_the_next_look_of_undecided_arms_only():
    rng = np.random.default_rng(11)
    verdicts = sequential(
        {
            "clear": rng.normal(0.05, 0.001, 5),
            "unsure": rng.normal(0.0, 0.05, 5),
            "late": rng.normal(0.0, 0.05, 3),  # fewer seeds than the first look
            "done": rng.normal(0.0, 0.05, 30),
        },
        DESIGN,
    )
    assert verdicts["late"].look == -1 and verdicts["late"].verdict == "undecided"
    expected = {"unsure": 10, "late": 5}
    if verdicts["done"].verdict == "undecided":
        assert verdicts["done"].n == 30  # at the last look: no more seeds
    assert next_seeds(verdicts, DESIGN) == expected


def test_a_constant_difference_logged_as_float32_is_still_constant():
    """One image of 450 on every seed, through float32 (as metrics.json holds accuracies): the
    differences vary by ~4e-8, which is rounding, not variance, so the exact test decides."""
    correct = np.array([300, 301, 300])  # of 450 test images
    arm, base = np.float32((correct + 1) / 450), np.float32(correct / 450)
    diffs = arm.astype(float) - base.astype(float)
    assert np.ptp(diffs) > 0  # not exactly constant
    out = paired_test(diffs, 0.05)
    assert out["test"] == "exact sign-flip" and out["p_value"] == pytest.approx(0.25)
