"""The DataModule (its checks, splits and loaders), batching by index, and the data configs."""

import inspect

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reglab.core.checks import check_kwargs
from reglab.core.errors import ConfigError
from reglab.core.paths import CONF_DIR
from reglab.data import DataModule, IndexBatches, Split, balanced_subset, split_indices
from reglab.data import module as module_py

from .files import write_png

# ----------------------------------------------------------------------------- splits


def test_split_is_disjoint_seeded_and_stratified():
    labels = torch.arange(1000) % 10
    tr, va = split_indices(labels, 0.2, seed=0)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 1000
    assert torch.bincount(labels[va]).tolist() == [20] * 10
    tr2, va2 = split_indices(labels, 0.2, seed=0)
    tr3, _ = split_indices(labels, 0.2, seed=1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and not torch.equal(tr, tr3)


def test_folds_partition_the_training_set():
    labels = torch.arange(500) % 10
    vals = [split_indices(labels, 0.1, 0, num_folds=5, fold=k)[1] for k in range(5)]
    allv = torch.cat(vals).sort().values
    assert torch.equal(allv, torch.arange(500))
    for k in range(5):
        tr, va = split_indices(labels, 0.1, 0, num_folds=5, fold=k)
        assert len(set(tr.tolist()) & set(va.tolist())) == 0


def test_train_subset_is_balanced_seeded_and_disjoint_from_val():
    dm = DataModule("digits", train_subset=50, split_seed=0)
    dm.setup()
    assert (
        len(dm.train) == 50 and torch.bincount(dm.train.labels, minlength=10).tolist() == [5] * 10
    )
    train_rows = {tuple(x.flatten().tolist()) for x in dm.train.images}
    val_rows = {tuple(x.flatten().tolist()) for x in dm.val.images}
    assert (
        not (train_rows & val_rows) or len(train_rows & val_rows) < 3
    )  # digits has a few duplicates
    again = DataModule("digits", train_subset=50, split_seed=0)
    again.setup()
    assert torch.equal(dm.train.images, again.train.images)
    labels = torch.arange(100) % 10
    assert not torch.equal(balanced_subset(labels, 20, 10, 0), balanced_subset(labels, 20, 10, 1))


def test_digits_test_pool_is_fixed_and_never_trained_or_validated_on():
    # The paired seeds of a comparison re-draw train/val; the test pool must stay out of all of
    # them (digits has no duplicate images, so bytes identify an example).
    tests, vals, seen = [], [], set()
    for split_seed in (0, 1, 2, 3, 7):
        dm = DataModule("digits", split_seed=split_seed, seed=split_seed, val_fraction=0.25)
        dm.setup()
        tests.append(dm.test.images)
        vals.append(dm.val.images)
        assert len(dm.train) + len(dm.val) + len(dm.test) == 1797
        seen |= {x.numpy().tobytes() for split in (dm.train, dm.val) for x in split.images}
    assert all(torch.equal(tests[0], t) for t in tests[1:])
    assert not seen & {x.numpy().tobytes() for x in tests[0]}
    assert not torch.equal(vals[0], vals[1])  # train/val did move between seeds


# ----------------------------------------------------------------------------- batches


def test_ddp_shards_are_disjoint_and_equal():
    split = Split(torch.zeros(103, 1, 2, 2, dtype=torch.uint8), torch.arange(103))
    seen = []
    for rank in range(2):
        loader = IndexBatches(split, 10, shuffle=True, seed=5, rank=rank, world_size=2)
        seen.append(torch.cat([y for _, y in loader]))
    assert len(seen[0]) == len(seen[1]) == 51  # 103 // 2: equal shards, tail dropped
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_batches_cover_every_example_once_per_epoch():
    split = Split(torch.zeros(25, 1, 2, 2, dtype=torch.uint8), torch.arange(25))
    loader = IndexBatches(split, 8, shuffle=True)
    e1, e2 = torch.cat([y for _, y in loader]), torch.cat([y for _, y in loader])
    assert sorted(e1.tolist()) == list(range(25)) and not torch.equal(e1, e2)
    assert len(loader) == 4


def test_steps_per_item_groups_training_batches_only():
    dm = DataModule("digits", batch_size=32)
    assert (
        dm.steps_per_item == 1
        and "steps_per_execution" not in inspect.signature(DataModule).parameters
    )
    dm.setup()
    one = [y for _, y in dm.train_dataloader()]
    dm.steps_per_item = 3
    loader = dm.train_dataloader()
    three = [y for _, y in loader]
    assert loader.steps == 3 and len(three) == -(-len(one) // 3)
    assert torch.equal(torch.cat(one), torch.cat(three))  # same batches, same order
    assert dm.val_dataloader().steps == 1 and all(t.steps == 1 for t in dm.test_dataloader())


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"train_subset": 5}, "train_subset"),
        ({"num_folds": 5, "fold": 5}, "fold"),
        ({"batch_size": 0}, "batch_size"),
        ({"name": "svhn"}, "svhn"),
    ],
)
def test_bad_data_config_is_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DataModule(**{"name": "digits", **kwargs})


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("batch_size", 0, r"^data.batch_size=0 must be an integer > 0$"),
        ("eval_batch_size", 0, r"^data.eval_batch_size=0 must be an integer > 0$"),
        ("batch_size", 12.5, r"^data.batch_size=12.5 must be an integer"),
        ("val_fraction", 0.0, r"^data.val_fraction=0.0 must be a number in \(0, 1\)$"),
        ("val_fraction", "x", r"^data.val_fraction='x' must be a number"),
        ("train_subset", 0, r"^data.train_subset=0 must be an integer > 0$"),
        ("train_subset", 9, r"^data.train_subset=9 is smaller than the 10 classes of digits"),
        ("num_folds", 1, r"^data.num_folds=1 must be an integer >= 2$"),
        ("fold", -1, r"^data.fold=-1 must be an integer >= 0$"),
        ("split_seed", -1, r"^data.split_seed=-1 must be an integer >= 0$"),
        ("seed", "a", r"^seed='a' must be an integer$"),
        ("train_eval_size", 0, r"^data.train_eval_size=0 must be an integer > 0$"),
        ("download", "yes", r"^data.download='yes' must be true or false$"),
        ("resident", 1, r"^data.resident=1 must be true or false$"),
        ("verify_checksums", None, r"^data.verify_checksums=None must be true or false$"),
        ("data_dir", 3, r"^data.data_dir=3 must be a path$"),
        ("name", "", r"^data.name='' must be a non-empty string$"),
        ("image_folder", 5, r"^data.image_folder=5 must be a path$"),
    ],
)
def test_each_key_names_itself(key, value, match):
    with pytest.raises(ConfigError, match=match):
        DataModule(**{"name": "digits", key: value})


