"""Augmentations: per-sample randomness, training batches only, shape/dtype/device, ZCA whitens.

Every YAML in conf/augmentation is discovered here, so a new augmentation is held to the same
per-sample and train-only claims without editing this file.
"""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reglab.augment import Augmentation, RandAugment, TrivialAugment, Zca
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR
from reglab.core.technique import Technique, overrides
from reglab.train import build
from reglab.training.module import Classifier

from .conftest import compose_cfg, train

NAMES = sorted(p.stem for p in (CONF_DIR / "augmentation").glob("*.yaml") if p.stem != "none")
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]  # digits, MNIST family, CIFAR
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make(name: str, **overrides) -> Augmentation:
    node = OmegaConf.load(CONF_DIR / "augmentation" / f"{name}.yaml")[name]
    node.pop("_search_", None)  # the tuning protocol's search space, not a constructor argument
    return instantiate(OmegaConf.merge(node, overrides))


def random_names() -> list[str]:
    return [n for n in NAMES if make(n).train_only]


def data_cfg(name: str) -> dict:
    """What ``data=NAME`` says about itself (its YAML over conf/data/_base.yaml)."""
    base = OmegaConf.load(CONF_DIR / "data" / "_base.yaml")
    own = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
    own.pop("defaults", None)
    return {"mirror_safe": base.mirror_safe, **OmegaConf.to_container(own)}


def classifier(
    augmentation: dict | None, data: str = "digits", shape=(1, 8, 8), regularizer=None
) -> Classifier:
    return Classifier(
        model={"_target_": "reglab.models.mlp", "name": "mlp", "widths": [16]},
        input_shape=shape,
        num_classes=10,
        mean=(0.5,) * shape[0],
        std=(0.25,) * shape[0],
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        augmentation=augmentation,
        regularizer=regularizer,
        data=data_cfg(data),
    )


