import pytest

from reglab.core.errors import ConfigError
from reglab.core.plan import Protocol
from reglab.report import build_report, load_runs, load_sweep
from reglab.report.runs import compared, tuning_runs
from reglab.report.tuning import edge, edges

from .conftest import ARMS, DELTA, LOOKS, N_TRIALS, SEEDS, TUNE_SEEDS, ZCA_KEY, write_run


def test_varying_overrides_split_settings_and_label_knobs(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [
        ("0", "baseline", 0.9, ["data.train_subset=100", "seed=1"]),
        ("1", "baseline", 0.95, ["data.train_subset=500", "seed=1"]),
        ("2", "l2", 0.91, ["data.train_subset=100", "seed=1", "regularizer.l2.strength=0.1"]),
        ("3", "l2", 0.92, ["data.train_subset=100", "seed=1", "regularizer.l2.strength=0.01"]),
    ]
    for job, name, acc, overrides in jobs:
        write_run(sweep, job, name, acc)
        (sweep / job / ".hydra").mkdir()
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in overrides)
        )
    runs = load_runs(sweep).set_index("run")
    assert runs.loc["0", "setting"] == "digits/mlp data.train_subset=100"
    assert runs.loc["2", "technique"] == "l2 (regularizer.l2.strength=0.1)"
    table = build_report(sweep)
    assert len(table) == 4
    assert set(table["setting"]) == {
        "digits/mlp data.train_subset=100",
        "digits/mlp data.train_subset=500",
    }


def test_stacked_comparison_runs_are_read_recursively_by_arm_and_stage(comparison_sweep):
    runs = load_runs(comparison_sweep)
    arms = {"baseline", *ARMS}
    assert set(runs["technique"]) == arms and set(runs["setting"]) == {"digits/mlp"}
    tested = compared(runs)
    assert set(tested["stage"]) == {"test", "cocktail_test"}
    expected = len(SEEDS) + sum(len(diffs) for diffs, *_ in ARMS.values())
    assert len(tested) == expected
    assert len(tuning_runs(runs)) == N_TRIALS * len(TUNE_SEEDS) * len(arms)
    assert all(r.startswith("test_") or r.startswith("cocktail_test_") for r in tested["run"])
    # The look each seed came in, from the protocol record: seeds beyond the first look are 1.
    dropout = tested[tested["technique"] == "dropout"]
    assert sorted(dropout["look"]) == [0] * LOOKS[0] + [1] * (len(SEEDS) - LOOKS[0])


def test_multirun_yaml_gives_the_typed_protocol_and_budget(comparison_sweep, tmp_path):
    sweep = load_sweep(comparison_sweep)
    assert isinstance(sweep.protocol, Protocol) and sweep.n_trials == N_TRIALS
    assert sweep.design.looks == LOOKS and sweep.design.delta == DELTA
    assert load_sweep(tmp_path).protocol is None  # a folder without multirun.yaml: plain
    (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper:\n    protocol:\n      desing: 1\n")
    with pytest.raises(ConfigError, match="hydra.sweeper.protocol"):
        load_sweep(tmp_path)


def test_a_trial_is_pruned_by_status_or_by_its_pruning_metric(tmp_path):
    sweep = tmp_path / "sweep"
    protocol = {"stage": "tune", "arm": "l2", "trial": 0, "params": {}}
    write_run(sweep, "0", "l2", 0.9, protocol=protocol, **{"tune/pruned": 1.0})
    write_run(sweep, "1", "l2", 0.9, protocol=protocol, status="pruned")
    write_run(sweep, "2", "l2", 0.9, protocol=protocol, **{"tune/pruned": 0.0})
    write_run(sweep, "3", "l2", None, protocol=protocol, **{"tune/pruned": 1.0})
    assert list(load_runs(sweep)["status"]) == ["pruned", "pruned", "ok", "failed"]


@pytest.mark.parametrize(
    ("value", "spec", "where"),
    [
        (0.098, {"low": 1e-4, "high": 0.1, "log": True}, "top"),  # 0.3% of the log range away
        (1.2e-4, {"low": 1e-4, "high": 0.1, "log": True}, "bottom"),
        (0.01, {"low": 1e-4, "high": 0.1, "log": True}, None),
        (0.098, {"low": 1e-4, "high": 0.1}, "top"),
        (0.004, {"low": 1e-4, "high": 0.1}, "bottom"),  # linear: within 5% of 0.1
        (0.004, {"low": 1e-4, "high": 0.1, "log": True}, None),  # log: well inside
        (8, {"type": "int", "low": 1, "high": 8}, "top"),
        ("adam", {"type": "choice", "choices": ["adam", "sgd"]}, None),
    ],
)
def test_a_tuned_value_is_at_the_edge_within_5_percent_of_its_range(value, spec, where):
    assert edge(value, spec) == where


def test_edges_name_the_key_and_the_side():
    space = {ZCA_KEY: {"low": 1e-4, "high": 0.1, "log": True}, "x": {"low": 0, "high": 1}}
    assert edges({ZCA_KEY: 0.099, "x": 0.5}, space) == [f"{ZCA_KEY} at top"]
    assert edges({ZCA_KEY: 0.099}, {}) == [] and edges({}, space) == []
