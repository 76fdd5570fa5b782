"""Hyperparameter search with Hydra's Optuna sweeper (``reglab-train hparams_search=optuna``).

The sweeper asks Optuna for a value of ``search.param`` in ``[search.low, search.high]``, runs the
job with that override and tells Optuna the job's return value (``val/acc_best``). The study is
kept in a SQLite file, so the same command run again continues the same study.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reglab.core.errors import ConfigError

_MISSING = object()


def sqlite_storage(path: str) -> str:
    """The SQLAlchemy URL of a SQLite file, creating its folder: Optuna opens the storage before
    Hydra has made the sweep's folders, and SQLite cannot create a missing directory."""
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def suggest(cfg: DictConfig, trial) -> None:
    """Optuna's ``custom_search_space`` hook: suggest ``search.param`` for this trial.

    What ``trial`` suggests becomes the job's override ``<search.param>=<value>``. A bad
    ``search`` section stops the search with one line and exit status 2, as reglab-train does.
    """
    try:
        suggest_param(cfg, trial)
    except ConfigError as e:
        print(f"reglab: error: {e}", file=sys.stderr)
        sys.exit(2)


def suggest_param(cfg: DictConfig, trial) -> None:
    s = cfg.get("search")
    if s is None or not s.get("param"):
        return
    param, low, high, log = str(s.param), s.low, s.high, bool(s.get("log", False))
    current = OmegaConf.select(cfg, param, default=_MISSING)
    if current is _MISSING:
        group = param.split(".")[0]
        raise ConfigError(
            f"search.param={param} is not a key of the config; select its technique too "
            f"(e.g. {group}={param.split('.')[1] if '.' in param else 'NAME'}) or fix the key"
        )
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
        raise ConfigError(
            f"search.low={low} and search.high={high} must be numbers with low < high"
        )
    if log and low <= 0:
        raise ConfigError(f"search.low={low} must be > 0 with search.log=true")
    if isinstance(current, int) and not isinstance(current, bool):
        trial.suggest_int(param, int(low), int(high), log=log)
    else:
        trial.suggest_float(param, float(low), float(high), log=log)
