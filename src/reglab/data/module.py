"""``DataModule``: one LightningDataModule for every dataset.

It owns every ``data.*`` value and checks each once, here. ``setup`` reads the dataset once
(``sources.load``), splits train/val (or a fold) by ``split_seed``, keeps an optional balanced
subset, and serves batches by index (``IndexBatches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from reglab.core.checks import flag, nonnegative, number, positive
from reglab.core.errors import ConfigError
from reglab.data.batches import IndexBatches, Split
from reglab.data.sources import (
    ReadOptions,
    channel_stats,
    check_image_size,
    find_source,
    load,
)
from reglab.data.splits import balanced_subset, split_indices


class DataModule(pl.LightningDataModule):
    """Train/val/test splits of one dataset in memory, batched by index.

    ``num_classes``, ``input_shape``, ``mean`` and ``std`` are known without reading for the
    datasets of ``sources.REGISTRY``; for a torchvision class or an image folder the first of
    them asked reads the dataset (once) and counts or computes them from it.
    """

    def __init__(
        self,
        name: str = "digits",
        data_dir: str | Path = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.1,
        train_subset: int | None = None,
        num_folds: int | None = None,
        fold: int = 0,
        seed: int = 0,
        split_seed: int = 0,
        download: bool = True,
        train_eval_size: int = 10000,
        resident: bool = False,
        verify_checksums: bool = True,
        torchvision: str | None = None,
        torchvision_args: Mapping | None = None,
        image_folder: str | Path | None = None,
        image_size: int | list[int] | None = None,
        mirror_safe: bool = True,
    ):
        super().__init__()
        self.source = find_source(name, torchvision, torchvision_args, image_folder)
        self.name = name
        if not isinstance(data_dir, (str, Path)):
            raise ConfigError(f"data.data_dir={data_dir!r} must be a path")
        self.data_dir = data_dir
        self.batch_size = positive("data.batch_size", batch_size, integer=True)
        self.eval_batch_size = positive("data.eval_batch_size", eval_batch_size, integer=True)
        self.val_fraction = number(
            "data.val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True
        )
        if num_folds is not None:
            num_folds = number("data.num_folds", num_folds, low=2, integer=True)
            fold = number("data.fold", fold, low=0, high=num_folds - 1, integer=True)
        else:
            fold = nonnegative("data.fold", fold, integer=True)
        self.num_folds, self.fold = num_folds, fold
        if train_subset is not None:
            train_subset = positive("data.train_subset", train_subset, integer=True)
        self.train_subset = train_subset
        # split_seed fixes the train/val split, subset and folds; seed only orders the training
        # batches. The test split never moves (digits, which has none of its own, fixes it).
        self.seed = number("seed", seed, integer=True)
        self.split_seed = nonnegative("data.split_seed", split_seed, integer=True)
        self.train_eval_size = positive("data.train_eval_size", train_eval_size, integer=True)
        self.download = flag("data.download", download)
        self.resident = flag("data.resident", resident)
        self.verify_checksums = flag("data.verify_checksums", verify_checksums)
        self.image_size = check_image_size(image_size)
        # What the data says about itself, read by augmentation=flip (from the config, not here).
        self.mirror_safe = flag("data.mirror_safe", mirror_safe)
        if self.source.num_classes is not None:
            self._check_subset_covers_classes(self.source.num_classes)
        # Training batches per item, set by the training layer before fit; see IndexBatches.
        self.steps_per_item = 1
        self.train: Split | None = None
        self.val: Split | None = None
        self.test: Split | None = None
        self._read: tuple[Split, Split] | None = None
        self._known: dict = {}

    def _check_subset_covers_classes(self, num_classes: int) -> None:
        if self.train_subset is not None and self.train_subset < num_classes:
            raise ConfigError(
                f"data.train_subset={self.train_subset} is smaller than the {num_classes} classes "
                f"of {self.name}; use at least {num_classes}"
            )

    # ------------------------------------------------------------------------- what the data is

    def _describe(self, key: str):
        """A fact about the data: from the registry when it knows it, else from the files."""
        if key not in self._known:
            self._load_files()
        return self._known[key]

    @property
    def num_classes(self) -> int:
        return self.source.num_classes or self._describe("num_classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        shape = self.source.input_shape
        if shape is not None and self.image_size is None:
            return shape
        if shape is not None:
            return (shape[0], *self.image_size)
        return self._describe("input_shape")

    @property
    def mean(self) -> tuple[float, ...]:
        return self.source.mean or self._describe("mean")

    @property
    def std(self) -> tuple[float, ...]:
        return self.source.std or self._describe("std")

    def _load_files(self) -> None:
        """Read the dataset once; what it tells about itself is kept after the splits drop it."""
        if self._read is not None or self.train is not None:
            return
        opts = ReadOptions(self.download, self.verify_checksums, self.split_seed, self.image_size)
        loaded = load(self.source, self.data_dir, opts)
        train, test = loaded.train, loaded.test
        num_classes = self.source.num_classes or loaded.num_classes
        if num_classes is None:
            num_classes = int(torch.cat([train.labels, test.labels]).max()) + 1
        mean, std = (
            (self.source.mean, self.source.std) if self.source.mean else channel_stats(train.images)
        )
        self._known = {
            "num_classes": num_classes,
            "input_shape": tuple(train.images.shape[1:]),
            "mean": mean,
            "std": std,
        }
        self._read = train, test

    # ------------------------------------------------------------------------- splits

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self._split()
        if self.resident and self.trainer is not None:
            # Every split moves to the training device once; batches are then indexed there,
            # with no host-to-device copy per step (CIFAR-10 as uint8: 180 MB).
            device = self.trainer.strategy.root_device
            for name in ("train", "val", "test"):
                split = getattr(self, name)
                if split.images.device != device:
                    setattr(self, name, Split(split.images.to(device), split.labels.to(device)))

    def _split(self) -> None:
        self._load_files()
        train, test = self._read
        self._read = None  # the splits below are copies: do not hold the whole set twice
        self._check_subset_covers_classes(self.num_classes)
        tr_idx, va_idx = split_indices(
            train.labels, self.val_fraction, self.split_seed, self.num_folds, self.fold
        )
        train_part = train.take(tr_idx)
        if self.train_subset is not None:
            if self.train_subset > len(train_part):
                raise ConfigError(
                    f"data.train_subset={self.train_subset} is larger than the {len(train_part)} "
                    f"training examples of {self.name} left after the validation split"
                )
            train_part = train_part.take(
                balanced_subset(
                    train_part.labels, self.train_subset, self.num_classes, self.split_seed
                )
            )
        self.train, self.val, self.test = train_part, train.take(va_idx), test

    # ------------------------------------------------------------------------- loaders

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: Split, train: bool) -> IndexBatches:
        rank, world = self._rank_world()
        return IndexBatches(
            split,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(split) > self.batch_size * world,
            seed=self.seed,
            rank=rank,
            world_size=world,
            steps=self.steps_per_item if train else 1,
        )

    def train_dataloader(self):
        return self._loader(self.train, train=True)

    def val_dataloader(self):
        return self._loader(self.val, train=False)

    def test_dataloader(self):
        # Second loader: (part of) the training split, evaluated in eval mode, for gap/acc.
        n = min(len(self.train), self.train_eval_size)
        if n < len(self.train):
            g = torch.Generator().manual_seed(self.split_seed)
            train_eval = self.train.take(torch.randperm(len(self.train), generator=g)[:n])
        else:
            train_eval = self.train
        return [self._loader(self.test, train=False), self._loader(train_eval, train=False)]
