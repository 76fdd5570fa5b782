"""Every model option on every dataset option: built for the data's shape and run forward once.

A model made for another number of input channels has its first conv rebuilt for the data's
(torchvision's resnet18 on 1-channel digits); any other mismatch would be one line. The datasets
are the small file fixtures of tests/data (the registry's datasets need no files to tell their
shape).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torchvision.datasets import SVHN

from reglab.core.paths import CONF_DIR
from reglab.data import DataModule
from reglab.models import build

from ..data.files import md5_of, write_mnist_family, write_png, write_svhn

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if not p.stem.startswith("_"))


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, tuple[tuple[int, ...], int]]:
    """``{data option: (input_shape, num_classes)}`` as the DataModule reports them."""
    root = tmp_path_factory.mktemp("pairs")
    write_mnist_family(root / "KMNIST" / "raw", n_train=20, n_test=10, gz=False)
    emnist = {
        s: (f"emnist-balanced-{s}-images-idx3-ubyte", f"emnist-balanced-{s}-labels-idx1-ubyte")
        for s in ("train", "test")
    }
    write_mnist_family(root / "EMNIST" / "raw", 47, 47, gz=False, classes=47, names=emnist)
    write_svhn(root, "train", 20), write_svhn(root, "test", 10, seed=1)
    for split in ("train", "test"):
        for c in ("a", "b"):
            write_png(root / "images" / split / c / "0.png", np.zeros((6, 6, 3), np.uint8))
    out = {}
    with pytest.MonkeyPatch.context() as mp:  # these small SVHN files are not the published ones
        for split in ("train", "test"):
            url, name, _ = SVHN.split_list[split]
            mp.setitem(SVHN.split_list, split, [url, name, md5_of(root / name)])
        for data in DATA:
            cfg = compose_train(f"data={data}", f"paths.data_dir={root}", "data.download=false")
            dm = DataModule(**OmegaConf.to_container(cfg.data, resolve=True))
            out[data] = dm.input_shape, dm.num_classes
    return out


def test_every_dataset_option_is_covered(shapes):
    assert set(shapes) == set(DATA) and len(DATA) >= 9
    assert shapes["digits"] == ((1, 8, 8), 10) and shapes["image_folder"] == ((3, 6, 6), 2)
    assert shapes["emnist"][1] == 47 and shapes["svhn"][0] == (3, 32, 32)


@pytest.fixture(scope="module")
def model_cfgs() -> dict:
    return {model: compose_train(f"model={model}").model for model in MODELS}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_model_runs_on_data(model, data, shapes, model_cfgs):
    shape, classes = shapes[data]
    net = build(model_cfgs[model], shape, classes)
    first = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    if isinstance(first, torch.nn.Conv2d):
        assert first.in_channels == shape[0]
    with torch.no_grad():
        assert net.eval()(torch.rand(1, *shape)).shape == (1, classes)
