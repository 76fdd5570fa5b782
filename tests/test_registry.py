"""Every option of the multi-select technique groups runs through the real config path.

The options are read from Hydra's config search path (``reglab.cli.options``, the same list the
command line accepts) when the tests are collected, so a new YAML file in conf/regularizer or
conf/augmentation is tested the moment it exists, without editing this file. Each option runs
alone and paired with the next option in sorted order (across both groups, wrapping around), on
digits (8x8) and on Fashion-MNIST (28x28, the tiny copy of ``fake_data_dir``), with
``debug=fast`` (one batch of each split).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reglab.cli import options
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR

from .conftest import FAST, cli, train

GROUPS = ("regularizer", "augmentation")
OPTIONS = sorted((g, name) for g in GROUPS for name in options(g))
DATASETS = ("digits", "fashion_mnist")
# A technique that needs another model says so in its ConfigError; the test then retries with the
# smallest model of that kind (matched on the model's name in the message).
FALLBACK_MODELS = {"resnet18": ["model=resnet18", "model.width=8"]}


def cases() -> list:
    out = []
    for data in DATASETS:
        for i, option in enumerate(OPTIONS):
            partner = OPTIONS[(i + 1) % len(OPTIONS)]
            for combo in ((option,), (option, partner)):
                case_id = f"{data}-" + "+".join(f"{g}={n}" for g, n in combo)
                out.append(pytest.param(data, combo, id=case_id))
    return out


def group_overrides(combo) -> list[str]:
    return [
        f"{g}=[{','.join(n for gg, n in combo if gg == g)}]"
        for g in GROUPS
        if any(gg == g for gg, _ in combo)
    ]


def test_options_found():
    names = {g: {n for gg, n in OPTIONS if gg == g} for g in GROUPS}
    assert "none" in names["regularizer"] and "none" in names["augmentation"]
    assert len(names["regularizer"]) > 1 and len(names["augmentation"]) > 1


@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_option_file_shape(group, name):
    """``# comment`` then one entry named after the file (none: empty), as the group expects."""
    path = CONF_DIR / group / f"{name}.yaml"
    assert path.read_text().startswith("#"), f"{path}: start with a one-line comment"
    node = OmegaConf.load(path)
    if name == "none":
        assert not node
    else:
        assert list(node) == [name] and "_target_" in node[name], f"{path}: '{name}: _target_'"


@pytest.mark.parametrize(("data", "combo"), cases())
def test_option_runs(data, combo, tmp_path, fake_data_dir):
    overrides = [*FAST, f"data={data}", *group_overrides(combo)]
    data_dir = fake_data_dir if data != "digits" else None
    try:
        summary = train(overrides, tmp_path, data_dir)
    except ConfigError as e:
        msg = str(e)
        needed = [m for m in FALLBACK_MODELS if m in msg]
        if not needed:
            raise
        # The refusal must be the clear one: one line naming the technique and the way out.
        assert "\n" not in msg, msg
        assert any(n in msg for g, n in combo if n != "none"), msg
        assert f"model={needed[0]}" in msg, msg
        out = tmp_path / needed[0]
        summary = train([*overrides, *FALLBACK_MODELS[needed[0]]], out, data_dir)
        tmp_path = out
    assert summary["status"] == "ok"
    assert 0.0 <= summary["test/acc"] <= 1.0 and math.isfinite(summary["test/loss"])
    assert summary["global_step"] >= 1
    for g in GROUPS:
        expected = sorted({n for gg, n in combo if gg == g and n != "none"})
        assert summary["techniques"][g] == expected
    assert json.loads((Path(tmp_path) / "metrics.json").read_text())["status"] == "ok"


def test_multi_select_from_the_shell(tmp_path):
    techniques = ["regularizer=[l2,dropout]", "augmentation=[affine]"]
    r = cli("reglab-train", *techniques, *FAST, f"paths.log_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    (metrics,) = tmp_path.glob("runs/*/metrics.json")
    summary = json.loads(metrics.read_text())
    assert summary["status"] == "ok"
    assert summary["techniques"] == {"regularizer": ["dropout", "l2"], "augmentation": ["affine"]}
    assert summary["name"] == "dropout+l2+affine"
    hydra_cfg = OmegaConf.load(metrics.parent / ".hydra" / "config.yaml")
    assert set(hydra_cfg.regularizer) == {"l2", "dropout"}
    assert hydra_cfg.augmentation.affine.degrees == 10.0
