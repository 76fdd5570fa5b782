"""``reglab-report SWEEP_DIR [--ensemble] [--quiet]``: write a sweep folder's report again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report.build import write_report
from reglab.report.ensemble import write_ensemble


def main(argv: list[str] | None = None) -> int:
    """0 when every run finished, 1 when one failed, 2 when the folder holds no runs."""
    parser = argparse.ArgumentParser(
        prog="reglab-report",
        description="Decide a sweep folder: one row per arm (technique), its paired difference "
        "from the baseline by seed and a verdict (better / worse / equivalent within +-delta / "
        "undecided with its minimum detectable effect), the tuning budget and tuned values; the "
        "cocktail against the best single technique chosen on validation. Writes report.md, "
        "results.csv, runs.csv (tuning.csv) and PNG plots into the folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (logs/sweeps/<date>_<time>)")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also evaluate each row's runs as an ensemble (needs checkpoints)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"reglab: error: sweep_dir={args.sweep_dir}: no such folder", file=sys.stderr)
        return 2
    if not any(args.sweep_dir.rglob("metrics.json")):
        print(
            f"reglab: error: sweep_dir={args.sweep_dir}: no metrics.json under it (is it a "
            "sweep folder, logs/sweeps/<date>_<time>?)",
            file=sys.stderr,
        )
        return 2
    if args.ensemble:
        write_ensemble(args.sweep_dir)
    report = write_report(args.sweep_dir, quiet=args.quiet)
    return 1 if len(report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
