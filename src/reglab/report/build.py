"""A sweep folder's report, start to end: read the runs and multirun.yaml, decide every arm,
draw, write the files.

Written into the sweep folder: ``report.md``, ``results.csv`` (one row per arm, ending in its
verdict), ``runs.csv`` (one row per run), for a comparison ``tuning.csv`` (one row per arm:
trials, tuned values, edge flags), and the plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from reglab.core.io import atomic_path, write_text_atomic
from reglab.report.ensemble import load_ensemble
from reglab.report.plots import plot_all
from reglab.report.render import Report, markdown, print_report
from reglab.report.runs import load_runs, load_sweep
from reglab.report.stats import cocktail_vs_best, summarize
from reglab.report.tuning import tuning

# Per-run fields too long for a CSV cell (the per-epoch history, the traceback) or spread into
# columns of their own (the protocol record).
NOT_IN_RUNS_CSV = ("history", "traceback", "techniques", "protocol", "params", "space")
# Per-arm lists the plots draw from (per-seed scores and differences), too long for results.csv.
NOT_IN_RESULTS_CSV = ("seed_scores", "seed_base", "diffs", "seed_failed")
NOT_IN_TUNING_CSV = ("params", "space")
FINISHED = ("ok", "pruned")  # a pruned trial was stopped on purpose: not a failure


def build_report(sweep_dir: str | Path) -> pd.DataFrame:
    """The verdict table of a sweep folder (what results.csv holds)."""
    summary = summarize(load_runs(sweep_dir), load_sweep(sweep_dir))
    return summary.drop(columns=[c for c in NOT_IN_RESULTS_CSV if c in summary])


def _runs_csv(runs: pd.DataFrame) -> pd.DataFrame:
    out = runs[[c for c in runs.columns if c not in NOT_IN_RUNS_CSV]]
    if out["stage"].isna().all():
        # A plain sweep: its runs.csv keeps the columns it always had.
        return out.drop(columns=[c for c in ("comparison", "stage", "arm", "trial", "look")])
    params = pd.DataFrame(list(runs["params"]), index=runs.index)
    return pd.concat([out, params], axis=1)


def _csv(table: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def write_report(sweep_dir: str | Path, quiet: bool = False, plots: bool = True) -> Report:
    """Read the runs and multirun.yaml of ``sweep_dir``; write report.md, results.csv, runs.csv
    (tuning.csv) and, unless ``plots`` is false (a quick report between looks), the plots. The
    Report returned holds the tables and the files written."""
    sweep_dir = Path(sweep_dir)
    runs, sweep = load_runs(sweep_dir), load_sweep(sweep_dir)
    summary = summarize(runs, sweep)
    tuned = tuning(runs) if len(runs) else pd.DataFrame()
    report = Report(
        sweep_dir,
        runs,
        summary,
        runs[~runs["status"].isin(FINISHED)],
        load_ensemble(sweep_dir),
        sweep,
        tuned,
        cocktail_vs_best(runs, summary, sweep),
    )
    if plots:
        delta, metric = sweep.design.delta, sweep.metric
        report.files += plot_all(runs, summary, sweep_dir, tuned, delta, metric)
    results = summary.drop(columns=[c for c in NOT_IN_RESULTS_CSV if c in summary])
    report.files += [
        _csv(results, sweep_dir / "results.csv"),
        _csv(_runs_csv(runs), sweep_dir / "runs.csv"),
    ]
    if len(tuned):
        report.files.append(
            _csv(tuned.drop(columns=list(NOT_IN_TUNING_CSV)), sweep_dir / "tuning.csv")
        )
    write_text_atomic(sweep_dir / "report.md", markdown(report))
    report.files.append(sweep_dir / "report.md")
    if not quiet:
        print_report(report)
        print(f"reglab-report: wrote {sweep_dir / 'report.md'}", file=sys.stderr)
    return report
