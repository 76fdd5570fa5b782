"""The report of a sweep: one row per arm, each ending in a verdict a reader decides from.

It reads only the sweep folder: every ``metrics.json`` below it and ``multirun.yaml`` (the
comparison's ``Protocol`` and tuning budget). One module per concern, in the order the data
flows:

    runs.py      the sweep's runs -> one DataFrame, a row per run; multirun.yaml -> Sweep
    tuning.py    per arm: the tuning trials run (its budget), the tuned values, edge flags
    stats.py     per arm: the paired set with the baseline, its verdict (reglab.stats), the
                 metric on the paired seeds, the validation score; the cocktail against the
                 best single technique chosen on validation
    plots.py     forest plot, paired per-seed scores, validation curves with their spread,
                 strength response of the tuning trials, train vs validation curves
    ensemble.py  each row's checkpoints evaluated as an ensemble -> ensemble.json
    render.py    report.md and the terminal table
    build.py     build_report / write_report: the steps above, in order
    callback.py  ReportCallback: the report at the end of every Hydra multirun
    watch.py     SweepWatch: a plain multirun's console (progress line, launch lines to a file)
    cli.py       reglab-report SWEEP_DIR
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reglab.report.build import build_report, write_report
from reglab.report.ensemble import load_ensemble, write_ensemble
from reglab.report.plots import (
    plot_accuracy,
    plot_all,
    plot_forest,
    plot_strength_response,
    plot_train_val,
    plot_val_curves,
    strength_response,
)
from reglab.report.render import Report, findings
from reglab.report.runs import Sweep, load_runs, load_sweep
from reglab.report.stats import (
    best_on_validation,
    cocktail_vs_best,
    paired_differences,
    summarize,
)
from reglab.report.tuning import edges, tuning

if TYPE_CHECKING:
    from reglab.report.callback import ReportCallback
    from reglab.report.watch import SweepWatch

__all__ = [
    "Report",
    "ReportCallback",
    "Sweep",
    "SweepWatch",
    "best_on_validation",
    "build_report",
    "cocktail_vs_best",
    "edges",
    "findings",
    "load_ensemble",
    "load_runs",
    "load_sweep",
    "paired_differences",
    "plot_accuracy",
    "plot_all",
    "plot_forest",
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
    if name == "SweepWatch":  # Hydra's callback of plain multiruns: imports Hydra
        from reglab.report.watch import SweepWatch

        return SweepWatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
