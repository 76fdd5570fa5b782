"""A sweep folder's report, start to end: read the runs, summarize them, draw, write the files.

Written into the sweep folder: ``report.md``, ``results.csv`` (one row per technique),
``runs.csv`` (one row per run), for a comparison protocol ``tuning.csv`` (stage 1, one row per
technique), and the plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from reglab.core.io import atomic_path, write_text_atomic
from reglab.report.ensemble import load_ensemble
from reglab.report.plots import plot_all
from reglab.report.render import Report, markdown, print_report
from reglab.report.runs import load_protocol, load_runs, sweep_note
from reglab.report.stats import cocktail_vs_best, summarize
from reglab.report.tuning import tuning

# Per-run fields too long for a CSV cell (the per-epoch history, the traceback, the technique
# lists) or spread into columns of their own (the protocol: stage, trial, study, params).
NOT_IN_RUNS_CSV = ("history", "traceback", "techniques", "protocol", "params")
# Per-technique fields of the tuning table that tuning.csv leaves out (``tuned`` has them as text).
NOT_IN_TUNING_CSV = ("params", "knobs", "entry")
# A run's outcome: only "failed" counts as a failure (a pruned trial was stopped on purpose).
FINISHED = ("ok", "pruned")


def build_report(sweep_dir: str | Path) -> pd.DataFrame:
    """The report table of a sweep folder (what results.csv holds), e.g. for a ``wandb.Table``."""
    return summarize(load_runs(sweep_dir), load_protocol(sweep_dir))


def _runs_csv(runs: pd.DataFrame) -> pd.DataFrame:
    out = runs[[c for c in runs.columns if c not in NOT_IN_RUNS_CSV]]
    if "stage" in out and out["stage"].isna().all():
        # A plain sweep: its runs.csv keeps the columns it always had.
        return out.drop(columns=[c for c in ("stage", "trial", "study") if c in out])
    params = pd.DataFrame([p if isinstance(p, dict) else {} for p in runs["params"]],
                          index=runs.index)  # fmt: skip
    return pd.concat([out, params], axis=1)


def write_report(sweep_dir: str | Path, quiet: bool = False) -> Report:
    """Read the runs of ``sweep_dir``; write report.md, results.csv, runs.csv (tuning.csv) and
    the plots."""
    sweep_dir = Path(sweep_dir)
    runs, protocol = load_runs(sweep_dir), load_protocol(sweep_dir)
    summary = summarize(runs, protocol)
    tuned = tuning(runs, protocol) if len(runs) else pd.DataFrame()
    failed = runs[~runs["status"].isin(FINISHED)]
    report = Report(sweep_dir, runs, summary, failed, load_ensemble(sweep_dir),
                    note=sweep_note(sweep_dir), tuning=tuned,
                    cocktail=cocktail_vs_best(runs, summary, protocol), protocol=protocol)  # fmt: skip
    report.files += plot_all(runs, summary, sweep_dir, tuned, protocol)
    with atomic_path(sweep_dir / "results.csv") as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(sweep_dir / "runs.csv") as tmp:
        _runs_csv(runs).to_csv(tmp, index=False)
    if len(tuned):
        with atomic_path(sweep_dir / "tuning.csv") as tmp:
            tuned.drop(columns=list(NOT_IN_TUNING_CSV)).to_csv(tmp, index=False)
        report.files.append(sweep_dir / "tuning.csv")
    write_text_atomic(sweep_dir / "report.md", markdown(report))
    report.files += [sweep_dir / "results.csv", sweep_dir / "runs.csv", sweep_dir / "report.md"]
    if not quiet:
        print_report(report)
        print(f"reglab-report: wrote {sweep_dir / 'report.md'}", file=sys.stderr)
    return report
