"""The report of a sweep: one table over every run, with error bars and tests against the baseline.

It reads only the ``metrics.json`` files under the sweep folder (one per job, next to its
``.hydra/``) and, for a comparison protocol, its ``protocol.json``. One module per concern, in
the order the data flows:

    runs.py      the sweep's runs (metrics.json + overrides) -> one DataFrame, a row per run
    tuning.py    a comparison protocol's tuning trials -> one row per (setting, technique):
                 trials, the tuned values, the best validation score vs the baseline's
    stats.py     -> one row per (setting, technique): mean ± std, Δ vs baseline (paired by seed),
                 CI, p-value and Holm's adjustment, P(better), rank, tuned values; the best
                 combination vs the best single technique
    plots.py     matplotlib figures (accuracy, validation curves, accuracy vs gap; strength
                 response of the tuning trials, train vs validation curves)
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
from reglab.report.plots import (
    plot_acc_vs_gap,
    plot_accuracy,
    plot_all,
    plot_strength_response,
    plot_train_val,
    plot_val_curves,
    strength_response,
)
from reglab.report.render import Report, findings
from reglab.report.runs import load_protocol, load_runs
from reglab.report.stats import cocktail_vs_best, summarize
from reglab.report.tuning import tuning

if TYPE_CHECKING:
    from reglab.report.callback import ReportCallback

__all__ = [
    "Report",
    "ReportCallback",
    "build_report",
    "cocktail_vs_best",
    "findings",
    "load_ensemble",
    "load_protocol",
    "load_runs",
    "main",
    "plot_acc_vs_gap",
    "plot_accuracy",
    "plot_all",
    "plot_strength_response",
    "plot_train_val",
    "plot_val_curves",
    "strength_response",
    "summarize",
    "tuning",
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
