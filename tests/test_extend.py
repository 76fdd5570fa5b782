"""The README's "Extend reglab" recipes, followed to the letter: each adds one YAML file (and, for
a technique, one class) and trains with it. The files go to a temporary folder on Hydra's search
path instead of conf/, so that parallel tests never see them; a user puts them in conf/<group>/.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reglab.regularizers import Technique

from .conftest import train

RUN = ["trainer.max_epochs=2", "callbacks=none", "logger=csv"]


def with_files(tmp_path, files: dict[str, str]) -> list[str]:
    root = tmp_path / "conf"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return [f"hydra.searchpath=[file://{root}]"]


# ----------------------------------------------------------------------------- a technique


class LastLayerL2(Technique):
    """Recipe technique: ``strength * sum(w^2)`` of the last layer's weights, through the
    ``penalty`` hook."""

    calls = 0

    def __init__(self, strength: float = 1.0):
        self.strength = strength

    def penalty(self, model: nn.Module) -> torch.Tensor:
        LastLayerL2.calls += 1
        last = [p for p in model.parameters() if p.ndim >= 2][-1]
        return self.strength * last.pow(2).sum()


def test_recipe_technique(tmp_path):
    extra = with_files(
        tmp_path,
        {
            "regularizer/last_layer_l2.yaml": (
                "last_layer_l2:\n  _target_: tests.test_extend.LastLayerL2\n  strength: 1.0\n"
            )
        },
    )
    base = train([*RUN, *extra], tmp_path / "base")
    LastLayerL2.calls = 0
    s = train([*RUN, *extra, "regularizer=[last_layer_l2]"], tmp_path / "tech")
    assert s["techniques"]["regularizer"] == ["last_layer_l2"] and s["name"] == "last_layer_l2"
    assert LastLayerL2.calls == s["global_step"] > 0  # once per training step
    assert s["weights/l2"] < base["weights/l2"]  # it acted on the weights


# ----------------------------------------------------------------------------- a model


def tiny_net(input_shape, num_classes, hidden: int = 16) -> nn.Module:
    """Recipe model: any factory of ``input_shape`` and ``num_classes``."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))  # fmt: skip


def test_recipe_model(tmp_path):
    extra = with_files(
        tmp_path,
        {"model/tiny.yaml": ("_target_: tests.test_extend.tiny_net\nname: tiny\nhidden: 24\n")},
    )
    s = train([*RUN, *extra, "model=tiny"], tmp_path / "run")
    assert s["status"] == "ok" and s["model"] == "tiny"
    assert s["test/acc"] > 0.15  # it learned: 10 classes, chance is 0.1


# ----------------------------------------------------------------------------- an optimizer


def test_recipe_optimizer(tmp_path):
    extra = with_files(
        tmp_path,
        {
            "optimizer/rmsprop.yaml": (
                "_target_: torch.optim.RMSprop\n_partial_: true\nlr: 1.0e-3\nweight_decay: 1.0e-4\n"
            )
        },
    )
    from reglab.training.assemble import build, build_trainer

    from .conftest import compose_cfg

    cfg = compose_cfg([*RUN, *extra, "optimizer=rmsprop"], tmp_path / "run")
    dm, model = build(cfg)
    trainer = build_trainer(cfg, dm, model)
    trainer.fit(model, datamodule=dm)
    (opt,) = trainer.optimizers
    assert isinstance(opt, torch.optim.RMSprop)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]  # not on biases
    assert trainer.callback_metrics["val/acc"] > 0.3


# ----------------------------------------------------------------------------- a dataset


def test_recipe_dataset_from_a_folder_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for split, n in (("train", 40), ("test", 12)):
        for label, row in (("bar_top", 2), ("bar_bottom", 9)):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 40, (12, 12), dtype=np.uint8)
                pixels[row : row + 2] = 250
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    extra = with_files(
        tmp_path,
        {
            "data/shapes.yaml": (
                f"defaults: [_base, _self_]\nname: shapes\nimage_folder: {root}\nbatch_size: 16\n"
            )
        },
    )
    s = train([*RUN, *extra, "data=shapes", "trainer.max_epochs=5"], tmp_path / "run")
    assert s["status"] == "ok" and s["data"] == "shapes"
    assert s["test/acc"] > 0.9  # two classes a bar apart: learned, not guessed
