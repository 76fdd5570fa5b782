"""``reglab-report SWEEP_DIR``: one table over every run of a sweep, with error bars and tests.

The report reads only the ``metrics.json`` files under the sweep folder (one per job, next to its
``.hydra/``). Runs are grouped into rows by *setting* (data/model plus any other override that
differs between jobs, such as ``data.train_subset``) and *technique* (the ``name`` field); each row
holds mean ± std over the seeds or folds of that group. Every technique is compared with the
``baseline`` row of its setting: the difference in mean test accuracy, the 95% confidence interval
of that difference and the p-value of Welch's t-test (unequal variances).

Written into the sweep folder: ``report.md``, ``results.csv`` (one row per technique),
``runs.csv`` (one row per run) and three plots. ``ReportCallback`` does this at the end of every
multirun and makes the sweep exit non-zero when a job failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from hydra.experimental.callback import Callback
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from scipy import stats

BASELINE = "baseline"
# The report's columns, in this order: mean ± std of each over the runs of a row.
METRICS = ("test/acc", "gap/acc", "test/ece", "weights/sparsity", "epochs_trained", "wall_time_s")
PLOTS = ("accuracy.png", "val_curves.png", "acc_vs_gap.png")
# Overrides that are what a row compares (technique) or what it averages over (seed, fold): they
# never define a setting of their own.
REPLICATE_KEYS = {"seed", "data.fold"}
TECHNIQUE_KEYS = {"technique", "regularizer", "augmentation"}
NAMED_KEYS = {"data", "model", "experiment", "hparams_search", "debug", "logger", "callbacks"}


# ----------------------------------------------------------------------------- reading runs


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def load_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per ``metrics.json`` under ``sweep_dir``: its fields plus ``run`` (the job folder,
    relative), ``setting`` and ``technique`` (the row label in the report)."""
    sweep_dir = Path(sweep_dir)
    records, overrides = [], []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            data = {"status": "failed", "error": f"unreadable metrics.json: {e}"}
        run_dir = path.parent
        data["run"] = str(run_dir.relative_to(sweep_dir)) or "."
        records.append(data)
        overrides.append(_overrides(run_dir))
    if not records:
        return pd.DataFrame(columns=["run", "status", "name", "setting", "technique", *METRICS])
    df = pd.DataFrame(records)
    for col in ("status", "name", "data", "model", "error", "seed", "fold", *METRICS):
        if col not in df:
            df[col] = np.nan
    df["status"] = df["status"].fillna("failed")
    df["name"] = df["name"].fillna("?")
    df[["data", "model"]] = df[["data", "model"]].fillna("?")

    # Overrides that differ between jobs: technique knobs (regularizer.l2.strength=...) refine the
    # technique's label, everything else (data.train_subset=..., optimizer.lr=...) the setting.
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    settings, techniques = [], []
    for (_, row), o in zip(df.iterrows(), overrides, strict=True):
        setting = [f"{row['data']}/{row['model']}"]
        knobs = []
        for k in varying:
            # Group choices (technique=l2, model=cnn, experiment/keras_case_study=zca) are already
            # in the name, data and model fields.
            if k in REPLICATE_KEYS or k in TECHNIQUE_KEYS or k in NAMED_KEYS or "/" in k:
                continue
            if k in o:
                (knobs if k.split(".")[0] in TECHNIQUE_KEYS else setting).append(f"{k}={o[k]}")
        settings.append(" ".join(setting))
        techniques.append(row["name"] + (f" ({', '.join(knobs)})" if knobs else ""))
    df["setting"] = settings
    df["technique"] = techniques
    return df


# ----------------------------------------------------------------------------- statistics


