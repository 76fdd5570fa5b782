import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from reglab.report import (
    load_runs,
    load_sweep,
    plot_accuracy,
    plot_forest,
    plot_val_curves,
    strength_response,
    summarize,
    tuning,
    write_report,
)
from reglab.report.plots import PLOTS, TRAIN_ACC, curves

from .conftest import ARMS, DELTA, L2_KEY, N_TRIALS, PRUNED, SEEDS, arm_test, run_notebook


@pytest.fixture
def read(comparison_sweep):
    runs, sweep = load_runs(comparison_sweep), load_sweep(comparison_sweep)
    return runs, summarize(runs, sweep)


def test_the_forest_plot_has_a_row_per_arm_its_seeds_the_band_and_the_verdict(read):
    _, summary = read
    fig = plot_forest(summary, DELTA, "test/acc")
    (ax,) = fig.axes
    arms = [t.get_text() for t in ax.get_yticklabels()]
    assert arms == list(summary["technique"][1:][::-1])  # the table's order, top down
    texts = [t.get_text() for t in ax.texts]
    for _, r in summary.iloc[1:].iterrows():
        assert f"{r['verdict']} (n={r['n']})" in texts
    (band,) = [p for p in ax.patches if p.get_label().startswith("±delta")]
    assert np.isclose(band.get_x(), -DELTA) and np.isclose(band.get_width(), 2 * DELTA)
    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert points == sum(len(d) for d in summary["diffs"][1:])  # every seed's difference


def test_the_accuracy_plot_pairs_every_seed_with_the_baselines(read):
    _, summary = read
    (ax,) = plot_accuracy(summary, "test/acc").axes
    segments = [line.get_xydata() for line in ax.lines]
    assert len(segments) == sum(summary["n"][1:])
    noise = summary[summary["technique"] == "noise"].iloc[0]
    assert np.isclose(min(s[1, 0] for s in segments), 0.1)  # the failed seeds, at chance
    assert sorted(noise["seed_scores"]) == pytest.approx(
        sorted(0.1 if a is None else a for a in arm_test("noise"))
    )


def test_validation_curves_show_the_spread_across_seeds(read):
    runs, _ = read
    per_arm = curves(runs)
    assert per_arm["baseline"].shape == (4, len(SEEDS))
    assert per_arm["noise"].shape[1] == len(SEEDS) - 2  # failed runs have no curve
    (ax,) = plot_val_curves(runs).axes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(per_arm)
    top = bands[0].get_paths()[0].vertices[:, 1]
    assert top.max() - top.min() > 0
    # Only tested runs: tuning trials (other knob values, a fixed 0.99 train curve) stay out.
    assert np.isclose(curves(runs, TRAIN_ACC)["l2"].iloc[-1].mean(), 0.99)


def test_strength_response_holds_every_trial_with_the_pruned_ones(read):
    runs, _ = read
    panels = {p["technique"]: p for p in strength_response(runs, tuning(runs))}
    assert set(panels) == {a for a, (_, _, params, _) in ARMS.items() if params} - {"cocktail"}
    l2 = panels["l2"]
    assert l2["knob"] == L2_KEY and len(l2["points"]) == N_TRIALS
    assert int(l2["points"]["pruned"].sum()) == PRUNED["l2"]
    assert l2["chosen"] == ARMS["l2"][2][L2_KEY] and l2["space"]["log"] is True


def test_every_plot_is_written_and_the_notebook_draws_them(comparison_sweep, tmp_path, monkeypatch):
    report = write_report(comparison_sweep, quiet=True)
    for name in PLOTS:
        path = comparison_sweep / name
        assert path in report.files and path.read_bytes()[:4] == b"\x89PNG", name
    images, text = run_notebook(comparison_sweep, tmp_path, monkeypatch)
    assert len(images) == 3  # forest+accuracy+curves, strength response, train vs validation
    assert "undecided" in text and "could have detected" in text
