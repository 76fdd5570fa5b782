"""The Hydra callback that writes the report when a multirun ends (``conf/hydra/default.yaml``)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from reglab.core.plan import Stage
from reglab.report.build import write_report
from reglab.report.ensemble import write_ensemble
from reglab.training.loggers import log_report_table


class ReportCallback(Callback):
    """Write the report when a multirun ends; exit 1 if a run that counts failed: a plain sweep's
    run, or a comparison's tested run. A failed tuning trial (a strength that diverges) is a
    result of the search, listed in the report, not a failure of the comparison.

    ``ensemble: true`` first evaluates each row's runs as an ensemble (``ensemble.json``).
    ``note`` is read back from the sweep's ``multirun.yaml`` by the report itself."""

    def __init__(self, ensemble: bool = False, fail_on_error: bool = True, note: str | None = None):
        self.ensemble = ensemble
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        # Read at the end: a continued comparison's sweeper points it back at the first folder.
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.rglob("metrics.json")):
            return  # not a training sweep (reglab-eval -m), or nothing ran
        if self.ensemble:
            write_ensemble(sweep_dir)
        report = write_report(sweep_dir)
        log_report_table(sweep_dir, config)  # a wandb.Table in the sweep's group, if logged to W&B
        failed = report.failed
        failed = failed[failed["stage"].isna() | failed["stage"].isin(Stage.TESTING)]
        if len(failed) and self.fail_on_error:
            print(
                f"reglab: error: {len(failed)} of {len(report.runs)} runs failed "
                f"(listed in {sweep_dir / 'report.md'})",
                file=sys.stderr,
            )
            sys.exit(1)
