"""The report as text: ``report.md`` (markdown) and the table printed in the terminal (rich).

Both show the same cells (``display_rows``) and the same plain sentences (``findings``); nothing
here computes a statistic, it reads the summary's numbers and says what they mean.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from reglab.core.names import GAP_ACC
from reglab.core.plan import BASELINE, COCKTAIL
from reglab.report.ensemble import BEST_MEMBER_ACC, ENSEMBLE_ACC
from reglab.report.plots import ACCURACY, FOREST, STRENGTH_PLOT, TRAIN_VAL_PLOT, VAL_CURVES
from reglab.report.runs import VAL_LOSS_BEST, Sweep
from reglab.report.stats import BASELINE_VERDICT


@dataclass
class Report:
    """What a report shows: the runs, their ``summary`` (results.csv), the failed runs, the
    ensembles (empty without ensemble.json), the sweep's config; the ``tuning`` table, the
    ``cocktail`` against the best single technique; the ``files`` written."""

    sweep_dir: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    ensemble: pd.DataFrame = field(default_factory=pd.DataFrame)
    sweep: Sweep = field(default_factory=Sweep)
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)
    cocktail: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: list[Path] = field(default_factory=list)


def _nan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _f(x, fmt: str = "+.4f") -> str:
    return "–" if _nan(x) else format(x, fmt)


def interval(r) -> str:
    """``+0.0280 [+0.0201, +0.0359]``."""
    if _nan(r["mean_diff"]):
        return "–"
    ci = "" if _nan(r["ci_low"]) else f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
    return f"{r['mean_diff']:+.4f}{ci}"


def verdict_text(r) -> str:
    """The verdict, with what an undecided one could have detected and what it would take."""
    v = str(r["verdict"])
    if v == "undecided" and not _nan(r.get("mde")):
        need = "" if _nan(r.get("seeds_needed")) else f", ~{int(r['seeds_needed'])} seeds to decide"
        v += f" (could detect ±{r['mde']:.4f}{need})"
    return v + (f" — {r['flags']}" if isinstance(r.get("flags"), str) and r["flags"] else "")


def display_rows(
    summary: pd.DataFrame, metric: str, looks: int = 1
) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the verdict table (report.md and the terminal)."""
    header = [
        "technique",
        "verdict",
        f"Δ {metric} [CI]",
        "MDE",
        "seeds (look)",
        "trials",
        f"{metric} (baseline, same seeds)",
        "P(better)",
        "val Δ loss",
        "tuned",
        GAP_ACC,
    ]
    rows = []
    for _, r in summary.iterrows():
        base = r["technique"] == BASELINE
        look = "" if _nan(r.get("look")) or looks < 2 else f" (look {int(r['look']) + 1}/{looks})"
        p_better = "" if base or _nan(r["p_better"]) else f"{r['p_better']:.2f}"
        trials = "" if _nan(r.get("trials")) else str(int(r["trials"]))
        pruned = "" if _nan(r.get("pruned")) or not r["pruned"] else f" ({int(r['pruned'])} pruned)"
        mean = _f(r[f"{metric} mean"], ".4f")
        if not base:
            mean += f" ({_f(r['baseline mean'], '.4f')})"
        rows.append(
            [
                r["technique"],
                verdict_text(r),
                "(reference)" if base else interval(r),
                "" if base else _f(r["mde"], ".4f"),
                f"{r['n']}{look}",
                trials + pruned,
                mean,
                p_better,
                "" if base else _f(r["val_diff"]),
                r.get("tuned") or "",
                _f(r.get(f"{GAP_ACC} mean"), ".4f"),
            ]
        )
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(c) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows])


def _list(rows: pd.DataFrame, show) -> str:
    return "; ".join(f"{r['technique']} {show(r)}" for _, r in rows.iterrows())


