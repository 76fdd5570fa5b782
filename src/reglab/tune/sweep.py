"""What ``hydra/sweeper=reglab`` does with a command line: a search or a comparison.

The command line's overrides and ``hydra.sweeper.params`` are read as Hydra's basic sweeper
reads them (the command line wins for a key given in both). Plain ``key=value`` overrides go to
every job. The sweeps mean:

- in a search (``hydra.sweeper.protocol: null``, e.g. ``hparams_search=optuna``): the dimensions
  of the search space, beside ``search.param`` and the selected techniques' spaces;
- in a comparison (``protocol`` set, ``experiment=compare``): ``+technique=...`` lists the
  techniques (the baseline is always one), ``seed=...`` the paired seeds of the test stage,
  and any other swept key a setting of its own (``model=mlp,cnn``: the whole protocol per model).
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict, read_write

from reglab.core.errors import ConfigError, fail
from reglab.tune.protocol import BASELINE, Comparison, Plan, Setting, check_seeds
from reglab.tune.search import run_search
from reglab.tune.session import Session, say
from reglab.tune.space import override_value, sweep_distribution
from reglab.tune.studies import create

SWEEP_DIR = "sweep_dir"  # attributes of a comparison's index study (the study named NAME)
COMPLETE = "complete"


def sweep(sweeper, arguments: list[str]) -> None:
    try:
        _sweep(sweeper, arguments)
    except ConfigError as e:
        fail(str(e))


def parse(sweeper, arguments: list[str]) -> list:
    """``hydra.sweeper.params`` then the command line, one override per key (the last wins)."""
    params = sweeper.config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    by_key = {}
    for o in parser.parse_overrides(lines):
        by_key[o.key_or_group] = o
    return list(by_key.values())


def _sweep(sweeper, arguments: list[str]) -> None:
    cfg = sweeper.config
    overrides = parse(sweeper, arguments)
    protocol = cfg.hydra.sweeper.get("protocol")
    if protocol is None:
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
        dims = {o.key_or_group: sweep_distribution(o) for o in overrides if o.is_sweep_override()}
        session = Session(sweeper, fixed)
        save_multirun(cfg)
        try:
            run_search(session, dims)
        finally:
            session.close()
        return

    techniques, seeds, settings, fixed = [BASELINE], None, [], []
    for o in overrides:
        if o.key_or_group == "technique":
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
            techniques += [t for t in values if t not in techniques]
        elif o.key_or_group == "seed":
            seeds = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        elif o.is_sweep_override():
            settings.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            fixed.append(o.input_line)
    if seeds is None:
        raise ConfigError(
            "a comparison needs its paired seeds: seed=range(1,6) (hydra.sweeper.params)"
        )
    seeds = check_seeds(seeds)
    combos = [list(c) for c in itertools.product(*settings)] or [[]]
    plan = Plan.of(
        name=cfg.hydra.sweeper.get("study_name") or default_name(cfg),
        techniques=techniques,
        seeds=seeds,
        settings=[Setting(",".join(c), c) for c in combos],
        opts=OmegaConf.to_container(protocol, resolve=True),
        n_trials=int(cfg.hydra.sweeper.n_trials),
    )
    session = Session(sweeper, fixed)
    try:
        plan.name = continue_or_start(session, plan.name)
        save_multirun(cfg)
        Comparison(session, plan).run()
        mark_complete(session, plan.name)
    finally:
        session.close()


def default_name(cfg) -> str:
    """``compare_<data>_<model>_<hash>``: the hash of the composed task config, so the same
    command continues its killed comparison, and a changed config never does."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    digest = hashlib.sha1(OmegaConf.to_yaml(task, resolve=False).encode()).hexdigest()[:8]
    return f"compare_{cfg.data.name}_{cfg.model.name}_{digest}"


def continue_or_start(session: Session, base: str) -> str:
    """The comparison to run: the latest of ``base``, ``base.2``, ... if it did not finish (it
    was killed: continue it, in its own sweep folder, so its report sees every run), else a
    new one. Returns its name; its sweep folder and state are recorded in the storage."""
    cfg, runner = session.config, session.runner
    names = {
        s.study_name
        for s in optuna.get_all_study_summaries(session.storage, include_best_trial=False)
    }

    def nth(k: int) -> str:
        return base if k == 1 else f"{base}.{k}"

    k = 1
    while nth(k + 1) in names:
        k += 1
    name = nth(k)
    current = str(Path(str(cfg.hydra.sweep.dir)).resolve())
    if name in names:
        index = create(session.storage, name, session.opts.direction, None, None)
        recorded = index.user_attrs.get(SWEEP_DIR)
        if index.user_attrs.get(COMPLETE):
            name = nth(k + 1)
        else:
            explicit = any(str(o).startswith("hydra.sweep.dir=") for o in cfg.hydra.overrides.hydra)
            if recorded and recorded != current and not explicit and Path(recorded).is_dir():
                say(f"continuing the comparison {name} in {recorded} (it did not finish)")
                with read_write(cfg.hydra), open_dict(cfg.hydra):
                    cfg.hydra.sweep.dir = recorded
                runner.extra = [f"hydra.sweep.dir={override_value(recorded)}"]
                current = recorded
    index = create(session.storage, name, session.opts.direction, None, None)
    index.set_user_attr(SWEEP_DIR, current)
    runner.set_sweep_dir(Path(current))
    session.run_dirs = [Path(current)]
    return name


def mark_complete(session: Session, name: str) -> None:
    create(session.storage, name, session.opts.direction, None, None).set_user_attr(COMPLETE, True)


def save_multirun(cfg) -> None:
    """The sweep's config, as Hydra's own sweepers save it (the report reads its note)."""
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
