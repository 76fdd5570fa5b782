import gzip

import numpy as np
import pytest
import torch

from reglab.data import (
    SYSTEM_FASHION_MNIST,
    DataModule,
    IndexBatches,
    Split,
    balanced_subset,
    load_dataset,
    split_indices,
)
from reglab.errors import ConfigError, DataError

from .conftest import write_cifar_dataset, write_idx_dataset


@pytest.mark.parametrize("name,shape,classes", [
    ("mnist", (1, 28, 28), 10), ("fashion_mnist", (1, 28, 28), 10),
    ("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100),
])  # fmt: skip
def test_loaders_read_torchvision_formats(fake_data_dir, name, shape, classes):
    train, test = load_dataset(name, fake_data_dir, download=False)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == shape
    assert train.labels.dtype == torch.int64 and len(train.labels) == len(train.images)
    assert int(train.labels.max()) == classes - 1 and len(test) > 0
    dm = DataModule(name, str(fake_data_dir), download=False)
    assert dm.input_shape == shape and dm.num_classes == classes


def test_idx_values_roundtrip(tmp_path):
    write_idx_dataset(tmp_path, n_train=20, n_test=10, seed=3)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(20, 28, 28)
    train, _ = load_dataset("mnist", tmp_path, download=False)
    assert np.array_equal(train.images[:, 0].numpy(), raw)


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar_dataset(tmp_path, hundred=True, n_per_file=10)
    train, test = load_dataset("cifar100", tmp_path, download=False)
    assert len(train) == 50 and len(test) == 10 and int(train.labels.max()) == 49


def test_digits_is_real_and_needs_no_files():
    train, test = load_dataset("digits", "/nonexistent", download=False)
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 8, 8)
    assert int(train.images.max()) == 255


@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist absent")
def test_system_fashion_mnist_is_found(tmp_path):
    train, test = load_dataset("fashion_mnist", tmp_path, download=False)
    assert len(train) == 60000 and len(test) == 10000


def test_missing_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'mnist' not found .*data.data_dir="):
        load_dataset("mnist", tmp_path, download=False)


def test_truncated_file_is_named(tmp_path):
    write_idx_dataset(tmp_path, n_train=20, n_test=10)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*delete it"):
        load_dataset("mnist", tmp_path, download=False)


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


@pytest.mark.parametrize("kwargs,match", [
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"train_subset": 5}, "train_subset"),
    ({"num_folds": 5, "fold": 5}, "fold"),
    ({"batch_size": 0}, "batch_size"),
    ({"name": "svhn"}, "svhn"),
])  # fmt: skip
def test_bad_data_config_is_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DataModule(**{"name": "digits", **kwargs})


def test_train_subset_larger_than_data_is_rejected():
    dm = DataModule("digits", train_subset=5000)
    with pytest.raises(ConfigError, match="larger than"):
        dm.setup()