def welch(values: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Difference of means (values - baseline), its Welch confidence interval and p-value.

    NaN where either group has fewer than two runs (no variance estimate, no test)."""
    delta = (
        float(np.mean(values) - np.mean(baseline)) if len(values) and len(baseline) else math.nan
    )
    out = {"delta": delta, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    if len(values) < 2 or len(baseline) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(values, baseline, equal_var=False)
        ci = res.confidence_interval(confidence)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(res.pvalue))
    return out


def significance(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, technique) over the runs that finished: mean/std of METRICS, n, and
    Δ test accuracy vs the setting's baseline with its 95% CI, Welch p-value and mark."""
    rows = []
    ok = runs[runs["status"] == "ok"]
    for (setting, technique), group in runs.groupby(["setting", "technique"], sort=False):
        done = ok[(ok["setting"] == setting) & (ok["technique"] == technique)]
        row = {"setting": setting, "technique": technique, "n": len(done),
               "failed": int((group["status"] != "ok").sum())}  # fmt: skip
        folds = done["fold"].dropna().nunique() if "fold" in done else 0
        row["over"] = "folds" if folds > 1 else "seeds"
        for m in METRICS:
            vals = pd.to_numeric(done[m], errors="coerce").dropna()
            row[f"{m} mean"] = vals.mean() if len(vals) else math.nan
            row[f"{m} std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        base = ok[(ok["setting"] == setting) & (ok["technique"] == BASELINE)]
        acc = pd.to_numeric(done["test/acc"], errors="coerce").dropna().to_numpy()
        base_acc = pd.to_numeric(base["test/acc"], errors="coerce").dropna().to_numpy()
        if technique == BASELINE or not len(base_acc):
            test = {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
        else:
            test = welch(acc, base_acc)
        row.update(test)
        row["significance"] = "" if technique == BASELINE else significance(test["p_value"])
        if technique != BASELINE and not len(base_acc):
            row["significance"] = "no baseline"
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Baseline first in each setting, then the best mean test accuracy first.
    table["_base"] = table["technique"] != BASELINE
    table = table.sort_values(["setting", "_base", "test/acc mean"], ascending=[True, True, False])
    return table.drop(columns="_base").reset_index(drop=True)


def build_report(sweep_dir: str | Path) -> pd.DataFrame:
    """The report table of a sweep folder (what results.csv holds), e.g. for a ``wandb.Table``."""
    return summarize(load_runs(sweep_dir))


# ----------------------------------------------------------------------------- plots


def _figure(rows: int = 1, height: float = 4.0, width: float = 8.0) -> tuple[Figure, list]:
    # A Figure with its own Agg canvas: no pyplot state, works headless and inside notebooks.
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


def plot_accuracy(summary: pd.DataFrame, ax=None):
    """Mean test accuracy per technique with ± std error bars; the baseline as a dashed line."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure(height=max(3.0, 0.3 * len(summary) + 1))
    s = summary.iloc[::-1]
    colors = ["tab:gray" if t == BASELINE else "tab:green" if d > 0 and sig not in ("ns", "n/a")
              else "tab:red" if sig not in ("ns", "n/a", "", "no baseline") else "tab:blue"
              for t, d, sig in zip(s["technique"], s["delta"], s["significance"], strict=True)]  # fmt: skip
    ax.barh(s["technique"], s["test/acc mean"], xerr=s["test/acc std"].fillna(0), color=colors,
            capsize=3)  # fmt: skip
    base = summary.loc[summary["technique"] == BASELINE, "test/acc mean"]
    if len(base):
        ax.axvline(base.iloc[0], color="black", linestyle="--", linewidth=1, label="baseline")
    lo = (s["test/acc mean"] - s["test/acc std"].fillna(0)).min()
    ax.set_xlim(
        max(0.0, lo - 0.02),
        min(1.0, (s["test/acc mean"] + s["test/acc std"].fillna(0)).max() + 0.01),
    )
    ax.set_xlabel("test accuracy (mean ± std; green/red: significantly better/worse, p < 0.05)")
    ax.set_title(str(summary["setting"].iloc[0]) if len(summary) else "")
    return fig if fig is not None else ax


def val_curves(runs: pd.DataFrame, metric: str = "val/acc") -> pd.DataFrame:
    """Mean ``metric`` per epoch (rows) and technique (columns) from the runs' histories."""
    series = {}
    for technique, group in runs[runs["status"] == "ok"].groupby("technique", sort=False):
        per_run = []
        for hist in group.get("history", pd.Series(dtype=object)):
            if isinstance(hist, list) and hist:
                h = pd.DataFrame(hist)
                if metric in h and "epoch" in h:
                    per_run.append(h.set_index("epoch")[metric])
        if per_run:
            series[technique] = pd.concat(per_run, axis=1).mean(axis=1)
    return pd.DataFrame(series).sort_index()


def plot_val_curves(runs: pd.DataFrame, ax=None, metric: str = "val/acc"):
    """Validation accuracy per epoch, averaged over each technique's runs."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure()
    curves = val_curves(runs, metric)
    order = sorted(curves.columns, key=lambda t: t != BASELINE)  # baseline first in the legend
    palette = matplotlib.colormaps["tab20"].colors
    for i, technique in enumerate(order):
        base = technique == BASELINE
        ax.plot(curves.index, curves[technique], label=technique, linewidth=2.5 if base else 1.2,
                color="black" if base else palette[i % len(palette)],
                linestyle="--" if base else ("-", "-.", ":")[(i // len(palette)) % 3])  # fmt: skip
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric} (mean over runs)")
    if len(curves.columns):
        ax.legend(fontsize="x-small", ncol=2 if len(curves.columns) > 12 else 1,
                  loc="center left", bbox_to_anchor=(1.01, 0.5))  # fmt: skip
    return fig if fig is not None else ax


def plot_acc_vs_gap(summary: pd.DataFrame, ax=None):
    """Test accuracy against the generalization gap (train accuracy in eval mode - test)."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure()
    ax.errorbar(summary["gap/acc mean"], summary["test/acc mean"],
                xerr=summary["gap/acc std"].fillna(0), yerr=summary["test/acc std"].fillna(0),
                fmt="o", capsize=2, alpha=0.8)  # fmt: skip
    for _, r in summary.iterrows():
        ax.annotate(r["technique"], (r["gap/acc mean"], r["test/acc mean"]), fontsize="x-small",
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("generalization gap gap/acc (lower: less overfitting)")
    ax.set_ylabel("test accuracy")
    return fig if fig is not None else ax


def plot_all(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    settings = list(dict.fromkeys(summary.loc[summary["n"] > 0, "setting"]))
    paths = []
    rows = max(1, len(settings))
    height = max(3.0, 0.3 * summary.groupby("setting").size().max() + 1)
    for name, draw in zip(PLOTS, ("accuracy", "curves", "gap"), strict=True):
        fig, axes = _figure(rows, height=height if draw == "accuracy" else 4.0)
        for ax, setting in zip(axes, settings, strict=True):
            s = summary[summary["setting"] == setting]
            if draw == "accuracy":
                plot_accuracy(s, ax)
            elif draw == "curves":
                plot_val_curves(runs[runs["setting"] == setting], ax)
            else:
                plot_acc_vs_gap(s, ax)
            ax.set_title(setting)
        fig.savefig(out_dir / name, dpi=100)
        paths.append(out_dir / name)
    return paths


# ----------------------------------------------------------------------------- ensembles


def _checkpoint(run_dir: Path, metrics: dict) -> Path | None:
    """The weights the run was tested with: the best checkpoint, or last.ckpt for final weights."""
    best = metrics.get("best_checkpoint")
    if best and metrics.get("tested") == "best checkpoint":
        for p in (Path(best), run_dir / "checkpoints" / Path(best).name):
            if p.is_file():
                return p
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def write_ensemble(sweep_dir: str | Path) -> list[dict]:
    """Evaluate the ensemble (mean of softmax) of each row's runs; write ``ensemble.json``."""
    from reglab.eval import evaluate

    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    entries = []
    for (setting, technique), group in runs[runs["status"] == "ok"].groupby(
        ["setting", "technique"], sort=False
    ):
        members = {}
        for _, r in group.iterrows():
            ckpt = _checkpoint(sweep_dir / r["run"], r.to_dict())
            if ckpt is not None:
                members[str(ckpt)] = r["run"]
        if len(members) < 2:
            continue
        result = evaluate(list(members))
        entries.append({
            "setting": setting, "technique": technique,
            "members": [{"run": members[p], "checkpoint": p, **m}
                        for p, m in result["members"].items()],
            "ensemble": result["ensemble"], "best_member": result["best_member"],
        })  # fmt: skip
    from reglab.train import write_json_atomic

    write_json_atomic(sweep_dir / "ensemble.json", {"ensembles": entries})
    return entries


def load_ensemble(sweep_dir: str | Path) -> pd.DataFrame:
    """ensemble.json as a table: ensemble vs best (and mean) single member, per row."""
    path = Path(sweep_dir) / "ensemble.json"
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for e in json.loads(path.read_text()).get("ensembles", []):
        accs = [m["test/acc"] for m in e["members"]]
        rows.append({
            "setting": e["setting"], "technique": e["technique"], "members": len(accs),
            "ensemble test/acc": e["ensemble"]["test/acc"], "best member test/acc": max(accs),
            "mean member test/acc": float(np.mean(accs)),
            "ensemble - best": e["ensemble"]["test/acc"] - max(accs),
            "ensemble test/ece": e["ensemble"]["test/ece"],
            "mean member test/ece": float(np.mean([m["test/ece"] for m in e["members"]])),
        })  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- writing


@dataclass
class Report:
    sweep_dir: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    ensemble: pd.DataFrame
    files: list[Path] = field(default_factory=list)


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
    header = ["technique", "n", "test/acc", "Δ test/acc [95% CI]", "p", "sig", "gap/acc",
              "test/ece", "weights/sparsity", "epochs", "wall s"]  # fmt: skip
    rows = []
    for _, r in summary.iterrows():
        p = "" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"
        rows.append([
            r["technique"], f"{r['n']}" + (f" (+{r['failed']} failed)" if r["failed"] else ""),
            _pm(r["test/acc mean"], r["test/acc std"]), _delta(r), p, r["significance"],
            _pm(r["gap/acc mean"], r["gap/acc std"]), _pm(r["test/ece mean"], r["test/ece std"]),
            _pm(r["weights/sparsity mean"], r["weights/sparsity std"], 3),
            _pm(r["epochs_trained mean"], r["epochs_trained std"], 1),
            _pm(r["wall_time_s mean"], r["wall_time_s std"], 1),
        ])  # fmt: skip
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _sweep_note(sweep_dir: Path) -> str | None:
    """``hydra.callbacks.report.note`` of the sweep (e.g. techniques left out, and where they run)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
        return (((cfg.get("hydra") or {}).get("callbacks") or {}).get("report") or {}).get("note")
    except yaml.YAMLError:
        return None


def markdown(report: Report) -> str:
    s = report.summary
    out = [f"# reglab report: {report.sweep_dir.name}", ""]
    n_ok = int((report.runs["status"] == "ok").sum())
    out.append(f"{len(report.runs)} runs: {n_ok} finished, {len(report.failed)} failed. "
               "Each row: mean ± std over its runs (n = seeds, or folds for cross-validation).")  # fmt: skip
    out += ["",
            "**How to read it.** Δ is the technique's mean test accuracy minus the baseline's, in "
            "the same setting; the brackets are its 95% confidence interval (Welch). `sig` is "
            "Welch's t-test of the two groups of runs: `*` p < 0.05, `**` p < 0.01, `***` "
            "p < 0.001, `ns` not significant, `n/a` fewer than 2 runs on a side. An interval that "
            "contains 0 means this sweep cannot tell the technique from the baseline; with 3 seeds "
            "only large effects are detectable. Testing many techniques at once makes a few "
            "`*` marks likely by chance alone. `gap/acc` is train accuracy (eval mode) minus "
            "test accuracy: a regularizer that works usually lowers it.", ""]  # fmt: skip
    note = _sweep_note(report.sweep_dir)
    if note:
        out += [f"**Note.** {note}", ""]
    for setting in dict.fromkeys(s["setting"]) if len(s) else []:
        out += [f"## {setting}", ""]
        out += [_md_table(*display_rows(s[s["setting"] == setting])), ""]
    if not report.ensemble.empty:
        out += ["## Ensembles (mean of softmax) vs single members", ""]
        e = report.ensemble
        rows = [[r["setting"], r["technique"], str(r["members"]),
                 f"{r['ensemble test/acc']:.4f}", f"{r['best member test/acc']:.4f}",
                 f"{r['mean member test/acc']:.4f}", f"{r['ensemble - best']:+.4f}",
                 f"{r['ensemble test/ece']:.4f}", f"{r['mean member test/ece']:.4f}"]
                for _, r in e.iterrows()]  # fmt: skip
        out += [_md_table(["setting", "technique", "members", "ensemble test/acc",
                           "best member", "mean member", "ensemble - best", "ensemble test/ece",
                           "mean member test/ece"], rows), ""]  # fmt: skip
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
        for col in ("technique", "members", "ensemble test/acc", "best member test/acc"):
            table.add_column(col, justify="left" if col == "technique" else "right")
        for _, r in report.ensemble.iterrows():
            table.add_row(r["technique"], str(r["members"]), f"{r['ensemble test/acc']:.4f}",
                          f"{r['best member test/acc']:.4f}")  # fmt: skip
        console.print(table)
    for _, r in report.failed.iterrows():
        console.print(f"[red]failed[/red] {r['run']}: {r['error']}", markup=True, highlight=False)


def write_report(sweep_dir: str | Path, quiet: bool = False) -> Report:
    """Read the runs of ``sweep_dir``; write report.md, results.csv, runs.csv and the plots."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    summary = summarize(runs)
    failed = runs[runs["status"] != "ok"]
    report = Report(sweep_dir, runs, summary, failed, load_ensemble(sweep_dir))
    if len(summary):
        report.files += plot_all(runs, summary, sweep_dir)
    summary.to_csv(sweep_dir / "results.csv", index=False)
    per_run = [c for c in runs.columns if c not in ("history", "traceback", "techniques")]
    runs[per_run].to_csv(sweep_dir / "runs.csv", index=False)
    (sweep_dir / "report.md").write_text(markdown(report))
    report.files += [sweep_dir / "results.csv", sweep_dir / "runs.csv", sweep_dir / "report.md"]
    if not quiet:
        print_report(report)
        print(f"reglab-report: wrote {sweep_dir / 'report.md'}", file=sys.stderr)
    return report


class ReportCallback(Callback):
    """Hydra callback: write the report when a multirun ends; exit 1 if any job failed.

    ``ensemble: true`` first evaluates each row's runs as an ensemble (``ensemble.json``)."""

    def __init__(self, ensemble: bool = False, fail_on_error: bool = True, note: str | None = None):
        self.ensemble = ensemble
        self.fail_on_error = fail_on_error
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.rglob("metrics.json")):
            return  # not a training sweep (reglab-eval -m), or nothing ran
        if self.ensemble:
            write_ensemble(sweep_dir)
        report = write_report(sweep_dir)
        from reglab.tracking import log_report_table  # here: it imports torch and Lightning

        log_report_table(sweep_dir, config)  # a wandb.Table in the sweep's group, if logged to W&B
        if len(report.failed) and self.fail_on_error:
            print(f"reglab: error: {len(report.failed)} of {len(report.runs)} runs failed "
                  f"(listed in {sweep_dir / 'report.md'})", file=sys.stderr)  # fmt: skip
            sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reglab-report",
        description="Summarize a sweep folder: one row per technique (mean ± std over seeds or "
        "folds), Δ test accuracy vs the baseline with a 95%% CI and Welch's t-test; writes "
        "report.md, results.csv, runs.csv and PNG plots into the folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (logs/sweeps/<date>_<time>)")
    parser.add_argument("--ensemble", action="store_true",
                        help="also evaluate each row's runs as an ensemble (needs checkpoints)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"reglab: error: sweep_dir={args.sweep_dir}: no such folder", file=sys.stderr)
        return 2
    if not any(args.sweep_dir.rglob("metrics.json")):
        print(f"reglab: error: sweep_dir={args.sweep_dir}: no metrics.json under it (is it a "
              "sweep folder, logs/sweeps/<date>_<time>?)", file=sys.stderr)  # fmt: skip
        return 2
    if args.ensemble:
        write_ensemble(args.sweep_dir)
    report = write_report(args.sweep_dir, quiet=args.quiet)
    return 1 if len(report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
