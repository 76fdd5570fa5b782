"""Where each dataset comes from, and how it is read once into ``(N, C, H, W)`` uint8 tensors.

A ``data`` config names its source in one of three ways:

- ``name`` alone: an entry of ``REGISTRY`` below (digits, mnist, fashion_mnist, cifar10,
  cifar100), read by reglab's own readers (``formats.py``): they search data_dir in torchvision's
  layout or flat, verify published checksums, and unpickle nothing but arrays;
- ``torchvision: ClassName`` (+ ``torchvision_args``): any classification dataset of
  ``torchvision.datasets``, read through its class from data_dir (``conf/data/kmnist.yaml``);
- ``image_folder: path``: ``path/train/<class>/*.png|jpg`` and ``path/test/<class>/...``, read
  with PIL (``conf/data/image_folder.yaml``).

Adding a dataset:

- torchvision has it: one YAML in ``conf/data/`` with ``torchvision: ClassName`` (copy
  ``kmnist.yaml``; ``emnist.yaml`` shows ``torchvision_args``);
- you have the image files: one YAML (copy ``image_folder.yaml``, set ``image_folder``);
- a file format of its own: a reader in ``formats.py`` and one ``Source`` in ``REGISTRY``.

Checksums (``data.verify_checksums``, on by default). reglab's readers compare a file with the
md5 that torchvision's class publishes for it (``MNIST.resources``, ``CIFAR10.train_list``, ...)
when the file has the published file's name AND its size in examples (60000/10000 images for the
MNIST family, 10000 per CIFAR-10 batch, 50000/10000 for CIFAR-100). A smaller file of that name
(a test fixture, a hand-made subset) is not the published file and is not checked; a full-size
file that differs is damaged or altered, and is refused with a line saying what to do. Files of
the system copy (Debian's ``dataset-fashion-mnist``) are not checked: the package manager checks
them (``dpkg --verify``), and Debian recompressed them, so their gzip bytes (and md5s) differ
from the published ones; a copy of them elsewhere needs ``data.verify_checksums=false``.
Uncompressed IDX files have no published md5 (torchvision publishes the ``.gz``), so where both
are present the ``.gz`` is the one read.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from reglab.core.errors import ConfigError, DataError
from reglab.data.batches import Split
from reglab.data.formats import check_md5, cifar_arrays, read_idx, read_image, stack_images

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ReadOptions:
    download: bool = True
    verify_checksums: bool = True
    split_seed: int = 0
    image_size: tuple[int, int] | None = None  # (height, width)


class Loaded(NamedTuple):
    train: Split
    test: Split
    num_classes: int | None = None  # None: the largest label + 1


class Missing(Exception):
    """A reader did not find its files; ``load`` may download them, else reports this."""

    def __init__(
        self, searched: list[Path], why: str = "", hint: str = "", downloadable: bool = False
    ):
        super().__init__(why)
        self.searched, self.why, self.downloadable = searched, why, downloadable
        self.hint = (
            hint
            or "put its files in one of those folders or point to them with data.data_dir=/path"
        )


@dataclass(frozen=True)
class Source:
    """One dataset: how it is read, and what is known about it before reading."""

    name: str
    read: Callable[[Path, ReadOptions], Loaded]  # raises Missing when its files are absent
    download: str | None = None  # the torchvision class whose download=True fills data_dir
    num_classes: int | None = None  # None: known once read
    input_shape: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None  # channel statistics on [0, 1]; None: computed from
    std: tuple[float, ...] | None = None  # the training split once it is read


def as_split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))
    )


# ----------------------------------------------------------------------------- reglab's readers


def read_digits(data_dir: Path, opts: ReadOptions) -> Loaded:
    """scikit-learn's bundled 8x8 digits (1797 images, 16 grey levels), with a FIXED 25% stratified
    test split (random_state 0, the split every earlier reglab version used with split_seed 0).

    Fixed, not drawn per ``split_seed``: the paired seeds of a comparison re-draw train/val, and a
    test pool re-drawn with them put 18-22% of one seed's test images into another seed's
    validation set, which the tuning had seen. ``opts.split_seed`` is not read here."""
    x_tr, x_te, y_tr, y_te = (a.copy() for a in _digits_split())
    return Loaded(as_split(x_tr, y_tr), as_split(x_te, y_te))


@functools.cache
def _digits_split() -> tuple[np.ndarray, ...]:
    """Read once per process: the members of a stacked job (``seeds=[...]``) each load it, and
    sklearn parses its CSV every time (~15 ms)."""
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return tuple(
        train_test_split(images, d.target, test_size=0.25, stratify=d.target, random_state=0)
    )


def published_md5s(torchvision_class: str) -> dict[str, str]:
    """File name -> md5, as the installed torchvision class lists them for its download."""
    cls = getattr(datasets, torchvision_class)
    listed = [
        *getattr(cls, "resources", ()),
        *getattr(cls, "train_list", ()),
        *getattr(cls, "test_list", ()),
    ]
    return {Path(str(entry[0])).name: entry[1] for entry in listed}


def _verify(path: Path, examples: int, published_examples: int, publisher: str) -> None:
    if examples != published_examples:  # not the published file: see the module docstring
        return
    md5 = published_md5s(publisher).get(path.name)
    if md5 is not None:
        check_md5(path, md5, f"torchvision.datasets.{publisher}")


_IDX_FILES = {  # split: (images, labels, examples in the published files)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):  # the .gz first: it is the file with a published md5
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_dataset(
    name: str, publisher: str, data_dir: Path, opts: ReadOptions, system: Path | None = None
) -> Loaded:
    """The MNIST family: four IDX files in torchvision's ``<Class>/raw``, ``data_dir/<name>``,
    ``data_dir`` itself, or the system copy."""
    folders = [data_dir / publisher / "raw", data_dir / name, data_dir]
    if system is not None:
        folders.append(system)
    for folder in folders:
        found = {k: [_find_idx(folder, s) for s in v[:2]] for k, v in _IDX_FILES.items()}
        if not all(p is not None for pair in found.values() for p in pair):
            continue
        splits = []
        for split, (img_path, lbl_path) in found.items():
            images, labels = read_idx(img_path), read_idx(lbl_path)
            if len(images) != len(labels):
                raise DataError(
                    f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} "
                    "labels: delete both and copy or download them again"
                )
            if opts.verify_checksums and folder != system:
                for path, array in ((img_path, images), (lbl_path, labels)):
                    _verify(path, len(array), _IDX_FILES[split][2], publisher)
            splits.append(as_split(images[:, None], labels))
        return Loaded(*splits)
    raise Missing(folders)


def read_cifar_dataset(hundred: bool, data_dir: Path, opts: ReadOptions) -> Loaded:
    """CIFAR-10/100 as torchvision downloads them: python pickles in data_dir/cifar-*."""
    if hundred:
        folder, publisher, label_key = data_dir / "cifar-100-python", "CIFAR100", "fine_labels"
        files = {"train": {"train": 50000}, "test": {"test": 10000}}
    else:
        folder, publisher, label_key = data_dir / "cifar-10-batches-py", "CIFAR10", "labels"
        files = {
            "train": {f"data_batch_{i}": 10000 for i in range(1, 6)},
            "test": {"test_batch": 10000},
        }
    absent = [f for part in files.values() for f in part if not (folder / f).is_file()]
    if absent:
        raise Missing([folder], f"no {', '.join(absent)} there" if folder.is_dir() else "")
    splits = []
    for part in files.values():
        xs, ys = [], []
        for file, published_examples in part.items():
            images, labels = cifar_arrays(folder / file, label_key)
            if opts.verify_checksums:
                _verify(folder / file, len(images), published_examples, publisher)
            xs.append(images)
            ys.append(labels)
        splits.append(as_split(np.concatenate(xs), np.concatenate(ys)))
    return Loaded(*splits)


REGISTRY: dict[str, Source] = {
    "digits": Source(
        "digits", read_digits, num_classes=10, input_shape=(1, 8, 8), mean=(0.2047,), std=(0.3790,)
    ),
    "mnist": Source(
        "mnist",
        partial(read_idx_dataset, "mnist", "MNIST"),
        download="MNIST",
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
    ),
    "fashion_mnist": Source(
        "fashion_mnist",
        partial(read_idx_dataset, "fashion_mnist", "FashionMNIST", system=SYSTEM_FASHION_MNIST),
        download="FashionMNIST",
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
    ),
    "cifar10": Source(
        "cifar10",
        partial(read_cifar_dataset, False),
        download="CIFAR10",
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": Source(
        "cifar100",
        partial(read_cifar_dataset, True),
        download="CIFAR100",
        num_classes=100,
        input_shape=(3, 32, 32),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


# ----------------------------------------------------------------------------- torchvision classes


def _torchvision_class(class_name: str) -> type:
    cls = getattr(datasets, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise ConfigError(
            f"data.torchvision={class_name!r} is not a dataset class of torchvision.datasets; "
            "name one as spelled there, e.g. KMNIST, EMNIST, SVHN, STL10"
        )
    return cls


def _init_parameters(cls: type) -> dict[str, bool]:
    """Every named argument the class's constructors take (EMNIST passes ``train`` on to MNIST),
    and whether it is required (no default where it is first declared)."""
    params: dict[str, bool] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self":
                    params.setdefault(p.name, p.default is p.empty)
    return params


_SET_BY_READER = ("root", "train", "download", "transform", "target_transform", "transforms")


def _split_argument(cls: type, class_name: str, args: Mapping) -> Callable[[bool], dict]:
    """Check ``torchvision_args`` against the class; return how to ask it for train or test."""
    params = _init_parameters(cls)
    for key in args:
        if key in _SET_BY_READER:
            raise ConfigError(f"data.torchvision_args.{key} is set by reglab; leave it out")
        if key not in params:
            allowed = sorted(set(params) - set(_SET_BY_READER))
            raise ConfigError(
                f"data.torchvision_args.{key} is not an argument of torchvision.datasets."
                f"{class_name}; it takes {allowed}"
            )
    missing = [
        k
        for k, required in params.items()
        if required and k not in args and k not in ("root", "train", "split")
    ]
    if "split" in params and params["split"] and "train" in params and "split" not in args:
        missing.append("split")  # EMNIST: split names the variant, train= the part
    if missing:
        raise ConfigError(
            f"data.torchvision_args.{missing[0]} is required by torchvision.datasets."
            f"{class_name}; set it in the data YAML (see conf/data/emnist.yaml)"
        )
    if "train" in params:
        return lambda train: {"train": train}
    if "split" in params:
        if "split" in args:
            raise ConfigError(
                f"data.torchvision_args.split is set by reglab: it reads {class_name} with "
                "split='train' and split='test'; leave it out"
            )
        return lambda train: {"split": "train" if train else "test"}
    raise ConfigError(
        f"data.torchvision={class_name}: reglab reads a train and a test split, and "
        f"torchvision.datasets.{class_name} takes neither train= nor split="
    )


def _uint8_nchw(data) -> torch.Tensor | None:
    """A dataset's ``.data`` as (N, C, H, W) uint8, or None when it is not such an array."""
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim not in (3, 4):
        return None
    if data.ndim == 3:
        data = data[:, None]
    elif data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):  # channels last (CIFAR10)
        data = data.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(data))


