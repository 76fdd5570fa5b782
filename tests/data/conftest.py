"""Fixtures of the data tests: a data_dir with every registry dataset in its real layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from .files import write_cifar, write_mnist_family


@pytest.fixture(scope="session")
def real_layout_dir(tmp_path_factory) -> Path:
    """Tiny MNIST and Fashion-MNIST (gzipped IDX in ``<Class>/raw``), CIFAR-10 and CIFAR-100
    (Python 2 pickles, CIFAR-10's test file named ``test_batch``), as torchvision lays them out."""
    root = tmp_path_factory.mktemp("layout")
    write_mnist_family(root / "MNIST" / "raw", n_train=300, n_test=100, seed=1)
    write_mnist_family(root / "FashionMNIST" / "raw", n_train=300, n_test=100, seed=2)
    write_cifar(root, hundred=False, n_per_file=100)
    write_cifar(root, hundred=True, n_per_file=300)
    return root
