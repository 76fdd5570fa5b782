"""One Optuna search (``reglab-train -m hparams_search=optuna``): n_trials jobs in all, validation
only, pruned early, the study kept in the storage so the same command continues it."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from reglab.core.errors import ConfigError
from reglab.tune.jobs import Job, param_overrides
from reglab.tune.session import Session, describe_space, optimize, say
from reglab.tune.space import missing, selected_space, shorthand_space, suggest

SWEEP_DIRS = "reglab:sweep_dirs"


def search_space(cfg, dims: dict) -> dict:
    """``search.param`` (shorthand), the declared spaces of the selected techniques when
    ``search.techniques=true``, and the sweep dimensions of the command line / sweeper params."""
    search = OmegaConf.to_container(cfg.search, resolve=True) if cfg.get("search") else {}
    param = (search or {}).get("param")
    current = OmegaConf.select(cfg, str(param), default=missing) if param else missing
    space = shorthand_space(search, current)
    if (search or {}).get("techniques"):
        space.update(selected_space(cfg))
    space.update(dims)
    if not space:
        raise ConfigError(
            "nothing to search: set search.param (with search.low/high), search.techniques=true, "
            "or give a key a range such as 'optimizer.lr=tag(log,interval(1e-4,1e-2))'"
        )
    return space


def default_name(cfg, space: dict) -> str:
    return f"{cfg.data.name}_{cfg.model.name}_{'+'.join(sorted(space))}"


def run_search(session: Session, dims: dict) -> None:
    cfg, opts = session.config, session.opts
    space = search_space(cfg, dims)
    name = opts.study_name or default_name(cfg, space)
    study = session.study(name, opts.n_trials, lambda trial: suggest(trial, space))
    sweep_dir = str(cfg.hydra.sweep.dir)
    dirs = study.study.user_attrs.get(SWEEP_DIRS, [])
    if sweep_dir not in dirs:  # where this study's runs are, over all the commands that ran it
        study.study.set_user_attr(SWEEP_DIRS, [*dirs, sweep_dir])
    session.run_dirs = [Path(d) for d in [*dirs, sweep_dir]]
    before = len(study.trials())
    say(f"study {name} ({session.url}): {opts.n_trials} trials in all, "
        f"{sum(1 for t in study.trials() if t.state.is_finished())} finished before")  # fmt: skip

    def make(number: int, params: dict) -> Job:
        return Job("search", None, param_overrides(params), params, name, number)

    optimize(session, [(study, make)], per_round=opts.n_jobs)
    summary = study.summary()
    summary["space"] = describe_space(space)
    summary["storage"] = session.url
    out = Path(sweep_dir) / "optimization_results.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(summary, sort_keys=False))
    if len(study.trials()) == before:
        say(f"study {name} already has its {opts.n_trials} trials; raise hydra.sweeper.n_trials "
            "to run more, or name a new study with hydra.sweeper.study_name=NAME")  # fmt: skip
    say(f"best {opts.objective}: {summary['best_value']} with {summary['best_params']} -> {out}")