def _labels(values, what: str) -> torch.Tensor:
    try:
        labels = torch.as_tensor(np.asarray(values).astype(np.int64))
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{what}: labels are not class indices ({e}); reglab reads classification datasets only"
        ) from e
    if labels.ndim != 1 or (len(labels) and int(labels.min()) < 0):
        raise DataError(
            f"{what}: labels are not one class index per image; reglab reads "
            "classification datasets only"
        )
    return labels


def convert_torchvision(dataset, what: str, size: tuple[int, int] | None) -> Split:
    """A torchvision dataset object as a Split: its ``.data`` and ``.targets`` (or ``.labels``)
    arrays where it has them, else every example taken once (PIL images, resized to ``size``)."""
    targets = next(
        (
            getattr(dataset, k)
            for k in ("targets", "labels")
            if getattr(dataset, k, None) is not None
        ),
        None,
    )
    images = _uint8_nchw(getattr(dataset, "data", None)) if targets is not None else None
    if images is None:
        targets = []

        def examples():
            for i in range(len(dataset)):
                image, label = dataset[i]
                targets.append(label)
                yield image

        images = torch.from_numpy(stack_images(examples(), size, what))
    labels = _labels(targets, what)
    if len(labels) != len(images):
        raise DataError(f"{what} has {len(images)} images but {len(labels)} labels")
    return Split(images, labels)


