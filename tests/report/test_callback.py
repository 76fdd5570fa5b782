import json
import subprocess
import sys

import pandas as pd
import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

import reglab.report
from reglab.report import load_runs
from reglab.report.callback import ReportCallback

from ..conftest import FAST, cli, read_wandb_run
from .conftest import write_run


def test_the_callback_is_reachable_but_not_loaded_by_the_cli():
    # Hydra resolves conf/hydra/default.yaml's _target_ through the package...
    assert get_class("reglab.report.ReportCallback") is ReportCallback
    assert reglab.report.ReportCallback is ReportCallback
    # ...while reglab-report and the notebook, which only read JSON and draw, never load torch.
    code = "import sys, reglab.report, reglab.report.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_multirun_writes_the_report(tmp_path):
    r = cli(
        "reglab-train",
        "-m",
        "+technique=baseline,l2",
        "seed=1,2",
        *FAST,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("report.md", "results.csv", "forest.png", "accuracy.png", "val_curves.png"):
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
    r = cli(
        "reglab-train",
        "-m",
        "+trainer.precision=32-true,bogus",
        *FAST,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert r.returncode != 0
    assert "1 of 2 runs failed" in r.stderr
    runs = load_runs(tmp_path).set_index("status")
    assert runs.loc["ok", "name"] == "baseline" and "bogus" in runs.loc["failed", "error"]
    failed = json.loads((tmp_path / runs.loc["failed", "run"] / "metrics.json").read_text())
    assert "Traceback" in failed["traceback"]
    md = (tmp_path / "report.md").read_text()
    assert "## Failed runs" in md and "bogus" in md
    assert (pd.read_csv(tmp_path / "results.csv")["n"] == [1, 0]).all()


def _protocol(stage: str, arm: str) -> dict:
    return {"comparison": "c", "stage": stage, "arm": arm, "trial": 0, "params": {}}


def test_only_failed_tested_runs_fail_a_comparison(tmp_path):
    """A diverging tuning trial is a search result; a failed tested run fails the comparison."""
    sweep = tmp_path / "sweep"
    for seed, (b, t) in enumerate([(0.90, 0.92), (0.91, 0.93)]):
        write_run(
            sweep, f"{seed}_base", "baseline", b, seed, protocol=_protocol("test", "baseline")
        )
        write_run(sweep, f"{seed}_l2", "l2", t, seed, protocol=_protocol("test", "l2"))
    write_run(sweep, "9_l2_tune", "l2", None, 0, protocol=_protocol("tune", "l2"))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    ReportCallback().on_multirun_end(config)  # no SystemExit: only a tuning trial failed
    assert (sweep / "report.md").is_file()
    write_run(sweep, "2_l2", "l2", None, 2, protocol=_protocol("test", "l2"))
    with pytest.raises(SystemExit) as e:
        ReportCallback().on_multirun_end(config)
    assert e.value.code == 1


def test_the_report_run_logs_the_forest_plot_and_the_verdict_table_to_wandb(
    comparison_sweep, monkeypatch
):
    """W&B offline: the sweep's report run holds forest.png and results.csv as a wandb.Table."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    logger = {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "reglab-test"}
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(comparison_sweep)}}, "logger": {"wandb": logger}}
    )
    ReportCallback(fail_on_error=False).on_multirun_end(config)
    (run_dir,) = (comparison_sweep / "wandb").glob("offline-run-*")
    files = read_wandb_run(run_dir)["files"]
    (table,) = [f for f in files if f.startswith("media/table/report/results")]
    data = json.loads((run_dir / "files" / table).read_text())
    results = pd.read_csv(comparison_sweep / "results.csv")
    assert data["columns"] == list(results.columns) and "verdict" in data["columns"]
    verdicts = dict(zip(results["technique"], results["verdict"], strict=True))
    column = data["columns"].index("verdict")
    arm = data["columns"].index("technique")
    assert {r[arm]: r[column] for r in data["data"]} == verdicts
    assert any(f.startswith("media/images/report/forest") for f in files)
