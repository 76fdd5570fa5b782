"""Verdicts from paired seeds: every arm against the baseline, on the per-seed differences
``arm - baseline`` of the compared metric. Pure functions: numbers in, numbers out.

**Looks.** Seeds come in rounds: ``design.looks`` are cumulative seed counts, and only the arms
still undecided get the next round. Look ``k`` spends ``a_k = spent(k) - spent(k - 1)`` of
``design.alpha``; ``spent`` is a Lan-DeMets spending function of the information fraction
``t_k = looks[k] / looks[-1]`` (Lan & DeMets 1983, "Discrete sequential boundaries for clinical
trials", Biometrika 70:659-663): Pocock-like ``alpha * ln(1 + (e - 1) t)`` or O'Brien-Fleming-
like ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``.

**One look.** The undecided arms that have ``n_k`` differences are tested on their first
``n_k``; each arm ``i`` holds two null hypotheses:

- ``H_i``: mean 0 (paired t, two-sided; the exact sign-flip test when the differences do not
  vary). Rejected: "better" or "worse", by the sign of the mean.
- ``E_i``: ``|mean| >= delta`` (TOST, Schuirmann 1987: the larger of the two one-sided
  p-values). Rejected, and ``H_i`` not: "equivalent".

Their p-values go through Holm's (1979) step-down at level ``a_k`` with Shaffer's (1986,
JASA 81:826) count of the hypotheses that can still be true: sorted ascending, each is rejected
while ``p <= a_k / t``, the first above stops the look. ``t`` counts the arms that still hold a
hypothesis no look has rejected, EVERY arm of the comparison, tested at this look or not: an arm
leaves the count only once both its hypotheses are rejected (a real effect inside the margin,
well measured).

**Why all false verdicts together stay below alpha.** A false verdict rejects a true null:
``H_i`` (a mean of 0 called better or worse) or ``E_i`` (a mean at least ``delta`` away called
equivalent). They exclude each other, so each arm holds at most one true null; ``J``, the set
of them, is fixed by the truth. Take the first false rejection, at look ``k`` of ``j`` in ``J``:
every rejection before it was of a false null, so every arm of ``J`` still holds its true null
and ``t >= |J|``, so ``p_jk <= a_k / |J|`` (``p_jk``: ``j``'s test on its first ``n_k`` seeds).
By the union bound over ``J`` and over looks (no joint law of the looks needed) this has
probability at most ``sum_k a_k / |J| * |J| = alpha``, whatever arms the rounds dropped. Each
test is valid at its level (t: for roughly normal differences; sign-flip: exact). A divisor of
only the arms tested at the look is not valid: the arms left undecided are the extreme ones,
and a shrinking divisor raises their level (null arms, alpha 0.05: 10 arms 0.059 where this
procedure gives 0.042, 20000 simulations; 30 arms 0.071-0.079 where it gives 0.033-0.042);
neither is Holm over the ``H_i`` alone with TOST at ``a_k / m_k`` (one look, a null arm beside
one at ``delta``: 0.053). The sign of a better/worse verdict is the sign of the mean, as with
any two-sided test.

**Undecided arms** also carry the minimum detectable effect at their seeds and the seeds that
would bring it down to ``delta``; ``p_better`` is the chance the arm wins on a seed, with an
exact (Clopper-Pearson) interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special
from statsmodels.stats.proportion import proportion_confint

from reglab.core.errors import ConfigError
from reglab.core.plan import Design

BETTER, WORSE, EQUIVALENT, UNDECIDED = "better", "worse", "equivalent", "undecided"
VERDICTS = (UNDECIDED, BETTER, WORSE, EQUIVALENT)  # replay's codes 0..3
T_TEST, SIGN_FLIP = "paired t", "exact sign-flip"
SPENDING = ("pocock", "obrien_fleming")
DELTA = Design().delta
# Differences of accuracies that agree to rounding are equal: a spread this small (relative to
# the values) is float noise, and a t test on it would give p ~ 0 for a constant difference.
# Metrics are logged as float32 (about 7 digits): one image of 450 moves accuracy by 2.2e-3.
RESOLUTION = 1e-6


@dataclass
class Verdict:
    """One arm's verdict. ``ci_*`` is the ``1 - level`` interval of the mean difference;
    ``eq_*`` the ``1 - 2 level`` interval that TOST reads (inside +-delta iff the t TOST
    rejects), so an equivalent arm's ``eq`` interval lies within the margin while its ``ci`` may
    reach slightly past it. Intervals are infinite where the sign-flip test cannot reach
    ``level`` with these seeds."""

    arm: str
    verdict: str  # better | worse | equivalent | undecided
    n: int  # paired seeds used: the arm's differences at its last look
    look: int  # index into design.looks of the deciding or last look taken; -1: never tested
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, mean 0
    p_tost: float  # |mean| >= delta
    level: float  # the level of the rejection at that look; undecided: where the look stopped
    test: str  # paired t | exact sign-flip
    mde: float  # minimum detectable effect at n seeds (nan below 2 seeds)
    seeds_needed: int | None  # seeds for the MDE to reach delta; None: decided, reached or unknown
    wins: int
    ties: int
    p_better: float  # (wins + ties / 2) / n
    p_better_low: float  # Clopper-Pearson 95%
    p_better_high: float
    eq_low: float = math.nan
    eq_high: float = math.nan


def check_design(design: Design) -> None:
    """Raise ConfigError (one line) for a design that cannot work."""
    looks = list(design.looks)
    if not looks or any(not isinstance(n, int) or isinstance(n, bool) for n in looks):
        raise ConfigError(f"design.looks={looks!r}: a non-empty list of seed counts (integers)")
    if looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:], strict=False)):
        raise ConfigError(f"design.looks={looks}: increasing seed counts, the first at least 2")
    for key in ("alpha", "power"):
        value = getattr(design, key)
        if not 0 < value < 1:
            raise ConfigError(f"design.{key}={value}: must lie strictly between 0 and 1")
    if not design.delta > 0:
        raise ConfigError(f"design.delta={design.delta}: the equivalence margin must be > 0")
    if design.spending not in SPENDING:
        raise ConfigError(f"design.spending={design.spending!r}: one of {', '.join(SPENDING)}")


def spent(design: Design, k: int) -> float:
    """The alpha spent by the end of look ``k`` (0-based), cumulative."""
    check_design(design)
    if not 0 <= k < len(design.looks):
        raise ConfigError(f"look {k}: the design has looks 0..{len(design.looks) - 1}")
    t = design.looks[k] / design.looks[-1]
    if t == 1:
        return design.alpha  # both functions reach alpha at t = 1; no rounding on the total
    if design.spending == "pocock":
        return design.alpha * math.log(1 + (math.e - 1) * t)
    z = special.ndtri(1 - design.alpha / 2)
    return float(2 * special.ndtr(-z / math.sqrt(t)))


def look_levels(design: Design) -> list[float]:
    """The alpha spent AT each look: the increments of ``spent``, summing to alpha."""
    check_design(design)
    cumulative = [spent(design, k) for k in range(len(design.looks))]
    return [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]


def _as_diffs(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float).ravel()
    if not np.isfinite(d).all():
        raise ConfigError(f"paired differences {d.tolist()}: every one must be finite")
    return d


def _tests(d: np.ndarray, delta: float) -> dict[str, np.ndarray]:
    """Every row of ``d`` (any leading shape x seeds) tested at once: mean, SD, whether it is
    constant, the p of mean 0 and TOST's p (see ``paired_test``)."""
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    constant = np.ptp(d, axis=-1) <= RESOLUTION * np.maximum(1.0, np.abs(d).max(axis=-1))
    mean = np.where(constant & (np.abs(mean) <= RESOLUTION), 0.0, mean)
    sd = np.where(constant, 0.0, d.std(axis=-1, ddof=1) if n > 1 else 0.0)
    se = np.where(constant, 1.0, sd / math.sqrt(n))  # 1: keeps the unused t arithmetic finite
    df = max(n - 1, 1)
    p_t = 2 * special.stdtr(df, -np.abs(mean) / se)
    tost_t = np.maximum(
        special.stdtr(df, -(mean + delta) / se),  # H: mean <= -delta
        special.stdtr(df, (mean - delta) / se),  # H: mean >= delta
    )
    p_flip = np.where(mean == 0, 1.0, min(1.0, 2 * 0.5**n))
    tost_flip = np.where(np.abs(mean) < delta, 0.5**n, 1.0)
    return {
        "mean": mean,
        "sd": sd,
        "constant": constant,
        "p_value": np.where(constant, p_flip, p_t),
        "p_tost": np.where(constant, tost_flip, tost_t),
    }