def read_torchvision(class_name: str, args: Mapping, data_dir: Path, opts: ReadOptions) -> Loaded:
    """Any torchvision classification dataset, through its class, from data_dir; downloaded
    there (``download=True``) only when it is not found and ``data.download`` allows it."""
    cls = _torchvision_class(class_name)
    which = _split_argument(cls, class_name, args)
    takes_download = "download" in _init_parameters(cls)

    def both(download: bool) -> list:
        extra = {"download": download} if takes_download else {}
        return [cls(str(data_dir), **args, **which(t), **extra) for t in (True, False)]

    where = f"torchvision.datasets.{class_name}"
    hint = (
        f"put its files in data_dir as {where} lays them out, or point to them with "
        "data.data_dir=/path"
    )

    def why(e: Exception) -> str:  # torchvision's advice names its argument, not data.download
        return f"{where}: {str(e).split(' You can use download=True')[0]}"

    try:
        train, test = both(download=False)
    except Exception as e:  # noqa: BLE001 - each class says "not found" its own way
        if not (opts.download and takes_download):
            raise Missing([data_dir], why(e), hint, takes_download) from e
        try:
            train, test = both(download=True)
        except Exception as e2:  # noqa: BLE001 - no network, a moved URL, ...
            raise Missing([data_dir], why(e2), hint, takes_download) from e2
    classes = getattr(train, "classes", None)
    return Loaded(
        convert_torchvision(train, f"{where} (train) in {data_dir}", opts.image_size),
        convert_torchvision(test, f"{where} (test) in {data_dir}", opts.image_size),
        len(classes) if classes else None,
    )


