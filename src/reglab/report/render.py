"""The report as text: ``report.md`` (markdown) and the table printed in the terminal (rich).

Both show the same cells (``display_rows``) and the same plain sentences (``findings``); nothing
here computes a statistic, it only reads the summary's numbers and says what they mean.
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
from reglab.report.plots import PLOTS, STRENGTH_PLOT, TRAIN_VAL_PLOT
from reglab.report.runs import BASELINE, COCKTAIL
from reglab.report.stats import ALPHA
from reglab.report.tuning import TESTED

SIGNIFICANT = ("*", "**", "***")
STAGE_ORDER = ("search", "tune", "test", "cocktail_tune", "cocktail_test")
PROTOCOL_SHOWN = ("objective", "direction", "seeds", "tune_seed", "budget", "trials")


@dataclass
class Report:
    """What a report shows: the runs, their summary (results.csv), the failed runs, the
    ensembles (empty without ensemble.json) and the sweep's note; for a comparison protocol also
    its stage-1 ``tuning`` table, the ``cocktail`` against the best single technique and
    ``protocol.json``; ``files`` it wrote."""

    sweep_dir: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    ensemble: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    note: str | None = None
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)
    cocktail: pd.DataFrame = field(default_factory=pd.DataFrame)
    protocol: dict = field(default_factory=dict)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def _pm(mean: float, std: float, digits: int = 4) -> str:
    if _nan(mean):
        return "–"
    s = f"{mean:.{digits}f}"
    return s if _nan(std) else f"{s} ± {std:.{digits}f}"


def _ci(delta: float, low: float, high: float) -> str:
    if _nan(delta):
        return "–"
    return f"{delta:+.4f}" + ("" if _nan(low) else f" [{low:+.4f}, {high:+.4f}]")


def _delta(r) -> str:
    if r["technique"] == BASELINE:
        return "(baseline)"
    return _ci(r["delta"], r["ci_low"], r["ci_high"])


def _p_better(r) -> str:
    if r["technique"] == BASELINE:
        return ""
    if _nan(r.get("p_better")):
        return "–"
    ci = "" if _nan(r["p_better_low"]) else f" [{r['p_better_low']:.2f}, {r['p_better_high']:.2f}]"
    return f"{r['p_better']:.2f}{ci}"


def _p(p) -> str:
    return "" if _nan(p) else f"{p:.3g}"


def _has_tuning(summary: pd.DataFrame) -> bool:
    return "tuned" in summary


def display_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the report table (shared by report.md and the terminal)."""
    tuned = _has_tuning(summary)
    header = ["rank", "technique", "n", TEST_ACC, f"Δ {TEST_ACC} [95% CI]", "p", "p Holm", "sig",
              "P(better) [95% CI]", *(["tuned", "val Δ (tuning)"] if tuned else []), GAP_ACC,
              TEST_ECE, SPARSITY, "epochs", "wall s"]  # fmt: skip

    def pm(metric: str, digits: int = 4) -> str:
        return _pm(r[f"{metric} mean"], r[f"{metric} std"], digits)

    rows = []
    for _, r in summary.iterrows():
        extra = []
        if tuned:
            knob = r["tuned"] if isinstance(r["tuned"], str) and r["tuned"] else "–"
            extra = [knob, "" if _nan(r["val_delta"]) else f"{r['val_delta']:+.4f}"]
        rows.append([
            "" if _nan(r.get("rank")) else str(int(r["rank"])), r["technique"],
            f"{r['n']}" + (f" (+{r['failed']} failed)" if r["failed"] else ""),
            pm(TEST_ACC), _delta(r), _p(r["p_value"]), _p(r.get("p_holm")), r["significance"],
            _p_better(r), *extra, pm(GAP_ACC), pm(TEST_ECE), pm(SPARSITY, 3),
            pm("epochs_trained", 1), pm("wall_time_s", 1),
        ])  # fmt: skip
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _names(rows: pd.DataFrame, show=None) -> str:
    """``a (detail), b (detail)``: the techniques of ``rows``, each with ``show(row)``."""
    return ", ".join(
        f"{r['technique']} ({show(r)})" if show else str(r["technique"]) for _, r in rows.iterrows()
    )


def _show_ci(r) -> str:
    return _ci(r["delta"], r["ci_low"], r["ci_high"])


def _show_holm(r) -> str:
    return f"p = {r['p_value']:.3g}, Holm {r['p_holm']:.3g}"


