"""From planned jobs to a Hydra launcher's batches, and back to each job's metrics.json.

A job is an ordinary ``reglab-train`` run plus overrides that say what it is for:

- ``++protocol={stage, technique, trial, params, study}``: copied into metrics.json and the W&B
  config, so the report tells stages and trials apart;
- ``tags=[..., stage:S, technique:T, trial:N]`` and, with a W&B logger, ``job_type=S``;
- in tuning stages, the pruning callback and ``++trainer.limit_test_batches=0``: a trial is
  scored on validation only and never touches the test set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from reglab.training.loggers import is_wandb
from reglab.tune.space import override_value

TUNING_STAGES = ("search", "tune", "cocktail_tune")


@dataclass
class Job:
    stage: str  # search | tune | test | cocktail_tune | cocktail_test
    technique: str | None  # baseline, l2, ..., cocktail; None in a plain search
    overrides: list[str]  # what to train: technique choice, parameter values, seed
    params: dict = field(default_factory=dict)  # the sampled or tuned values, {dotted.key: value}
    study: str | None = None
    trial: int | None = None


def param_overrides(params: dict) -> list[str]:
    return [f"{k}={override_value(v)}" for k, v in params.items()]


class Runner:
    """Hands jobs to the configured Hydra launcher; numbers them on from what the sweep folder
    already holds (a resumed run writes next to the first one's jobs)."""

    def __init__(self, sweeper, fixed: list[str], storage_url: str, monitor: str = "val/acc"):
        self.sweeper, self.fixed, self.storage_url, self.monitor = (
            sweeper,
            fixed,
            storage_url,
            monitor,
        )
        cfg: DictConfig = sweeper.config
        self.tags = [str(t) for t in (cfg.get("tags") or [])]
        self.wandb_keys = [k for k, v in (cfg.get("logger") or {}).items() if is_wandb(v)]
        self.next_idx = 0
        self.sweep_dir = Path(str(cfg.hydra.sweep.dir))
        self.extra: list[str] = []  # e.g. hydra.sweep.dir when continuing in an earlier folder
        self.validated: set = set()

    def set_sweep_dir(self, path: Path) -> None:
        self.sweep_dir = Path(path)
        numbers = [
            int(m.group(1)) for p in self.sweep_dir.glob("*") if (m := re.match(r"(\d+)_", p.name))
        ]
        self.next_idx = max(numbers, default=-1) + 1

    def overrides(self, job: Job) -> list[str]:
        protocol = {"stage": job.stage, "technique": job.technique, "trial": job.trial,
                    "params": job.params, "study": job.study}  # fmt: skip
        tags = [*self.tags, f"stage:{job.stage}"]
        if job.technique:
            tags.append(f"technique:{job.technique}")
        if job.trial is not None:
            tags.append(f"trial:{job.trial}")
        out = [*self.fixed, *job.overrides, f"++protocol={override_value(protocol)}",
               f"tags={override_value(list(dict.fromkeys(tags)))}"]  # fmt: skip
        out += [f"++logger.{k}.job_type={job.stage}" for k in self.wandb_keys]
        if job.stage in TUNING_STAGES:
            callback = {"_target_": "reglab.tune.pruning.PruningCallback", "storage": self.storage_url,
                        "study": job.study, "trial": job.trial, "monitor": self.monitor}  # fmt: skip
            out += [f"++callbacks.optuna_pruning={override_value(callback)}",
                    "++trainer.limit_test_batches=0"]  # fmt: skip
        return [*out, *self.extra]

    def run(self, jobs: list[Job]) -> list[dict | None]:
        """Launch ``jobs`` as one batch; each job's metrics.json (None if it wrote none)."""
        if not jobs:
            return []
        batch = [self.overrides(j) for j in jobs]
        # Composing a job costs ~0.3 s: check the first of each stage here, so a bad override
        # stops the sweep with Hydra's message before any launch instead of failing every job.
        kinds = {j.stage: b for j, b in reversed(list(zip(jobs, batch, strict=True)))}
        new = [b for k, b in kinds.items() if k not in self.validated]
        if new:
            self.sweeper.validate_batch_is_legal(new)
            self.validated.update(kinds)
        results = self.sweeper.launcher.launch(batch, initial_job_idx=self.next_idx)
        self.next_idx += len(batch)
        return [read_result(r) for r in results]


def read_result(ret) -> dict | None:
    """A finished job's metrics.json (train.py writes it, also for a failed run)."""
    try:
        out = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) / "metrics.json"
        return json.loads(out.read_text())
    except Exception:  # noqa: BLE001 - no folder or no file: the job died before writing it
        return None


def finished_runs(sweep_dir: Path, ok_only: bool = True) -> list[dict]:
    """The metrics.json of every protocol run in ``sweep_dir`` that succeeded (or, with
    ``ok_only=False``, finished at all), to skip them when resuming."""
    out = []
    for path in Path(sweep_dir).glob("*/metrics.json"):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (m.get("status") == "ok" or not ok_only) and isinstance(m.get("protocol"), dict):
            out.append(m)
    return out
