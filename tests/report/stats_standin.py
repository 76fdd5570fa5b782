"""A small stand-in for ``reglab.stats`` (its API: sequential, paired_test, p_better_interval,
Verdict), installed by conftest.py only while the real module has not landed. One look, Holm
across arms, a paired t-test, TOST for equivalence; enough to give clear-cut data its verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class Verdict:
    arm: str
    verdict: str
    n: int
    look: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_tost: float
    level: float
    test: str
    mde: float
    seeds_needed: int | None
    wins: int
    ties: int
    p_better: float
    p_better_low: float
    p_better_high: float


def p_better_interval(wins: float, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    low = stats.beta.ppf(0.025, wins, n - wins + 1) if wins > 0 else 0.0
    high = stats.beta.ppf(0.975, wins + 1, n - wins) if wins < n else 1.0
    return float(low), float(high)


def paired_test(diffs: Sequence[float], level: float, delta: float = 0.01) -> dict:
    d = np.asarray(diffs, float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    out = {"n": n, "mean": mean, "ci_low": mean, "ci_high": mean, "test": "paired t"}
    if n < 2 or not d.std():
        return {**out, "p_value": 1.0 if n >= 2 else math.nan, "p_tost": math.nan, "sd": 0.0}
    sd = d.std(ddof=1)
    se = sd / math.sqrt(n)
    t = stats.t.ppf(1 - level / 2, n - 1)
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    p_tost = max(stats.t.sf((mean + delta) / se, n - 1), stats.t.sf((delta - mean) / se, n - 1))
    return {
        **out,
        "ci_low": mean - t * se,
        "ci_high": mean + t * se,
        "p_value": p,
        "p_tost": float(p_tost),
        "sd": sd,
    }


def sequential(diffs: Mapping[str, Sequence[float]], design) -> dict[str, Verdict]:
    arms = list(diffs)
    tests = {a: paired_test(diffs[a], design.alpha, design.delta) for a in arms}
    order = sorted(arms, key=lambda a: tests[a]["p_value"] if tests[a]["n"] > 1 else 2.0)
    out, rejecting = {}, True
    for i, arm in enumerate(order):
        d, r = np.asarray(diffs[arm], float), tests[arm]
        n, level = len(d), design.alpha / (len(arms) - i)
        sd = d.std(ddof=1) if n > 1 else math.nan
        se = sd / math.sqrt(n) if n > 1 else math.nan
        if n > 1 and sd > 0:
            p_tost = max(
                stats.t.sf((r["mean"] + design.delta) / se, n - 1),
                stats.t.sf((design.delta - r["mean"]) / se, n - 1),
            )
        else:
            p_tost = 0.0 if n > 1 and abs(r["mean"]) < design.delta else 1.0
        rejecting = rejecting and n > 1 and r["p_value"] < level
        verdict = "undecided"
        if rejecting:
            verdict = "better" if r["mean"] > 0 else "worse"
        elif p_tost < level:
            verdict = "equivalent"
        z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(design.power)
        mde = float(z * se) if n > 1 else math.nan
        need = math.ceil((z * sd / max(abs(r["mean"]), design.delta)) ** 2) if n > 1 else None
        wins, ties = int((d > 0).sum()), int((d == 0).sum())
        low, high = p_better_interval(wins + ties / 2, n)
        look = max((k for k, n_k in enumerate(design.looks) if n_k <= n), default=-1)
        out[arm] = Verdict(
            arm,
            verdict,
            n,
            look,
            r["mean"],
            r["ci_low"],
            r["ci_high"],
            r["p_value"],
            float(p_tost),
            level,
            "paired t",
            mde,
            need,
            wins,
            ties,
            (wins + ties / 2) / n if n else math.nan,
            low,
            high,
        )
    return out
