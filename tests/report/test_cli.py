import pandas as pd

from reglab.report.cli import main

from .conftest import write_run


def test_report_files_rows_and_failed_runs(fixed_sweep, capsys):
    assert main([str(fixed_sweep)]) == 1  # a failed run makes the exit status non-zero
    for name in (
        "report.md",
        "results.csv",
        "runs.csv",
        "forest.png",
        "accuracy.png",
        "val_curves.png",
    ):
        assert (fixed_sweep / name).stat().st_size > 0, name
    assert (fixed_sweep / "forest.png").read_bytes()[:4] == b"\x89PNG"
    results = pd.read_csv(fixed_sweep / "results.csv")
    assert sorted(results["technique"]) == ["baseline", "dropout", "l1", "l2"]
    assert len(pd.read_csv(fixed_sweep / "runs.csv")) == 8
    md = (fixed_sweep / "report.md").read_text()
    assert "Plain sweep" in md and "| l2 |" in md and "+0.0500 [" in md
    assert "## Failed runs" in md and "7_l1" in md and "boom: diverged" in md
    out = capsys.readouterr().out
    assert "l2" in out and "+0.0500" in out and "boom: diverged" in out


def test_report_cli_rejects_a_folder_without_runs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_a_sweep_where_every_run_failed_still_gets_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, "0_baseline", "baseline", None)
    write_run(sweep, "1_l2", "l2", None)
    assert main([str(sweep), "--quiet"]) == 1
    md = (sweep / "report.md").read_text()
    assert "0 finished, 0 pruned, 2 failed" in md and "## Failed runs" in md and "1_l2" in md
    assert list(pd.read_csv(sweep / "results.csv")["n"]) == [0, 0]
    assert not (sweep / "forest.png").exists()  # no finished run, nothing to plot
