"""The report's figures. Each ``plot_*`` draws into a given axis (a notebook's subplot) or, without
one, returns a Figure of its own; ``plot_all`` writes the PNGs of a sweep folder:

- forest.png: per arm, the paired difference from the baseline with its interval, every seed's
  difference as a point, the +-delta equivalence band, the verdict beside the row;
- accuracy.png: per arm, each seed's score joined to the baseline's on the same seed;
- val_curves.png: validation accuracy per epoch, mean and a band of +-1 std across seeds;
- strength_response.png: each tuning trial's objective against the knob (pruned ones hollow);
- train_val_curves.png: train vs validation accuracy per epoch of each arm's tested runs.

Figures get their own Agg canvas instead of going through pyplot: no global state, so they work
headless, in a Hydra callback and inside notebooks alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reglab.core.io import atomic_path
from reglab.core.names import VAL_ACC
from reglab.core.plan import BASELINE, COCKTAIL, Stage
from reglab.report.runs import VAL_LOSS_BEST, compared, tuning_runs
from reglab.report.tuning import short_key, trials_of

FOREST, ACCURACY, VAL_CURVES = "forest.png", "accuracy.png", "val_curves.png"
STRENGTH_PLOT, TRAIN_VAL_PLOT = "strength_response.png", "train_val_curves.png"
PLOTS = (FOREST, ACCURACY, VAL_CURVES, STRENGTH_PLOT, TRAIN_VAL_PLOT)
TRAIN_ACC = "train/acc"  # in training mode: with dropout, augmentation, noise as trained
COLORS = {
    "better": "tab:green",
    "worse": "tab:red",
    "equivalent": "tab:blue",
    "undecided": "tab:purple",
}


def color(verdict: str) -> str:
    return COLORS.get(verdict, "0.35")


def save(fig: Figure, path: Path) -> None:
    """Through a temporary file: a report rewritten while a reader opens the plot never shows
    half of it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def _grid(n: int, cols: int, width: float, height: float) -> tuple[Figure, list]:
    """``n`` panels of ``width`` x ``height`` inches, ``cols`` to a row. A few panels get
    matplotlib's constrained layout; a grid of many gets fixed margins in inches instead
    (constrained layout measured every label of 24 panels 4 times: 5-7 s a figure)."""
    cols, rows = max(1, min(cols, n)), math.ceil(n / max(1, min(cols, n)))
    w, h = width * cols, height * rows
    fig = Figure(figsize=(w, h), layout="constrained" if n <= 4 else None)
    FigureCanvasAgg(fig)
    if n > 4:
        fig.subplots_adjust(
            left=0.7 / w,
            right=1 - 0.15 / w,
            bottom=0.55 / h,
            top=1 - 0.45 / h,
            wspace=0.35,
            hspace=0.55,
        )
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _own_axis(ax, width: float = 8.0, height: float = 4.0):
    if ax is not None:
        return None, ax
    fig, (ax,) = _grid(1, 1, width, height)
    return fig, ax


def _arms(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's arms, top row first on a horizontal plot (the table's order)."""
    return summary[summary["technique"] != BASELINE].iloc[::-1]


def plot_forest(summary: pd.DataFrame, delta: float, metric: str, ax=None):
    """One row per arm: the mean paired difference from the baseline (> 0: better) with its
    interval, each seed's difference as a point, +-delta shaded, the verdict on the right."""
    arms = _arms(summary)
    fig, ax = _own_axis(ax, 9.0, max(2.5, 0.45 * len(arms) + 1.2))
    rng = np.random.default_rng(0)  # the same jitter on every redraw
    failed_label = "failed seed (at chance)"  # in the legend once
    ax.axvspan(-delta, delta, color="tab:blue", alpha=0.12, label=f"±delta ({delta:g})")
    ax.axvline(0, color="black", linewidth=0.8)
    for y, (_, r) in enumerate(arms.iterrows()):
        d, failed = np.asarray(r["diffs"], float), np.asarray(r["seed_failed"], bool)
        jitter = y + rng.uniform(-0.15, 0.15, len(d))
        ax.scatter(d[~failed], jitter[~failed], s=10, color="0.55", zorder=2)
        if failed.any():
            ax.scatter(
                d[failed],
                jitter[failed],
                s=28,
                marker="x",
                color="tab:red",
                zorder=2,
                label=failed_label,
            )
            failed_label = None
        if not math.isnan(r["mean_diff"]):
            err = [[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]]
            err = None if any(math.isnan(e[0]) for e in err) else err
            ax.errorbar(
                r["mean_diff"],
                y,
                xerr=err,
                fmt="D",
                color=color(r["verdict"]),
                capsize=4,
                markersize=6,
                zorder=3,
            )
        note = r["verdict"] + (f" (n={r['n']})" if r["n"] == r["n"] else "")
        ax.annotate(
            note,
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize="small",
            color=color(r["verdict"]),
        )
    ax.set_yticks(range(len(arms)), list(arms["technique"]))
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.set_xlabel(f"{metric}: arm - baseline, paired by seed (> 0: better); interval, seeds")
    ax.legend(fontsize="x-small", loc="lower left")
    return fig if fig is not None else ax


