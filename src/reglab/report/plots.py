"""The report's figures. Each ``plot_*`` draws into a given axis (a notebook's subplot) or, without
one, returns a Figure of its own; ``plot_all`` writes the PNGs of a sweep, one panel per setting.

Figures get their own Agg canvas instead of going through pyplot: no global state, so they work
headless, in a Hydra callback and inside notebooks alike.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reglab.core.names import GAP_ACC, TEST_ACC, VAL_ACC
from reglab.report.stats import BASELINE

PLOTS = ("accuracy.png", "val_curves.png", "acc_vs_gap.png")
NOT_SIGNIFICANT = ("ns", "n/a")  # marks of a difference not shown to be real


def _figure(rows: int = 1, height: float = 4.0, width: float = 8.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


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


def plot_all(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the PLOTS into ``out_dir``, one panel per setting that has finished runs."""
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
        fig.savefig(out_dir / name, dpi=100)
        paths.append(out_dir / name)
    return paths