def _show_val(r) -> str:
    return f"val {r['val_delta']:+.4f} in tuning; test {_show_ci(r)}, {r['significance']}"


def findings(s: pd.DataFrame) -> list[str]:
    """What one setting's table says, in plain sentences: what helped, what hurt, what cannot be
    told from the baseline, and every effect that did not hold up (lost to the correction, or
    better on validation but not on test)."""
    techniques = s[s["technique"] != BASELINE]
    if techniques.empty:
        return []
    if (techniques["significance"] == "no baseline").all():
        return ["No baseline ran in this setting: no technique could be tested against it."]
    tested = techniques[techniques["p_value"].notna()]
    m = len(tested)
    sig = tested["significance"].isin(SIGNIFICANT)
    better, worse = tested[sig & (tested["delta"] > 0)], tested[sig & (tested["delta"] < 0)]
    same = tested[(tested["delta"] == 0) & (tested["ci_low"] == 0) & (tested["ci_high"] == 0)]
    lost = tested[(tested["p_value"] < ALPHA) & ~sig]
    unclear = tested[~sig & ~tested.index.isin(same.index) & ~tested.index.isin(lost.index)]
    correction = f"Holm's correction for {m} comparison{'s' if m != 1 else ''}"
    out = []
    if len(better):
        out.append(f"**Better than the baseline** after {correction}: {_names(better, _show_ci)}.")
    elif m:
        out.append(f"**No technique is shown to beat the baseline** after {correction}.")
    if len(worse):
        out.append(f"**Worse than the baseline**: {_names(worse, _show_ci)}.")
    if len(unclear):
        out.append(f"**Not told apart from the baseline** (`ns`): {_names(unclear)}. This sweep "
                   "cannot separate them from the baseline; that is not proof that they do "
                   "nothing.")  # fmt: skip
    if len(same):
        out.append(f"**Identical to the baseline on every seed** (the technique never changed a "
                   f"result at this setting): {_names(same)}.")  # fmt: skip
    if len(lost):
        out.append(f"**Significant alone, not after the correction**: {_names(lost, _show_holm)}. "
                   "Effects of this size need more seeds to be told from chance.")  # fmt: skip
    if "val_delta" in s:
        val_only = techniques[(techniques["val_delta"] > 0) & (techniques["n"] > 0)
                              & ~techniques.index.isin(better.index)]  # fmt: skip
        if len(val_only):
            out.append(f"**Better on validation in tuning, not shown better on test** (did not "
                       f"reproduce): {_names(val_only, _show_val)}.")  # fmt: skip
    untested = techniques[techniques["p_value"].isna()
                          & (techniques["significance"] != "no baseline")]  # fmt: skip
    if len(untested):
        out.append(f"**Not tested** (fewer than 2 runs on a side): {_names(untested)}.")
    return out


HOW_TO_READ = (
    "Each row: mean ± std over its runs (n = seeds, or folds for cross-validation); `rank` "
    "orders by mean test accuracy (ties share a rank). Δ is the technique's test accuracy minus "
    "the baseline's in the same setting, with its 95% confidence interval: paired by seed (the "
    "mean of the per-seed differences and the paired t-test) where the technique and the "
    "baseline ran the same seeds, otherwise Welch's (unequal variances; folds, unequal seeds). "
    "`p` is that test's p-value; `p Holm` adjusts it for the number of techniques compared in "
    "the setting (Holm's step-down method: the chance of any false `*` stays under 5%). `sig` "
    "is read from the adjusted value: `*` < 0.05, `**` < 0.01, `***` < 0.001, `ns` not "
    "significant, `n/a` fewer than 2 runs on a side. The interval is not adjusted: one that "
    "excludes 0 next to `ns` is an effect that did not survive the correction. `P(better)` is "
    "the fraction of seeds on which the technique beat the baseline (ties count half; without "
    "pairs, of all pairs of runs), with a 95% bootstrap interval. `gap/acc` is train accuracy "
    "(eval mode) minus test accuracy: a regularizer that works usually lowers it."
)
HOW_TO_READ_TUNING = (
    " `tuned` is the value of the technique's knob chosen on validation in stage 1 and used on "
    "every seed of the test stage; `val Δ (tuning)` is its best validation score minus the "
    "baseline's. That is a best-of-many-trials number, which favours techniques with a knob to "
    "search: only the test columns decide."
)
PLOT_CAPTIONS = {
    "accuracy.png": "mean test accuracy ± std per technique (green/red: significantly "
    "better/worse than the baseline after Holm's correction)",
    "val_curves.png": "validation accuracy per epoch, mean over each technique's runs",
    "acc_vs_gap.png": "test accuracy against the generalization gap",
    STRENGTH_PLOT: "stage 1: validation score of each trial against the technique's knob, the "
    "chosen value dashed; a peak inside the range shows under- and over-regularization on "
    "either side",
    TRAIN_VAL_PLOT: "train (solid) vs validation (dashed) accuracy per epoch, mean over the "
    "seeds, the baseline in grey: a regularizer that works closes the shaded gap",
}


