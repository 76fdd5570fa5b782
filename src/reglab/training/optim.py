"""The optimizer and LR scheduler of a run, from ``_partial_`` configs (conf/optimizer/,
conf/scheduler/): any ``torch.optim`` class and any ``torch.optim.lr_scheduler`` class by YAML.

What reglab adds to the class the YAML names: weight decay only on weight matrices and kernels
(never biases or normalization parameters), fused kernels where they exist, the technique hooks
(``optimizer_kwargs``: decoupled weight decay), and a scheduler length filled in from the run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import torch

from reglab.core import checks
from reglab.core.errors import ConfigError
from reglab.training.speed import fused_kwargs

# Scheduler arguments that mean "the length of the run"; left null in a YAML, reglab fills them.
LENGTH_ARGS = ("T_max", "total_steps", "total_iters")
SCHEDULER_KEYS = ("interval", "monitor", "frequency")  # reglab's/Lightning's, not the class's


def _class(cfg: Mapping, group: str):
    target = cfg.get("_target_")
    if not target:
        raise ConfigError(f"{group} has no _target_; name a class, e.g. {group}=adam")
    module, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{group}._target_={target} cannot be imported ({e})") from e


def _kwargs(cfg: Mapping, drop: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in drop}


def check_optimizer(cfg: Mapping) -> None:
    """The values reglab reads itself; the class checks the rest when it is built."""
    _class(cfg, "optimizer")
    if "lr" in cfg:
        checks.positive("optimizer.lr", cfg["lr"])
    if "weight_decay" in cfg:
        checks.nonnegative("optimizer.weight_decay", cfg["weight_decay"])


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices and kernels only. Without decay the two groups would be alike:
    one group, one optimizer kernel call."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_optimizer(cfg: Mapping, model: torch.nn.Module) -> torch.optim.Optimizer:
    cls = _class(cfg, "optimizer")
    kwargs = _kwargs(cfg, drop=("weight_decay",))
    groups = param_groups(model, float(cfg.get("weight_decay") or 0.0))
    try:
        return cls(groups, **kwargs, **fused_kwargs(cls, groups[0]["params"]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer={cls.__name__}: {str(e).splitlines()[0]}") from e


def build_scheduler(cfg: Mapping | None, optimizer, steps: int, epochs: int) -> dict | None:
    """Lightning's scheduler dict, or None for a constant learning rate (``scheduler=none``)."""
    if not cfg:
        return None
    cls = _class(cfg, "scheduler")
    interval = checks.choice("scheduler.interval", cfg.get("interval", "step"), ("step", "epoch"))
    kwargs = _kwargs(cfg, drop=SCHEDULER_KEYS)
    length = steps if interval == "step" else epochs
    for name in LENGTH_ARGS:
        if name in kwargs and kwargs[name] is None:
            kwargs[name] = max(int(length), 1)
    try:
        scheduler = cls(optimizer, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"scheduler={cls.__name__}: {str(e).splitlines()[0]}") from e
    out = {"scheduler": scheduler, "interval": interval, "frequency": cfg.get("frequency", 1)}
    if cfg.get("monitor"):
        out["monitor"] = cfg["monitor"]
    return out