# ----------------------------------------------------------------------------- image folders


def read_image_folder(folder: str | Path, data_dir: Path, opts: ReadOptions) -> Loaded:
    """``folder/train/<class>/*`` and ``folder/test/<class>/*`` (any extension PIL reads that
    torchvision's ImageFolder accepts); classes are the train subfolders, sorted, as ImageFolder
    numbers them. A relative ``folder`` is taken inside data_dir."""
    root = Path(folder).expanduser()
    root = root if root.is_absolute() else data_dir / root
    parts = [root / "train", root / "test"]
    if not all(p.is_dir() for p in parts):
        raise Missing(
            parts,
            hint=f"put the images in {parts[0]}/<class>/ and {parts[1]}/<class>/ "
            "or point data.image_folder=/path at their parent",
        )
    try:
        classes, class_to_idx = find_classes(parts[0])
        unknown = sorted(
            d.name for d in parts[1].iterdir() if d.is_dir() and d.name not in class_to_idx
        )
        if unknown:
            raise DataError(
                f"{parts[1]} has classes {unknown} that {parts[0]} does not: every "
                "test class needs training images"
            )
        splits = []
        for part in parts:
            samples = make_dataset(part, class_to_idx, IMG_EXTENSIONS, allow_empty=part == parts[1])
            images = stack_images(
                (read_image(Path(p)) for p, _ in samples), opts.image_size, str(part)
            )
            splits.append(Split(torch.from_numpy(images), torch.tensor([c for _, c in samples])))
    except FileNotFoundError as e:  # no class folders, or a class without images
        raise DataError(f"image folder {root}: {e}") from e
    return Loaded(*splits, num_classes=len(classes))


# ----------------------------------------------------------------------------- choosing and loading


def check_image_size(value) -> tuple[int, int] | None:
    """``data.image_size``: null, N (square) or [height, width]."""
    if value is None:
        return None
    pair = list(value) if isinstance(value, (list, tuple)) else [value, value]
    ok = len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    )
    if not ok:
        raise ConfigError(
            f"data.image_size={value!r} must be null, a positive integer or [height, width]"
        )
    return pair[0], pair[1]


