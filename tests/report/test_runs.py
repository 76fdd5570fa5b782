from reglab.report import build_report, load_runs

from .conftest import write_run


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