def _interval(mean, sd, n, constant, level) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided ``1 - level`` interval of the mean (arrays broadcast): t, or the sign-flip
    test inverted (a constant ``c``: every other value gets p = 2 * 0.5**n, so the interval is
    {c} when that reaches the level and the whole line otherwise). NaN without seeds."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = special.stdtrit(np.maximum(n - 1, 1), 1 - np.asarray(level) / 2) * sd / np.sqrt(n)
    exact = 2 * 0.5**n <= level
    low = np.where(constant, np.where(exact, mean, -np.inf), mean - half)
    high = np.where(constant, np.where(exact, mean, np.inf), mean + half)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def paired_test(diffs, level: float, delta: float = DELTA) -> dict:
    """One arm's paired differences (arm - baseline): ``mean``, the ``1 - level`` interval
    (``ci_low``, ``ci_high``), the two-sided ``p_value`` of mean 0, TOST's ``p_tost`` for
    ``|mean| >= delta`` and the ``test`` used, with ``n`` and ``sd``.

    Differences that do not vary get the exact sign-flip test instead of t (whose p would be 0):
    a constant ``c != 0`` has p = 2 * 0.5**n, all zeros p = 1; TOST takes the one-sided sign-flip
    p of ``c - delta`` (below 0) and ``c + delta`` (above 0), 0.5**n each when ``|c| < delta``."""
    if not 0 < level < 1:
        raise ConfigError(f"paired_test: level={level} must lie strictly between 0 and 1")
    d = _as_diffs(diffs)
    if d.size == 0:
        raise ConfigError("paired_test: no differences to test")
    r = {key: value.item() for key, value in _tests(d, delta).items()}
    ci_low, ci_high = _interval(r["mean"], r["sd"], d.size, r["constant"], level)
    return {
        "mean": r["mean"],
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": r["p_value"],
        "p_tost": r["p_tost"],
        "test": SIGN_FLIP if r["constant"] else T_TEST,
        "n": d.size,
        "sd": r["sd"],
    }