def find_source(
    name: str,
    torchvision: str | None = None,
    torchvision_args: Mapping | None = None,
    image_folder: str | Path | None = None,
) -> Source:
    """The Source a data config describes; each key checked here, once."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"data.name={name!r} must be a non-empty string")
    if torchvision is not None and image_folder is not None:
        raise ConfigError(
            f"data.torchvision={torchvision!r} and data.image_folder={image_folder!r}: "
            "a dataset comes from one of them; set the other to null"
        )
    if torchvision_args is not None and not isinstance(torchvision_args, Mapping):
        raise ConfigError(
            f"data.torchvision_args={torchvision_args!r} must be a mapping of arguments"
        )
    if torchvision_args and torchvision is None:
        raise ConfigError(
            "data.torchvision_args is set but data.torchvision is not: name the class"
        )
    if torchvision is not None:
        if not isinstance(torchvision, str):
            raise ConfigError(
                f"data.torchvision={torchvision!r} must be a class name such as KMNIST"
            )
        args = dict(torchvision_args or {})
        own = {s.download: s for s in REGISTRY.values() if s.download}
        if torchvision in own:  # reglab's reader: checksums, and no unrestricted pickle.load
            if args:
                raise ConfigError(
                    f"data.torchvision_args={args} is not used by reglab's own "
                    f"reader of {torchvision}; leave it out"
                )
            return dataclasses.replace(own[torchvision], name=name)
        cls = _torchvision_class(torchvision)
        _split_argument(cls, torchvision, args)
        return Source(name, partial(read_torchvision, torchvision, args))
    if image_folder is not None:
        if not isinstance(image_folder, (str, Path)):
            raise ConfigError(f"data.image_folder={image_folder!r} must be a path")
        return Source(name, partial(read_image_folder, image_folder))
    if name not in REGISTRY:
        raise ConfigError(
            f"data.name={name!r} is not a dataset; choose one of {list(REGISTRY)}, or read a "
            "torchvision class with data.torchvision=Name or a folder with data.image_folder=/path"
        )
    return REGISTRY[name]


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = torch.empty((len(images), images.shape[1], *size), dtype=torch.uint8)
    for start in range(0, len(images), 4096):  # in chunks: a float copy of all of CIFAR is 600 MB
        x = images[start : start + 4096].float()
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        out[start : start + 4096] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _match(
    train: Split, test: Split, size: tuple[int, int] | None, what: str
) -> tuple[Split, Split]:
    """One image shape for both splits: ``size`` when given, and RGB if either split is."""
    splits = [train, test]
    if size is not None:
        splits = [
            s if tuple(s.images.shape[-2:]) == size else Split(_resize(s.images, size), s.labels)
            for s in splits
        ]
    channels = max(s.images.shape[1] for s in splits)
    splits = [
        s
        if s.images.shape[1] == channels
        else Split(s.images.expand(-1, channels, -1, -1).contiguous(), s.labels)
        for s in splits
    ]
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise DataError(
            f"dataset {what!r}: train images are {tuple(splits[0].images.shape[1:])} but test "
            f"images {tuple(splits[1].images.shape[1:])}: set data.image_size=N (or [H, W]) to "
            "resize both"
        )
    return splits[0], splits[1]


def _download(class_name: str, data_dir: Path) -> None:
    for train in (True, False):
        getattr(datasets, class_name)(str(data_dir), train=train, download=True)


def load(source: Source, data_dir: str | Path, opts: ReadOptions = ReadOptions()) -> Loaded:
    """Read a source once: from data_dir, else downloaded there when allowed and possible."""
    data_dir = Path(data_dir).expanduser()
    try:
        loaded = source.read(data_dir, opts)
    except Missing as first:
        missing = first
        loaded = None
    if loaded is None and opts.download and source.download:
        try:
            _download(source.download, data_dir)
        except Exception:  # noqa: BLE001 - any download failure ends in the one line below
            pass
        try:
            loaded = source.read(data_dir, opts)
        except Missing as again:
            missing = again
    if loaded is None:
        searched = ", ".join(str(f) for f in missing.searched)
        why = f"; {missing.why}" if missing.why else ""
        if not (source.download or missing.downloadable):
            tail = "it cannot be downloaded"
        elif not opts.download:
            tail = "data.download=false"
        else:
            tail = "it could not be downloaded"
        raise DataError(
            f"dataset {source.name!r} not found (searched {searched}{why}) and {tail}: "
            f"{missing.hint}"
        )
    train, test = _match(loaded.train, loaded.test, opts.image_size, source.name)
    return Loaded(train, test, loaded.num_classes)


def load_dataset(
    name: str,
    data_dir: str | Path,
    download: bool = True,
    *,
    split_seed: int = 0,
    verify_checksums: bool = True,
    torchvision: str | None = None,
    torchvision_args: Mapping | None = None,
    image_folder: str | Path | None = None,
    image_size=None,
) -> tuple[Split, Split]:
    """(train, test) of a dataset, as the ``data`` config keys of the same names describe it."""
    source = find_source(name, torchvision, torchvision_args, image_folder)
    opts = ReadOptions(download, verify_checksums, split_seed, check_image_size(image_size))
    loaded = load(source, data_dir, opts)
    return loaded.train, loaded.test


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on [0, 1], exact, from a 256-bin histogram of each channel."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        mean = float((counts * levels).sum() / counts.sum())
        var = float((counts * (levels - mean) ** 2).sum() / counts.sum())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)
