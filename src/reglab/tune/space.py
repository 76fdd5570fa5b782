"""Search spaces: config keys mapped to Optuna distributions.

Three ways to declare one, all ending as ``{dotted.key: distribution}``:

- a technique YAML's ``_search_`` mapping, one entry per knob::

      l2: {_target_: ..., strength: 1e-3,
           _search_: {strength: {type: float, low: 1.0e-6, high: 1.0e-1, log: true}}}

  ``type`` is ``float`` or ``int`` (``low``, ``high``, optional ``log``, ``step``) or ``choice``
  (``choices: [...]``);
- ``search.param/low/high/log`` of ``hparams_search=optuna`` (one numeric key);
- Hydra's sweep syntax on the command line or in ``hydra.sweeper.params``: ``choice(a,b)``,
  ``a,b,c``, ``range(1,5)``, ``interval(0.1,0.5)``, ``tag(log,interval(1e-4,1e-2))``.
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
_MISSING = object()
missing = _MISSING  # what ``shorthand_space`` expects for a key the config does not have


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


def shorthand_space(search: Mapping | None, current) -> Space:
    """``search.param/low/high/log``: one numeric key; an int key (``current`` is its value in
    the config, or ``missing``) is searched as an int."""
    if not search or not search.get("param"):
        return {}
    param = str(search["param"])
    if current is _MISSING:
        group = param.split(".")[0]
        raise ConfigError(
            f"search.param={param} is not a key of the config; select its technique too "
            f"(e.g. {group}={param.split('.')[1] if '.' in param else 'NAME'}) or fix the key"
        )
    low, high = search.get("low"), search.get("high")
    if not (checks._is_number(low) and checks._is_number(high) and low < high):
        raise ConfigError(
            f"search.low={low} and search.high={high} must be numbers with low < high"
        )
    integer = isinstance(current, int) and not isinstance(current, bool)
    spec = {"type": "int" if integer else "float", "low": low, "high": high,
            "log": bool(search.get("log", False))}  # fmt: skip
    if integer:
        spec.update(low=int(low), high=int(high))
    return {param: distribution("search", spec)}


def sweep_distribution(override) -> BaseDistribution | None:
    """A parsed Hydra sweep override as a distribution (None for a plain value).

    The same reading as hydra-optuna-sweeper: a choice or a comma list is categorical, a range
    an int (or categorical with a step other than 1), an interval a float, ``tag(log, ...)`` on a
    scale of logarithms."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    key = override.get_key_element()
    if not override.is_sweep_override():
        return None
    value = override.value()
    log = "log" in (getattr(value, "tags", None) or set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(
            [v for v in override.sweep_iterator(transformer=lambda x: x)]
        )
    if isinstance(value, RangeSweep):
        if value.shuffle:
            raise ConfigError(f"{key}: shuffle(range(...)) has no meaning in a search")
        if (
            all(isinstance(v, int) for v in (value.start, value.stop, value.step))
            and value.step == 1
        ):
            return IntDistribution(value.start, value.stop - 1, log=log)
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        if log and value.start <= 0:
            raise ConfigError(
                f"{key}: tag(log, interval({value.start}, {value.end})) needs a start > 0"
            )
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{key}: {override.input_line} is not a sweep a search can sample")


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
