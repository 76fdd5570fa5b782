import math

import numpy as np
import pytest

from reglab.report import (
    best_on_validation,
    cocktail_vs_best,
    load_runs,
    load_sweep,
    paired_differences,
    summarize,
)
from reglab.report.runs import compared
from reglab.stats import paired_test, sequential

from .conftest import (
    ARMS,
    BASE_TEST,
    CLASSES,
    FAILED_SEEDS,
    N_TRIALS,
    PRUNED,
    SEEDS,
    ZCA_KEY,
    arm_test,
    write_json,
    write_run,
)


@pytest.fixture
def table(comparison_sweep):
    runs, sweep = load_runs(comparison_sweep), load_sweep(comparison_sweep)
    return summarize(runs, sweep).set_index("technique")


def test_every_arm_ends_in_its_verdict_sorted_by_verdict_then_effect(table):
    verdicts = table["verdict"].to_dict()
    assert verdicts["l2"] == "better" and verdicts["cocktail"] == "better"
    assert verdicts["flip"] == "worse" and verdicts["zca"] == "equivalent"
    assert verdicts["dropout"] == "undecided" and verdicts["baseline"] == "baseline"
    order = ["baseline", "better", "equivalent", "undecided", "worse"]
    ranks = [order.index(v) for v in table["verdict"]]
    assert ranks == sorted(ranks)
    better = table[table["verdict"] == "better"]["mean_diff"]
    assert list(better) == sorted(better, reverse=True)  # the larger effect first
    # An undecided arm carries what it could have detected and the seeds it would take.
    undecided = table.loc["dropout"]
    assert undecided["mde"] > abs(undecided["mean_diff"]) and undecided["seeds_needed"] > 10
    assert not (table["verdict"] == "ns").any()


def test_the_difference_is_the_mean_of_the_paired_differences(table):
    for arm in ("l2", "flip", "dropout"):
        diffs = ARMS[arm][0][: int(table.loc[arm, "n"])]
        assert table.loc[arm, "mean_diff"] == pytest.approx(np.mean(diffs))
        assert table.loc[arm, "ci_low"] < table.loc[arm, "mean_diff"] < table.loc[arm, "ci_high"]
        n = len(ARMS[arm][0])
        assert table.loc[arm, "baseline mean"] == pytest.approx(np.mean(BASE_TEST[:n]))


def test_every_row_shows_the_same_tuning_budget_counted_from_the_runs(table):
    assert (table["trials"] == N_TRIALS).all()  # the baseline too
    assert table.loc["l2", "pruned"] == PRUNED["l2"] and table.loc["flip", "pruned"] == 0


def test_a_failed_test_run_counts_at_chance_and_is_flagged(table):
    row = table.loc["noise"]
    scores = [1 / CLASSES if a is None else a for a in arm_test("noise")]
    expected = np.mean(np.subtract(scores, BASE_TEST))
    assert row["mean_diff"] == pytest.approx(expected) and row["n"] == len(SEEDS)
    assert row["test/acc mean"] == pytest.approx(np.mean(scores))
    failed = len(FAILED_SEEDS["noise"])
    assert row["failed"] == failed and f"{failed} of {len(SEEDS)} seeds failed" in row["flags"]


def test_a_tuned_value_at_the_edge_is_flagged_next_to_the_verdict(table):
    assert f"at edge: {ZCA_KEY} at top" in table.loc["zca", "flags"]
    assert table.loc["l2", "flags"] == "" and "l2.strength=0.0001" in table.loc["l2", "tuned"]


