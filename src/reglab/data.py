"""Datasets as uint8 tensors in memory, split/subset/fold by index, batched by index.

Every dataset is read once into ``(N, C, H, W)`` uint8 images and int64 labels. The training path
never touches a per-sample ``__getitem__``: a batch is ``images[idx]`` for a tensor of indices.
Floating point conversion, augmentation and normalization happen on the training device, in the
LitModule (see ``reglab.module``).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from reglab.errors import ConfigError, DataError

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Channel statistics of each training set, on the [0, 1] scale.
STATS = {
    "digits": ((0.2047,), (0.3790,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
DATASETS = tuple(NUM_CLASSES)


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> Split:
        return Split(self.images[idx], self.labels[idx])


# ----------------------------------------------------------------------------- file formats


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error, gzip.BadGzipFile) as e:
        raise DataError(
            f"corrupt or truncated data file {path} ({e}): delete it and copy or download it again"
        ) from e


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_dataset(folders: list[Path]) -> tuple[Split, Split] | None:
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    for folder in folders:
        files = {k: [_find_idx(folder, s) for s in v] for k, v in stems.items()}
        if all(p is not None for pair in files.values() for p in pair):
            splits = []
            for img_path, lbl_path in files.values():
                images, labels = read_idx(img_path), read_idx(lbl_path)
                if len(images) != len(labels):
                    raise DataError(
                        f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} "
                        "labels: delete both and copy or download them again"
                    )
                splits.append(
                    Split(
                        torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)),
                    )
                )
            return splits[0], splits[1]
    return None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(
            f"corrupt or truncated data file {path} ({type(e).__name__}): delete it and "
            "copy or download it again"
        ) from e


def load_cifar_dataset(folders: list[Path], hundred: bool) -> tuple[Split, Split] | None:
    sub = "cifar-100-python" if hundred else "cifar-10-batches-py"
    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    label_key = "fine_labels" if hundred else "labels"
    for folder in folders:
        base = folder / sub
        if not all((base / n).is_file() for n in [*train_files, "test"]):
            continue
        splits = []
        for names in (train_files, ["test"]):
            xs, ys = [], []
            for n in names:
                d = _unpickle(base / n)
                try:
                    xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    ys.append(np.asarray(d[label_key], dtype=np.int64))
                except (KeyError, ValueError) as e:
                    raise DataError(
                        f"corrupt data file {base / n} ({e}): delete it and download it again"
                    ) from e
            splits.append(
                Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
            )
        return splits[0], splits[1]
    return None


def load_digits_dataset(seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1797 images, 16 grey levels), fixed 25% test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, d.target, test_size=0.25, stratify=d.target, random_state=seed
    )
    as_split = lambda x, y: Split(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))  # noqa: E731
    return as_split(x_tr, y_tr), as_split(x_te, y_te)


TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", ""),
    "cifar100": ("CIFAR100", ""),
}


def search_folders(name: str, data_dir: Path) -> list[Path]:
    if name == "digits":
        return []
    raw = TORCHVISION[name][1]
    folders = [data_dir / raw, data_dir / name, data_dir] if raw else [data_dir]
    if name == "fashion_mnist":
        folders.append(SYSTEM_FASHION_MNIST)
    return folders


def _read(name: str, folders: list[Path]) -> tuple[Split, Split] | None:
    if name in ("mnist", "fashion_mnist"):
        return load_idx_dataset(folders)
    return load_cifar_dataset(folders, hundred=name == "cifar100")


def load_dataset(name: str, data_dir: str | Path, download: bool = True) -> tuple[Split, Split]:
    """Return (train, test) for a dataset, reading torchvision's on-disk formats.

    Lookup order: ``data_dir`` (torchvision layout or a flat folder), the Debian system copy
    (Fashion-MNIST only), then torchvision's download into ``data_dir``.
    """
    if name not in NUM_CLASSES:
        raise ConfigError(f"data.name={name!r} is not a dataset; choose one of {list(DATASETS)}")
    if name == "digits":
        return load_digits_dataset()
    data_dir = Path(data_dir).expanduser()
    folders = search_folders(name, data_dir)
    found = _read(name, folders)
    if found is not None:
        return found
    if download:
        try:
            import torchvision

            cls = getattr(torchvision.datasets, TORCHVISION[name][0])
            for train in (True, False):
                cls(str(data_dir), train=train, download=True)
        except Exception:  # noqa: BLE001 - any download failure ends in the one-line error below
            pass
        found = _read(name, folders)
        if found is not None:
            return found
    searched = ", ".join(str(f) for f in folders)
    raise DataError(
        f"dataset {name!r} not found (searched {searched}) and it could not be downloaded: "
        f"put its files in one of those folders or point to them with data.data_dir=/path"
    )


# ----------------------------------------------------------------------------- splitting


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` examples with classes as equal as possible (remainder to the first)."""
    g = torch.Generator().manual_seed(seed)
    per_class = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    chosen = []
    for c, k in enumerate(per_class):
        idx = (labels == c).nonzero().flatten()
        if k > len(idx):
            raise ConfigError(
                f"data.train_subset={n} needs {k} examples of class {c} but only {len(idx)} exist; "
                "use a smaller train_subset"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(chosen).sort().values


def split_indices(
    labels: torch.Tensor,
    val_fraction: float,
    seed: int,
    num_folds: int | None = None,
    fold: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train, val) indices: a seeded holdout, or fold ``fold`` of ``num_folds``."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = labels.numpy()
    all_idx = np.arange(len(y))
    try:
        if num_folds:
            skf = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
            tr, va = list(skf.split(all_idx, y))[fold]
        else:
            tr, va = train_test_split(
                all_idx, test_size=val_fraction, stratify=y, random_state=seed
            )
    except ValueError as e:  # too few examples per class for a stratified split
        knob = f"data.num_folds={num_folds}" if num_folds else f"data.val_fraction={val_fraction}"
        raise ConfigError(f"{knob} cannot split {len(y)} examples by class: {e}") from e
    return torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))


