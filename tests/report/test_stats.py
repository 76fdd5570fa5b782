import math

from scipy import stats

from reglab.report import build_report

from .conftest import write_run


def test_statistics_match_hand_computed_welch(fixed_sweep):
    table = build_report(fixed_sweep).set_index("technique")
    assert list(table.index) == ["baseline", "l2", "dropout", "l1"]  # baseline first, then by acc
    base, l2 = table.loc["baseline"], table.loc["l2"]
    assert base["n"] == 3 and l2["n"] == 3 and table.loc["l1", "n"] == 0
    assert table.loc["l1", "failed"] == 1
    assert math.isclose(base["test/acc mean"], 0.92) and math.isclose(base["test/acc std"], 0.02)
    assert math.isclose(l2["test/acc mean"], 0.97) and math.isclose(l2["test/acc std"], 0.01)

    # Welch by hand: se^2 = s1^2/n1 + s2^2/n2, Welch-Satterthwaite df, t quantile for the CI.
    a, b = 0.01**2 / 3, 0.02**2 / 3
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    t = 0.05 / se
    p = 2 * stats.t.sf(t, df)
    half = stats.t.ppf(0.975, df) * se
    assert math.isclose(l2["delta"], 0.05, abs_tol=1e-12)
    assert math.isclose(l2["ci_low"], 0.05 - half, rel_tol=1e-9)
    assert math.isclose(l2["ci_high"], 0.05 + half, rel_tol=1e-9)
    assert math.isclose(l2["p_value"], p, rel_tol=1e-9)
    assert 0.01 < p < 0.05 and l2["significance"] == "*"
    # One run cannot be tested: Δ is shown, p and CI are not.
    drop = table.loc["dropout"]
    assert math.isclose(drop["delta"], -0.01, abs_tol=1e-12) and drop["significance"] == "n/a"
    assert math.isnan(drop["p_value"]) and math.isnan(drop["ci_low"])


def test_folds_are_aggregated_and_settings_kept_apart(tmp_path):
    sweep = tmp_path / "cv"
    for fold, acc in enumerate([0.90, 0.91, 0.92]):
        write_run(sweep, f"{fold}_baseline", "baseline", acc, fold=fold)
        write_run(sweep, f"{fold + 3}_l2", "l2", acc + 0.01, fold=fold)
    write_run(sweep, "9_baseline_cnn", "baseline", 0.5, model="cnn")
    table = build_report(sweep)
    mlp = table[table["setting"] == "digits/mlp"].set_index("technique")
    assert list(mlp["n"]) == [3, 3] and set(mlp["over"]) == {"folds"}
    assert math.isclose(mlp.loc["l2", "delta"], 0.01, abs_tol=1e-9)
    cnn = table[table["setting"] == "digits/cnn"]
    assert list(cnn["technique"]) == ["baseline"] and list(cnn["n"]) == [1]


def test_a_setting_without_baseline_is_marked_not_tested(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate([0.8, 0.9]):
        write_run(sweep, f"{seed}_l2", "l2", acc, seed=seed, data="fashion")
    (row,) = build_report(sweep).to_dict("records")
    assert row["significance"] == "no baseline" and row["n"] == 2
    assert math.isclose(row["test/acc mean"], 0.85) and math.isnan(row["delta"])