def test_the_best_single_technique_is_chosen_on_validation_not_on_test(comparison_sweep, table):
    runs, sweep = load_runs(comparison_sweep), load_sweep(comparison_sweep)
    singles = [a for a in ARMS if a != "cocktail"]
    # On test l2 wins; on validation (val/loss_best) dropout does. Validation decides.
    assert table.loc[singles, "test/acc mean"].idxmax() == "l2"
    best, means = best_on_validation(compared(runs), singles)
    assert best == "dropout" and means.idxmin() == "dropout"
    (row,) = cocktail_vs_best(runs, summarize(runs, sweep), sweep).to_dict("records")
    assert row["best_single"] == "dropout"
    # The paired test of the cocktail minus dropout on their common seeds.
    n = len(ARMS["cocktail"][0])
    diffs = np.subtract(ARMS["cocktail"][0], ARMS["dropout"][0][:n])
    expected = paired_test(diffs, sweep.design.alpha, sweep.design.delta)
    assert row["n"] == n and row["mean_diff"] == pytest.approx(diffs.mean())
    assert row["ci_low"] == pytest.approx(expected["ci_low"])


def test_a_plain_sweep_pairs_by_seed_and_leaves_failed_runs_out(fixed_sweep):
    table = summarize(load_runs(fixed_sweep)).set_index("technique")
    assert table.loc["l2", "n"] == 3 and table.loc["l2", "mean_diff"] == pytest.approx(0.05)
    assert table.loc["l2", "verdict"] in ("better", "undecided")
    assert table.loc["dropout", "n"] == 1 and table.loc["dropout", "verdict"] == "undecided"
    assert table.loc["l1", "n"] == 0 and "1 of 1 runs failed (left out)" in table.loc["l1", "flags"]


def test_a_plain_sweep_with_clear_differences_is_decided(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(8):
        base = 0.90 + 0.01 * (seed % 3)
        write_run(sweep, f"b{seed}", "baseline", base, seed=seed)
        write_run(sweep, f"l{seed}", "l2", base + 0.05 + 0.001 * (seed % 2), seed=seed)
        write_run(sweep, f"f{seed}", "flip", base - 0.05 - 0.001 * (seed % 2), seed=seed)
    table = summarize(load_runs(sweep)).set_index("technique")
    assert table.loc["l2", "verdict"] == "better" and table.loc["flip", "verdict"] == "worse"
    assert list(table.index) == ["baseline", "l2", "flip"]


def test_no_baseline_leaves_every_arm_undecided(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(3):
        write_json(
            sweep / f"{seed}" / "metrics.json",
            {"status": "ok", "name": "l2", "seed": seed, "test/acc": 0.9},
        )
    table = summarize(load_runs(sweep))
    assert list(table["verdict"]) == ["undecided (no baseline)"]
    assert math.isnan(table["mean_diff"].iloc[0])


def test_a_driver_gets_the_differences_the_verdicts_were_read_from(comparison_sweep, table):
    runs, sweep = load_runs(comparison_sweep), load_sweep(comparison_sweep)
    (diffs,) = paired_differences(runs, sweep).values()
    assert set(diffs) == set(ARMS)
    scores = [1 / CLASSES if a is None else a for a in arm_test("noise")]
    noise = np.subtract(scores, BASE_TEST)
    assert diffs["noise"] == pytest.approx(noise) and diffs["l2"] == pytest.approx(ARMS["l2"][0])
    singles = {a: d for a, d in diffs.items() if a != "cocktail"}
    for arm, verdict in sequential(singles, sweep.design).items():
        assert table.loc[arm, "verdict"] == verdict.verdict and table.loc[arm, "n"] == verdict.n


def test_cross_validation_folds_pair_by_fold(tmp_path):
    sweep = tmp_path / "sweep"
    base = [0.90, 0.91, 0.92, 0.93, 0.94]
    for fold, acc in enumerate(base):
        write_run(sweep, f"b{fold}", "baseline", acc, seed=1, fold=fold)
        write_run(sweep, f"l{fold}", "l2", acc + 0.01 * (fold % 2), seed=1, fold=fold)
    table = summarize(load_runs(sweep)).set_index("technique")
    assert table.loc["l2", "n"] == len(base) and (table["over"] == "folds").all()
    assert table.loc["l2", "mean_diff"] == pytest.approx(0.01 * 2 / len(base))
