"""The report's figures. Each ``plot_*`` draws into a given axis (a notebook's subplot) or, without
one, returns a Figure of its own; ``plot_all`` writes the PNGs of a sweep, one panel per setting
(accuracy, validation curves, accuracy vs gap) or per technique (the protocol's strength-response
curves from stage 1, train vs validation accuracy of the compared runs).

Figures get their own Agg canvas instead of going through pyplot: no global state, so they work
headless, in a Hydra callback and inside notebooks alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reglab.core.io import atomic_path
from reglab.core.names import GAP_ACC, TEST_ACC, VAL_ACC
from reglab.report.runs import BASELINE, COCKTAIL, compared, tuning_runs
from reglab.report.tuning import TESTED, objective, scores, short_key

PLOTS = ("accuracy.png", "val_curves.png", "acc_vs_gap.png")
STRENGTH_PLOT, TRAIN_VAL_PLOT = "strength_response.png", "train_val_curves.png"
TRAIN_ACC = "train/acc"  # in training mode: with dropout, augmentation, noise as trained
NOT_SIGNIFICANT = ("ns", "n/a")  # marks of a difference not shown to be real


def save(fig: Figure, path: Path) -> None:
    """Through a temporary file: a report rewritten while a reader opens the plot never shows
    half of it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def _figure(rows: int = 1, height: float = 4.0, width: float = 8.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


def _grid(n: int, cols: int = 3, width: float = 4.4, height: float = 3.3) -> tuple[Figure, list]:
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def plot_accuracy(summary: pd.DataFrame, ax=None):
    """Mean test accuracy per technique with ± std error bars; the baseline as a dashed line."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure(height=max(3.0, 0.3 * len(summary) + 1))
    s = summary.iloc[::-1]
    mean, std = s[f"{TEST_ACC} mean"], s[f"{TEST_ACC} std"].fillna(0)
    colors = ["tab:gray" if t == BASELINE else "tab:green" if d > 0 and sig not in NOT_SIGNIFICANT
              else "tab:red" if sig not in (*NOT_SIGNIFICANT, "", "no baseline") else "tab:blue"
              for t, d, sig in zip(s["technique"], s["delta"], s["significance"], strict=True)]  # fmt: skip
    ax.barh(s["technique"], mean, xerr=std, color=colors, capsize=3)
    base = summary.loc[summary["technique"] == BASELINE, f"{TEST_ACC} mean"]
    if len(base):
        ax.axvline(base.iloc[0], color="black", linestyle="--", linewidth=1, label="baseline")
    ax.set_xlim(max(0.0, (mean - std).min() - 0.02), min(1.0, (mean + std).max() + 0.01))
    ax.set_xlabel("test accuracy (mean ± std; green/red: significantly better/worse, p < 0.05)")
    ax.set_title(str(summary["setting"].iloc[0]) if len(summary) else "")
    return fig if fig is not None else ax


def val_curves(runs: pd.DataFrame, metric: str = VAL_ACC) -> pd.DataFrame:
    """Mean ``metric`` per epoch (rows) and technique (columns) from the runs' histories."""
    series = {}
    runs = compared(runs)  # a protocol's tuning trials ran other values of the knob
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


def plot_val_curves(runs: pd.DataFrame, ax=None, metric: str = VAL_ACC):
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
    acc, gap = f"{TEST_ACC} mean", f"{GAP_ACC} mean"
    ax.errorbar(summary[gap], summary[acc], xerr=summary[f"{GAP_ACC} std"].fillna(0),
                yerr=summary[f"{TEST_ACC} std"].fillna(0), fmt="o", capsize=2, alpha=0.8)  # fmt: skip
    for _, r in summary.iterrows():
        ax.annotate(r["technique"], (r[gap], r[acc]), fontsize="x-small", xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"generalization gap {GAP_ACC} (lower: less overfitting)")
    ax.set_ylabel("test accuracy")
    return fig if fig is not None else ax


# ----------------------------------------------------------------------------- strength response


def _space(entry: dict | None, knob: str) -> dict:
    """The search-space entry of one knob (protocol.json), by full key or by its last part."""
    space = (entry or {}).get("space") or {}
    for k in (knob, short_key(knob), knob.rsplit(".", 1)[-1]):
        if isinstance(space.get(k), dict):
            return space[k]
    return {}


def _range(space: dict) -> tuple[float, float] | None:
    low, high = space.get("low"), space.get("high")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    return (float(low), float(high)) if ok and low < high else None


def is_log_scale(values, space: dict | None = None) -> bool:
    """Log when the search space says so (``log: true`` or ``scale: log``); without a space,
    when the values are positive and span at least two decades, as a log search would."""
    space = space or {}
    if "log" in space:
        return bool(space["log"])
    if "scale" in space:
        return str(space["scale"]).lower() == "log"
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    return bool(x.notna().all() and len(x) and (x > 0).all() and x.max() / x.min() >= 100)


def strength_response(runs: pd.DataFrame, tuning: pd.DataFrame,
                      protocol: dict | None = None) -> list[dict]:  # fmt: skip
    """One panel per (setting, technique, knob) of stage 1: each trial's validation score
    against the knob's value (``points``: x, y, pruned), the ``chosen`` value, ``log`` scale,
    and the ``baseline``'s best validation score in the same setting."""
    trials = tuning_runs(runs)
    trials = trials[trials["stage"].isin(["search", "tune"])]  # the cocktail's: its own section
    if trials.empty or tuning.empty:
        return []
    metric = objective(protocol)
    score = scores(trials, metric)
    base = tuning[tuning["technique"] == BASELINE].set_index("setting")["val_tuned"]
    panels = []
    for _, row in tuning.iterrows():
        if row["technique"] in (BASELINE, COCKTAIL):
            continue
        t = trials[(trials["setting"] == row["setting"]) & (trials["technique"] == row["technique"])
                   & trials["status"].isin(["ok", "pruned"])]  # fmt: skip
        for knob in row["knobs"]:
            points = pd.DataFrame({
                "x": [p.get(knob) if isinstance(p, dict) else None for p in t["params"]],
                "y": score[t.index], "pruned": (t["status"] == "pruned").to_numpy(),
                "trial": t["trial"].to_numpy(),
            }).dropna(subset=["x", "y"])  # fmt: skip
            if points.empty:
                continue
            panels.append({
                "setting": row["setting"], "technique": row["technique"], "knob": knob,
                "points": points.reset_index(drop=True), "metric": metric,
                "chosen": (row["params"] or {}).get(knob),
                "log": is_log_scale(points["x"], _space(row.get("entry"), knob)),
                "range": _range(_space(row.get("entry"), knob)),
                "baseline": base.get(row["setting"], math.nan),
            })  # fmt: skip
    return panels


def plot_strength_response(panel: dict, ax=None):
    """Validation score of each tuning trial against the knob: too little regularization on one
    side, too much on the other. Hollow: pruned trials (scored when stopped); dashed red: the
    chosen value; dotted black: the baseline's best validation score."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure(height=3.5, width=5.0)
    pts = panel["points"]
    numeric = pd.to_numeric(pts["x"], errors="coerce").notna().all()
    if numeric:
        x = pd.to_numeric(pts["x"])
    else:  # a choice: one position per option, in the order first tried
        options = list(dict.fromkeys(map(str, pts["x"])))
        x = pts["x"].map(lambda v: options.index(str(v)))
        ax.set_xticks(range(len(options)), options, fontsize="small")
    done, pruned = ~pts["pruned"].astype(bool), pts["pruned"].astype(bool)
    ax.scatter(x[done], pts["y"][done], color="tab:blue", s=24, label="trial", zorder=3)
    if pruned.any():
        ax.scatter(x[pruned], pts["y"][pruned], facecolors="none", edgecolors="tab:gray",
                   s=24, label="pruned", zorder=2)  # fmt: skip
    chosen = panel["chosen"]
    if chosen is not None and (numeric or str(chosen) in options):
        cx = float(chosen) if numeric else options.index(str(chosen))
        ax.axvline(cx, color="tab:red", linestyle="--", linewidth=1.2, label="chosen")
    if not math.isnan(panel["baseline"]):
        ax.axhline(panel["baseline"], color="black", linestyle=":", linewidth=1,
                   label="baseline (best trial)")  # fmt: skip
    if numeric and panel["log"]:
        ax.set_xscale("log")
    if numeric and panel.get("range"):  # the whole range searched, not only where trials fell
        low, high = panel["range"]
        if panel["log"] and low > 0:
            ax.set_xlim(low / 1.5, high * 1.5)
        elif not panel["log"]:
            pad = 0.04 * (high - low)
            ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(short_key(panel["knob"]) + (" (log scale)" if numeric and panel["log"] else ""))
    ax.set_ylabel("validation score" if panel["metric"] == TESTED else panel["metric"])
    ax.set_title(panel["technique"], fontsize="medium")
    ax.legend(fontsize="x-small", loc="best")
    return fig if fig is not None else ax


# ----------------------------------------------------------------------------- train vs validation


def plot_train_val(runs: pd.DataFrame, technique: str, ax=None, train=None, val=None):
    """Mean train accuracy (solid) and validation accuracy (dashed) per epoch of one technique,
    the gap between them shaded; the baseline's two curves in grey for reference."""
    fig = None
    if ax is None:
        fig, (ax,) = _figure(height=3.3, width=5.0)
    train = val_curves(runs, TRAIN_ACC) if train is None else train
    val = val_curves(runs, VAL_ACC) if val is None else val
    if technique != BASELINE and BASELINE in train and BASELINE in val:
        ax.plot(train.index, train[BASELINE], color="0.6", linewidth=1, label="baseline train")
        ax.plot(val.index, val[BASELINE], color="0.6", linewidth=1, linestyle="--",
                label="baseline val")  # fmt: skip
    t, v = train[technique].dropna(), val[technique].dropna()
    ax.plot(t.index, t, color="tab:blue", linewidth=2, label="train")
    ax.plot(v.index, v, color="tab:orange", linewidth=2, linestyle="--", label="validation")
    both = t.index.intersection(v.index)
    ax.fill_between(both, t[both], v[both], color="tab:blue", alpha=0.12)
    gap = f", last gap {t[both].iloc[-1] - v[both].iloc[-1]:+.3f}" if len(both) else ""
    ax.set_title(f"{technique}{gap}", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (mean over runs)")
    ax.legend(fontsize="x-small", loc="lower right")
    return fig if fig is not None else ax


def _train_val_panels(runs: pd.DataFrame, summary: pd.DataFrame) -> list[tuple]:
    panels = []
    for setting in dict.fromkeys(summary.loc[summary["n"] > 0, "setting"]):
        mine = runs[runs["setting"] == setting]
        train, val = val_curves(mine, TRAIN_ACC), val_curves(mine, VAL_ACC)
        for technique in summary.loc[summary["setting"] == setting, "technique"]:
            if technique in train and technique in val:
                panels.append((setting, technique, mine, train, val))
    return panels


def plot_all(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path,
             tuning: pd.DataFrame | None = None, protocol: dict | None = None) -> list[Path]:  # fmt: skip
    """Write the PLOTS into ``out_dir``, one panel per setting that has finished runs; then the
    strength-response panels of a protocol's stage 1 and the train-vs-validation panels, where
    the runs have them."""
    paths = _plot_settings(runs, summary, out_dir)
    panels = strength_response(runs, tuning if tuning is not None else pd.DataFrame(), protocol)
    several = len({p["setting"] for p in panels}) > 1
    if panels:
        fig, axes = _grid(len(panels))
        for ax, panel in zip(axes, panels, strict=True):
            plot_strength_response(panel, ax)
            if several:
                ax.set_title(f"{panel['setting']}: {panel['technique']}", fontsize="medium")
        save(fig, out_dir / STRENGTH_PLOT)
        paths.append(out_dir / STRENGTH_PLOT)
    curves = _train_val_panels(runs, summary) if len(summary) else []
    if curves:
        several = len({c[0] for c in curves}) > 1
        fig, axes = _grid(len(curves), cols=4, width=3.8, height=3.0)
        for ax, (setting, technique, mine, train, val) in zip(axes, curves, strict=True):
            plot_train_val(mine, technique, ax, train=train, val=val)
            if several:
                ax.set_title(f"{setting}: {ax.get_title()}", fontsize="small")
        save(fig, out_dir / TRAIN_VAL_PLOT)
        paths.append(out_dir / TRAIN_VAL_PLOT)
    return paths


def _plot_settings(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    if summary.empty:
        return []
    settings = list(dict.fromkeys(summary.loc[summary["n"] > 0, "setting"]))
    if not settings:
        return []  # every run failed: nothing to draw
    paths = []
    height = max(3.0, 0.3 * summary.groupby("setting").size().max() + 1)
    for name, draw in zip(PLOTS, ("accuracy", "curves", "gap"), strict=True):
        fig, axes = _figure(len(settings), height=height if draw == "accuracy" else 4.0)
        for ax, setting in zip(axes, settings, strict=True):
            s = summary[summary["setting"] == setting]
            if draw == "accuracy":
                plot_accuracy(s, ax)
            elif draw == "curves":
                plot_val_curves(runs[runs["setting"] == setting], ax)
            else:
                plot_acc_vs_gap(s, ax)
            ax.set_title(setting)
        save(fig, out_dir / name)
        paths.append(out_dir / name)
    return paths
