"""reglab's own model factories: every one follows the data's shape, and the technique arguments
build the layers they name."""

import pytest
import torch

from reglab.core.errors import ConfigError
from reglab.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_models_follow_the_data(name, shape, classes):
    model = build_model(name, shape, classes, dropout=0.1, batch_norm=True)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, classes)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_defaults_build_in_train_and_eval_mode(name):
    model = build_model(name, (1, 28, 28), 10, activation_noise=0.1)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert model.eval()(x).shape == (2, 10)


def test_mlp_5x500_is_the_case_study_network():
    m = build_model("mlp_5x500", (1, 28, 28), 10)
    linears = [l for l in m if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [500] * 5 + [10] and linears[0].in_features == 784


def test_dropout_and_batchnorm_arguments_build_the_layers():
    m = build_model("mlp", (1, 8, 8), 10, dropout=0.3, input_dropout=0.2, batch_norm=True)
    assert sum(isinstance(l, torch.nn.Dropout) for l in m.modules()) == 3
    assert sum(isinstance(l, torch.nn.BatchNorm1d) for l in m.modules()) == 2
    plain = build_model("cnn", (1, 28, 28), 10)
    assert not any(isinstance(l, (torch.nn.Dropout, torch.nn.BatchNorm2d)) for l in plain.modules())


@pytest.mark.parametrize("kwargs,match", [
    ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
    ({"stochastic_depth": 0.1}, "residual"), ({"widths": []}, "widths"),
])  # fmt: skip
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model("mlp", (1, 8, 8), 10, **kwargs)


def test_each_value_is_checked_with_its_key():
    cases = [
        ("cnn", {"channels": [8, 0]}, "model.channels[1]=0"),
        ("cnn", {"hidden": -1}, "model.hidden=-1"),
        ("resnet18", {"width": 0}, "model.width=0"),
        ("speednet", {"depth": 0}, "model.depth=0"),
        ("speednet", {"logit_scale": 0}, "model.logit_scale=0"),
        ("mlp", {"batch_norm": "yes"}, "model.batch_norm='yes'"),
        ("mlp", {"activation_noise": -1}, "model.activation_noise=-1"),
        ("resnet18", {"stochastic_depth": 1.0}, "model.stochastic_depth=1.0"),
    ]
    for name, kwargs, key in cases:
        with pytest.raises(ConfigError) as e:
            build_model(name, (3, 32, 32), 10, **kwargs)
        assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("vgg", (1, 8, 8), 10)
