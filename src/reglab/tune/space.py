"""Search spaces: config keys mapped to Optuna distributions, written one way everywhere.

A space is ``{dotted.config.key: spec}``, each spec ``{type: float|int|choice, low, high, log,
step, choices}``: a technique YAML's ``_search_`` (its knobs, keyed by the knob name), the
comparison's shared knobs (``hydra.sweeper.protocol.shared``) and a plain search
(``hydra.sweeper.search``, nested mappings allowed: ``{optimizer: {lr: {...}}}``)::

      l2: {_target_: ..., strength: 1e-3,
           _search_: {strength: {type: float, low: 1.0e-6, high: 1.0e-1, log: true}}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from reglab.core import checks
from reglab.core.config import to_plain
from reglab.core.errors import ConfigError

SEARCH_KEY = "_search_"
TYPES = ("float", "int", "choice")

Space = dict  # {dotted config key: optuna distribution}


def distribution(key: str, spec) -> BaseDistribution:
    """One ``_search_`` entry as a distribution; ``key`` names it in errors."""
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{key}={spec!r} must be a mapping such as {{type: float, low: 0, high: 1}}"
        )
    kind = checks.choice(f"{key}.type", spec.get("type", "float"), TYPES)
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(
            f"{key} has unknown entries {sorted(unknown)}; use type, low, high, log, step, choices"
        )
    if kind == "choice":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{key}.choices={choices!r} must be a non-empty list")
        return CategoricalDistribution(list(choices))
    integer = kind == "int"
    low = checks.number(f"{key}.low", spec.get("low"), integer=integer)
    high = checks.number(f"{key}.high", spec.get("high"), low=low, integer=integer)
    log = checks.flag(f"{key}.log", spec.get("log", False))
    step = spec.get("step")
    if log and low <= 0:
        raise ConfigError(f"{key}.low={low} must be > 0 with {key}.log=true")
    if step is not None:
        step = checks.positive(f"{key}.step", step, integer=integer)
        if log:
            raise ConfigError(f"{key}: step and log=true cannot be combined (Optuna refuses it)")
    if integer:
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(low, high, log=log, step=step)


def technique_space(group: str, name: str, node: Mapping | None) -> Space:
    """The declared space of one technique, keyed ``group.name.knob``; ``{}`` when it has none.

    A knob that the technique does not have is refused: a typo would otherwise be tuned, passed
    to the constructor and fail in every trial."""
    node = to_plain(node) or {}
    declared = node.get(SEARCH_KEY) or {}
    prefix = f"{group}.{name}"
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{prefix}.{SEARCH_KEY}={declared!r} must map knob names to ranges")
    out = {}
    for knob, spec in declared.items():
        if knob not in node or knob.startswith("_"):
            knobs = sorted(k for k in node if not k.startswith("_"))
            raise ConfigError(
                f"{prefix}.{SEARCH_KEY}.{knob}: {name} has no knob '{knob}'; its knobs: {knobs}"
            )
        out[f"{prefix}.{knob}"] = distribution(f"{prefix}.{SEARCH_KEY}.{knob}", spec)
    return out


def selected_space(cfg) -> Space:
    """The declared spaces of every technique selected in ``cfg`` (both groups)."""
    out = {}
    for group in ("regularizer", "augmentation"):
        for name, node in (cfg.get(group) or {}).items():
            out.update(technique_space(group, name, node))
    return out


def spec_space(where: str, node: Mapping | None) -> Space:
    """``{key: spec}`` (nested mappings without ``type`` are read as key paths) as a space."""
    out: Space = {}
    for key, spec in (to_plain(node) or {}).items():
        if isinstance(spec, Mapping) and "type" not in spec and spec:
            out.update({f"{key}.{k}": d for k, d in spec_space(f"{where}.{key}", spec).items()})
        else:
            out[str(key)] = distribution(f"{where}.{key}", spec)
    return out


def describe(space: Space) -> dict:
    """A space back in its written form (what a run's ``protocol.space`` records)."""
    out = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = {"type": "choice", "choices": list(dist.choices)}
        else:
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            out[key] = {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}
    return out


def suggest(trial, space: Space) -> dict:
    """Ask ``trial`` for a value of every key of ``space``; returns ``{key: value}``."""
    out = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            out[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            out[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return out


def bounds(space: Space) -> list[dict]:
    """Two points of ``space``: every key at its low end, then at its high end (first and last
    choice). A technique whose declared range cannot train fails here, not in a tuning run."""
    low, high = {}, {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            low[key], high[key] = dist.choices[0], dist.choices[-1]
        else:
            low[key], high[key] = dist.low, dist.high
    return [low, high]


def override_value(value) -> str:
    """A Python value in Hydra's override grammar (strings quoted, so any text survives)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{value} cannot be passed to a job")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"