def test_every_option_listed_in_the_issue_exists():
    expected = {"flip", "crop", "affine", "random_erasing", "zca"}
    assert expected <= set(NAMES)
    assert {"randaugment", "trivialaugment"} & set(NAMES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", random_names())
def test_identical_samples_get_different_random_parameters(name, shape, device):
    torch.manual_seed(0)
    aug = make(name).to(device)
    one = torch.rand(1, *shape, device=device)
    x = one.expand(32, *shape).contiguous()
    y = aug(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.equal(x, one.expand_as(x)), "the input batch must not be modified in place"
    distinct = torch.unique(y.flatten(1).cpu(), dim=0)
    # One draw for the whole batch would give one distinct output (two for a flip's p).
    assert len(distinct) >= 2, f"{name}: all 32 identical samples came out identical"
    assert ((y - x).flatten(1).abs().amax(1) > 1e-6).any()


@pytest.mark.parametrize("aug_cls", [RandAugment, TrivialAugment])
def test_auto_augment_chooses_the_operation_per_sample(aug_cls):
    """kornia's own RandAugment/TrivialAugment pick the operation once per batch: a batch that
    drew equalize or auto-contrast (no magnitude), or RandAugment's fixed magnitude with a random
    sign, turns 32 identical samples into at most a handful of distinct outputs. Over 20 batches
    that happens almost surely; with the operation chosen per sample it never does."""
    torch.manual_seed(0)
    aug = aug_cls()
    x = torch.rand(1, 3, 8, 8).expand(32, -1, -1, -1).contiguous()
    counts = [len(torch.unique(aug(x).flatten(1), dim=0)) for _ in range(20)]
    assert min(counts) > 8, counts


@pytest.mark.parametrize("name", NAMES)
def test_validation_and_test_batches_untouched(name):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    plain = classifier(None)
    model = classifier(
        {
            name: OmegaConf.to_container(
                OmegaConf.load(CONF_DIR / "augmentation" / f"{name}.yaml")[name]
            )
        }
    )
    step = model.augment.steps[name]
    if overrides(step, "fit"):  # in the representation its stage sees
        images = torch.rand(500, 1, 8, 8)
        step.fit((images - model.mean) / model.std if step.stage == "normalized" else images)
    if model.augment.steps[name].train_only:
        # The same eval batch twice, and the same as with no augmentation at all (up to rounding:
        # without augmentation, prepare fuses /255 and normalization into one multiply-add).
        assert torch.equal(model.prepare(x, train=False), model.prepare(x, train=False))
        assert torch.allclose(
            model.prepare(x, train=False), plain.prepare(x, train=False), atol=1e-5
        )
        assert not torch.allclose(
            model.prepare(x, train=True), plain.prepare(x, train=True), atol=1e-3
        )
    else:
        # A fitted preprocessing (ZCA): every split sees the same deterministic transform.
        out = model.prepare(x, train=False)
        assert torch.equal(out, model.prepare(x, train=True))
        assert not torch.allclose(out, plain.prepare(x, train=False))


def covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    x = x - x.mean(0)
    return x.T @ x / (len(x) - 1)


def test_zca_makes_the_training_covariance_identity():
    torch.manual_seed(0)
    d = 48  # (3, 4, 4) images with strongly correlated pixels
    mixing = torch.randn(d, d) + 3 * torch.eye(d)
    train = (torch.randn(4000, d) @ mixing).view(-1, 3, 4, 4)
    assert (covariance(train) - torch.eye(d)).abs().max() > 1.0
    zca = Zca(eps=1e-6)
    zca.fit(train)
    white = zca(train)
    assert white.shape == train.shape and white.dtype == train.dtype
    assert (covariance(white) - torch.eye(d, dtype=torch.float64)).abs().max() < 1e-3


def test_zca_fitted_once_on_training_split_and_carried_by_checkpoint(tmp_path):
    """Through the real path: on_fit_start fits ZCA on the training split; the whitened training
    batch is decorrelated; a fresh Classifier loaded from the state dict whitens identically."""
    cfg = compose_cfg(["debug=fast", "augmentation=[zca]", "augmentation.zca.eps=1e-2"], tmp_path)
    dm, model = build(cfg)
    trainer = pl.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    zca = model.augment.steps["zca"].zca
    assert zca.fitted and zca.transform_matrix.shape == (64, 64)
    before = covariance((dm.train.images.float() / 255 - model.mean) / model.std)
    after = covariance(model.prepare(dm.train.images, train=True))
    off = ~torch.eye(64, dtype=torch.bool)
    assert after[off].abs().mean() < 0.1 * before[off].abs().mean()
    assert after.diagonal().max() <= 1.0 + 1e-3  # eigenvalues lambda / (lambda + eps) < 1

    state = model.state_dict()
    assert "augment.steps.zca.zca.transform_matrix" in state
    _, fresh = build(cfg)
    fresh.load_state_dict(state)
    x = dm.train.images[:16]
    assert torch.allclose(fresh.prepare(x, train=False), model.prepare(x, train=False))


def test_zca_before_fit_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before fit"):
        Zca()(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("data", "warns"),
    [
        ("digits", True),
        ("mnist", True),
        ("emnist", True),
        ("kmnist", True),
        ("svhn", True),
        ("fashion_mnist", False),
        ("cifar10", False),
        ("cifar100", False),
    ],
)
def test_flip_warns_where_the_data_says_it_is_not_mirror_safe(data, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier({"flip": {"_target_": "reglab.augment.Flip"}}, data=data)
    flips = [w for w in caught if "flip" in str(w.message)]
    assert bool(flips) == warns
    if warns:
        assert data in str(flips[0].message) and "data.mirror_safe=false" in str(flips[0].message)


class Seen(Augmentation):
    """Records what its batch hook saw: its stage, the value range, whether y came."""

    def __init__(self, label: str, log: list, stage: str = "normalized", **attrs):
        super().__init__()
        self.label, self.log, self.stage = label, log, stage
        self.__dict__.update(attrs)

    def batch(self, x, y):
        self.log.append((self.label, round(float(x.min()), 3), round(float(x.max()), 3), y is None))
        return x, y


def test_augmentations_and_batch_techniques_share_one_hook_in_order():
    """/255 -> augmentations on [0, 1] -> normalize -> ZCA -> the regularizers' batch hooks, in
    one loop over Technique.batch; evaluation runs only the hooks that are not train_only."""
    log: list = []
    clf = classifier(None)  # mean 0.5, std 0.25: [0, 1] becomes [-2, 2]
    clf.augment.steps["flip"] = make("flip")  # a real augmentation is a technique too
    clf.augment.steps["pixels"] = Seen("pixels", log, stage="pixels")
    clf.augment.steps["zca_like"] = Seen("zca_like", log, train_only=False)
    clf.techniques = {"mix": Seen("mix", log, needs_targets=True), "noise": Seen("noise", log)}
    assert all(isinstance(t, Technique) for t in clf.augment.steps.values())
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 0, 0] = 255
    clf.step_loss(x, torch.arange(4))
    assert log == [
        ("pixels", 0.0, 1.0, False),
        ("zca_like", -2.0, 2.0, False),
        ("mix", -2.0, 2.0, False),
        ("noise", -2.0, 2.0, False),
    ]
    log.clear()
    clf.prepare(x, train=True)  # inputs only (for display): the target-mixing hook is skipped
    assert [entry[0] for entry in log] == ["pixels", "zca_like", "noise"]
    log.clear()
    clf.prepare(x, train=False)
    assert log == [("zca_like", -2.0, 2.0, True)]


def test_crop_padding_scales_with_image_size():
    crop = make("crop")
    assert [crop.padding_for(h) for h in (8, 28, 32)] == [1, 3, 4]
    assert make("crop", padding=2).padding_for(8) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("augmentation.flip.p=1.5", "augmentation.flip.p"),
        ("augmentation.affine.degrees=-5", "augmentation.affine.degrees"),
        ("augmentation.affine.zoom=1.0", "augmentation.affine.zoom"),
        ("augmentation.affine.padding_mode=wrap", "augmentation.affine.padding_mode"),
        ("augmentation.crop.padding=-1", "augmentation.crop.padding"),
        ("augmentation.random_erasing.scale=[0.5,0.1]", "augmentation.random_erasing.scale"),
        ("augmentation.zca.eps=0", "augmentation.zca.eps"),
        ("augmentation.randaugment.magnitude=40", "augmentation.randaugment.magnitude"),
        ("augmentation.randaugment.num_ops=0", "augmentation.randaugment.num_ops"),
    ],
)
def test_bad_knobs_are_one_line_config_errors(override, key, tmp_path):
    group = key.split(".")[1]
    cfg = compose_cfg([f"augmentation=[{group}]", override], tmp_path)
    with pytest.raises(ConfigError) as err:
        build(cfg)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_zca_with_weight_averaging(tmp_path, averaging):
    """EMA's and SWA's averaged copy is made before ZCA is fitted; both must hold the same
    buffers, or swapping them fails (found by the comparison's cocktail stage)."""
    s = train(
        [
            "trainer.max_epochs=4",
            "callbacks=none",
            "logger=csv",
            f"regularizer=[batch_norm,{averaging}]",
            "augmentation=[zca]",
        ],
        tmp_path,
    )
    assert s["status"] == "ok" and s["test/acc"] > 0.3