def plot_accuracy(summary: pd.DataFrame, metric: str, ax=None):
    """Per arm, each seed's score (coloured by the verdict) joined by a line to the baseline's
    score on the same seed (grey): the pairing the verdicts rest on, seed by seed."""
    arms = _arms(summary)
    fig, ax = _own_axis(ax, 8.0, max(2.5, 0.45 * len(arms) + 1.2))
    for y, (_, r) in enumerate(arms.iterrows()):
        a, b = np.asarray(r["seed_scores"], float), np.asarray(r["seed_base"], float)
        offsets = np.linspace(-0.25, 0.25, len(a)) if len(a) > 1 else np.zeros(len(a))
        for yy, x0, x1 in zip(y + offsets, b, a, strict=True):
            ax.plot([x0, x1], [yy, yy], color="0.8", linewidth=0.8, zorder=1)
        ax.scatter(b, y + offsets, s=12, color="0.7", zorder=2)
        failed = np.asarray(r["seed_failed"], bool)
        ax.scatter(a[~failed], (y + offsets)[~failed], s=16, color=color(r["verdict"]), zorder=3)
        ax.scatter(a[failed], (y + offsets)[failed], s=28, marker="x", color="tab:red", zorder=3)
    ax.set_yticks(range(len(arms)), list(arms["technique"]))
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.set_xlabel(
        f"{metric} per seed: arm (coloured by verdict; red x: failed, at chance) joined to the "
        "baseline (grey)"
    )
    return fig if fig is not None else ax


def curves(runs: pd.DataFrame, metric: str = VAL_ACC) -> dict[str, pd.DataFrame]:
    """Per arm, ``metric`` per epoch (rows) and finished compared run (columns)."""
    out = {}
    runs = compared(runs)  # a comparison's tuning trials ran other values of the knobs
    for arm, group in runs[runs["status"] == "ok"].groupby("technique", sort=False):
        per_run = []
        for hist in group.get("history", pd.Series(dtype=object)):
            if isinstance(hist, list) and hist:
                h = pd.DataFrame(hist)
                if metric in h and "epoch" in h:
                    per_run.append(h.groupby("epoch")[metric].last())
        if per_run:
            out[arm] = pd.concat(per_run, axis=1, ignore_index=True).sort_index()
    return out


def plot_val_curves(runs: pd.DataFrame, ax=None, metric: str = VAL_ACC):
    """``metric`` per epoch: each arm's mean over its seeds, a band of +-1 std across them."""
    fig, ax = _own_axis(ax)
    per_arm = curves(runs, metric)
    # Ten distinct colours while they last; tab20's pairs (a colour and its pale twin) beyond.
    palette = matplotlib.colormaps["tab10" if len(per_arm) <= 10 else "tab20"].colors
    order = sorted(per_arm, key=lambda t: t != BASELINE)  # the baseline first in the legend
    for i, arm in enumerate(order):
        c = per_arm[arm]
        mean, std = c.mean(axis=1), c.std(axis=1).fillna(0)
        col = "black" if arm == BASELINE else palette[i % len(palette)]
        ax.plot(
            mean.index,
            mean,
            color=col,
            linewidth=2.2 if arm == BASELINE else 1.2,
            linestyle="--" if arm == BASELINE else "-",
            label=f"{arm} ({c.shape[1]})",
        )
        ax.fill_between(mean.index, mean - std, mean + std, color=col, alpha=0.12)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric}: mean ± std over seeds")
    if per_arm:
        ax.legend(
            fontsize="x-small",
            title="arm (seeds)",
            title_fontsize="x-small",
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
        )
    return fig if fig is not None else ax


