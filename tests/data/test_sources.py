"""Where datasets come from: the registry's readers, checksums, torchvision classes, folders."""

import gzip

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.datasets import MNIST, SVHN, VisionDataset

from reglab.core.errors import ConfigError, DataError
from reglab.data import SYSTEM_FASHION_MNIST, DataModule, load_dataset
from reglab.data.sources import channel_stats

from ..conftest import write_cifar_dataset, write_idx_dataset
from .files import (
    cifar_bytes,
    md5_of,
    patterned,
    write_cifar,
    write_idx,
    write_mnist_family,
    write_png,
    write_svhn,
)

# ----------------------------------------------------------------------------- the registry


@pytest.mark.parametrize(
    "name,shape,classes",
    [
        ("mnist", (1, 28, 28), 10),
        ("fashion_mnist", (1, 28, 28), 10),
        ("cifar10", (3, 32, 32), 10),
        ("cifar100", (3, 32, 32), 100),
    ],
)
def test_loaders_read_torchvision_formats(real_layout_dir, name, shape, classes):
    train, test = load_dataset(name, real_layout_dir, download=False)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == shape
    assert train.labels.dtype == torch.int64 and len(train.labels) == len(train.images)
    assert int(train.labels.max()) == classes - 1 and len(test) > 0
    dm = DataModule(name, str(real_layout_dir), download=False)
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


@pytest.mark.parametrize("style", ["py2", "py3-2", "py3-4"])
def test_cifar10_reads_every_batch_and_test_batch(tmp_path, style):
    written = write_cifar(tmp_path, hundred=False, n_per_file=15, seed=5, style=style)
    train, test = load_dataset("cifar10", tmp_path, download=False)
    batches = [written[f"data_batch_{i}"] for i in range(1, 6)]
    assert torch.equal(train.images, torch.from_numpy(np.concatenate([x for x, _ in batches])))
    assert torch.equal(train.labels, torch.from_numpy(np.concatenate([y for _, y in batches])))
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]))


def test_digits_is_real_and_needs_no_files():
    train, test = load_dataset("digits", "/nonexistent", download=False)
    assert len(train) + len(test) == 1797 and train.images.shape[1:] == (1, 8, 8)
    assert int(train.images.max()) == 255


def test_digits_test_split_is_fixed():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    # The split every reglab run used with split_seed 0: random_state=0, now for every split_seed.
    _, x_te, _, y_te = train_test_split(
        images, d.target, test_size=0.25, stratify=d.target, random_state=0
    )
    _, test0 = load_dataset("digits", "/nonexistent", split_seed=0)
    assert torch.equal(test0.images, torch.from_numpy(x_te))
    assert torch.equal(test0.labels, torch.from_numpy(y_te.astype(np.int64)))
    train1, test1 = load_dataset("digits", "/nonexistent", split_seed=1)
    assert torch.equal(test1.images, test0.images) and torch.equal(test1.labels, test0.labels)
    assert len(train1) + len(test1) == 1797


@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist absent")
def test_system_fashion_mnist_is_found(tmp_path):
    # Debian recompressed the published .gz files (other md5s, same images): with checksums on,
    # as here, this passes only because the system copy is left to the package manager.
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


def test_images_and_labels_that_disagree_are_refused(tmp_path):
    write_mnist_family(tmp_path, n_train=30, n_test=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="30 images but .*29 labels: delete both"):
        load_dataset("mnist", tmp_path, download=False)


def test_image_size_resizes_a_registry_dataset(real_layout_dir):
    train, test = load_dataset("mnist", real_layout_dir, download=False, image_size=14)
    assert train.images.shape[1:] == (1, 14, 14) and test.images.shape[1:] == (1, 14, 14)
    assert DataModule("mnist", str(real_layout_dir), image_size=[14, 20]).input_shape == (1, 14, 20)


# ----------------------------------------------------------------------------- checksums


def _mnist_with_full_size_test_split(folder):
    write_mnist_family(folder, n_train=40, n_test=10)  # a small train split: not the published one
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10000) % 10)


