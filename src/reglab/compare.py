"""The ``technique`` config group: one option per technique, for one-at-a-time comparisons.

``regularizer`` and ``augmentation`` are two multi-select groups, and a basic Hydra sweep is a
cartesian product, so "the baseline plus every technique on its own" cannot be written as a sweep
over those two groups. ``technique=NAME`` selects exactly one of them (``technique=baseline``
selects none), so ``+technique=glob(*)`` sweeps all of them. The options are registered from the
YAML files present at import time, so a new technique file joins ``experiment=compare`` without
any edit here.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from reglab.core.paths import CONF_DIR

GROUPS = ("regularizer", "augmentation")
# Techniques that only work with some models: the option also selects such a model, which puts
# its runs in a setting (data/model) of their own in the report.
NEEDS_MODEL = {"stochastic_depth": "resnet18"}


def technique_options() -> dict[str, tuple[str, str]]:
    """``{option: (group, name)}`` for every technique YAML (``none`` excluded)."""
    options: dict[str, tuple[str, str]] = {}
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            if path.stem == "none":
                continue
            option = path.stem if path.stem not in options else f"{group}_{path.stem}"
            options[option] = (group, path.stem)
    return options


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="technique", name="baseline", node={}, package="_global_")
    for option, (group, name) in technique_options().items():
        defaults: list = [{f"override /{group}": [name]}]
        if name in NEEDS_MODEL:
            defaults.append({"override /model": NEEDS_MODEL[name]})
        cs.store(group="technique", name=option, node={"defaults": defaults}, package="_global_")


register()
