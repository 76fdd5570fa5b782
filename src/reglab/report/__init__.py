"""The report of a sweep: one table over every run, with error bars and tests against the baseline.

It reads only the ``metrics.json`` files under the sweep folder (one per job, next to its
``.hydra/``). One module per concern, in the order the data flows:

    runs.py      the sweep's runs (metrics.json + overrides) -> one DataFrame, a row per run
    stats.py     -> one row per (setting, technique): mean ± std, Δ vs baseline, CI, p-value
    plots.py     matplotlib figures (accuracy, validation curves, accuracy vs gap)
    ensemble.py  each row's checkpoints evaluated as an ensemble -> ensemble.json
    render.py    report.md and the terminal table
    build.py     build_report / write_report: the steps above, in order
    callback.py  ReportCallback: the report at the end of every Hydra multirun
    cli.py       reglab-report SWEEP_DIR
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reglab.report.build import build_report, write_report
from reglab.report.cli import main  # console scripts installed before the split import it here
from reglab.report.ensemble import load_ensemble, write_ensemble
from reglab.report.plots import plot_acc_vs_gap, plot_accuracy, plot_all, plot_val_curves
from reglab.report.render import Report
from reglab.report.runs import load_runs
from reglab.report.stats import summarize

if TYPE_CHECKING:
    from reglab.report.callback import ReportCallback

__all__ = [
    "Report",
    "ReportCallback",
    "build_report",
    "load_ensemble",
    "load_runs",
    "main",
    "plot_acc_vs_gap",
    "plot_accuracy",
    "plot_all",
    "plot_val_curves",
    "summarize",
    "write_ensemble",
    "write_report",
]


def __getattr__(name: str):
    # ReportCallback imports torch and Lightning (for W&B); only a Hydra multirun, which has them
    # loaded already, needs it, so `reglab-report` and the notebook do not pay for the import.
    if name == "ReportCallback":
        from reglab.report.callback import ReportCallback

        return ReportCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