# ----------------------------------------------------------------------------- batching


class IndexBatches:
    """An iterable of ``(images, labels)`` batches indexed straight out of in-memory tensors.

    Under DDP each rank takes a disjoint, equally long shard of one shared permutation
    (``perm[rank::world]``, trimmed to equal length so every rank runs the same number of steps).

    With ``steps > 1`` (``trainer.steps_per_execution``) each item holds up to ``steps``
    consecutive batches of ``batch_size``, taken in one ``index_select``: the same batches in the
    same order, which the LightningModule splits again and steps through one by one.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps: int = 1,
    ):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.steps = steps
        self.drop_last, self.seed, self.rank, self.world_size = drop_last, seed, rank, world_size
        self.epoch = 0

    # The order of epoch e is a function of (seed, e) only. Lightning calls
    # ``loader.sampler.set_epoch(e)`` before every epoch, resumed runs included, so a run
    # restarted from a checkpoint sees the same batches as one that never stopped.
    batch_sampler = None  # what Lightning's DataLoader checks look for next to ``sampler``

    @property
    def sampler(self) -> IndexBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size if self.shuffle else -(-n // self.world_size)
            idx = idx[self.rank :: self.world_size][:per_rank]
        return idx

    @property
    def num_steps(self) -> int:
        """Batches of ``batch_size`` per epoch (optimizer steps, when training)."""
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return -(-self.num_steps // self.steps)

    def __iter__(self):
        images, labels = self.split.images, self.split.labels
        # On the images' device (data.resident=true keeps them on the GPU): indices move once.
        idx = self._indices().to(images.device)
        self.epoch += 1
        stop, chunk = self.num_steps * self.batch_size, self.batch_size * self.steps
        for start in range(0, stop, chunk):
            b = idx[start : min(start + chunk, stop)]
            if len(b) == 0:
                break
            # index_select: ~6x faster than images[b] (advanced indexing) on (N, C, H, W) uint8.
            yield images.index_select(0, b), labels.index_select(0, b)


class DataModule(pl.LightningDataModule):
    """One DataModule for every dataset; see the module docstring for the data path."""

    def __init__(
        self,
        name: str = "digits",
        data_dir: str = "data",
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
        steps_per_execution: int = 1,
    ):
        super().__init__()
        if name not in NUM_CLASSES:
            raise ConfigError(
                f"data.name={name!r} is not a dataset; choose one of {list(DATASETS)}"
            )
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must be in (0, 1)")
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ConfigError(f"data.batch_size={batch_size} must be a positive integer")
        if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
            raise ConfigError(
                f"data.fold={fold} with data.num_folds={num_folds}: need num_folds >= 2 and "
                f"fold in [0, {num_folds})"
            )
        if train_subset is not None and train_subset < NUM_CLASSES[name]:
            raise ConfigError(
                f"data.train_subset={train_subset} is smaller than the {NUM_CLASSES[name]} classes "
                f"of {name}; use at least {NUM_CLASSES[name]}"
            )
        self.name, self.data_dir, self.download = name, data_dir, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.train_subset = val_fraction, train_subset
        # split_seed fixes the split, subset and folds; seed only orders the training batches.
        self.num_folds, self.fold, self.seed, self.split_seed = num_folds, fold, seed, split_seed
        self.train_eval_size = train_eval_size
        self.resident = resident
        # Training batches per item (trainer.steps_per_execution), see IndexBatches.
        self.steps_per_execution = steps_per_execution
        self.num_classes = NUM_CLASSES[name]
        self.mean, self.std = STATS[name]
        self.train: Split | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}.get(
            self.name, (3, 32, 32)
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self._load()
        if self.resident and self.trainer is not None:
            # Every split moves to the training device once; batches are then indexed there,
            # with no host-to-device copy per step (CIFAR-10 as uint8: 180 MB).
            device = self.trainer.strategy.root_device
            for name in ("train", "val", "test"):
                split = getattr(self, name)
                if split.images.device != device:
                    setattr(self, name, Split(split.images.to(device), split.labels.to(device)))

    def _load(self) -> None:
        train, test = load_dataset(self.name, self.data_dir, download=self.download)
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
            steps=self.steps_per_execution if train else 1,
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
