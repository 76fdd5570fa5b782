import math

import pytest

from reglab.report import load_protocol, load_runs, strength_response, tuning, write_report
from reglab.report.plots import STRENGTH_PLOT, TRAIN_ACC, TRAIN_VAL_PLOT, is_log_scale, val_curves

from .conftest import (
    DROPOUT_KEY,
    L2_KEY,
    PATIENCE_KEY,
    SEEDS,
    TRIALS,
    test_acc,
    write_protocol_sweep,
)


def panels_of(sweep):
    runs, protocol = load_runs(sweep), load_protocol(sweep)
    return {p["technique"]: p for p in strength_response(runs, tuning(runs, protocol), protocol)}


@pytest.mark.parametrize("with_protocol_json", [True, False])
def test_strength_response_holds_every_trial_and_the_chosen_value(tmp_path, with_protocol_json):
    sweep = write_protocol_sweep(tmp_path / "sweep", with_protocol_json)
    panels = panels_of(sweep)
    # Techniques without a knob (baseline, flip) get no panel; the cocktail has a section instead.
    assert set(panels) == {"l2", "dropout", "early_stopping"}
    for technique, key in (("l2", L2_KEY), ("dropout", DROPOUT_KEY),
                           ("early_stopping", PATIENCE_KEY)):  # fmt: skip
        p = panels[technique]
        expected = sorted((params[key], val, status == "pruned")
                          for params, val, status in TRIALS[technique])  # fmt: skip
        got = sorted(zip(p["points"]["x"], p["points"]["y"], p["points"]["pruned"], strict=True))
        assert got == expected and p["knob"] == key and p["metric"] == "tested"
        assert math.isclose(p["baseline"], 0.930)
    # The chosen value is the best finished trial by validation (the pruned ones never win).
    assert panels["l2"]["chosen"] == 1e-4 and panels["dropout"]["chosen"] == 0.3
    # A log search space is drawn on a log axis: declared in protocol.json, or inferred from a
    # range of five decades without it; dropout's 0.1..0.7 stays linear either way.
    assert panels["l2"]["log"] and not panels["dropout"]["log"]
    assert not panels["early_stopping"]["log"]
    # The x-axis spans the declared range, where protocol.json has it.
    expected = (1e-6, 1e-1) if with_protocol_json else None
    assert panels["l2"]["range"] == expected


def test_log_scale_follows_the_declared_space_first():
    assert is_log_scale([1e-6, 1e-1], {"log": True})
    assert not is_log_scale([1e-6, 1e-1], {"log": False})  # declared linear: linear
    assert is_log_scale([0.1, 0.2], {"scale": "log"})
    assert is_log_scale([1e-6, 1e-4]) and not is_log_scale([0.1, 0.7])
    assert not is_log_scale([0.0, 1e-2, 1.0]) and not is_log_scale(["a", "b"])


def test_train_and_validation_curves_are_means_over_the_test_seeds(protocol_sweep):
    runs = load_runs(protocol_sweep)
    train, val = val_curves(runs, TRAIN_ACC), val_curves(runs, "val/acc")
    # The histories end at train 1.0 (baseline) or 0.97 and at each run's accuracy; the tuning
    # trials (validation only, other values of the knob) are not averaged in.
    assert math.isclose(train["baseline"].iloc[-1], 1.0)
    assert math.isclose(train["l2"].iloc[-1], 0.97)
    for t in ("baseline", "l2", "cocktail"):
        assert math.isclose(val[t].iloc[-1], sum(test_acc(t)) / len(SEEDS)), t
    assert list(val.index) == [0, 1, 2, 3]


def test_protocol_plots_are_written(protocol_sweep):
    report = write_report(protocol_sweep, quiet=True)
    for name in (STRENGTH_PLOT, TRAIN_VAL_PLOT, "accuracy.png", "val_curves.png"):
        path = protocol_sweep / name
        assert path in report.files and path.read_bytes()[:4] == b"\x89PNG", name


def test_a_plain_sweep_without_train_curves_gets_the_plots_it_always_had(fixed_sweep):
    report = write_report(fixed_sweep, quiet=True)
    pngs = sorted(p.name for p in report.files if p.suffix == ".png")
    assert pngs == ["acc_vs_gap.png", "accuracy.png", "val_curves.png"]
