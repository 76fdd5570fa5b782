"""A sweep folder's report, start to end: read the runs, summarize them, draw, write the files.

Written into the sweep folder: ``report.md``, ``results.csv`` (one row per technique),
``runs.csv`` (one row per run) and the plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from reglab.report.ensemble import load_ensemble
from reglab.report.plots import plot_all
from reglab.report.render import Report, markdown, print_report
from reglab.report.runs import load_runs, sweep_note
from reglab.report.stats import summarize

# Per-run fields too long for a CSV cell: the per-epoch history, the traceback, the technique lists.
NOT_IN_RUNS_CSV = ("history", "traceback", "techniques")


def build_report(sweep_dir: str | Path) -> pd.DataFrame:
    """The report table of a sweep folder (what results.csv holds), e.g. for a ``wandb.Table``."""
    return summarize(load_runs(sweep_dir))


def write_report(sweep_dir: str | Path, quiet: bool = False) -> Report:
    """Read the runs of ``sweep_dir``; write report.md, results.csv, runs.csv and the plots."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    summary = summarize(runs)
    failed = runs[runs["status"] != "ok"]
    report = Report(sweep_dir, runs, summary, failed, load_ensemble(sweep_dir),
                    note=sweep_note(sweep_dir))  # fmt: skip
    if len(summary):
        report.files += plot_all(runs, summary, sweep_dir)
    summary.to_csv(sweep_dir / "results.csv", index=False)
    per_run = [c for c in runs.columns if c not in NOT_IN_RUNS_CSV]
    runs[per_run].to_csv(sweep_dir / "runs.csv", index=False)
    (sweep_dir / "report.md").write_text(markdown(report))
    report.files += [sweep_dir / "results.csv", sweep_dir / "runs.csv", sweep_dir / "report.md"]
    if not quiet:
        print_report(report)
        print(f"reglab-report: wrote {sweep_dir / 'report.md'}", file=sys.stderr)
    return report
