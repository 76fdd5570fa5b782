"""A comparison, typed: the one description that the sweeper registers, ``reglab.tune`` runs
and ``reglab.report`` reads. Every name of the protocol (stages, the two special arms, the
fields of a run's ``protocol`` record) is defined here and nowhere else.

``conf/experiment/compare.yaml`` fills ``hydra.sweeper.protocol`` (a ``Protocol``); Hydra
checks its types when it composes the sweeper's config, so a typo is refused before any run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASELINE = "baseline"  # the arm with no technique: every other arm is compared with it
COCKTAIL = "cocktail"  # the arm that combines the techniques that helped on validation
USE = "use."  # a cocktail trial's on/off parameter of a member: use.<arm>


class Stage:
    """What a job is for. Tuning stages read validation only and never test."""

    SEARCH = "search"  # one plain search (hparams_search=...)
    TUNE = "tune"  # stage 1: every arm, the same budget of trials
    TEST = "test"  # stage 2: every arm at its tuned values over the paired seeds
    COCKTAIL_TUNE = "cocktail_tune"  # stage 3a: the members on/off plus their knobs
    COCKTAIL_TEST = "cocktail_test"  # stage 3b: the best combination over the paired seeds

    TUNING = (SEARCH, TUNE, COCKTAIL_TUNE)
    TESTING = (TEST, COCKTAIL_TEST)
    ORDER = (SEARCH, TUNE, TEST, COCKTAIL_TUNE, COCKTAIL_TEST)


@dataclass
class Design:
    """How paired seeds turn into a verdict per arm (``reglab.stats``).

    Seeds are added in looks (``looks``: cumulative paired seeds), only to the arms still
    undecided. The family-wise error of every better/worse verdict and every equivalence, over
    all arms and all looks, is at most ``alpha``: each look spends a share of it (``spending``,
    a Lan-DeMets spending function) and Holm's method splits that share between the arms.
    """

    looks: list[int] = field(default_factory=lambda: [5, 10, 20, 30])
    alpha: float = 0.05
    delta: float = 0.01  # equivalence margin, on the compared metric's scale (0.01 = 1 point)
    power: float = 0.8  # for the minimum detectable effect of an undecided arm
    spending: str = "pocock"  # pocock | obrien_fleming


@dataclass
class Cocktail:
    trials: int = 12  # the combinations searched (on/off + knobs of each member)
    max_members: int = 6  # at most the best N on validation
    min_delta: float = 0.0  # a member beat the baseline's mean paired validation score by more


@dataclass
class Protocol:
    """``hydra.sweeper.protocol``: the comparison (``experiment=compare``)."""

    # The arms besides the baseline: every option of the regularizer and augmentation groups on
    # Hydra's search path (a technique file in your own config folder joins by itself), or only
    # those named in ``arms``, less those in ``exclude``.
    arms: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    # {config key: search spec} searched for EVERY arm, the baseline included, beside the arm's
    # own _search_ (same form: {type: float|int|choice, low, high, log, step, choices}).
    shared: dict[str, Any] = field(default_factory=dict)
    # Tuning splits: each trial trains one member per seed and is scored on the mean of their
    # validation objectives. Never test seeds (checked).
    tune_seeds: list[int] = field(default_factory=lambda: [1001, 1002])
    first_seed: int = 1  # the paired test seeds are first_seed, first_seed + 1, ...
    metric: str = "test/acc"  # what the verdicts compare
    design: Design = field(default_factory=Design)
    cocktail: Cocktail = field(default_factory=Cocktail)


# The keys of the ``protocol`` record that every job of a comparison carries into its
# metrics.json (and its W&B config), so the report can tell runs apart.
RECORD_KEYS = ("comparison", "stage", "arm", "trial", "params", "space", "look")