def strength_response(runs: pd.DataFrame, tuned: pd.DataFrame) -> list[dict]:
    """One panel per (setting, arm, own knob) of the tuning stage: each trial's val/loss_best
    against the knob's value (``points``: x, y, pruned), the ``chosen`` value, the ``space``.
    The knobs every arm searched (the baseline's: learning rate, epochs) get no panel."""
    trials = tuning_runs(runs)
    trials = trials[trials["stage"].isin([Stage.TUNE, Stage.SEARCH])]
    panels = []
    for _, row in tuned.iterrows() if len(tuned) else []:
        if row["technique"] in (BASELINE, COCKTAIL):
            continue
        mine = tuned[tuned["setting"] == row["setting"]]
        shared = {k for p in mine.loc[mine["technique"] == BASELINE, "params"] for k in p}
        t = trials[
            (trials["setting"] == row["setting"]) & (trials["technique"] == row["technique"])
        ]
        per_trial = trials_of(t) if len(t) else pd.DataFrame(columns=["params"])
        per_trial = per_trial[per_trial["status"].isin(["ok", "pruned"])]
        for knob in dict.fromkeys(k for p in per_trial["params"] for k in p if k not in shared):
            points = pd.DataFrame(
                {
                    "x": [p.get(knob) for p in per_trial["params"]],
                    "y": per_trial["score"].to_numpy(float),
                    "pruned": (per_trial["status"] == "pruned").to_numpy(),
                }
            ).dropna(subset=["x", "y"])
            if len(points):
                panels.append(
                    {
                        "setting": row["setting"],
                        "technique": row["technique"],
                        "knob": knob,
                        "points": points.reset_index(drop=True),
                        "chosen": row["params"].get(knob),
                        "space": row["space"].get(knob) or {},
                    }
                )
    return panels


def plot_strength_response(panel: dict, ax=None):
    """val/loss_best of each tuning trial against the knob: too little regularization on one
    side, too much on the other. Hollow: pruned trials (scored when stopped); dashed red: the
    chosen value; the whole declared range on the x axis."""
    fig, ax = _own_axis(ax, 5.0, 3.5)
    pts, space = panel["points"], panel["space"]
    numeric = pd.to_numeric(pts["x"], errors="coerce").notna().all()
    if numeric:
        x = pd.to_numeric(pts["x"])
    else:  # a choice: one position per option
        options = [str(c) for c in space.get("choices") or dict.fromkeys(map(str, pts["x"]))]
        x = pts["x"].map(lambda v: options.index(str(v)) if str(v) in options else -1)
        ax.set_xticks(range(len(options)), options, fontsize="small")
    done = ~pts["pruned"].astype(bool)
    ax.scatter(x[done], pts["y"][done], color="tab:blue", s=24, label="trial", zorder=3)
    if (~done).any():
        ax.scatter(
            x[~done],
            pts["y"][~done],
            facecolors="none",
            edgecolors="tab:gray",
            s=24,
            label="pruned",
            zorder=2,
        )
    chosen = panel["chosen"]
    if chosen is not None and (numeric or str(chosen) in options):
        ax.axvline(
            float(chosen) if numeric else options.index(str(chosen)),
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label="tuned",
        )
    log = numeric and bool(space.get("log"))
    if log:
        ax.set_xscale("log")
    low, high = space.get("low"), space.get("high")
    if numeric and isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high:
        if log and low > 0:
            ax.set_xlim(low / 1.5, high * 1.5)
        elif not log:
            ax.set_xlim(low - 0.04 * (high - low), high + 0.04 * (high - low))
    ax.set_xlabel(short_key(panel["knob"]) + (" (log scale)" if log else ""))
    ax.set_ylabel(f"{VAL_LOSS_BEST} (lower: better)")
    ax.set_title(panel["technique"], fontsize="medium")
    ax.legend(fontsize="x-small", loc="best")
    return fig if fig is not None else ax


