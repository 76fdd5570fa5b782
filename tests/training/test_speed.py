"""Speed options and multi-process training. Speed itself is measured only by
scripts/benchmark.py (ratios in one run), never asserted here."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from reglab.augment import Augmentation, Pipeline
from reglab.data import DataModule, IndexBatches, Split
from reglab.training.module import Classifier

from ..conftest import FAST, cli, compose_cfg, train


def _classifier(**execution) -> Classifier:
    return Classifier(
        model={"_target_": "reglab.models.cnn", "name": "cnn", "channels": [4], "hidden": 8},
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.2,),
        std=(0.4,),
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        execution=execution,
    )


def test_fused_normalization_equals_the_plain_formula():
    clf = _classifier()
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    expected = (x.float() / 255.0 - 0.2) / 0.4
    torch.testing.assert_close(clf.prepare(x, train=True), expected)
    # With an augmentation in the pipeline the step-by-step path runs; identity gives the same.
    clf.augment = Pipeline({"identity": Augmentation()})
    torch.testing.assert_close(clf.prepare(x, train=True), expected)


def test_index_batches_match_plain_indexing_and_cover_each_rank_once():
    split = Split(torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8), torch.arange(50) % 10)
    seen = []
    for rank in range(2):
        for x, y in IndexBatches(split, 8, shuffle=True, seed=3, rank=rank, world_size=2):
            idx = [int((split.images == xi).flatten(1).all(1).nonzero()[0]) for xi in x]
            assert torch.equal(split.labels[idx], y)
            seen += idx
    assert len(seen) == len(set(seen)) == 50  # disjoint shards, nothing dropped (25 per rank)


@pytest.mark.parametrize("n", [1, 7, 50, 51])
def test_batch_counts_without_drawing_the_permutation_match_the_batches_served(n):
    split = Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))
    for world_size in (1, 2, 3):
        for rank in range(world_size):
            for shuffle in (True, False):
                batches = IndexBatches(
                    split, 4, shuffle=shuffle, seed=1, rank=rank, world_size=world_size
                )
                assert len(batches) == len(list(batches)), (world_size, rank, shuffle)


def test_channels_last_and_tta_run_the_same_network():
    torch.manual_seed(0)
    plain = _classifier().eval()
    fast = _classifier(channels_last=True, tta=True).eval()
    fast.model.load_state_dict(plain.model.state_dict())
    assert fast.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    # TTA: validation logits are the mean over the image and its mirror image.
    seen = {}
    fast.score = lambda sums, logits, y: seen.setdefault("logits", logits)
    batch = (torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), torch.arange(6))
    with torch.no_grad():
        fast.validation_step(batch, 0)
        x = fast.prepare(batch[0], train=False)
        torch.testing.assert_close(seen["logits"], (plain(x) + plain(x.flip(-1))) / 2)


def test_speed_options_train_on_cpu(fake_data_dir, tmp_path):
    s = train(
        [
            *FAST,
            "data=fashion_mnist",
            "model=speednet",
            "model.widths=[8,16]",
            "execution.channels_last=true",
            "execution.tta=true",
            "data.resident=true",
            "+trainer.precision=bf16-mixed",
        ],
        tmp_path,
        fake_data_dir,
    )
    assert s["status"] == "ok" and 0.0 <= s["test/acc"] <= 1.0


def test_resident_data_moves_to_the_trainer_device_once(fake_data_dir):
    dm = DataModule("mnist", data_dir=str(fake_data_dir), resident=True)

    class FakeTrainer:  # the one thing setup reads from the Trainer
        class strategy:
            root_device = torch.device("meta")

    dm.trainer = FakeTrainer()
    dm.setup("fit")
    assert dm.train.images.device.type == "meta" and dm.test.labels.device.type == "meta"


def test_run_options_are_checked(tmp_path):
    from reglab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="execution.tta"):
        train([*FAST, "execution.tta=maybe"], tmp_path)


def test_speedrun_experiment_composes_and_runs(fake_data_dir, tmp_path):
    s = train(
        ["experiment=fashion_mnist_speedrun", "debug=fast", "data.val_fraction=0.1"],
        tmp_path,
        fake_data_dir,
    )
    assert s["model"] == "speednet" and s["techniques"]["augmentation"] == ["crop", "flip"]


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    common = ["trainer.max_epochs=4", "callbacks=none", "logger=csv", "model.widths=[32]"]
    eager = train(common, tmp_path / "eager")
    compiled = train([*common, "execution.compile=true"], tmp_path / "compiled")
    assert compiled["status"] == "ok" and compiled["test/acc"] > 0.5
    assert abs(compiled["test/acc"] - eager["test/acc"]) <= 0.02


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """trainer=ddp_cpu: 2 gloo processes, each with half of every global batch (disjoint shards),
    gradients averaged, metrics reduced across ranks: the same training as 1 process."""
    common = ["trainer.max_epochs=3", "callbacks=none", "seed=5"]
    one = cli("reglab-train", *common, "data.batch_size=64", f"paths.log_dir={tmp_path / 'one'}")
    two = cli(
        "reglab-train",
        *common,
        "trainer=ddp_cpu",
        "data.batch_size=32",
        f"paths.log_dir={tmp_path / 'two'}",
    )
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    (m1,) = (tmp_path / "one").glob("runs/*/metrics.json")
    (m2,) = (tmp_path / "two").glob("runs/*/metrics.json")  # rank 0 only wrote one
    r1, r2 = json.loads(m1.read_text()), json.loads(m2.read_text())
    assert r1["global_step"] == r2["global_step"] > 0
    assert abs(r1["test/acc"] - r2["test/acc"]) <= 0.01
    assert abs(r1["train/loss"] - r2["train/loss"]) <= 0.01 * r1["train/loss"]
    assert abs(r1["val/acc"] - r2["val/acc"]) <= 0.01
    # Each rank validates half of the images; the sums of both are added before the division,
    # so every epoch's val/acc counts whole images of the full validation set.
    cfg = compose_cfg(common, tmp_path / "cfg")
    dm = DataModule(**OmegaConf.to_container(cfg.data, resolve=True), seed=cfg.seed)
    dm.setup("fit")
    n = len(dm.val)
    for row in r2["history"]:
        assert abs(row["val/acc"] * n - round(row["val/acc"] * n)) < 1e-3, (row, n)


def test_cifar10_speedrun_runs_on_cpu_without_compile(fake_data_dir, tmp_path):
    s = train(
        [
            "experiment=cifar10_speedrun",
            "debug=fast",
            "trainer=cpu",
            "execution.compile=false",
            "model.widths=[8,16,16]",
            "data.val_fraction=0.1",
            "data.batch_size=32",
        ],
        tmp_path,
        fake_data_dir,
    )
    assert s["status"] == "ok" and s["data"] == "cifar10" and s["model"] == "speednet"
