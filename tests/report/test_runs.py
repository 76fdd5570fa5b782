import json

from reglab.report import build_report, load_protocol, load_runs
from reglab.report.runs import compared, protocol_entry, tuning_runs

from .conftest import L2_KEY, SEEDS, TRIALS, write_protocol_sweep, write_run


def test_varying_overrides_split_settings_and_label_knobs(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [("0", "baseline", 0.9, ["data.train_subset=100", "seed=1"]),
            ("1", "baseline", 0.95, ["data.train_subset=500", "seed=1"]),
            ("2", "l2", 0.91, ["data.train_subset=100", "seed=1", "regularizer.l2.strength=0.1"]),
            ("3", "l2", 0.92, ["data.train_subset=100", "seed=1", "regularizer.l2.strength=0.01"])]  # fmt: skip
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
    assert len(table) == 4 and set(table["setting"]) == {
        "digits/mlp data.train_subset=100", "digits/mlp data.train_subset=500"}  # fmt: skip


def test_protocol_runs_are_labelled_by_their_technique_and_stage(tmp_path):
    # The protocol's own overrides (stage, a trial's knob value, a seed's split) vary between
    # jobs; they must neither split the setting nor refine the label.
    sweep = write_protocol_sweep(tmp_path / "sweep")
    for i, run in enumerate(sorted(p.parent for p in sweep.rglob("metrics.json"))):
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- +protocol.stage=x{i % 3}\n- data.split_seed={i}\n- seed={i}\n"
            f"- regularizer.l2.strength={i}e-5\n- data.train_subset=500\n"
        )
    runs = load_runs(sweep)
    assert set(runs["setting"]) == {"digits/mlp"}
    assert set(runs["technique"]) == {*TRIALS, "cocktail"}
    assert set(runs["stage"]) == {"tune", "test", "cocktail_tune", "cocktail_test"}
    l2 = runs[(runs["technique"] == "l2") & (runs["stage"] == "tune")]
    assert sorted(p[L2_KEY] for p in l2["params"]) == [1e-6, 1e-4, 1e-2, 1e-1]
    assert (l2["status"] == "pruned").sum() == 1
    assert len(compared(runs)) == 6 * len(SEEDS) and set(compared(runs)["stage"]) == {
        "test", "cocktail_test"}  # fmt: skip
    assert len(tuning_runs(runs)) == sum(map(len, TRIALS.values())) + 2


def test_protocol_json_is_read_leniently(tmp_path):
    (tmp_path / "protocol.json").write_text(json.dumps({"techniques": {"l2": {L2_KEY: 1e-3}}}))
    assert protocol_entry(load_protocol(tmp_path), "l2") == {"params": {L2_KEY: 1e-3}}
    assert protocol_entry(load_protocol(tmp_path), "dropout") == {}
    (tmp_path / "protocol.json").write_text("{not json")
    assert load_protocol(tmp_path) == {}
    assert load_protocol(tmp_path / "missing") == {}


def test_a_trial_is_pruned_by_status_or_by_its_pruning_metric(tmp_path):
    sweep = tmp_path / "sweep"
    protocol = {"stage": "tune", "technique": "l2", "trial": 0, "params": {L2_KEY: 1e-3}}
    write_run(sweep, "0", "l2", 0.9, protocol=protocol, **{"tune/pruned": 1.0})
    write_run(sweep, "1", "l2", 0.9, protocol=protocol, status="pruned")
    write_run(sweep, "2", "l2", 0.9, protocol=protocol, **{"tune/pruned": 0.0})
    write_run(sweep, "3", "l2", None, protocol=protocol, **{"tune/pruned": 1.0})
    assert list(load_runs(sweep)["status"]) == ["pruned", "pruned", "ok", "failed"]


def test_protocol_json_settings_are_found_by_study_name(tmp_path):
    protocol = {"name": "cmp", "settings": [
        {"label": "model=mlp", "tuned": {"l2": {L2_KEY: 1e-4}}},
        {"label": "model=cnn", "tuned": {"l2": {L2_KEY: 1e-2}},
         "cocktail": {"members": ["l2"], "skipped": "1 technique(s) helped on validation"}},
    ]}  # fmt: skip
    assert protocol_entry(protocol, "l2", "cmp/model=cnn/tune/l2")["params"] == {L2_KEY: 1e-2}
    assert protocol_entry(protocol, "l2", "cmp/model=mlp/tune/l2")["params"] == {L2_KEY: 1e-4}
    assert protocol_entry(protocol, "l2", "other/tune/l2") == {}
    assert "skipped" in protocol_entry(protocol, "cocktail", "cmp/model=cnn/cocktail")
    assert protocol_entry(protocol, "cocktail", "cmp/model=mlp/cocktail") == {}
