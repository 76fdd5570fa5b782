"""A plain search (``hparams_search=optuna``, ``hparams_search=techniques``): one study over
``hydra.sweeper.search`` (and, with ``search_techniques``, the selected techniques' own
``_search_``), scored on validation only, on the same driver as the comparison."""

from __future__ import annotations

from omegaconf import MISSING, OmegaConf
from optuna.trial import TrialState

from reglab.core.errors import ConfigError
from reglab.core.plan import Stage
from reglab.tune.driver import GROUPS, Driver, digest, param_overrides
from reglab.tune.jobs import Job, say
from reglab.tune.space import describe, selected_space, spec_space


class Search(Driver):
    """``hparams_search=...``: one study over ``hydra.sweeper.search`` (and, with
    ``search_techniques``, the selected techniques' own spaces), on validation only."""

    def __init__(self, sweeper, fixed: list[str]):
        cfg = sweeper.config
        opts = cfg.hydra.sweeper
        self.space = spec_space("hydra.sweeper.search", opts.search)
        if opts.search_techniques:
            self.space.update(selected_space(cfg))
        if not self.space:
            raise ConfigError(
                "a search needs a space: hydra.sweeper.search={KEY: {type: float, "
                "low: A, high: B}} or hydra.sweeper.search_techniques=true"
            )
        for key in self.space:
            if OmegaConf.select(cfg, key, default=MISSING) is MISSING:
                group, _, rest = key.partition(".")
                hint = (
                    f"select it ({group}=[{rest.split('.')[0]}])" if group in GROUPS else "fix it"
                )
                raise ConfigError(
                    f"hydra.sweeper.search: {key} is not a key of this run's config; {hint}"
                )
        written = describe(self.space)
        name = (
            opts.study_name or f"{cfg.data.name}_{cfg.model.name}_search_{digest(written, fixed)}"
        )
        super().__init__(sweeper, fixed, name, digest(written, opts.n_trials, fixed))

    def run(self) -> None:
        study, budget = self.index, self.opts.n_trials
        before = len(study.trials(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if before >= budget:
            say(f"nothing to do: the search {self.name} is complete ({budget} trials)")
        self.runner.progress.stage, self.runner.progress.planned = Stage.SEARCH, budget - before

        def make(number, params, ref):
            record = {
                "comparison": None,
                "stage": Stage.SEARCH,
                "arm": "search",
                "trial": number,
                "params": params,
                "space": describe(self.space),
                "look": None,
            }
            return Job(
                Stage.SEARCH,
                "search",
                f"trials/{number}",
                [int(self.cfg.seed)],
                param_overrides(params),
                record,
                ref,
            )

        self.tune([(study, "trials", self.space, budget, make)], self.opts.n_jobs)
        best = study.best()
        out = {
            "name": self.name,
            "storage": self.url,
            "n_trials": budget,
            "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else None,
        }
        (self.sweep_dir / "optimization_results.yaml").write_text(OmegaConf.to_yaml(out))
        say(
            f"search {self.name}: best {self.opts.objective}={out['best_value']} at "
            f"{out['best_params']} -> {self.sweep_dir / 'optimization_results.yaml'}"
        )