def findings(s: pd.DataFrame, cocktail: pd.DataFrame, delta: float) -> list[str]:
    """What one setting's table says, in plain sentences."""
    arms = s[s["verdict"] != BASELINE_VERDICT]
    if arms.empty:
        return []
    if (s["verdict"] != BASELINE_VERDICT).all():
        return ["No baseline ran in this setting: no arm could be compared with it."]
    by = {v: arms[arms["verdict"] == v] for v in ("better", "worse", "equivalent", "undecided")}
    out = []
    if len(by["better"]):
        out.append(f"**Better than the baseline**: {_list(by['better'], interval)}.")
    else:
        out.append("**No arm is shown to beat the baseline.**")
    if len(by["worse"]):
        out.append(f"**Worse than the baseline**: {_list(by['worse'], interval)}.")
    if len(by["equivalent"]):
        out.append(
            f"**Equivalent to the baseline within ±{delta:g}**: "
            f"{_list(by['equivalent'], interval)}."
        )
    for _, r in by["undecided"].iterrows():
        if _nan(r["mde"]):
            out.append(
                f"**{r['technique']}: undecided**: {r['n']} paired seed(s), too few to test."
            )
            continue
        need = "" if _nan(r["seeds_needed"]) else f"; about {int(r['seeds_needed'])} would decide"
        out.append(
            f"**{r['technique']}: undecided** (could have detected ±{r['mde']:.4f} with "
            f"{r['n']} seeds{need}): {interval(r)} cannot be told from no effect, nor "
            f"shown within ±{delta:g}."
        )
    val_only = arms[(arms["val_diff"] < 0) & (arms["verdict"] != "better")]
    if len(val_only):
        out.append(
            "**Did not reproduce** (lower validation loss than the baseline on the same "
            "seeds, not better on test): "
            + _list(
                val_only,
                lambda r: f"(val Δ loss {r['val_diff']:+.4f}; test {r['verdict']}, {interval(r)})",
            )
            + "."
        )
    for _, c in cocktail.iterrows():
        out.append(_cocktail_sentence(c, s))
    edge = arms[arms["at_edge"].astype(str).str.len() > 0]
    if len(edge):
        out.append(
            "**Tuned at the edge of the searched range** (the best value may lie "
            f"outside it): {_list(edge, lambda r: '(' + r['at_edge'] + ')')}."
        )
    failed = s[s["failed"] > 0]
    if len(failed):
        out.append(
            "**Failed runs**: "
            + "; ".join(
                f"{r['technique']}: {r['flags'].split(';')[0]}" for _, r in failed.iterrows()
            )
            + "."
        )
    return out


def _cocktail_sentence(c, s: pd.DataFrame) -> str:
    mine = s[s["technique"] == COCKTAIL]
    vs_base = f"{mine['verdict'].iloc[0]} than the baseline" if len(mine) else "not tested"
    if len(mine) and mine["verdict"].iloc[0] in ("equivalent", "undecided"):
        vs_base = f"{mine['verdict'].iloc[0]} against the baseline"
    if _nan(c.get("ci_low")):
        outcome = "too few common seeds to test"
    elif c["mean_diff"] == 0 and math.isinf(c["ci_low"]) and math.isinf(c["ci_high"]):
        # Every difference is exactly 0: the search chose that technique alone, as tuned.
        return (
            f"**Cocktail**: {vs_base}; it is **{c['best_single']}** alone at its tuned values "
            f"(the best single technique on validation): the same result on all {c['n']} "
            "paired seeds."
        )
    elif c["ci_low"] > 0 or c["ci_high"] < 0:
        outcome = "better" if c["ci_low"] > 0 else "worse"
        outcome = f"the cocktail is {outcome} (one paired test, p = {c['p_value']:.3g})"
    else:
        outcome = f"not told apart (one paired test, p = {c['p_value']:.3g})"
    return (
        f"**Cocktail**: {vs_base}; against the best single technique chosen on validation "
        f"(**{c['best_single']}**, mean {VAL_LOSS_BEST} {c['val_mean']:.4f} vs the "
        f"cocktail's {c['cocktail_val_mean']:.4f}): cocktail − {c['best_single']} = "
        f"{interval(c)} over {c['n']} paired seeds: {outcome}."
    )


def protocol_line(report: Report) -> str:
    d, runs = report.sweep.design, report.runs
    if not runs["stage"].notna().any():
        return (
            "Plain sweep: each technique paired with the baseline by seed and tested on all "
            f"its seeds at once; alpha {d.alpha:g} family-wise (Holm across techniques), equivalence within "
            f"±{d.delta:g}, MDE at power {d.power:g}. Failed runs are left out."
        )
    budget = report.sweep.n_trials
    budget = f"{budget} tuning trials per arm" if budget else "tuning trials per arm as counted"
    return (
        f"**Protocol**: {budget} (column `trials`: counted from the tune-stage runs); paired "
        f"test seeds added in looks of {', '.join(map(str, d.looks))} to the arms still "
        f"undecided; alpha {d.alpha:g} family-wise over arms and looks ({d.spending} "
        f"spending, Holm across arms); equivalence within ±{d.delta:g} of "
        f"`{report.sweep.metric}`; MDE at power {d.power:g}. A failed test run counts at "
        "chance (1/num_classes)."
    )


def conditions(report: Report) -> list[str]:
    p = report.sweep.protocol
    seeds = f" (seeds {', '.join(map(str, p.tune_seeds))})" if p else ""
    return [
        "## What the verdicts are conditioned on",
        "",
        f"Each arm was tuned once, on the tuning splits{seeds}, and its tuned values were "
        "then held fixed over the test seeds: the intervals carry the test seeds' noise, "
        "not the tuning's (another tuning run could have picked other values). The "
        "baseline got the same budget as every arm. The best single technique and the "
        "cocktail's members were chosen on validation scores only; the test metric decided "
        "nothing but the verdicts. The cocktail is tested after the single arms and is a "
        "family of its own.",
        "",
    ]