@lru_cache(maxsize=4096)
def _clopper_pearson(x: int, n: int, confidence: float) -> tuple[float, float]:
    low, high = proportion_confint(x, n, alpha=1 - confidence, method="beta")
    # statsmodels leaves nan at the ends (x = 0 or n) where the exact bound is 0 or 1
    return float(np.nan_to_num(low, nan=0.0)), float(np.nan_to_num(high, nan=1.0))


def p_better_interval(wins: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of P(arm beats baseline on a seed) from ``wins`` of ``n`` seeds.

    Ties count half a win, so ``wins`` may end in .5: the interval is then the union of the
    exact intervals for ``floor(wins)`` and ``ceil(wins)`` (conservative: it covers whichever
    way the ties would have fallen). ``(nan, nan)`` without seeds."""
    if n == 0:
        return math.nan, math.nan
    if not 0 <= wins <= n or 2 * wins != int(2 * wins):
        raise ConfigError(f"p_better_interval: wins={wins} must be a multiple of 0.5 in [0, {n}]")
    low, _ = _clopper_pearson(math.floor(wins), n, confidence)
    _, high = _clopper_pearson(math.ceil(wins), n, confidence)
    return low, high


def _step_down(
    p: np.ndarray, q: np.ndarray, open_: np.ndarray, a: float
) -> tuple[np.ndarray, np.ndarray]:
    """One look's step-down, for each simulation (row) at once, over each arm's ``H`` (p) and
    ``E`` (q) at level ``a``; an arm not tested at this look has p = q = inf. ``open_`` counts
    each arm's hypotheses not yet rejected at any look (updated in place): an arm counts in the
    divisor while it has one, tested at this look or not. Returns, per arm, what was rejected
    (0 nothing, 1 H, 2 E only) and the level: that of the rejection, else the level where the
    procedure stopped."""
    sims, m = p.shape
    values = np.concatenate([p, q], axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    rows = np.arange(sims)
    t = (open_ > 0).sum(axis=1)  # arms that can still hold a true null
    alive = t > 0
    at = np.full(values.shape, np.nan)
    stop = a / np.maximum(t, 1)
    for j in range(2 * m):
        idx = order[:, j]
        threshold = a / np.maximum(t, 1)
        ok = alive & (values[rows, idx] <= threshold)
        stop = np.where(alive & ~ok, threshold, stop)
        alive &= ok
        if not alive.any():
            break
        at[rows[ok], idx[ok]] = threshold[ok]
        arm = idx % m
        open_[rows, arm] -= ok
        t = t - (ok & (open_[rows, arm] == 0))
    h, e = ~np.isnan(at[:, :m]), ~np.isnan(at[:, m:])
    kind = np.where(h, 1, np.where(e, 2, 0))
    level = np.where(h, at[:, :m], np.where(e, at[:, m:], stop[:, None]))
    return kind, level


def replay(block, design: Design, seeds: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """``sequential``'s looks for many simulations at once: ``block[s, i]`` holds arm ``i``'s
    differences in simulation ``s``, of which arm ``i`` has the first ``seeds[i]`` (default:
    all). Returns arrays (simulations x arms) of the Verdict fields that the looks decide:
    verdict, look, n, level, mean, sd, p_value, p_tost, test, ci_low, ci_high, eq_low, eq_high."""
    check_design(design)
    d = np.array(block, dtype=float)
    if d.ndim != 3:
        raise ConfigError(f"replay: block of shape {d.shape}, wanted simulations x arms x seeds")
    sims, m, width = d.shape
    have = np.full(m, width) if seeds is None else np.asarray(seeds, dtype=int)
    if have.shape != (m,) or (have < 0).any() or (have > width).any():
        raise ConfigError(f"replay: seeds={have.tolist()} for {m} arms of {width} seeds")
    used = np.arange(width) < have[:, None]
    if not np.isfinite(d[:, used]).all():
        raise ConfigError("paired differences: every one must be finite")
    d[:, ~used] = 0.0  # never read as data: an arm is only tested on seeds it has
    levels = look_levels(design)
    code = np.zeros((sims, m), dtype=int)  # index into VERDICTS
    look = np.full((sims, m), -1)
    n = np.broadcast_to(np.where(have < design.looks[0], have, 0), (sims, m)).copy()
    # never tested: the statistics of all its differences at the first look's Bonferroni share
    level = np.full((sims, m), levels[0] / max(m, 1))
    stats = {key: np.full((sims, m), np.nan) for key in ("mean", "sd", "p_value", "p_tost")}
    stats["constant"] = np.zeros((sims, m), dtype=bool)
    open_ = np.full((sims, m), 2)
    for i in np.flatnonzero((have > 0) & (have < design.looks[0])):
        for key, value in _tests(d[:, i, : have[i]], design.delta).items():
            stats[key][:, i] = value
    for k, n_k in enumerate(design.looks):
        tested = (code == 0) & (have >= n_k)
        if not tested.any():
            break
        r = _tests(d[:, :, :n_k], design.delta)
        p, q = (np.where(tested, r[key], np.inf) for key in ("p_value", "p_tost"))
        kind, at = _step_down(p, q, open_, levels[k])
        for key in stats:
            stats[key] = np.where(tested, r[key], stats[key])
        look, n, level = (
            np.where(tested, new, old) for new, old in ((k, look), (n_k, n), (at, level))
        )
        code = np.where(tested & (kind == 1), np.where(r["mean"] > 0, 1, 2), code)
        code = np.where(tested & (kind == 2), 3, code)
    ci = _interval(stats["mean"], stats["sd"], n, stats["constant"], level)
    eq = _interval(stats["mean"], stats["sd"], n, stats["constant"], np.minimum(2 * level, 0.999))
    constant = stats.pop("constant")
    return {
        "verdict": np.array(VERDICTS)[code],
        "look": look,
        "n": n,
        "level": level,
        **stats,
        "test": np.where(constant, SIGN_FLIP, T_TEST),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "eq_low": eq[0],
        "eq_high": eq[1],
    }


def _mde(sd: float, n: int, level: float, design: Design) -> tuple[float, int | None]:
    """The effect found with ``design.power`` at ``level`` (two-sided) with ``n`` seeds of this
    spread, and the seeds that bring it to ``delta`` (normal approximation; at least ``n + 1``
    when it is not there yet)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan, None
    mde = (special.stdtrit(n - 1, 1 - level / 2) + special.stdtrit(n - 1, design.power)) * sd
    mde /= math.sqrt(n)
    if mde <= design.delta:
        return float(mde), None
    z = special.ndtri(1 - level / 2) + special.ndtri(design.power)
    return float(mde), max(n + 1, math.ceil((z * sd / design.delta) ** 2))


def sequential(diffs: Mapping[str, Sequence[float]], design: Design) -> dict[str, Verdict]:
    """Replay the looks of ``design`` on each arm's paired differences (in seed order) and give
    every arm its verdict. The result depends on the data alone, so the protocol driver (after
    each round) and the report (at the end) get the same verdicts; an arm with fewer differences
    than a look is not tested at that look or later and keeps its last verdict."""
    check_design(design)
    data = {arm: _as_diffs(d) for arm, d in diffs.items()}
    if not data:
        return {}
    have = [d.size for d in data.values()]
    block = np.zeros((1, len(data), max(have)))
    for i, d in enumerate(data.values()):
        block[0, i, : d.size] = d
    rows = replay(block, design, have)
    # The resolution floor stands in for the SD of differences that do not vary: the smallest
    # step the metric was seen to take (1 / test-set size for an accuracy).
    steps = np.abs(np.concatenate(list(data.values())))
    steps = steps[steps > RESOLUTION]
    floor = float(steps.min()) if steps.size else math.nan
    final_level = look_levels(design)[-1] / len(data)
    return {
        arm: _verdict(
            arm, d, {k: v[0, i].item() for k, v in rows.items()}, final_level, floor, design
        )
        for i, (arm, d) in enumerate(data.items())
    }


def _verdict(
    arm: str, d: np.ndarray, row: dict, final_level: float, floor: float, design: Design
) -> Verdict:
    """One arm's row: the looks' fields, then what is read off its first ``n`` differences."""
    n = row["n"]
    d = d[:n]
    wins, ties = int((d > RESOLUTION).sum()), int((np.abs(d) <= RESOLUTION).sum())
    p_low, p_high = p_better_interval(wins + ties / 2, n)
    sd = row["sd"] if row["sd"] > 0 else floor
    mde, needed = _mde(sd, n, final_level, design)
    return Verdict(
        arm=arm,
        verdict=row["verdict"],
        n=n,
        look=row["look"],
        mean_diff=row["mean"],
        ci_low=row["ci_low"],
        ci_high=row["ci_high"],
        p_value=row["p_value"],
        p_tost=row["p_tost"],
        level=row["level"],
        test=row["test"],
        mde=mde,
        seeds_needed=needed if row["verdict"] == UNDECIDED else None,
        wins=wins,
        ties=ties,
        p_better=(wins + ties / 2) / n if n else math.nan,
        p_better_low=p_low,
        p_better_high=p_high,
        eq_low=row["eq_low"],
        eq_high=row["eq_high"],
    )


def next_seeds(verdicts: Mapping[str, Verdict], design: Design) -> dict[str, int]:
    """The seed count each undecided arm needs for its next look (the first look above its
    ``n``). Decided arms and arms at the last look are absent; the baseline is not an arm here
    (it needs ``max`` of these)."""
    check_design(design)
    out = {}
    for arm, v in verdicts.items():
        if v.verdict == UNDECIDED and v.n < design.looks[-1]:
            out[arm] = next(n for n in design.looks if n > v.n)
    return out