def test_full_size_file_that_differs_from_the_published_md5_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _mnist_with_full_size_test_split(raw)
    # The 40-example train files differ from the published ones too, and pass unchecked.
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte.gz does not match the md5 that "
        r"torchvision.datasets.MNIST publishes.*data.verify_checksums=false",
    ):
        load_dataset("mnist", tmp_path, download=False)
    train, test = load_dataset("mnist", tmp_path, download=False, verify_checksums=False)
    assert len(train) == 40 and len(test) == 10000


def test_published_md5s_are_read_from_torchvision(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    _mnist_with_full_size_test_split(raw)
    ours = {p.name: md5_of(p) for p in raw.glob("t10k-*")}
    monkeypatch.setattr(MNIST, "resources", [(n, ours.get(n, m)) for n, m in MNIST.resources])
    _, test = load_dataset("mnist", tmp_path, download=False)
    assert len(test) == 10000


def test_full_size_cifar_batch_that_differs_is_refused(tmp_path):
    write_cifar(tmp_path, hundred=False, n_per_file=10, style="py3-4")
    entry = {"data": np.zeros((10000, 3072), np.uint8), "labels": [0] * 10000}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(cifar_bytes(entry, "py3-4"))
    with pytest.raises(DataError, match="test_batch does not match the md5 .*CIFAR10"):
        load_dataset("cifar10", tmp_path, download=False)


# ----------------------------------------------------------------------------- torchvision classes


def test_kmnist_through_torchvision(tmp_path):
    written = write_mnist_family(tmp_path / "KMNIST" / "raw", n_train=60, n_test=20, gz=False)
    train, test = load_dataset("kmnist", tmp_path, download=False, torchvision="KMNIST")
    assert train.images.shape == (60, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert torch.equal(test.labels, torch.from_numpy(written["test"][1].astype(np.int64)))
    dm = DataModule("kmnist", str(tmp_path), torchvision="KMNIST", download=False)
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)
    assert dm.mean == channel_stats(train.images)[0]


def test_emnist_split_is_a_constructor_argument(tmp_path):
    names = {
        s: (f"emnist-balanced-{s}-images-idx3-ubyte", f"emnist-balanced-{s}-labels-idx1-ubyte")
        for s in ("train", "test")
    }
    written = write_mnist_family(
        tmp_path / "EMNIST" / "raw", n_train=94, n_test=47, gz=False, classes=47, names=names
    )
    args = {"split": "balanced"}
    train, _ = load_dataset("emnist", tmp_path, False, torchvision="EMNIST", torchvision_args=args)
    assert torch.equal(train.labels, torch.from_numpy(written["train"][1].astype(np.int64)))
    dm = DataModule("emnist", str(tmp_path), torchvision="EMNIST", torchvision_args=args)
    assert dm.num_classes == 47  # EMNIST's class list, not the largest label seen


def test_svhn_mat_files_through_torchvision(tmp_path, monkeypatch):
    x_tr, y_tr = write_svhn(tmp_path, "train", 30)
    write_svhn(tmp_path, "test", 20, seed=1)
    # torchvision checks SVHN's published md5 itself: these small files are refused ...
    with pytest.raises(
        DataError,
        match=r"dataset 'svhn' not found .*SVHN: Dataset not found or "
        r"corrupted.* and data.download=false",
    ):
        load_dataset("svhn", tmp_path, download=False, torchvision="SVHN")
    # ... until the md5 torchvision expects is theirs.
    for split in ("train", "test"):
        url, name, _ = SVHN.split_list[split]
        monkeypatch.setitem(SVHN.split_list, split, [url, name, md5_of(tmp_path / name)])
    train, test = load_dataset("svhn", tmp_path, download=False, torchvision="SVHN")
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 20
    assert torch.equal(train.images, torch.from_numpy(x_tr))
    assert torch.equal(train.labels, torch.from_numpy(y_tr.astype(np.int64)))  # 10 read as 0


class _Shapes(VisionDataset):
    """A torchvision-style dataset with no arrays: PIL images one by one, of mixed modes.

    It "downloads" by creating its folder, and records every (train, download) it was built with.
    """

    calls: list = []

    def __init__(self, root, train=True, download=False, sizes=((6, 5),)):
        super().__init__(root)
        self.calls.append((train, download))
        folder = self.root + "/shapes"
        if download:
            import os

            os.makedirs(folder, exist_ok=True)
        if not __import__("os").path.isdir(folder):
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        self.sizes = [tuple(s) for s in sizes]
        self.n = 12 if train else 6

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        w, h = self.sizes[i % len(self.sizes)]
        grey = np.full((h, w), 20 * (i % 3), np.uint8)
        image = Image.fromarray(grey) if i % 2 else Image.fromarray(np.dstack([grey] * 3))
        return image, i % 3


@pytest.fixture
def shapes(monkeypatch):
    _Shapes.calls = []
    monkeypatch.setattr(torchvision.datasets, "Shapes", _Shapes, raising=False)
    return _Shapes


def test_dataset_without_arrays_is_taken_once_per_example(tmp_path, shapes):
    (tmp_path / "shapes").mkdir()
    train, test = load_dataset("shapes", tmp_path, download=False, torchvision="Shapes")
    assert train.images.shape == (12, 3, 5, 6) and test.images.shape == (6, 3, 5, 6)
    assert train.labels.tolist() == [i % 3 for i in range(12)]
    assert (train.images[4] == 20).all()  # a grey image, repeated into three channels
    assert DataModule("shapes", str(tmp_path), torchvision="Shapes").num_classes == 3
    sizes = {"sizes": [[6, 5], [9, 9]]}
    with pytest.raises(DataError, match=r"Shapes \(train\).*differ in size.*data.image_size"):
        load_dataset("shapes", tmp_path, False, torchvision="Shapes", torchvision_args=sizes)
    train, _ = load_dataset(
        "shapes", tmp_path, False, torchvision="Shapes", torchvision_args=sizes, image_size=[4, 8]
    )
    assert train.images.shape == (12, 3, 4, 8)


def test_torchvision_downloads_only_when_allowed(tmp_path, shapes):
    with pytest.raises(
        DataError,
        match=r"dataset 'shapes' not found .*Dataset not found.* and "
        r"data.download=false: put its files in data_dir as "
        r"torchvision.datasets.Shapes lays them out",
    ):
        load_dataset("shapes", tmp_path, download=False, torchvision="Shapes")
    assert shapes.calls == [(True, False)]
    shapes.calls = []
    train, _ = load_dataset("shapes", tmp_path, download=True, torchvision="Shapes")
    assert shapes.calls == [(True, False), (True, True), (False, True)] and len(train) == 12


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"torchvision": "NoSuchSet"}, "data.torchvision='NoSuchSet' is not a dataset class"),
        (
            {"torchvision": "KMNIST", "torchvision_args": {"split": "x"}},
            r"data.torchvision_args.split is not an argument of torchvision.datasets.KMNIST",
        ),
        (
            {"torchvision": "KMNIST", "torchvision_args": {"train": False}},
            "data.torchvision_args.train is set by reglab",
        ),
        (
            {"torchvision": "SVHN", "torchvision_args": {"split": "extra"}},
            "data.torchvision_args.split is set by reglab",
        ),
        (
            {"torchvision": "EMNIST"},
            "data.torchvision_args.split is required by torchvision.datasets.EMNIST",
        ),
        ({"torchvision": "FakeData"}, "takes neither train= nor split="),
        ({"torchvision": "MNIST", "torchvision_args": {"x": 1}}, "not used by reglab's own reader"),
        ({"torchvision_args": {"split": "balanced"}}, "data.torchvision is not"),
        ({"torchvision": "KMNIST", "image_folder": "imgs"}, "a dataset comes from one of them"),
        ({"torchvision": 3}, "data.torchvision=3 must be a class name"),
        (
            {"image_size": 0},
            r"data.image_size=0 must be null, a positive integer or \[height, width\]",
        ),
        ({"image_size": [28, 28, 3]}, "data.image_size="),
    ],
)
def test_bad_source_keys_are_one_line_each(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset("digits", tmp_path, download=False, **kwargs)


def test_torchvision_class_with_a_reglab_reader_uses_it(tmp_path):
    """torchvision: MNIST reads through reglab's reader (flat .gz files, which MNIST's class
    does not read), so it keeps reglab's checksum and layout rules."""
    write_mnist_family(tmp_path, n_train=20, n_test=10)
    train, _ = load_dataset("my_mnist", tmp_path, download=False, torchvision="MNIST")
    assert len(train) == 20
    with pytest.raises(DataError, match="dataset 'my_mnist' not found"):
        load_dataset("my_mnist", tmp_path / "empty", download=False, torchvision="MNIST")


# ----------------------------------------------------------------------------- image folders


def _folder(root, sizes=((8, 8),), test_classes=("cat", "dog"), colour=("dog",)):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog") if split == "train" else test_classes:
            for i in range(n):
                h, w = sizes[i % len(sizes)]
                value = 40 if c == "cat" else 200
                arr = np.full((h, w), value, np.uint8)
                arr = np.dstack([arr, arr, arr // 2]) if c in colour else arr
                write_png(root / split / c / f"{i}.png", arr)


def test_image_folder_is_read_once_into_uint8(tmp_path):
    _folder(tmp_path / "pets")
    train, test = load_dataset("pets", tmp_path, image_folder="pets")  # relative: in data_dir
    assert train.images.shape == (8, 3, 8, 8) and test.images.shape == (4, 3, 8, 8)
    assert train.labels.tolist() == [0] * 4 + [1] * 4  # sorted class folders: cat 0, dog 1
    assert (train.images[0] == 40).all() and train.images[4, 2, 0, 0] == 100
    dm = DataModule("pets", str(tmp_path / "elsewhere"), image_folder=str(tmp_path / "pets"))
    assert dm.num_classes == 2 and dm.input_shape == (3, 8, 8)


def test_grey_image_folder_stays_one_channel(tmp_path):
    _folder(tmp_path, colour=())
    train, _ = load_dataset("grey", tmp_path, image_folder=str(tmp_path))
    assert train.images.shape[1] == 1


def test_image_folder_sizes_must_agree_or_be_resized(tmp_path):
    _folder(tmp_path, sizes=((8, 8), (10, 12)))
    with pytest.raises(
        DataError,
        match=r"train: images differ in size \(.*0.png is 8x8, "
        r".*1.png is 12x10\): set data.image_size",
    ):
        load_dataset("pets", tmp_path, image_folder=str(tmp_path))
    train, test = load_dataset("pets", tmp_path, image_folder=str(tmp_path), image_size=[6, 7])
    assert train.images.shape[1:] == (3, 6, 7) and test.images.shape[1:] == (3, 6, 7)


def test_image_folder_errors(tmp_path):
    with pytest.raises(
        DataError,
        match=r"dataset 'pets' not found \(searched .*pets/train, "
        r".*pets/test\) and it cannot be downloaded: put the images in",
    ):
        load_dataset("pets", tmp_path, image_folder="pets")
    _folder(tmp_path / "a", test_classes=("cat", "dog", "emu"))
    with pytest.raises(DataError, match=r"has classes \['emu'\] that .* does not"):
        load_dataset("a", tmp_path, image_folder="a")
    _folder(tmp_path / "b")
    (tmp_path / "b" / "train" / "emu").mkdir()
    with pytest.raises(DataError, match="image folder .*Found no valid file for the classes emu"):
        load_dataset("b", tmp_path, image_folder="b")
    _folder(tmp_path / "c")
    (tmp_path / "c" / "train" / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"corrupt or truncated data file .*cat/0.png"):
        load_dataset("c", tmp_path, image_folder="c")


def test_channel_stats_are_the_pixel_mean_and_std():
    images = torch.from_numpy(patterned(50, 10, (3, 9, 9), seed=2)[0])
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-12)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-12)
