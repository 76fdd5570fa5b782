"""What a search and a comparison share: the storage and its lock, the sweep folder, and the
rounds that fill the studies' budgets of tuning trials (pruned against earlier rounds only)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from omegaconf import OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from reglab.core.errors import ConfigError
from reglab.core.io import write_json_atomic
from reglab.core.plan import USE
from reglab.tune.jobs import Result, Runner, digest, say  # noqa: F401 (digest: re-exported)
from reglab.tune.pruning import reference
from reglab.tune.space import override_value
from reglab.tune.studies import Study, lock, open_storage, storage_url

GROUPS = ("regularizer", "augmentation")  # the multi-select technique groups


class Driver:
    """What a search and a comparison share: the storage, the lock, the sweep folder."""

    def __init__(self, sweeper, fixed: list[str], name: str, fingerprint: str):
        self.sweeper, self.cfg = sweeper, sweeper.config
        self.opts = self.cfg.hydra.sweeper
        self.fixed, self.name = fixed, name
        self.url = storage_url(self.opts.storage, self.cfg.paths.log_dir)
        self.storage = open_storage(self.url)
        self._lock = lock(self.url, self.cfg.paths.log_dir, name)
        self.index = Study(self.storage, name, self.opts.direction, self.opts.sampler)
        attrs = self.index.study.user_attrs
        if attrs.get("fingerprint", fingerprint) != fingerprint:
            raise ConfigError(
                f"hydra.sweeper.study_name={name} was used by a different search or comparison "
                f"(in {attrs.get('sweep_dir')}); choose another study_name"
            )
        self.index.study.set_user_attr("fingerprint", fingerprint)
        self.sweep_dir = self.claim_folder(attrs.get("sweep_dir"))
        OmegaConf.save(self.cfg, self.sweep_dir / "multirun.yaml")  # the report reads the plan
        self.runner = Runner(sweeper, fixed, self.sweep_dir, self.opts.monitor)
        self.curves: dict[str, dict[int, float]] = {}

    def claim_folder(self, recorded: str | None) -> Path:
        """The sweep folder: the one a killed run of the same name used, else the new one."""
        current = Path(str(self.cfg.hydra.sweep.dir)).resolve()
        if recorded and Path(recorded).is_dir() and Path(recorded) != current:
            say(f"continuing {self.name} in {recorded}")
            with read_write(self.cfg.hydra), open_dict(self.cfg.hydra):
                self.cfg.hydra.sweep.dir = recorded  # the report callback reads it at the end
            if current.is_dir() and not any(current.iterdir()):
                current.rmdir()
            return Path(recorded)
        current.mkdir(parents=True, exist_ok=True)
        self.index.study.set_user_attr("sweep_dir", str(current))
        return current

    # ------------------------------------------------------------------------- tuning rounds

    def objective(self, result: Result) -> tuple[float | None, TrialState]:
        if result.pruned:
            return None, TrialState.PRUNED
        values = [m.get(self.opts.objective) for m in result.ok]
        if len(values) < len(result.members) or not all(isinstance(v, float) for v in values):
            return None, TrialState.FAIL
        return mean(values), TrialState.COMPLETE

    def curve(self, subdir: str) -> dict[int, float]:
        """A finished trial's ``monitor`` per epoch, the mean over its members (pruning)."""
        if subdir not in self.curves:
            rows: dict[int, list[float]] = {}
            for path in (self.sweep_dir / subdir).glob("seed_*/metrics.json"):
                for row in json.loads(path.read_text()).get("history", []):
                    if self.opts.monitor in row:
                        rows.setdefault(int(row["epoch"]), []).append(row[self.opts.monitor])
            self.curves[subdir] = {e: mean(v) for e, v in sorted(rows.items())}
        return self.curves[subdir]

    def reference_file(self, study: Study, folder: str, number: int) -> Path:
        """What the pruner of trial ``number`` may compare with: the trials of earlier rounds
        (the same set however often the comparison was interrupted)."""
        first = number - number % max(1, self.opts.n_jobs)
        done = [t for t in study.trials(TrialState.COMPLETE, TrialState.PRUNED) if t.number < first]
        curves = [(t.state.name, t.value, self.curve(f"{folder}/{t.number}")) for t in done]
        path = self.sweep_dir / folder / f"prune_{first}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        pruner = OmegaConf.to_container(self.opts.pruner, resolve=True)
        write_json_atomic(path, reference(pruner, self.opts.direction, curves))
        return path

    def tune(self, studies: list[tuple[Study, str, object, int, callable]], per_round: int) -> None:
        """Fill each study's budget in rounds: every study's interrupted trials, then up to
        ``per_round`` new ones each, launched together; told before the next round asks, so
        the sampler and the pruner learn from them. ``studies``: (study, folder, space,
        budget, make_job(number, params, reference))."""
        # Nothing is pruned (no pruner): no reference file to write (~15 ms each).
        prune = not self.runner.stack_trials
        while True:
            batch = []
            for study, folder, space, budget, make in studies:
                todo = [(t.number, dict(t.params)) for t in study.interrupted()]
                while len(todo) < per_round and study.used() < budget:
                    todo.append(study.ask(space))
                for number, params in todo:
                    ref = self.reference_file(study, folder, number) if prune else None
                    batch.append((study, number, make(number, params, ref)))
            if not batch:
                return
            results = self.runner.run([job for _, _, job in batch])
            for (study, number, _), result in zip(batch, results, strict=True):
                study.tell(number, *self.objective(result))
            best = [(b.value, s.name.rpartition("/")[2]) for s, *_ in studies if (b := s.best())]
            if best:
                value, arm = min(best) if self.opts.direction == "minimize" else max(best)
                self.runner.progress.best = f"{arm} {self.opts.objective}={value:.4f}"
            self.runner.progress.count([m for r in results for m in r.members])


def param_overrides(params: dict) -> list[str]:
    return [f"{k}={override_value(v)}" for k, v in params.items() if not k.startswith(USE)]
