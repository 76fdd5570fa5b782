"""Where the configs live, and the checks every run passes before anything is built.

Most values are checked by the constructor that uses them (``DataModule``, the models, each
technique), which raise ``ConfigError`` naming the key, the value and what is allowed. This module
holds the checks on keys no single constructor owns.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reglab.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT_DIR = PACKAGE_DIR.parents[1]  # the repository root of an editable (src layout) install
CONF_DIR = ROOT_DIR / "conf"


def _root() -> str:
    return str(ROOT_DIR)


def run_name(cfg) -> str:
    """``dropout+l2+affine``: the regularizers, then the augmentations, or ``baseline``.

    One definition for the run folder (through the ``reglab_run_name`` resolver), the W&B run
    name and metrics.json's ``name``, so the three always agree.
    """
    names = sorted(cfg.get("regularizer") or {}) + sorted(cfg.get("augmentation") or {})
    return "+".join(names) or "baseline"


def _run_name(*, _root_) -> str:
    return run_name(_root_)


if not OmegaConf.has_resolver("reglab_root"):
    OmegaConf.register_new_resolver("reglab_root", _root)
    OmegaConf.register_new_resolver("reglab_run_name", _run_name)


def to_plain(node):
    """A DictConfig/ListConfig as plain dicts and lists (None stays None)."""
    if node is None:
        return None
    if isinstance(node, (DictConfig,)) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def with_env(main):
    """Entry-point wrapper: load ``.env`` before Hydra composes (configs may read ``oc.env``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from reglab.tracking import load_env_file

        load_env_file()
        return main(*args, **kwargs)

    return wrapper


def check_group_choices(overrides: list[str]) -> None:
    """Refuse ``group=option`` overrides naming an option with no YAML file, in one line.

    Hydra refuses them too, but for a multi-select list (``regularizer=[l2,dropuot]``) its
    message does not list the options. Sweep syntax (``a,b``) is split; functions such as
    ``choice(...)`` or ``glob(*)`` are left to Hydra.
    """
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        folder = CONF_DIR / group
        if "/" in group or "." in group or group == "hydra" or not folder.is_dir():
            continue
        if any(c in value for c in "()*$"):
            continue
        available = sorted(f.stem for f in folder.glob("*.yaml"))
        for name in value.replace("[", ",").replace("]", ",").split(","):
            name = name.strip().strip("'\"")
            if name and name != "null" and name not in available:
                raise ConfigError(f"{group}={name} is not an option; choose from {available}")


# ----------------------------------------------------------------------------- type checks


def _matches(value, hint) -> bool:
    """Whether a config value fits a simple annotation; unknown hints are left to the callee."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return len(inner) != 1 or all(_matches(v, inner[0]) for v in value)
    return True


def _wording(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wording(a) for a in args)
    if origin in (list, tuple, Sequence):
        inner = [a for a in args if a is not Ellipsis]
        return (
            f"a list of {_wording(inner[0]).removeprefix('a ').removeprefix('an ')}s"
            if len(inner) == 1
            else "a list"
        )
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}  # fmt: skip
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_kwargs(fn, kwargs: dict, prefix: str, skip: tuple[str, ...] = ()) -> None:
    """Unknown keys and wrongly typed values of a config section, against ``fn``'s signature.

    Ranges stay with the constructors; this catches ``data.batch_size=abc`` before it turns into
    a ``TypeError`` deep inside a comparison.
    """
    params = inspect.signature(fn).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - annotations we cannot evaluate: check names only
        hints = {}
    allowed = [
        n
        for n, p in params.items()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    allowed = [n for n in allowed if n not in skip and n != "self"]
    for key, value in kwargs.items():
        if key in skip or key.startswith("_"):
            continue
        if key not in params:
            if open_ended:
                continue
            raise ConfigError(f"{prefix}.{key} is not a setting here; allowed: {allowed}")
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{prefix}.{key}={value!r} must be {_wording(hints[key])}")


def _number(cfg, key: str, *, positive: bool = False, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or (positive and value <= 0):
        kind = "integer" if integer else "number"
        raise ConfigError(f"{key}={value!r} must be a {'positive ' if positive else ''}{kind}")


def check_config(cfg: DictConfig) -> None:
    """Checks of top-level keys and value types; raise ConfigError with one clear line.

    Ranges and combinations are checked by the constructor that owns the value (``DataModule``,
    the models, ``Classifier``, each technique): one place per value.
    """
    from reglab.data import DataModule
    from reglab.models import MODELS

    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError(f"seed={cfg.get('seed')!r} must be an integer")
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs != -1:  # -1: no limit (with max_steps or early stopping)
        _number(cfg, "trainer.max_epochs", positive=True, integer=True)
    for key in ("trainer.max_steps", "trainer.min_epochs", "trainer.check_val_every_n_epoch"):
        if OmegaConf.select(cfg, key) not in (None, -1):
            _number(cfg, key, integer=True)
    for key in ("resume", "trust_checkpoint"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not Path(str(ckpt)).is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such file")

    check_kwargs(DataModule.__init__, to_plain(cfg.data), "data", skip=("seed",))
    model = to_plain(cfg.model)
    if model.get("name") not in MODELS:
        raise ConfigError(
            f"model.name={model.get('name')!r} is not a model; choose one of {sorted(MODELS)}"
        )
    # How the network runs, read by the Classifier (README "Speed"), not the network's arguments.
    for key in ("channels_last", "compile", "tta"):
        if not isinstance(model.pop(key, False), bool):
            raise ConfigError(f"model.{key}={cfg.model[key]!r} must be true or false")
    check_kwargs(MODELS[model["name"]], model, "model", skip=("name", "input_shape", "num_classes"))
    for key in ("lr", "weight_decay", "momentum", "pct_start"):
        _number(cfg, f"optimizer.{key}")
