import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reglab.report import build_report, load_runs, main, write_ensemble, write_report

from .conftest import FAST, cli, train

BASE = [0.90, 0.92, 0.94]
L2 = [0.96, 0.97, 0.98]


def write_run(sweep: Path, job: str, name: str, acc: float | None, seed: int = 0, **extra) -> None:
    run = sweep / job
    run.mkdir(parents=True)
    if acc is None:
        data = {
            "status": "failed",
            "name": name,
            "seed": seed,
            "data": "digits",
            "model": "mlp",
            "error": "boom: diverged",
        }
    else:
        data = {"status": "ok", "name": name, "seed": seed, "data": "digits", "model": "mlp",
                "test/acc": acc, "gap/acc": 1.0 - acc, "test/ece": 0.05, "weights/sparsity": 0.1,
                "epochs_trained": 3, "wall_time_s": 2.0,
                "history": [{"epoch": e, "val/acc": acc * (e + 1) / 3} for e in range(3)]}  # fmt: skip
    data.update(extra)
    (run / "metrics.json").write_text(json.dumps(data))


@pytest.fixture
def fixed_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    for i, acc in enumerate(BASE):
        write_run(sweep, f"{i}_baseline", "baseline", acc, seed=i)
    for i, acc in enumerate(L2):
        write_run(sweep, f"{3 + i}_l2", "l2", acc, seed=i)
    write_run(sweep, "6_dropout", "dropout", 0.91, seed=0)
    write_run(sweep, "7_l1", "l1", None, seed=0)
    return sweep


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


def test_report_files_rows_and_failed_runs(fixed_sweep, capsys):
    assert main([str(fixed_sweep)]) == 1  # a failed run makes the exit status non-zero
    for name in ("report.md", "results.csv", "runs.csv", "accuracy.png", "val_curves.png",
                 "acc_vs_gap.png"):  # fmt: skip
        assert (fixed_sweep / name).stat().st_size > 0, name
    assert (fixed_sweep / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    results = pd.read_csv(fixed_sweep / "results.csv")
    assert sorted(results["technique"]) == ["baseline", "dropout", "l1", "l2"]
    assert len(pd.read_csv(fixed_sweep / "runs.csv")) == 8
    md = (fixed_sweep / "report.md").read_text()
    assert "| l2 | 3 | 0.9700 ± 0.0100 | +0.0500 [" in md
    assert "## Failed runs" in md and "7_l1" in md and "boom: diverged" in md
    out = capsys.readouterr().out
    assert "l2" in out and "+0.0500" in out and "boom: diverged" in out


def test_report_cli_rejects_a_folder_without_runs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


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


@pytest.mark.slow
def test_ensemble_vs_best_member(tmp_path):
    sweep = tmp_path / "sweep"
    accs = []
    for seed in (1, 2, 3):
        s = train(["trainer.max_epochs=2", "callbacks=model_checkpoint", "logger=csv",
                   f"seed={seed}"], sweep / f"{seed}_baseline")  # fmt: skip
        accs.append(s["test/acc"])
    (entry,) = write_ensemble(sweep)
    members = sorted(m["test/acc"] for m in entry["members"])
    # Each member, re-evaluated from its checkpoint, scores what its run reported.
    np.testing.assert_allclose(members, sorted(accs), atol=1e-6)
    assert entry["best_member"] == max(members) and 0.5 < entry["ensemble"]["test/acc"] <= 1.0
    report = write_report(sweep, quiet=True)
    row = report.ensemble.iloc[0]
    assert row["members"] == 3 and math.isclose(
        row["best member test/acc"], max(accs), abs_tol=1e-6
    )
    md = (sweep / "report.md").read_text()
    assert "## Ensembles" in md and f"{entry['ensemble']['test/acc']:.4f}" in md


@pytest.mark.slow
def test_multirun_writes_the_report(tmp_path):
    r = cli("reglab-train", "-m", "+technique=baseline,l2", "seed=1,2", *FAST,
            f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("report.md", "results.csv", "accuracy.png", "val_curves.png", "acc_vs_gap.png"):
        assert (tmp_path / name).is_file(), name
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["technique"]) == ["baseline", "l2"] and list(results["n"]) == [2, 2]
    assert (results["setting"] == "digits/mlp").all()
    # reglab-report on the folder reproduces the table.
    before = (tmp_path / "report.md").read_text()
    again = cli("reglab-report", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "report.md").read_text() == before


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # An invalid Trainer argument fails inside Lightning (not a ReglabError) in one job of two.
    r = cli("reglab-train", "-m", "+trainer.precision=32-true,bogus", *FAST,
            f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert r.returncode != 0
    assert "1 of 2 runs failed" in r.stderr
    runs = load_runs(tmp_path).set_index("status")
    assert runs.loc["ok", "name"] == "baseline" and "bogus" in runs.loc["failed", "error"]
    failed = json.loads((tmp_path / runs.loc["failed", "run"] / "metrics.json").read_text())
    assert "Traceback" in failed["traceback"]
    md = (tmp_path / "report.md").read_text()
    assert "## Failed runs" in md and "bogus" in md
    assert (pd.read_csv(tmp_path / "results.csv")["n"] == [1, 0]).all()