def test_fold_range_names_the_fold():
    with pytest.raises(ConfigError, match=r"^data.fold=3 must be an integer in \[0, 2\]$"):
        DataModule("digits", num_folds=3, fold=3)
    assert DataModule("digits", num_folds=3, fold=2).fold == 2


def test_train_subset_larger_than_data_is_rejected():
    dm = DataModule("digits", train_subset=5000)
    with pytest.raises(ConfigError, match="larger than"):
        dm.setup()


def test_train_subset_is_checked_against_classes_counted_from_the_files(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c in "abc":
            for i in range(n):
                write_png(tmp_path / split / c / f"{i}.png", np.zeros((4, 4), np.uint8))
    dm = DataModule("abc", str(tmp_path), image_folder=str(tmp_path), train_subset=2)
    with pytest.raises(
        ConfigError, match=r"data.train_subset=2 is smaller than the 3 classes of abc"
    ):
        dm.setup()


def test_a_folder_dataset_is_read_once(tmp_path, monkeypatch):
    for split, n in (("train", 10), ("test", 2)):
        for c in "ab":
            for i in range(n):
                write_png(tmp_path / split / c / f"{i}.png", np.full((4, 4), 9 * i, np.uint8))
    reads, real_load = [], module_py.load

    def counting_load(*args, **kwargs):
        reads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(module_py, "load", counting_load)
    dm = DataModule("ab", str(tmp_path), image_folder=str(tmp_path), val_fraction=0.2)
    assert dm.num_classes == 2 and dm.input_shape == (1, 4, 4) and len(dm.mean) == 1
    dm.setup()
    dm.setup()
    assert len(reads) == 1 and len(dm.train) == 16 and len(dm.val) == 4 and len(dm.test) == 4
    assert dm.mean[0] > 0 and dm.std[0] > 0


# ----------------------------------------------------------------------------- the data configs


def _compose(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.data, resolve=False)


def _data_options():
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("option", _data_options())
def test_every_data_file_composes_and_builds(option, tmp_path):
    data = _compose(f"data={option}")
    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "_base.yaml"))
    assert set(base) - {"name"} <= set(data) and data["name"] == option
    data["data_dir"] = str(tmp_path)
    check_kwargs(DataModule.__init__, data, "data")
    dm = DataModule(**data)
    assert dm.steps_per_item == 1 and dm.name == option


def test_shared_keys_are_written_once_and_a_file_still_overrides_them():
    assert _compose("data=cifar10")["eval_batch_size"] == 256  # cifar10.yaml over _base.yaml
    assert _compose("data=mnist")["eval_batch_size"] == 1024
    assert _compose("data=cifar10", "data.eval_batch_size=64")["eval_batch_size"] == 64
    shared = {
        "data_dir",
        "batch_size",
        "val_fraction",
        "split_seed",
        "train_subset",
        "num_folds",
        "fold",
        "download",
        "resident",
        "verify_checksums",
    }
    for option in _data_options():
        text = (CONF_DIR / "data" / f"{option}.yaml").read_text()
        assert "defaults: [_base, _self_]" in text
        assert not [k for k in shared if f"\n{k}:" in text], option
