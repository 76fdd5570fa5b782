import pytest
import torch

from reglab.errors import ConfigError
from reglab.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_models_follow_the_data(name, shape, classes):
    model = build_model(name, shape, classes, dropout=0.1, batch_norm=True)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, classes)


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


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("vgg", (1, 8, 8), 10)
