"""The report as text: ``report.md`` (markdown) and the table printed in the terminal (rich).

Both show the same cells (``display_rows``); nothing here computes a statistic.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from reglab.core.names import GAP_ACC, SPARSITY, TEST_ACC, TEST_ECE
from reglab.report.ensemble import (
    BEST_MEMBER_ACC,
    ENSEMBLE_ACC,
    ENSEMBLE_ECE,
    MEAN_MEMBER_ACC,
    MEAN_MEMBER_ECE,
)
from reglab.report.plots import PLOTS
from reglab.report.stats import BASELINE


@dataclass
class Report:
    """What a report shows: the runs, their summary (results.csv), the failed runs, the
    ensembles (empty without ensemble.json) and the sweep's note; ``files`` it wrote."""

    sweep_dir: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    ensemble: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    note: str | None = None


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    s = f"{mean:.{digits}f}"
    return s if std is None or math.isnan(std) else f"{s} ± {std:.{digits}f}"


def _delta(r) -> str:
    if r["technique"] == BASELINE:
        return "(baseline)"
    if math.isnan(r["delta"]):
        return "–"
    ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
    return f"{r['delta']:+.4f}{ci}"


def display_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the report table (shared by report.md and the terminal)."""
    header = ["technique", "n", TEST_ACC, f"Δ {TEST_ACC} [95% CI]", "p", "sig", GAP_ACC,
              TEST_ECE, SPARSITY, "epochs", "wall s"]  # fmt: skip

    def pm(metric: str, digits: int = 4) -> str:
        return _pm(r[f"{metric} mean"], r[f"{metric} std"], digits)

    rows = []
    for _, r in summary.iterrows():
        p = "" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"
        rows.append([
            r["technique"], f"{r['n']}" + (f" (+{r['failed']} failed)" if r["failed"] else ""),
            pm(TEST_ACC), _delta(r), p, r["significance"], pm(GAP_ACC), pm(TEST_ECE),
            pm(SPARSITY, 3), pm("epochs_trained", 1), pm("wall_time_s", 1),
        ])  # fmt: skip
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


HOW_TO_READ = (
    "**How to read it.** Δ is the technique's mean test accuracy minus the baseline's, in "
    "the same setting; the brackets are its 95% confidence interval (Welch). `sig` is "
    "Welch's t-test of the two groups of runs: `*` p < 0.05, `**` p < 0.01, `***` "
    "p < 0.001, `ns` not significant, `n/a` fewer than 2 runs on a side. An interval that "
    "contains 0 means this sweep cannot tell the technique from the baseline; with 3 seeds "
    "only large effects are detectable. Testing many techniques at once makes a few "
    "`*` marks likely by chance alone. `gap/acc` is train accuracy (eval mode) minus "
    "test accuracy: a regularizer that works usually lowers it."
)


def markdown(report: Report) -> str:
    s = report.summary
    out = [f"# reglab report: {report.sweep_dir.name}", ""]
    n_ok = int((report.runs["status"] == "ok").sum())
    out.append(f"{len(report.runs)} runs: {n_ok} finished, {len(report.failed)} failed. "
               "Each row: mean ± std over its runs (n = seeds, or folds for cross-validation).")  # fmt: skip
    out += ["", HOW_TO_READ, ""]
    if report.note:
        out += [f"**Note.** {report.note}", ""]
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        out += [f"## {setting}", ""]
        out += [_md_table(*display_rows(s[s["setting"] == setting])), ""]
    if not report.ensemble.empty:
        out += ["## Ensembles (mean of softmax) vs single members", ""]
        rows = [[r["setting"], r["technique"], str(r["members"]), f"{r[ENSEMBLE_ACC]:.4f}",
                 f"{r[BEST_MEMBER_ACC]:.4f}", f"{r[MEAN_MEMBER_ACC]:.4f}",
                 f"{r['ensemble - best']:+.4f}", f"{r[ENSEMBLE_ECE]:.4f}",
                 f"{r[MEAN_MEMBER_ECE]:.4f}"] for _, r in report.ensemble.iterrows()]  # fmt: skip
        out += [_md_table(["setting", "technique", "members", ENSEMBLE_ACC, "best member",
                           "mean member", "ensemble - best", ENSEMBLE_ECE, MEAN_MEMBER_ECE],
                          rows), ""]  # fmt: skip
    if len(report.failed):
        out += ["## Failed runs", ""]
        rows = [[r["run"], r["technique"], str(r["seed"]), str(r["error"]).splitlines()[0][:300]
                 if isinstance(r["error"], str) else "?"] for _, r in report.failed.iterrows()]  # fmt: skip
        out += [_md_table(["run", "technique", "seed", "error"], rows), ""]
        out += ["Each failed run's full traceback is in its metrics.json (`traceback`).", ""]
    out += ["## Plots", ""]
    out += [f"![{p}]({p})" for p in PLOTS if (report.sweep_dir / p).is_file()]
    out += ["", "Files: `results.csv` (this table, one row per technique), `runs.csv` (one row "
            "per run).", ""]  # fmt: skip
    return "\n".join(out)


def print_report(report: Report, console: Console | None = None) -> None:
    # Piped output (a sweep's log) gets a wide table instead of rich's 80-column default.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    s = report.summary
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        header, rows = display_rows(s[s["setting"] == setting])
        table = Table(title=f"reglab report: {setting}")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if not report.ensemble.empty:
        table = Table(title="ensembles vs single members")
        for col in ("technique", "members", ENSEMBLE_ACC, BEST_MEMBER_ACC):
            table.add_column(col, justify="left" if col == "technique" else "right")
        for _, r in report.ensemble.iterrows():
            table.add_row(r["technique"], str(r["members"]), f"{r[ENSEMBLE_ACC]:.4f}",
                          f"{r[BEST_MEMBER_ACC]:.4f}")  # fmt: skip
        console.print(table)
    for _, r in report.failed.iterrows():
        console.print(f"[red]failed[/red] {r['run']}: {r['error']}", markup=True, highlight=False)
