"""``reglab.models.build``: a model config names its factory by ``_target_``, so a model can be
added by a YAML file alone; older configs (a ``name`` only) still build; bad configs fail in one
line naming the key."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reglab import regularizers as R
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR
from reglab.models import MODELS, build

YAMLS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if not p.stem.startswith("_"))
OURS = [n for n in YAMLS if OmegaConf.load(CONF_DIR / "model" / f"{n}.yaml").get("defaults")]
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]  # digits, MNIST family, CIFAR


def model_cfg(*overrides: str):
    """The ``model`` node ``reglab-train OVERRIDES`` would compose."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides)).model


def one_line_error(cfg, shape=(3, 32, 32), num_classes=10) -> str:
    with pytest.raises(ConfigError) as e:
        build(cfg, shape, num_classes)
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- YAML files


def test_reglab_models_inherit_the_technique_arguments():
    assert set(OURS) == set(MODELS)  # every reglab model has its YAML, each with _base
    for name in OURS:
        cfg = model_cfg(f"model={name}")
        assert cfg._target_ == f"reglab.models.{name}" and cfg.name == name
        assert {"dropout", "input_dropout", "batch_norm", "activation_noise"} <= set(cfg)
        assert not {"channels_last", "compile", "tta"} & set(cfg)  # how it runs: not the model
    # A model file's own value wins over _base's (_self_ comes last in its defaults list).
    assert model_cfg("model=resnet18").batch_norm is True
    assert model_cfg("model=mlp").batch_norm is False


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_model_yaml_builds_for_every_input_shape(name, shape):
    model = build(model_cfg(f"model={name}"), shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_a_model_added_by_yaml_alone():
    cfg = model_cfg("model=torchvision_resnet18")
    assert cfg.name == "torchvision_resnet18"
    model = build(cfg, (3, 32, 32), 10)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_user_factory_gets_the_data_shape_only_if_it_names_it():
    cfg = {"_target_": "tests.models.factories.tiny", "name": "tiny", "hidden": 4}
    model = build(cfg, (1, 8, 8), 3)
    assert model[1].in_features == 64 and model[1].out_features == 4
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 3)
    # shapeless() takes no input_shape: giving it one would be a TypeError.
    model = build({"_target_": "tests.models.factories.shapeless"}, (1, 8, 8), 3)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 3)


def test_a_config_from_before_targets_builds_the_registered_model():
    old = {"name": "mlp", "widths": [16, 8], "dropout": 0.0, "batch_norm": False}
    new = {"_target_": "reglab.models.mlp", **old}
    torch.manual_seed(0)
    a = build(old, (1, 8, 8), 10)
    torch.manual_seed(0)
    b = build(new, (1, 8, 8), 10)
    assert [tuple(p.shape) for p in a.parameters()] == [
        (16, 64),
        (16,),
        (8, 16),
        (8,),
        (10, 8),
        (10,),
    ]
    # The same layers, names and initial weights: its checkpoint loads into either.
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_name_is_a_label_when_there_is_a_target():
    model = build({"_target_": "reglab.models.mlp", "name": "my_mlp", "widths": [4]}, (1, 8, 8), 2)
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)] == [4, 2]


# ----------------------------------------------------------------------------- technique hooks


def apply(technique: R.Technique, cfg) -> dict:
    """The model config after a technique's hook, as the LitModule hands it to ``build``."""
    return technique.model_kwargs(OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else cfg)


@pytest.mark.parametrize("name", OURS)
def test_model_technique_hooks_act_on_the_yaml(name):
    cfg = model_cfg(f"model={name}")
    for technique in (R.Dropout(0.3, 0.1), R.BatchNorm(), R.ActivationNoise(0.2), R.SmallModel()):
        cfg = apply(technique, cfg)
    model = build(cfg, (1, 28, 28), 10)
    modules = list(model.modules())
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in modules)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in modules)  # on the input
    assert any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in modules)
    full = build(model_cfg(f"model={name}"), (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())


def test_a_technique_the_model_does_not_take_is_one_line():
    cfg = apply(R.Dropout(), model_cfg("model=torchvision_resnet18"))
    assert one_line_error(cfg) == "model.dropout is not an argument of torchvision.models.resnet18"
    msg = one_line_error(apply(R.StochasticDepth(0.1), model_cfg("model=cnn")))
    assert "model.stochastic_depth=0.1" in msg and "model=resnet18" in msg


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"_target_": "torchvision.models.resnet18", "foo": 1},
         "model.foo is not an argument of torchvision.models.resnet18"),
        ({"_target_": "reglab.models.mlp", "foo": 1}, "model.foo is not an argument of reglab.models.mlp"),
        ({"_target_": "reglab.models.mlp_5x500", "foo": 1},
         "model.foo is not an argument of reglab.models.mlp_5x500"),
        ({"name": "mlp", "foo": 1}, "model.foo is not an argument of reglab.models.mlp"),
        ({"_target_": "reglab.models.vgg"}, "model._target_='reglab.models.vgg' cannot be found"),
        ({"_target_": "nosuch_package.net"}, "model._target_='nosuch_package.net' cannot be found"),
        ({"_target_": 3}, "model._target_=3 must be a dotted path"),
        ({"name": "vgg"}, "model.name='vgg' is not a model; choose one of ["),
        ({"_target_": "reglab.models.mlp", "dropout": 1.0}, "model.dropout=1.0 must be a number in [0, 1)"),
        ({"_target_": "reglab.models.mlp", "widths": "abc"}, "model.widths='abc' must be a list of"),
        ({"_target_": "reglab.models.mlp", "widths": []}, "model.widths=[] must be a non-empty list"),
        ({"_target_": "torchvision.models.resnet18", "progress": "yes"},
         "model.progress='yes' must be true or false"),
        ({"_target_": "torchvision.models.resnet18", "weights": "nope"},
         "model: torchvision.models.resnet18 refused its arguments"),
        ({"_target_": "reglab.models.mlp", "num_classes": 3}, "model.num_classes is set from the data"),
        ({"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2},
         "model._target_=torch.nn.Linear takes no num_classes"),
    ],
)  # fmt: skip
def test_bad_model_configs_are_one_line_naming_the_key(cfg, message):
    assert one_line_error(cfg).startswith(message)


def test_hydra_refuses_dangerous_targets(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("still here")
    msg = one_line_error({"_target_": "os.remove", "path": str(victim)})
    assert msg.startswith("model._target_='os.remove' is refused") and victim.exists()


def test_a_factory_bug_is_not_reported_as_a_config_error():
    with pytest.raises(TypeError, match="colour"):
        build({"_target_": "tests.models.factories.broken"}, (1, 8, 8), 3)