def plot_train_val(runs: pd.DataFrame, arm: str, ax=None, train=None, val=None):
    """Mean train accuracy (solid) and validation accuracy (dashed) per epoch of one arm, the gap
    between them shaded; the baseline's two curves in grey for reference."""
    fig, ax = _own_axis(ax, 5.0, 3.3)
    train = curves(runs, TRAIN_ACC) if train is None else train
    val = curves(runs, VAL_ACC) if val is None else val
    if arm != BASELINE and BASELINE in train and BASELINE in val:
        ax.plot(train[BASELINE].mean(axis=1), color="0.6", linewidth=1, label="baseline train")
        ax.plot(
            val[BASELINE].mean(axis=1),
            color="0.6",
            linewidth=1,
            linestyle="--",
            label="baseline val",
        )
    t, v = train[arm].mean(axis=1).dropna(), val[arm].mean(axis=1).dropna()
    ax.plot(t.index, t, color="tab:blue", linewidth=2, label="train")
    ax.plot(v.index, v, color="tab:orange", linewidth=2, linestyle="--", label="validation")
    both = t.index.intersection(v.index)
    ax.fill_between(both, t[both], v[both], color="tab:blue", alpha=0.12)
    gap = f", last gap {t[both].iloc[-1] - v[both].iloc[-1]:+.3f}" if len(both) else ""
    ax.set_title(f"{arm}{gap}", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.legend(fontsize="x-small", loc="lower right")
    return fig if fig is not None else ax


def _settings(summary: pd.DataFrame) -> list[str]:
    """The settings with a tested run, in the table's order."""
    return list(dict.fromkeys(summary.loc[summary["n"] > 0, "setting"])) if len(summary) else []


def _rows_height(summary: pd.DataFrame) -> float:
    return max(2.5, 0.45 * summary.groupby("setting").size().max() + 0.8)


def _per_setting(summary: pd.DataFrame, height: float, draw) -> Figure | None:
    """One panel per setting, stacked: ``draw(setting, its rows, ax)``."""
    settings = _settings(summary)
    if not settings:
        return None
    fig, axes = _grid(len(settings), 1, 9.0, height)
    for ax, setting in zip(axes, settings, strict=True):
        draw(setting, summary[summary["setting"] == setting], ax)
        ax.set_title(setting)
    return fig


def _train_val(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    panels = []
    for setting in _settings(summary):
        mine = runs[runs["setting"] == setting]
        train, val = curves(mine, TRAIN_ACC), curves(mine, VAL_ACC)
        arms = summary.loc[summary["setting"] == setting, "technique"]
        panels += [(mine, arm, train, val) for arm in arms if arm in train and arm in val]
    if not panels:
        return None
    fig, axes = _grid(len(panels), 4, 3.8, 3.0)
    for ax, (mine, arm, train, val) in zip(axes, panels, strict=True):
        plot_train_val(mine, arm, ax, train=train, val=val)
    return fig


def _strength(runs: pd.DataFrame, tuned: pd.DataFrame) -> Figure | None:
    panels = strength_response(runs, tuned)
    if not panels:
        return None
    fig, axes = _grid(len(panels), 3, 4.4, 3.3)
    for ax, panel in zip(axes, panels, strict=True):
        plot_strength_response(panel, ax)
    return fig


def plot_all(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: Path,
    tuned: pd.DataFrame,
    delta: float,
    metric: str,
) -> list[Path]:
    """Write the PLOTS into ``out_dir`` that the runs have data for; the paths written."""
    height = _rows_height(summary) if len(summary) else 0.0
    figures = {
        FOREST: _per_setting(summary, height, lambda _, s, ax: plot_forest(s, delta, metric, ax)),
        ACCURACY: _per_setting(summary, height, lambda _, s, ax: plot_accuracy(s, metric, ax)),
        VAL_CURVES: _per_setting(
            summary,
            4.0,
            lambda name, _, ax: plot_val_curves(runs[runs["setting"] == name], ax),
        ),
        STRENGTH_PLOT: _strength(runs, tuned),
        TRAIN_VAL_PLOT: _train_val(runs, summary),
    }
    paths = []
    for name, fig in figures.items():
        if fig is not None:
            save(fig, out_dir / name)
            paths.append(out_dir / name)
    return paths
