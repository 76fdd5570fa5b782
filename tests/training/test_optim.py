"""Optimizers and schedulers by YAML (reglab.training.optim): any torch.optim class."""

import pytest
import torch

from reglab.core.errors import ConfigError
from reglab.training.optim import build_optimizer, build_scheduler, param_groups

from ..conftest import FAST, train

NET = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def test_weight_decay_spares_biases_and_norm_parameters():
    decay, no_decay = param_groups(NET, 0.1)
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(NET.parameters()))
    (only,) = param_groups(NET, 0.0)  # no decay: one group, one kernel call
    assert len(only["params"]) == len(list(NET.parameters()))


def test_any_torch_optimizer_by_target_with_fused_kernels_where_they_exist():
    adam = build_optimizer({"_target_": "torch.optim.Adam", "lr": 1e-3}, NET)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["fused"]
    rms = build_optimizer({"_target_": "torch.optim.RMSprop", "lr": 1e-3, "weight_decay": 0.1}, NET)
    assert isinstance(rms, torch.optim.RMSprop) and len(rms.param_groups) == 2


def test_scheduler_length_is_filled_from_the_run():
    opt = build_optimizer({"_target_": "torch.optim.SGD", "lr": 0.1}, NET)
    cos = build_scheduler(
        {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": None},
        opt,
        steps=40,
        epochs=4,
    )
    assert cos["interval"] == "step" and cos["scheduler"].T_max == 40
    step = build_scheduler(
        {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2, "interval": "epoch"},
        opt,
        steps=40,
        epochs=4,
    )
    assert step["interval"] == "epoch" and step["scheduler"].step_size == 2
    assert build_scheduler({}, opt, steps=40, epochs=4) is None


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"lr": 1e-3}, "optimizer has no _target_"),
        ({"_target_": "torch.optim.Nope", "lr": 1e-3}, "optimizer._target_=torch.optim.Nope"),
        (
            {"_target_": "torch.optim.Adam", "lr": 1e-3, "momentun": 0.9},
            "optimizer=Adam: .*momentun",
        ),
    ],
)
def test_bad_optimizer_config_is_one_line(cfg, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_optimizer(cfg, NET)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "optimizer, scheduler", [("nadam", "step"), ("sgd", "onecycle"), ("adamw", "cosine")]
)
def test_optimizer_and_scheduler_files_train(tmp_path, optimizer, scheduler):
    s = train(
        [
            "trainer.max_epochs=2",
            "callbacks=none",
            "logger=csv",
            f"optimizer={optimizer}",
            f"scheduler={scheduler}",
        ],
        tmp_path,
    )
    assert s["status"] == "ok" and s["train/loss"] < s["history"][0]["train/loss"] * 1.5


def test_a_scheduler_steps_the_learning_rate(tmp_path):
    """StepLR with step_size=1 and gamma=0.1 over 3 epochs: the final lr is lr * 0.01."""
    from reglab.training.assemble import build, build_trainer

    from ..conftest import compose_cfg

    cfg = compose_cfg(
        [*FAST[1:], "trainer.max_epochs=3", "scheduler=step", "scheduler.step_size=1"], tmp_path
    )
    dm, model = build(cfg)
    trainer = build_trainer(cfg, dm, model)
    trainer.fit(model, datamodule=dm)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(cfg.optimizer.lr * 0.1**3)
