"""Every technique YAML's declared search space (``_search_``) trains at both of its ends.

The files are globbed when the tests are collected, so a new technique file is held to its
declared range the moment it exists: a range the technique refuses, or one that cannot train,
fails here rather than in the middle of a comparison."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from reglab.core.paths import CONF_DIR
from reglab.tune.protocol import param_overrides
from reglab.tune.space import bounds, technique_space

from ..conftest import FAST, train

GROUPS = ("regularizer", "augmentation")
FILES = sorted(
    (g, p.stem) for g in GROUPS for p in (CONF_DIR / g).glob("*.yaml") if p.stem != "none"
)
# Techniques that need residual blocks train on the smallest model that has them.
MODELS = {"stochastic_depth": ["model=resnet18", "model.width=8"]}


def space_of(group: str, name: str) -> dict:
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml")[name])
    return technique_space(group, name, node)


def cases():
    out = []
    for group, name in FILES:
        space = space_of(group, name)
        for end, point in zip(("low", "high"), bounds(space), strict=True):
            out.append(pytest.param(group, name, point, id=f"{group}={name}-{end}"))
    return out


def test_most_techniques_declare_a_space():
    """The protocol tunes what is declared; only knob-less techniques may declare nothing."""
    empty = sorted(name for group, name in FILES if not space_of(group, name))
    assert set(empty) <= {"batch_norm", "trivialaugment"}, empty


@pytest.mark.parametrize(("group", "name", "point"), cases())
def test_declared_space_trains_at_both_ends(group, name, point, tmp_path):
    model = MODELS.get(name, [])
    summary = train([*FAST, f"{group}=[{name}]", *model, *param_overrides(point)], tmp_path)
    assert summary["status"] == "ok"
    assert math.isfinite(summary["val/loss"]) and 0.0 <= summary["val/acc"] <= 1.0
    knobs = summary["techniques"][group]
    assert knobs == [name]
