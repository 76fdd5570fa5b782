"""``reglab.models.build``: a model config names its factory by ``_target_``, so a model can be
added by a YAML file alone; every model takes every dataset's input (a first conv rebuilt for its channels) or is refused in one line; bad configs
fail in one line naming the key. The model-level techniques act on any built model."""

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
TARGETS = {n: OmegaConf.load(CONF_DIR / "model" / f"{n}.yaml")._target_ for n in YAMLS}
OURS = [n for n in YAMLS if TARGETS[n].startswith("reglab.models.")]
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


def test_model_yamls_hold_the_architecture_only():
    assert set(OURS) == set(MODELS)  # every reglab model has its YAML
    for name in YAMLS:
        cfg = model_cfg(f"model={name}")
        assert cfg.name == name
        # Techniques and how a run executes are not model keys.
        assert not {"dropout", "input_dropout", "batch_norm", "activation_noise"} & set(cfg)
        assert not {"stochastic_depth", "channels_last", "compile", "tta"} & set(cfg)
        size = cfg.get("_size_")
        if name in OURS:  # reglab's models say which arguments are their size
            assert size.width and all(key in cfg for key in size.width)
            assert size.get("depth") is None or size.depth in cfg


@pytest.mark.parametrize("name", YAMLS)
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


def test_the_name_is_a_label_when_there_is_a_target():
    model = build({"_target_": "reglab.models.mlp", "name": "my_mlp", "widths": [4]}, (1, 8, 8), 2)
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)] == [4, 2]


# ----------------------------------------------------------------------------- the data's input


def test_torchvision_resnet18_takes_one_channel_digits():
    cfg = model_cfg("model=torchvision_resnet18")
    model = build(cfg, (1, 8, 8), 10)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.training  # the check's forward pass runs in eval mode, then puts it back
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_a_model_that_cannot_take_the_data_is_one_line():
    msg = one_line_error({"_target_": "tests.models.factories.fixed", "name": "fixed"}, (1, 8, 8))
    assert msg.startswith("model fixed cannot take the data's inputs of shape (1, 8, 8): ")
    cfg = {"_target_": "torchvision.models.resnet18", "num_classes": 10}
    assert (
        one_line_error(cfg) == "model.num_classes is set from the data; remove it from the config"
    )


# ----------------------------------------------------------------------------- technique hooks


def with_techniques(techniques, cfg, shape=(1, 28, 28)) -> torch.nn.Module:
    """The model the LitModule builds: config hooks, ``build``, then the model hooks."""
    cfg = OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else dict(cfg)
    label = cfg.get("name") or cfg["_target_"]
    for t in techniques:
        cfg = t.model_config(cfg)
    model = build(cfg, shape, 10)
    for t in techniques:
        model = t.model(model, label)
    return model


def kinds(model: torch.nn.Module, cls) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, cls)]


