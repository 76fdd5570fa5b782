"""Search spaces: the one written form (`{type, low, high, log, choices}`), its errors, override values."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from reglab.core.errors import ConfigError
from reglab.tune.space import (
    bounds,
    distribution,
    override_value,
    spec_space,
    technique_space,
)

from ..conftest import compose_cfg


def test_declared_types_become_distributions():
    assert distribution(
        "k", {"type": "float", "low": 1e-6, "high": 0.1, "log": True}
    ) == FloatDistribution(1e-6, 0.1, log=True)
    assert distribution("k", {"type": "int", "low": 1, "high": 9, "step": 2}) == IntDistribution(
        1, 9, step=2
    )
    assert distribution("k", {"type": "choice", "choices": [0.9, 0.99]}) == CategoricalDistribution(
        [0.9, 0.99]
    )
    assert distribution("k", {"low": 0.0, "high": 0.7}) == FloatDistribution(
        0.0, 0.7
    )  # float by default


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "float", "low": 0.0, "high": 1.0, "log": True},
            r"^k\.low=0\.0 must be > 0 with k\.log=true$",
        ),
        ({"type": "float", "low": 1.0, "high": 0.5}, r"^k\.high=0\.5 must be a number >= 1\.0$"),
        ({"type": "gauss", "low": 0, "high": 1}, r"^k\.type='gauss' is not an option"),
        ({"type": "choice", "choices": []}, r"^k\.choices=\[\] must be a non-empty list$"),
        ({"type": "int", "low": 0.5, "high": 3}, r"^k\.low=0\.5 must be an integer$"),
        ({"low": 0, "high": 1, "scale": "log"}, r"^k has unknown entries \['scale'\]"),
        (0.5, r"^k=0\.5 must be a mapping"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        distribution("k", spec)


def test_technique_space_keys_and_unknown_knobs():
    node = {
        "_target_": "x.L2",
        "strength": 1e-3,
        "_search_": {"strength": {"low": 1e-6, "high": 1e-1, "log": True}},
    }
    assert list(technique_space("regularizer", "l2", node)) == ["regularizer.l2.strength"]
    assert technique_space("regularizer", "batch_norm", {"_target_": "x.BatchNorm"}) == {}
    node["_search_"] = {"strenght": {"low": 0, "high": 1}}
    with pytest.raises(
        ConfigError,
        match=r"regularizer\.l2\._search_\.strenght: l2 has no knob 'strenght'; its knobs: \['strength'\]",
    ):
        technique_space("regularizer", "l2", node)


def test_a_search_space_may_nest_its_keys():
    """``{optimizer.lr: spec}`` and ``{optimizer: {lr: spec}}`` are the same space."""
    spec = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    flat = spec_space(
        "search", {"optimizer.lr": spec, "trainer.max_epochs": {"type": "int", "low": 2, "high": 9}}
    )
    nested = spec_space(
        "search",
        {
            "optimizer": {"lr": spec},
            "trainer": {"max_epochs": {"type": "int", "low": 2, "high": 9}},
        },
    )
    assert (
        flat
        == nested
        == {
            "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
            "trainer.max_epochs": IntDistribution(2, 9),
        }
    )
    with pytest.raises(ConfigError, match=r"^search\.optimizer\.lr\.low=0\.0 must be > 0"):
        spec_space("search", {"optimizer": {"lr": {**spec, "low": 0.0}}})


def test_low_and_high_bounds():
    space = {
        "a": FloatDistribution(0.1, 0.5),
        "b": CategoricalDistribution(["x", "y", "z"]),
        "c": IntDistribution(1, 4),
    }
    assert bounds(space) == [{"a": 0.1, "b": "x", "c": 1}, {"a": 0.5, "b": "z", "c": 4}]


def test_override_values_survive_hydra(tmp_path):
    """Every kind of value, written by override_value, composes back to itself."""
    values = {
        "f": 1.7683406927548274e-06,
        "i": 3,
        "b": True,
        "n": None,
        "s": "it's a/b: c",
        "l": [0.02, 0.33],
    }
    cfg = compose_cfg([f"++protocol={override_value({'params': values})}"], tmp_path)
    assert dict(cfg.protocol.params) == {**values, "l": [0.02, 0.33]}
