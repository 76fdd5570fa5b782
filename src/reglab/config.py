"""Where the configs live, and the checks every run passes before anything is built.

Most values are checked by the constructor that uses them (``DataModule``, the models, each
technique), which raise ``ConfigError`` naming the key, the value and what is allowed. This module
holds the checks on keys no single constructor owns.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reglab.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT_DIR = PACKAGE_DIR.parents[1]  # the repository root of an editable (src layout) install
CONF_DIR = ROOT_DIR / "conf"


def _root() -> str:
    return str(ROOT_DIR)


def _run_name(*, _root_) -> str:
    """``l2+dropout+affine``: the selected techniques, or ``baseline``."""
    names = [*(_root_.get("regularizer") or {}), *(_root_.get("augmentation") or {})]
    return "+".join(sorted(names)) or "baseline"


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


def check_config(cfg: DictConfig) -> None:
    """Checks of top-level keys; raise ConfigError with one clear line."""
    trainer = cfg.trainer
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs <= 0:
        raise ConfigError(f"trainer.max_epochs={max_epochs} must be a positive integer")
    if not isinstance(cfg.get("seed"), int):
        raise ConfigError(f"seed={cfg.get('seed')!r} must be an integer")
