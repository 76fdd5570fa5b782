import json
import subprocess
import sys

import pandas as pd
import pytest
from hydra.utils import get_class

import reglab.report
from reglab.report import load_runs
from reglab.report.callback import ReportCallback

from ..conftest import FAST, cli


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


def _protocol(stage: str, technique: str) -> dict:
    return {"stage": stage, "technique": technique, "trial": 0, "params": {}, "study": "s"}


def test_only_failed_tested_runs_fail_a_comparison(tmp_path):
    """A diverging tuning trial is a search result; a failed tested run fails the comparison."""
    from omegaconf import OmegaConf

    from .conftest import write_run

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