CAPTIONS = {
    FOREST: "per arm: the paired difference from the baseline (> 0: better) with its interval, "
    "each seed's difference (grey points), the ±delta equivalence band (shaded), the verdict",
    ACCURACY: "per arm, each seed's score (coloured by verdict) joined to the baseline's on "
    "the same seed (grey)",
    VAL_CURVES: "validation accuracy per epoch: mean over the tested seeds, band ±1 std",
    STRENGTH_PLOT: "tuning: each trial's val/loss_best against the knob (pruned hollow), the "
    "tuned value dashed",
    TRAIN_VAL_PLOT: "train (solid) vs validation (dashed) accuracy per epoch, mean over the "
    "seeds, the baseline in grey",
}


def _looks(report: Report) -> int:
    return len(report.sweep.design.looks) if report.sweep.protocol else 1


def markdown(report: Report) -> str:
    s, sweep = report.summary, report.sweep
    runs = report.runs
    out = [
        f"# reglab report: {report.sweep_dir.name}",
        "",
        f"{len(runs)} runs: {int((runs['status'] == 'ok').sum())} finished, "
        f"{int((runs['status'] == 'pruned').sum())} pruned, {len(report.failed)} failed.",
        "",
        protocol_line(report),
        "",
    ]
    if sweep.note:
        out += [f"**Note.** {sweep.note}", ""]
    if s.empty and runs["stage"].notna().any():
        out += ["No test-stage run finished yet: the verdicts appear once the test stage ran.", ""]
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        mine = s[s["setting"] == setting]
        cocktail = report.cocktail
        cocktail = cocktail[cocktail["setting"] == setting] if len(cocktail) else cocktail
        out += [
            f"## {setting}",
            "",
            _md_table(*display_rows(mine, sweep.metric, _looks(report))),
            "",
        ]
        if (report.sweep_dir / FOREST).is_file():
            out += [f"![forest plot]({FOREST})", "", f"*{CAPTIONS[FOREST]}*", ""]
        out += [f"- {line}" for line in findings(mine, cocktail, sweep.design.delta)] + [""]
    if len(s):
        out += [
            "Rows: the baseline, then better, equivalent, undecided, worse, each by effect. "
            "Δ: the arm minus the baseline on the seeds both ran (> 0: better), with the "
            "interval of its verdict's test (at the level that test was run at: `level` in "
            "results.csv, the design's share of alpha for that look and arm); MDE: the smallest effect the seeds could have "
            "detected; `val Δ loss`: the same paired difference of val/loss_best (< 0: "
            "better on validation), what selection reads.",
            "",
        ]
        out += conditions(report) if runs["stage"].notna().any() else []
    if not report.ensemble.empty:
        out += [
            "## Ensembles (mean of softmax) vs single members",
            "",
            _md_table(
                ["setting", "technique", "members", ENSEMBLE_ACC, BEST_MEMBER_ACC],
                [
                    [
                        r["setting"],
                        r["technique"],
                        str(r["members"]),
                        f"{r[ENSEMBLE_ACC]:.4f}",
                        f"{r[BEST_MEMBER_ACC]:.4f}",
                    ]
                    for _, r in report.ensemble.iterrows()
                ],
            ),
            "",
        ]
    if len(report.failed):
        rows = [
            [
                r["run"],
                r["technique"],
                str(r["seed"]),
                str(r["error"]).splitlines()[0][:300] if isinstance(r["error"], str) else "?",
            ]
            for _, r in report.failed.iterrows()
        ]
        out += [
            "## Failed runs",
            "",
            _md_table(["run", "technique", "seed", "error"], rows),
            "",
            "Each failed run's full traceback is in its metrics.json (`traceback`).",
            "",
        ]
    out += ["## Plots", ""]
    for name, caption in CAPTIONS.items():
        if name != FOREST and (report.sweep_dir / name).is_file():
            out += [f"![{name}]({name})", "", f"*{caption}*", ""]
    out += [
        "Files: `results.csv` (this table), `runs.csv` (one row per run)"
        + (", `tuning.csv` (the tuning trials per arm)" if len(report.tuning) else "")
        + ".",
        "",
    ]
    return "\n".join(out)


def print_report(report: Report, console: Console | None = None) -> None:
    # Piped output (a sweep's log) gets a wide table instead of rich's 80-column default.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    s = report.summary
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        mine = s[s["setting"] == setting]
        header, rows = display_rows(mine, report.sweep.metric, _looks(report))
        table = Table(title=f"reglab report: {setting}")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i < 2 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        cocktail = report.cocktail
        cocktail = cocktail[cocktail["setting"] == setting] if len(cocktail) else cocktail
        for line in findings(mine, cocktail, report.sweep.design.delta):
            console.print(f"- {line.replace('**', '')}", markup=False, highlight=False)
    for _, r in report.failed.iterrows():
        console.print(f"[red]failed[/red] {r['run']}: {r['error']}", markup=True, highlight=False)
