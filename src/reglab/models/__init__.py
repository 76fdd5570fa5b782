"""The models: a model config names a factory by ``_target_`` and ``build`` calls it.

A factory is any callable that takes ``num_classes`` (and ``input_shape``, ``(C, H, W)``, if its
signature names it) plus the config's other keys, and returns an ``nn.Module`` mapping a batch
``(N, C, H, W)`` to logits ``(N, num_classes)``. So a model is added by a YAML file alone::

    # conf/model/torchvision_resnet18.yaml
    _target_: torchvision.models.resnet18
    name: torchvision_resnet18      # reglab's label: run names, the report

A config may also say which of its arguments are the model's size, for
``regularizer=small_model``: ``_size_: {width: [widths], depth: widths}`` (not passed to the
factory). The model-level techniques (dropout, batch norm, ...) act on the built module instead.

``build`` checks the model against the data once, with a forward pass of two blank inputs: a
model whose first conv takes another number of channels (torchvision's resnet18 takes 3; digits
have 1) gets that conv rebuilt for the data's channels; any other mismatch is one line.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from reglab.core import checks
from reglab.core.errors import ConfigError
from reglab.models.cnn import cnn
from reglab.models.mlp import mlp, mlp_5x500
from reglab.models.resnet import BasicBlock, resnet18
from reglab.models.speednet import speednet

# The factories are attributes of the package under their modules' names, so a config says
# `_target_: reglab.models.mlp` (the function; the module stays importable as reglab.models.mlp).
__all__ = ["MODELS", "BasicBlock", "build", "build_model", "cnn", "mlp"]
__all__ += ["mlp_5x500", "resnet18", "speednet"]

# reglab's own factories by name, for ``build_model`` and the tests that run every model.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "mlp_5x500": mlp_5x500,
    "cnn": cnn,
    "resnet18": resnet18,
    "speednet": speednet,
}

# Set by reglab from the data, never by the config.
_FROM_DATA = ("input_shape", "num_classes")
# The config's own entry naming its size arguments (read by regularizer=small_model).
SIZE_KEY = "_size_"


def build(cfg: Mapping, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model of a ``model`` config: ``_target_`` called with the keys other than ``name``,
    ``num_classes`` and, if the factory names it, ``input_shape``."""
    kwargs = {k: _plain(v) for k, v in cfg.items()}
    name = kwargs.pop("name", None)
    kwargs.pop(SIZE_KEY, None)
    for key in _FROM_DATA:
        if key in kwargs:
            raise ConfigError(f"model.{key} is set from the data; remove it from the config")
    if "_target_" not in kwargs:
        raise ConfigError(
            f"model (name={name!r}) has no _target_: name its factory, such as reglab.models.mlp"
        )
    target = kwargs.pop("_target_")
    factory = _partial(target, kwargs)
    fn, kwargs = factory.func, factory.keywords  # nested _target_ nodes are objects by now
    _check_arguments(fn, kwargs, target)
    given = {"num_classes": num_classes}
    if "input_shape" in (_parameters(fn) or {}):
        given["input_shape"] = tuple(input_shape)
    try:
        model = factory(**given)
    except ConfigError:
        raise
    except TypeError as e:
        # A factory that passes **kwargs on (torchvision's) refuses a key only when called.
        key = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if key and key[1] in kwargs:
            raise ConfigError(f"model.{key[1]} is not an argument of {target}") from e
        raise
    except (ValueError, KeyError) as e:  # a third-party factory's own check of a value
        why = f"{type(e).__name__}: {_one_line(e)}"
        raise ConfigError(f"model: {target} refused its arguments: {why}") from e
    return fit_to_data(model, input_shape, num_classes, name or target)


def fit_to_data(
    model: nn.Module, input_shape: Sequence[int], num_classes: int, label: str
) -> nn.Module:
    """``model`` made to take the data: a first conv made for another number of input channels is
    rebuilt (freshly initialized) for the data's; then one forward pass of two blank inputs
    proves the rest, and a failure is one line naming the model and the shapes."""
    shape = tuple(input_shape)
    first = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None
    )
    if first and isinstance(first[1], nn.Conv2d) and first[1].in_channels != shape[0]:
        name, conv = first
        if conv.groups != 1:
            raise ConfigError(
                f"model {label}: its first conv ({name}) takes {conv.in_channels} channels in "
                f"{conv.groups} groups, the data has {shape[0]}"
            )
        parent_name, _, child = name.rpartition(".")
        new = nn.Conv2d(
            shape[0],
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except RuntimeError as e:
        raise ConfigError(
            f"model {label} cannot take the data's inputs of shape {shape}: {_one_line(e)}"
        ) from e
    finally:
        model.train(was_training)
    if tuple(getattr(out, "shape", ())) != (2, num_classes):
        got = tuple(out.shape[1:]) if hasattr(out, "shape") else type(out).__name__
        raise ConfigError(
            f"model {label} maps inputs of shape {shape} to {got}, not {num_classes} logits"
        )
    return model


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """``build`` with the config spread out: ``build_model("mlp", (1, 8, 8), 10, widths=[64])``."""
    if name not in MODELS:
        raise ConfigError(f"model {name!r} is not one of reglab's; choose one of {sorted(MODELS)}")
    return build(
        {"_target_": f"reglab.models.{name}", "name": name, **kwargs}, input_shape, num_classes
    )


def _partial(target, kwargs: dict) -> functools.partial:
    """``target`` bound to ``kwargs``, through Hydra's instantiate: its import, its nested
    ``_target_`` nodes and its rules on what a config may call (a checkpoint may come from
    anyone)."""
    if not isinstance(target, str) or not target:
        raise ConfigError(
            f"model._target_={target!r} must be a dotted path such as reglab.models.mlp"
        )
    try:
        return instantiate({**kwargs, "_target_": target, "_partial_": True, "_convert_": "all"})
    except InstantiationException as e:
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        why = (
            "cannot be found" if isinstance(cause, (ImportError, AttributeError)) else "is refused"
        )
        raise ConfigError(f"model._target_={target!r} {why}: {_one_line(cause)}") from e


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _parameters(fn) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return None


def _check_arguments(fn, kwargs: dict, target: str) -> None:
    """Keys the factory does not take and values of the wrong type, before building anything.
    A factory with ``**kwargs`` has its keys checked by the call (see ``build``)."""
    params = _parameters(fn)
    if params is None:
        return
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                raise ConfigError(f"model.{key} is not an argument of {target}")
        if "num_classes" not in params:
            raise ConfigError(f"model._target_={target} takes no num_classes: not a classifier")
    checks.check_kwargs(fn, kwargs, "model", skip=_FROM_DATA)
