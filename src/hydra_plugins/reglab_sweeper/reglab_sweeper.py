"""``hydra/sweeper: reglab``: a Hydra sweeper over current Optuna, planned by ``reglab.tune``.

It decides which jobs to run (the trials of a search, or the stages of a comparison) and hands
them, a batch at a time, to whatever launcher is configured: ``basic`` runs them one after the
other, ``joblib`` on every core, ``submitit_slurm`` as SLURM job arrays; the plan is the same.
Hydra finds this module because ``hydra_plugins`` is a namespace package on the import path;
importing it registers the config group options below. (No ``from __future__ import
annotations``: Hydra's plugin scan runs this module outside sys.modules, where dataclasses
cannot resolve string annotations.)

hydra-optuna-sweeper would be the obvious choice, but it pins optuna < 3 and SQLAlchemy < 2;
this is the thin layer over current Optuna that replaces it.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

from reglab.core.plan import Protocol


# Samplers and pruners are options of their own groups, as in Hydra's Optuna plugin:
# hydra/sweeper/sampler=tpe hydra.sweeper.sampler.seed=3, hydra/sweeper/pruner=none.
@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = 0
    scramble: bool = True
    qmc_type: str = "sobol"


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 0
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 0


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 3  # complete trials before any is pruned
    n_warmup_steps: int = 2  # epochs a trial always trains
    interval_steps: int = 1


@dataclass
class ThresholdPrunerConf:
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class ReglabSweeperConf:
    """Every option of the sweeper, defined once; ``reglab.tune`` reads them from here."""

    _target_: str = "hydra_plugins.reglab_sweeper.reglab_sweeper.ReglabSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "qmc"}, {"pruner": "median"}])
    # Plain values for every job (`key: value`), as in Hydra's basic sweeper. In a comparison a
    # swept key (`model: mlp,cnn`) runs the whole protocol once per value.
    params: dict[str, Any] | None = None
    # A search: {config key: {type: float|int|choice, low, high, log, step, choices}}, the same
    # form as a technique's _search_ (hparams_search=optuna).
    search: dict[str, Any] = field(default_factory=dict)
    search_techniques: bool = False  # also the _search_ spaces of the selected techniques
    # Trials per study: in a search, in all; in a comparison, per arm (the baseline included).
    n_trials: int = 20
    n_jobs: int = 1  # trials of each study launched per round (all studies share one batch)
    # A trial's score, from its metrics.json: the lowest validation NLL over its epochs
    # (continuous, so configurations can be told apart), averaged over its members.
    objective: str = "val/loss_best"
    direction: str = "minimize"
    monitor: str = "val/loss"  # what the pruner reads after each epoch
    study_name: str | None = None  # null: named after the data, model and command
    storage: str | None = None  # null: sqlite:///${paths.log_dir}/optuna/optuna.db
    sampler: Any = MISSING
    pruner: Any = MISSING
    protocol: Protocol | None = None  # set: the comparison protocol (experiment=compare)


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="reglab", node=ReglabSweeperConf, provider="reglab")
_samplers = {"qmc": QMCSamplerConf, "tpe": TPESamplerConf, "random": RandomSamplerConf}
for _name, _node in _samplers.items():
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="reglab")
_pruners = {
    "median": MedianPrunerConf,
    "threshold": ThresholdPrunerConf,
    "hyperband": HyperbandPrunerConf,
    "none": NopPrunerConf,
}
for _name, _node in _pruners.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="reglab")


class ReglabSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from reglab.tune.protocol import sweep  # the heavy part, only when a sweep runs

        sweep(self, arguments)