@pytest.mark.parametrize("name", OURS)
def test_model_techniques_act_on_every_reglab_model(name):
    techniques = [R.Dropout(0.3, 0.1), R.ActivationNoise(0.2), R.SmallModel()]
    model = with_techniques(techniques, model_cfg(f"model={name}"))
    activations = len(kinds(build(model_cfg(f"model={name}"), (1, 28, 28), 10), R.ACTIVATIONS))
    assert [m.p for m in kinds(model, torch.nn.Dropout)][0] == 0.1  # the input, first
    assert sum(m.p == 0.3 for m in kinds(model, torch.nn.Dropout)) >= 1
    assert len(kinds(model, R.GaussianNoise)) == len(kinds(model, torch.nn.Dropout)) - 1
    full = build(model_cfg(f"model={name}"), (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    if name != "resnet18":  # resnet18 reuses no activation module; every one gets its dropout
        assert len(kinds(model, R.GaussianNoise)) <= activations
    x = torch.randn(4, 1, 28, 28)
    assert model.eval()(x).shape == (4, 10)


def test_model_techniques_reach_a_model_brought_by_target():
    cfg = model_cfg("model=torchvision_resnet18")
    torch.manual_seed(0)
    plain = build(cfg, (3, 32, 32), 10).eval()
    torch.manual_seed(0)
    model = with_techniques([R.Dropout(0.3, 0.1), R.StochasticDepth(0.5)], cfg, (3, 32, 32))
    # torchvision's blocks reuse one ReLU module twice: it gets one dropout, used after both.
    assert len(kinds(model, torch.nn.Dropout)) == 1 + len(kinds(plain, torch.nn.ReLU))
    assert len(kinds(model, R.DropPath)) == 7  # 8 blocks; the first one's rate is 0
    # The same weights (bn2 is wrapped with its DropPath: its keys gain a level), and in eval
    # mode the same function.
    mine, theirs = list(model.parameters()), list(plain.parameters())
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model.eval()(x), plain(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_batch_norm_goes_where_a_model_has_none():
    model = with_techniques([R.BatchNorm()], {"_target_": "tests.models.factories.net"})
    assert isinstance(model.conv, torch.nn.Sequential)  # wrapped: conv, then its BatchNorm
    assert isinstance(model.conv[1], torch.nn.BatchNorm2d) and model.conv[1].num_features == 4
    mlp = with_techniques([R.BatchNorm()], model_cfg("model=mlp"))
    names = [n for n, m in mlp.named_children()]
    assert names == ["0", "1", "1_bn", "2", "3", "3_bn", "4", "5"]  # before each activation


@pytest.mark.parametrize(
    "technique, model, message",
    [
        (
            R.BatchNorm(),
            "torchvision_resnet18",
            "regularizer=batch_norm: model torchvision_resnet18 has no hidden Linear/Conv layer "
            "without a norm after it (each is normalized already)",
        ),
        (R.BatchNorm(), "resnet18", "regularizer=batch_norm: model resnet18 has no hidden"),
        (
            R.StochasticDepth(0.1),
            "cnn",
            "regularizer=stochastic_depth: model cnn has no residual blocks (reglab's, torchvision's "
            "BasicBlock/Bottleneck) to drop: use model=resnet18 or torchvision_resnet18",
        ),
        (
            R.SmallModel(),
            "torchvision_resnet18",
            "regularizer=small_model: model torchvision_resnet18 does not say which arguments are "
            "its size: give its config a _size_ entry, e.g. _size_: {width: [widths], depth: "
            "widths}",
        ),
    ],
)
def test_a_technique_with_nothing_to_act_on_is_one_line(technique, model, message):
    with pytest.raises(ConfigError) as e:
        with_techniques([technique], model_cfg(f"model={model}"))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_refusals_of_a_users_model_name_what_it_lacks():
    cfg = {"_target_": "tests.models.factories.linear", "name": "linear"}
    for technique, lacks in [
        (R.Dropout(), "hidden activation layer"),
        (R.ActivationNoise(), "hidden activation layer"),
        (R.BatchNorm(), "hidden Linear/Conv layer"),
    ]:
        with pytest.raises(ConfigError, match=f"model linear has no {lacks}"):
            with_techniques([technique], cfg)
    # Input dropout alone needs no hidden layer.
    model = with_techniques([R.Dropout(p=0.0, input_p=0.2)], cfg)
    assert [m.p for m in kinds(model, torch.nn.Dropout)] == [0.2]
    bad = {**cfg, "_size_": {"width": ["hidden"]}}
    with pytest.raises(ConfigError, match="model._size_ names hidden, which model linear does not"):
        with_techniques([R.SmallModel()], bad)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "cfg, message",
    [
        (
            {"_target_": "torchvision.models.resnet18", "foo": 1},
            "model.foo is not an argument of torchvision.models.resnet18",
        ),
        (
            {"_target_": "reglab.models.mlp", "foo": 1},
            "model.foo is not an argument of reglab.models.mlp",
        ),
        (
            {"_target_": "reglab.models.mlp_5x500", "foo": 1},
            "model.foo is not an argument of reglab.models.mlp_5x500",
        ),
        ({"_target_": "reglab.models.vgg"}, "model._target_='reglab.models.vgg' cannot be found"),
        ({"_target_": "nosuch_package.net"}, "model._target_='nosuch_package.net' cannot be found"),
        ({"_target_": 3}, "model._target_=3 must be a dotted path"),
        ({"name": "vgg"}, "model (name='vgg') has no _target_"),
        (
            {"_target_": "reglab.models.mlp", "dropout": 0.5},
            "model.dropout is not an argument of reglab.models.mlp",
        ),
        (
            {"_target_": "reglab.models.mlp", "widths": "abc"},
            "model.widths='abc' must be a list of",
        ),
        (
            {"_target_": "reglab.models.mlp", "widths": []},
            "model.widths=[] must be a non-empty list",
        ),
        (
            {"_target_": "torchvision.models.resnet18", "progress": "yes"},
            "model.progress='yes' must be true or false",
        ),
        (
            {"_target_": "torchvision.models.resnet18", "weights": "nope"},
            "model: torchvision.models.resnet18 refused its arguments",
        ),
        (
            {"_target_": "reglab.models.mlp", "num_classes": 3},
            "model.num_classes is set from the data",
        ),
        (
            {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2},
            "model._target_=torch.nn.Linear takes no num_classes",
        ),
    ],
)
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