def _protocol_line(report: Report) -> str | None:
    runs = report.runs
    if "stage" not in runs or runs["stage"].isna().all():
        return None
    counts = []
    stages = runs["stage"].dropna().unique()
    for stage in [*(s for s in STAGE_ORDER if s in stages), *(s for s in stages if s not in STAGE_ORDER)]:  # fmt: skip
        group = runs[runs["stage"] == stage]
        pruned = int((group["status"] == "pruned").sum())
        counts.append(f"{stage} {len(group)}" + (f" ({pruned} pruned)" if pruned else ""))
    kind = "An Optuna search" if list(stages) == ["search"] else "Comparison protocol"
    line = f"{kind}; runs per stage: " + ", ".join(counts) + "."
    p = report.protocol
    shown = [f"{k} = {p[k]}" for k in PROTOCOL_SHOWN if k in p and not isinstance(p[k], dict)]
    if isinstance(p.get("budget"), dict):
        shown.append("trials " + ", ".join(f"{k} {v}" for k, v in p["budget"].items()))
    if shown:
        line += " protocol.json: " + "; ".join(shown) + "."
    if p.get("settings") and not p.get("complete"):
        line += (" **The protocol has not finished** (protocol.json is not marked complete): "
                 "the tables cover the runs so far; the same command continues it.")  # fmt: skip
    return line


def _score_name(metric: str) -> str:
    return "validation score" if metric == TESTED else metric


def _tuning_section(t: pd.DataFrame, tested: bool) -> list[str]:
    title = "Tuning (stage 1: " if tested else "Search ("
    out = [f"## {title}validation only, the test set untouched)", ""]
    metric = t["metric"].iloc[0]
    scored = (
        "the validation accuracy of the weights the test uses (`val/acc_best` with the best "
        "checkpoint, else the final `val/acc`)"
        if metric == TESTED
        else f"`{metric}`"
    )
    rows = []
    for _, r in t.iterrows():
        trials = f"{r['trials']}" + (f" ({r['pruned']} pruned)" if r["pruned"] else "")
        trials += f" (+{r['failed']} failed)" if r["failed"] else ""
        rows.append([r["setting"], r["technique"], trials,
                     ", ".join(k.split(".")[-1] for k in r["knobs"]) or "–", r["tuned"] or "–",
                     _pm(r["val_tuned"], None), "" if _nan(r["val_delta"]) else
                     f"{r['val_delta']:+.4f}", r["source"]])  # fmt: skip
    out += [_md_table(["setting", "technique", "trials", "knobs", "tuned value",
                       f"best {_score_name(metric)}", "Δ vs baseline", "from"], rows), ""]  # fmt: skip
    then = ("the tuned values were then retrained on the paired test seeds" if tested else
            "no run was tested: the best values are in `optimization_results.yaml`")  # fmt: skip
    out += [f"Each technique's knobs were searched with the same budget of trials and scored by "
            f"{scored} alone; {then} (`{STRENGTH_PLOT}` shows every trial). `from`: where the "
            "tuned value was read (the test runs themselves, protocol.json, or the best "
            "finished trial).", ""]  # fmt: skip
    return out


