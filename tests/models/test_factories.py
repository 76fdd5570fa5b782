"""reglab's own model factories: every one follows the data's shape, and checks its arguments.
They are plain architectures: the model-level techniques act on them once built (see
test_build.py and tests/test_regularizers.py)."""

import pytest
import torch

from reglab.core.errors import ConfigError
from reglab.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_models_follow_the_data(name, shape, classes):
    model = build_model(name, shape, classes)
    assert model(torch.randn(4, *shape)).shape == (4, classes)
    assert model.eval()(torch.randn(2, *shape)).shape == (2, classes)


def test_mlp_5x500_is_the_case_study_network():
    m = build_model("mlp_5x500", (1, 28, 28), 10)
    linears = [l for l in m if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [500] * 5 + [10] and linears[0].in_features == 784


def test_plain_models_hold_no_technique_layers():
    for name in ("mlp", "cnn"):
        plain = build_model(name, (1, 28, 28), 10)
        assert not any(
            isinstance(l, (torch.nn.Dropout, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
            for l in plain.modules()
        )
    # BatchNorm is part of resnet18's and speednet's architecture.
    for name in ("resnet18", "speednet"):
        assert any(
            isinstance(l, torch.nn.BatchNorm2d)
            for l in build_model(name, (3, 32, 32), 10).modules()
        )


def test_each_value_is_checked_with_its_key():
    cases = [
        ("mlp", {"widths": []}, "model.widths=[] must be a non-empty list"),
        ("cnn", {"channels": [8, 0]}, "model.channels[1]=0"),
        ("cnn", {"hidden": -1}, "model.hidden=-1"),
        ("resnet18", {"width": 0}, "model.width=0"),
        ("speednet", {"depth": 0}, "model.depth=0"),
        ("speednet", {"logit_scale": 0}, "model.logit_scale=0"),
        ("mlp", {"dropout": 0.1}, "model.dropout is not an argument of reglab.models.mlp"),
    ]
    for name, kwargs, key in cases:
        with pytest.raises(ConfigError) as e:
            build_model(name, (3, 32, 32), 10, **kwargs)
        assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="not one of reglab.s"):
        build_model("vgg", (1, 8, 8), 10)