def _cocktail_section(report: Report) -> list[str]:
    out = ["## Best combination vs best single technique vs baseline", ""]
    s, tuned = report.summary, _has_tuning(report.summary)
    for _, c in report.cocktail.iterrows():
        if isinstance(c.get("skipped"), str):
            out += [f"### {c['setting']}", "", f"No combination was tested: {c['skipped']}.", ""]
            continue
        mine = s[s["setting"] == c["setting"]].set_index("technique")
        rows = []
        for role, technique in (("baseline", BASELINE), ("best single technique",
                                c["best_single"]), ("best combination", COCKTAIL)):  # fmt: skip
            if technique not in mine.index:
                continue
            r = mine.loc[technique]
            label = technique
            if tuned and isinstance(r["tuned"], str) and r["tuned"]:
                label += f" ({r['tuned']})"
            delta = "(baseline)" if technique == BASELINE else _ci(r["delta"], r["ci_low"],
                                                                     r["ci_high"])  # fmt: skip
            rows.append([role, label, str(r["n"]), _pm(r[f"{TEST_ACC} mean"], r[f"{TEST_ACC} std"]),
                         delta, r["significance"]])  # fmt: skip
        out += [f"### {c['setting']}", "",
                _md_table(["", "technique", "n", TEST_ACC, "Δ vs baseline [95% CI]",
                           "sig (Holm)"], rows), ""]  # fmt: skip
        verdict = (
            "the combination is shown to beat the best single technique"
            if c["significance"] in SIGNIFICANT and c["delta"] > 0
            else "the combination is shown to be worse than the best single technique"
            if c["significance"] in SIGNIFICANT
            else "the combination is not shown to differ from the best single technique"
        )
        pairs = f"paired over {c['pairs']} seeds" if c["pairs"] else "unpaired"
        better = (f"; P(combination better on a seed) = {c['p_better']:.2f} "
                  f"[{c['p_better_low']:.2f}, {c['p_better_high']:.2f}]"
                  if not _nan(c["p_better_low"]) else "")  # fmt: skip
        out += [f"Combination − {c['best_single']}: {_ci(c['delta'], c['ci_low'], c['ci_high'])} "
                f"({pairs}, p = {_p(c['p_value']) or 'n/a'}, one comparison, not adjusted"
                f"{better}): **{verdict}**. The best single technique is picked by its test "
                "accuracy, which flatters it.", ""]  # fmt: skip
    return out


def markdown(report: Report) -> str:
    s = report.summary
    out = [f"# reglab report: {report.sweep_dir.name}", ""]
    n_ok = int((report.runs["status"] == "ok").sum())
    n_pruned = int((report.runs["status"] == "pruned").sum())
    pruned = f", {n_pruned} pruned" if n_pruned else ""
    out.append(f"{len(report.runs)} runs: {n_ok} finished{pruned}, {len(report.failed)} failed. "
               "Each row: mean ± std over its runs (n = seeds, or folds for cross-validation).")  # fmt: skip
    protocol = _protocol_line(report)
    out += [""] + ([protocol, ""] if protocol else [])
    if report.note:
        out += [f"**Note.** {report.note}", ""]
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        mine = s[s["setting"] == setting]
        out += [f"## {setting}", "", _md_table(*display_rows(mine)), ""]
        out += [f"- {line}" for line in findings(mine)]
        out += [""] if findings(mine) else []
    searched = protocol and set(report.runs["stage"].dropna()) <= {"search"}
    if not len(s) and protocol and not searched:
        out += ["No test-stage run finished yet: the table appears once stage 2 has run.", ""]
    if len(s):
        out += ["## How to read this", "",
                HOW_TO_READ + (HOW_TO_READ_TUNING if _has_tuning(s) else ""), ""]  # fmt: skip
    if not report.tuning.empty:
        out += _tuning_section(report.tuning, tested=len(s) > 0)
    if not report.cocktail.empty:
        out += _cocktail_section(report)
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
    for p in (*PLOTS, STRENGTH_PLOT, TRAIN_VAL_PLOT):
        if (report.sweep_dir / p).is_file():
            out += [f"![{p}]({p})", "", f"*{PLOT_CAPTIONS[p]}*", ""]
    files = "`results.csv` (this table, one row per technique), `runs.csv` (one row per run)"
    if not report.tuning.empty:
        files += ", `tuning.csv` (stage 1, one row per technique)"
    out += [f"Files: {files}.", ""]
    return "\n".join(out)


def print_report(report: Report, console: Console | None = None) -> None:
    # Piped output (a sweep's log) gets a wide table instead of rich's 80-column default.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    s = report.summary
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        mine = s[s["setting"] == setting]
        header, rows = display_rows(mine)
        table = Table(title=f"reglab report: {setting}")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 1 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for line in findings(mine):
            console.print(f"- {line.replace('**', '')}", markup=False, highlight=False)
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
